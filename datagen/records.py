"""The dataset-directory contract (docs/FORMAT.md): samples, metadata rows, ids, splits, resume.

DIR/<split>/metadata.jsonl   one JSON row per sample; the row is written last and is what makes a
DIR/<split>/im/<id>.jpg      sample exist: files first (each atomically), then the row (one appended
DIR/<split>/gt/<id>.png      line under a file lock). An interrupted write leaves files without a row,
DIR/<split>/fg/<id>.png      which readers ignore and a rerun overwrites.
DIR/<split>/trimap/<id>.png
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datagen.console import SPLITS  # the three splits of the contract (defined where the command line needs them)
from datagen.errors import InputError, MissingInputError, UserError
from datagen.io import (
    encode_jpeg,
    encode_png,
    output_error,
    remove_stale_temporaries,
    shard_file_name,
    write_atomic,
)

log = logging.getLogger(__name__)

METADATA = "metadata.jsonl"
# Each file kind: (its metadata key, its folder). The folder names are the im/gt layout of DIS and IS-Net.
FILE_KINDS = {
    "image": ("file_name", "im"),
    "alpha": ("alpha_file_name", "gt"),
    "foreground": ("foreground_file_name", "fg"),
    "trimap": ("trimap_file_name", "trimap"),
    "mask": ("mask_file_name", "mask"),  # the coarse matte a refined alpha came from (`datagen refine`)
    "refine_trimap": ("refine_trimap_file_name", "refine_trimap"),  # the trimap `datagen refine` used
}
FILE_COLUMNS = tuple(column for column, _ in FILE_KINDS.values())


def plane_name(kind: str, sample_id: str) -> str:
    """Where the stages write a sample's one-channel or RGBA PNG of `kind` (not its image), relative to its split
    folder: `<folder>/<id>.png` (gt/, fg/, trimap/, mask/, refine_trimap/)."""
    return f"{FILE_KINDS[kind][1]}/{sample_id}.png"


# Files a stage derives from a sample's alpha, each with the row key that says a stage made it (a source's own file,
# a synthetic person's fg/, has no such key and is never touched): replace_alpha deletes them with the old alpha.
DERIVED_FROM_ALPHA = {"foreground": "foreground_method"}
# Files that in-place stages add to rows another stage wrote: refine's mask/ and refine_trimap/ (REFINE_KINDS), and fg/
# where a row has DERIVED_FROM_ALPHA's marker. A rerun of the stage that wrote the row does not make them, so its
# resume check leaves them out: one gone never has that stage write the row's files again, over the alpha refine
# replaced.
REFINE_KINDS = ("mask", "refine_trimap")
ADDED_IN_PLACE = tuple(FILE_KINDS[kind][0] for kind in REFINE_KINDS)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Skip:
    """A sample that was not made, and why: batch jobs record these (run.json, skipped.jsonl) and go on."""

    path: str
    reason: str


@dataclass
class StageResult:
    """What every writing stage reports (synth, compose, import, pull, foreground, refine, relight): its output
    directory, samples made now, samples already there (a resumed run), skips by reason, seconds, and what Ray ran
    (with --ray). Stages add theirs."""

    out: Path
    new: int = 0
    existing: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    ray: dict[str, Any] | None = None  # a --ray run's RayReport (datagen.cluster): batches, worker processes, nodes
    skips_file: str = "skipped.jsonl"  # where each skip is listed with its path (datagen.stage.skips_file)

    def to_record(self, command: str, config: Any, **extra: Any) -> dict[str, Any]:
        """The run record (run.json, or foreground.json / refine.json beside it), one schema for every stage:
        command, tool, config, then this result's fields (new, existing, skipped by reason, ray, and the stage's own),
        anything in `extra`, finished and seconds (docs/FORMAT.md)."""
        from datagen import __version__

        fields = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}  # asdict breaks Counters
        fields = {key: value for key, value in fields.items() if key not in ("out", "seconds", "skips_file")}
        return json.loads(json.dumps({
            "command": command,
            "tool": f"datagen {__version__}",
            "config": asdict(config),
            **fields,
            **extra,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(self.seconds, 2),
        }, default=str))  # fmt: skip

    def summary(self) -> str:
        """What a command prints when it ends: made now, already there, the stage's own counts, skipped, seconds and
        where (with the count per split), then each skip reason with its count."""
        counts = ", ".join(f"{split} {n}" for split, n in getattr(self, "counts", {}).items())
        head = [f"new {self.new}", f"already there {self.existing}", *self.summary_parts()]
        head.append(f"skipped {sum(self.skipped.values())}")
        lines = [", ".join(head) + f" in {self.seconds:.1f} s -> {self.out}" + (f" ({counts})" if counts else "")]
        for reason, count in sorted(self.skipped.items(), key=lambda item: -item[1]):
            lines.append(f"  skipped {count:>6}  {reason}  (each in {Path(self.out) / self.skips_file})")
        return "\n".join([*lines, *self.summary_lines()])

    def summary_parts(self) -> list[str]:
        """The stage's own counts for the summary's first line."""
        return []

    def summary_lines(self) -> list[str]:
        """The stage's own lines after the summary's first."""
        return []


@dataclass
class InPlaceResult(StageResult):
    """What a stage that changes a dataset in place reports (foreground, refine): the rows it updated per split, and
    the rows still waiting (for other shards, or skipped) per split."""

    rows_updated: dict[str, int] = field(default_factory=dict)  # split -> rows updated now
    waiting: dict[str, int] = field(default_factory=dict)  # split -> rows not done yet (other shards, or skipped)

    def summary_parts(self) -> list[str]:
        return [f"rows updated: {', '.join(f'{split} {n}' for split, n in self.rows_updated.items()) or 'none'}"]

    def summary_lines(self) -> list[str]:
        return [
            f"  {split}: {n} rows still to do (other shards, or skipped): their rows are not updated yet"
            for split, n in self.waiting.items()
        ]


class MetadataError(InputError):
    """A metadata.jsonl line that is not a JSON object; names the file and line."""


def sanitize_id(name: str) -> str:
    """`name` with every run of characters outside [A-Za-z0-9._-] replaced by '_' and no leading '.', '_' or '-'.

    >>> sanitize_id("p_015cd10e")
    'p_015cd10e'
    >>> sanitize_id("1#Accessories#1#Bag#1.jpg")
    '1_Accessories_1_Bag_1.jpg'
    """
    cleaned = _UNSAFE.sub("_", name).lstrip("._-")
    if not cleaned:
        raise InputError(f"cannot make an id from {name!r}: no letters or digits")
    return cleaned


MAX_ID_CHARS = 200  # an id is a file name with a suffix (and write_atomic's temporary one): well within 255 bytes


def make_id(prefix: str, name: str) -> str:
    """The id `<prefix>-<sanitized name>`, for samples named by their source file; a longer one than MAX_ID_CHARS is
    cut and ends with a hash of the whole name, so it stays unique and a valid file name."""
    sample_id = f"{sanitize_id(prefix)}-{sanitize_id(name)}"
    if len(sample_id) <= MAX_ID_CHARS:
        return sample_id
    return f"{sample_id[: MAX_ID_CHARS - 9]}-{hashlib.sha1(name.encode(errors='surrogateescape')).hexdigest()[:8]}"


def iter_strings(array, batch: int = 65536) -> Iterator[str]:
    """The values of an Arrow string array as Python strings, made a batch at a time (never a list of a million)."""
    for start in range(0, len(array), batch):
        yield from array.slice(start, batch).to_pylist()


class StringColumn:
    """An Arrow string (or binary) array appended a batch of Python values at a time into one growing buffer: a million
    file names are held once, where batches of Arrow arrays and their concatenation (`combine_chunks`) held them
    twice at the end, and pyarrow's own conversion of each batch's list left about twice as much resident."""

    def __init__(self) -> None:
        self._data, self._lengths = bytearray(), []

    def __len__(self) -> int:
        return sum(map(len, self._lengths))

    def extend(self, values: list[str], prefix: str = "") -> None:
        """Append `values`, each after `prefix`. Raises UnicodeEncodeError, having added nothing, for a string that is
        not valid UTF-8 (a file name Python holds with surrogates)."""
        data = (prefix + prefix.join(values)).encode() if values else b""
        lengths = np.fromiter(map(len, values), np.int32, len(values)) + len(prefix)
        if len(data) != lengths.sum(dtype=np.int64):  # not all ASCII: lengths in bytes
            lengths = np.fromiter((len(value.encode()) for value in values), np.int32, len(values))
            lengths += len(prefix.encode())
        self._data += data
        self._lengths.append(lengths)

    def extend_bytes(self, values: list[bytes]) -> None:
        """Append `values` as they are (a binary column's, say a file name's bytes that are not UTF-8)."""
        self._data += b"".join(values)
        self._lengths.append(np.fromiter(map(len, values), np.int32, len(values)))

    def extend_array(self, array) -> None:
        """Append the values of an Arrow string array without nulls (copied out of its buffers)."""
        if not len(array):
            return
        _, offsets, data = array.buffers()
        offsets = np.frombuffer(offsets, np.int32, len(array) + 1, array.offset * 4)
        self._data += memoryview(data)[offsets[0] : offsets[-1]] if data is not None else b""
        self._lengths.append(np.diff(offsets))

    def copy(self) -> StringColumn:
        column = StringColumn()
        column._data, column._lengths = bytearray(self._data), list(self._lengths)
        return column

    def finish(self, binary: bool = False):
        """The Arrow array of everything appended (string, or binary), built on this column's buffer: no copy. The
        column starts empty again."""
        import pyarrow as pa

        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        large = len(self._data) >= 2**31  # beyond 32-bit offsets: built large, then cast (pyarrow checks it fits)
        offsets = np.zeros(len(lengths) + 1, np.int64 if large else np.int32)
        np.cumsum(lengths, dtype=offsets.dtype, out=offsets[1:])
        kind = (pa.large_binary() if large else pa.binary()) if binary else pa.large_string() if large else pa.string()
        array = pa.Array.from_buffers(kind, len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(self._data)])
        self._data, self._lengths = bytearray(), []
        return array.cast(pa.binary() if binary else pa.string()) if large else array


def arrow_strings(values: list[str]):
    """An Arrow string array of `values` (`StringColumn`); UnicodeEncodeError for a string that is not UTF-8."""
    column = StringColumn()
    column.extend(values)
    return column.finish()


STRING_BATCH = 65536  # values made Python objects at a time by the column helpers below


def string_hashes(array) -> np.ndarray:
    """Python's hash of each value of an Arrow string or binary array: int64, made a batch at a time (a million take
    8 MB). Equal values have equal hashes in this process; unequal ones may too (rarely): callers compare values."""
    hashes = np.empty(len(array), np.int64)
    for start in range(0, len(array), STRING_BATCH):
        values = array.slice(start, STRING_BATCH).to_pylist()
        hashes[start : start + len(values)] = np.fromiter(map(hash, values), np.int64, len(values))
    return hashes


def _equal(left, right) -> np.ndarray:
    import pyarrow.compute as pc

    return np.asarray(pc.equal(left, right).fill_null(False), dtype=bool)


class StringIndex:
    """Where each value of an Arrow string (or binary) array is, found without Arrow's hash table: the values' hashes,
    sorted, and their positions (12 bytes a value). `find` searches them for each value's hash and compares every hit
    as strings, so two values whose hashes collide are never taken for one. A million ids found among a million
    (scripts/bench_scale.py's kind): 1.1 s and 15 MB above the inputs, where `pc.index_in` took 0.6 s and 72 MB."""

    def __init__(self, value_set):
        import pyarrow as pa

        if isinstance(value_set, pa.ChunkedArray):  # one chunk: Arrow's take of a chunked array joins them at each call
            value_set = value_set.chunk(0) if value_set.num_chunks == 1 else value_set.combine_chunks()
        self.value_set = value_set
        self.hashes = string_hashes(value_set)
        order = np.argsort(self.hashes, kind="stable")  # equal hashes keep the set's order: first occurrences first
        self.order = order.astype(np.int32) if len(order) < 2**31 else order
        del order  # before the sort: 8 MB a million less at the peak
        self.hashes.sort(kind="stable")  # in place: what hashes[order] is, without a copy

    def find(self, values) -> np.ndarray:
        """For each of `values` (Arrow strings, of the set's type: a str never equals bytes) the index of its first
        occurrence in the set, -1 where it has none (nulls have none): int64. Asked a batch of values at a time."""
        if values.type != self.value_set.type:
            raise TypeError(f"values of type {values.type} asked of a set of {self.value_set.type}")
        found = np.full(len(values), -1, np.int64)
        if not len(self.hashes):
            return found
        last = len(self.hashes) - 1
        for start in range(0, len(values), STRING_BATCH):
            batch = values.slice(start, STRING_BATCH)
            hashes = string_hashes(batch)  # one batch
            at = np.searchsorted(self.hashes, hashes)
            rows = np.flatnonzero(self.hashes[np.minimum(at, last)] == hashes)
            tried = at[rows]
            while len(rows):  # a row whose hash matched a different value tries the next one of that hash (rare)
                same = _equal(batch.take(rows), self.value_set.take(self.order[tried]))
                found[start + rows[same]] = self.order[tried[same]]
                rows, tried = rows[~same], tried[~same] + 1
                more = tried <= last
                rows, tried = rows[more], tried[more]
                more = self.hashes[tried] == hashes[rows]
                rows, tried = rows[more], tried[more]
        return found


def index_in(values, value_set) -> np.ndarray:
    """`pyarrow.compute.index_in` as an int64 array, -1 for none, by a `StringIndex` of `value_set`."""
    return StringIndex(value_set).find(values)


def repeated(values) -> np.ndarray:
    """Which rows of `values` (Arrow strings) hold a value that another row holds too: a bool array. The rows that
    share a hash (sorted hashes, side by side) are compared as strings. A million ids: 0.3 s and two int64 arrays
    (16 MB) beside a few small ones, where Arrow's `value_counts` and `is_in` took 0.6 s and 117 MB."""
    return _repeated(string_hashes(values), lambda rows: values.take(rows).to_pylist())


def _repeated(hashes: np.ndarray, values_of: Callable[[np.ndarray], list]) -> np.ndarray:
    """`repeated` of the values whose hashes are `hashes` (sorted here, in place); `values_of(rows)` gives the values
    of the few rows that share a hash, to compare."""
    order = np.argsort(hashes, kind="stable")
    hashes.sort(kind="stable")  # in place: hashes[order], without a copy
    shared = np.flatnonzero(hashes[1:] == hashes[:-1])
    rows = np.unique(np.concatenate([order[shared], order[shared + 1]]))
    mask = np.zeros(len(hashes), bool)
    if rows.size:  # few: the repeats, and values whose hashes collide
        candidates = values_of(rows)
        counts = Counter(candidates)
        mask[rows] = [counts[value] > 1 for value in candidates]
    return mask


class SampleIds:
    """The id of each source sample, deterministically and independent of order, for `keys` (what tells samples
    apart, say a relative path; an Arrow string array or a list) and `names` (what the id is made from, say the stem,
    as strings or a file name's bytes; default: the keys). Keys whose sanitized names collide (``a#b`` and ``a b``, or
    one stem in two folders) each get a suffix made from a hash of the key, so a key always gets the same id whatever
    else is in the batch or shard. The ids are made when asked, a batch at a time (`take`): a million are held as
    the few that collide, not as 25 MB of strings (a no-op `import` of a million photos asks each once)."""

    def __init__(self, prefix: str, keys, names=None):
        import pyarrow as pa

        self.keys = keys if isinstance(keys, pa.Array | pa.ChunkedArray) else pa.array(keys, pa.string())
        self.names = self.keys if names is None else names if isinstance(names, pa.Array | pa.ChunkedArray) else (
            pa.array(names)
        )  # fmt: skip
        self._prefix = sanitize_id(prefix)  # once, not once a key
        self._decode = os.fsdecode if pa.types.is_binary(self.names.type) else str  # binary: a file name's bytes
        self._suffixed: dict[int, str] = {}
        hashes = np.empty(len(self.names), np.int64)
        for start in range(0, len(self.names), STRING_BATCH):
            plain = self._plain(self.names.slice(start, STRING_BATCH))
            hashes[start : start + len(plain)] = np.fromiter(map(hash, plain), np.int64, len(plain))
        rows = np.flatnonzero(_repeated(hashes, lambda rows: self._plain(self.names.take(rows))))
        for row, plain, key in zip(rows.tolist(), self._plain(self.names.take(rows)), self.keys.take(rows).to_pylist()):
            self._suffixed[row] = f"{plain}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"

    def _plain(self, names) -> list[str]:
        return [make_id(self._prefix, self._decode(name)) for name in names.to_pylist()]

    def __len__(self) -> int:
        return len(self.names)

    def take(self, rows: np.ndarray) -> list[str]:
        """The ids of `rows` (ask a batch of them at a time: each is made as it is asked)."""
        ids = self._plain(self.names.take(rows))
        if self._suffixed:
            for at, row in enumerate(rows.tolist()):
                ids[at] = self._suffixed.get(row, ids[at])
        return ids

    def column(self):
        """Every id, as an Arrow string array (about 25 bytes an id)."""
        import pyarrow as pa

        rows = np.arange(len(self))
        batches = (self.take(rows[start : start + STRING_BATCH]) for start in range(0, len(self), STRING_BATCH))
        return pa.chunked_array([arrow_strings(ids) for ids in batches], pa.string()).combine_chunks()


def unique_ids(prefix: str, keys, names=None):
    """`SampleIds(prefix, keys, names)` as an Arrow string array aligned with `keys`."""
    return SampleIds(prefix, keys, names).column()


def seeded_id(prefix: str, seed: int, index: int) -> str:
    """The id of a generated sample: `<prefix>-s<seed>-<index, 7 digits>`."""
    return f"{sanitize_id(prefix)}-s{seed}-{index:07d}"


def resolve_shard(shard: tuple[int, int] | str | None, overwrite: bool = False) -> tuple[int, int]:
    """(I, K) of a stage's --shard: "I/K" or (I, K) with 0 <= I < K; None: the launcher's (RANK, WORLD_SIZE) under
    `accelerate launch` or `torchrun`, else (0, 1). Refuses --overwrite with several shards (they would delete each
    other's work)."""
    if shard is None:
        shard = (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))
    elif isinstance(shard, str):
        parts = shard.split("/")
        if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
            raise InputError(f"--shard {shard!r}: give I/K, for example 0/4")
        shard = (int(parts[0]), int(parts[1]))
    index, count = shard
    if not 0 <= index < count:
        raise InputError(f"--shard {index}/{count}: need 0 <= I < K")
    if overwrite and count > 1:
        raise InputError(
            "--overwrite with --shard would let shards delete each other's work: clear the output once "
            "(an unsharded --overwrite run, or rm -r) and start the shards"
        )
    return index, count


