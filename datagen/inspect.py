"""`datagen inspect`: validate a dataset directory against the contract and summarise it.

Errors violate the contract (a sample a trainer would choke on or silently misread); warnings do not
(orphan files an interrupted run left behind, a missing dataset card). Every problem names its file.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from datagen.io import ImageReadError, open_image
from datagen.parallel import bounded_map, process_pool, runs_in_workers
from datagen.records import (
    FILE_KINDS,
    ID_PATTERN,
    METADATA,
    REJECTED,
    SPLITS,
    MetadataError,
    Sample,
    parse_metadata,
    rejected_ids,
)

runs_in_workers(__name__)  # its functions run in pool workers

TRIMAP_VALUES = (0, 128, 255)


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the dataset root
    message: str
    severity: str = "error"  # or "warning"


@dataclass
class SampleCheck:
    """What checking one sample's files found: problems, its size, and its alpha histogram."""

    problems: list[Problem] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (width, height)
    alpha_counts: tuple[int, int, int] | None = None  # pixels at 0, at 255, in between


@dataclass
class Report:
    root: str
    counts: dict[str, int] = field(default_factory=dict)
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)
    alpha_pixels: dict[str, int] = field(default_factory=lambda: {"transparent": 0, "opaque": 0, "soft": 0})
    empty_alpha: list[str] = field(default_factory=list)
    full_alpha: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    rejected: int = 0  # rows rejected in rejected.jsonl: left out of the counts and statistics, still validated

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        total = sum(self.alpha_pixels.values()) or 1
        return {
            "root": self.root,
            "ok": self.ok,
            "counts": self.counts,
            "rejected": self.rejected,
            "sources": self.sources,
            "sizes": {f"{w}x{h}": n for (w, h), n in self.sizes.most_common()},
            "alpha_share": {key: value / total for key, value in self.alpha_pixels.items()},
            "empty_alpha": self.empty_alpha,
            "full_alpha": self.full_alpha,
            "errors": len(self.errors),
            "warnings": len(self.problems) - len(self.errors),
            "problems": [p.__dict__ for p in self.problems],
        }

    def format_text(self, max_ids: int = 10) -> str:
        data = self.to_dict()
        verdict = "OK" if self.ok else "CONTRACT VIOLATED"
        lines = [
            f"{self.root}: {sum(self.counts.values())} samples in {len(self.counts)} split(s): {verdict} "
            f"({data['errors']} errors, {data['warnings']} warnings)"
        ]
        for split, count in self.counts.items():
            sources = ", ".join(f"{name} {n}" for name, n in sorted(self.sources[split].items()))
            lines.append(f"  {split:<11}{count:>8}   sources: {sources or '-'}")
        if self.rejected:
            lines.append(f"  rejected {self.rejected:>8}   (rejected.jsonl: left out of the counts and statistics)")
        if self.sizes:
            common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(3))
            areas = sorted(self.sizes, key=lambda s: s[0] * s[1])
            lines.append(
                f"image sizes: {len(self.sizes)} distinct; most common {common}; "
                f"smallest {areas[0][0]}x{areas[0][1]}, largest {areas[-1][0]}x{areas[-1][1]}"
            )
        share = data["alpha_share"]
        lines.append(
            f"alpha pixels: transparent {share['transparent']:.1%}, opaque {share['opaque']:.1%}, "
            f"soft {share['soft']:.1%}"
        )
        for label, ids in (("empty (all 0)", self.empty_alpha), ("full (all 255)", self.full_alpha)):
            shown = ", ".join(ids[:max_ids]) + (" ..." if len(ids) > max_ids else "")
            lines.append(f"alpha {label}: {len(ids)}" + (f": {shown}" if ids else ""))
        if self.problems:
            lines.append("problems:")
            lines += [f"  {p.severity.upper():<8}{p.path}: {p.message}" for p in self.problems]
        return "\n".join(lines)


ROW_SHAPES = (  # the kinds of image a row names: a photo, a photo with its estimated colour, a foreground, a background
    {"image", "alpha"},
    {"image", "alpha", "foreground"},
    {"foreground", "alpha"},
    {"image"},
)


