"""Benchmark `datagen compose` against the I/O floor, and its memory against n.

Makes 100 RGBA foregrounds and 50 backgrounds at 1024x1024 in a temporary folder (procedural people with
photo-like noise, RGB zero under alpha 0 as cut-out tools save them) and prints, measured in one run:

- the I/O floor: per image, decode one foreground PNG and one background JPEG, blend with numpy, encode and
  write the JPEG image and the PNG alpha, nothing else;
- images/s for presets none and default with 1 worker (medians of alternating rounds), and default with 2
  workers against 1 worker at twice the n, with ratios;
- peak memory (max RSS of a fresh process) for n=100 and n=1000 with preset default.

Targets on a 2-core machine: default (1 worker) >= 0.8x the floor, none >= 0.95x, 2 workers >= 1.7x one,
peak memory for n=1000 within 10% of n=100.

    python scripts/bench_compose.py [--n 300] [--rounds 3] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from datagen.compose.config import PRESETS, ComposeConfig
from datagen.compose.run import run_compose
from datagen.io import encode_jpeg, encode_png, write_atomic
from datagen.procedural import draw_background, draw_person

SIDE = 1024


def make_pools(root: Path, n_fg: int = 100, n_bg: int = 50) -> tuple[Path, Path]:
    for index in range(n_fg):
        rng = np.random.default_rng([index])
        small = draw_person(rng, SIDE // 4, SIDE // 4)
        person = cv2.resize(small, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
        rgb = np.clip(person[..., :3] + rng.normal(0, 4, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        rgb[person[..., 3] == 0] = 0
        write_atomic(root / "fg" / f"fg{index:03d}.png", encode_png(np.dstack([rgb, person[..., 3]])))
    for index in range(n_bg):
        rng = np.random.default_rng([index, 7])
        background = cv2.resize(draw_background(rng, SIDE // 2, SIDE // 2), (SIDE, SIDE))
        background = np.clip(background + rng.normal(0, 4, background.shape), 0, 255).astype(np.uint8)
        write_atomic(root / "bg" / f"bg{index:03d}.jpg", encode_jpeg(background, 92))
    return root / "fg", root / "bg"


def floor_rate(fg: Path, bg: Path, out: Path, n: int) -> float:
    foregrounds, backgrounds = sorted(fg.iterdir()), sorted(bg.iterdir())
    started = time.perf_counter()
    for index in range(n):
        rgba = cv2.imread(str(foregrounds[index % len(foregrounds)]), cv2.IMREAD_UNCHANGED)
        background = cv2.imread(str(backgrounds[index % len(backgrounds)]), cv2.IMREAD_COLOR)
        alpha = rgba[..., 3:].astype(np.float32) / 255
        image = np.rint(rgba[..., :3] * alpha + background * (1 - alpha)).astype(np.uint8)
        write_atomic(out / f"im/{index}.jpg", cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
        write_atomic(out / f"gt/{index}.png", cv2.imencode(".png", rgba[..., 3])[1].tobytes())
    return n / (time.perf_counter() - started)


def compose_rate(fg: Path, bg: Path, out: Path, n: int, preset: str, workers: int) -> float:
    config = ComposeConfig(
        out=out,
        foregrounds=(fg,),
        backgrounds=(bg,),
        n=n,
        size=(SIDE, SIDE),
        preset=preset,
        augment=PRESETS[preset],
        workers=workers,
        progress=False,
    )
    started = time.perf_counter()
    result = run_compose(config)
    assert result.new == n, result
    return n / (time.perf_counter() - started)


def peak_memory_mb(fg: Path, bg: Path, out: Path, n: int) -> float:
    """Max RSS of a fresh process that composes n images (preset default, 1 worker)."""
    code = (
        "import resource, sys; from pathlib import Path; from datagen.compose.config import ComposeConfig; "
        "from datagen.compose.run import run_compose; "
        f"run_compose(ComposeConfig(out=Path({str(out)!r}), foregrounds=(Path({str(fg)!r}),), "
        f"backgrounds=(Path({str(bg)!r}),), n={n}, size=({SIDE}, {SIDE}), progress=False)); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(output.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="images per speed measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of floor / none / default")
    parser.add_argument("--skip-memory", action="store_true", help="skip the n=100 vs n=1000 memory runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        fg, bg = make_pools(root)
        # Alternating rounds, median per measurement: this machine type drifts by 10% within minutes.
        rounds: dict[str, list[float]] = {"floor": [], "none_1": [], "default_1": []}
        for r in range(args.rounds):
            rounds["floor"].append(floor_rate(fg, bg, root / f"floor{r}", args.n))
            rounds["none_1"].append(compose_rate(fg, bg, root / f"none{r}", args.n, "none", 1))
            rounds["default_1"].append(compose_rate(fg, bg, root / f"default{r}", args.n, "default", 1))
        figures = {key: float(np.median(values)) for key, values in rounds.items()}
        # The parallel pair at 2n: each worker process takes a moment to start and to fill its cache.
        figures["default_1_2n"] = compose_rate(fg, bg, root / "default1-2n", 2 * args.n, "default", 1)
        figures["default_2_2n"] = compose_rate(fg, bg, root / "default2-2n", 2 * args.n, "default", 2)
        if not args.skip_memory:
            figures["memory_100_mb"] = peak_memory_mb(fg, bg, root / "m100", 100)
            figures["memory_1000_mb"] = peak_memory_mb(fg, bg, root / "m1000", 1000)
    floor = figures["floor"]
    print(json.dumps({key: round(value, 2) for key, value in figures.items()}))
    rows = [
        ("I/O floor", figures["floor"], ""),
        ("none, 1 worker", figures["none_1"], f"{figures['none_1'] / floor:.2f}x floor (target >= 0.95x)"),
        ("default, 1 worker", figures["default_1"], f"{figures['default_1'] / floor:.2f}x floor (target >= 0.8x)"),
        (f"default, 1 worker, n={2 * args.n}", figures["default_1_2n"], ""),
        (
            f"default, 2 workers, n={2 * args.n}",
            figures["default_2_2n"],
            f"{figures['default_2_2n'] / figures['default_1_2n']:.2f}x one worker (target >= 1.7x)",
        ),
    ]
    print(f"n={args.n} images at {SIDE}x{SIDE}; 100 foregrounds, 50 backgrounds")
    for name, rate, note in rows:
        print(f"{name:<32}{rate:7.1f} images/s  {note}")
    if "memory_100_mb" in figures:
        ratio = figures["memory_1000_mb"] / figures["memory_100_mb"]
        print(
            f"peak memory: n=100 {figures['memory_100_mb']:.0f} MB, n=1000 {figures['memory_1000_mb']:.0f} MB, "
            f"{ratio:.2f}x (target within 10%)"
        )


if __name__ == "__main__":
    main()