HUB_SCHEME = "hf://"  # a Hub dataset named where a dataset directory could be: hf://user/name
HUB_MATTE_COLUMNS = ("alpha", "mask", "matte", "gt", "label")  # the usual names of a Hub dataset's matte column
HUB_SPLIT_NAMES = {
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "dev": "validation",
    "testing": "test",
}


def parse_spec(text: str, option: str, weighted: bool = False) -> tuple[str, str | None, float]:
    """`DIR[:SPLIT[:WEIGHT]]` (`DIR[:SPLIT]` unless `weighted`) -> (DIR, SPLIT or None, WEIGHT or 1.0). DIR may be
    `hf://user/name` (training reads Hub datasets; the other readers refuse it as a missing directory).

    The one parser of dataset references for train (--data, --val), evaluate (--data) and compose (--fg, --bg);
    errors are ValueErrors that name `option` and say what was expected.
    """
    scheme = HUB_SCHEME if text.startswith(HUB_SCHEME) else ""  # hf://user/name[:SPLIT...]: its ':' is not a split
    path, *rest = text[len(scheme) :].split(":")
    path = scheme + path if path else ""
    if not path or len(rest) > (2 if weighted else 1):
        raise InputError(f"{option} {text!r}: expected DIR[:SPLIT{'[:WEIGHT]' if weighted else ''}]")
    split = rest[0] or None if rest else None
    if split is not None and split not in SPLITS:
        raise InputError(f"{option} {text!r}: split {split!r} is not one of {', '.join(SPLITS)}")
    weight = 1.0
    if len(rest) > 1:
        try:
            weight = float(rest[1])
        except ValueError:
            raise InputError(f"{option} {text!r}: weight {rest[1]!r} is not a number") from None
        if not weight > 0 or weight == float("inf"):
            raise InputError(f"{option} {text!r}: weight {weight} must be a number above 0")
    return path, split, weight


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split


