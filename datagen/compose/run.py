"""`run_compose(config)`: draw every sample's parameters from (seed, index), render in workers, write.

The parameters of sample i depend only on (seed, i) and the pools, so the output is the same for any number
of workers, any --shard split and any interruption. Rows are appended in index order by this process.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datagen.alpha import EmptyAlphaError
from datagen.card import write_card
from datagen.compose.config import AugmentConfig, ComposeConfig
from datagen.compose.params import sample_params
from datagen.compose.pools import Cache, Pool, PoolItem, list_pool, load_background, load_foreground, partition
from datagen.compose.render import EmptyComposite, Inputs, render
from datagen.io import ImageReadError
from datagen.parallel import process_pool, runs_in_workers
from datagen.records import (
    Skip,
    StageResult,
    seeded_id,
    write_sample_files,
)
from datagen.slices import FOCUS_CANDIDATES, CompositeFocus
from datagen.stage import Lazy, map_items, stage_run

runs_in_workers(__name__)  # its functions run in pool workers


@dataclass(frozen=True)
class ComposeJob:
    """One sample for a worker: its index, id, split and its draw (parameters and the pool items they use)."""

    index: int
    sample_id: str
    split: str
    drawn: Drawn


@dataclass
class ComposeResult(StageResult):
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Pools:
    """The pools of one split (train or validation) after the grouped hold-out."""

    foregrounds: Pool
    backgrounds: Pool


def split_pools(config: ComposeConfig) -> tuple[dict[str, Pools], Sequence[PoolItem]]:
    """Foreground and background pools per split (one item never in both splits), and the occluder pool."""
    foregrounds = list_pool(config.foregrounds, "foreground", config.raw_foreground)
    backgrounds = list_pool(config.backgrounds, "background")
    occluders = list_pool([config.occluders], "occluder") if config.occluders else []
    held_fg = partition(len(foregrounds), config.val_fraction, config.seed, 1)
    held_bg = partition(len(backgrounds), config.val_fraction, config.seed, 2)
    pools = {
        split: Pools(foregrounds.subset(held_fg == held), backgrounds.subset(held_bg == held))
        for split, held in (("train", False), ("validation", True))
    }
    return pools, occluders


COMPOSE_SPLITS = ("train", "validation")  # compose writes no test split: benchmarks are never composites
MAX_DRAWS = 10  # parameter draws per sample before it is skipped (unreadable inputs, empty composites)


@dataclass(frozen=True)
class Drawn:
    """One draw of a composite: its parameters (pool ids, not list positions) and the pool items they name."""

    params: dict[str, Any]
    foreground: PoolItem
    background: PoolItem
    extra_people: tuple[PoolItem, ...]
    occluders: tuple[PoolItem | None, ...]


def draw(rng: np.random.Generator, augment: AugmentConfig, pool: Pools, occluders: Sequence[PoolItem]) -> Drawn:
    """Everything random about one composite, from `rng` (`compose/params.py`), with the pool items it uses.

    The one drawing of `datagen compose` and of training's online composites (ormbg.composites.OnlineComposites)."""
    params = sample_params(rng, augment, len(pool.foregrounds), len(pool.backgrounds), len(occluders))
    foreground, background = pool.foregrounds[params["foreground"]], pool.backgrounds[params["background"]]
    extras = tuple(pool.foregrounds[extra["foreground"]] for extra in params["extra_people"])
    occluder_items = tuple(occluders[o["pool_index"]] if o["pool_index"] >= 0 else None for o in params["occluders"])
    # Record ids, not list positions: the parameters then say what was used on their own.
    params["foreground"], params["background"] = foreground.id, background.id
    for extra, item in zip(params["extra_people"], extras):
        extra["foreground"] = item.id
    for occluder, item in zip(params["occluders"], occluder_items):
        occluder["occluder"] = item.id if item else "procedural"
        del occluder["pool_index"]
    return Drawn(params, foreground, background, extras, occluder_items)


def make_job(
    index: int,
    config: ComposeConfig,
    pools: dict[str, Pools],
    occluders: Sequence[PoolItem],
    draw_index: int = 0,
    focus: CompositeFocus | None = None,
) -> ComposeJob:
    """Everything random about sample `index`: its split from numpy.random.default_rng([seed, index]), its
    parameters from the same generator (draw 0) or, when an earlier draw failed, from ([seed, index, draw]).

    With `focus` (--focus), FOCUS_CANDIDATES draws (the first as without focus, the others from
    [seed, index, draw, 1, k]) and one kept in proportion to its focus weight (chosen by [seed, index, draw, 2])."""
    rng = np.random.default_rng([config.seed, index])
    split = "validation" if rng.random() < config.val_fraction else "train"
    if draw_index:
        rng = np.random.default_rng([config.seed, index, draw_index])
    drawn = draw(rng, config.augment, pools[split], occluders)
    if focus is not None:
        candidates = [drawn] + [
            draw(np.random.default_rng([config.seed, index, draw_index, 1, k]), config.augment, pools[split], occluders)
            for k in range(1, FOCUS_CANDIDATES)
        ]
        weights = np.array([focus.weight(c.params, c.foreground.id) for c in candidates])
        pick = np.random.default_rng([config.seed, index, draw_index, 2]).choice(
            len(candidates), p=weights / weights.sum()
        )
        drawn = candidates[int(pick)]
    return ComposeJob(index, seeded_id("composite", config.seed, index), split, drawn)


