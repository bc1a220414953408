"""The only module that talks to the network: `datagen push` (dataset directory -> Hub) and `datagen pull`.

Push writes each split as Parquet shards with Image columns (the files' own bytes, so pixels are unchanged)
plus the metadata columns, through `datasets`, then a dataset card and a preview, to a staging folder on disk,
and uploads that folder (huggingface_hub's resumable large-folder upload where the installed version has it).
The token is passed to huggingface_hub and never printed or written by us.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from datagen.card import size_category
from datagen.inspect import inspect_dataset
from datagen.io import read_json, write_atomic
from datagen.preview import write_preview
from datagen.records import (
    FILE_KINDS,
    SPLITS,
    Sample,
    append_row,
    iter_samples,
    metadata_path,
    read_rows,
    sanitize_id,
    splits,
    write_sample_files,
)

log = logging.getLogger(__name__)
IMAGE_COLUMNS = {key: kind for kind, (key, _) in FILE_KINDS.items()}  # file_name -> image, ...
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


def parse_bytes(text: str) -> int:
    """'500MB' -> bytes (KB, MB, GB; powers of 1000 as the Hub counts)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", text.upper())
    if not match:
        raise ValueError(f"size {text!r}: give a number with KB, MB or GB, e.g. 500MB")
    return int(float(match[1]) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[match[2]])


def license_rank(text: str) -> tuple[int, str]:
    """(rank, Hub licence id) of a licence statement: the most restrictive licence it names (a composite's
    statement names its foreground's and its background's); unknown statements rank as the most restrictive."""
    lowered = text.lower()
    ranks = [rank for rank, (pattern, _) in enumerate(LICENSE_RANKS) if re.search(pattern, lowered)]
    if not ranks or "unknown" in lowered:
        return len(LICENSE_RANKS), "other"
    return max(ranks), LICENSE_RANKS[max(ranks)][1]


def _features(rows: list[dict[str, Any]]):
    import datasets

    features = {}
    for key, value in rows[0].items():
        if key in IMAGE_COLUMNS:
            features[IMAGE_COLUMNS[key]] = datasets.Image()
        elif isinstance(value, bool):
            features[key] = datasets.Value("bool")
        elif isinstance(value, int):
            features[key] = datasets.Value("int64")
        elif isinstance(value, float):
            features[key] = datasets.Value("float64")
        else:
            features[key] = datasets.Value("string")
    return datasets.Features(features)


def _examples(directory: str, split: str):
    """Rows with each *_file_name replaced by its Image column holding the file's bytes (read lazily)."""
    for sample in iter_samples(directory, split):
        example = {}
        for key, value in sample.row.items():
            if key in IMAGE_COLUMNS:
                path = sample.path(IMAGE_COLUMNS[key])
                example[IMAGE_COLUMNS[key]] = {"bytes": path.read_bytes(), "path": Path(value).name}
            elif isinstance(value, dict | list):
                example[key] = json.dumps(value)
            else:
                example[key] = value
        yield example


def export_parquet(directory: Path, staging: Path, max_shard_bytes: int) -> dict[str, list[str]]:
    """Write data/<split>-<i>-of-<n>.parquet for every split; returns split -> relative file names.

    Rows stream through an on-disk Arrow cache (memory stays bounded); shards hold about `max_shard_bytes`.
    """
    import datasets

    written: dict[str, list[str]] = {}
    for split in splits(directory):
        rows = read_rows(directory, split)
        if not rows:
            continue
        total = sum(
            Sample(directory, split, row).path(kind).stat().st_size
            for row in rows
            for key, kind in IMAGE_COLUMNS.items()
            if key in row
        )
        count = max(1, math.ceil(total / max_shard_bytes))
        dataset = datasets.Dataset.from_generator(
            _examples,
            features=_features(rows),
            cache_dir=str(staging / ".cache"),
            gen_kwargs={"directory": str(directory), "split": split},
            split=split,
        )
        written[split] = []
        for index in range(count):
            name = f"data/{split}-{index:05d}-of-{count:05d}.parquet"
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            dataset.shard(count, index, contiguous=True).to_parquet(str(staging / name))
            written[split].append(name)
        dataset.cleanup_cache_files()
    shutil.rmtree(staging / ".cache", ignore_errors=True)
    return written


