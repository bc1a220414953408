"""The picture of docs/compose.md's "Real people" section: one photo composited raw versus with its estimated colour.

    python scripts/foreground_docs.py [--rgba ../shared/fixtures/real/layerdiffuse-sdxl-man.png]

A transparent person whose true colour F is known (the real LayerDiffuse output of a man with curly hair) is put on
dark foliage: that is the "photo" with its exact alpha, written as a dataset directory. Then the commands printed
below run: `datagen compose` with `--raw-foreground` (the photo as the colour, the old behaviour), `datagen
foreground` and `datagen compose` again (the estimated colour), and `datagen compose` on the true RGBA (what the
composite should be), all onto one flat blue background with the same seed, so the placement is identical.
The sheet (docs/img/foreground-halo.png) shows each composite and a zoom into the hair.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from datagen.alpha import over
from datagen.io import encode_png, read_foreground, read_image, write_atomic
from datagen.preview import tile_sheet
from datagen.records import read_rows, write_sample

ROOT = Path("runs/foreground-docs")
SIZE = "768x768"


def foliage(height: int, width: int) -> np.ndarray:
    """Dark green leaves: smoothed noise in greens, HxWx3 uint8."""
    rng = np.random.default_rng(7)
    leaves = cv2.resize(rng.random((height // 24, width // 24, 1)).astype(np.float32), (width, height))
    detail = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 3)
    shade = 0.55 * leaves + 0.45 * detail
    colour = np.stack([18 + 40 * shade, 60 + 110 * shade, 16 + 35 * shade], axis=-1)
    return np.clip(colour, 0, 255).astype(np.uint8)


def run(command: str) -> None:
    print("$", command)
    subprocess.run(shlex.split(command), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rgba", type=Path, default=Path("../shared/fixtures/real/layerdiffuse-sdxl-man.png"))
    parser.add_argument("--out", type=Path, default=Path("docs/img/foreground-halo.png"))
    args = parser.parse_args()
    person = read_foreground(args.rgba)
    height, width = person.shape[:2]
    write_atomic(ROOT / "truth" / "person.png", encode_png(person))
    photos = ROOT / "photos"
    if not read_rows(photos, "train"):
        photo = over(person, foliage(height, width))
        write_sample(photos, "train", "man", image=photo, alpha=person[..., 3], metadata={"source": "docs"})
    write_atomic(ROOT / "blue" / "blue.png", encode_png(np.full((height, width, 3), (40, 70, 220), np.uint8)))
    common = f"-n 1 --size {SIZE} --preset none --seed 3 --bg {ROOT / 'blue'} --no-progress"
    run(f"datagen compose --fg {photos} --raw-foreground {common} -o {ROOT / 'raw'}")
    run(f"datagen foreground {photos} --no-progress")
    run(f"datagen compose --fg {photos} {common} -o {ROOT / 'estimated'}")
    run(f"datagen compose --fg {ROOT / 'truth'} {common} -o {ROOT / 'truth-composite'}")
    images = {name: read_image(ROOT / name / "train/im/composite-s3-0000000.jpg") for name in ("raw", "estimated")}
    images["true colour"] = read_image(ROOT / "truth-composite/train/im/composite-s3-0000000.jpg")
    alpha = cv2.imread(str(ROOT / "raw/train/gt/composite-s3-0000000.png"), cv2.IMREAD_GRAYSCALE)
    soft = (alpha > 0) & (alpha < 255)
    ys, xs = np.nonzero(soft)
    top = max(0, int(ys.min()) - 8)  # the hair's outer edge, where the old background shows
    centre = int(np.median(xs[ys < top + 40]))
    box = (slice(top, top + 112), slice(max(0, centre - 56), centre + 56))
    rows = [
        (
            f"{name}: composite | hair zoomed",
            [image, cv2.resize(image[box], (384, 384), interpolation=cv2.INTER_NEAREST)],
        )
        for name, image in images.items()
    ]
    write_atomic(args.out, encode_png(tile_sheet(rows, 384)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
