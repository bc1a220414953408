"""The only module that talks to the network: `datagen push` (dataset directory -> Hub) and `datagen pull`.

Push writes each split as Parquet shards with Image columns (the files' own bytes, so pixels are unchanged)
plus the metadata columns, through `datasets`, then a dataset card and a preview, to a staging folder on disk,
and uploads that folder (huggingface_hub's resumable large-folder upload where the installed version has it).
The token is passed to huggingface_hub and never printed or written by us.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import click
import numpy as np

from datagen.card import IMAGE_COLUMNS, LICENSE_FILE, feature_type, render_card, write_card
from datagen.console import option
from datagen.errors import InputError, MissingInputError, UserError
from datagen.io import has_alpha_channel, output_error, read_json, temporary_name, write_atomic
from datagen.parallel import reuse_freed_memory
from datagen.preview import write_preview
from datagen.records import (
    DERIVED_FROM_ALPHA,
    HUB_MATTE_COLUMNS,
    HUB_SPLIT_NAMES,
    ID_PATTERN,
    REFINE_KINDS,
    REJECTED,
    SPLITS,
    Sample,
    Skip,
    StageResult,
    check_split,
    iter_samples,
    no_splits,
    plane_name,
    sanitize_id,
    splits,
    write_sample_files,
)
from datagen.stage import stage_run

log = logging.getLogger(__name__)


def parse_bytes(text: str) -> int:
    """'500MB' -> bytes (KB, MB, GB; powers of 1000 as the Hub counts)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", text.upper())
    if not match:
        raise InputError(f"size {text!r}: give a number with KB, MB or GB, e.g. 500MB")
    return int(float(match[1]) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[match[2]])


def _features(row: dict[str, Any]):
    """The datasets Features of a split, from its first row (a split's rows are uniform: FORMAT.md)."""
    import datasets

    features = {}
    for key, value in row.items():
        kind = feature_type(key, value)  # the card's types: one map of Python values to datasets types
        features[IMAGE_COLUMNS.get(key, key)] = datasets.Image() if kind == "image" else datasets.Value(kind)
    return datasets.Features(features)


def _example(sample: Sample, columns: set[str]) -> dict[str, Any]:
    """A row with each *_file_name replaced by its Image column holding the file's bytes; a row with a key its
    split's first row lacks is refused (a column is never dropped)."""
    example = {}
    for key, value in sample.row.items():
        if key in IMAGE_COLUMNS:
            path = sample.path(IMAGE_COLUMNS[key])
            example[IMAGE_COLUMNS[key]] = {"bytes": path.read_bytes(), "path": Path(value).name}
        elif isinstance(value, dict | list):
            example[key] = json.dumps(value)
        else:
            example[key] = value
    if extra := set(example) - columns:
        raise InputError(
            f"{sample.root}/{sample.split}/metadata.jsonl: row {sample.id!r} has columns {sorted(extra)} that the "
            "split's first row lacks; make the rows uniform (rerun the stage that wrote them) before pushing"
        )
    return example


ROWS_PER_GROUP = 100  # Parquet row group size: the datasets library's for image data; training reads one at a time


@dataclass(frozen=True)
class Shard:
    """One Parquet file of a push: rows [start, stop) of its split, in the split's row order."""

    split: str
    name: str  # data/<split>-<i>-of-<n>.parquet
    start: int
    stop: int


def plan_shards(directory: Path, max_shard_bytes: int) -> tuple[list[Shard], dict[str, Any]]:
    """The shards of every split (sized from the files' bytes, about `max_shard_bytes` each, rows split as evenly as
    the datasets library's contiguous shards) and each split's Features. One pass over the rows; none are kept."""
    shards, features = [], {}
    for split in splits(directory):
        count, total = 0, 0
        for sample in iter_samples(directory, split):  # rejected.jsonl honoured
            if not count:
                features[split] = _features(sample.row)
            count += 1
            total += sum(sample.path(kind).stat().st_size for key, kind in IMAGE_COLUMNS.items() if key in sample.row)
        if not count:
            continue
        parts = min(count, max(1, math.ceil(total / max_shard_bytes)))
        size, extra = divmod(count, parts)
        for index in range(parts):
            start = index * size + min(index, extra)
            stop = start + size + (index < extra)
            shards.append(Shard(split, f"data/{split}-{index:05d}-of-{parts:05d}.parquet", start, stop))
    return shards, features


