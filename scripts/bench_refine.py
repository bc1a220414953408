"""Benchmark `datagen refine` / `infer --refine`: images/s and peak memory of ViTMatte on image + trimap.

Shapes, all with random weights (no download): `tiny` (the test model: what the plumbing costs, preparation,
batching and the band restore included), `small` and `base` (the published vitmatte-small / -base architectures:
ViT-S 384-wide or ViT-B 768-wide, 12 blocks, windowed attention in 8 of them, 4 global). Each (shape, size) runs in
its own process so that its peak memory is its own: peak resident memory on the CPU, torch's peak allocation on a
GPU; malloc set as the stage sets it (`parallel.reuse_freed_memory` once the model is loaded). Prints one line per
case, measured in one run.

    python scripts/bench_refine.py                                   # tiny at 1024 and 2048 px, CPU
    python scripts/bench_refine.py --shapes small base --device cuda --dtype fp16 --batch-sizes 1 4
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

SHAPES = ("tiny", "small", "base")


def build(shape: str, folder: Path) -> Path:
    """A random-weight ViTMatte of `shape` (datagen.refine.vitmatte_config), saved like a real checkpoint."""
    from transformers import VitMatteForImageMatting

    from datagen.refine import vitmatte_config

    path = folder / f"vitmatte-{shape}"
    VitMatteForImageMatting(vitmatte_config(shape)).save_pretrained(path)
    return path


def one(shape: str, side: int, batch: int, device: str, dtype: str, rounds: int) -> dict:
    """Time `rounds` batches of `batch` side x side images after a warm-up; peak memory of this process."""
    import torch

    from datagen.alpha import over, trimap_from_alpha
    from datagen.parallel import return_freed_memory, reuse_freed_memory
    from datagen.procedural import draw_background, draw_person
    from datagen.refine import Matter

    torch.manual_seed(0)
    return_freed_memory()  # malloc as `datagen refine` has it: its driver's setting (stage_run) while the model loads,
    with tempfile.TemporaryDirectory() as folder:
        matter = Matter(str(build(shape, Path(folder))), device=device, dtype=dtype, offline=True, max_side_px=side)
    reuse_freed_memory()  # then its frames reuse freed memory (refine._outcomes)
    rng = np.random.default_rng(0)
    person = draw_person(rng, side, side)
    image = over(person, draw_background(rng, side, side))
    mask = np.where(person[..., 3] > 127, 255, 0).astype(np.uint8)
    trimap = trimap_from_alpha(mask, max(3, side // 50), edge_of=127)
    images, trimaps = [image] * batch, [trimap] * batch
    matter(images, trimaps)  # warm-up
    if matter.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(rounds):
        matter(images, trimaps)
    if matter.device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
    seconds = (time.perf_counter() - start) / (rounds * batch)
    return {"shape": shape, "side": side, "batch": batch, "device": str(matter.device), "dtype": dtype,
            "s_per_image": seconds, "images_per_s": 1 / seconds, "peak_gib": peak}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["tiny"], choices=SHAPES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024, 2048])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("SHAPE", "SIDE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        shape, side, batch = args.one
        print(json.dumps(one(shape, int(side), int(batch), args.device, args.dtype, args.rounds)))
        return
    print(
        f"{'shape':<7}{'side':>6}{'batch':>6}  {'device':<8}{'dtype':<6}{'s/image':>9}{'images/s':>10}{'peak GiB':>10}"
    )
    for shape in args.shapes:
        for side in args.sizes:
            for batch in args.batch_sizes:
                command = [sys.executable, __file__, "--one", shape, str(side), str(batch), "--device", args.device]
                command += ["--dtype", args.dtype, "--rounds", str(args.rounds)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    print(f"{shape:<7}{side:>6}{batch:>6}  failed: {done.stderr.strip().splitlines()[-1]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{shape:<7}{side:>6}{batch:>6}  {r['device']:<8}{r['dtype']:<6}{r['s_per_image']:>9.3f}"
                    f"{r['images_per_s']:>10.2f}{r['peak_gib']:>10.2f}"
                )


if __name__ == "__main__":
    main()
