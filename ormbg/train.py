"""`python -m ormbg.train`: train ORMBG on a weighted mix of dataset directories.

    python -m ormbg.train                                   # default recipe -> runs/<timestamp>
    python -m ormbg.train --data datasets/composites:train:0.6 --data datasets/p3m:train:0.4 \\
        --val datasets/p3m:test --size 1024 --batch-size 8 --precision bf16 --channels-last
    accelerate launch -m ormbg.train ...                    # several GPUs or machines

Checkpoints (`last.pt`, `best.pt`, and the weights as `.safetensors`) hold model, optimizer, scheduler, step,
config and RNG states; `--resume` continues exactly. `metrics.jsonl` and `curves.png` are written as it goes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from datagen import __version__
from datagen.console import CONTEXT_SETTINGS, logging_options, user_errors
from datagen.errors import InputError, MissingInputError
from datagen.io import write_atomic
from datagen.parallel import pick_device, release_freed_memory
from datagen.records import ResumeState, write_sample_files
from datagen.stage import crash_report
from ormbg.composites import ComposeSource, OnlineComposites
from ormbg.data import (
    BadSamples,
    EvalSet,
    MixSampler,
    Recipe,
    TrainSet,
    collate_eval,
    describe,
    loader_options,
    open_source,
)
from ormbg.losses import LossWeights, ormbg_loss
from ormbg.metrics import Meter, score_matte
from ormbg.model import ORMBG, WeightsError, load_weights, read_checkpoint
from ormbg.parquet import ParquetRows
from ormbg.plot import plot_curves
from ormbg.preprocess import mattes_at, normalize

log = logging.getLogger(__name__)

DEFAULT_RECIPE = Path("datasets/recipes/default.yaml")
# What a run writes into its folder: a folder holding any of these has a run (refused without --resume/--overwrite).
RUN_FILES = ("metrics.jsonl", "config.yaml", "last.pt", "best.pt", "last.safetensors", "best.safetensors")
RUN_FILES += ("curves.png", "bad_samples.jsonl")
# TrainConfig fields a --resume may change: they steer the run, not what it computes (max_steps: train longer; the
# cosine then ends at the new total). Any other difference from the checkpoint's config is refused.
RESUME_MAY_CHANGE = {"out", "resume", "overwrite", "progress", "workers", "max_steps", "val_every", "log_every"}
RESUME_MAY_CHANGE |= {"patience", "log_with", "compose_cache_mb", "max_bad_samples", "dump_batches", "compile"}


@dataclass(frozen=True)
class TrainConfig:
    out: Path = field(default_factory=lambda: Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    recipe: Recipe | None = None  # None: datasets/recipes/default.yaml
    size: int = 1024  # training side, px
    batch_size: int = 8
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 20000
    val_every: int = 1000
    log_every: int = 10
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast; GradScaler for fp16)
    channels_last: bool = False
    compile: bool = False
    workers: int = 4  # DataLoader worker processes
    seed: int = 0
    patience: int = 0  # validations without improvement before stopping; 0 = never stop early
    init: Path | None = None  # weights to start from: the published ormbg.pth, or one of ours
    resume: bool = False
    overwrite: bool = False  # train into a run folder that holds another run, replacing it
    max_bad_samples: int | None = None  # unreadable samples skipped before the run stops; None: 1% of them
    width_divisor: int = 1  # model widths divided by this; 1 is the published ORMBG (tests use 8)
    compose_cache_mb: float = 512.0  # per DataLoader worker: decoded foregrounds and backgrounds of online composites
    # Parquet sources are read in lanes (ormbg.parquet): this many per process, one per DataLoader worker. Set from
    # --workers when a run starts and kept by --resume, so that a resume with other --workers reads the same rows.
    stream_lanes: int | None = None
    dump_batches: int = 0  # write the first N steps' batches (as the model saw them) to RUN/batches/
    log_with: str | None = None  # also log to "tensorboard" (RUN/tracking/) or "wandb", through accelerate's trackers
    losses: LossWeights = field(default_factory=LossWeights)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise InputError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.log_with not in (None, "tensorboard", "wandb"):
            raise InputError(f"log_with must be tensorboard or wandb, got {self.log_with!r}")
        if min(self.size, self.batch_size, self.grad_accum, self.max_steps, self.val_every, self.log_every) < 1:
            raise InputError("size, batch_size, grad_accum, max_steps, val_every and log_every must be >= 1")
        if self.batch_size < 2:
            raise InputError(
                f"--batch-size {self.batch_size}: ORMBG's batch norm needs at least 2 images per process and step "
                "(use --grad-accum to step on more images than fit at once)"
            )

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["recipe"] = describe(self.recipe) if self.recipe else None
        return json.loads(json.dumps(values, default=str))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _rng_state() -> dict[str, Any]:
    """The global RNG states as tensors, numbers and tuples only, so a checkpoint loads with weights_only=True."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": position}
    numpy_state.update(has_gauss=has_gauss, cached_gaussian=cached)
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["name"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


@dataclass
class TrainResult:
    out: Path
    step: int = 0
    best_mae: float = float("inf")
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    bad_samples: dict[str, str] = field(default_factory=dict)  # unreadable file -> reason
    main_process: bool = True  # rank 0 (or the only process): the one that writes and prints


class Trainer:
    """Holds the model, optimizer, data and bookkeeping of one run; `fit()` trains."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator

        if config.stream_lanes is None:
            config = dataclasses.replace(config, stream_lanes=max(1, config.workers))
        self.config = config
        precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[config.precision]
        # the device rule of inference (datagen.parallel.pick_device): CUDA, else MPS, else the CPU; accelerate then
        # picks the same
        self.accelerator = Accelerator(
            mixed_precision=precision,
            # the schedule is written in optimizer steps: one scheduler step per optimizer step, for any process count
            # (by default accelerate steps it once per process, so with 8 GPUs the cosine would end at max_steps / 8)
            step_scheduler_with_optimizer=False,
            cpu=pick_device().type == "cpu",
            log_with=config.log_with,
            project_dir=Path(config.out) / "tracking",
        )
        self.recipe = config.recipe or Recipe.load(DEFAULT_RECIPE)
        if not self.recipe.train:
            raise InputError("the recipe has no training source: give --data DIR[:SPLIT[:WEIGHT]] or --recipe")
        self.train_sources = [
            OnlineComposites(source, config.seed, config.compose_cache_mb)
            if isinstance(source, ComposeSource)
            else open_source(source, "--data", config.seed)
            for source in self.recipe.train
        ]
        for source in self.train_sources:
            if isinstance(source, ParquetRows):
                source.lanes_per_rank, source.world_size = config.stream_lanes, self.accelerator.num_processes
        self.val_sets = {source.name: open_source(source, "--val") for source in self.recipe.validation}
        release_freed_memory()  # what listing a million rows freed, not held through the whole run
        total = sum(map(len, self.train_sources)) + sum(map(len, self.val_sets.values()))
        limit = config.max_bad_samples if config.max_bad_samples is not None else BadSamples.default_limit(total)
        self.bad = BadSamples(
            limit, Path(config.out) / "bad_samples.jsonl" if self.accelerator.is_main_process else None
        )
        torch.manual_seed(config.seed)
        model = ORMBG(config.width_divisor)
        if config.init:
            load_weights(model, config.init)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, config.warmup_steps, config.max_steps)
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        if config.compile:
            self.model = torch.compile(self.model)
        self.result = TrainResult(Path(config.out), main_process=self.accelerator.is_main_process)
        self.bad_validations = 0
        # one loader per validation set; its workers start at the first validation and stay alive
        options = loader_options(min(config.workers, 2), persistent=True)
        self.val_loaders = {
            name: DataLoader(
                EvalSet(samples, config.size), batch_size=config.batch_size, collate_fn=collate_eval, **options
            )
            for name, samples in self.val_sets.items()
        }

    def global_batch_text(self) -> str:
        """'global batch N = B per process x A accumulated x P processes': what one optimizer step sees."""
        config, processes = self.config, self.accelerator.num_processes
        total = config.batch_size * config.grad_accum * processes
        return (
            f"global batch {total} = {config.batch_size} per process x {config.grad_accum} accumulated x "
            f"{processes} processes"
        )

    # ----- data -----
    def train_batches(self, start_step: int):
        config = self.config
        dataset = TrainSet(self.train_sources, config.size)
        sampler = MixSampler(
            [len(s) for s in self.train_sources],
            [s.weight for s in self.recipe.train],
            config.batch_size,
            config.seed,
            self.accelerator.process_index,
            start_step * config.grad_accum,
            self.accelerator.num_processes,
            frozenset(i for i, source in enumerate(self.train_sources) if isinstance(source, ParquetRows)),
            config.stream_lanes,
        )
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            pin_memory=torch.cuda.is_available(),
            **loader_options(config.workers, persistent=True),
        )
        return iter(loader)

    # ----- checkpoints -----
    def save(self, name: str) -> None:
        if not self.accelerator.is_main_process:
            return
        from safetensors.torch import save as save_safetensors

        model = self.accelerator.unwrap_model(self.model)
        model = getattr(model, "_orig_mod", model)
        state = {
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.result.step,
            "best_mae": self.result.best_mae,
            "bad_validations": self.bad_validations,
            "config": self.config.to_dict(),
            "rng": _rng_state(),
        }
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        out, buffer = self.result.out, io.BytesIO()
        torch.save(state, buffer)
        write_atomic(out / f"{name}.pt", buffer.getbuffer())  # atomic, the run folder's file mode, clear disk errors
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        write_atomic(out / f"{name}.safetensors", save_safetensors(weights))

    def restore(self) -> None:
        """Continue from last.pt: refused when it is missing or the run's options differ (config.yaml and last.pt
        would disagree); metrics.jsonl is cut back to its step."""
        path = self.result.out / "last.pt"
        if not path.is_file():
            raise MissingInputError(
                f"--resume: {path} does not exist: the run stopped before its first checkpoint; start it again "
                "with --overwrite"
            )
        try:
            state = read_checkpoint(path)
        except WeightsError as error:
            raise WeightsError(
                f"--resume: {error}. To go on from the best checkpoint instead, copy {path.with_name('best.pt')} to "
                f"{path.name}; or start a new run from the weights with --init {path.with_suffix('.safetensors')}"
            ) from error
        check_resumable(state["config"], self.config, path)
        model = self.accelerator.unwrap_model(self.model)
        getattr(model, "_orig_mod", model).load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        self.result.step, self.result.best_mae = state["step"], state["best_mae"]
        self.bad_validations = state["bad_validations"]
        _set_rng_state(state["rng"])
        if self.accelerator.is_main_process:
            truncate_metrics(self.result.out / "metrics.jsonl", self.result.step)

    # ----- validation and logging -----
    @torch.no_grad()
    def validate(self) -> dict[str, dict[str, float]]:
        self.model.eval()
        results = {}
        for name, loader in self.val_loaders.items():
            meter = Meter(full=False)
            for pixels, alphas, unreadable in loader:
                self.bad.add_json(unreadable)
                readable = [i for i, text in enumerate(unreadable) if text == "[]"]
                if not readable:
                    continue
                pixels = normalize(pixels[readable].to(self.accelerator.device))
                with self.accelerator.autocast():
                    logits = self.model(pixels)[0]
                probability = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
                truths = [alphas[i] for i in readable]
                for matte, truth in zip(mattes_at(probability, [truth.shape for truth in truths]), truths):
                    meter.record(score_matte(matte, truth, matting=False))  # as ormbg.evaluate scores it
            results[name] = meter.result()
        self.model.train()
        return results

    def record(self, entry: dict[str, Any]) -> None:
        """Append to metrics.jsonl (and the --log-with tracker, as flat `val/<set>/<measure>` scalars)."""
        self.result.history.append(entry)
        if self.accelerator.is_main_process:
            with open(self.result.out / "metrics.jsonl", "a", encoding="utf-8") as file:
                file.write(json.dumps(entry) + "\n")
        if self.config.log_with:
            scalars = {f"train/{k}": v for k, v in entry.items() if k != "step" and isinstance(v, (int, float))}
            for name, scores in entry.get("val", {}).items():
                scalars.update({f"val/{name}/{k}": v for k, v in scores.items() if isinstance(v, (int, float))})
            self.accelerator.log(scalars, step=entry["step"])

    def after_validation(self, scores: dict[str, dict[str, float]]) -> bool:
        """Record, checkpoint, and say whether to stop early."""
        self.record({"step": self.result.step, "val": scores})
        mae = float(np.mean([s["mae"] for s in scores.values()])) if scores else float("nan")
        if scores and mae < self.result.best_mae:
            self.result.best_mae, self.bad_validations = mae, 0
            self.save("best")
        elif scores:
            self.bad_validations += 1
        self.save("last")
        if self.accelerator.is_main_process:
            plot_curves(self.result.out / "metrics.jsonl", self.result.out / "curves.png")
        return bool(self.config.patience) and self.bad_validations >= self.config.patience

    # ----- the loop -----
    def fit(self) -> TrainResult:
        """Train; the run folder is locked (records.dataset_lock) by the main process while it runs, so a second run
        or --resume on the same folder is refused instead of writing over this one."""
        from contextlib import nullcontext

        from datagen.records import dataset_lock

        with dataset_lock(self.result.out) if self.accelerator.is_main_process else nullcontext():
            return self._fit()

    def prepare_folder(self) -> None:
        """Refuse a folder holding another run (unless --resume or --overwrite); for a new run, clear what an earlier
        run left and write config.yaml (the global batch in a comment line at its top)."""
        config, out = self.config, self.result.out
        if not config.resume and not config.overwrite and any((out / name).exists() for name in RUN_FILES):
            if not (out / "last.pt").is_file():
                raise InputError(
                    f"run folder {out} holds a run that stopped before its first checkpoint (no last.pt to resume "
                    "from): start it again with --overwrite, or give a new --out"
                )
            raise InputError(f"run folder {out} has a run; pass --resume or a new --out (or --overwrite)")
        out.mkdir(parents=True, exist_ok=True)
        if not config.resume:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / "batches", ignore_errors=True)
            header = f"# {self.global_batch_text()}\n"  # a comment: config.yaml stays a file of TrainConfig fields
            write_atomic(out / "config.yaml", (header + yaml.safe_dump(config.to_dict(), sort_keys=False)).encode())
        log.info("%s; run folder %s", self.global_batch_text(), out)

    def _fit(self) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        out = self.result.out
        if accelerator.is_main_process:  # rank 0 alone looks and writes; the others wait (they would see its files)
            self.prepare_folder()
        accelerator.wait_for_everyone()
        if config.resume:
            self.restore()
        if config.log_with:
            flat = {
                k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in config.to_dict().items()
            }
            accelerator.init_trackers(out.name, config=flat)
        batches = self.train_batches(self.result.step)
        if not config.resume and self.val_sets:
            self.record({"step": 0, "val": self.validate()})  # the untrained baseline, the curve's first point
        self.model.train()
        from tqdm import tqdm

        bar = tqdm(
            total=config.max_steps,
            initial=self.result.step,
            desc="train",
            unit="step",
            disable=not (config.progress and accelerator.is_main_process),
        )
        window_start, window_images, losses = time.perf_counter(), 0, []
        dumped = None  # RUN/batches/'s resume state, read at the first dumped batch
        while self.result.step < config.max_steps:
            for micro in range(config.grad_accum):
                pixels, alpha, unreadable, what = next(batches)
                self.bad.add_json(unreadable)
                if self.result.step < config.dump_batches and accelerator.is_main_process:
                    dumped = dumped or ResumeState.read(out / "batches")
                    dump_batch(dumped, self.result.step * config.grad_accum + micro, pixels, alpha, what)
                pixels, alpha = normalize(pixels.to(accelerator.device)), alpha.to(accelerator.device)
                if config.channels_last:
                    pixels = pixels.contiguous(memory_format=torch.channels_last)
                with accelerator.autocast():
                    logits = self.model(pixels)
                parts = ormbg_loss(logits, alpha, config.losses)
                accelerator.backward(parts["loss"] / config.grad_accum)
                losses.append(torch.stack([value.detach() for value in parts.values()]))  # no GPU sync here
                window_images += pixels.shape[0] * accelerator.num_processes
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.result.step += 1
            bar.update(1)
            if self.result.step % config.log_every == 0 or self.result.step == config.max_steps:
                rate = window_images / max(1e-9, time.perf_counter() - window_start)
                window = accelerator.reduce(torch.stack(losses).mean(dim=0), reduction="mean")  # over ranks
                entry = dict(zip(parts, window.tolist()))
                entry.update(step=self.result.step, lr=self.scheduler.get_last_lr()[0], images_per_s=rate)
                self.record(entry)
                bar.set_postfix(loss=f"{entry['loss']:.3f}", img_s=f"{rate:.1f}")
                window_start, window_images, losses = time.perf_counter(), 0, []
            if self.result.step % config.val_every == 0 or self.result.step == config.max_steps:
                if self.after_validation(self.validate()):
                    self.result.stopped_early = True
                    break
        bar.close()
        if config.log_with:
            accelerator.end_training()
        self.result.bad_samples = dict(self.bad.seen)
        return self.result


def dump_batch(state: ResumeState, micro_step: int, pixels: torch.Tensor, alpha: torch.Tensor, what: list[str]) -> None:
    """One batch as the model saw it (after augmentation), as rows of an ordinary dataset directory (`state.root`):
    image, alpha, and what made each sample (its file, or an online composite's drawn parameters). A sample with its
    row is kept (a resumed run); one whose row a kill lost is written again (a batch's bytes do not change)."""
    images = pixels.permute(0, 2, 3, 1).numpy()
    alphas = np.rint(alpha[:, 0].numpy() * 255).astype(np.uint8)
    for slot, (image, matte, made) in enumerate(zip(images, alphas, what)):
        sample_id = f"batch-{micro_step:07d}-{slot:03d}"
        if state.is_done("train", sample_id):
            continue
        metadata = {"source": "training batch", "step": micro_step, "slot": slot, "made_from": made}
        image = np.ascontiguousarray(image)
        state.add(
            "train", write_sample_files(state.root, "train", sample_id, image=image, alpha=matte, metadata=metadata)
        )


def check_resumable(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse a --resume whose options (`config`) differ from those of the checkpoint at `path` (`saved`) in anything
    but RESUME_MAY_CHANGE, naming each difference."""
    given = config.to_dict()
    differ = sorted(key for key in given if key not in RESUME_MAY_CHANGE and saved.get(key) != given[key])
    if differ:
        changes = "; ".join(f"{key}: run {saved.get(key)!r}, now {given[key]!r}" for key in differ)
        raise InputError(
            f"--resume from {path} with other options ({changes}): resume with the run's own options (leave them "
            "out: --resume reads config.yaml), or start a new run in another --out"
        )


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of metrics.jsonl up to `step` (the checkpoint a --resume continues from): rows a killed run wrote
    after its last checkpoint are written again by the resumed one, never twice."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]
    if kept != lines:
        write_atomic(path, "".join(kept).encode())


def run_train(config: TrainConfig) -> TrainResult:
    then = f"`--out {config.out} --resume` continues from its last checkpoint"
    with crash_report("python -m ormbg.train", config.out, then):
        return Trainer(config).fit()


def _default(name: str) -> str:
    """The TrainConfig default of field `name`, for option help (one place for defaults: the dataclass)."""
    return f"  [default: {TrainConfig.__dataclass_fields__[name].default}]"


def config_values(config_file: str | os.PathLike) -> dict[str, Any]:
    """TrainConfig fields from a YAML file (a run's own config.yaml round-trips, its recipe included); unknown
    fields and bad values are errors naming the file and the key."""
    values = yaml.safe_load(Path(config_file).read_text()) or {}
    if not isinstance(values, dict):
        raise InputError(f"{config_file}: expected a mapping of TrainConfig fields")
    unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise InputError(f"{config_file}: unknown fields {sorted(unknown)}")
    if values.get("losses") is not None:
        known = {f.name for f in dataclasses.fields(LossWeights)}
        if not isinstance(values["losses"], dict) or set(values["losses"]) - known:
            wrong = sorted(set(values["losses"]) - known) if isinstance(values["losses"], dict) else values["losses"]
            raise InputError(f"{config_file}: `losses` has unknown keys {wrong} (use {sorted(known)})")
        values["losses"] = LossWeights(**values["losses"])
    if values.get("recipe") is not None:
        values["recipe"] = Recipe.from_dict(values["recipe"], str(config_file))
    for key in ("out", "init"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    return values


def resolve_config(options: dict[str, Any], recipe=None, data=(), compose=(), val=(), config_file=None) -> TrainConfig:
    """The run's config from the command line, by precedence: the options given, then a --config file (with
    --resume and no --config: the run's own config.yaml, so a resumed run keeps its options), then the defaults.
    The data: --data/--compose (with --val) replace the recipe; --recipe or --val alone keep the other half of the
    config's recipe (or datasets/recipes/default.yaml)."""
    saved = Path(options.get("out") or "") / "config.yaml"
    if not config_file and options.get("resume") and options.get("out") and saved.is_file():
        config_file = saved
    values = config_values(config_file) if config_file else {}
    values.update({key: value for key, value in options.items() if value is not None})
    if data or compose:
        values["recipe"] = Recipe.parse(list(data), list(val), compose)
    elif recipe or val:
        base = Recipe.load(recipe) if recipe else values.get("recipe") or Recipe.load(DEFAULT_RECIPE)
        validation = Recipe.parse([], list(val)).validation if val else base.validation
        values["recipe"] = Recipe(base.train, validation)
    return TrainConfig(**values)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--recipe",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help=f"Recipe YAML  [default: {DEFAULT_RECIPE}, relative to where you run, unless --data or --config gives one].",
)
@click.option("--data", multiple=True, help="Training source DIR[:SPLIT[:WEIGHT]] (repeatable; replaces the recipe's).")
@click.option(
    "--compose",
    multiple=True,
    help="Composites made in training: fg=DIR[:SPLIT],bg=DIR[:SPLIT][,fg=...][,bg=...][,weight=W][,preset=P]"
    "[,config=FILE][,occluders=DIR] (repeatable; mixed with --data by weight; replaces the recipe's).",
)
@click.option(
    "--compose-cache-mb",
    type=float,
    default=None,
    help="Decoded pool images kept per DataLoader worker for --compose." + _default("compose_cache_mb"),
)
@click.option(
    "--dump-batches",
    type=click.IntRange(min=0),
    default=None,
    help="Write the first N steps' batches, as the model saw them, to RUN/batches/ (a dataset directory).",
)
@click.option(
    "--val",
    multiple=True,
    help="Validation set DIR[:SPLIT] (repeatable; replaces the recipe's; split default: validation). Checkpoints "
    "are selected on these: keep test splits (benchmarks) out.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder  [default: runs/<timestamp>].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML of TrainConfig fields, such as a run's config.yaml (the options given here override it).",
)
@click.option("--size", type=int, default=None, help="Training side in px." + _default("size"))
@click.option("--batch-size", type=int, default=None, help="Images per step and process." + _default("batch_size"))
@click.option("--grad-accum", type=int, default=None, help="Micro-batches per optimizer step." + _default("grad_accum"))
@click.option("--max-steps", type=int, default=None, help="Optimizer steps." + _default("max_steps"))
@click.option("--val-every", type=int, default=None, help="Steps between validations." + _default("val_every"))
@click.option("--log-every", type=int, default=None, help="Steps between loss records." + _default("log_every"))
@click.option("--lr", type=float, default=None, help="Peak learning rate (AdamW)." + _default("lr"))
@click.option("--warmup-steps", type=int, default=None, help="Linear warm-up, then cosine." + _default("warmup_steps"))
@click.option(
    "--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None, help="Autocast." + _default("precision")
)
@click.option(
    "--channels-last/--no-channels-last", default=None, help="NHWC memory format." + _default("channels_last")
)
@click.option("--compile/--no-compile", default=None, help="torch.compile the model." + _default("compile"))
@click.option("--workers", type=int, default=None, help="DataLoader worker processes." + _default("workers"))
@click.option("--seed", type=int, default=None, help="Batches and augmentation draw from it." + _default("seed"))
@click.option(
    "--patience",
    type=int,
    default=None,
    help="Stop after N validations without gain (0: never)." + _default("patience"),
)
@click.option("--init", type=click.Path(path_type=Path), default=None, help="Start from ormbg.pth or our weights.")
@click.option(
    "--width-divisor",
    type=click.Choice(["1", "2", "4", "8", "16"]),
    default=None,
    callback=lambda c, p, v: int(v) if v else None,
    help="Every channel count divided by it (1: the published ORMBG; 8: 1/64 of the parameters, for quick "
    "experiments)." + _default("width_divisor"),
)
@click.option(
    "--resume",
    is_flag=True,
    default=None,
    help="Continue the run in --out from its last.pt, with its config.yaml's options (other values of the options "
    "that shape training are refused).",
)
@click.option("--overwrite", is_flag=True, default=None, help="Replace the run that --out holds.")
@click.option(
    "--max-bad-samples",
    type=click.IntRange(min=0),
    default=None,
    help="Unreadable samples skipped (listed in bad_samples.jsonl) before the run stops  [default: 1% of them].",
)
@click.option(
    "--log-with",
    type=click.Choice(["tensorboard", "wandb"]),
    default=None,
    help="Also log losses and validation scores to TensorBoard (RUN/tracking/) or Weights & Biases (needs "
    "`pip install tensorboard` or `wandb`), beside metrics.jsonl and curves.png.",
)
@click.option("--progress/--no-progress", default=None, help="Show a progress bar.")
@click.version_option(__version__, prog_name="ormbg")
@logging_options(logging.INFO)
def main(recipe, data, compose, val, config_file, **options) -> None:
    """Train ORMBG on a weighted mix of dataset directories.

    \b
    python -m ormbg.train                                     # datasets/recipes/default.yaml -> runs/<timestamp>
    python -m ormbg.train --data datasets/composites:train:0.6 --data datasets/p3m:train:0.4 \\
        --val datasets/composites:validation --size 1024 --batch-size 8 --precision bf16 --channels-last
    python -m ormbg.train --out runs/x --resume               # continue exactly where it stopped, same options
    python -m ormbg.train --config runs/x/config.yaml --out runs/y   # the same run again
    accelerate launch -m ormbg.train ...                      # several GPUs or machines

    Writes last.pt / best.pt (model, optimizer, scheduler, step, config, RNG states), the weights as .safetensors,
    metrics.jsonl, curves.png and config.yaml into the run folder.
    """
    with user_errors():
        result = run_train(resolve_config(options, recipe, data, compose, val, config_file))
    if not result.main_process:
        return  # rank 0 reports for the run
    bad = f"; {len(result.bad_samples)} unreadable samples skipped (bad_samples.jsonl)" if result.bad_samples else ""
    best = f"best validation MAE {result.best_mae:.4f}" if math.isfinite(result.best_mae) else "no validation set"
    click.echo(
        f"trained to step {result.step}; {best}; "
        f"{'stopped early; ' if result.stopped_early else ''}results in {result.out}{bad}"
    )


if __name__ == "__main__":
    main()