def check_image(source, relative: str, kind: str, check: SampleCheck) -> np.ndarray | None:
    """Decode one image (a path, or a file object of a Parquet cell's bytes) fully; record a problem and return None
    when it is unreadable or of the wrong kind."""
    try:
        image = open_image(source)
    except ImageReadError as error:
        check.problems.append(Problem(relative, error.reason))
        return None
    expected = {"image": "RGB", "foreground": "RGBA"}.get(kind, "L")  # alpha, trimaps and mask: one channel
    if kind != "image" and image.format != "PNG":
        check.problems.append(Problem(relative, f"{kind} must be a lossless PNG, found {image.format}"))
    if image.mode != expected:
        what = "one 8-bit channel" if expected == "L" else f"8-bit {expected}"
        check.problems.append(Problem(relative, f"{kind} must be {what}, found mode {image.mode}"))
        return None
    return np.asarray(image)


def _check_job(root: str, split: str, row: dict[str, Any]) -> tuple[tuple[str, dict[str, Any]], SampleCheck]:
    return (split, row), check_sample(root, split, row)


def check_sample(root: str, split: str, row: dict[str, Any]) -> SampleCheck:
    """Check the files of one metadata row: existence, decodability, mode, sizes, trimap values."""
    sample, check = Sample(Path(root), split, row), SampleCheck()
    kinds = {kind for kind in ("image", "alpha", "foreground") if FILE_KINDS[kind][0] in row}
    if kinds not in ROW_SHAPES:
        check.problems.append(
            Problem(
                f"{split}/{METADATA}",
                f"row {row['id']!r} names {sorted(FILE_KINDS[kind][0] for kind in kinds)}: a row is a photo "
                "(file_name, alpha_file_name, and foreground_file_name where its colour was estimated), a foreground "
                "(foreground_file_name, alpha_file_name) or a background (file_name alone)",
            )
        )
    present = {kind: sample.path(kind) for kind in FILE_KINDS if sample.path(kind)}
    missing = [kind for kind, path in present.items() if not path.is_file()]
    if present and len(missing) == len(present):
        check.problems.append(
            Problem(
                f"{split}/{METADATA}",
                f"row {row['id']!r} points at nothing: " + ", ".join(row[FILE_KINDS[k][0]] for k in missing),
            )
        )
        return check
    arrays, names = {}, {kind: f"{split}/{row[FILE_KINDS[kind][0]]}" for kind in present}
    for kind, path in present.items():
        if kind in missing:
            check.problems.append(Problem(names[kind], f"missing {kind} file (named by row {row['id']!r})"))
            continue
        array = check_image(path, names[kind], kind, check)
        if array is not None:
            arrays[kind] = array
    stale_fix = f"run `datagen foreground {root} --overwrite`"
    check_planes(arrays, names, row, check, row.get("alpha_file_name"), stale_fix)
    return check


def check_planes(
    arrays: dict[str, np.ndarray],
    names: dict[str, str],
    row: dict[str, Any],
    check: SampleCheck,
    alpha_name: str | None,
    stale_fix: str,
    row_sizes: bool = True,
) -> None:
    """What one sample's decoded images (`arrays`, by kind; `names`: where each is, for problems) must hold together:
    the sizes of each other and (`row_sizes`) of the row's width and height, trimap values, a foreground whose alpha
    is the alpha's (`stale_fix`: what to do where not); records its size and alpha histogram in `check`."""
    reference = "image" if "image" in arrays else "foreground"
    if reference in arrays:
        height, width = arrays[reference].shape[:2]
        check.size = (width, height)
        if row_sizes and (row.get("width"), row.get("height")) != (width, height):
            check.problems.append(
                Problem(names[reference], f"is {width}x{height}, row says {row.get('width')}x{row.get('height')}")
            )
        for kind, array in arrays.items():
            if array.shape[:2] != (height, width):
                check.problems.append(
                    Problem(
                        names[kind], f"{kind} is {array.shape[1]}x{array.shape[0]}, {reference} is {width}x{height}"
                    )
                )
    for kind in ("trimap", "refine_trimap"):
        if kind in arrays and not np.isin(arrays[kind], TRIMAP_VALUES).all():
            check.problems.append(Problem(names[kind], f"{kind} has values other than 0/128/255"))
    if "foreground" in arrays and "alpha" in arrays and arrays["foreground"].shape[:2] == arrays["alpha"].shape:
        differ = int(np.count_nonzero(arrays["foreground"][..., 3] != arrays["alpha"]))
        if differ:
            check.problems.append(
                Problem(
                    names["foreground"],
                    f"its alpha differs from {alpha_name} in {differ} pixels (a stale foreground: the alpha changed "
                    f"after it was made); {stale_fix}",
                )
            )
    if "alpha" in arrays:
        alpha = arrays["alpha"]
        zeros, ones = int(np.count_nonzero(alpha == 0)), int(np.count_nonzero(alpha == 255))
        check.alpha_counts = (zeros, ones, alpha.size - zeros - ones)


