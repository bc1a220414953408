"""The dataset card, one writer for both places it goes: DIR/README.md and the card `datagen push` uploads.

Built with huggingface_hub's `DatasetCard` / `DatasetCardData`: licence (the most restrictive of the sources, with
`license_name` and `license_link` when it is not a Hub licence id), task, size bucket, tags, the `dataset_info`
features, and on the Hub the Parquet `configs`. The body says what the directory holds (its row shapes: photos,
a foreground pool, backgrounds), counts per split and the sources with their licences.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from datagen.io import write_atomic
from datagen.records import FILE_KINDS, METADATA, REJECTED, Sample, iter_samples, rejected_ids, splits

log = logging.getLogger(__name__)

# Licences from least to most restrictive; the card names the most restrictive one of the dataset's sources.
LICENSE_RANKS = [
    (r"cc0|public domain", "cc0-1.0"),
    (r"\bmit\b", "mit"),
    (r"apache", "apache-2.0"),
    (r"cc by 4|cc-by-4", "cc-by-4.0"),
    (r"cc by-sa|cc-by-sa", "cc-by-sa-4.0"),
    (r"open ?rail", "openrail++"),
    (r"cc by-nc 4|cc-by-nc-4", "cc-by-nc-4.0"),
    (r"by-nc-sa", "cc-by-nc-sa-4.0"),
    (r"non-commercial|research", "other"),
]
# The Hub's size buckets (its card schema allows only these).
SIZE_CATEGORIES = [(10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M")]
SIZE_CATEGORIES += [(10**7, "1M<n<10M"), (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B")]
IMAGE_COLUMNS = {key: kind for kind, (key, _) in FILE_KINDS.items()}  # file_name -> image, ...
LICENSE_FILE = "LICENSE.md"  # the sources' licence statements, linked from the card when the licence is "other"


def size_category(count: int) -> str:
    """The Hub's size bucket for `count` samples."""
    return next((label for limit, label in SIZE_CATEGORIES if count < limit), "n>1T")


def license_rank(text: str) -> tuple[int, str]:
    """(rank, Hub licence id) of a licence statement: the most restrictive licence it names (a composite's
    statement names its foreground's and its background's); unknown statements rank as the most restrictive."""
    lowered = text.lower()
    ranks = [rank for rank, (pattern, _) in enumerate(LICENSE_RANKS) if re.search(pattern, lowered)]
    if not ranks or "unknown" in lowered:
        return len(LICENSE_RANKS), "other"
    return max(ranks), LICENSE_RANKS[max(ranks)][1]


def feature_type(key: str, value: Any) -> str:
    """The `datasets` type of a metadata column (image columns are Image features)."""
    if key in IMAGE_COLUMNS:
        return "image"
    if isinstance(value, bool):
        return "bool"
    return {int: "int64", float: "float64"}.get(type(value), "string")


def layout_line(first: Sample) -> str:
    """What the files of a row shape are (a foreground pool has no im/, a background set no gt/)."""
    if first.is_foreground_only:
        return "`<split>/fg/<id>.png` RGBA foreground (straight alpha), `<split>/gt/<id>.png` its alpha matte"
    if first.is_background:
        return "`<split>/im/<id>.jpg` people-free background image (no matte)"
    return "`<split>/im/<id>.jpg` image, `<split>/gt/<id>.png` alpha matte (one 8-bit channel, soft values kept)"


