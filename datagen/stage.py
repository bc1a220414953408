"""The stage runner: what every writing stage (synth, compose, import, foreground, refine, relight) does around its
own planning and per-item work.

    with stage_run(result, config, command, shard=..., ray=...) as run:   # lock result.out, resume, count Ray
        jobs = plan(run.state)                                                      # the stage's planner
        outcomes = map_items(work_one, jobs, workers=..., ray=...)                  # here, a process pool or Ray
        run.collect(jobs, outcomes, split_of=..., desc="compose", unit="image")     # rows appended, skips kept
    # on leaving: skipped.jsonl, the run record (result.to_record) and the seconds; the command prints
    # result.summary()

A stage that edits the dataset it reads (`in_place`: foreground, refine) writes its record beside run.json
(`foreground.json`, `refine.json`) and its skips to `<record>-skipped.jsonl`, so it never writes over the files of the
stage that made the dataset.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datagen.cluster import batched, ray_map, recording
from datagen.errors import InputError, UserError
from datagen.io import read_json, write_run_json
from datagen.parallel import bounded_map, process_pool, return_freed_memory, reuse_freed_memory, single_threaded_opencv
from datagen.records import ResumeState, Skip, StageResult, resume_run, write_skipped


@dataclass
class Run:
    """A stage's run in progress: what is done (`state`; None in a stage that edits its dataset in place), the result
    it counts into, the skips met, and anything the run record gets besides the result's fields (`extra`)."""

    state: ResumeState | None
    result: StageResult
    skips: dict[str, Skip] = field(default_factory=dict)  # by path: a file met twice is recorded once
    extra: dict[str, Any] = field(default_factory=dict)

    def skip(self, skip: Skip) -> None:
        self.skips.setdefault(skip.path, skip)

    def collect(
        self,
        jobs: list[Any],
        outcomes: Iterable[dict[str, Any] | Skip],
        split_of: Callable[[Any], str],
        desc: str,
        unit: str = "image",
        progress: bool = True,
    ) -> None:
        """Append each job's row to its split (in job order) and count it new; keep each Skip."""
        self.collect_split(zip(map(split_of, jobs), outcomes), len(jobs), desc, unit, progress)

    def collect_split(
        self,
        outcomes: Iterable[tuple[str, dict[str, Any] | Skip]],
        total: int,
        desc: str,
        unit: str = "image",
        progress: bool = True,
    ) -> None:
        """`collect` for outcomes that name their split, (split, row or Skip), `total` of them: a stage whose jobs are
        made as they are taken (compose, import) keeps none of them here."""
        for split, outcome in tqdm(outcomes, total=total, desc=desc, unit=unit, disable=not progress):
            if isinstance(outcome, Skip):
                self.skip(outcome)
            else:
                self.state.add(split, outcome)
                self.result.new += 1


@contextmanager
def crash_report(command: str, out: Path, then: str = "a rerun resumes from it") -> Iterator[None]:
    """A bug (any error but a UserError) keeps its traceback; before it, one line says where the run's files are and
    how to go on from them (`then`). Used by every stage and by training."""
    try:
        yield
    except Exception as error:
        if not isinstance(error, UserError):
            stage = command.split(" --")[0]
            print(f"{stage}: stopped by an unexpected error (a bug: the traceback follows; please report it). What "
                  f"was made so far is in {out}; {then}.", file=sys.stderr)  # fmt: skip
        raise


def skips_file(record: str) -> str:
    """Where a stage's skips go: skipped.jsonl beside run.json; `<name>-skipped.jsonl` beside an in-place record."""
    return "skipped.jsonl" if record == "run.json" else f"{Path(record).stem}-skipped.jsonl"


