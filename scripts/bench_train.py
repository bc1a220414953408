"""Benchmark the training step and the data loader, separately, in one run.

- The step (forward, loss, backward, optimizer) of ORMBG at --size, --batch: images/s, peak memory, and the
  share of the loss, for fp32, bf16 autocast and channels_last (and torch.compile with --compile).
- The data loader alone: samples/s per worker reading 1024x1024 JPEG/PNG sources with the training
  augmentations (no tensor cache); with --compose-sizes also the online compose source (`--compose`: composites
  rendered at the training size from the same foreground and background pools, cache holding the pool), against
  the file reader at the same size, in one run, and the same composites rendered only as large as the
  augmentation's crop keeps (the ceiling of rendering only those pixels). Target: online at least 0.8x the file
  reader at 1024 px. With --photo-pools, the same at 1024 px from pools of photo-sized people and backgrounds
  (larger than the frame, as real ones are: each draw shrinks them), with the pool in the cache and without.

    python scripts/bench_train.py                         # CPU: 256 px, batch 2
    python scripts/bench_train.py --size 1024 --batch 8 --compile   # on a GPU; record with the GPU's name

Targets: the loss under 10% of the step; the loader at least 50 samples/s per worker.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from datagen.compose.config import ComposeConfig
from datagen.compose.run import run_compose
from datagen.io import read_pair
from datagen.procedural import draw_background, draw_person
from datagen.records import write_sample
from ormbg.composites import ComposeSource, OnlineComposites
from ormbg.data import MixSampler, Source, TrainSet, init_worker, list_samples, train_transform
from ormbg.losses import ormbg_loss
from ormbg.model import ORMBG


def peak_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(size: int, batch: int, mode: str, steps: int, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = ORMBG().to(device)
    channels_last = "channels_last" in mode
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if "compile" in mode:
        model = torch.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixels, alpha = torch.randn(batch, 3, size, size, device=device), torch.rand(batch, 1, size, size, device=device)
    if channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if "bf16" in mode else None
    totals = {"forward": 0.0, "loss": 0.0, "backward": 0.0, "optimizer": 0.0}

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    warmup = 3 if "compile" in mode else 1  # compilation (forward, backward, optimizer) is not counted
    warmup_s, loop_started = 0.0, time.perf_counter()
    for index in range(steps + warmup):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            logits = model(pixels)
        sync()
        t1 = time.perf_counter()
        loss = ormbg_loss(logits, alpha)["loss"]
        sync()
        t2 = time.perf_counter()
        loss.backward()
        sync()
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        t4 = time.perf_counter()
        if index == warmup - 1:
            warmup_s = t4 - loop_started
        if index >= warmup:
            for key, value in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += value / steps
    step = sum(totals.values())
    return {
        **{f"{k}_s": v for k, v in totals.items()},  # forward_s, loss_s, backward_s, optimizer_s
        "step_s": step,
        "images_per_s": batch / step,
        "loss_share": totals["loss"] / step,
        "peak_mb": peak_mb(device),
        "warmup_s": warmup_s,
    }


class FrameOnly(OnlineComposites):
    """Online composites rendered at `frame_px` whatever the training size, then augmented to it: the frame the
    augmentation's random crop keeps on average (its mean area). No renderer can make less and keep what the crop
    keeps, so its rate is the ceiling of rendering only those pixels."""

    frame_px = 0

    def sample(self, step: int, rank: int, slot: int, size_px: int):
        return super().sample(step, rank, slot, self.frame_px)


def mean_crop_px(size: int) -> int:
    """The side of a square with the mean area the training augmentation's random resized crop keeps at `size`."""
    crop, blank, areas = train_transform(size).transforms[0], np.zeros((size, size, 3), np.uint8), []
    for seed in range(1000):
        crop.set_random_seed(seed)
        x1, y1, x2, y2 = crop.get_params_dependent_on_data({"shape": blank.shape}, {"image": blank})["crop_coords"]
        areas.append((x2 - x1) * (y2 - y1) / size**2)
    return round(size * float(np.mean(areas)) ** 0.5)


