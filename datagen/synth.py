"""`run_synth(config)`: prompts -> generator -> quality checks -> a foreground pool (or backgrounds).

Sample i takes its prompt from default_rng([seed, i]) and its noise from a torch.Generator seeded from
(seed, i, attempt); a person failing the quality thresholds is generated again with the next attempt, and the
rejection is counted by reason in run.json. Rows are written as each batch finishes, in a thread while the next
batch is generated (constant memory at any n); a rerun generates only the missing ids.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
from tqdm import tqdm

from datagen.card import write_card
from datagen.cluster import check_shared_paths, ray_map
from datagen.console import DATA_ROOT, SIZE, option
from datagen.errors import InputError
from datagen.parallel import pick_device, reuse_freed_memory, torch_dtype
from datagen.procedural import draw_background, draw_person
from datagen.prompts import PERSON_ATTRIBUTES, load_prompts, sample_prompt
from datagen.records import (
    ResumeState,
    StageResult,
    resolve_shard,
    seeded_id,
    write_sample_files,
)
from datagen.slices import focus_weights
from datagen.stage import Lazy, stage_run

SDXL_OUTPUT_LICENSE = "CreativeML Open RAIL++-M (outputs of SDXL base; check the licence of the checkpoint used)"


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a generated person must meet; every score is recorded whether or not it passes."""

    min_coverage: float = 0.03  # share of the frame with alpha > 0
    max_coverage: float = 0.9
    max_components: int = 3  # separate opaque regions larger than 0.1% of the frame (stray blobs)
    max_haze: float = 0.08  # share of the frame with faint alpha (0 < a < 32): large hazy regions
    forbidden_edges: tuple[str, ...] = ("top",)  # frame edges the subject must not touch (a cut-off head)

    @classmethod
    def accept_all(cls) -> QualityThresholds:
        """No limits (benchmarks and tests on random weights, whose mattes are noise)."""
        return cls(min_coverage=0.0, max_coverage=1.0, max_components=10**9, max_haze=1.0, forbidden_edges=())


SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
LAYERDIFFUSE_REPO = "lllyasviel/LayerDiffuse_Diffusers"  # the official diffusers port: attention offset + decoder
KINDS = ("person", "background")


@dataclass(frozen=True)
class SynthConfig:
    out: Path | None = option(None, f"Dataset directory  [default: {DATA_ROOT}/synth, or {DATA_ROOT}/backgrounds].")
    kind: str = option("person", "Transparent people (a foreground pool) or people-free backgrounds.",
                       type=click.Choice(KINDS))  # fmt: skip
    n: int = option(100, "Samples to make.")
    seed: int = option(0)
    backend: str = option("layerdiffuse", "procedural: simple CPU figures for smoke tests and the demo.",
                          type=click.Choice(["layerdiffuse", "procedural"]))  # fmt: skip
    model: str = option(SDXL, "SDXL Hub id or local folder (photo checkpoints such as RealVisXL give cleaner people).")
    layerdiffuse: str = option(LAYERDIFFUSE_REPO, "Hub repo or local folder holding the LayerDiffuse offset and "
                               "transparent decoder.")  # fmt: skip
    steps: int = option(25, type=click.IntRange(min=1))
    guidance: float = option(7.0, "Classifier-free guidance scale.")
    size: tuple[int, int] = option((1024, 1024), "WxH (or a side), multiples of 64.", type=SIZE)
    batch_size: int = option(1, "Images per GPU batch; larger batches are faster per image and need more GPU memory "
                             "(measured figures: docs/benchmarks.md).")  # fmt: skip
    device: str = option("auto")
    dtype: str = option("auto")
    prompts: Path | None = option(None, "Prompts file (.txt one per line, or .jsonl with prompt / negative_prompt) "
                                  "instead of the sampler.", type=click.Path(exists=True, dir_okay=False,
                                                                             path_type=Path))  # fmt: skip
    offline: bool = option(False)
    shard: tuple[int, int] | None = option(None)  # (I, K) or "I/K"; None: the launcher's (RANK, WORLD_SIZE)
    max_attempts: int = 4
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    overwrite: bool = option(False)
    ray: str | None = option(None)  # generate on Ray (datagen.cluster): its address, or "local"; None: here
    focus: Path | None = option(None, "Draw each person attribute value in proportion to its error ratio")
    progress: bool = option(True)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"kind must be person or background, got {self.kind!r}")
        if self.backend not in BACKENDS:
            raise InputError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        width, height = self.size
        if self.backend == "procedural" and min(width, height) < 16:
            raise InputError(f"size {width}x{height}: the procedural backend draws people at 16x16 px or more")
        if self.backend != "procedural" and (width % 64 or height % 64 or width < 64 or height < 64):
            raise InputError(f"size {width}x{height}: width and height must be positive multiples of 64 (SDXL)")
        if self.n < 1 or self.batch_size < 1 or self.steps < 1 or self.max_attempts < 1:
            raise InputError("n, batch_size, steps and max_attempts must be at least 1")
        object.__setattr__(self, "shard", resolve_shard(self.shard, self.overwrite))
        if self.out is None:
            object.__setattr__(self, "out", Path(DATA_ROOT) / ("synth" if self.kind == "person" else "backgrounds"))
        check_shared_paths(self.ray, {"--out": self.out, "--prompts": self.prompts})
        if self.focus is not None and (self.prompts is not None or self.kind != "person"):
            raise InputError("--focus leans the drawn person attributes: it needs --kind person and no --prompts")