def files_present(folder: str, row: dict[str, Any]) -> bool:
    """Every file `row` names is on disk below `folder` (its split folder, ending in a separator): plain strings and
    os.stat, no Path objects, since a resume checks millions."""
    return all(os.path.isfile(folder + row[key]) for key in FILE_COLUMNS if row.get(key))


@dataclass(frozen=True)
class Sample:
    """One complete sample of a dataset directory: its split folder and its metadata row."""

    root: Path
    split: str
    row: dict[str, Any]

    @property
    def id(self) -> str:
        return self.row["id"]

    def path(self, kind: str) -> Path | None:
        """Absolute path of the `kind` file ('image', 'alpha', 'foreground', 'trimap'), None if absent."""
        relative = self.row.get(FILE_KINDS[kind][0])
        return self.root / self.split / relative if relative else None

    def is_complete(self) -> bool:
        return files_present(f"{self.root}{os.sep}{self.split}{os.sep}", self.row)

    @property
    def is_foreground_only(self) -> bool:
        """A foreground-pool row: RGBA foreground and alpha, no photo."""
        return "file_name" not in self.row and "foreground_file_name" in self.row

    @property
    def is_background(self) -> bool:
        """A background row (`datagen synth --kind background`): an image and no alpha."""
        return "alpha_file_name" not in self.row and "foreground_file_name" not in self.row