class BadItem(Exception):
    """A pool item that cannot be used (unreadable file, empty alpha): excluded for the rest of the run."""

    def __init__(self, item: PoolItem, skip: Skip):
        super().__init__(skip.reason)
        self.item, self.skip = item, skip


class Renderer:
    """What rendering needs in one process: byte-bounded caches of decoded foregrounds (cropped to their alpha) and
    of shrunk backgrounds, and the pool items found unusable (never decoded twice). Used by compose's workers and
    by training's online composites."""

    def __init__(self, foreground_mb: float, background_mb: float):
        self.foregrounds, self.backgrounds = Cache(foreground_mb), Cache(background_mb)
        self.bad: dict[str, Skip] = {}

    def load(self, item: PoolItem, background_side_px: int | None = None) -> np.ndarray:
        """A foreground (RGBA, cropped), or with `background_side_px` a background shrunk to that short side."""
        if item.id in self.bad:
            raise BadItem(item, self.bad[item.id])
        try:
            if background_side_px is not None:
                return self.backgrounds.get(item.id, lambda: load_background(item, background_side_px))
            return self.foregrounds.get(item.id, lambda: load_foreground(item))  # raises EmptyAlphaError
        except ImageReadError as error:
            skip = Skip(error.path, f"unreadable input: {error.reason}")
        except EmptyAlphaError as error:
            skip = Skip(str(item.path), f"bad foreground: {error}")
        self.bad[item.id] = skip
        raise BadItem(item, skip)

    def render(self, drawn: Drawn, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(image, alpha) of one draw at `size` (W, H). Raises BadItem, EmptyComposite or EmptyAlphaError."""
        inputs = Inputs(self.load(drawn.foreground), self.load(drawn.background, 2 * max(size)))
        inputs.extra_people.extend(self.load(item) for item in drawn.extra_people)
        inputs.occluders.extend(self.load(item) if item else None for item in drawn.occluders)
        return render(inputs, drawn.params, size)


class _Worker:
    """Per-process state of a compose worker: the config, the pools, the renderer and the --focus weights."""

    config: ComposeConfig
    pools: dict[str, Pools]
    occluders: Sequence[PoolItem]
    renderer: Renderer
    focus: CompositeFocus | None


def _init_worker(
    config: ComposeConfig, pools: dict[str, Pools], occluders: Sequence[PoolItem], focus: CompositeFocus | None = None
) -> None:
    _Worker.config, _Worker.pools, _Worker.occluders, _Worker.focus = config, pools, occluders, focus
    _Worker.renderer = Renderer(config.cache_foreground_mb, config.cache_background_mb)


def compose_one(job: ComposeJob) -> tuple[str, dict[str, Any] | Skip, list[Skip]]:
    """Render and write one sample (files only; the caller appends the row to the split it names first), and the pool
    items found bad.

    A draw that uses an unusable pool item (unreadable, empty alpha) or gives an empty composite is drawn
    again (`make_job`'s draw 1, 2, ...); which draw a sample gets depends only on the files, never on the order
    or the worker, so the output stays the same for any worker count. After MAX_DRAWS the sample is a Skip.
    """
    config, found_bad = _Worker.config, []
    for draw_index in range(MAX_DRAWS):
        if draw_index:
            job = make_job(job.index, config, _Worker.pools, _Worker.occluders, draw_index, _Worker.focus)
        try:
            image, alpha = _Worker.renderer.render(job.drawn, config.size)
            break
        except BadItem as error:
            found_bad.append(error.skip)
        except (EmptyComposite, EmptyAlphaError):
            pass
    else:
        skip = Skip(job.sample_id, f"no usable draw in {MAX_DRAWS} (unreadable inputs or empty composites)")
        return job.split, skip, found_bad
    metadata = {
        "source": "composite",
        "license": f"foreground: {job.drawn.foreground.license}; background: {job.drawn.background.license}",
        "foreground_id": job.drawn.foreground.id,
        "background_id": job.drawn.background.id,
        "extra_people": len(job.drawn.extra_people),
        "occluders": len(job.drawn.occluders),
        "preset": config.preset,
        "seed": config.seed,
        "index": job.index,
        "draw": draw_index,
        "focus": _Worker.focus.digest if _Worker.focus else "",  # the --focus weights' digest
        "params": json.dumps(job.drawn.params, sort_keys=True),
    }
    row = write_sample_files(config.out, job.split, job.sample_id, image=image, alpha=alpha, metadata=metadata)
    return job.split, row, found_bad


RAY_BATCH = 16  # compose jobs per Ray task: about a second of work at 1024 px, against a millisecond of scheduling
IN_FLIGHT_PER_WORKER = 16  # submitted but not yet recorded; what a kill can lose (files are rewritten on resume)


def _results(
    jobs: Lazy,
    config: ComposeConfig,
    pools: dict[str, Pools],
    occluders: Sequence[PoolItem],
    focus: CompositeFocus | None,
) -> Iterator[tuple[str, dict[str, Any] | Skip, list[Skip]]]:
    """Outcomes (split, row or Skip, pool items found bad) in job order. Ray: batches of jobs as Ray tasks. Several
    workers: a bounded window in flight, every job of one foreground to one worker (the one with the fewest jobs
    when the foreground is first met), so each foreground is decoded by one process and the per-worker caches hold
    disjoint sets: together they act as one cache `workers` times larger."""
    setup = (config, pools, occluders, focus)
    if config.ray or config.workers == 1:
        yield from map_items(compose_one, jobs, ray=config.ray, setup=_init_worker, setup_args=setup,
                             ray_batch=RAY_BATCH, single_threaded=True)  # fmt: skip
        return
    executors = [process_pool(1, _init_worker, setup) for _ in range(config.workers)]
    window: deque = deque()
    load, owner = [0] * config.workers, {}
    try:
        for job in jobs:
            worker = owner.setdefault(job.drawn.foreground.id, load.index(min(load)))
            load[worker] += 1
            window.append(executors[worker].submit(compose_one, job))
            if len(window) >= IN_FLIGHT_PER_WORKER * config.workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        for executor in executors:
            executor.shutdown(cancel_futures=True)


def run_compose(config: ComposeConfig, command: str = "datagen compose") -> ComposeResult:
    """Write config.n composites (this shard's share) into config.out; resumes unless config.overwrite."""
    pools, occluders = split_pools(config)
    focus = CompositeFocus(config.focus, [str(spec) for spec in config.foregrounds]) if config.focus else None
    result = ComposeResult(config.out)
    with stage_run(result, config, command, shard=config.shard, ray=config.ray, overwrite=config.overwrite) as run:
        # an id names one index, so a sample done in either split is skipped before anything is drawn for it
        todo, mine = run.state.seeded_todo(COMPOSE_SPLITS, "composite", config.seed, config.n, config.shard)
        # each job drawn as a worker is about to take it: drawn all first, a fresh run of 10^5 at 32 px made its first
        # composite after 11.2 s and peaked at 350 MB, growing with -n (0.01 s and 106 MB so)
        jobs = Lazy(lambda: (make_job(int(i), config, pools, occluders, focus=focus) for i in todo), len(todo))
        result.existing = mine - len(jobs)

        def outcomes() -> Iterator[tuple[str, dict[str, Any] | Skip]]:
            for split, outcome, found_bad in _results(jobs, config, pools, occluders, focus):
                for skip in found_bad:  # an unreadable pool file is recorded once
                    run.skip(skip)
                yield split, outcome

        run.collect_split(outcomes(), len(jobs), "compose", "image", config.progress)
        result.counts = {split: len(run.state.rowed[split]) for split in COMPOSE_SPLITS if run.state.rowed[split]}
        run.extra = {"test_splits_used": benchmark_specs(config), "focus": focus.to_record() if focus else None}
        if result.counts:
            _write_card(config)
    return result


def _write_card(config: ComposeConfig) -> None:
    description = (
        "People composited onto backgrounds by `datagen compose`: placement, lighting, shadow, occlusion "
        "and camera degradations, with the person's exact alpha as ground truth. Each row's `params` "
        "holds every drawn parameter; `foreground_id` and `background_id` name the inputs."
    )
    used = benchmark_specs(config)
    if used:
        description += (
            f"\n\n**Made from test splits, named by the user: {', '.join(used)}.** These hold benchmark images: "
            "do not evaluate a model trained on these composites on those benchmarks."
        )
    write_card(config.out, "ormbg composites", description)


def benchmark_specs(config: ComposeConfig) -> list[str]:
    """The pool specs that name a test split (pools never read one unless named)."""
    return [str(spec) for spec in (*config.foregrounds, *config.backgrounds) if str(spec).endswith(":test")]
