"""Scaling a photo background down to the output: OpenCV's INTER_AREA (what compose does) against a faster candidate.

    python scripts/bench_shrink.py

A background larger than the output is scaled down by a non-integer factor f, which sends OpenCV's INTER_AREA down
its generic path. The candidate: `cv2.pyrDown` while f >= 2, then a Gaussian blur of sigma K x sqrt(f^2 - 1) and
INTER_LINEAR. Printed, measured in one run (single-threaded OpenCV): milliseconds of each from 2266x1700 to
1365x1024 (medians of alternating rounds); then, for factors f from 1.1 to 3.3 and K in 0.4 and 0.5, the mean absolute
difference to INTER_AREA on a fine random texture, and the aliasing of each on a zone plate (the standard deviation of
the output where the plate is finer than the output's Nyquist frequency: 0 for a perfect low-pass). Not used by
compose (see docs/benchmarks.md): it decides whether a faster resampling is worth the change of look.
"""

from __future__ import annotations

import math
import time

import cv2
import numpy as np


def candidate(image: np.ndarray, size: tuple[int, int], k: float) -> np.ndarray:
    height, width = image.shape[:2]
    factor = min(width / size[0], height / size[1])
    while factor >= 2:
        image = cv2.pyrDown(image)
        height, width = image.shape[:2]
        factor = min(width / size[0], height / size[1])
    if factor > 1:
        image = cv2.GaussianBlur(image, (0, 0), k * math.sqrt(factor * factor - 1))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def area(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def zone_plate(side: int) -> np.ndarray:
    """A radial chirp whose local frequency grows from 0 to 0.5 cycles a pixel at radius `side`."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    return (127.5 + 127 * np.cos(np.pi * (x * x + y * y) / (2 * side))).astype(np.uint8)


def main() -> None:
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (1700, 2266, 3), dtype=np.uint8), (0, 0), 1.0)
    size = (1365, 1024)
    rounds = {"INTER_AREA": [], "candidate (K 0.5)": []}
    for _ in range(5):
        for name, function in (
            ("INTER_AREA", lambda: area(photo, size)),
            ("candidate (K 0.5)", lambda: candidate(photo, size, 0.5)),
        ):
            function()
            started = time.perf_counter()
            for _ in range(5):
                function()
            rounds[name].append((time.perf_counter() - started) * 200)
    medians = {name: float(np.median(values)) for name, values in rounds.items()}
    print("2266x1700 -> 1365x1024: " + ", ".join(f"{name} {value:.1f} ms" for name, value in medians.items())
          + f"; ratio {medians['INTER_AREA'] / medians['candidate (K 0.5)']:.2f}x")  # fmt: skip
    out = 600
    for factor in (1.1, 1.3, 1.5, 1.7, 1.9, 2.5, 3.3):
        side = int(round(out * factor))
        texture = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (0, 0), 1.0)
        texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
        plate = zone_plate(side)
        ys, xs = np.mgrid[0:out, 0:out] * factor
        fine = np.hypot(xs, ys) > side / factor * 1.15  # local frequency above the output's Nyquist, with a margin
        reference = area(texture, (out, out)).astype(float)
        cells = [f"f {factor}: INTER_AREA aliasing {np.std(area(plate, (out, out))[fine]):5.1f}"]
        for k in (0.4, 0.5):
            difference = np.abs(candidate(texture, (out, out), k) - reference).mean()
            aliasing = np.std(candidate(plate, (out, out), k).astype(float)[fine])
            cells.append(f"K {k}: aliasing {aliasing:5.1f}, differs by {difference:4.2f} levels")
        print(" | ".join(cells))


if __name__ == "__main__":
    main()