def render_hub_card(directory: Path, repo_id: str, written: dict[str, list[str]], preview: str | None) -> str:
    """The dataset card: YAML header (licence, task, size, configs) and a body from the directory and run.json."""
    rows = {split: read_rows(directory, split) for split in written}
    licenses: dict[str, str] = {}
    counts: Counter = Counter()
    for split_rows in rows.values():
        for row in split_rows:
            source = str(row.get("source", "unknown"))
            licenses.setdefault(source, str(row.get("license", "unknown")))
            counts[source] += 1
    strictest = max(licenses.values(), key=lambda text: license_rank(text)[0], default="unknown")
    hub_id = license_rank(strictest)[1]
    header: dict[str, Any] = {
        "license": hub_id,
        "task_categories": ["image-segmentation"],
        "size_categories": [size_category(sum(len(r) for r in rows.values()))],
        "tags": ["background-removal", "alpha-matting", "ormbg"],
        "pretty_name": repo_id.split("/")[-1],
        "configs": [
            {"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*"} for split in written]}
        ],
    }
    if hub_id == "other":
        header["license_name"] = re.sub(r"[^a-z0-9]+", "-", strictest.lower()).strip("-")[:64] or "unknown"
        header["license_details"] = strictest
    report = inspect_dataset(directory)
    share = report.to_dict()["alpha_share"]
    made = read_json(directory / "run.json") if (directory / "run.json").is_file() else {}
    present = {
        IMAGE_COLUMNS[key]
        for split_rows in rows.values()
        for row in split_rows[:1]
        for key in row
        if key in IMAGE_COLUMNS
    }
    columns = ", ".join(f"`{name}`" for name in ("image", "alpha", "foreground", "trimap") if name in present)
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        "Images of people with exact alpha mattes for training background removal, made with "
        f"[ormbg](https://github.com/schirrmacher/ormbg) `datagen`. Columns: {columns} and each sample's metadata.",
        "",
        "| split | samples |",
        "| --- | ---: |",
        *(f"| {split} | {len(r)} |" for split, r in rows.items()),
        "",
        "## Sources and licences",
        "",
        f"The card's licence is the most restrictive of the sources: **{strictest}**.",
        "",
        "| source | samples | licence |",
        "| --- | ---: | --- |",
        *(f"| {source} | {counts[source]} | {licenses[source]} |" for source in sorted(licenses)),
        "",
        "## How it was made",
        "",
        f"`{made.get('command', 'unknown command')}` ({made.get('tool', 'datagen')})." if made else "No run.json.",
        "",
        "## Alpha statistics",
        "",
        f"Pixels: {share['transparent']:.1%} transparent, {share['opaque']:.1%} opaque, {share['soft']:.1%} soft; "
        f"{len(report.empty_alpha)} empty and {len(report.full_alpha)} full alphas.",
        "",
    ]
    if preview:
        body += ["## Preview", "", f"![image, alpha, cutout]({preview})", ""]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n".join(body)


def stage(directory: Path, repo_id: str, out: Path, max_shard_bytes: int) -> list[str]:
    """Write exactly what push uploads into `out`: data/*.parquet, README.md, preview.png. Returns the files."""
    if not splits(directory):
        raise ValueError(f"{directory} has no split with a metadata.jsonl: is it a dataset directory?")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written = export_parquet(directory, out, max_shard_bytes)
    preview = None
    if any(not s.is_background for s in iter_samples(directory)):
        write_preview(directory, out / "preview.png", n=8, tile_px=192)
        preview = "preview.png"
    write_atomic(out / "README.md", render_hub_card(directory, repo_id, written, preview).encode())
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


