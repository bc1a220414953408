"""A pushed dataset's Parquet shards: a folder of them (what `datagen push --dry-run` stages) or a Hub dataset
(`hf://user/name`, read in place over HTTP ranges through huggingface_hub's file system). Where they are (listing,
splits, image columns, one shard's footer or row group, with one clear error where the Hub cannot be reached) and
what datagen's read-only commands do with them: `inspect_shards` (`datagen inspect`), `preview_rows` (`datagen
preview`), `shard_rows` (the metadata `datagen slices` groups by). Training and evaluation read their rows with
`ormbg.parquet`."""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from datagen.errors import InputError
from datagen.inspect import ROW_SHAPES, Problem, Report, SampleCheck, check_image, check_planes, tally
from datagen.io import ImageReadError, check_pair, decode_bytes, read_alpha, read_foreground, read_image
from datagen.parallel import bounded_map, process_pool, runs_in_workers
from datagen.preview import cutout_tiles, unreadable_tile
from datagen.records import (
    FILE_KINDS,
    HUB_MATTE_COLUMNS,
    HUB_SCHEME,
    HUB_SPLIT_NAMES,
    ID_PATTERN,
    SPLITS,
    holds_parquet,
    splits,
)

log = logging.getLogger(__name__)
runs_in_workers(__name__)  # inspect_shards checks row groups in pool workers
STALE_FIX = "fix it in the dataset directory it was pushed from (`datagen foreground DIR --overwrite`) and push again"


def is_shard_location(path: str) -> bool:
    """A Hub dataset (`hf://...`), or a folder of Parquet files that is not a dataset directory."""
    if path.startswith(HUB_SCHEME):
        return True
    return Path(path).is_dir() and not splits(path) and holds_parquet(path)


def hub_filesystem():
    """The fsspec file system that reads hf:// paths (huggingface_hub's; a test may give a local one)."""
    from huggingface_hub import HfFileSystem

    return HfFileSystem()


@contextmanager
def reading(location: str, missing_is_failure: bool = False) -> Iterator[None]:
    """Around a read of `location`: where it is on the Hub, a failure of the Hub (no network, no token, no such repo;
    with `missing_is_failure` also a path not found) becomes one HubError that says what to check."""
    try:
        yield
    except Exception as error:
        from datagen.hub import HubError, is_hub_failure

        hub_failed = is_hub_failure(error) or (missing_is_failure and isinstance(error, FileNotFoundError))
        if not location.startswith(HUB_SCHEME) or not hub_failed:
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HubError(
            f"{location}: the Hub could not be read ({reason}). Check the network and the repo id, and the token for a "
            "private dataset (HF_TOKEN or `hf auth login`); or work from a local copy (`datagen pull`)"
        ) from error


def split_of(name: str) -> str:
    """The split a Parquet file belongs to by its name: `train-00000-of-00004.parquet` (push, the Hub's data/ layout)
    or its folder (`default/train/0000.parquet`, the Hub's Parquet conversion); synonyms mapped (val -> validation)."""
    path = PurePosixPath(name)
    word = path.name.split("-")[0].split(".")[0] if "-" in path.name else path.parent.name
    return HUB_SPLIT_NAMES.get(word.lower(), word.lower())


def hub_repo(location: str) -> str:
    """`user/name` of `hf://user/name`; an InputError for anything else after the scheme."""
    repo = location[len(HUB_SCHEME) :].strip("/")
    if repo.count("/") != 1:
        raise InputError(f"{location}: expected hf://user/name")
    return repo


def shards_by_split(location: str) -> dict[str, list[str]]:
    """Every split's Parquet files (sorted) at `location`, a folder or hf://user/name, from one listing; the splits in
    the contract's order (train, validation, test), others after."""
    if location.startswith(HUB_SCHEME):
        repo = hub_repo(location)
        with reading(location, missing_is_failure=True):
            names = sorted(str(name) for name in hub_filesystem().glob(f"datasets/{repo}/**/*.parquet"))
    else:
        names = sorted(str(name) for name in Path(location).rglob("*.parquet") if not name.name.startswith("."))
    found: dict[str, list[str]] = {}
    for name in names:
        found.setdefault(split_of(name), []).append(name)
    order = [split for split in SPLITS if split in found] + sorted(split for split in found if split not in SPLITS)
    return {split: found[split] for split in order}


def list_shards(location: str, split: str) -> tuple[list[str], list[str]]:
    """(the split's Parquet files, sorted; every split found, sorted) of a folder or hf://user/name."""
    found = shards_by_split(location)
    return found.get(split, []), sorted(found)


def shard_splits(location: str) -> list[str]:
    """The splits of the Parquet shards at `location` (a folder or hf://user/name), by their files' names, sorted."""
    return sorted(shards_by_split(location))


