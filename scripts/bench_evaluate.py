"""Time `python -m ormbg.evaluate` on 1024x1024 samples with trimaps, scoring in 1 and in N processes.

Predictions are read from a folder (`--predictions`), so the figure is the evaluator's own cost (reading, the
measures), which sets the pace on a GPU machine where the model itself takes milliseconds per image.

    python scripts/bench_evaluate.py                 # 1 vs 2 metric workers, 40 images
    python scripts/bench_evaluate.py --workers 1 8 --n 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from datagen.alpha import over, trimap_from_alpha
from datagen.io import encode_png, write_atomic
from datagen.procedural import draw_background, draw_person
from datagen.records import write_sample
from ormbg.evaluate import EvaluateConfig, run_evaluate


def make_dataset(root: Path, n: int, side: int) -> tuple[Path, Path]:
    """n people over backgrounds with trimaps (the importers' band recipe), and a blurred copy of each alpha as
    'another model's' matte."""
    predictions = root / "predictions"
    for index in range(n):
        rng = np.random.default_rng([index])
        person = draw_person(rng, side, side)
        alpha = person[..., 3]
        trimap = trimap_from_alpha(alpha)
        image = over(person, draw_background(rng, side, side))
        write_sample(root / "data", "test", f"s{index:04d}", image=image, alpha=alpha, trimap=trimap)
        write_atomic(predictions / f"s{index:04d}.png", encode_png(cv2.GaussianBlur(alpha, (0, 0), 4)))
    return root / "data", predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="metric workers to compare")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is kept")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data, predictions = make_dataset(Path(folder), args.n, args.side)
        best: dict[int, float] = {}
        for _ in range(args.rounds):
            for workers in args.workers:
                config = EvaluateConfig(
                    data=(str(data),), predictions=predictions, workers=1, metric_workers=workers, progress=False
                )
                started = time.perf_counter()
                report = run_evaluate(config)
                rate = args.n / (time.perf_counter() - started)
                best[workers] = max(best.get(workers, 0.0), rate)
                assert report["datasets"][f"{data}:test"]["n"] == args.n
    base = best[args.workers[0]]
    for workers, rate in best.items():
        print(
            f"evaluate --predictions, {args.n} images {args.side}x{args.side} with trimaps, {workers} metric "
            f"worker(s): {rate:.2f} images/s ({rate / base:.2f}x)"
        )


if __name__ == "__main__":
    main()
