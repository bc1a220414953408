"""Benchmark `datagen import p3m`: parallel speed-up, and copying JPEGs versus re-encoding PNG sources.

Builds a P3M-10k layout of N pairs at 1920x1080 in a temporary folder (a few distinct photo-like images with
sensor-like noise, repeated under different names) and prints, measured in one run:
pairs/s with --workers 1 and 2 on JPEG sources (copied), and on PNG sources (decoded and re-encoded).
Targets on a 2-core machine: 2 workers >= 1.6x one worker; copying >= 3x faster than re-encoding.

    python scripts/bench_import.py [--n 500] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from datagen.importers import ImportConfig, run_import
from datagen.io import encode_jpeg, encode_png, write_atomic
from datagen.samples import draw_pair

WIDTH, HEIGHT, DISTINCT = 1920, 1080, 8


def build_tree(root: Path, n: int, image_ext: str) -> None:
    """P3M train layout with n pairs; only DISTINCT images are drawn, the rest are copies under new names."""
    encoded = []
    for index in range(DISTINCT):
        rng = np.random.default_rng([index])
        image, alpha = draw_pair(rng, HEIGHT // 4, WIDTH // 4)
        image = cv2.resize(image, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)  # photo-like entropy
        alpha = cv2.resize(alpha, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
        data = encode_jpeg(image, 92) if image_ext == ".jpg" else encode_png(image)
        encoded.append((data, encode_png(alpha)))
    for index in range(n):
        image_bytes, alpha_bytes = encoded[index % DISTINCT]
        stem = f"p_{index:08x}"
        write_atomic(root / "train/blurred_image" / f"{stem}{image_ext}", image_bytes)
        write_atomic(root / "train/mask" / f"{stem}.png", alpha_bytes)


def pairs_per_second(src: Path, out: Path, workers: int) -> float:
    started = time.perf_counter()
    result = run_import("p3m", src, ImportConfig(out=out, workers=workers, progress=False))
    seconds = time.perf_counter() - started
    assert result.new == len(list((src / "train/mask").iterdir())), "every pair must be imported"
    return result.new / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500, help="pairs per source tree")
    parser.add_argument("--workers", type=int, default=2, help="the parallel run's worker count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        build_tree(root / "jpg", args.n, ".jpg")
        build_tree(root / "png", args.n, ".png")
        copy_1 = pairs_per_second(root / "jpg", root / "out-copy-1", 1)
        copy_n = pairs_per_second(root / "jpg", root / "out-copy-n", args.workers)
        encode_1 = pairs_per_second(root / "png", root / "out-encode-1", 1)
        encode_n = pairs_per_second(root / "png", root / "out-encode-n", args.workers)
    print(f"{args.n} pairs at {WIDTH}x{HEIGHT}")
    print(f"{'source':<28}{'workers 1':>12}{f'workers {args.workers}':>12}{'speed-up':>10}")
    print(f"{'JPEG (copied)':<28}{copy_1:>10.1f}/s{copy_n:>10.1f}/s{copy_n / copy_1:>9.2f}x")
    print(f"{'PNG (decoded, re-encoded)':<28}{encode_1:>10.1f}/s{encode_n:>10.1f}/s{encode_n / encode_1:>9.2f}x")
    print(f"copy vs re-encode, per pair, 1 worker: {copy_1 / encode_1:.2f}x   (target >= 3x)")
    print(f"{args.workers} workers vs 1, re-encoding: {encode_n / encode_1:.2f}x   (target >= 1.6x)")


if __name__ == "__main__":
    main()
