"""AM-2k (Li et al., "Bridging Composite and Real: Towards End-to-end Deep Image Matting", IJCV 2022).

{train,validation}/original/*.jpg + {train,validation}/mask/*.png, validation/trimap/ -> splits train and
validation (the paper reports its results on the validation split).
"""

from __future__ import annotations

from pathlib import Path

from datagen.importers.layout import Discovery, LayoutError, pair_by_stem, unwrap

KIND = "am2k"
LICENSE = "MIT (AM-2k release agreement)"
URL = "https://github.com/JizhiziLi/GFM (dataset links in its README)"


def discover(src: Path, config) -> Discovery:
    src = unwrap(src, "AM-2k", "train")
    discovery = Discovery()
    for split in ("train", "validation"):
        base = src / split
        if (base / "original").is_dir() and (base / "mask").is_dir():
            discovery.extend(pair_by_stem(src, split, base / "original", base / "mask", base / "trimap"))
    if not discovery.pairs and not discovery.skipped:
        raise LayoutError(KIND, src, ["train/original/ + train/mask/", "validation/original/ + validation/mask/"])
    return discovery