def shard_name(location: str, path: str) -> str:
    """A shard's path within the dataset (data/train-00000-of-00004.parquet), for messages."""
    posix = PurePosixPath(Path(path).as_posix())
    if location.startswith(HUB_SCHEME):
        repo, text = location[len(HUB_SCHEME) :].strip("/"), str(posix)
        return text.split(f"datasets/{repo}/", 1)[1] if f"datasets/{repo}/" in text else posix.name
    try:
        return str(posix.relative_to(Path(location).as_posix()))
    except ValueError:
        return posix.name


def image_columns(schema) -> list[str]:
    """Columns holding images as the datasets library writes them: struct<bytes, path>."""
    import pyarrow as pa

    return [
        f.name
        for f in schema
        if pa.types.is_struct(f.type) and "bytes" in [f.type.field(i).name for i in range(f.type.num_fields)]
    ]


@contextmanager
def _parquet_file(location: str, path: str) -> Iterator[Any]:
    """A pyarrow ParquetFile of the shard `path`: local, or on hub_filesystem() for an hf:// location (`reading`)."""
    import pyarrow.parquet as pq

    with reading(location):
        if location.startswith(HUB_SCHEME) and not Path(path).is_file():  # a downloaded copy is read where it lies
            with hub_filesystem().open(path, "rb") as file:
                yield pq.ParquetFile(file)
        else:
            yield pq.ParquetFile(path)


def read_row_group(location: str, path: str, group: int, columns: list[str] | None = None):
    """Row group `group` of the shard `path` as a pyarrow Table of `columns` (None: all)."""
    with _parquet_file(location, path) as parquet:
        return parquet.read_row_group(group, columns=columns)


def shard_rows(location: str, split: str, columns: tuple[str, ...], option: str) -> Iterator[dict[str, Any]]:
    """The rows of a split as dicts of those of `columns` its shards have, a row group at a time (only those columns'
    bytes are read: over HTTP ranges on the Hub, metadata without the images)."""
    for path in list_shards(location, split)[0]:
        schema, metadata = shard_metadata(location, path, option)
        wanted = [column for column in columns if column in schema.names]
        for group in range(metadata.num_row_groups):
            yield from read_row_group(location, path, group, wanted).to_pylist()


def shard_metadata(location: str, path: str, option: str):
    """(the Arrow schema, the Parquet metadata) of one shard, from its footer; errors name `option` and the shard."""
    from datagen.hub import HubError

    try:
        with _parquet_file(location, path) as parquet:
            return parquet.schema_arrow, parquet.metadata
    except HubError:
        raise
    except Exception as error:
        message = f"{option} {location}: {PurePosixPath(path).name} is not a readable Parquet file ({error})"
        raise InputError(message) from error


def preview_rows(location: str, n: int, split: str | None, seed: int) -> list[tuple[str, list[np.ndarray]]]:
    """`datagen preview` of the shards at `location`: n rows of `split` (default: the first present) drawn without
    replacement by `seed`, as (`split/id`, tiles); only the row groups that hold them are read. A row that cannot be
    decoded is a crossed-out tile, as a directory's unreadable files are."""
    by_split = shards_by_split(location)
    split = split or next(iter(by_split), None)
    if split is None:
        raise InputError(f"{location}: no Parquet shards")
    groups, read = [], {}  # (shard, row group, rows); each shard's image column of each kind, and the columns to read
    for path in by_split.get(split, []):
        schema, metadata = shard_metadata(location, path, "preview")
        kinds = _kind_columns(image_columns(schema))
        read[path] = kinds, [name for name in ("id", *kinds.values()) if name in schema.names]
        groups += [(path, g, metadata.row_group(g).num_rows) for g in range(metadata.num_row_groups)]
    ends = np.cumsum([rows for *_, rows in groups], dtype=np.int64)
    if not len(ends) or not ends[-1]:
        raise InputError(f"{location}: split {split!r} has no rows (splits: {', '.join(by_split)})")
    found, table, key = [], None, None
    for index in sorted(np.random.default_rng(seed).permutation(int(ends[-1]))[:n].tolist()):
        piece = int(np.searchsorted(ends, index, side="right"))
        path, group, rows = groups[piece]
        kinds, columns = read[path]
        if key != (path, group):
            table, key = read_row_group(location, path, group, columns), (path, group)
        row = {name: table.column(name)[index - int(ends[piece]) + rows].as_py() for name in table.column_names}
        where = f"{location}/{shard_name(location, path)}:row {index - int(ends[piece]) + rows}"
        found.append((f"{split}/{row.get('id') or where}", _row_tiles(row, kinds, where)))
    return found


