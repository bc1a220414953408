"""The picture of docs/refine.md: how `datagen refine` draws its band. One row: image | coarse mask | trimap.

    python scripts/refine_docs.py [--rgba ../shared/fixtures/real/layerdiffuse-sdxl-man.png]

The mask is the real LayerDiffuse man's alpha thresholded at 128 (what DIS5K's masks or a model's thresholded output
look like); the trimap is `datagen.alpha.trimap_from_alpha(mask, band, edge_of=127)` with the band `datagen refine`
picks by default (`band_width`: 2% of the mask's bounding-box height, at least 3 px): grey is what ViTMatte fills,
black and white stay the mask's own 0 and 255. No refined alpha is shown: no ViTMatte weights can be downloaded
where this runs, and random weights show nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from datagen.alpha import over, trimap_from_alpha
from datagen.io import encode_png, read_foreground, write_atomic
from datagen.preview import tile_sheet
from datagen.refine import band_width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rgba", type=Path, default=Path("../shared/fixtures/real/layerdiffuse-sdxl-man.png"))
    parser.add_argument("--out", type=Path, default=Path("docs/img/refine-band.png"))
    args = parser.parse_args()
    person = read_foreground(args.rgba)
    height, width = person.shape[:2]
    image = over(person, np.full((height, width, 3), (120, 130, 140), np.uint8))
    mask = np.where(person[..., 3] > 127, 255, 0).astype(np.uint8)
    band = band_width(mask)
    trimap = trimap_from_alpha(mask, band, edge_of=127)
    grey = [np.repeat(array[..., None], 3, axis=2) for array in (mask, trimap)]
    label = f"image | coarse mask (alpha > 127) | trimap, band {band} px each side (2% of the mask's height)"
    write_atomic(args.out, encode_png(tile_sheet([(label, [image, *grey])], 320)))
    print(f"wrote {args.out}: band {band} px")


if __name__ == "__main__":
    main()
