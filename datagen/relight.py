"""`datagen relight SRC`: IC-Light relights the person of each photo row; the alpha file is the input's, unchanged.

IC-Light (Zhang, Rao and Agrawala; facts from its public demo) is Stable Diffusion 1.5 whose UNet `conv_in` takes 8
input channels (`fc`: the noisy latent + the foreground's latent) or 12 (`fbc`: + the background's); the new input
channels start at zero, the first 4 copy the original weights, and the published file is an offset added to every
key of that widened UNet. The conditioning latents are `vae.encode(x).latent_dist.mode() * scaling_factor` of the
foreground on grey 127 (and of the background), concatenated to the noisy latent at every step. A low-resolution
pass is followed by an img2img pass at `highres_scale` times the size with denoise `highres_denoise`.

Per row: the person on grey (image * a + 127 * (1 - a)) and the background it stands on (the photo with the
person's area filled in by OpenCV's inpainting) condition the model; the relit frame is scored against the alpha
(`alignment_scores`: IC-Light regenerates every pixel, so a person can move, grow hair or lose an arm), retried with
the next seed below the thresholds, then skipped and recorded; an accepted relit person F' is composited with the
unchanged alpha over that background: I' = a F' + (1 - a) B. Outside the person (a = 0) the image keeps its bytes'
values, and the alpha file is copied unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from datagen.alpha import over
from datagen.card import write_card
from datagen.cluster import check_shared_paths, ray_map
from datagen.console import DATA_ROOT, option
from datagen.errors import InputError
from datagen.io import ImageReadError, read_pair, write_atomic
from datagen.parallel import pick_device, reuse_freed_memory, torch_dtype
from datagen.records import (
    Sample,
    Skip,
    StageResult,
    chosen_splits,
    iter_samples,
    rejected_ids,
    resolve_shard,
    write_sample_files,
)
from datagen.stage import stage_run
from datagen.weights import MissingModelError, merge_offset

WEIGHTS = "lllyasviel/ic-light"  # Hub repo of the offsets
WEIGHT_FILES = {"fc": "iclight_sd15_fc.safetensors", "fbc": "iclight_sd15_fbc.safetensors"}
BASE = "stablediffusionapi/realistic-vision-v51"  # the SD1.5 checkpoint of IC-Light's demo
CONDITION_CHANNELS = {"fc": 4, "fbc": 8}
LIGHTING = [  # a bank of lighting descriptions, drawn per row from (seed, index, attempt) like synth's prompts
    "soft window light from the left",
    "warm sunset light from the right",
    "golden hour backlight, rim light",
    "cool blue evening light",
    "neon light, city at night",
    "overcast daylight, soft shadows",
    "studio key light from above",
    "candle light, warm and dim",
    "bright midday sun, hard shadows",
    "light from a window behind, soft glow",
]
NEGATIVE = "lowres, bad anatomy, bad hands, cropped, worst quality"


def widen_conv_in(unet, condition_channels: int):
    """Give the UNet's `conv_in` 4 + `condition_channels` inputs: the first 4 keep their weights, the new ones start
    at zero (the model is unchanged until the offset is added). Returns the UNet."""
    import torch

    old = unet.conv_in
    new = torch.nn.Conv2d(old.in_channels + condition_channels, old.out_channels, old.kernel_size, old.stride,
                          old.padding)  # fmt: skip
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels + condition_channels)
    return unet


def alignment_scores(before: np.ndarray, after: np.ndarray, alpha: np.ndarray) -> dict[str, float]:
    """How well a relit frame `after` still lines up with the alpha that `before` had (HxWx3 uint8, alpha HxW uint8).

    - `relight_edge_ratio`: the correlation of image-gradient magnitude with alpha-gradient magnitude in the edge
      band, after / before. A person that moved or changed shape has its edges off the alpha's: the ratio drops.
    - `relight_spill`: the mean colour change in a ring just outside the person (0 < distance <= 6 px), divided by
      the mean change inside (a = 1): a relit person that grew beyond its alpha changes the ring more than itself.
    """
    alpha_f = alpha.astype(np.float32) / 255
    alpha_grad = _gradient(alpha_f)
    band = cv2.dilate((alpha_grad > 0.02).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0

    def edge_correlation(image: np.ndarray) -> float:
        grad = _gradient(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255)
        a, b = grad[band], alpha_grad[band]
        if a.size < 10 or a.std() < 1e-6 or b.std() < 1e-6:
            return 0.0
        return float(np.corrcoef(a, b)[0, 1])

    reference = edge_correlation(before)
    ratio = edge_correlation(after) / reference if reference > 1e-3 else 1.0
    change = np.abs(after.astype(np.float32) - before.astype(np.float32)).mean(axis=2)
    outside = alpha == 0
    distance = cv2.distanceTransform(outside.astype(np.uint8), cv2.DIST_L2, 3)
    ring, inside = outside & (distance <= 6), alpha == 255
    spill = float(change[ring].mean() / (change[inside].mean() + 1.0)) if ring.any() and inside.any() else 0.0
    return {"relight_edge_ratio": round(float(ratio), 4), "relight_spill": round(spill, 4)}


def _gradient(gray: np.ndarray) -> np.ndarray:
    return cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))


@dataclass(frozen=True)
class AlignmentThresholds:
    min_edge_ratio: float = 0.7  # relit edges must keep 70% of the original's correlation with the alpha's
    max_spill: float = 3.0  # the ring outside may change at most 3x as much as the person (+1 level): gross growth

    @classmethod
    def accept_all(cls) -> AlignmentThresholds:
        return cls(min_edge_ratio=-float("inf"), max_spill=float("inf"))

    def rejection(self, scores: dict[str, float]) -> str | None:
        if scores["relight_edge_ratio"] < self.min_edge_ratio:
            return "misaligned edges"
        if scores["relight_spill"] > self.max_spill:
            return "spill outside the alpha"
        return None


def condition_inputs(image: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the person on grey 127, the background with the person's area inpainted), HxWx3 uint8, from a photo row."""
    person = over(np.dstack([image, alpha]), np.full_like(image, 127))
    hole = cv2.dilate((alpha > 0).astype(np.uint8) * 255, np.ones((5, 5), np.uint8))
    background = cv2.inpaint(image, hole, 5, cv2.INPAINT_TELEA)
    background[alpha == 0] = image[alpha == 0]  # outside the person: the photo's own pixels
    return person, background