def _orphans(root: Path, split: str, referenced: set[str]) -> Iterator[Problem]:
    """Files in the split's folders that no row names (`referenced`: every file name the rows name)."""
    for _, folder in FILE_KINDS.values():
        directory = root / split / folder
        if not directory.is_dir():
            continue
        for entry in sorted(os.listdir(directory)):
            relative = f"{folder}/{entry}"
            if entry.endswith(".tmp"):
                yield Problem(f"{split}/{relative}", "temporary file of an interrupted write", "warning")
            elif relative not in referenced:
                yield Problem(f"{split}/{relative}", "orphan file: no metadata row names it", "warning")


def _rows(root: Path, split: str, report: Report | None) -> Iterator[dict[str, Any]]:
    """The split's rows with a valid, unique id, streamed; bad lines and duplicates become problems of `report`
    (None: a second pass, which passes over them without reporting them again)."""
    seen: dict[str, int] = {}
    for number, row, error in parse_metadata(root / split / METADATA):
        where = f"{split}/{METADATA}:{number}"
        if error:
            problem = Problem(where, error)
        elif not ID_PATTERN.match(row["id"]):
            problem = Problem(where, f"id {row['id']!r} has characters outside [A-Za-z0-9._-]")
        elif row["id"] in seen:
            problem = Problem(where, f"duplicate id {row['id']!r} (first on line {seen[row['id']]})")
        else:
            seen[row["id"]] = number
            yield row
            continue
        if report is not None:
            report.problems.append(problem)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(type(value), "other")


class SchemaCheck:
    """Uniform rows, checked as they stream by: every row of the dataset has the same keys, never null, each key of one
    JSON type (datasets.load_dataset infers one schema from the first rows of every split and refuses splits that
    differ). Holds per key its types and counts, never the rows."""

    def __init__(self) -> None:
        self.rows = 0
        self.types: dict[str, dict[str, str]] = {}  # key -> JSON type -> first row with it
        self.counts: Counter = Counter()  # key -> rows that have it
        self.first_lacking: dict[str, str] = {}  # key -> first row without it (when there is one)
        self.first_row = ""

    def add(self, split: str, row: dict[str, Any]) -> None:
        where = f"{split}/{row['id']}"
        self.first_row = self.first_row or where
        for key, value in row.items():
            if key not in self.types and self.rows:  # every row before this one lacks the new key
                self.first_lacking.setdefault(key, self.first_row)
            self.types.setdefault(key, {}).setdefault(_json_type(value), where)
            self.counts[key] += 1
        if len(row) < len(self.types):
            for key in self.types:
                if key not in row:
                    self.first_lacking.setdefault(key, where)
        self.rows += 1

    def problems(self) -> list[Problem]:
        problems = []
        for key, types in self.types.items():
            if self.counts[key] < self.rows:
                problems.append(
                    Problem(
                        METADATA,
                        f"column {key!r} is missing from {self.rows - self.counts[key]} row(s), first "
                        f"{self.first_lacking[key]}: every row needs the same columns (datasets.load_dataset)",
                    )
                )
            if "null" in types:
                problems.append(
                    Problem(
                        METADATA,
                        f"column {key!r} is null in row {types['null']}: use a typed empty "
                        "value instead (datasets.load_dataset infers one type per column)",
                    )
                )
            if len(set(types) - {"null"}) > 1:
                shown = ", ".join(f"{kind} ({where})" for kind, where in types.items())
                problems.append(Problem(METADATA, f"column {key!r} mixes types: {shown}"))
        return problems