def metadata_path(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / check_split(split) / METADATA


def splits(root: str | os.PathLike) -> list[str]:
    """The splits of `root` that have a metadata file, in the order train, validation, test."""
    return [split for split in SPLITS if (Path(root) / split / METADATA).is_file()]


def holds_parquet(root: str | os.PathLike) -> bool:
    """`root` holds Parquet files at most two folders down (push's data/, the Hub's default/train/ and data/train/):
    shards that training and evaluation read and `datagen pull` unpacks. Never a walk of a large tree."""
    return any(
        next(Path(root).glob(pattern), None) is not None for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet")
    )


def pull_first(spec: str, what: str) -> str | None:
    """The message for `spec` naming a Hub dataset or a folder of Parquet shards where `what` needs a dataset directory
    (None for anything else)."""
    path = str(spec)
    if path.startswith(HUB_SCHEME):
        repo = path[len(HUB_SCHEME) :].strip("/")
        name = repo.split("/")[-1]
        return f"{what} reads dataset directories, not the Hub: `datagen pull {repo} -o datasets/{name}` first"
    if Path(path).is_dir() and not splits(path) and holds_parquet(path):
        return f"it holds Parquet shards, and {what} reads dataset directories: `datagen pull {path} -o DIR` first"
    return None


def no_splits(root: str | os.PathLike, what: str) -> str:
    """What to say where `what` (a command) needs a dataset directory and `root` has no split: the pull it needs when
    it holds Parquet shards, else the question."""
    return f"{root} has no split with a metadata.jsonl: " + (
        pull_first(str(root), what) or "is it a dataset directory?"
    )


def parse_metadata(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line number, row, error) for each non-blank line; exactly one of row and error is None.

    A last line without its newline is an append that was interrupted: it is skipped, never an error.
    """
    with open(path, encoding="utf-8") as file:  # streamed: memory stays flat in the number of rows
        for number, line in enumerate(file, start=1):
            if not line.endswith("\n"):
                return  # the partial last line of an interrupted append
            if line.strip():
                yield (number, *_parse_line(line))


def _parse_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """(row, None) for a metadata line that is a JSON object with a string id, else (None, what is wrong)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        return None, f"not JSON ({error.msg} at column {error.colno})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    if not isinstance(row.get("id"), str):
        return None, "has no string 'id'"
    return row, None


def iter_rows(root: str | os.PathLike, split: str) -> Iterator[dict[str, Any]]:
    """The metadata rows of a split, streamed (none when the split does not exist). MetadataError on a bad line."""
    path = metadata_path(root, split)
    if path.is_file():
        yield from (row for _, row in _numbered_rows(root, path))


def file_table(root: str | os.PathLike, split: str, columns: tuple[str, ...] = FILE_COLUMNS, reduce=None):
    """The id and `columns` (by default the file columns) of every row of a split, in file order, as a pyarrow Table
    of strings (null where a row has no such value); no rows when the split does not exist. `reduce(batch, start) ->
    batch`, given, is applied to each record batch as it is read (`start`: the number of its first row), to keep some
    columns or rows and add flags computed from others: the whole table of `columns` is never held.

    Arrow parses the lines in C++ (1.2 s a million composite rows on this 2-core machine type, where `json.loads` a
    line takes 5.7 s). Wherever its reading could differ from `iter_rows` (a partial last line, blank lines, a line
    it rejects, a row without an id), the rows are read by `iter_rows` instead, so the rows and the errors (naming
    the line) are the same either way. MetadataError on a bad line or a value that is not a string.
    """
    import pyarrow as pa

    schema = pa.schema([(column, pa.string()) for column in ("id", *columns)])
    keep = reduce or (lambda batch, start: batch)
    empty = keep(pa.record_batch([pa.array([], pa.string())] * len(schema), schema=schema), 0)
    path = metadata_path(root, split)
    if not path.is_file():
        return pa.Table.from_batches([empty])
    try:
        if reduce is None:  # the batches as Arrow read them (no copy)
            return pa.Table.from_batches(list(_arrow_batches(path, schema)), schema)
        batches, start = [], 0
        for batch in _grouped(_arrow_batches(path, schema)):
            batches.append(reduce(batch, start))
            start += batch.num_rows
        return pa.Table.from_batches(batches, empty.schema)
    except _ArrowCannot:
        pass
    batches, start, values = [], 0, {column: [] for column in schema.names}
    for number, row in _numbered_rows(root, path):
        for column in schema.names:
            values[column].append(_string(row, column, path, number))
        if len(values["id"]) == STRING_BATCH:
            batches.append(keep(pa.record_batch(list(values.values()), schema=schema), start))
            start += STRING_BATCH
            values = {column: [] for column in schema.names}
    batches.append(keep(pa.record_batch(list(values.values()), schema=schema), start))
    return pa.Table.from_batches(batches, empty.schema)


def file_table_rows(root: str | os.PathLike, split: str, columns: tuple[str, ...], numbers: np.ndarray, ids=None):
    """`file_table` of the rows `numbers` (sorted row numbers) only, read again (no other row is held); with `ids`
    (theirs when they were numbered), a RuntimeError when the file no longer holds them there."""
    import pyarrow as pa

    if not len(numbers):  # nothing to read (a no-op rerun)
        return pa.schema([(column, pa.string()) for column in ("id", *columns)]).empty_table()

    def taken(batch, start: int):
        at = numbers[np.searchsorted(numbers, start) : np.searchsorted(numbers, start + batch.num_rows)] - start
        return batch.take(pa.array(at, pa.int64()))

    table = file_table(root, split, columns, reduce=taken)
    expected = ids if ids is None or isinstance(ids, pa.ChunkedArray) else pa.chunked_array([ids], pa.string())
    if expected is not None and not table.column("id").equals(expected):
        raise RuntimeError(f"{metadata_path(root, split)} changed while it was read: run the command again")
    return table


def cache_batches(path: str | os.PathLike, schema) -> Iterator[Any]:
    """The rows of a JSON-lines cache file (one object a line, appended as things are measured) as Arrow record batches
    of `schema`'s columns ("id" first), in file order, streamed. A line that is not a JSON object, lacks one of the
    columns or holds a value of another type is left out: a cache's missing entry is measured again. Arrow parses the
    file wherever it reads it as `parse_metadata` does (`file_table`); where that turns out not to be so midway, the
    lines are read one by one from the first again: a reader takes the last row of each id (a later line wins)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path)
    if not path.is_file():
        return
    try:
        for batch in _arrow_batches(path, schema):
            valid = pc.is_valid(batch.column(0))
            for column in batch.columns[1:]:
                valid = pc.and_(valid, pc.is_valid(column))
            yield batch if pc.all(valid).as_py() is not False else batch.filter(valid)
        return
    except _ArrowCannot:
        pass
    kinds = {pa.string(): (str,), pa.int64(): (int,), pa.float64(): (int, float)}
    values: list[list[Any]] = [[] for _ in schema]
    for _, row, _ in parse_metadata(path):
        fields = [None if row is None else row.get(name) for name in schema.names]
        if all(isinstance(value, kinds[column.type]) and not isinstance(value, bool)
               for value, column in zip(fields, schema)):  # fmt: skip
            for column, value in zip(values, fields):
                column.append(value)
            if len(values[0]) == STRING_BATCH:
                yield pa.record_batch(values, schema=schema)
                values = [[] for _ in schema]
    yield pa.record_batch(values, schema=schema)


class _ArrowCannot(Exception):
    """Arrow's reading of a metadata file could differ from `iter_rows`': read it row by row."""


def _arrow_batches(path: Path, schema) -> Iterator[Any]:
    """The `schema` columns (strings, "id" first) of a metadata file as Arrow record batches of about a hundred rows,
    streamed (memory stays flat). Raises _ArrowCannot, possibly after some batches, wherever the reading could differ
    from `iter_rows`: the caller starts again row by row."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    with open(path, "rb") as file:
        if file.seek(0, os.SEEK_END) == 0:
            return
        file.seek(-1, os.SEEK_END)
        if file.read(1) != b"\n":
            raise _ArrowCannot  # a partial last line (an interrupted append): iter_rows skips it
        file.seek(0)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    rows = 0
    try:
        # 64 KB blocks (about a hundred rows a batch): a no-op import of a million photos peaked 40 MB lower than with
        # 1 MB blocks (294-296 against 336 MB), the reader 0.2-0.6 s slower a million rows; 32 KB was worse again
        blocks = pa_json.ReadOptions(block_size=1 << 16)
        for batch in pa_json.open_json(path, parse_options=options, read_options=blocks):
            if batch.column(0).null_count:
                raise _ArrowCannot  # a row without an id
            rows += batch.num_rows
            yield batch.select(schema.names)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise _ArrowCannot from error
    if rows != lines:
        raise _ArrowCannot  # a blank line, or two objects on one line


def _grouped(batches: Iterable[Any]) -> Iterator[Any]:
    """Arrow's JSON batches (about a hundred rows each, `_arrow_batches`) joined into batches of at least STRING_BATCH
    rows: what is computed on each costs a call a batch, not a call a hundred rows."""
    import pyarrow as pa

    pending, count = [], 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= STRING_BATCH:
            yield pa.concat_batches(pending)
            pending, count = [], 0
    if pending:
        yield pa.concat_batches(pending)


def _numbered_rows(root: str | os.PathLike, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a metadata file, as iter_rows reads it (MetadataError on a bad line)."""
    for number, row, error in parse_metadata(path):
        if error:
            raise MetadataError(f"{path}:{number}: {error}; run `datagen inspect {root}` for a full report")
        yield number, row


def _string(row: dict[str, Any], column: str, path: Path, number: int) -> str | None:
    value = row.get(column)
    if value is not None and not isinstance(value, str):
        raise MetadataError(f"{path}:{number}: {column} is {value!r}, not a string")
    return value


LISTING_MIN = 1000  # a folder named by at least this many rows is listed once instead of checked file by file


def complete_mask(folder: str, table) -> np.ndarray:
    """Which rows of a `file_table` (or of any table of some of its file columns) are complete: every file they name is
    a file below `folder` (the split folder, ending in a separator). The same answer as `files_present` row by row,
    with one `os.scandir` of each folder that many rows name instead of a stat per file (on a network file system a
    stat is a round trip); a name not in the listing is stat-ed to be sure (case-insensitive file systems), as is every
    name in a folder that few rows name."""
    import pyarrow.compute as pc

    complete = np.ones(table.num_rows, dtype=bool)
    for column in (column for column in FILE_COLUMNS if column in table.column_names):
        names = table.column(column)
        if names.null_count == len(names):
            continue
        found = np.zeros(len(names), dtype=bool)
        subfolders = pc.value_counts(pc.replace_substring_regex(names, r"[^/]*$", ""))  # "im/" of "im/x.jpg"
        for subfolder, count in zip(subfolders.field("values").to_pylist(), subfolders.field("counts").to_pylist()):
            if subfolder is not None and count >= LISTING_MIN:
                listed = pc.binary_join_element_wise(subfolder, _listed_files(folder + subfolder), "")
                found |= index_in(names, listed) >= 0
        for index in np.flatnonzero(names_a_file(names) & ~found):  # few in a finished dataset: the files it is missing
            if not os.path.isfile(folder + names[int(index)].as_py()):
                complete[index] = False
    return complete


def names_a_file(names) -> np.ndarray:
    """Which rows of a `file_table` column name a file (neither null nor empty, as `files_present` counts them)."""
    import pyarrow.compute as pc

    return pc.not_equal(names, "").fill_null(False).to_numpy(zero_copy_only=False)


def named_by_id(names, ids, folder: str, suffix: str = ".png"):
    """Which of `names` (an Arrow string array) are `<folder>/<id><suffix>` with their row's id (`ids`), as the stages
    name the files they make: an Arrow bool array, a null name False."""
    import pyarrow.compute as pc

    return pc.equal(names, pc.binary_join_element_wise(f"{folder}/", ids, suffix, "")).fill_null(False)


def photo_flags(batch):
    """Which rows of a record batch are photos: their file_name and alpha_file_name both name a file (an Arrow bool
    array; `names_a_file` of each, as one)."""
    import pyarrow.compute as pc

    given = [pc.not_equal(batch.column(name), "").fill_null(False) for name in ("file_name", "alpha_file_name")]
    return pc.and_(*given)


def _listed_files(folder: str, batch: int = 65536):
    """The names of the files in `folder` (symbolic links followed, as os.path.isfile does) as an Arrow string array
    made a batch at a time (`StringColumn`); none when it is missing. A name that is not UTF-8 is left out of the
    listing: a row naming it is stat-ed (`complete_mask`)."""
    column = StringColumn()
    for names in _listed_names(folder, batch):
        column.extend(names)
    return column.finish()


def _listed_names(folder: str, batch: int = 65536) -> Iterator[list[str]]:
    """The UTF-8 names of the files in `folder` (symbolic links followed), `batch` at a time; none when it is
    missing (or vanishes while it is listed)."""
    names = []
    try:
        with os.scandir(folder or ".") as entries:
            for entry in entries:
                if entry.is_file():
                    names.append(entry.name)
                    if len(names) == batch:
                        yield [name for name in names if _utf8(name)]
                        names = []
    except (FileNotFoundError, NotADirectoryError):
        return
    yield [name for name in names if _utf8(name)]


def files_of_ids(folder: str, index: StringIndex, suffix: str, rows: np.ndarray) -> np.ndarray:
    """Which of the `rows` (numbers of the ids of `index`, a StringIndex of a split's ids) have the file
    `<folder><id><suffix>`: one listing of `folder`, a batch of names at a time, each name searched among the ids
    (neither the listing nor a column of file names is held: at a million rows, 12 bytes a row for the index); an id
    not listed is stat-ed to be sure (case-insensitive file systems), none when the folder is missing."""
    listed = np.zeros(len(index.value_set), bool)
    for names in _listed_names(folder):
        ids = arrow_strings([name[: -len(suffix)] for name in names if name.endswith(suffix)])
        found = index.find(ids)
        listed[found[found >= 0]] = True
    present = listed[rows]
    if os.path.isdir(folder):
        ids = index.value_set
        for at in np.flatnonzero(~present).tolist():  # few in a finished dataset: the files it is missing
            present[at] = os.path.isfile(f"{folder}{ids[int(rows[at])].as_py()}{suffix}")
    return present


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def read_rows(root: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """All metadata rows of a split (empty when the split does not exist). Raises MetadataError on a bad line."""
    return list(iter_rows(root, split))


def iter_samples(root: str | os.PathLike, split: str | None = None, include_rejected: bool = False) -> Iterator[Sample]:
    """The complete samples (row present and every file it names on disk) of one split or of all, without the ones
    rejected in DIR/rejected.jsonl unless `include_rejected`: every reader (pools, training, evaluation, push,
    preview) honours a rejection."""
    root = Path(root)
    rejected = {} if include_rejected else rejected_ids(root)
    for name in [split] if split else splits(root):
        for row in iter_rows(root, name):
            sample = Sample(root, name, row)
            if row["id"] in rejected:
                continue
            if sample.is_complete():
                yield sample


REJECTED = "rejected.jsonl"


def rejected_ids(root: str | os.PathLike) -> dict[str, str]:
    """{id: reason} of the samples rejected in DIR/rejected.jsonl (one {"id", "reason", "time"} a line; a later
    line for the same id undoes the one before, so an id is rejected when it has an odd number of lines)."""
    path = Path(root) / REJECTED
    if not path.is_file():
        return {}
    state: dict[str, str] = {}
    for number, row, error in parse_metadata(path):
        if error:
            raise MetadataError(f"{path}:{number}: {error}")
        if row["id"] in state:
            del state[row["id"]]
        else:
            state[row["id"]] = str(row.get("reason", ""))
    return state


def review(
    root: str | os.PathLike,
    reject: Iterable[str] = (),
    undo: Iterable[str] = (),
    reason: str = "rejected by review",
    list_all: bool = False,
) -> list[str]:
    """`datagen review`: reject and un-reject samples of `root` by id (every id must exist; nothing is deleted) and
    say what changed; with `list_all`, or nothing to change, list the rejected samples. The lines to print."""
    known = {row["id"] for split in chosen_splits(root, what="review") for row in read_rows(root, split)}
    reject, undo = list(reject), list(undo)
    for sample_id in (*reject, *undo):
        if sample_id not in known:
            raise InputError(f"{root} has no sample {sample_id!r}")
    lines = [
        f"rejected {sample_id}" if set_rejected(root, sample_id, reason) else f"{sample_id} was already rejected"
        for sample_id in reject
    ]
    for sample_id in undo:
        changed = set_rejected(root, sample_id, "undone by review", rejected=False)
        lines.append(f"undid the rejection of {sample_id}" if changed else f"{sample_id} was not rejected")
    if list_all or not (reject or undo):
        rejected = rejected_ids(root)
        lines += [f"{sample_id}\t{why}" for sample_id, why in sorted(rejected.items())]
        lines.append(f"{len(rejected)} rejected of {len(known)} samples ({Path(root) / REJECTED})")
    return lines


def set_rejected(root: str | os.PathLike, sample_id: str, reason: str, rejected: bool = True) -> bool:
    """Reject (or, `rejected=False`, un-reject) a sample by appending one line to DIR/rejected.jsonl; nothing is
    deleted or edited. Returns False when the sample already was in that state (nothing written)."""
    if (sample_id in rejected_ids(root)) == rejected:
        return False
    reason = " ".join(reason.split())  # one line: `review --list` prints one sample a line
    row = {
        "id": sample_id,
        "reason": reason if rejected else f"undo: {reason}",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    append_row(Path(root) / REJECTED, row)
    return True


def _seeded_tail(tail: str) -> bool:
    """Whether `tail` is what f"{i:07d}" gives for some i >= 0."""
    return tail.isascii() and tail.isdecimal() and (len(tail) == 7 or (len(tail) > 7 and tail[0] != "0"))


class IdSet:
    """The ids of one split in a ResumeState. Read by Arrow they stay an Arrow array (about 25 bytes an id) until one
    id is asked about (`in`, `add`): then a Python set is made of them (about 100 bytes an id). `mask` answers for a
    whole column of ids without making the set: a no-op `import` of a million photos never makes it."""

    def __init__(self, ids: set[str] | None = None, arrow=None):
        self._set, self._arrow = set() if ids is None else ids, arrow

    def _python(self) -> set[str]:
        if self._arrow is not None:
            self._set.update(iter_strings(self._arrow))
            self._arrow = None
        return self._set

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._python()

    def add(self, sample_id: str) -> None:
        self._python().add(sample_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._python())

    def __len__(self) -> int:
        """How many ids; read by Arrow, the rows that hold one (the same but in a directory where two rows share an id,
        which `datagen inspect` reports): counting them distinct would hash a million strings (56 MB)."""
        return len(self._arrow) if self._arrow is not None else len(self._set)

    def without(self, ids: set[str]) -> IdSet:
        """A new IdSet of these ids less `ids`."""
        if self._arrow is None:
            return IdSet(self._set - ids)
        import pyarrow as pa
        import pyarrow.compute as pc

        return IdSet(
            arrow=self._arrow.filter(pc.invert(pc.is_in(self._arrow, value_set=pa.array(list(ids), pa.string()))))
        )

    def seeded_indices(self, head: str) -> np.ndarray:
        """The indices i of the ids `head` + f"{i:07d}" (`seeded_id`'s) in the set, an int64 array."""
        if self._arrow is None:
            found = (int(i[len(head) :]) for i in self._set if i.startswith(head) and _seeded_tail(i[len(head) :]))
            return np.fromiter(found, np.int64)
        import pyarrow as pa
        import pyarrow.compute as pc

        tails = pc.utf8_slice_codeunits(self._arrow.filter(pc.starts_with(self._arrow, head)), len(head))
        lengths = pc.utf8_length(tails)
        exact = pc.or_(pc.equal(lengths, 7), pc.and_(pc.greater(lengths, 7), pc.invert(pc.starts_with(tails, "0"))))
        return pc.cast(tails.filter(pc.and_(pc.ascii_is_decimal(tails), exact)), pa.int64()).to_numpy()

    def mask(self, ids, where: np.ndarray | None = None) -> np.ndarray:
        """Which of `ids` (an Arrow string array, or `SampleIds`) are in the set: a bool array. With `where` (a bool
        array), only those rows are asked (the others answer False). Asked a batch of ids at a time."""
        index = None if self._arrow is None else StringIndex(self._arrow)

        def find(batch) -> np.ndarray:  # an Arrow string array
            if index is not None:
                return index.find(batch) >= 0
            return np.fromiter(map(self._set.__contains__, batch.to_pylist()), bool, len(batch))

        if where is None and not isinstance(ids, SampleIds):
            return find(ids)  # whole, not copied (the index asks it a batch at a time)
        mask = np.zeros(len(ids), bool)
        for start in range(0, len(ids), STRING_BATCH):
            part = np.ones(min(STRING_BATCH, len(ids) - start), bool) if where is None else where[start:][:STRING_BATCH]
            rows = start + np.flatnonzero(part)
            if rows.size:
                mask[rows] = find(arrow_strings(ids.take(rows)) if isinstance(ids, SampleIds) else ids.take(rows))
        return mask


@dataclass
class ResumeState:
    """What a rerun finds in a dataset directory, read once: per split, the ids of complete samples (skipped)
    and the ids that have a row (a row whose file went missing: the rerun rewrites the files, keeps the row)."""

    root: Path
    done: dict[str, IdSet]
    rowed: dict[str, IdSet]

    @classmethod
    def read(cls, root: str | os.PathLike) -> ResumeState:
        """Stream each split's rows once, keeping only their ids (a row is never held: memory grows with the ids).
        The id and file columns are parsed by Arrow where it reads as iter_rows does (`_arrow_batches`); the ids then
        stay Arrow (`IdSet`). An id with a row that names a missing file of its own (not one an in-place stage added,
        `_added_in_place`) is not done (its files are made again)."""
        root, done, rowed = Path(root), {}, {}
        for split in SPLITS:
            path = metadata_path(root, split)
            rowed[split], missing = _read_resume_ids(root, split, path) if path.is_file() else (IdSet(), set())
            # a finished run (no file missing) shares one set: add() puts an id in both (33 MB less at 10^6 rows)
            done[split] = rowed[split].without(missing) if missing else rowed[split]
        return cls(root, done, rowed)

    def is_done(self, split: str, sample_id: str) -> bool:
        return sample_id in self.done[split]

    def done_mask(self, splits, ids) -> np.ndarray:
        """Which of the samples (an Arrow string array of their splits; their ids, as one or as `SampleIds`) are done:
        a bool array."""
        import pyarrow.compute as pc

        mask = np.zeros(len(ids), bool)
        for split in SPLITS:
            mine = pc.equal(splits, split).to_numpy(zero_copy_only=False)
            if mine.all():  # one split: asked whole, no copy
                return self.done[split].mask(ids)
            if mine.any():
                mask |= self.done[split].mask(ids, where=mine)
        return mask

    def seeded_done(self, splits: Iterable[str], prefix: str, seed: int, count: int) -> np.ndarray:
        """A bool array over the indices 0..count-1 of a generated dataset: index i is done in any of `splits` (its id
        is `seeded_id(prefix, seed, i)`). The indices are read out of the done ids (`IdSet.seeded_indices`): a
        million take 8 MB, where a set of their ids took about 100."""
        done, head = np.zeros(count, bool), seeded_id(prefix, seed, 0)[:-7]
        for split in splits:
            indices = self.done[split].seeded_indices(head)
            done[indices[indices < count]] = True
        return done

    def seeded_todo(
        self, splits: Iterable[str], prefix: str, seed: int, count: int, shard: tuple[int, int]
    ) -> tuple[np.ndarray, int]:
        """(the indices of shard (I, K) of 0..count-1, those with index % K == I, not done in any of `splits`, in
        order; how many indices the shard has): what a generating stage (synth, compose) has left to make."""
        index, every = shard
        mine = np.arange(index, count, every)
        return mine[~self.seeded_done(splits, prefix, seed, count)[mine]], len(mine)

    def add(self, split: str, row: dict[str, Any]) -> None:
        """Append `row` to the split's metadata unless its id already has one (never two rows for one id)."""
        if row["id"] not in self.rowed[split]:
            append_row(metadata_path(self.root, split), row)
            self.rowed[split].add(row["id"])
        self.done[split].add(row["id"])


ARROW_MIN_BYTES = 4 << 20  # smaller metadata is read line by line: as fast there, and pyarrow's import is saved


def _read_resume_ids(root: Path, split: str, path: Path) -> tuple[IdSet, set[str]]:
    """`_resume_ids` of a split's metadata file: by Arrow from ARROW_MIN_BYTES on (about 7,000 composite rows; a
    stage on a small dataset does not import pyarrow, 0.14 s), line by line below it or where Arrow cannot."""
    if path.stat().st_size >= ARROW_MIN_BYTES:
        try:
            return _arrow_resume_ids(root, split, path)
        except _ArrowCannot:
            pass
    return _resume_ids(root, split, iter_rows(root, split))


def _arrow_resume_ids(root: Path, split: str, path: Path) -> tuple[IdSet, set[str]]:
    """`_resume_ids` of a metadata file whose id and file columns Arrow reads (`_arrow_batches`: may raise
    _ArrowCannot), a column of a batch at a time: a million rows in about 7 s here, most of it a stat per file. The
    ids stay an Arrow array."""
    import pyarrow as pa

    own = [column for column in FILE_COLUMNS if column not in ADDED_IN_PLACE]  # a row's own files (_added_in_place)
    derived = {FILE_KINDS[kind][0]: marker for kind, marker in DERIVED_FROM_ALPHA.items()}
    schema = pa.schema([(column, pa.string()) for column in ("id", *own, *derived.values())])
    folder, ids, missing, is_file = f"{root}{os.sep}{split}{os.sep}", StringColumn(), set(), os.path.isfile
    for batch in _arrow_batches(path, schema):
        ids.extend_array(batch.column(0))  # copied out: the batch is freed, no small array a batch is kept
        for own_column in own:
            column = batch.column(own_column)
            if column.null_count == len(column):
                continue
            names = column.to_pylist()
            marker = batch.column(derived[own_column]) if own_column in derived else None
            if marker is not None and marker.null_count < len(marker):  # a derived file (marked) is not the row's own
                names = [None if mark is not None else name for name, mark in zip(names, marker.to_pylist())]
            gone = [row for row, name in enumerate(names) if name and not is_file(folder + name)]  # few, not all ids
            missing.update(batch.column(0).take(gone).to_pylist() if gone else ())
    return IdSet(arrow=ids.finish()), missing


def _resume_ids(root: Path, split: str, rows: Iterable[dict[str, Any]]) -> tuple[IdSet, set[str]]:
    """(ids that have a row, ids whose row names a file of its own, not ADDED_IN_PLACE, that is not on disk)."""
    folder, rowed, missing = f"{root}{os.sep}{split}{os.sep}", set(), set()
    for row in rows:
        rowed.add(row["id"])
        added = _added_in_place(row)
        if not files_present(folder, {key: value for key, value in row.items() if key not in added}):
            missing.add(row["id"])
    return IdSet(rowed), missing


def _added_in_place(row: dict[str, Any]) -> tuple[str, ...]:
    """The file columns of `row` that an in-place stage added (ADDED_IN_PLACE)."""
    marked = tuple(FILE_KINDS[kind][0] for kind, marker in DERIVED_FROM_ALPHA.items() if row.get(marker) is not None)
    return ADDED_IN_PLACE + marked


@contextmanager
def resume_run(
    root: str | os.PathLike, shard: tuple[int, int] = (0, 1), overwrite: bool = False, in_place: bool = False
) -> Iterator[ResumeState | None]:
    """How every writing stage starts: lock the output (this shard), start over if asked (`--overwrite`), delete a
    killed run's temporary files, and read what is done. Yields the ResumeState; the lock is held until the end.
    `in_place`: the stage edits the dataset it reads (foreground, refine), so it has no --out to suggest, and it asks
    its own questions of the rows (which fg/ files exist): None is yielded, not a ResumeState that no one reads (14 s
    and hundreds of MB at a million rows)."""
    with dataset_lock(root, shard, in_place):
        if overwrite:
            reset_dataset(root)
        remove_stale_temporaries(root)
        yield None if in_place else ResumeState.read(root)


class BusyError(UserError, RuntimeError):
    """Another run holds the lock of a dataset directory (or of the same shard of it)."""


def lock_name(shard: tuple[int, int] = (0, 1)) -> str:
    index, count = shard
    return ".lock" if count == 1 else f".lock.shard-{index}-of-{count}"


@contextmanager
def dataset_lock(root: str | os.PathLike, shard: tuple[int, int] = (0, 1), in_place: bool = False) -> Iterator[None]:
    """Hold an advisory lock on `root` (one per shard) while a run writes there; BusyError names the holder.

    The lock file `root/.lock` (`.lock.shard-I-of-K`) holds the writer's pid while it runs and is emptied when
    it ends; the kernel drops the lock when the process dies, so a killed run never blocks the rerun.
    """
    root = Path(root)
    path = root / lock_name(shard)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:  # a read-only or forbidden output: one line naming it
        raise output_error(path, error) from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        what = "" if shard[1] == 1 else f" (shard {shard[0]}/{shard[1]})"
        elsewhere = "" if in_place else ", or write elsewhere with --out"
        raise BusyError(
            f"{root}{what} is being written by another run (pid {holder}, lock {path}): wait for it to end{elsewhere}"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the lock


def _drop_partial_tail(fd: int) -> None:
    """Truncate an interrupted last line (bytes after the last newline) so the next row starts clean."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end != size:
        os.ftruncate(fd, end)


def _open_locked(path: str | os.PathLike) -> int:
    """A descriptor of `path` opened for appending and exclusively locked. When update_rows replaced the file while we
    waited for the lock, the lock is on the old file: open the new one, so no appended row is lost."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:  # a read-only or forbidden folder: one line naming the file
            raise output_error(path, error) from error
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def append_row(path: str | os.PathLike, row: dict[str, Any]) -> None:
    """Append one row to a metadata.jsonl under an exclusive lock (several workers or shards may share it)."""
    append_rows(path, [row])


def append_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Append `rows` to a JSON-lines file in one write under its exclusive lock, then sync (once for all of them)."""
    if not rows:
        return
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = _open_locked(path)
    try:
        _drop_partial_tail(fd)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock


def write_sample_files(
    root: str | os.PathLike,
    split: str,
    sample_id: str,
    *,
    alpha: np.ndarray | None,
    image: np.ndarray | None = None,
    image_bytes: bytes | None = None,
    image_format: str = "jpg",
    foreground: np.ndarray | None = None,
    trimap: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    refine_trimap: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
    jpeg_quality: int = 95,
) -> dict[str, Any]:
    """Write the files of one sample (each atomically) and return its metadata row, not yet appended.

    `write_sample` appends the row too; a pool of workers uses this and lets one process append the rows
    in a fixed order.

    alpha: HxW uint8 matte (soft values kept). image: HxWx3 uint8 RGB, or `image_bytes` already encoded in
    `image_format` ('jpg' or 'png'; copied byte for byte). foreground: HxWx4 uint8 RGBA, straight alpha.
    trimap: HxW uint8 in {0, 128, 255}. A foreground pool passes `foreground` and `alpha` only; a
    background set (people-free images) passes `image` with `alpha=None`.
    `metadata` holds everything else the row records (source, license, prompt, seed, parameters...).
    """
    check_split(split)
    if not ID_PATTERN.match(sample_id):
        raise ValueError(f"invalid id {sample_id!r}: use only [A-Za-z0-9._-], starting with a letter or digit")
    if alpha is None and (image is None or foreground is not None or trimap is not None):
        raise ValueError("only a background sample (an image, nothing else) goes without an alpha")
    if alpha is not None and (alpha.dtype != np.uint8 or alpha.ndim != 2):
        raise ValueError(f"alpha must be HxW uint8, got {alpha.dtype} {alpha.shape}")
    if image is None and image_bytes is None and foreground is None:
        raise ValueError("a sample needs an image (or image_bytes) or a foreground")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    height, width = (alpha if alpha is not None else image).shape[:2]
    planes = {"foreground": foreground, "trimap": trimap, "mask": mask, "refine_trimap": refine_trimap}
    for name, array in (("image", image), *planes.items()):
        if array is not None and array.shape[:2] != (height, width):
            raise ValueError(f"{name} is {array.shape[:2]}, alpha is {(height, width)}: sizes must match")

    split_dir = Path(root) / split
    files: dict[str, tuple[str, bytes]] = {}
    if image_bytes is None and image is not None:
        image_bytes = encode_jpeg(image, jpeg_quality) if image_format == "jpg" else encode_png(image)
    if image_bytes is not None:
        files["image"] = (f"im/{sample_id}.{image_format}", image_bytes)
    if alpha is not None:
        files["alpha"] = (plane_name("alpha", sample_id), encode_png(alpha))
    for kind, array in planes.items():
        if array is not None:
            files[kind] = (plane_name(kind, sample_id), encode_png(array))

    row: dict[str, Any] = {"id": sample_id}
    for kind, (relative, data) in files.items():
        write_atomic(split_dir / relative, data)
        row[FILE_KINDS[kind][0]] = relative
    row.update({"width": width, "height": height})
    row.update(metadata or {})
    return row


def write_sample(root: str | os.PathLike, split: str, sample_id: str, **kwargs: Any) -> dict[str, Any]:
    """Write one sample, files then metadata row, and return the row. Arguments as `write_sample_files`."""
    row = write_sample_files(root, split, sample_id, **kwargs)
    append_row(metadata_path(root, split), row)
    return row


class _Unchanged(Exception):
    """No row changed: update_rows keeps the file as it was."""


def update_rows(root: str | os.PathLike, split: str, update) -> int:
    """Rewrite a split's metadata.jsonl with `update(row) -> dict of new values` (None: remove the key) applied to every
    row, atomically and under the append lock (appenders wait; readers see the old file or the new one). Returns how
    many rows changed; the file is replaced only when one did. For stages that add columns to every row of a split
    (foreground, refine): rows stay uniform. The rows are streamed (read, updated and written one at a time): memory
    stays flat at a million rows."""
    path = metadata_path(root, split)
    changed = 0

    def lines() -> Iterator[bytes]:
        nonlocal changed
        for row in iter_rows(root, split):
            values = update(row)
            changed += any(row.get(key) != value or (value is None and key in row) for key, value in values.items())
            row.update(values)
            for key in [key for key, value in values.items() if value is None]:
                del row[key]
            yield (json.dumps(row, ensure_ascii=False) + "\n").encode()
        if not changed:
            raise _Unchanged  # write_atomic removes its temporary file and leaves the metadata as it was

    fd = _open_locked(path)
    try:
        write_atomic(path, lines())
    except _Unchanged:
        pass
    finally:
        os.close(fd)
    return changed


def replace_alpha(sample: Sample, data: bytes) -> list[str]:
    """Give `sample` a new alpha (PNG bytes, written atomically) and delete first what was derived from the old one
    (DERIVED_FROM_ALPHA: fg/ of `datagen foreground`), so no file made from the old alpha outlives it, even after a
    kill between the two. Returns the kinds deleted; `forget_derived` then takes their columns out of the rows.

    Derived are the file a row names with the kind's marker, and `<folder>/<id>.png` where the row names no file of
    the kind: forget_derived drops the columns from every row of a split once one such file goes, and leaves the
    others' files (still right); the stage that made them takes one there as done. A source's own file (named, no
    marker) is never touched."""
    removed = []
    for kind, marker in DERIVED_FROM_ALPHA.items():
        if marker in sample.row:
            path = sample.path(kind)
        elif not sample.row.get(FILE_KINDS[kind][0]):  # its columns dropped by forget_derived (or a stage was killed)
            path = sample.root / sample.split / plane_name(kind, sample.id)
        else:
            continue
        if path is not None and path.is_file():
            path.unlink()
            removed.append(kind)
    write_atomic(sample.path("alpha"), data)
    return removed


def forget_derived(root: str | os.PathLike, split: str, index: StringIndex | None = None) -> int:
    """Once a derived file of a row is gone (replace_alpha deleted it), drop that kind's columns from every row of the
    split, so rows stay uniform and complete; files still there stay, and the stage that made them (`datagen
    foreground`) makes only the missing ones and gives the rows their columns again. Returns rows changed. A million
    rows are checked by one listing of the kind's folder (`_derived_present`), not a dict or a stat a row. `index`: a
    StringIndex of the split's ids in file order that the caller holds (refine's), used instead of a second column of
    the ids and its index (about 40 MB at 10^6 rows); rows that are not those ids, in that order, are read on their
    own."""
    stale = []
    for kind, marker in DERIVED_FROM_ALPHA.items():
        column, subfolder = FILE_KINDS[kind]
        if not _derived_present(root, split, column, marker, subfolder, index):
            stale += [column, marker]
    if not stale:
        return 0
    return update_rows(root, split, lambda row: {key: None for key in stale if key in row})


def _derived_present(
    root: str | os.PathLike, split: str, column: str, marker: str, subfolder: str, index: StringIndex | None = None
) -> bool:
    """Whether every row that has `marker` has the file its `column` names. The rows are read a batch at a time and
    reduced to the ids of those whose file is `<subfolder>/<id>.png`, as the stage names it (found by one listing of
    the folder, `files_of_ids`), and the few other names (stat-ed). With `index` (the split's ids, in file order), the
    rows are reduced to a flag a row of `index` while each batch's ids are the index's at its rows; from the first
    batch that differs on, to ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    usual, other = StringColumn(), []
    flagged = None  # with `index`: the usual rows, by number, while aligned (made at every reading's first batch)

    def keep(batch, start: int):
        nonlocal flagged
        if start == 0:  # the first batch of a reading (Arrow's, or the row by row one that replaces it)
            usual.finish(), other.clear()
            flagged = None if index is None else np.zeros(len(index.value_set), bool)
        ids, names = batch.column("id"), batch.column(column)
        marked = pc.is_valid(batch.column(marker))
        named = pc.and_(marked, named_by_id(names, ids, subfolder))
        if flagged is not None and not index.value_set.slice(start, len(ids)).equals(ids):
            usual.extend_array(index.value_set.filter(pa.array(flagged)))  # the rows so far, as ids from here on
            flagged = None
        if flagged is None:
            usual.extend_array(ids.filter(named))
        else:
            flagged[start : start + len(ids)] = named.to_numpy(zero_copy_only=False)
        other.extend(names.filter(pc.and_(marked, pc.invert(named))).to_pylist())
        return pa.record_batch([pa.array([], pa.bool_())], names=["none"])

    file_table(root, split, (column, marker), reduce=keep)
    folder = os.path.join(str(Path(root) / split), "")
    if not all(name and os.path.isfile(folder + name) for name in other):
        return False
    if flagged is not None:
        return bool(files_of_ids(f"{folder}{subfolder}/", index, ".png", np.flatnonzero(flagged)).all())
    ids = usual.finish()
    return bool(files_of_ids(f"{folder}{subfolder}/", StringIndex(ids), ".png", np.arange(len(ids))).all())


def chosen_splits(root: str | os.PathLike, requested: Iterable[str] = (), what: str = "this command") -> list[str]:
    """The splits a stage (`what`) works on: those requested, else every split present; an error when there is none."""
    chosen = list(requested) or splits(root)
    if not chosen:
        raise MissingInputError(no_splits(root, what))
    return chosen


def write_skipped(
    root: str | os.PathLike, skipped: Iterable[Skip], shard: tuple[int, int] = (0, 1), name: str = "skipped.jsonl"
) -> Counter:
    """Write DIR/skipped.jsonl (or `name`: every skip with its path and reason); returns the count per reason class.

    The reason class is the reason up to its first ':' or ' (' (the particulars: sizes, decoder messages).
    """
    skipped = list(skipped)
    lines = "".join(json.dumps({"path": skip.path, "reason": skip.reason}) + "\n" for skip in skipped)
    write_atomic(Path(root) / shard_file_name(name, shard), lines.encode())
    return Counter(re.split(r":| \(", skip.reason, maxsplit=1)[0] for skip in skipped)


def reset_dataset(root: str | os.PathLike) -> None:
    """Remove what our stages put in `root` (split folders, run.json, README.md, LICENSE.md, skipped.jsonl, the
    in-place stages' records, shard records) and rejected.jsonl: `--overwrite`. A rejection judged the content it saw;
    new content under the same (seeded) ids must not inherit it, so it goes with the content (and the log says so).

    Anything else in the folder is left alone, so a wrong --out never deletes unrelated files.
    """
    root = Path(root)
    if (root / REJECTED).is_file():
        log.warning("--overwrite: the rejections in %s go with the content they judged", root / REJECTED)
        (root / REJECTED).unlink()
    for split in SPLITS:
        if (root / split).is_dir():
            shutil.rmtree(root / split)
    for name in ("run.json", "README.md", "LICENSE.md", "skipped.jsonl", "foreground.json", "refine.json",
                 "foreground-skipped.jsonl", "refine-skipped.jsonl", "refine-soft.jsonl"):  # fmt: skip
        (root / name).unlink(missing_ok=True)
    for path in root.glob("*.shard-*-of-*.*"):
        path.unlink()
