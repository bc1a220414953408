"""AIM-500 (Li et al., "Deep Automatic Natural Image Matting", IJCAI 2021).

original/*.jpg + mask/*.png, with trimap/*.png (kept) and usr/*.png (unified semantic representation, not a
matte: ignored); aim_category_type.json gives each stem its type and category -> split test. Some archives
wrap everything in a second AIM-500/ folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.importers.layout import Discovery, LayoutError, pair_by_stem, unwrap
from datagen.io import read_json
from datagen.records import Skip

KIND = "aim500"
LICENSE = "MIT (AIM-500 release agreement)"
URL = "https://github.com/JizhiziLi/AIM (dataset links in its README)"
CATEGORIES = "aim_category_type.json"


def _fields(value: Any) -> dict[str, str]:
    """Type and category from one JSON value: {"type": .., "category": ..}, [type, category] or a string."""
    if isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        return {key: str(lowered[key]) for key in ("type", "category") if key in lowered}
    if isinstance(value, list | tuple) and len(value) == 2:
        return {"type": str(value[0]), "category": str(value[1])}
    if isinstance(value, str):
        return {"type": value}
    return {}


def read_categories(path: Path) -> dict[str, dict[str, str]]:
    """{stem: {"type": .., "category": ..}} from aim_category_type.json (keys with or without extension)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object mapping image names to type and category")
    return {Path(str(name)).stem: _fields(value) for name, value in data.items()}


def discover(src: Path, config) -> Discovery:
    src = unwrap(src, "AIM-500", "original")
    if not ((src / "original").is_dir() and (src / "mask").is_dir()):
        raise LayoutError(KIND, src, ["original/", "mask/", f"(trimap/, {CATEGORIES})"])
    discovery = pair_by_stem(src, "test", src / "original", src / "mask", src / "trimap")
    categories: dict[str, dict[str, str]] = {}
    if (src / CATEGORIES).is_file():
        try:
            categories = read_categories(src / CATEGORIES)
        except (ValueError, json.JSONDecodeError) as error:
            discovery.skipped.append(Skip(CATEGORIES, f"unreadable category file ({error}); samples kept without"))
    discovery.pairs = [
        dataclasses.replace(
            pair, metadata={**pair.metadata, "type": "", "category": "", **categories.get(pair.name, {})}
        )
        for pair in discovery.pairs
    ]
    return discovery