def loader_rate(
    root: Path,
    size: int,
    n: int,
    online: bool = False,
    frame_px: int = 0,
    pools: Path | None = None,
    cache_mb: float = 512,
) -> float:
    """Samples/s of one worker's work (read + decode + augment + to tensors; or, `online`, draw + render +
    augment from the pools in `pools` (default: beside `root`) with a cache of `cache_mb`; with `frame_px`, the online
    composites rendered at that side: `FrameOnly`), measured in-process with the worker's settings (single-threaded
    OpenCV and torch)."""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    init_worker(0)
    torch.set_num_threads(1)
    if online or frame_px:
        pools = pools or root.parent
        source = ComposeSource((str(pools / "fg"),), (str(pools / "bg"),))
        sources = [(FrameOnly if frame_px else OnlineComposites)(source, seed=0, cache_mb=cache_mb)]
        sources[0].frame_px = frame_px
    else:
        sources = [list_samples(Source(str(root), "train"))]
    dataset = TrainSet(sources, size)
    keys = iter(MixSampler([len(sources[0])], [1.0], 1, seed=0))
    dataset[next(keys)]
    started = time.perf_counter()
    for _ in range(n):
        dataset[next(keys)]
    rate = n / (time.perf_counter() - started)
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)
    return rate


def loader_split(root: Path, size: int, n: int = 60) -> dict[str, float]:
    """Milliseconds per sample of one worker's parts, in one process with the worker's settings: reading a written
    composite, the training augmentation (the same for both sources), rendering an online composite at `size`."""
    threads = torch.get_num_threads()
    init_worker(0)
    torch.set_num_threads(1)
    files = list_samples(Source(str(root), "train"))
    online = OnlineComposites(ComposeSource((str(root.parent / "fg"),), (str(root.parent / "bg"),)), 0, cache_mb=512)
    dataset = TrainSet([files], size)
    for step in range(10):  # every pool item decoded into the caches, the noise bank drawn
        online.sample(step, 0, 0, size)
    t0 = time.perf_counter()
    pairs = [read_pair(*files[index % len(files)]) for index in range(n)]
    t1 = time.perf_counter()
    for index, (image, alpha) in enumerate(pairs):
        dataset._augment(image, np.multiply(alpha, 1 / 255, dtype=np.float32), index, [], "")
    t2 = time.perf_counter()
    for step in range(n):
        online.sample(100 + step, 0, 0, size)
    t3 = time.perf_counter()
    torch.set_num_threads(threads)
    times = [(b - a) * 1000 / n for a, b in ((t0, t1), (t1, t2), (t2, t3))]
    return dict(zip(("read_ms", "augment_ms", "render_ms"), times))


def make_pools(root: Path, person_px: tuple[int, int], background_px: tuple[int, int]) -> Path:
    """Eight procedural people (RGBA PNG, HxW `person_px`) in root/fg and eight backgrounds (HxW `background_px`) in
    root/bg."""
    for index in range(8):
        person = draw_person(np.random.default_rng([index]), *person_px)
        write_sample(root / "fg", "train", f"p{index}", foreground=person, alpha=person[..., 3])
        background = draw_background(np.random.default_rng([index, 1]), *background_px)
        write_sample(root / "bg", "train", f"b{index}", image=background, alpha=None)
    return root


PHOTO_POOLS = ((1536, 1024), (1280, 1920))  # people and backgrounds as photos are: larger than a 1024 px frame


