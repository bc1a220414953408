"""P3M-10k (Li et al., "Privacy-Preserving Portrait Matting", ACM MM 2021).

train/blurred_image/*.jpg + train/mask/*.png (9,421 pairs, faces blurred) -> split train.
validation/P3M-500-P/{blurred_image,mask,trimap} and validation/P3M-500-NP/{original_image,mask,trimap}
(500 each) -> split test, with `subset`. Some copies have P3M-500-* directly under the root.
"""

from __future__ import annotations

from pathlib import Path

from datagen.importers.layout import Discovery, LayoutError, pair_by_stem, unwrap

KIND = "p3m"
LICENSE = "MIT (P3M-10k release agreement; privacy-preserving research use)"
URL = "https://github.com/JizhiziLi/P3M (dataset request form linked there)"
TEST_SUBSETS = {"P3M-500-P": "blurred_image", "P3M-500-NP": "original_image"}


def discover(src: Path, config) -> Discovery:
    src = unwrap(src, "P3M-10k", "train")
    discovery = Discovery()
    train = src / "train"
    if (train / "blurred_image").is_dir() and (train / "mask").is_dir():
        discovery.extend(pair_by_stem(src, "train", train / "blurred_image", train / "mask"))
    for subset, image_folder in TEST_SUBSETS.items():
        for base in (src / "validation" / subset, src / subset):
            if (base / image_folder).is_dir() and (base / "mask").is_dir():
                discovery.extend(
                    pair_by_stem(src, "test", base / image_folder, base / "mask", base / "trimap", {"subset": subset})
                )
                break
    if not discovery.pairs and not discovery.skipped:
        raise LayoutError(KIND, src, ["train/blurred_image/ + train/mask/", "validation/P3M-500-P/ or P3M-500-NP/"])
    return discovery
