"""The dataset card: DIR/README.md with a Hugging Face YAML header, written from the directory itself."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import yaml

from datagen.io import write_atomic
from datagen.records import read_rows, splits

# Hub licence ids for the licences our sources state; anything else is "other" and named in the body.
HUB_LICENSES = {"Apache-2.0": "apache-2.0", "MIT": "mit", "CC BY-NC-SA 4.0": "cc-by-nc-sa-4.0", "CC0-1.0": "cc0-1.0"}


def size_category(count: int) -> str:
    """The Hub's size bucket for `count` samples."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < limit:
            return label
    return "n>1M"


def render_card(root: str | os.PathLike, title: str, description: str) -> str:
    """README.md text for the dataset directory `root`: YAML header, counts per split, sources and licences."""
    counts = {split: read_rows(root, split) for split in splits(root)}
    licenses = Counter(str(row.get("license", "unknown")) for rows in counts.values() for row in rows)
    sources = Counter(str(row.get("source", "unknown")) for rows in counts.values() for row in rows)
    total = sum(len(rows) for rows in counts.values())
    only = next(iter(licenses)) if len(licenses) == 1 else None
    header = {
        "license": HUB_LICENSES.get(only, "other") if only else "other",
        "task_categories": ["image-segmentation"],
        "size_categories": [size_category(total)],
        "tags": ["background-removal", "alpha-matting", "ormbg"],
        "pretty_name": title,
    }
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {title}",
        "",
        description,
        "",
        "Layout: `<split>/im/<id>.jpg` image, `<split>/gt/<id>.png` alpha matte (one 8-bit channel, soft values "
        "kept), `<split>/metadata.jsonl` one row per sample; `datasets.load_dataset(DIR)` loads it as is.",
        "",
        "| split | samples |",
        "| --- | ---: |",
        *(f"| {split} | {len(rows)} |" for split, rows in counts.items()),
        "",
        "Sources: " + ", ".join(f"{name} ({n})" for name, n in sources.most_common()) + ".",
        "Licences: " + ", ".join(f"{name} ({n} samples)" for name, n in licenses.most_common()) + ".",
        "",
    ]
    return "\n".join(lines)


def write_card(root: str | os.PathLike, title: str, description: str) -> Path:
    """Write DIR/README.md atomically; returns its path."""
    path = Path(root) / "README.md"
    write_atomic(path, render_card(root, title, description).encode())
    return path
