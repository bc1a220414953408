"""PPM-100 (Ke et al., "MODNet", AAAI 2022): a portrait matting benchmark.

image/*.jpg + matte/*.jpg with identical names -> split test. The mattes are JPEG: read as grayscale with
their values kept (never thresholded).
"""

from __future__ import annotations

from pathlib import Path

from datagen.importers.layout import Discovery, LayoutError, pair_by_stem, unwrap

KIND = "ppm100"
LICENSE = "mattes CC BY-NC-SA 4.0; images Flickr Creative Commons (per-image licences)"
URL = "https://github.com/ZHKKKe/PPM (Google Drive link in its README)"


def discover(src: Path, config) -> Discovery:
    src = unwrap(src, "PPM-100", "image")
    if not ((src / "image").is_dir() and (src / "matte").is_dir()):
        raise LayoutError(KIND, src, ["image/", "matte/"])
    return pair_by_stem(src, "test", src / "image", src / "matte")