def make_sources(root: Path, count: int = 24) -> Path:
    """1024x1024 composites (JPEG image, PNG alpha), made by the real compositor from procedural inputs."""
    make_pools(root, (512, 384), (600, 800))
    run_compose(
        ComposeConfig(
            out=root / "data",
            foregrounds=(root / "fg",),
            backgrounds=(root / "bg",),
            n=count,
            size=(1024, 1024),
            progress=False,
        )
    )
    return root / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--loader-size", type=int, default=1024, help="training side the loader produces")
    parser.add_argument("--loader-rounds", type=int, default=3, help="loader rounds of 60 samples (median reported)")
    parser.add_argument("--loader-only", action="store_true", help="skip the training-step measurements")
    parser.add_argument("--compose-sizes", type=int, nargs="*", default=[], help="also time online composites")
    parser.add_argument(
        "--photo-pools",
        action="store_true",
        help="also time online composites at 1024 px from photo-sized pools (people 1536x1024, backgrounds "
        "1920x1280), the cache holding the pool and a pool larger than the cache (every draw decodes its files)",
    )
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    modes = ["fp32", "bf16", "fp32+channels_last", "bf16+channels_last"] + (
        ["bf16+channels_last+compile"] if args.compile else []
    )
    results = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "CPU",
        "size": args.size,
        "batch": args.batch,
    }
    for mode in [] if args.loader_only else modes:
        try:
            row = time_steps(args.size, args.batch, mode, args.steps, device)
        except Exception as error:  # torch.compile fails on some CPU builds: report it, measure the rest
            results[mode] = {"error": f"{type(error).__name__}: {str(error).strip()[:300]}"}
            print(f"{mode:<28} failed: {results[mode]['error']}", flush=True)
            continue
        results[mode] = row
        print(
            f"{mode:<28} {row['images_per_s']:6.2f} images/s  step {row['step_s']:.3f} s (forward "
            f"{row['forward_s']:.3f}, loss {row['loss_s']:.3f} = {row['loss_share']:.1%}, backward "
            f"{row['backward_s']:.3f}, optimizer {row['optimizer_s']:.3f})"
            f"  peak {row['peak_mb']:.0f} MB  warm-up {row['warmup_s']:.1f} s",
            flush=True,
        )
    with tempfile.TemporaryDirectory() as folder:
        sources = make_sources(Path(folder))
        rates = [loader_rate(sources, args.loader_size, 60) for _ in range(args.loader_rounds)]
        rate = float(np.median(rates))
        results["loader_samples_per_s_per_worker"] = rate
        print(
            f"data loader, one worker, 1024x1024 sources -> {args.loader_size} px: {rate:.1f} samples/s median of "
            f"{', '.join(f'{r:.1f}' for r in rates)}  (target >= 50)"
        )
        for size in args.compose_sizes:  # rounds alternate, so drifts of the machine hit all alike
            frame = mean_crop_px(size)
            rounds = [
                (
                    loader_rate(sources, size, 60),
                    loader_rate(sources, size, 60, online=True),
                    loader_rate(sources, size, 60, frame_px=frame),
                )
                for _ in range(args.loader_rounds)
            ]
            # the ratio of each round (its three rates measured back to back), then their median: a drift of the
            # machine between rounds moves the rates, not the ratios
            files, online, ceiling = (float(np.median(values)) for values in zip(*rounds))
            ratio, ceiling_ratio = (float(np.median([r[k] / r[0] for r in rounds])) for k in (1, 2))
            results[f"online_vs_files_{size}"] = {
                "files": files,
                "online": online,
                "ratio": ratio,
                "frame_px": frame,
                "frame_only": ceiling,
                "frame_only_ratio": ceiling_ratio,
                "rounds": rounds,
            }
            print(
                f"online composites, one worker, {size} px: {online:.1f} samples/s against {files:.1f} from written "
                f"composites (medians); each round's ratio {', '.join(f'{o / f:.2f}x' for f, o, _ in rounds)}: "
                f"median {ratio:.2f}x  (target >= 0.8 at 1024)"
            )
            print(
                f"  rendered only as large as the crop keeps (a {frame} px frame, its mean area), then augmented: "
                f"{ceiling:.1f} samples/s; each round's ratio {', '.join(f'{c / f:.2f}x' for f, _, c in rounds)}: "
                f"median {ceiling_ratio:.2f}x, the most a render of only the kept pixels can give"
            )
            split = loader_split(sources, size)
            results[f"loader_split_{size}"] = split
            read, augment, render = (split[key] for key in ("read_ms", "augment_ms", "render_ms"))
            print(
                f"  per sample: read {read:.1f} ms, augment {augment:.1f} ms (both sources), render {render:.1f} ms; "
                f"{(read + augment) / 0.8 - augment:.1f} ms of render would give 0.8x if nothing else differed"
            )
        if args.photo_pools:
            results["photo_pools"] = photo_pool_rates(sources, Path(folder) / "photo", args.loader_rounds)
    print(json.dumps(results))


def photo_pool_rates(sources: Path, folder: Path, rounds: int) -> dict[str, float]:
    """Online composites at 1024 px from photo-sized pools against the file reader, alternating rounds: the cache
    holding the pool (512 MB), and none (a pool larger than the cache: each draw decodes its person and background)."""
    pools = make_pools(folder, *PHOTO_POOLS)
    found = [
        (
            loader_rate(sources, 1024, 40),
            loader_rate(sources, 1024, 40, online=True, pools=pools),
            loader_rate(sources, 1024, 40, online=True, pools=pools, cache_mb=0),
        )
        for _ in range(rounds)
    ]
    files, warm, cold = (float(np.median(values)) for values in zip(*found))
    warm_ratio, cold_ratio = (float(np.median([r[k] / r[0] for r in found])) for k in (1, 2))
    print(
        f"online composites, one worker, 1024 px, photo-sized pools (people {PHOTO_POOLS[0][0]}x{PHOTO_POOLS[0][1]}, "
        f"backgrounds {PHOTO_POOLS[1][1]}x{PHOTO_POOLS[1][0]}): {warm:.1f} samples/s with the pool in the cache "
        f"(median ratio {warm_ratio:.2f}x), {cold:.1f} with a pool larger than the cache ({cold_ratio:.2f}x), against "
        f"{files:.1f} from written composites; rounds {', '.join(f'{f:.1f}/{w:.1f}/{c:.1f}' for f, w, c in found)}"
    )
    return {"files": files, "warm": warm, "cold": cold, "warm_ratio": warm_ratio, "cold_ratio": cold_ratio}


if __name__ == "__main__":
    main()