def quality_scores(alpha: np.ndarray) -> dict[str, Any]:
    """Scores of an HxW uint8 alpha: coverage, soft share, components, haze, frame edges touched."""
    visible = alpha > 0
    coverage = float(visible.mean())
    soft = float(((alpha > 0) & (alpha < 255)).sum() / max(1, visible.sum()))
    count, _, stats, _ = cv2.connectedComponentsWithStats((alpha > 127).astype(np.uint8), connectivity=8)
    components = int((stats[1:, cv2.CC_STAT_AREA] > 0.001 * alpha.size).sum()) if count > 1 else 0
    haze = float(((alpha > 0) & (alpha < 32)).mean())
    solid = alpha > 127
    edges = [
        name
        for name, line in (("top", solid[0]), ("bottom", solid[-1]), ("left", solid[:, 0]), ("right", solid[:, -1]))
        if line.any()
    ]
    return {"coverage": coverage, "soft_share": soft, "components": components, "haze": haze, "edges": ",".join(edges)}


def rejection(scores: dict[str, Any], limits: QualityThresholds) -> str | None:
    """The first threshold the scores fail, as a reason string; None when they pass."""
    if scores["coverage"] < limits.min_coverage:
        return "coverage too small"
    if scores["coverage"] > limits.max_coverage:
        return "coverage too large"
    if scores["components"] > limits.max_components:
        return "stray alpha components"
    if scores["haze"] > limits.max_haze:
        return "alpha haze"
    touched = set(filter(None, scores["edges"].split(",")))
    if touched & set(limits.forbidden_edges):
        return f"touches the {sorted(touched & set(limits.forbidden_edges))[0]} edge"
    return None


def attempt_seed(seed: int, index: int, attempt: int) -> int:
    """The torch seed of attempt `attempt` of sample `index`."""
    return int(np.random.default_rng([seed, index, attempt]).integers(2**63 - 1))


@dataclass
class Job:
    index: int
    attempt: int
    prompt: dict[str, Any]


@dataclass
class SynthResult(StageResult):
    count: int = 0
    rejected: Counter = field(default_factory=Counter)
    failed: int = 0  # samples that failed every attempt
    focus: dict[str, Any] | None = None  # --focus: the file, the weights and their digest

    def summary_parts(self) -> list[str]:
        rejected = ", ".join(f"{reason} {n}" for reason, n in self.rejected.most_common()) or "none"
        return [f"{self.count} in all", f"failed every attempt {self.failed}", f"rejected attempts: {rejected}"]


