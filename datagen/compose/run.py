"""`run_compose(config)`: draw every sample's parameters from (seed, index), render in workers, write.

The parameters of sample i depend only on (seed, i) and the pools, so the output is the same for any number
of workers, any --shard split and any interruption. Rows are appended in index order by this process.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from datagen import __version__
from datagen.card import write_card
from datagen.compose.config import ComposeConfig
from datagen.compose.geometry import EmptyAlphaError
from datagen.compose.params import sample_params
from datagen.compose.pools import Cache, PoolItem, list_pool, load_background, load_foreground, partition
from datagen.compose.render import EmptyComposite, Inputs, render
from datagen.io import ImageReadError, write_run_json
from datagen.parallel import process_pool, single_threaded_opencv
from datagen.records import (
    Skip,
    append_row,
    done_ids,
    metadata_path,
    read_rows,
    reset_dataset,
    seeded_id,
    write_sample_files,
    write_skipped,
)


@dataclass(frozen=True)
class ComposeJob:
    """One sample for a worker: its id, split, resolved parameters and the pool items it uses."""

    index: int
    sample_id: str
    split: str
    params: dict[str, Any]
    foreground: PoolItem
    background: PoolItem
    extra_people: tuple[PoolItem, ...]
    occluders: tuple[PoolItem | None, ...]


@dataclass
class ComposeResult:
    out: Path
    counts: dict[str, int] = field(default_factory=dict)
    new: int = 0
    existing: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Pools:
    """The pools of one split (train or validation) after the grouped hold-out."""

    foregrounds: list[PoolItem]
    backgrounds: list[PoolItem]


def split_pools(config: ComposeConfig) -> tuple[dict[str, Pools], list[PoolItem]]:
    """Foreground and background pools per split (one item never in both splits), and the occluder pool."""
    foregrounds = list_pool(config.foregrounds, "foreground")
    backgrounds = list_pool(config.backgrounds, "background")
    occluders = list_pool([config.occluders], "occluder") if config.occluders else []
    held_fg = partition(len(foregrounds), config.val_fraction, config.seed, 1)
    held_bg = partition(len(backgrounds), config.val_fraction, config.seed, 2)
    pools = {
        split: Pools(
            [f for f, h in zip(foregrounds, held_fg) if h == held],
            [b for b, h in zip(backgrounds, held_bg) if h == held],
        )
        for split, held in (("train", False), ("validation", True))
    }
    return pools, occluders


def make_job(index: int, config: ComposeConfig, pools: dict[str, Pools], occluders: list[PoolItem]) -> ComposeJob:
    """Everything random about sample `index`, from numpy.random.default_rng([seed, index])."""
    rng = np.random.default_rng([config.seed, index])
    split = "validation" if rng.random() < config.val_fraction else "train"
    pool = pools[split]
    params = sample_params(rng, config.augment, len(pool.foregrounds), len(pool.backgrounds), len(occluders))
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
    return ComposeJob(
        index, seeded_id("composite", config.seed, index), split, params, foreground, background, extras, occluder_items
    )


class _Worker:
    """Per-process state: the config and the decoded-image caches."""

    config: ComposeConfig
    foregrounds: Cache
    backgrounds: Cache


def _init_worker(config: ComposeConfig) -> None:
    _Worker.config = config
    _Worker.foregrounds = Cache(config.cache_foreground_mb)
    _Worker.backgrounds = Cache(config.cache_background_mb)


def compose_one(job: ComposeJob) -> dict[str, Any] | Skip:
    """Render and write one sample (files only; the caller appends the row). Bad inputs become a Skip."""
    config = _Worker.config
    fg_cache, bg_cache = _Worker.foregrounds, _Worker.backgrounds
    max_side = 2 * max(config.size)
    current = job.foreground
    try:
        inputs = Inputs(
            fg_cache.get(job.foreground.id, lambda: load_foreground(job.foreground)),
            bg_cache.get(job.background.id, lambda: load_background(job.background, max_side)),
        )
        for item in job.extra_people:
            current = item
            inputs.extra_people.append(fg_cache.get(item.id, lambda item=item: load_foreground(item)))
        for item in job.occluders:
            current = item
            inputs.occluders.append(fg_cache.get(item.id, lambda item=item: load_foreground(item)) if item else None)
        image, alpha = render(inputs, job.params, config.size)
    except ImageReadError as error:
        return Skip(error.path, f"unreadable input: {error.reason}")
    except EmptyComposite as error:
        return Skip(job.sample_id, f"empty composite: {error}")
    except EmptyAlphaError as error:
        return Skip(str(current.path), f"bad foreground: {error}")
    metadata = {
        "source": "composite",
        "license": f"foreground: {job.foreground.license}; background: {job.background.license}",
        "foreground_id": job.foreground.id,
        "background_id": job.background.id,
        "extra_people": len(job.extra_people),
        "occluders": len(job.occluders),
        "preset": config.preset,
        "seed": config.seed,
        "index": job.index,
        "params": json.dumps(job.params, sort_keys=True),
    }
    return write_sample_files(config.out, job.split, job.sample_id, image=image, alpha=alpha, metadata=metadata)


IN_FLIGHT_PER_WORKER = 16  # submitted but not yet recorded; what a kill can lose (files are rewritten on resume)


def assign_workers(jobs: list[ComposeJob], workers: int) -> dict[str, int]:
    """Foreground id -> worker, balancing the number of jobs (largest first to the least loaded).

    Every job of one foreground goes to one worker, so each foreground is decoded by one process only and
    the per-worker caches hold disjoint sets: together they act as one cache `workers` times larger.
    """
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.foreground.id] = counts.get(job.foreground.id, 0) + 1
    load, owner = [0] * workers, {}
    for fg_id, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        worker = load.index(min(load))
        owner[fg_id], load[worker] = worker, load[worker] + count
    return owner


def _results(jobs: list[ComposeJob], config: ComposeConfig) -> Iterator[dict[str, Any] | Skip]:
    """Outcomes in job order. Several workers: jobs routed by foreground, a bounded window in flight."""
    if config.workers == 1:
        _init_worker(config)
        with single_threaded_opencv():
            yield from map(compose_one, jobs)
        return
    owner = assign_workers(jobs, config.workers)
    pools = [process_pool(1, _init_worker, (config,)) for _ in range(config.workers)]
    window: deque = deque()
    try:
        for job in jobs:
            window.append(pools[owner[job.foreground.id]].submit(compose_one, job))
            if len(window) >= IN_FLIGHT_PER_WORKER * config.workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        for pool in pools:
            pool.shutdown(cancel_futures=True)


def run_compose(config: ComposeConfig, command: str = "datagen compose") -> ComposeResult:
    """Write config.n composites (this shard's share) into config.out; resumes unless config.overwrite."""
    started = time.time()
    pools, occluders = split_pools(config)
    if config.overwrite:
        reset_dataset(config.out)
    finished = done_ids(config.out, "train") | done_ids(config.out, "validation")
    index, count = config.shard
    mine = range(index, config.n, count)
    jobs = [
        make_job(i, config, pools, occluders) for i in mine if seeded_id("composite", config.seed, i) not in finished
    ]
    result = ComposeResult(config.out, existing=len(mine) - len(jobs))
    skipped: list[Skip] = []
    bar = tqdm(_results(jobs, config), total=len(jobs), desc="compose", unit="image", disable=not config.progress)
    for job, outcome in zip(jobs, bar):
        if isinstance(outcome, Skip):
            skipped.append(outcome)
        else:
            append_row(metadata_path(config.out, job.split), outcome)
            result.new += 1
    result.skipped = dict(write_skipped(config.out, skipped, config.shard))
    result.counts = {split: len(read_rows(config.out, split)) for split in ("train", "validation")}
    result.counts = {split: n for split, n in result.counts.items() if n}
    result.seconds = time.time() - started
    _write_records(config, command, result)
    return result


def _write_records(config: ComposeConfig, command: str, result: ComposeResult) -> None:
    settings = {**asdict(config), "augment": config.augment.to_dict()}
    settings = json.loads(json.dumps(settings, default=str))
    write_run_json(
        config.out,
        {
            "command": command,
            "tool": f"datagen {__version__}",
            "config": settings,
            "counts": result.counts,
            "new_samples": result.new,
            "resumed_existing": result.existing,
            "failures_by_reason": result.skipped,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(result.seconds, 2),
        },
        config.shard,
    )
    if result.counts:
        write_card(
            config.out,
            "ormbg composites",
            "People composited onto backgrounds by `datagen compose`: placement, lighting, shadow, occlusion "
            "and camera degradations, with the person's exact alpha as ground truth. Each row's `params` "
            "holds every drawn parameter; `foreground_id` and `background_id` name the inputs.",
        )
