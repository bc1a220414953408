"""Error by slice: `datagen slices EVAL.json` joins an evaluation's per-sample measures with the rows it scored.

Each evaluated sample falls into one value of each of its families:
- person attributes (`attribute:hair`, `attribute:clothing`, ...): a synth row's `attributes`, or for a composite
  those of the foreground it names (found through the composites' run.json, which lists their pools);
- compose families, from a composite's recorded `params`: `scale` (the person's height in the frame), `occluders`,
  `extra_people`, `lighting_shift`, `shadow`, `background_defocus`, each degradation, `foreground` (the person's
  id) and `photo_source` (the foreground row's `source`);
- for any row: `source` and `subset`.
A slice is one (family, value): its n, the mean of every measure, and `ratio`, its mean MAE over the overall mean.
Slices with fewer than `min_n` samples are listed apart, never ranked. The JSON (`--json`) is what
`datagen synth --focus` and `datagen compose --focus` read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError, UserError
from datagen.records import iter_rows, parse_spec, splits
from datagen.shards import is_shard_location, shard_rows

log = logging.getLogger(__name__)

MIN_N = 20  # a slice with fewer samples is reported as too small to rank
SCALE_BINS = ((0.4, "small (< 0.4 of the frame)"), (0.8, "medium (0.4-0.8)"), (1.0, "large (0.8-1.0)"))
SHIFT_BINS = ((0.1, "mild (< 0.1)"), (0.25, "medium (0.1-0.25)"))


class SlicesError(InputError):
    """An evaluation report that cannot be sliced (not a report, no per-sample measures, data gone)."""


@dataclass
class Slice:
    family: str
    value: str
    n: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, measures: dict[str, float]) -> None:
        self.n += 1
        for key, value in measures.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        return {key: total / self.n for key, total in self.sums.items()}


def _bin(value: float, bins: tuple[tuple[float, str], ...], last: str) -> str:
    for limit, name in bins:
        if value < limit:
            return name
    return last


def composite_families(params: dict[str, Any]) -> dict[str, str]:
    """The compose families of one composite, from its drawn (or recorded) params."""
    lighting, degradations = params.get("lighting") or {}, params.get("degradations") or {}
    shift = max(abs(lighting.get("brightness", 1.0) - 1.0), lighting.get("gradient", 0.0))
    families = {
        "scale": _bin(params["placement"]["height"], SCALE_BINS, "cut by the frame (> 1.0)"),
        "occluders": "yes" if params.get("occluders") else "none",
        "extra_people": "yes" if params.get("extra_people") else "none",
        "lighting_shift": _bin(shift, SHIFT_BINS, "strong (>= 0.25)"),
        "shadow": "yes" if params.get("shadow") else "none",
        "background_defocus": "yes" if (params.get("bg") or {}).get("defocus_radius", 0) > 0 else "none",
        "degradation:motion_blur": "yes" if degradations.get("motion_length", 0) > 0 else "none",
        "degradation:grain": "yes" if degradations.get("grain", 0) > 0 else "none",
        "degradation:grayscale": "yes" if degradations.get("grayscale") else "none",
        "degradation:jpeg": "yes" if degradations.get("jpeg_quality", 0) > 0 else "none",
    }
    return families


def attribute_families(row: dict[str, Any]) -> dict[str, str]:
    """`attribute:NAME` -> value of a synth row's recorded prompt attributes (none for rows without them)."""
    attributes = row.get("attributes")
    if isinstance(attributes, str):
        attributes = json.loads(attributes or "{}")
    return {f"attribute:{name}": str(value) for name, value in (attributes or {}).items()}


