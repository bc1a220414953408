"""Benchmark foreground colour estimation (`datagen foreground`): accuracy against a known F, and speed.

RGBA foregrounds whose true colour F is known (procedural people with hair-like soft strands, and the RGBA files
of --rgba folders, such as the real LayerDiffuse outputs in shared/fixtures/real) are composited onto several
backgrounds (flat saturated colours, a gradient, a textured photo-like one). F is estimated back from the
composite and its alpha, and compared, for the raw composite (what compose used before: the photo as F) and each
method:

- F error: the alpha-weighted mean absolute error of F over the soft pixels (0 < a < 1), in 8-bit levels;
- re-composite error: the mean absolute error, over the soft pixels, of the estimate composited onto a new
  background (flat blue) against the true F composited there: the halo a user would see.

Speed: seconds per 1024x1024 image on one core (OpenCV and numba single-threaded), best of --rounds.
Target: the default method's errors at most a third of the raw image's; the default is the cheapest method within
10% of the best accuracy.

The prediction case (`python -m ormbg.infer --foreground`): the same composites cut out with the true alpha and with
a blurred alpha (Gaussian, sigma --blur-px: soft where the truth is sharp, as a model predicts it). Each cut-out (raw
colours, or each method's estimate from the matte used) is composited with that matte onto flat blue and compared
with the true F composited with the true alpha there (mean absolute error over the pixels soft in either matte).
Target: ml at least 2.5x lower error than the raw colours with the blurred alpha, at most 0.2 s per 1024 image.
Prints figures and ratios measured in one run.

    python scripts/bench_foreground.py [--people 4] [--rgba ../shared/fixtures/real] [--rounds 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # one core, as one worker of `datagen foreground -w N` has

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from datagen.alpha import over  # noqa: E402
from datagen.foreground import METHODS, estimate_foreground  # noqa: E402
from datagen.io import read_foreground  # noqa: E402
from datagen.procedural import draw_background, draw_person  # noqa: E402

SIDE = 1024


def backgrounds(height: int, width: int) -> dict[str, np.ndarray]:
    """Flat saturated colours, a diagonal gradient and a textured photo-like background, HxWx3 uint8."""
    flat = {
        name: np.full((height, width, 3), rgb, np.uint8)
        for name, rgb in {"green": (20, 160, 40), "red": (200, 30, 30), "yellow": (230, 210, 40)}.items()
    }
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (x / width + y / height)[..., None] / 2
    gradient = np.rint(t * np.array([250, 40, 200]) + (1 - t) * np.array([10, 200, 240])).astype(np.uint8)
    textured = draw_background(np.random.default_rng([5, height, width]), height, width)
    noise = np.random.default_rng(1).normal(0, 18, (height // 8, width // 8, 3)).astype(np.float32)
    textured = np.clip(textured + cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255)
    return {**flat, "gradient": gradient, "textured": textured.astype(np.uint8)}


def foregrounds(people: int, folders: list[Path]) -> dict[str, np.ndarray]:
    """Procedural people at SIDE x SIDE and every RGBA file of the folders (straight alpha)."""
    found = {f"person-{i}": draw_person(np.random.default_rng([i, 3]), SIDE, SIDE) for i in range(people)}
    for folder in folders:
        for path in sorted(folder.glob("*.png")):
            rgba = read_foreground(path)
            if rgba[..., 3].min() < 255:
                found[path.stem] = rgba
    return found


def errors(
    truth: np.ndarray, estimate: np.ndarray, alpha: np.ndarray, new_background: np.ndarray
) -> tuple[float, float]:
    """(alpha-weighted F error over soft pixels, re-composite error over soft pixels), 8-bit levels."""
    soft = (alpha > 0) & (alpha < 255)
    weight = alpha[soft].astype(np.float64) / 255
    difference = np.abs(truth[soft].astype(np.float64) - estimate[soft]).mean(axis=1)
    f_error = float((weight * difference).sum() / weight.sum())
    truth_on_new = over(np.dstack([truth, alpha]), new_background)
    estimate_on_new = over(np.dstack([estimate, alpha]), new_background)
    composite_error = float(np.abs(truth_on_new[soft].astype(np.float64) - estimate_on_new[soft]).mean())
    return f_error, composite_error


def speed(method: str, rounds: int) -> float:
    """Seconds per 1024x1024 image on one core (best of `rounds`)."""
    person = draw_person(np.random.default_rng([9]), SIDE, SIDE)
    image = over(person, backgrounds(SIDE, SIDE)["textured"])
    estimate_foreground(image, person[..., 3], method)  # warm-up (numba compiles once)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        estimate_foreground(image, person[..., 3], method)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=4, help="procedural people at 1024x1024")
    parser.add_argument("--rgba", type=Path, nargs="*", default=[], help="folders of RGBA PNGs with a known F")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds per method")
    parser.add_argument("--blur-px", type=float, default=3.0, help="sigma of the blurred matte (prediction case)")
    parser.add_argument(
        "--sharpen",
        type=float,
        nargs="*",
        default=[],
        help="prediction case: also ml on the matte sharpened by each factor K (a' = (a - 0.5) K + 0.5), a candidate "
        "for soft predicted mattes",
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    methods = ["raw", *METHODS]
    totals = {method: np.zeros(2) for method in methods}
    cases = 0
    print(f"{'foreground':<34}{'background':<10}" + "".join(f"{m + ' F / recomp':>26}" for m in methods))
    for name, rgba in foregrounds(args.people, args.rgba).items():
        truth, alpha = rgba[..., :3], rgba[..., 3]
        height, width = alpha.shape
        new_background = np.full((height, width, 3), (30, 60, 230), np.uint8)
        for bg_name, background in backgrounds(height, width).items():
            image = over(rgba, background)
            estimates = {"raw": image, **{m: estimate_foreground(image, alpha, m) for m in METHODS}}
            row = {m: errors(truth, estimate, alpha, new_background) for m, estimate in estimates.items()}
            for method, values in row.items():
                totals[method] += values
            cases += 1
            print(f"{name:<34}{bg_name:<10}" + "".join(f"{f:>15.2f} / {c:>8.2f}" for f, c in row.values()))
    means = {method: total / cases for method, total in totals.items()}
    seconds = {"raw": 0.0, **{method: speed(method, args.rounds) for method in METHODS}}
    print(f"\nmean over {cases} composites (8-bit levels; soft pixels only), and s per 1024x1024 image on one core:")
    for method in methods:
        f_error, composite_error = means[method]
        ratio = means["raw"][0] / f_error if f_error else float("inf")
        print(
            f"  {method:<12} F error {f_error:7.2f}   re-composite error {composite_error:7.2f}   "
            f"raw / this {ratio:5.2f}x   {seconds[method]:.3f} s"
        )
    best = min(means[m][0] for m in METHODS)
    eligible = [m for m in METHODS if means[m][0] <= 1.1 * best]
    default = min(eligible, key=lambda m: seconds[m])
    print(f"\ncheapest method within 10% of the best F error: {default}")
    met = means[default][0] * 3 <= means["raw"][0]
    print(f"target (F error at most a third of the raw image's): {'met' if met else 'NOT met'}")
    prediction_case(foregrounds(args.people, args.rgba), args.blur_px, seconds, args.sharpen)


def sharpened(alpha: np.ndarray, factor: float) -> np.ndarray:
    """The matte's ramps made `factor` times steeper around 0.5 (uint8 in and out)."""
    steeper = (alpha.astype(np.float32) - 127.5) * factor + 127.5
    return np.clip(np.rint(steeper), 0, 255).astype(np.uint8)