class Relighter:
    """IC-Light on a Stable Diffusion 1.5 pipeline: `relight(person, background, prompt, seed) -> HxWx3 uint8`."""

    def __init__(self, pipeline, model: str, steps: int = 25, guidance: float = 2.0, size_px: int = 640,
                 highres_scale: float = 1.5, highres_denoise: float = 0.5):  # fmt: skip

        self.pipeline, self.model = pipeline, model
        self.steps, self.guidance, self.size_px = steps, guidance, size_px
        self.highres_scale, self.highres_denoise = highres_scale, highres_denoise
        self.device, self.dtype = pipeline.unet.device, pipeline.unet.dtype

    def _encode(self, image: np.ndarray):
        import torch

        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].to(self.device, self.dtype) / 127.5 - 1
        vae = self.pipeline.vae
        return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor

    def _prompt(self, prompt: str):
        import torch

        embeddings = []
        for text in (NEGATIVE, prompt):
            tokens = self.pipeline.tokenizer(text, padding="max_length", truncation=True, return_tensors="pt",
                                             max_length=self.pipeline.tokenizer.model_max_length)  # fmt: skip
            embeddings.append(self.pipeline.text_encoder(tokens.input_ids.to(self.device))[0])
        return torch.cat(embeddings).to(self.dtype)

    def _denoise(self, latents, condition, embeddings, timesteps):
        import torch

        scheduler, unet = self.pipeline.scheduler, self.pipeline.unet
        for t in timesteps:
            doubled = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise = unet(torch.cat([doubled, torch.cat([condition] * 2)], dim=1), t, encoder_hidden_states=embeddings)
            uncond, cond = noise.sample.chunk(2)
            latents = scheduler.step(uncond + self.guidance * (cond - uncond), t, latents).prev_sample
        return latents

    def _pass(self, person, background, embeddings, generator, size, start: np.ndarray | None = None):
        """One pass at `size` (W, H): from noise, or (img2img) from `start` at strength highres_denoise."""
        import torch

        scheduler = self.pipeline.scheduler
        fit = [cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in (person, background)]
        condition = torch.cat([self._encode(fit[0])] + ([self._encode(fit[1])] if self.model == "fbc" else []), dim=1)
        shape = (1, 4, size[1] // 8, size[0] // 8)
        noise = torch.randn(shape, generator=generator, device="cpu", dtype=torch.float32).to(self.device, self.dtype)
        scheduler.set_timesteps(self.steps, device=self.device)
        timesteps = scheduler.timesteps
        if start is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            skip = int(len(timesteps) * (1 - self.highres_denoise))
            timesteps = timesteps[skip:]
            resized = cv2.resize(start, size, interpolation=cv2.INTER_LANCZOS4)
            latents = scheduler.add_noise(self._encode(resized), noise, timesteps[:1])
        latents = self._denoise(latents, condition, embeddings, timesteps)
        decoded = self.pipeline.vae.decode(latents / self.pipeline.vae.config.scaling_factor).sample
        return ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()

    def relight(self, person: np.ndarray, background: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        """The relit frame at the input's size (HxWx3 uint8)."""
        import torch

        height, width = person.shape[:2]
        scale = self.size_px / max(height, width)
        low = (max(64, round(width * scale / 64) * 64), max(64, round(height * scale / 64) * 64))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            embeddings = self._prompt(prompt)
            frame = self._pass(person, background, embeddings, generator, low)
            if self.highres_scale > 1:
                high = tuple(max(64, round(side * self.highres_scale / 64) * 64) for side in low)
                frame = self._pass(person, background, embeddings, generator, high, start=frame)
        return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def load_relighter(config: RelightConfig) -> Relighter:
    """The SD1.5 pipeline of `config.model`, its UNet widened and the IC-Light offset of `config.weights` merged."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    device = pick_device(config.device)
    dtype = torch_dtype(config.dtype, device)
    try:
        pipeline = StableDiffusionPipeline.from_pretrained(
            config.model, safety_checker=None, local_files_only=config.offline
        )
    except (OSError, ValueError) as error:
        raise MissingModelError(
            f"cannot load the SD1.5 base {config.model} ({str(error).splitlines()[0]}): with Hub access run "
            f"`hf download {config.model}`, or pass --model with a local folder"
        ) from error
    offset_path = Path(config.weights)
    if not offset_path.is_file():
        from huggingface_hub import hf_hub_download

        try:
            offset_path = Path(
                hf_hub_download(config.weights, WEIGHT_FILES[config.variant], local_files_only=config.offline)
            )
        except Exception as error:  # any Hub failure means: the file is not here; say how to get it
            raise MissingModelError(
                f"cannot find the IC-Light offset {WEIGHT_FILES[config.variant]} of {config.weights}: with Hub access "
                f"run `hf download {config.weights} {WEIGHT_FILES[config.variant]}`, or pass --weights with the file"
            ) from error
    widen_conv_in(pipeline.unet, CONDITION_CHANNELS[config.variant])
    merge_offset(
        pipeline.unet, load_file(str(offset_path)), every_key=True, what=f"the IC-Light offset {offset_path.name}"
    )
    pipeline = pipeline.to(device, dtype)
    return Relighter(pipeline, config.variant, config.steps, config.guidance, config.size_px, config.highres_scale,
                     config.highres_denoise)  # fmt: skip


@dataclass(frozen=True)
class RelightConfig:
    src: Path  # a dataset directory with photo rows (composites, imports)
    out: Path = option(Path(DATA_ROOT) / "relit", "Dataset directory to write.")
    variant: str = option(
        "fbc",
        "fbc: conditioned on the background the person stands on; fc: text and foreground only.",
        type=click.Choice(list(WEIGHT_FILES)),
    )
    weights: str = option(WEIGHTS, "Hub repo of the IC-Light offsets, or the offset file.")
    model: str = option(BASE, "SD1.5 Hub id or local folder (IC-Light's demo uses this one).")
    prompts: Path | None = option(
        None,
        "Lighting descriptions, one per line  [default: a built-in bank].",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
    )
    steps: int = option(25, type=click.IntRange(min=1))
    guidance: float = option(2.0)
    size_px: int = option(
        640, "Long side of the first pass (then --highres-scale times it, img2img).", flags=("--size",),
        type=click.IntRange(min=64),
    )  # fmt: skip
    highres_scale: float = option(1.5)  # the img2img pass's size over the first's (1: none)
    highres_denoise: float = 0.5
    n: int | None = option(None, "Only the first N photo rows.", type=click.IntRange(min=1))
    seed: int = option(0, "Row i draws its prompts and seeds from (seed, i, attempt).")
    max_attempts: int = option(3, "Draws per row before it is skipped.", type=click.IntRange(min=1))
    thresholds: AlignmentThresholds = option(
        factory=AlignmentThresholds,
        help="Alignment check: relit edges keep this share of the original's correlation with the alpha's.",
        flags=("--min-edge-ratio",),
        type=float,
        cli_default=AlignmentThresholds.min_edge_ratio,
    )  # a number (the command line's --min-edge-ratio) becomes AlignmentThresholds(min_edge_ratio=it)
    device: str = option("auto")
    dtype: str = option("fp16")
    offline: bool = option(False)
    shard: tuple[int, int] | None = option(None)
    ray: str | None = option(None)  # relight on Ray (datagen.cluster): its address, or "local"; None: here
    progress: bool = option(True)

    def __post_init__(self) -> None:
        if self.variant not in WEIGHT_FILES:
            raise InputError(f"variant must be fc or fbc, got {self.variant!r}")
        if isinstance(self.thresholds, (int, float)):
            object.__setattr__(self, "thresholds", AlignmentThresholds(min_edge_ratio=float(self.thresholds)))
        if self.steps < 1 or self.max_attempts < 1 or not 0 < self.highres_denoise <= 1:
            raise InputError("steps and max_attempts must be >= 1, highres_denoise in (0, 1]")
        if self.size_px < 64 or self.size_px % 64:
            raise InputError(f"--size {self.size_px}: the first pass's long side must be a multiple of 64, 64 or more")
        if not 1 <= self.highres_scale <= 4:
            raise InputError(f"--highres-scale {self.highres_scale}: use 1 (no second pass) up to 4")
        if self.prompts is not None and not read_prompts(self.prompts):
            raise InputError(f"--prompts {self.prompts}: no lighting description in it (one per line)")
        object.__setattr__(self, "shard", resolve_shard(self.shard))
        check_shared_paths(self.ray, {"SRC": self.src, "--out": self.out, "--prompts": self.prompts})


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The lighting descriptions of a --prompts file: its non-blank lines, stripped (a missing file: one line)."""
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as error:
        raise InputError(f"--prompts {path}: cannot read it ({error.strerror})") from None


@dataclass
class RelightResult(StageResult):
    rejected: dict[str, int] = field(default_factory=dict)  # attempts rejected, by reason

    def summary_parts(self) -> list[str]:
        return [f"rejected attempts: {', '.join(f'{reason} {n}' for reason, n in self.rejected.items()) or 'none'}"]


def _rows(config: RelightConfig) -> Iterator[tuple[int, Sample]]:
    """(index, photo sample) of SRC in split and row order (test splits are benchmarks: left out), up to n. Rejected
    samples (rejected.jsonl) are left out but keep their index, so a rejection changes no other sample's draw."""
    index, rejected = 0, rejected_ids(config.src)
    for split in [s for s in chosen_splits(config.src, what="relight") if s != "test"]:
        for sample in iter_samples(config.src, split, include_rejected=True):
            if sample.path("image") and sample.path("alpha"):
                if config.n is not None and index >= config.n:
                    return
                if sample.id not in rejected:
                    yield index, sample
                index += 1


def run_relight(
    config: RelightConfig, relighter: Relighter | None = None, command: str = "datagen relight"
) -> RelightResult:
    """Relight SRC's photo rows into OUT (this shard's share); see the module docstring. Resumes."""
    if relighter is not None and config.ray:
        raise ValueError("a relighter passed in runs in this process only: leave config.ray unset")
    result = RelightResult(Path(config.out))
    bank = read_prompts(config.prompts) if config.prompts else LIGHTING
    with stage_run(result, config, command, shard=config.shard, ray=config.ray) as run:
        index, count = config.shard
        mine = [(i, s) for i, s in _rows(config) if i % count == index]
        todo = [(i, s) for i, s in mine if not run.state.is_done(s.split, s.id)]
        result.existing = len(mine) - len(todo)
        outcomes = _outcomes(config, relighter, todo, bank, result.rejected)
        run.collect(todo, outcomes, lambda item: item[1].split, "relight", "image", config.progress)
        if run.state.rowed and any(run.state.rowed.values()):
            what = f"IC-Light ({config.variant}, {config.weights} on {config.model})"
            write_card(config.out, "ormbg relit", f"Photo rows of {Path(config.src).name} relit with {what} by "
                       "`datagen relight`; the alpha files are the input's, byte for byte; each row records its "
                       "prompt, seed and alignment scores.")  # fmt: skip
    return result


class _Worker:
    """Per-process state of a Ray relight worker (an actor): the config, the prompt bank and the loaded IC-Light."""

    config: RelightConfig
    bank: list[str]
    relighter: Relighter


def _init_worker(config: RelightConfig, bank: list[str]) -> None:
    _Worker.config, _Worker.bank, _Worker.relighter = config, bank, load_relighter(config)


def relight_item(item: tuple[int, Sample]) -> tuple[dict[str, Any] | Skip, dict[str, int]]:
    """On a Ray worker: one row relit as a local run relights it, and the attempts it rejected by reason."""
    rejected: dict[str, int] = {}
    return relight_one(_Worker.config, _Worker.relighter, *item, _Worker.bank, rejected), rejected


def _outcomes(config: RelightConfig, relighter: Relighter | None, todo: list[tuple[int, Sample]], bank: list[str],
              rejected: dict[str, int]) -> Iterator[dict[str, Any] | Skip]:  # fmt: skip
    """Each row's row or Skip, in order: in this process, or on Ray's actors (one per GPU, IC-Light loaded once
    each; one per CPU with --device cpu). Rejected attempts are counted into `rejected`."""
    if config.ray:
        options = {"gpus": 0 if config.device == "cpu" else 1, "actors": True, "batch_size": RAY_BATCH}
        for outcome, theirs in ray_map(relight_item, todo, config.ray, _init_worker, (config, bank), **options):
            for reason, count in theirs.items():
                rejected[reason] = rejected.get(reason, 0) + count
            yield outcome
        return
    relighter = relighter or (load_relighter(config) if todo else None)
    if todo:
        reuse_freed_memory()  # once the model is loaded, as refine does: its frames reuse freed memory
    for index, sample in todo:
        yield relight_one(config, relighter, index, sample, bank, rejected)


RAY_BATCH = 2  # rows per actor call: each takes seconds on a GPU (two diffusion passes per attempt)


def relight_one(config: RelightConfig, relighter: Relighter, index: int, sample: Sample, bank: list[str],
                rejected: dict[str, int]) -> dict[str, Any] | Skip:  # fmt: skip
    """Relight one row until a draw passes the alignment check; write its files and return its row (or a Skip)."""
    try:
        image, alpha = read_pair(sample.path("image"), sample.path("alpha"))
    except ImageReadError as error:
        return Skip(error.path, f"unreadable input: {error.reason}")
    person, background = condition_inputs(image, alpha)
    for attempt in range(config.max_attempts):
        rng = np.random.default_rng([config.seed, index, attempt])
        prompt, seed = bank[int(rng.integers(len(bank)))], int(rng.integers(2**31))
        frame = relighter.relight(
            person, background if config.variant == "fbc" else np.full_like(image, 127), prompt, seed
        )
        scores = alignment_scores(image, frame, alpha)
        reason = config.thresholds.rejection(scores)
        if reason is None:
            break
        rejected[reason] = rejected.get(reason, 0) + 1
    else:
        return Skip(
            str(sample.path("image")), f"no relight passed the alignment check in {config.max_attempts} attempts"
        )
    relit = over(np.dstack([frame, alpha]), background)  # the relit person, unchanged alpha, the original background
    metadata = {
        key: value
        for key, value in sample.row.items()
        if not key.endswith("file_name") and key not in ("id", "width", "height")
    }
    metadata["license"] = (
        f"{sample.row.get('license', 'unknown')}; relit with IC-Light ({config.weights} on {config.model}): "
        "those models' licences apply too"
    )
    metadata.update(relight_model=config.variant, relight_weights=config.weights, relight_base=config.model,
                    relight_prompt=prompt, relight_seed=seed, relight_attempt=attempt, relight_source=sample.id,
                    **scores)  # fmt: skip
    row = write_sample_files(config.out, sample.split, sample.id, image=relit, alpha=None, metadata=metadata)
    return _with_alpha_copy(config, sample, row)


def _with_alpha_copy(config: RelightConfig, sample: Sample, row: dict[str, Any]) -> dict[str, Any]:
    """The input's alpha file copied byte for byte (never re-encoded) into OUT; the row names it."""
    relative = f"gt/{sample.id}.png"
    write_atomic(Path(config.out) / sample.split / relative, sample.path("alpha").read_bytes())
    return {"id": row["id"], "file_name": row["file_name"], "alpha_file_name": relative,
            **{k: v for k, v in row.items() if k not in ("id", "file_name")}}  # fmt: skip