def _image_bytes(row: dict[str, Any], kinds: dict[str, str]) -> dict[str, bytes]:
    """The bytes of each kind of image a row holds (`kinds`: the column of each kind; an empty cell is left out)."""
    cells = {kind: row.get(column) for kind, column in kinds.items()}
    return {kind: cell["bytes"] for kind, cell in cells.items() if isinstance(cell, dict) and cell.get("bytes")}


def _row_tiles(row: dict[str, Any], kinds: dict[str, str], where: str) -> list[np.ndarray]:
    """A row's preview tiles (`preview.cutout_tiles`), decoded by the readers files go through."""
    cells = _image_bytes(row, kinds)
    readers = {"image": read_image, "alpha": read_alpha, "foreground": read_foreground}
    try:
        planes = {kind: decode_bytes(cells[kind], reader, where) for kind, reader in readers.items() if kind in cells}
        if {"image", "alpha"} <= set(planes):
            image, alpha = check_pair(planes["image"], planes["alpha"], where)
            return cutout_tiles(np.dstack([image, alpha]), alpha, False)
        if {"foreground", "alpha"} <= set(planes):
            return cutout_tiles(planes["foreground"], planes["alpha"], True)
        if set(planes) == {"image"}:  # a background
            return [planes["image"]]
        raise ImageReadError(where, f"no image to show (columns with bytes: {', '.join(sorted(planes)) or 'none'})")
    except ImageReadError as error:
        log.warning("%s: %s (shown as a crossed-out tile)", error.path, error.reason)
        return [unreadable_tile()]


def _kind_columns(images: list[str]) -> dict[str, str]:
    """The image column of each kind of FILE_KINDS a shard has (push names them by kind); the matte is `alpha` or,
    in another layout, the first of HUB_MATTE_COLUMNS, as training and `datagen pull` read it."""
    matte = "alpha" if "alpha" in images else next((name for name in HUB_MATTE_COLUMNS if name in images), None)
    columns = {kind: kind for kind in FILE_KINDS if kind in images and kind != matte}
    return columns | ({"alpha": matte} if matte else {})


def check_group(
    location: str, path: str, group: int, first_row: int, kinds: dict[str, str]
) -> tuple[list[Problem], list[tuple[Any, str, int, SampleCheck]]]:
    """Check every row of one row group as `inspect` checks a metadata row's files: each image decoded, its mode and
    format, the sizes, trimap values, a stale foreground (`kinds`: the image column of each kind). (the row group's
    own problems, (id, source, row in the shard, SampleCheck) per row); `first_row`: the group's first row."""
    shard = shard_name(location, path)
    try:
        table = read_row_group(location, path, group)
    except OSError as error:  # pyarrow's errors for a damaged file (ArrowInvalid and ArrowIOError are OSErrors)
        return [Problem(f"{shard}:group {group}", f"unreadable row group ({error})")], []
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    results = []
    for index in range(table.num_rows):
        row = {name: values[index] for name, values in columns.items()}
        sample_id, check = row.get("id"), SampleCheck()
        where = f"{shard}:row {first_row + index}" + (f" ({sample_id})" if isinstance(sample_id, str) else "")
        present = _image_bytes(row, kinds)
        shape = set(present) & {"image", "alpha", "foreground"}
        if shape not in ROW_SHAPES:
            shown = ", ".join(kinds[kind] for kind in sorted(shape)) or "none"
            check.problems.append(
                Problem(where, f"holds the images {shown}: a row is a photo (image, alpha, and foreground where its "
                        "colour was estimated), a foreground (foreground, alpha) or a background (image alone)")
            )  # fmt: skip
        names = {kind: f"{where}:{kinds[kind]}" for kind in present}
        arrays = {}
        for kind, data in present.items():
            array = check_image(io.BytesIO(data), names[kind], kind, check)
            if array is not None:
                arrays[kind] = array
        sizes = "width" in columns and "height" in columns  # else one problem of the dataset says so, not one a row
        check_planes(arrays, names, row, check, f"`{kinds.get('alpha')}`", STALE_FIX, sizes)
        results.append((sample_id, str(row.get("source", "unknown")), first_row + index, check))
    return [], results


Plan = list[tuple[str, str, int, int, int]]  # (split, shard path, row group, its first row in the shard, its rows)


def _plan(location: str, report: Report) -> tuple[Plan, Any]:
    """The row groups of every split's shards, from their footers, and the first shard's Arrow schema (None: no
    readable shard); a shard that cannot be read, or whose columns differ from the first's, is a problem of `report`."""
    plan, first, schema = [], "", None
    for split, paths in shards_by_split(location).items():
        for path in paths:
            name = shard_name(location, path)
            try:
                their_schema, metadata = shard_metadata(location, path, "inspect")
            except InputError as error:
                report.problems.append(Problem(name, f"not a readable Parquet file ({error.__cause__})"))
                continue
            if schema is None:
                first, schema = name, their_schema
            elif not their_schema.equals(schema):
                differ = sorted(set(schema.names) ^ set(their_schema.names)) or [
                    n for n in schema.names if schema.field(n).type != their_schema.field(n).type
                ]
                report.problems.append(
                    Problem(name, f"its columns differ from {first}'s ({', '.join(differ)}): every shard of a dataset "
                            "needs the same columns and types (datasets.load_dataset)")
                )  # fmt: skip
                continue
            start = 0
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                plan.append((split, path, group, start, rows))
                start += rows
    return plan, schema


