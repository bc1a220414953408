"""The picture of docs/infer.md's "Colours of cut-outs": hair cut out with the photo's colours vs the estimated colour.

    python scripts/infer_docs.py [--rgba ../shared/fixtures/real/layerdiffuse-sdxl-man.png] [--blur-px 3]

A transparent person whose true colour is known (the real LayerDiffuse output of a man with curly hair) is put on
dark foliage: that is the photo. It is cut out with a blurred copy of its alpha (soft where the truth is sharp, as
a model predicts it; no trained weights can be downloaded where this was made) and put on flat blue, through the
function `python -m ormbg.infer --mode composite` uses (`ormbg.infer.render`), once with `--foreground none` (the
photo's colours) and once with `--foreground ml`, beside the true colour with the true alpha. Each row: the
composite and the hair zoomed. Writes docs/img/infer-foreground.png.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import cv2
import numpy as np
from foreground_docs import foliage
from PIL import Image

from datagen.alpha import over
from datagen.io import encode_png, read_foreground, write_atomic
from datagen.preview import tile_sheet
from ormbg.infer import render

BLUE = (40, 70, 220)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rgba", type=Path, default=Path("../shared/fixtures/real/layerdiffuse-sdxl-man.png"))
    parser.add_argument("--blur-px", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("docs/img/infer-foreground.png"))
    args = parser.parse_args()
    person = read_foreground(args.rgba)
    height, width = person.shape[:2]
    photo = over(person, foliage(height, width))
    alpha = cv2.GaussianBlur(person[..., 3].astype(np.float32), (0, 0), args.blur_px) / 255
    images = {
        f"--foreground {method}": np.asarray(
            Image.open(io.BytesIO(render(photo, alpha, "composite", BLUE, Path("x.png"), method)))
        )
        for method in ("none", "ml")
    }
    images["true colour, true alpha"] = over(person, np.full((height, width, 3), BLUE, np.uint8))
    soft = (person[..., 3] > 0) & (person[..., 3] < 255)
    ys, xs = np.nonzero(soft)
    top = max(0, int(ys.min()) - 8)  # the hair's outer edge, where the old background shows
    centre = int(np.median(xs[ys < top + 40]))
    box = (slice(top, top + 112), slice(max(0, centre - 56), centre + 56))
    rows = [
        (f"{name}: on blue | hair zoomed", [image, cv2.resize(image[box], (384, 384), interpolation=cv2.INTER_NEAREST)])
        for name, image in images.items()
    ]
    write_atomic(args.out, encode_png(tile_sheet(rows, 384)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