Render = Callable[[list[Job]], list[np.ndarray]]  # jobs -> HxWx4 (person) or HxWx3 (background) uint8


def procedural_renderer(config: SynthConfig) -> Render:
    width, height = config.size

    def render(jobs: list[Job]) -> list[np.ndarray]:
        """People shaped by their drawn attributes (hair, framing, clothing: datagen.procedural), or backgrounds."""
        images = []
        for job in jobs:
            rng = np.random.default_rng(attempt_seed(config.seed, job.index, job.attempt))
            if config.kind == "person":
                images.append(draw_person(rng, height, width, job.prompt["attributes"]))
            else:
                images.append(draw_background(rng, height, width))
        return images

    return render


def layerdiffuse_renderer(config: SynthConfig, generator=None) -> Render:
    """Batches through a LayerDiffuse `Generator` (loaded from config unless given)."""
    import torch

    from datagen.layerdiffuse import load_generator

    device = str(pick_device(config.device))
    dtype = torch_dtype(config.dtype, device)
    if generator is None:
        generator = load_generator(config.model, device, dtype, config.offline, config.layerdiffuse)
    width, height = config.size
    device_of_noise = "cpu" if device == "mps" else device

    def render(jobs: list[Job]) -> list[np.ndarray]:
        generators = [
            torch.Generator(device_of_noise).manual_seed(attempt_seed(config.seed, j.index, j.attempt)) for j in jobs
        ]
        result = generator.generate(
            [j.prompt["prompt"] for j in jobs],
            [j.prompt["negative_prompt"] for j in jobs],
            generators,
            height,
            width,
            config.steps,
            config.guidance,
        )
        rgba = torch.cat([result[:, 1:4], result[:, :1]], dim=1)  # (alpha, RGB) -> RGBA
        images = (rgba.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        return [image if config.kind == "person" else np.ascontiguousarray(image[..., :3]) for image in images]

    return render


@dataclass(frozen=True)
class Backend:
    """A synth backend: how it renders (`renderer(config) -> Render`), what its rows record, the licence of its
    outputs and how the card describes them. `datagen synth --backend NAME` picks one from BACKENDS."""

    name: str
    license: str
    how: str  # for the dataset card
    renderer: Callable[[SynthConfig], Render]
    prompted: bool  # prompts, a model and sampler settings drive it (recorded in every row)

    def fields(self, config: SynthConfig, job: Job) -> dict[str, Any]:
        """The row's record of what made a sample (the same keys for every backend: rows stay uniform)."""
        prompted = self.prompted
        return {
            "source": f"synth-{self.name}",
            "license": self.license,
            "backend": self.name,
            "model": config.model if prompted else self.name,
            "prompt": job.prompt["prompt"] if prompted else "",
            "negative_prompt": job.prompt["negative_prompt"] if prompted else "",
            "attributes": json.dumps(job.prompt["attributes"]),  # the procedural backend's shape the person too
            "focus": job.prompt.get("focus", ""),  # the --focus weights' digest ("" without --focus)
            "seed": config.seed,
            "index": job.index,
            "attempt": job.attempt,
            "torch_seed": attempt_seed(config.seed, job.index, job.attempt),
            "steps": config.steps if prompted else 0,
            "guidance": config.guidance if prompted else 0.0,
        }


BACKENDS = {
    "layerdiffuse": Backend(
        "layerdiffuse", SDXL_OUTPUT_LICENSE, "generated with LayerDiffuse on SDXL", layerdiffuse_renderer, True
    ),
    "procedural": Backend(
        "procedural",
        "Apache-2.0",
        "drawn by the procedural CPU backend (simple figures for smoke tests, not photographs)",
        procedural_renderer,
        False,
    ),
}


def _prompt(
    config: SynthConfig, index: int, fixed: list[dict[str, Any]] | None, focus: Focus | None = None
) -> dict[str, Any]:
    if fixed:
        return fixed[index % len(fixed)]
    prompt = sample_prompt(np.random.default_rng([config.seed, index]), config.kind, focus.weights if focus else None)
    return {**prompt, "focus": focus.digest} if focus else prompt


@dataclass(frozen=True)
class Focus:
    """--focus: per person attribute, one weight per value (datagen.slices.focus_weights); their digest is in rows."""

    file: str
    weights: dict[str, list[float]]

    @functools.cached_property
    def digest(self) -> str:  # once: every planned sample's prompt carries it
        return hashlib.sha1(json.dumps(self.weights, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def read(cls, config: SynthConfig) -> Focus | None:
        if config.focus is None:
            return None
        return cls(str(config.focus), focus_weights(config.focus, PERSON_ATTRIBUTES))


def run_synth(config: SynthConfig, render: Render | None = None, command: str = "datagen synth") -> SynthResult:
    """Make config.n samples (this shard's share) into config.out; resumes unless config.overwrite.

    `render` replaces the backend (tests pass a tiny LayerDiffuse pipeline through `layerdiffuse_renderer`).
    """
    if render is not None and config.ray:
        raise ValueError("a renderer passed in runs in this process only: leave config.ray unset")
    result = SynthResult(config.out)
    with stage_run(result, config, command, shard=config.shard, ray=config.ray, overwrite=config.overwrite,
                   skips=False) as run:  # fmt: skip
        if config.ray:
            _generate_on_ray(config, run.state, result)
        else:
            _generate(config, render or BACKENDS[config.backend].renderer(config), run.state, result)
        if result.count:
            _write_card(config)
    return result


def _plan(config: SynthConfig, state: ResumeState, result: SynthResult) -> Lazy:
    """The first attempt of every sample of this shard not done yet, each prompt drawn as the job is taken (all at
    once, 10^6 took 31 s and 1.07 GB before the first image); the rest counted in `result`."""
    fixed = load_prompts(config.prompts) if config.prompts else None
    focus = Focus.read(config)
    todo, mine = state.seeded_todo(["train"], _prefix(config), config.seed, config.n, config.shard)
    pending = Lazy(lambda: (Job(int(i), 0, _prompt(config, int(i), fixed, focus)) for i in todo), len(todo))
    result.existing = mine - len(pending)
    result.focus = asdict(focus) | {"digest": focus.digest} if focus else None  # for run.json
    return pending


def _prefix(config: SynthConfig) -> str:
    return "synth" if config.kind == "person" else "background"


def _generate(config: SynthConfig, render: Render, state: ResumeState, result: SynthResult) -> None:
    pending = _plan(config, state, result)
    if len(pending):  # its frames reuse freed memory, as a pool's worker does (stage_run has it go back to the system):
        reuse_freed_memory()  # 60 procedural 1024 px images took 14.7-18.3 s under stage_run's setting, 9.7-12.1 so
    prefix = _prefix(config)
    bar = tqdm(total=len(pending), desc=f"synth {config.kind}", unit="image", disable=not config.progress)

    def keep(batch: list[Job], images: list[np.ndarray]) -> list[Job]:
        """Score and write one batch; returns the jobs to generate again (the next attempt of rejected ones)."""
        retries = []
        for job, image in zip(batch, images):
            row, reason = _keep(config, prefix, job, image)
            if reason:
                result.rejected[reason] += 1
            if row is None and job.attempt + 1 < config.max_attempts:
                retries.append(Job(job.index, job.attempt + 1, job.prompt))
                continue
            if row is None:
                result.failed += 1
            else:
                state.add("train", row)
                result.new += 1
            bar.update(1)
        return retries

    # Batch k is scored and written (PNG encoding, in a thread) while batch k+1 is generated; its retries join
    # the queue, after every first attempt, when it is done. An error in either waits for the batch being written,
    # so nothing made is lost.
    first, retries = iter(pending), deque()

    def next_batch() -> list[Job]:
        batch = list(itertools.islice(first, config.batch_size))
        while len(batch) < config.batch_size and retries:
            batch.append(retries.popleft())
        return batch

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synth-writer") as writer:
        writing = None
        while (batch := next_batch()) or writing:
            images = render(batch) if batch else []
            if writing:
                retries.extend(writing.result())
            writing = writer.submit(keep, batch, images) if batch else None
    bar.close()
    result.count = len(state.rowed["train"])


def _keep(config: SynthConfig, prefix: str, job: Job, image: np.ndarray) -> tuple[dict | None, str | None]:
    """Score and write one generated image: (its row, None), or (None, the reason) when a person fails the
    thresholds."""
    metadata = BACKENDS[config.backend].fields(config, job)
    sample_id = seeded_id(prefix, config.seed, job.index)
    if config.kind == "background":
        return write_sample_files(config.out, "train", sample_id, image=image, alpha=None, metadata=metadata), None
    scores = quality_scores(image[..., 3])
    reason = rejection(scores, config.quality)
    if reason:
        return None, reason
    metadata.update(scores)
    alpha = np.ascontiguousarray(image[..., 3])
    return write_sample_files(config.out, "train", sample_id, foreground=image, alpha=alpha, metadata=metadata), None


class _Worker:
    """Per-process state of a Ray synth worker: the config and its backend's renderer (a loaded pipeline)."""

    config: SynthConfig
    render: Render


def _init_worker(config: SynthConfig) -> None:
    _Worker.config, _Worker.render = config, BACKENDS[config.backend].renderer(config)


def synth_batch(jobs: list[Job]) -> list[tuple[dict[str, Any] | None, list[str]]]:
    """On a Ray worker: generate, score and write a batch, each rejected person again with its next attempt (as a
    local run does), up to max_attempts. Per job: (its row or None when every attempt failed, the reasons rejected)."""
    config = _Worker.config
    rows: dict[int, dict[str, Any]] = {}
    reasons: dict[int, list[str]] = {job.index: [] for job in jobs}
    pending = list(jobs)
    while pending:
        retries = []
        for job, image in zip(pending, _Worker.render(pending)):
            row, reason = _keep(config, _prefix(config), job, image)
            if row is not None:
                rows[job.index] = row
            else:
                reasons[job.index].append(reason)
                if job.attempt + 1 < config.max_attempts:
                    retries.append(Job(job.index, job.attempt + 1, job.prompt))
        pending = retries
    return [(rows.get(job.index), reasons[job.index]) for job in jobs]


PROCEDURAL_RAY_BATCH = 16  # procedural samples per Ray task (milliseconds each)


def _generate_on_ray(config: SynthConfig, state: ResumeState, result: SynthResult) -> None:
    """The plan of a local run, generated on Ray: LayerDiffuse on GPU actors (one pipeline each, batches of
    --batch-size; on CPU actors with --device cpu), the procedural backend as CPU tasks. This process writes rows."""
    pending = _plan(config, state, result)
    if config.backend == "procedural":
        options = {"batch_size": PROCEDURAL_RAY_BATCH}
    else:
        options = {"batch_size": config.batch_size, "gpus": 0 if config.device == "cpu" else 1, "actors": True}
    outcomes = ray_map(synth_batch, pending, config.ray, _init_worker, (config,), per_batch=True, **options)
    bar = tqdm(outcomes, total=len(pending), desc=f"synth {config.kind}", unit="image", disable=not config.progress)
    for row, reasons in bar:
        result.rejected.update(reasons)
        if row is None:
            result.failed += 1
        else:
            state.add("train", row)
            result.new += 1
    result.count = len(state.rowed["train"])


def _write_card(config: SynthConfig) -> None:
    what = "transparent people (RGBA foregrounds, fg/ + gt/)" if config.kind == "person" else "people-free backgrounds"
    write_card(
        config.out,
        f"ormbg synth: {config.kind}s ({config.backend})",
        f"{what.capitalize()}, {BACKENDS[config.backend].how}, by `datagen synth`. Each row records its prompt, "
        "seeds, model and quality scores.",
    )