def inspect_dataset(root: str | os.PathLike, *, workers: int = 1, progress: bool = False) -> Report:
    """Validate every split of the dataset directory `root`, or of the Parquet shards that `datagen push` writes (a
    folder of them, or a Hub dataset `hf://user/name`: `datagen.shards.inspect_shards`); decode every image (in
    `workers` processes)."""
    from datagen.shards import inspect_shards, is_shard_location  # it builds on this module

    if is_shard_location(str(root)):
        return inspect_shards(str(root), workers=workers, progress=progress)
    root = Path(root)
    report = Report(str(root))
    for name in ("README.md", "run.json"):
        if not (root / name).is_file():
            report.problems.append(Problem(name, "missing (dataset card / provenance)", "warning"))
    try:
        rejected = rejected_ids(root)
    except MetadataError as error:  # reported like any broken file; the rows are still checked
        report.problems.append(Problem(REJECTED, str(error).split(": ", 1)[-1]))
        rejected = {}
    schema, present = SchemaCheck(), []
    for split in SPLITS:  # first pass, streamed: ids, counts, sources, schema, the files the rows name
        if not (root / split / METADATA).is_file():
            if (root / split).is_dir():
                report.problems.append(Problem(f"{split}/{METADATA}", f"split folder without {METADATA}"))
            continue
        present.append(split)
        count, sources, referenced = 0, Counter(), set()
        for row in _rows(root, split, report):
            schema.add(split, row)
            referenced.update(row[key] for key, _ in FILE_KINDS.values() if isinstance(row.get(key), str))
            if row["id"] in rejected:
                report.rejected += 1
                continue
            count += 1
            sources[str(row.get("source", "unknown"))] += 1
        report.counts[split], report.sources[split] = count, dict(sources)
        report.problems.extend(_orphans(root, split, referenced))
    report.problems.extend(schema.problems())
    if not report.counts:
        report.problems.append(Problem(".", f"no split folder ({', '.join(SPLITS)}) with a {METADATA}"))

    def jobs() -> Iterator[tuple[str, dict[str, Any]]]:  # second pass: the rows to decode, streamed again
        for split in present:
            yield from ((split, row) for row in _rows(root, split, None) if row["id"] not in rejected)

    def checks() -> Iterator[tuple[tuple[str, dict[str, Any]], SampleCheck]]:
        if workers <= 1:
            yield from ((job, check_sample(str(root), *job)) for job in jobs())
            return
        with process_pool(workers) as pool:
            yield from bounded_map(pool, _check_job, ((str(root), *job) for job in jobs()), 64 * workers)

    total = sum(report.counts.values())
    results = ((f"{split}/{row['id']}", check) for (split, row), check in checks())
    tally(report, tqdm(results, total=total, desc="inspect", unit="sample", disable=not progress))
    return report


def tally(report: Report, results: Iterable[tuple[str, SampleCheck]]) -> None:
    """Add each sample's check (`split/id`, its SampleCheck) to `report`: its problems, size and alpha histogram."""
    for label, check in results:
        report.problems.extend(check.problems)
        if check.size:
            report.sizes[check.size] += 1
        if check.alpha_counts:
            zeros, ones, soft = check.alpha_counts
            for key, value in zip(("transparent", "opaque", "soft"), check.alpha_counts):
                report.alpha_pixels[key] += value
            if zeros + ones + soft == zeros:
                report.empty_alpha.append(label)
            elif zeros + ones + soft == ones:
                report.full_alpha.append(label)
