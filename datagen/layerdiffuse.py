"""LayerDiffuse on SDXL with diffusers: the attention offset merge, the transparent decoder, generation.

After the official diffusers port of LayerDiffuse (lllyasviel/LayerDiffuse_Diffusers):
- `ld_diffusers_sdxl_attn.safetensors` is a dense offset in diffusers key names: unet[key] += offset[key];
- `ld_diffusers_sdxl_vae_transparent_decoder.safetensors` is a UNet of diffusers blocks without time embedding
  that maps (VAE-decoded RGB in [0, 1], unscaled latent) to (alpha, straight RGB), run with 8-way test-time
  augmentation (4 rotations x flip) reduced by torch.median.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from torch import nn

from datagen.errors import InputError
from datagen.synth import LAYERDIFFUSE_REPO
from datagen.weights import MissingModelError, merge_offset

log = logging.getLogger(__name__)

ATTN_FILE = "ld_diffusers_sdxl_attn.safetensors"
DECODER_FILE = "ld_diffusers_sdxl_vae_transparent_decoder.safetensors"
ATTN_TENSORS = 560  # tensors the published offset patches; a port that patches another number is broken
FP16_VAE = "madebyollin/sdxl-vae-fp16-fix"


class TransparentDecoder(ModelMixin, ConfigMixin):
    """The LayerDiffuse transparent VAE decoder: (RGB Nx3xHxW in [0, 1], latent Nx4x(H/8)x(W/8)) -> Nx4xHxW.

    Output channel 0 is alpha, 1..3 straight RGB (both meant to be clipped to [0, 1]). With the default config
    its state dict has exactly the 538 published keys.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 4,
        latent_channels: int = 4,
        down_block_types: Sequence[str] = ("DownBlock2D",) * 4 + ("AttnDownBlock2D",) * 3,
        up_block_types: Sequence[str] = ("AttnUpBlock2D",) * 3 + ("UpBlock2D",) * 4,
        block_out_channels: Sequence[int] = (32, 32, 64, 128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 4,
        norm_eps: float = 1e-5,
        attention_head_dim: int = 8,
        latent_block: int = 3,  # the latent joins just before this down block (the latent's resolution)
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.latent_conv_in = nn.Conv2d(latent_channels, block_out_channels[latent_block - 1], kernel_size=1)
        nn.init.zeros_(self.latent_conv_in.weight)
        nn.init.zeros_(self.latent_conv_in.bias)
        common = {
            "temb_channels": None,
            "resnet_eps": norm_eps,
            "resnet_act_fn": "silu",
            "resnet_groups": norm_num_groups,
            "attention_head_dim": attention_head_dim,
        }
        self.down_blocks = nn.ModuleList()
        channels = block_out_channels[0]
        for index, block_type in enumerate(down_block_types):
            last = index == len(block_out_channels) - 1
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    num_layers=layers_per_block,
                    in_channels=channels,
                    out_channels=block_out_channels[index],
                    add_downsample=not last,
                    downsample_padding=1,
                    **common,
                )
            )
            channels = block_out_channels[index]
        self.mid_block = UNetMidBlock2D(
            in_channels=block_out_channels[-1],
            temb_channels=None,
            resnet_eps=norm_eps,
            resnet_act_fn="silu",
            resnet_groups=norm_num_groups,
            attention_head_dim=attention_head_dim,
            add_attention=True,
        )
        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        channels = reversed_channels[0]
        for index, block_type in enumerate(up_block_types):
            previous, channels = channels, reversed_channels[index]
            skip = reversed_channels[min(index + 1, len(block_out_channels) - 1)]
            self.up_blocks.append(
                get_up_block(
                    block_type,
                    num_layers=layers_per_block + 1,
                    in_channels=skip,
                    out_channels=channels,
                    prev_output_channel=previous,
                    add_upsample=index < len(block_out_channels) - 1,
                    resolution_idx=index,
                    **common,
                )
            )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def forward(self, pixels: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        joined = self.latent_conv_in(latent)
        sample = self.conv_in(pixels)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for index, block in enumerate(self.down_blocks):
            if index == self.config.latent_block:
                sample = sample + joined
            sample, residuals = block(hidden_states=sample, temb=None)
            skips += residuals
        sample = self.mid_block(sample, None)
        for block in self.up_blocks:
            residuals, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            sample = block(sample, residuals, None)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))


VIEWS = [(flip, k) for flip in (False, True) for k in range(4)]  # the 8 test-time views: flip, then rotate


def view(tensor: torch.Tensor, flip: bool, k: int) -> torch.Tensor:
    """One test-time view of an NxCxHxW tensor: horizontal flip (optional), then k quarter turns."""
    return torch.rot90(torch.flip(tensor, dims=(3,)) if flip else tensor, k=k, dims=(2, 3))


def unview(tensor: torch.Tensor, flip: bool, k: int) -> torch.Tensor:
    """Undo `view`: turn back, then flip back."""
    turned = torch.rot90(tensor, k=-k, dims=(2, 3))
    return torch.flip(turned, dims=(3,)) if flip else turned


