"""Benchmark `datagen relight`: seconds per image (low-resolution pass + img2img high-resolution pass) and peak memory.

Full-size Stable Diffusion 1.5 shapes (UNet 320/640/1280/1280 with conv_in widened for IC-Light fbc, the SD VAE, a
12-layer CLIP text encoder) with random weights, built from configs (nothing downloads), or `--shape tiny` (the test
pipeline's shapes: what the plumbing costs); malloc set as the stage sets it (`parallel.reuse_freed_memory` once the
model is loaded). Each image size runs in its own process so that its peak memory is its own. Prints one line per (size,
batch), measured in one run.

    python scripts/bench_relight.py --device cuda --dtype fp16 --batch-sizes 1 4   # on a GPU
    python scripts/bench_relight.py --shape tiny --sizes 512x768 --steps 2          # CPU plumbing
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(shape: str, folder: Path):
    """A StableDiffusionPipeline of SD1.5's shapes (or tiny ones) with random weights, saved to `folder`."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny_sd15 import tiny_sd15
    from tests.tiny_sdxl import tiny_tokenizer

    if shape == "tiny":
        return tiny_sd15(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)  # the SD1.5 UNet's configuration
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
    )  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(vocab_size=60, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77))  # fmt: skip
    pipeline = StableDiffusionPipeline(
        vae=vae, unet=unet, text_encoder=text, tokenizer=tiny_tokenizer(folder / "tok"),
        scheduler=DDIMScheduler(clip_sample=False, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipeline.save_pretrained(folder / "sd15")
    return folder / "sd15"


def one(shape: str, size: str, batch: int, device: str, dtype: str, steps: int) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from datagen.alpha import over
    from datagen.parallel import return_freed_memory, reuse_freed_memory
    from datagen.procedural import draw_background, draw_person
    from datagen.relight import RelightConfig, condition_inputs, load_relighter
    from tests.tiny_sd15 import tiny_offset

    width, height = (int(side) for side in size.split("x"))
    return_freed_memory()  # malloc as `datagen relight` has it: its driver's setting (stage_run) while the model loads,
    with tempfile.TemporaryDirectory() as folder:
        base = build(shape, Path(folder))
        offset = tiny_offset(base, "fbc", Path(folder) / "offset.safetensors")
        config = RelightConfig(src=Path(folder), out=Path(folder) / "out", model=str(base), weights=str(offset),
                               steps=steps, size_px=max(width, height) * 2 // 3, device=device, dtype=dtype,
                               offline=True, shard=(0, 1))  # fmt: skip
        relighter = load_relighter(config)
    reuse_freed_memory()  # then its frames reuse freed memory (relight._outcomes)
    rng = np.random.default_rng(0)
    person = draw_person(rng, height, width)
    image = over(person, draw_background(rng, height, width))
    inputs = condition_inputs(image, person[..., 3])
    relighter.relight(*inputs, "warm light", 0)  # warm-up
    if relighter.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for index in range(batch):  # rows are relit one at a time
        relighter.relight(*inputs, "warm light", index)
    if relighter.device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    seconds = (time.perf_counter() - start) / batch
    return {"shape": shape, "size": size, "batch": batch, "device": str(relighter.device), "dtype": dtype,
            "s_per_image": seconds, "peak_gib": peak}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--sizes", nargs="+", default=["512x768", "1024x1536"], help="WxH of the output")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1], help="images timed per case")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--one", nargs=3, metavar=("SHAPE", "SIZE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        shape, size, batch = args.one
        print(json.dumps(one(shape, size, int(batch), args.device, args.dtype, args.steps)))
        return
    print(f"{'shape':<6}{'size':>11}{'images':>7}  {'device':<8}{'dtype':<6}{'s/image':>9}{'peak GiB':>10}")
    for size in args.sizes:
        for batch in args.batch_sizes:
            command = [sys.executable, __file__, "--one", args.shape, size, str(batch), "--device", args.device]
            command += ["--dtype", args.dtype, "--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"{args.shape:<6}{size:>11}{batch:>7}  failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{r['shape']:<6}{size:>11}{batch:>7}  {r['device']:<8}{r['dtype']:<6}{r['s_per_image']:>9.2f}"
                  f"{r['peak_gib']:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