@dataclass(frozen=True)
class PushConfig:
    directory: Path
    repo_id: str
    private: bool = False
    token: str | None = None  # else HF_TOKEN or the huggingface_hub login
    max_shard_size: str = "500MB"
    dry_run: Path | None = None  # write what would be uploaded here and upload nothing


def push(config: PushConfig) -> list[str]:
    """Stage the dataset (to `dry_run`, or to DIR/.push) and, unless dry-run, upload it. Returns the files."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", config.repo_id):
        raise ValueError(f"repo id {config.repo_id!r}: expected user/name")
    directory = Path(config.directory)
    staging = Path(config.dry_run) if config.dry_run else directory / ".push"
    files = stage(directory, config.repo_id, staging, parse_bytes(config.max_shard_size))
    if config.dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi(token=config.token)
    api.create_repo(config.repo_id, repo_type="dataset", private=config.private, exist_ok=True)
    if hasattr(api, "upload_large_folder"):  # resumable, many commits; missing from some huggingface_hub versions
        api.upload_large_folder(repo_id=config.repo_id, folder_path=str(staging), repo_type="dataset")
    else:
        api.upload_folder(
            repo_id=config.repo_id,
            folder_path=str(staging),
            repo_type="dataset",
            commit_message=f"datagen push of {directory.name}",
        )
    log.info("pushed %d files to datasets/%s", len(files), config.repo_id)
    return files


def _extension(data: bytes) -> str:
    return "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg"


def _decode(data: bytes, reader):
    """Decode image bytes with one of datagen.io's readers (they take paths: EXIF, 16-bit and modes handled)."""
    with tempfile.NamedTemporaryFile(suffix="." + _extension(data)) as file:
        file.write(data)
        file.flush()
        return reader(file.name)


def pull(repo_id: str, out: Path, split: str | None = None) -> dict[str, int]:
    """A Hub dataset (or a local copy of one) with image + alpha columns, or an RGBA `image` column, into `out`.

    Image bytes are kept as they are (JPEG stays the same file); mattes become one-channel 8-bit PNGs.
    """
    import numpy as np

    import datasets
    from datagen.io import read_alpha, read_foreground

    loaded = datasets.load_dataset(repo_id, split=split)
    parts = {split: loaded} if split else dict(loaded)
    counts = {}
    for name, part in parts.items():
        if name not in SPLITS:
            raise ValueError(f"split {name!r} of {repo_id} is not one of {', '.join(SPLITS)}")
        images = [column for column, feature in part.features.items() if isinstance(feature, datasets.Image)]
        if "alpha" not in images and "image" not in images:
            raise ValueError(f"{repo_id}: no `alpha` or RGBA `image` column (found {sorted(part.features)})")
        part = part.cast(
            datasets.Features(
                {
                    column: datasets.Image(decode=False) if column in images else feature
                    for column, feature in part.features.items()
                }
            )
        )
        path = metadata_path(out, name)
        for index, example in enumerate(part):
            sample_id = str(example.get("id") or f"{sanitize_id(repo_id.split('/')[-1])}-{index:07d}")
            metadata = {k: v for k, v in example.items() if k not in images and k not in ("id", "width", "height")}
            files: dict[str, Any] = {}
            if "alpha" in images:
                files["alpha"] = _decode(example["alpha"]["bytes"], read_alpha)
                if example.get("image"):
                    data = example["image"]["bytes"]
                    files.update(image_bytes=data, image_format=_extension(data))
                if example.get("foreground"):
                    files["foreground"] = _decode(example["foreground"]["bytes"], read_foreground)
                if example.get("trimap"):
                    files["trimap"] = _decode(example["trimap"]["bytes"], read_alpha)
            else:  # an RGBA image column: its alpha channel is the matte
                rgba = _decode(example["image"]["bytes"], read_foreground)
                files.update(foreground=rgba, alpha=np.ascontiguousarray(rgba[..., 3]))
            append_row(path, write_sample_files(out, name, sample_id, metadata=metadata, **files))
        counts[name] = len(part)
    return counts
