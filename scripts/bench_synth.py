"""Time the full-size LayerDiffuse pipeline per image, split into denoising and transparent decoding.

Builds SDXL (UNet, VAE, both CLIP text encoders) and the transparent decoder at their published sizes with
random weights, since the time does not depend on the weights, and nothing is downloaded. Run it on a GPU:

    python scripts/bench_synth.py --size 1024 --steps 25 --batch-sizes 1 4 --end-to-end 8   # fp16 on CUDA
    python scripts/bench_synth.py --tiny --end-to-end 4                                     # CPU smoke run
    python scripts/bench_synth.py --overlap 1.13 --end-to-end 24     # the loop around a 1.13 s stand-in generator

and record the printed figures, with the GPU's name, in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.layerdiffuse import Generator, TransparentDecoder  # noqa: E402
from tests.tiny_sdxl import tiny_decoder, tiny_pipeline, tiny_tokenizer  # noqa: E402


def full_pipeline(folder: Path, device: str):
    """SDXL base architecture from its published configs, random weights (fp32, cast later). The networks are
    built on `device` (random init on a GPU takes seconds, on the CPU a minute), the scheduler on the CPU."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    with torch.device(device):
        unet, vae, text_encoder, text_encoder_2 = full_networks()
    return StableDiffusionXLPipeline(
        vae=vae,
        unet=unet,
        scheduler=EulerDiscreteScheduler(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tiny_tokenizer(folder / "t1"),
        tokenizer_2=tiny_tokenizer(folder / "t2"),
        add_watermarker=False,
    )


def full_networks():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20),
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=1024,
        scaling_factor=0.13025,
    )
    clip_l = CLIPTextConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        vocab_size=49408,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    clip_g = CLIPTextConfig(
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=20,
        num_hidden_layers=32,
        vocab_size=49408,
        projection_dim=1280,
        hidden_act="gelu",
    )
    return unet, vae, CLIPTextModel(clip_l), CLIPTextModelWithProjection(clip_g)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gb(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


def time_batch(generator: Generator, device: str, size: int, steps: int, batch: int) -> dict[str, float]:
    """Seconds per image of the three parts of one batch: denoising (CFG, both text encoders included), the VAE
    decode, the transparent decoder's 8-view TTA. A 1-step run of the same shapes warms everything up first."""
    prompts, negatives = ["a person"] * batch, [""] * batch
    times = {}
    for run_steps in (1, steps):  # warm-up, then the timed run
        seeds = [torch.Generator(device).manual_seed(i) for i in range(batch)]
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        synchronize(device)
        started = time.perf_counter()
        latents = generator.denoise(prompts, negatives, seeds, size, size, run_steps, 7.0)
        synchronize(device)
        denoised = time.perf_counter()
        pixels, unscaled = generator.decode_rgb(latents)
        synchronize(device)
        decoded = time.perf_counter()
        generator.decode_alpha(pixels, unscaled)
        synchronize(device)
        finished = time.perf_counter()
        times = {
            "denoise": (denoised - started) / batch,
            "vae": (decoded - denoised) / batch,
            "tta": (finished - decoded) / batch,
        }
    return {
        "denoise_s_per_image": times["denoise"],
        "vae_decode_s_per_image": times["vae"],
        "tta_decode_s_per_image": times["tta"],
        "decode_s_per_image": times["vae"] + times["tta"],
        "total_s_per_image": sum(times.values()),
        "peak_gb": peak_gb(device),
    }


def timed_synth(make_render, n: int, size: int, batch: int, **settings):
    """(result, seconds) of `run_synth` into a temporary folder, the renderer made from its config; every quality
    threshold is open (random weights and stand-ins give random mattes)."""
    from datagen.synth import QualityThresholds, SynthConfig, run_synth

    with tempfile.TemporaryDirectory() as folder:
        config = SynthConfig(
            out=Path(folder) / "synth",
            n=n,
            size=(size, size),
            batch_size=batch,
            quality=QualityThresholds.accept_all(),
            progress=False,
            **settings,
        )
        render = make_render(config)
        started = time.perf_counter()
        result = run_synth(config, render)
        return result, time.perf_counter() - started


def end_to_end(generator: Generator, device: str, dtype: torch.dtype, size: int, steps: int, batch: int, n: int):
    """images/s of `datagen synth`'s own loop (prompts, generation, quality scores, PNG writes) on this
    generator."""
    from datagen.synth import layerdiffuse_renderer

    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    synchronize(device)
    result, seconds = timed_synth(
        lambda config: layerdiffuse_renderer(config, generator),
        n,
        size,
        batch,
        steps=steps,
        device=device,
        dtype=names[dtype],
    )
    return {"n": result.new, "batch": batch, "seconds": seconds, "images_per_s": result.new / seconds}


def overlap(seconds_per_image: float, size: int, batch: int, n: int) -> dict[str, float]:
    """`datagen synth`'s loop around a stand-in generator that takes `seconds_per_image` of wall time and no CPU
    (as a GPU does) and returns 1024 px procedural people: how much of the scoring and PNG writing the loop hides
    behind generation. The writing cost alone is the same loop with an instant generator."""
    import numpy as np

    from datagen.procedural import draw_person

    people = [draw_person(np.random.default_rng([i]), size, size) for i in range(batch)]

    def loop(delay: float) -> float:
        def render(jobs):
            time.sleep(delay * len(jobs))
            return [people[i % batch].copy() for i in range(len(jobs))]

        return timed_synth(lambda config: render, n, size, batch)[1] / n

    writing = loop(0.0)
    looped = loop(seconds_per_image)
    return {
        "generator_s_per_image": seconds_per_image,
        "writing_s_per_image": writing,
        "loop_s_per_image": looped,
        "serial_s_per_image": seconds_per_image + writing,
        "share_of_generator_rate": seconds_per_image / looped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--end-to-end", type=int, default=0, metavar="N", help="also time `datagen synth`'s loop on N images"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random models at 64 px on the CPU (smoke run)")
    parser.add_argument(
        "--overlap",
        type=float,
        metavar="SECONDS",
        help="only time the synth loop around a stand-in generator of SECONDS per image (no models, CPU)",
    )
    args = parser.parse_args()
    if args.overlap is not None:
        batch, n = max(args.batch_sizes), max(args.end_to_end, 4 * max(args.batch_sizes))
        row = overlap(args.overlap, args.size, batch, n)
        print(
            f"synth loop, {n} images of {args.size} px, batch {batch}: scoring + writing alone "
            f"{row['writing_s_per_image']:.3f} s per image; with a {args.overlap:.2f} s generator "
            f"{row['loop_s_per_image']:.3f} s per image (one after the other would be "
            f"{row['serial_s_per_image']:.3f}): {row['share_of_generator_rate']:.1%} of the generator's rate"
        )
        print(json.dumps(row))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        if args.tiny:
            pipeline, decoder, size = tiny_pipeline(Path(folder)), tiny_decoder(), 64
        else:
            pipeline, decoder, size = full_pipeline(Path(folder), device), TransparentDecoder(), args.size
    generator = Generator(pipeline.to(device, dtype), decoder.to(device, dtype).eval())
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{name}: models built in {time.perf_counter() - started:.1f} s, {dtype}", flush=True)
    results = []
    for batch in args.batch_sizes:
        row = {"device": name, "size": size, "steps": args.steps, "batch": batch, "dtype": str(dtype)}
        row.update(time_batch(generator, device, size, args.steps, batch))
        results.append(row)
        print(
            f"{name}: {size}x{size}, {args.steps} steps, CFG, batch {batch}: denoise {row['denoise_s_per_image']:.2f} s"
            f" + VAE decode {row['vae_decode_s_per_image']:.2f} s + transparent decode (8-view TTA)"
            f" {row['tta_decode_s_per_image']:.2f} s = {row['total_s_per_image']:.2f} s per image"
            f" ({1 / row['total_s_per_image']:.2f} images/s), peak {row['peak_gb']:.1f} GiB",
            flush=True,
        )
    if args.end_to_end:
        batch = max(args.batch_sizes)
        loop = end_to_end(generator, device, dtype, size, args.steps, batch, args.end_to_end)
        best = min(row["total_s_per_image"] for row in results if row["batch"] == batch)
        loop["share_of_generator_rate"] = best * loop["images_per_s"]
        results.append({"end_to_end": loop})
        print(
            f"datagen synth loop, {loop['n']} images, batch {batch}: {loop['images_per_s']:.2f} images/s "
            f"({loop['share_of_generator_rate']:.0%} of the generator's own rate at that batch size)",
            flush=True,
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