def _has_card(location: str) -> bool:
    """A README.md (the dataset card) beside the shards."""
    if not location.startswith(HUB_SCHEME):
        return (Path(location) / "README.md").is_file()
    with reading(location):
        return hub_filesystem().exists(f"datasets/{hub_repo(location)}/README.md")


def _schema_problems(schema, kinds: dict[str, str]) -> Iterator[Problem]:
    """What the dataset's columns lack of what `datagen push` writes and its readers need."""
    for column, what in (("id", "each row's id"), ("width", "the image's width"), ("height", "the image's height")):
        if column not in schema.names:
            yield Problem(".", f"no `{column}` column ({what}, as `datagen push` writes it)")
    if not {"image", "foreground"} & set(kinds):
        yield Problem(".", f"no `image` or `foreground` column of images (columns: {', '.join(schema.names)})")


def inspect_shards(location: str, *, workers: int = 1, progress: bool = False) -> Report:
    """`datagen inspect` of the Parquet shards at `location` (a folder, or hf://user/name read in place): every row's
    images decoded and checked as a dataset directory's files are (a row group at a time, in `workers` processes),
    ids valid and unique in their split, every shard with the first one's columns; counts by split and source, image
    sizes, alpha shares. Holds a few numbers per row group and each split's ids, never the rows."""
    report = Report(location)
    plan, schema = _plan(location, report)
    if schema is None:
        report.problems.append(Problem(".", "no readable Parquet shard"))
        return report
    if not _has_card(location):
        report.problems.append(Problem("README.md", "missing (dataset card)", "warning"))
    kinds = _kind_columns(image_columns(schema))
    report.problems.extend(_schema_problems(schema, kinds))
    paths = list(dict.fromkeys(path for _, path, *_ in plan))  # the shards in plan order; a row's place is its index
    index, names = {path: number for number, path in enumerate(paths)}, [shard_name(location, p) for p in paths]
    has_ids = "id" in schema.names
    seen: dict[str, dict[str, int]] = {split: {} for split, *_ in plan}  # id -> shard index << 32 | row
    sources = {split: Counter() for split in seen}
    report.counts = dict.fromkeys(seen, 0)

    def checks() -> Iterator[tuple[list[Problem], list]]:
        jobs = ((location, path, group, start, kinds) for _, path, group, start, _ in plan)
        if workers <= 1:
            yield from (check_group(*job) for job in jobs)
            return
        with process_pool(workers) as pool:
            yield from bounded_map(pool, check_group, jobs, 4 * workers)

    def samples() -> Iterator[tuple[str, SampleCheck]]:
        with tqdm(total=sum(p[4] for p in plan), desc="inspect", unit="sample", disable=not progress) as bar:
            for (split, path, _, _, rows), (problems, results) in zip(plan, checks(), strict=True):
                report.problems.extend(problems)
                shard = index[path]
                for sample_id, source, row, check in results:
                    if not has_ids:  # one problem of the dataset says so; rows go by their place
                        sample_id = f"{names[shard]}:row {row}"
                    elif problem := _id_problem(sample_id, seen[split], shard << 32 | row, names):
                        report.problems.append(problem)
                        continue
                    report.counts[split] += 1
                    sources[split][source] += 1
                    yield f"{split}/{sample_id}", check
                bar.update(rows)

    tally(report, samples())
    report.sources = {split: dict(counter) for split, counter in sources.items()}
    return report


def _id_problem(sample_id: Any, seen: dict[str, int], code: int, names: list[str]) -> Problem | None:
    """The problem with a row's id (None: a valid id first seen in its split, now recorded in `seen` at `code`)."""
    where = f"{names[code >> 32]}:row {code & 0xFFFFFFFF}"
    if not isinstance(sample_id, str) or not sample_id:
        return Problem(where, f"no id (found {sample_id!r})")
    if not ID_PATTERN.match(sample_id):
        return Problem(where, f"id {sample_id!r} has characters outside [A-Za-z0-9._-]")
    if sample_id in seen:
        first = seen[sample_id]
        return Problem(where, f"duplicate id {sample_id!r} (first at {names[first >> 32]}:row {first & 0xFFFFFFFF})")
    seen[sample_id] = code
    return None