def render_card(
    root: str | os.PathLike,
    title: str,
    description: str,
    *,
    data_files: dict[str, list[str]] | None = None,
    extra: list[str] | None = None,
) -> tuple[str, str | None]:
    """(card text, LICENSE.md text or None) for the dataset directory `root`.

    `data_files` (split -> Parquet files) makes the Hub card: its `configs` point at them. `extra`: more Markdown
    lines for the body (the Hub card's provenance, statistics and preview).
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    counts: dict[str, int] = {}  # split -> samples a reader gets: complete rows, rejections (rejected.jsonl) left out
    licenses: dict[str, str] = {}
    sources: Counter = Counter()
    first: Sample | None = None
    for split in splits(root):  # streamed: the rows are counted, never held
        if data_files and split not in data_files:
            continue
        counts[split] = 0
        for sample in iter_samples(root, split):
            first = first or sample
            counts[split] += 1
            source = str(sample.row.get("source", "unknown"))
            licenses.setdefault(source, str(sample.row.get("license", "unknown")))
            sources[source] += 1
    strictest = max(licenses.values(), key=lambda text: license_rank(text)[0], default="unknown")
    hub_id = license_rank(strictest)[1]
    columns = {
        IMAGE_COLUMNS.get(key, key): feature_type(key, value) for key, value in (first.row if first else {}).items()
    }
    data = DatasetCardData(
        license=hub_id,
        task_categories=["image-segmentation"],
        size_categories=[size_category(sum(counts.values()))],
        tags=["background-removal", "alpha-matting", "ormbg"],
        pretty_name=title,
        dataset_info={"features": [{"name": name, "dtype": dtype} for name, dtype in columns.items()]},
    )
    if hub_id == "other":
        data.license_name = re.sub(r"[^a-z0-9]+", "-", strictest.lower()).strip("-")[:64] or "unknown"
        data.license_link = LICENSE_FILE
    if data_files:
        data.configs = [
            {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in data_files]}
        ]
    layout = layout_line(first) if first else "empty"
    where = "the Parquet files under data/" if data_files else "`datasets.load_dataset(DIR)` loads it as is"
    body = [
        f"# {title}",
        "",
        description,
        "",
        f"Files: {layout}; `<split>/metadata.jsonl` one row per sample ({where}). Columns: "
        + ", ".join(f"`{name}`" for name in columns)
        + ".",
        "",
        "| split | samples |",
        "| --- | ---: |",
        *(f"| {split} | {count} |" for split, count in counts.items()),
        "",
        "## Sources and licences",
        "",
        f"The card's licence is the most restrictive of the sources: **{strictest}**.",
        "",
        "| source | samples | licence |",
        "| --- | ---: | --- |",
        *(f"| {source} | {sources[source]} | {licenses[source]} |" for source in sorted(licenses)),
        "",
        *(
            [f"{len(rejected)} samples were rejected in review (`rejected.jsonl`) and are left out.", ""]
            if (rejected := rejected_ids(root))
            else []
        ),
        *(extra or []),
    ]
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
    license_text = None
    if hub_id == "other":
        license_text = "# Licences of the sources\n\n" + "".join(
            f"- **{source}**: {text}\n" for source, text in sorted(licenses.items())
        )
    return str(card), license_text


def card_is_current(root: str | os.PathLike, title: str, description: str) -> bool:
    """DIR/README.md was written after the last change to any split's rows and to rejected.jsonl, with this title
    and description: rendering it again (a pass over every row) would give the same card."""
    path = Path(root) / "README.md"
    if not path.is_file():
        return False
    written = path.stat().st_mtime_ns
    inputs = [Path(root) / split / METADATA for split in splits(root)] + [Path(root) / REJECTED]
    if any(p.is_file() and p.stat().st_mtime_ns >= written for p in inputs):
        return False
    return f"# {title}\n\n{description}\n" in path.read_text(encoding="utf-8")


def write_card(root: str | os.PathLike, title: str, description: str) -> Path:
    """Write DIR/README.md (and DIR/LICENSE.md when the licence is not a Hub id) atomically, unless the card is
    current (a no-op rerun at a million rows then costs no second pass over them); returns README's path."""
    path = Path(root) / "README.md"
    if card_is_current(root, title, description):
        log.debug("%s is current", path)
        return path
    text, license_text = render_card(root, title, description)
    write_atomic(path, text.encode())
    if license_text:
        write_atomic(Path(root) / LICENSE_FILE, license_text.encode())
    return path