@torch.no_grad()
def decode_transparent(decoder: TransparentDecoder, pixels: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """Nx4xHxW (alpha, straight RGB) in [0, 1]: the 8 test-time views decoded in one batch (two when H != W,
    since quarter turns transpose the image), clipped, turned back and reduced by torch.median over the 8.

    pixels: Nx3xHxW VAE-decoded RGB in [0, 1]; latent: Nx4x(H/8)x(W/8), unscaled (latents / scaling_factor).
    """
    n = pixels.shape[0]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (flip, k) in enumerate(VIEWS):
        groups.setdefault(tuple(view(pixels[:1], flip, k).shape), []).append(index)
    outputs: list[torch.Tensor | None] = [None] * len(VIEWS)
    for indices in groups.values():
        batch = torch.cat([view(pixels, *VIEWS[i]) for i in indices])
        batch_latent = torch.cat([view(latent, *VIEWS[i]) for i in indices])
        for i, decoded in zip(indices, decoder(batch, batch_latent).split(n)):
            outputs[i] = unview(decoded.clamp(0, 1), *VIEWS[i])
    return torch.median(torch.stack(outputs), dim=0).values


def merge_layerdiffuse_offset(
    unet: nn.Module, offset: dict[str, torch.Tensor], expected: int | None = ATTN_TENSORS
) -> int:
    """The LayerDiffuse attention offset into SDXL's UNet (`weights.merge_offset`: every key in the UNet, the
    published file's 560 tensors); returns how many tensors were patched."""
    return merge_offset(unet, offset, expected=expected, what="the LayerDiffuse offset")


def fetch(repo_or_path: str, filename: str, offline: bool) -> Path:
    """A weight file from a local folder, or from the Hub (its cache only, when offline)."""
    local = Path(repo_or_path)
    if local.is_dir():
        path = local / filename
        if not path.is_file():
            raise MissingModelError(
                f"{path} does not exist: copy {filename} from the Hub repo {LAYERDIFFUSE_REPO} into {local}"
            )
        return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_or_path, filename, local_files_only=offline))
    except (LocalEntryNotFoundError, OSError) as error:
        raise MissingModelError(
            f"{repo_or_path}/{filename} is not available{' offline' if offline else ''}: on a machine with "
            f"Hub access run `hf download {repo_or_path} {filename}` (or pass a local folder), "
            f"then rerun{' with --offline' if offline else ''}"
        ) from error


@dataclass
class Generator:
    """A loaded LayerDiffuse pipeline: SDXL with the merged UNet, and the transparent decoder."""

    pipeline: Any  # diffusers StableDiffusionXLPipeline
    decoder: TransparentDecoder

    def __post_init__(self) -> None:
        self.pipeline.set_progress_bar_config(disable=True)  # run_synth shows one bar with images/s

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        negative_prompts: list[str],
        generators: list[torch.Generator],
        height: int,
        width: int,
        steps: int,
        guidance: float,
    ) -> torch.Tensor:
        """A batch of transparent images: Nx4xHxW float in [0, 1] (alpha, straight RGB) on the CPU."""
        latents = self.denoise(prompts, negative_prompts, generators, height, width, steps, guidance)
        return self.decode_alpha(*self.decode_rgb(latents)).float().cpu()

    @torch.no_grad()
    def denoise(
        self,
        prompts: list[str],
        negative_prompts: list[str],
        generators: list[torch.Generator],
        height: int,
        width: int,
        steps: int,
        guidance: float,
    ) -> torch.Tensor:
        """SDXL's latents of a batch (the patched UNet, classifier-free guidance)."""
        if height % 64 or width % 64:
            raise InputError(f"size {width}x{height}: LayerDiffuse needs width and height that are multiples of 64")
        return self.pipeline(
            prompt=prompts,
            negative_prompt=negative_prompts,
            generator=generators,
            height=height,
            width=width,
            num_inference_steps=steps,
            guidance_scale=guidance,
            output_type="latent",
        ).images

    @torch.no_grad()
    def decode_rgb(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(VAE-decoded RGB in [0, 1], unscaled latent), in the transparent decoder's dtype."""
        vae = self.pipeline.vae
        unscaled = latents.to(vae.dtype) / vae.config.scaling_factor
        pixels = (vae.decode(unscaled).sample.float() / 2 + 0.5).clamp(0, 1)
        dtype = next(self.decoder.parameters()).dtype
        return pixels.to(dtype), unscaled.to(dtype)

    def decode_alpha(self, pixels: torch.Tensor, unscaled: torch.Tensor) -> torch.Tensor:
        """Nx4xHxW (alpha, straight RGB) on the device: the transparent decoder's 8-view TTA."""
        return decode_transparent(self.decoder, pixels, unscaled)


def load_generator(
    model: str,
    device: str,
    dtype: torch.dtype,
    offline: bool,
    layerdiffuse: str = LAYERDIFFUSE_REPO,
    vae: str | None = FP16_VAE,
) -> Generator:
    """SDXL from a Hub id or local folder, a half-precision-safe VAE, the LayerDiffuse offset and decoder."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline
    from safetensors.torch import load_file

    options = {"torch_dtype": dtype, "local_files_only": offline}
    try:
        kwargs = {"vae": AutoencoderKL.from_pretrained(vae, **options)} if vae and dtype == torch.float16 else {}
        pipeline = StableDiffusionXLPipeline.from_pretrained(model, add_watermarker=False, **kwargs, **options)
    except OSError as error:
        raise MissingModelError(
            f"could not load {model}{' offline' if offline else ''} ({error}); on a machine with Hub access run "
            f"`hf download {model}`, or pass --model with a local folder"
        ) from error
    patched = merge_layerdiffuse_offset(pipeline.unet, load_file(fetch(layerdiffuse, ATTN_FILE, offline)))
    log.info("merged the LayerDiffuse offset into %d UNet tensors", patched)
    decoder = TransparentDecoder()
    decoder.load_state_dict(load_file(fetch(layerdiffuse, DECODER_FILE, offline)), strict=True)
    pipeline.to(device)
    return Generator(pipeline, decoder.to(device, dtype).eval())