def prediction_case(
    cases: dict[str, np.ndarray], blur_px: float, seconds: dict[str, float], sharpen: list[float] = ()
) -> None:
    """Cut-outs from a true and a blurred matte, re-composited on blue: raw colours vs each method. Two references:
    the true F with the same matte (the colour fringe alone) and the true F with the true alpha (everything a user
    sees, the matte's own error included, which no colour estimate can remove)."""
    variants = ("raw", *METHODS, *(f"ml-sharpen-{k:g}" for k in sharpen))
    errors = {(matte, ref): dict.fromkeys(variants, 0.0) for matte in ("true", "blurred") for ref in REFS}
    count = 0
    for rgba in cases.values():
        truth, alpha = rgba[..., :3], rgba[..., 3]
        blue = np.full((*alpha.shape, 3), (30, 60, 230), np.uint8)
        blurred = np.rint(cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), blur_px)).astype(np.uint8)
        for background in backgrounds(*alpha.shape).values():
            image = over(rgba, background)
            for matte, used in (("true", alpha), ("blurred", blurred)):
                soft = ((used > 0) & (used < 255)) | ((alpha > 0) & (alpha < 255))
                references = {
                    REFS[0]: over(np.dstack([truth, used]), blue)[soft].astype(np.float64),
                    REFS[1]: over(rgba, blue)[soft].astype(np.float64),
                }
                colours = {"raw": image, **{m: estimate_foreground(image, used, m) for m in METHODS}}
                for k in sharpen:
                    colours[f"ml-sharpen-{k:g}"] = estimate_foreground(image, sharpened(used, k), "ml")
                for method, colour in colours.items():
                    composite = over(np.dstack([colour, used]), blue)[soft].astype(np.float64)
                    for ref, reference in references.items():
                        errors[matte, ref][method] += float(np.abs(composite - reference).mean())
            count += 1
    print(f"\nprediction case: {count} composites cut out and put on blue (blurred matte: sigma {blur_px} px);")
    print("mean absolute error over the pixels soft in either matte, 8-bit levels (raw / method in brackets):")
    for (matte, ref), by_method in errors.items():
        raw = by_method["raw"] / count
        line = "   ".join(f"{m} {v / count:6.2f} ({raw * count / v:4.2f}x)" for m, v in by_method.items() if m != "raw")
        print(f"  {matte + ' matte, ' + ref:<44} raw {raw:6.2f}   {line}")
    ratio = errors["blurred", REFS[0]]["raw"] / errors["blurred", REFS[0]]["ml"]
    met = ratio >= 2.5 and seconds["ml"] <= 0.2
    print(f"target (ml's fringe with the blurred matte at least 2.5x below raw's, at most 0.2 s per 1024 image): "
          f"{ratio:.2f}x, {seconds['ml']:.3f} s: {'met' if met else 'NOT met'}")  # fmt: skip


REFS = ("against true F, same matte", "against true F, true alpha")


if __name__ == "__main__":
    main()