@contextmanager
def stage_run(
    result: StageResult,
    config: Any,
    command: str,
    *,
    shard: tuple[int, int],
    ray: str | None = None,
    overwrite: bool = False,
    in_place: bool = False,
    record: str = "run.json",
    skips: bool = True,
) -> Iterator[Run]:
    """Lock `result.out` (this shard), start over if asked, read what is done, count what Ray runs; on leaving
    without an error, write the skips, the run record and the seconds (under the lock). The skips file is written
    on every run of a stage that makes its dataset (`skips=False`: one that never skips), and by an in-place stage
    only when it skipped something."""
    started = time.time()
    return_freed_memory()  # the resume check's large buffers go back when freed (a worker with work reuses them)
    if not (in_place or overwrite):  # before the resume check reads the rows (seconds at a million)
        check_maker(result.out, command)
    with resume_run(result.out, shard, overwrite, in_place=in_place) as state:
        run = Run(state, result)
        with recording(ray) as report, crash_report(command, result.out):
            yield run
        result.ray = report.to_record() if report else None
        if run.skips or (skips and not in_place):
            result.skips_file = skips_file(record)
            result.skipped = dict(write_skipped(result.out, run.skips.values(), shard, result.skips_file))
        result.seconds = time.time() - started
        write_run_json(result.out, result.to_record(command, config, **run.extra), shard, record)


def check_maker(out: str | Path, command: str) -> None:
    """Refuse to add rows to a dataset that another stage made (its run.json, or a shard's, names another
    `datagen STAGE`): its rows would mix with another kind's and its record of what made it would be replaced. A stage
    may add to its own (a rerun, more samples, another import source)."""
    stage = " ".join(command.split()[:2])
    for path in sorted(Path(out).glob("run*.json")):  # run.json, run.shard-I-of-K.json
        try:
            made = str(read_json(path).get("command") or "")
        except (UserError, OSError, AttributeError):  # not a record of ours: nothing to compare
            continue
        if made and " ".join(made.split()[:2]) != stage:
            raise InputError(
                f"{out} was made by `{made}` (its {path.name}): give `{stage}` a folder of its own (-o DIR); adding "
                "its rows there would mix two kinds of samples and replace the record of what made them"
            )


@dataclass(frozen=True)
class Lazy:
    """`count` items that `make()` yields as they are taken: a stage's jobs for a fresh run of 10^6 are made as the
    workers take them, never all held (compose, synth, import, foreground). Sized; each pass makes them again."""

    make: Callable[[], Iterator[Any]]
    count: int

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        return self.make()


def map_items(
    function: Callable[[Any], Any],
    items: Collection[Any],
    *,
    workers: int = 1,
    ray: str | None = None,
    setup: Callable[..., None] | None = None,
    setup_args: tuple = (),
    ray_batch: int = 16,
    chunksize: int = 1,
    single_threaded: bool = False,
) -> Iterator[Any]:
    """`function(item)` for each item, in item order: on Ray (tasks of `ray_batch` items), in `workers` processes,
    or here. `setup(*setup_args)` runs once in each process that does the work (set-up such as a worker's state)."""
    if ray:
        yield from ray_map(function, items, ray, setup, setup_args, batch_size=ray_batch)
        return
    if workers == 1:
        if items:
            reuse_freed_memory()  # as a pool's worker does; a no-op run leaves this process's malloc as it was
        if setup is not None:
            setup(*setup_args)
        with single_threaded_opencv() if single_threaded else nullcontext():
            yield from map(function, items)
        return
    with process_pool(workers, setup, setup_args) as pool:  # Executor.map would submit every item before the first
        chunks = ((function, chunk) for chunk in batched(items, chunksize))
        for results in bounded_map(pool, _apply, chunks, CHUNKS_PER_WORKER * workers):
            yield from results


CHUNKS_PER_WORKER = 8  # chunks in flight per pool worker: each always has the next, few are lost to a kill


def _apply(function: Callable[[Any], Any], chunk: list[Any]) -> list[Any]:
    """In a pool worker: `function` of each item of one chunk."""
    return [function(item) for item in chunk]