ALPHA_STATS = ("transparent", "opaque", "soft", "empty", "full")  # pixel counts, then alphas all 0 / all 255


def alpha_stats(alpha: np.ndarray) -> dict[str, int]:
    """One matte's share of the card's alpha statistics: its pixels at 0, at 255 and between; empty or full."""
    zeros, ones = int(np.count_nonzero(alpha == 0)), int(np.count_nonzero(alpha == 255))
    counts = (zeros, ones, alpha.size - zeros - ones, int(zeros == alpha.size), int(ones == alpha.size))
    return dict(zip(ALPHA_STATS, counts))


def write_shard(samples, path: Path, features) -> dict[str, int]:
    """The rows `samples` yields as one Parquet file with the datasets library's schema metadata (so it loads with
    Image columns), ROWS_PER_GROUP rows per row group; atomic. The bytes depend only on the rows and files. Returns
    the alpha statistics of its rows (the card's; the mattes are decoded here, as they pass, not in a second pass)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datagen.io import ImageReadError, read_alpha

    schema = features.arrow_schema
    columns = set(schema.names)
    temporary = temporary_name(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = dict.fromkeys(ALPHA_STATS, 0)
    try:
        with pq.ParquetWriter(temporary, schema) as writer:
            group = []
            for sample in samples:
                group.append(_example(sample, columns))
                try:  # an unreadable matte is pushed as it is and left out of the statistics, as inspect does
                    counts = alpha_stats(read_alpha(sample.path("alpha"))) if sample.path("alpha") else {}
                except ImageReadError as error:
                    log.warning(
                        "%s: %s (pushed as it is, left out of the card's alpha statistics)", error.path, error.reason
                    )
                    counts = {}
                for key, value in counts.items():
                    stats[key] += value
                if len(group) == ROWS_PER_GROUP:
                    writer.write_table(pa.Table.from_pylist(group, schema=schema), row_group_size=ROWS_PER_GROUP)
                    group = []
            if group:
                writer.write_table(pa.Table.from_pylist(group, schema=schema), row_group_size=ROWS_PER_GROUP)
        os.replace(temporary, path)
    except OSError as error:
        raise output_error(path, error) from error
    finally:
        temporary.unlink(missing_ok=True)
    return stats


def export_parquet(directory: Path, staging: Path, shards: list[Shard], features, done: set[str], on_shard) -> None:
    """Write each shard not in `done` to `staging`, one at a time, in one pass over each split's rows (the rows of
    shards already done are passed over without reading their files), calling `on_shard(shard, alpha statistics)`
    after each."""
    from tqdm import tqdm

    bar = tqdm(total=len(shards), initial=len(done), desc="push", unit="shard", disable=None)
    for split in dict.fromkeys(shard.split for shard in shards):
        samples = iter_samples(directory, split)
        for shard in (s for s in shards if s.split == split):
            rows = itertools.islice(samples, shard.stop - shard.start)
            if shard.name in done:
                collections.deque(rows, maxlen=0)
                continue
            on_shard(shard, write_shard(rows, staging / shard.name, features[split]))
            bar.update(1)
    bar.close()


def hub_card(
    directory: Path, repo_id: str, written: dict[str, list[str]], preview: str | None, stats: dict[str, int]
) -> tuple[str, str | None]:
    """The card `push` uploads: the local card's header and body (one writer, card.render_card) with the Parquet
    `configs`, plus how the data was made, its alpha statistics (`stats`, summed over the shards) and the preview."""
    total = sum(stats[key] for key in ("transparent", "opaque", "soft")) or 1
    share = {key: stats[key] / total for key in ("transparent", "opaque", "soft")}
    made = read_json(directory / "run.json") if (directory / "run.json").is_file() else {}
    extra = [
        "## How it was made",
        "",
        f"`{made.get('command', 'unknown command')}` ({made.get('tool', 'datagen')})." if made else "No run.json.",
        "",
        "## Alpha statistics",
        "",
        f"Pixels: {share['transparent']:.1%} transparent, {share['opaque']:.1%} opaque, {share['soft']:.1%} soft; "
        f"{stats['empty']} empty and {stats['full']} full alphas.",
        "",
    ]
    if preview:
        extra += ["## Preview", "", f"![image, alpha, cutout]({preview})", ""]
    description = (
        "Images of people with exact alpha mattes for training background removal, made with "
        "[ormbg](https://github.com/schirrmacher/ormbg) `datagen`."
    )
    return render_card(directory, repo_id.split("/")[-1], description, data_files=written, extra=extra)


STAGING_MARKER = ".datagen-push-staging"  # in every staging folder: only a folder holding it is ever cleared


def fingerprint(directory: Path, repo_id: str, max_shard_bytes: int) -> str:
    """What a staging was made from: the rows of every split (metadata.jsonl), rejected.jsonl, the repo and the shard
    size. A rerun with the same fingerprint resumes the staging; any change starts it over."""
    digest = hashlib.sha256(f"{repo_id}\n{max_shard_bytes}\n".encode())
    for path in [directory / split / "metadata.jsonl" for split in splits(directory)] + [directory / REJECTED]:
        if path.is_file():
            digest.update(str(path.relative_to(directory)).encode())
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def open_staging(directory: Path, out: Path, print_: str) -> dict[str, Any]:
    """The staging folder `out` for the dataset `directory` with fingerprint `print_`: an earlier staging of the same
    fingerprint is resumed (its record returned: `done` lists the shards written, or uploaded, already); any other
    earlier staging (a folder holding STAGING_MARKER) is cleared; a non-empty folder without the marker, and a folder
    inside the dataset or holding it, are refused, so nothing else is lost."""
    source, target = directory.resolve(), out.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise InputError(f"--dry-run {out}: the staging folder must lie outside {directory} and not contain it")
    if target.exists() and not target.is_dir():
        raise InputError(f"--dry-run {out} is a file: name a new or empty folder")
    if target.is_dir() and any(target.iterdir()):
        if not (target / STAGING_MARKER).is_file():
            raise InputError(
                f"--dry-run {out} is a folder with other files in it (no {STAGING_MARKER}, so not an earlier "
                "staging): name a new or empty folder"
            )
        try:
            record = json.loads((target / STAGING_MARKER).read_text())
        except ValueError:
            record = {}
        if isinstance(record, dict) and record.get("fingerprint") == print_:
            log.info("resuming the staging in %s: %d shards done", out, len(record.get("done", [])))
            return record
        shutil.rmtree(target)
    record = {"staged_by": f"datagen push of {source}", "fingerprint": print_, "done": []}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / STAGING_MARKER, json.dumps(record).encode())
    return record


def stage(directory: Path, repo_id: str, out: Path, max_shard_bytes: int, upload=None, keep: int = 3) -> list[str]:
    """Write what push uploads into `out`: data/*.parquet one shard at a time, then README.md, preview.png (and
    LICENSE.md). With `upload(files)`, shards are handed to it `keep` at a time and removed once it returns, so at
    most `keep` shards are on disk; without, they stay (--dry-run). Each shard done is recorded in out's marker, so a
    rerun after a failure goes on without encoding them again. Returns every file of the dataset repo."""
    if not splits(directory):
        raise InputError(no_splits(directory, "push"))
    shards, features = plan_shards(directory, max_shard_bytes)
    record = open_staging(directory, out, fingerprint(directory, repo_id, max_shard_bytes))
    done = set(record["done"])
    pending: list[str] = []

    def finish(names: list[str]) -> None:
        if upload and names:
            upload(names)
            for name in names:
                (out / name).unlink()
        record["done"] += names
        write_atomic(out / STAGING_MARKER, json.dumps(record).encode())
        names.clear()

    def on_shard(shard: Shard, stats: dict[str, int]) -> None:
        record.setdefault("alpha_stats", {})[shard.name] = stats  # saved with the shard, for a resumed card
        pending.append(shard.name)
        if not upload or len(pending) >= keep:
            finish(pending)

    export_parquet(directory, out, shards, features, done, on_shard)
    finish(pending)
    written = {}
    for shard in shards:
        written.setdefault(shard.split, []).append(shard.name)
    preview = None
    if any(not s.is_background for s in iter_samples(directory)):
        write_preview(directory, out / "preview.png", n=8, tile_px=192)
        preview = "preview.png"
    stats = {key: sum(shard[key] for shard in record["alpha_stats"].values()) for key in ALPHA_STATS}
    card, license_text = hub_card(directory, repo_id, written, preview, stats)
    write_atomic(out / "README.md", card.encode())
    extras = ["README.md"] + ([preview] if preview else [])
    if license_text:
        write_atomic(out / LICENSE_FILE, license_text.encode())
        extras.append(LICENSE_FILE)
    if upload:
        upload(extras)
    return sorted([shard.name for shard in shards] + extras)


@dataclass(frozen=True)
class PushConfig:
    directory: Path
    repo_id: str
    private: bool = option(False, "Create the Hub repo as private.")
    token: str | None = option(None, "Hub token  [default: HF_TOKEN, else the huggingface_hub login].")
    max_shard_size: str = option("500MB", "Parquet shard size (KB, MB, GB).")
    dry_run: Path | None = option(
        None,
        "Write exactly what would be uploaded into this folder and upload nothing (a rerun resumes it).",
        type=click.Path(file_okay=False, path_type=Path),
    )
    keep_shards: int = option(
        3,
        "Shards written before they are uploaded (in one commit) and removed: the local disk a push needs.",
        type=click.IntRange(min=1),
    )

    def __post_init__(self) -> None:
        if self.keep_shards < 1:
            raise InputError(f"--keep-shards {self.keep_shards}: at least 1")


class HubError(UserError, RuntimeError):
    """A Hub call that failed for a reason the user fixes: no network, no or a wrong token, no such repo."""


def is_hub_failure(error: Exception) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    if isinstance(
        error, (HfHubHTTPError, OfflineModeIsEnabled, LocalTokenNotFoundError, ConnectionError, TimeoutError)
    ):
        return True
    # the HTTP client's own transport errors (httpx, httpx2 or requests, by huggingface_hub version)
    return type(error).__module__.split(".")[0] in {"httpx", "httpx2", "httpcore", "requests", "urllib3"}


def check_repo_id(repo_id: str) -> None:
    """A valid Hub dataset id `user/name`, checked as the Hub checks it, before any work is done."""
    from huggingface_hub.utils import validate_repo_id

    if "/" not in repo_id:
        raise InputError(f"repo id {repo_id!r}: expected user/name")
    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise InputError(f"repo id {repo_id!r}: expected user/name ({error})") from None


def push(config: PushConfig) -> list[str]:
    """Stage the dataset (to `dry_run`, or to a folder beside DIR) and, unless dry-run, upload it shard by shard as
    it is written, `keep_shards` per commit. The staging is removed after a successful upload and kept after a
    failure, so a rerun goes on from the shards already committed. Returns the repo's files. A Hub or network
    failure raises HubError with one line."""
    check_repo_id(config.repo_id)
    directory = Path(config.directory)
    max_shard_bytes = parse_bytes(config.max_shard_size)
    if config.dry_run:
        return stage(directory, config.repo_id, Path(config.dry_run), max_shard_bytes)
    staging = directory.resolve().parent / f".{directory.resolve().name}.push-staging"
    log.info(
        "staging the upload in %s (at most %d shards at a time; kept if the push fails)", staging, config.keep_shards
    )
    from huggingface_hub import HfApi

    api = HfApi(token=config.token)
    created = []

    def upload(names: list[str]) -> None:
        with hub_errors(config.repo_id, staging):
            if not created:
                api.create_repo(config.repo_id, repo_type="dataset", private=config.private, exist_ok=True)
                created.append(True)
            upload_files(api, config.repo_id, staging, names)

    files = stage(directory, config.repo_id, staging, max_shard_bytes, upload, config.keep_shards)
    shutil.rmtree(staging, ignore_errors=True)
    log.info("pushed %d files to datasets/%s", len(files), config.repo_id)
    return files


def upload_files(api, repo_id: str, staging: Path, names: list[str]) -> None:
    """One commit adding `names` (paths relative to `staging`) to the dataset repo; huggingface_hub uploads the large
    files through LFS first, in parallel."""
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(staging / name)) for name in names]
    message = f"datagen push: {names[0]}" + (f" .. {names[-1]}" if len(names) > 1 else "")
    api.create_commit(repo_id, operations=operations, repo_type="dataset", commit_message=message)


@contextmanager
def hub_errors(repo_id: str, staging: Path) -> Iterator[None]:
    """A Hub or network failure as one HubError line that says the rerun resumes from `staging`."""
    try:
        yield
    except Exception as error:
        if not is_hub_failure(error):
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HubError(
            f"push to datasets/{repo_id} failed: {reason}. Check the network, the repo id and the token "
            f"(--token, HF_TOKEN or `hf auth login`); a rerun goes on from the shards already uploaded ({staging})"
        ) from error


def _extension(data: bytes) -> str:
    return "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "jpg"


@dataclass
class PullResult(StageResult):
    counts: dict[str, int] = field(default_factory=dict)  # our split -> rows after the pull
    splits: dict[str, str] = field(default_factory=dict)  # the Hub's split -> ours
    alpha_column: str = ""  # the column the matte came from ("image" for an RGBA image column)

    def summary_lines(self) -> list[str]:
        renamed = ", ".join(f"{hub} -> {ours}" for hub, ours in self.splits.items() if hub != ours)
        return [f"matte from column `{self.alpha_column}`" + (f"; splits mapped: {renamed}" if renamed else "")]


def parse_split_map(split_map: dict[str, str] | list[str] | tuple[str, ...]) -> dict[str, str]:
    """{hub split: ours}, from a dict or NAME=SPLIT strings (pull's --split-map)."""
    if isinstance(split_map, dict):
        return split_map
    mapping = dict(item.split("=", 1) for item in split_map if "=" in item)
    if len(mapping) != len(split_map):
        raise InputError(f"--split-map takes NAME=SPLIT, got {list(split_map)}")
    return mapping


def map_split(name: str, split_map: dict[str, str]) -> str:
    """Our split for a Hub split: as named by `split_map`, a known synonym, or `test` for any other name (so an
    unknown split never feeds training unless the user maps it there)."""
    target = split_map.get(name) or (name if name in SPLITS else HUB_SPLIT_NAMES.get(name.lower(), "test"))
    return check_split(target)


def matte_column(features: dict[str, Any], wanted: str | None, source: str) -> str:
    """The Image column holding the matte: `wanted`, else the first of HUB_MATTE_COLUMNS, else "image" (RGBA)."""
    import datasets

    images = [column for column, feature in features.items() if isinstance(feature, datasets.Image)]
    if wanted:
        if wanted not in images:
            raise InputError(f"{source}: --alpha-column {wanted!r} is not an image column (image columns: {images})")
        return wanted
    for column in HUB_MATTE_COLUMNS:
        if column in images:
            return column
    if "image" not in images:
        raise InputError(f"{source}: no `image` column and no matte column (found {sorted(features)})")
    return "image"


def _has_alpha_channel(data: bytes) -> bool:
    from PIL import Image

    with Image.open(BytesIO(data)) as image:
        return has_alpha_channel(image)


def pull(
    repo_id: str,
    out: Path,
    split: str | None = None,
    alpha_column: str | None = None,
    split_map: dict[str, str] | list[str] | tuple[str, ...] | None = None,
    progress: bool = False,
    command: str = "datagen pull",
) -> PullResult:
    """A Hub dataset (or a local copy of one) into the dataset directory `out`, streamed row by row.

    The matte comes from `alpha_column`, else the first Image column named alpha, mask, matte, gt or label, else the
    alpha channel of an RGBA `image` column (a row whose image has none is skipped and recorded: never a matte of
    all 255). Split names are mapped by `split_map`, then synonyms (val -> validation), and any other name to
    `test`. Image bytes are kept as they are (JPEG stays the same file); mattes become one-channel 8-bit PNGs.
    A rerun resumes (rows already pulled are skipped); the directory is locked while it runs.
    """
    from tqdm import tqdm

    import datasets

    if splits(repo_id):
        raise InputError(
            f"{repo_id} is a dataset directory already (it has <split>/metadata.jsonl): use it as it is; pull reads a "
            "Hub dataset (user/name) or a folder of its Parquet files (such as a `datagen push --dry-run` output)"
        )
    try:
        loaded = datasets.load_dataset(repo_id, split=split, streaming=True)
    except Exception as error:
        if isinstance(error, FileNotFoundError) and not is_hub_failure(error):  # a local path without data files
            raise MissingInputError(f"pull of {repo_id}: {error} Name a Hub dataset (user/name) or a folder of its "
                                    "Parquet files") from error  # fmt: skip
        if not is_hub_failure(error):
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        where = "the folder" if Path(repo_id).exists() else "no local folder of that name, and the Hub dataset"
        raise HubError(
            f"pull of {repo_id} ({where}) failed: {reason}. Check the network and the repo id (a local path must "
            "exist), and the token for a private dataset (HF_TOKEN or `hf auth login`); a rerun resumes"
        ) from error
    parts = {split: loaded} if split else dict(loaded)
    result, split_map = PullResult(Path(out)), parse_split_map(split_map or {})
    options = PullOptions(repo_id, split, alpha_column, split_map)
    with stage_run(result, options, command, shard=(0, 1)) as run:
        state = run.state
        reuse_freed_memory()  # rows are decoded and written here: freed frames kept for the next rows
        prefix = sanitize_id(repo_id.rstrip("/").split("/")[-1])  # ids of rows without one: <repo>-<split>-<index>
        renamed = any(map_split(name, split_map) != name for name in parts)  # then every row says where it came from
        for name, part in parts.items():
            target = map_split(name, split_map)
            result.splits[name] = target
            features = part.features or {}
            column = matte_column(features, alpha_column, repo_id)
            if result.alpha_column and result.alpha_column != column:
                raise InputError(f"{repo_id}: the splits keep their mattes in different columns; pass --alpha-column")
            result.alpha_column = column
            undecoded = {
                c: datasets.Image(decode=False) if isinstance(f, datasets.Image) else f for c, f in features.items()
            }
            part = part.cast(datasets.Features(undecoded))
            if column == "image":
                _check_first_image_has_alpha(part, repo_id, name)
            done = _done_shards(repo_id, name, part, state, target, features, column)
            rows = tqdm(_indexed(part, done), desc=f"pull {name}", unit="row", disable=not progress)
            seen: dict[str, str] = {}  # id -> the row that had it first, in this pull
            for index, example in rows:
                if isinstance(example, str):  # a row of a shard found pulled whole: its id, the shard not streamed
                    seen[example] = f"{repo_id}:{name}:{index}"
                    result.existing += 1
                    continue
                sample_id = str(example.get("id") or f"{prefix}-{sanitize_id(name)}-{index:07d}")
                where = f"{repo_id}:{name}:{index}"
                if not ID_PATTERN.match(sample_id):
                    run.skip(Skip(where, f"invalid id {sample_id!r}: ids use only [A-Za-z0-9._-]"))
                    continue
                if sample_id in seen:
                    run.skip(Skip(where, f"duplicate id {sample_id!r} (first at {seen[sample_id]})"))
                    continue
                seen[sample_id] = where
                if state.is_done(target, sample_id) and not _brought_and_lost(out, target, sample_id, example, column):
                    result.existing += 1
                    continue
                outcome = _pull_row(example, column, features, sample_id, where)
                if isinstance(outcome, Skip):
                    run.skip(outcome)
                    continue
                files, metadata = outcome
                if renamed:
                    metadata["hub_split"] = name
                state.add(target, write_sample_files(out, target, sample_id, metadata=metadata, **files))
                result.new += 1
        result.counts = {name: len(ids) for name, ids in state.rowed.items() if ids}
        if result.counts:  # the card of the rows pulled; then the source's own licence statements, where it has them
            where = (
                f"the local copy {repo_id}" if Path(repo_id).exists() else f"https://huggingface.co/datasets/{repo_id}"
            )
            write_card(out, f"{repo_id} (pulled with ormbg datagen)", f"Pulled from {where} by `datagen pull`.")
        _pull_license(repo_id, Path(out))
    return result


def _done_shards(repo_id: str, name: str, part, state, target: str, features, column: str) -> dict[int, list[str]]:
    """{shard: its ids} of the shards (data files) of the Hub split `name` whose rows a rerun would all find pulled
    (valid ids, none met before in the split, done, and a file for every column an in-place stage may add that the
    dataset has): a rerun reads their `id` column alone instead of streaming their images again. {} on a first pull,
    or where ids cannot be read alone (no `id` column, data that is not Parquet): every row is streamed, as before."""
    import datasets

    if part.n_shards < 2 or not state.rowed.get(target) or "id" not in features:
        return {}
    try:
        ids = datasets.load_dataset(repo_id, split=name, streaming=True, columns=["id"])
    except Exception as error:  # no `columns` outside Parquet; a Hub failure shows again as the rows are streamed
        log.debug("%s:%s: ids not read alone (%s); every row is streamed", repo_id, name, error)
        return {}
    if ids.n_shards != part.n_shards:
        return {}
    kinds = [kind for kind in IN_PLACE_KINDS if kind != column and kind in features]
    folder = Path(state.root) / target
    done, met = {}, set()
    for shard in range(part.n_shards):
        values = [row["id"] for row in ids.shard(part.n_shards, shard)]
        if len(set(values)) == len(values) and all(
            isinstance(value, str)
            and ID_PATTERN.match(value)
            and value not in met
            and state.is_done(target, value)
            and all((folder / plane_name(kind, value)).is_file() for kind in kinds)
            for value in values
        ):
            done[shard] = values
        met.update(map(str, values))
    return done


def _indexed(part, done: dict[int, list[str]]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(index in the split, row) of a streamed split in order; the rows of a shard in `done` come as their ids alone,
    that shard not streamed (`datasets`: its shards in order are the split in order)."""
    if not done:
        yield from enumerate(part)
        return
    index = 0
    for shard in range(part.n_shards):
        for row in done[shard] if shard in done else part.shard(part.n_shards, shard):
            yield index, row
            index += 1


@dataclass(frozen=True)
class PullOptions:
    """What a pull's run.json records as its config."""

    repo_id: str
    split: str | None
    alpha_column: str | None
    split_map: dict[str, str]


def _pull_license(repo_id: str, out: Path) -> None:
    """Bring the source's LICENSE.md (the licence statements a card links to) along, when it has one."""
    if Path(repo_id).is_dir():
        source = Path(repo_id) / LICENSE_FILE
        if source.is_file():
            write_atomic(out / LICENSE_FILE, source.read_bytes())
        return
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(repo_id, LICENSE_FILE, repo_type="dataset")
    except EntryNotFoundError:
        return
    except Exception as error:  # the rows are pulled: a licence the Hub cannot give now is a warning, not a failure
        if not is_hub_failure(error):
            raise
        log.warning("%s: could not fetch %s (%s); the rows are pulled, fetch it later", repo_id, LICENSE_FILE, error)
        return
    write_atomic(out / LICENSE_FILE, Path(path).read_bytes())


def _check_first_image_has_alpha(part, repo_id: str, name: str) -> None:
    """Refuse a dataset whose only image column has no alpha channel: its 'matte' would be 255 everywhere."""
    first = next(iter(part), None)
    if first and first.get("image") and not _has_alpha_channel(first["image"]["bytes"]):
        raise InputError(
            f"{repo_id} ({name}): no matte column ({', '.join(HUB_MATTE_COLUMNS)}) and its images have no alpha "
            "channel; name the matte's column with --alpha-column"
        )


IN_PLACE_KINDS = (*REFINE_KINDS, *DERIVED_FROM_ALPHA)  # files of kinds an in-place stage may add to a row


def _brought_and_lost(out, split: str, sample_id: str, example: dict[str, Any], column: str) -> bool:
    """Whether a row the resume check takes as done lacks a file that this Hub row brings, of the kinds an in-place
    stage may add (`ResumeState` leaves those out: refine's mask/ and refine_trimap/, a marked fg/). Brought by the
    Hub row, the file is pull's own and the row is pulled again; not brought, it came from a stage run here (refine
    over a pulled dataset), and pulling the row again would put the Hub's alpha back under it."""
    folder = Path(out) / split
    return any(
        kind != column and example.get(kind) and not (folder / plane_name(kind, sample_id)).is_file()
        for kind in IN_PLACE_KINDS
    )


def _pull_row(example: dict[str, Any], column: str, features, sample_id: str, where: str):
    """(files, metadata) for write_sample_files from one streamed row, or a Skip."""
    import datasets
    from datagen.io import ImageReadError, decode_bytes, read_alpha, read_foreground, read_image

    images = {c for c, f in features.items() if isinstance(f, datasets.Image)}
    metadata = {k: v for k, v in example.items() if k not in images and k not in ("id", "width", "height")}
    files: dict[str, Any] = {}
    image = None
    try:
        if column == "image":  # an RGBA image column: its alpha channel is the matte
            data = example["image"]["bytes"]
            if not _has_alpha_channel(data):
                return Skip(where, "no matte: the image has no alpha channel and the dataset no matte column")
            rgba = decode_bytes(data, read_foreground, where)
            files.update(foreground=rgba, alpha=np.ascontiguousarray(rgba[..., 3]))
            return files, metadata
        if not example.get(column):
            return Skip(where, f"no matte: empty `{column}`")
        files["alpha"] = decode_bytes(example[column]["bytes"], read_alpha, where)
        if example.get("image"):
            data = example["image"]["bytes"]
            files.update(image_bytes=data, image_format=_extension(data))
            image = decode_bytes(data, read_image, where)  # decoded once to check it whole, its bytes kept as they are
        if example.get("foreground"):
            files["foreground"] = decode_bytes(example["foreground"]["bytes"], read_foreground, where)
        for kind in ("trimap", "mask", "refine_trimap"):  # mask: a refined dataset's original coarse matte
            if kind != column and example.get(kind):
                files[kind] = decode_bytes(example[kind]["bytes"], read_alpha, where)
    except ImageReadError as error:
        return Skip(where, f"unreadable image: {error.reason}")
    height, width = files["alpha"].shape
    for kind, array in {"image": image, **files}.items():
        if isinstance(array, np.ndarray) and array.shape[:2] != (height, width):
            return Skip(where, f"{kind} is {array.shape[1]}x{array.shape[0]}, the matte {width}x{height}: sizes differ")
    return files, metadata
