"""A tiny random Stable Diffusion 1.5-architecture pipeline and an IC-Light-shaped offset, built from configs."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.tiny_sdxl import tiny_tokenizer


def tiny_sd15(folder: Path) -> Path:
    """Save a tiny StableDiffusionPipeline (UNet, VAE, CLIP text encoder, tokenizer, scheduler) to `folder`."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    text = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=60, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
    )  # fmt: skip
    pipeline = StableDiffusionPipeline(
        vae=vae,
        unet=unet,
        text_encoder=CLIPTextModel(text),
        tokenizer=tiny_tokenizer(folder / "tokenizer-src"),
        scheduler=DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder / "sd15")
    return folder / "sd15"


def tiny_offset(base: Path, model: str, path: Path, scale: float = 0.0) -> Path:
    """An offset file with every key of the widened UNet (values `scale` * noise) in safetensors."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from datagen.relight import CONDITION_CHANNELS, widen_conv_in

    unet = widen_conv_in(UNet2DConditionModel.from_pretrained(base / "unet"), CONDITION_CHANNELS[model])
    generator = torch.Generator().manual_seed(1)
    offset = {key: scale * torch.randn(value.shape, generator=generator) for key, value in unet.state_dict().items()}
    save_file(offset, str(path))
    return path