class ForegroundIndex:
    """Rows of foreground pools by the id compose gives their people (`<pool folder name>:<sample id>`), read lazily
    from `specs` (DIR[:SPLIT]; a relative DIR is also looked for beside `near`)."""

    def __init__(self, specs: list[str], near: Path | None = None):
        self.specs, self.near, self.rows, self.missing = specs, near, None, []

    @classmethod
    def of_composites(cls, composites: Path) -> ForegroundIndex:
        """The pools a composites directory was made from, as its run.json names them."""
        try:
            record = json.loads((composites / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            return cls([])
        return cls([str(spec) for spec in record.get("config", {}).get("foregrounds", [])], composites.parent)

    def _pools(self) -> Iterator[tuple[str, Path, str | None]]:
        for spec in self.specs:
            path, split, _ = parse_spec(str(spec), "--fg")
            bases = [Path(path)] + ([self.near / path] if self.near else [])
            for base in bases:
                if base.is_dir():
                    yield base.name, base, split
                    break
            else:
                self.missing.append(str(path))

    def get(self, foreground_id: str) -> dict[str, Any] | None:
        if self.rows is None:
            self.rows = {}
            for name, root, split in self._pools():
                for split_name in [split] if split else splits(root):
                    for row in iter_rows(root, split_name):
                        # only what the families read: a pool's rows travel to every compose worker with --focus
                        kept = {key: row[key] for key in ("source", "attributes") if key in row}
                        self.rows[f"{name}:{row['id']}"] = kept
            if self.missing:
                log.warning("foreground pools not found (their attributes are left out): %s", ", ".join(self.missing))
        return self.rows.get(foreground_id)


def person_families(foreground_id: str, foregrounds: ForegroundIndex) -> dict[str, str]:
    """The families a composite's person brings: the person itself (`foreground`), its row's source and attributes."""
    families = {"foreground": foreground_id}
    person = foregrounds.get(foreground_id)
    if person is not None:
        families["photo_source"] = str(person.get("source", "unknown"))
        families.update(attribute_families(person))
    return families


def families_of(row: dict[str, Any], foregrounds: ForegroundIndex) -> dict[str, str]:
    """Every family -> value of one evaluated row."""
    families = {"source": str(row.get("source", "unknown"))}
    if row.get("subset"):
        families["subset"] = str(row["subset"])
    families.update(attribute_families(row))
    if row.get("params") and row.get("foreground_id"):
        families.update(composite_families(json.loads(row["params"])))
        families.update(person_families(row["foreground_id"], foregrounds))
    return families


def read_report(path: str | os.PathLike) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SlicesError(f"{path}: not readable as an evaluation report ({error}); write one with "
                          "`python -m ormbg.evaluate ... --json EVAL.json`") from None  # fmt: skip
    if not isinstance(report, dict) or not isinstance(report.get("datasets"), dict):
        raise SlicesError(f"{path}: not an evaluation report (no 'datasets'); write one with `python -m ormbg.evaluate "
                          "... --json EVAL.json`")  # fmt: skip
    return report


SLICED_COLUMNS = ("source", "subset", "attributes", "params", "foreground_id")  # what families_of reads of a row


def _rows(report: str | os.PathLike, root: str, split: str) -> dict[str, dict[str, Any]]:
    """The evaluated split's rows by id, only what families_of reads: of a dataset directory, or of the Parquet shards
    that push writes (a folder or hf://user/name: their metadata columns alone are read)."""
    if is_shard_location(root):
        try:
            found = shard_rows(root, split, ("id", *SLICED_COLUMNS), "slices")
            return {row.pop("id", None) or f"row {index}": row for index, row in enumerate(found)}  # evaluate's ids
        except UserError as error:
            raise SlicesError(f"{report}: {error}") from None
    if not Path(root).is_dir():
        raise SlicesError(f"{report}: dataset {root} is not there (slices read its rows): run from where "
                          "evaluate ran, or move the data back")  # fmt: skip
    return {row["id"]: {key: row[key] for key in SLICED_COLUMNS if key in row} for row in iter_rows(root, split)}


def slice_report(path: str | os.PathLike, min_n: int = MIN_N) -> dict[str, Any]:
    """Slices of every dataset of the report at `path`, pooled: {"report", "min_n", "overall", "slices",
    "too_few", "unmatched"}; `slices` worst first (by ratio of mean MAE to the overall mean)."""
    report = read_report(path)
    overall = Slice("all", "all")
    table: dict[tuple[str, str], Slice] = {}
    unmatched = 0
    for name, scores in report["datasets"].items():
        per_sample = scores.get("per_sample")
        if not per_sample:
            raise SlicesError(f"{path}: dataset {name} has no per-sample measures; evaluate again with this version")
        root, split = name.rsplit(":", 1)
        rows = _rows(path, root, split)
        foregrounds = ForegroundIndex.of_composites(Path(root))
        for entry in per_sample:
            row = rows.get(entry["id"])
            if row is None:
                unmatched += 1
                continue
            measures = {key: value for key, value in entry.items() if key != "id"}
            overall.add(measures)
            for family, value in families_of(row, foregrounds).items():
                table.setdefault((family, value), Slice(family, value)).add(measures)
    if not overall.n:
        raise SlicesError(f"{path}: none of its samples is in the data it names")
    base = overall.means()
    ranked, small = [], []
    for part in table.values():
        means = part.means()
        entry = {"family": part.family, "value": part.value, "n": part.n, **means,
                 "ratio": means["mae"] / base["mae"] if base["mae"] else 1.0}  # fmt: skip
        (ranked if part.n >= min_n else small).append(entry)
    ranked.sort(key=lambda entry: (-entry["ratio"], entry["family"], entry["value"]))
    small.sort(key=lambda entry: (entry["family"], entry["value"]))
    return {"report": str(path), "min_n": min_n, "overall": {"n": overall.n, **base}, "slices": ranked,
            "too_few": small, "unmatched": unmatched}  # fmt: skip


MEASURES = (("mae", "MAE"), ("mse", "MSE"), ("sad", "SAD"), ("grad", "Grad"), ("conn", "Conn"))


def format_slices(result: dict[str, Any], markdown: bool = False, top: int | None = None) -> str:
    """A table of the ranked slices (worst first), then the slices too small to rank."""
    shown = [key for key, _ in MEASURES if key in result["overall"]]
    header = ["family", "value", "n", *[dict(MEASURES)[key] for key in shown], "ratio"]
    overall = result["overall"]
    rows = [["all", "all", str(overall["n"]), *[f"{overall[k]:.4f}" for k in shown], "1.00"]]
    for entry in result["slices"][:top]:
        rows.append([entry["family"], entry["value"], str(entry["n"]),
                     *[f"{entry[k]:.4f}" for k in shown], f"{entry['ratio']:.2f}"])  # fmt: skip
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    if result["too_few"]:
        few = ", ".join(
            f"{e['family']}={e['value']} ({e['n']})" for e in result["too_few"] if e["family"] != "foreground"
        )
        people = sum(e["family"] == "foreground" for e in result["too_few"])
        people_text = f"{people} single foregrounds (each in the JSON)" if people else ""
        lines += [
            "",
            f"Too few samples to rank (n < {result['min_n']}): " + "; ".join(filter(None, [few, people_text])),
        ]
    if result["unmatched"]:
        lines += ["", f"{result['unmatched']} evaluated ids have no row in their data (left out)"]
    return "\n".join(lines) + "\n"


FOCUS_CLIP = (0.5, 4.0)  # a value's weight: its error ratio, clipped (nothing vanishes, nothing dominates)


def _ratios(path: str | os.PathLike) -> dict[tuple[str, str], float]:
    """(family, value) -> error ratio of every ranked slice of a slices file."""
    try:
        result = json.loads(Path(path).read_text())
        return {(entry["family"], entry["value"]): float(entry["ratio"]) for entry in result["slices"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise SlicesError(f"--focus {path}: not a slices file ({error}); write one with `datagen slices EVAL.json "
                          "--json SLICES.json`") from None  # fmt: skip


def _clip(ratio: float) -> float:
    low, high = FOCUS_CLIP
    return min(high, max(low, ratio))


class CompositeFocus:
    """`datagen compose --focus`: a weight for each drawn composite, the product over its families (compose families,
    the person, its source and attributes) of each ranked value's error ratio clipped to FOCUS_CLIP. Compose draws
    FOCUS_CANDIDATES parameter sets per sample and keeps one in proportion to this weight (sampling-importance
    resampling: the families' shares move toward prior share x weight)."""

    def __init__(self, path: str | os.PathLike, foreground_specs: list[str]):
        self.file = str(path)
        self.ratios = _ratios(path)
        self.families = sorted({family for family, _ in self.ratios})
        if not self.ratios:
            raise SlicesError(f"--focus {path}: ranks no slice; nothing to lean toward")
        self.foregrounds = ForegroundIndex(foreground_specs)
        self.digest = hashlib.sha1(json.dumps(sorted(self.ratios.items())).encode()).hexdigest()[:12]

    def weight(self, params: dict[str, Any], foreground_id: str) -> float:
        families = {**composite_families(params), **person_families(foreground_id, self.foregrounds)}
        weight = 1.0
        for family, value in families.items():
            ratio = self.ratios.get((family, value))
            if ratio is not None:
                weight *= _clip(ratio)
        return weight

    def to_record(self) -> dict[str, Any]:
        return {"file": self.file, "digest": self.digest, "families": self.families, "candidates": FOCUS_CANDIDATES,
                "clip": list(FOCUS_CLIP)}  # fmt: skip


FOCUS_CANDIDATES = 8  # parameter sets drawn per composite under --focus, one kept


def focus_weights(path: str | os.PathLike, attributes: dict[str, list[str]]) -> dict[str, list[float]]:
    """Attribute -> one weight per value (in `attributes`' order) from a slices file (`datagen slices --json`): the
    value's error ratio clipped to FOCUS_CLIP; 1 for a value the file does not rank (too few samples, or absent).
    Attributes with no ranked value are left out (drawn uniformly, as without focus)."""
    ratios = _ratios(path)
    weights = {}
    for name, values in attributes.items():
        found = [ratios.get((f"attribute:{name}", value)) for value in values]
        if any(ratio is not None for ratio in found):
            weights[name] = [1.0 if ratio is None else _clip(ratio) for ratio in found]
    if not weights:
        raise SlicesError(f"--focus {path}: ranks no attribute value of these prompts (attribute:NAME slices); "
                          "nothing to lean toward")  # fmt: skip
    return weights
