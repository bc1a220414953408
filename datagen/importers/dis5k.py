"""DIS5K (Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022).

DIS-TR -> train, DIS-VD -> validation, DIS-TE1..DIS-TE4 -> test with subset TE1..TE4; each im/*.jpg +
gt/*.png. Names contain '#': ids are sanitized and stay unique.
"""

from __future__ import annotations

from pathlib import Path

from datagen.importers.layout import Discovery, LayoutError, pair_by_stem

KIND = "dis5k"
LICENSE = "non-commercial research and education only (DIS5K terms of use)"
URL = "https://github.com/xuebinqin/DIS (Google Drive / Baidu links in its README)"
PARTS = {"DIS-TR": ("train", None), "DIS-VD": ("validation", None)} | {
    f"DIS-TE{i}": ("test", f"TE{i}") for i in range(1, 5)
}


def discover(src: Path, config) -> Discovery:
    if not any((src / part).is_dir() for part in PARTS) and (src / "DIS5K").is_dir():
        src = src / "DIS5K"
    discovery = Discovery()
    for part, (split, subset) in PARTS.items():
        base = src / part
        if (base / "im").is_dir() and (base / "gt").is_dir():
            metadata = {"subset": subset} if subset else {}
            discovery.extend(pair_by_stem(src, split, base / "im", base / "gt", metadata=metadata))
    if not discovery.pairs and not discovery.skipped:
        raise LayoutError(KIND, src, ["DIS-TR/, DIS-VD/ or DIS-TE1..4/, each with im/ and gt/"])
    return discovery
