"""Compose configuration: the augmentation ranges (presets none / default / strong, or YAML) and the run."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from datagen.cluster import check_shared_paths
from datagen.console import DATA_ROOT, SIZE, option
from datagen.errors import InputError
from datagen.records import resolve_shard

Range = tuple[float, float]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges (low, high) drawn uniformly and probabilities (`*_p`) of every compose step.

    Lengths are fractions of the output height so one config works at any size.
    """

    # 1. background
    bg_crop_scale: Range = (0.6, 1.0)  # crop side / largest crop of the output's aspect ratio
    bg_flip_p: float = 0.5
    defocus_p: float = 0.5  # bokeh-like disc blur of the background
    defocus_radius: Range = (0.002, 0.012)
    bg_brightness: Range = (0.8, 1.2)
    bg_contrast: Range = (0.8, 1.2)
    bg_saturation: Range = (0.7, 1.3)
    # 2. placement of the person (its alpha bounding box)
    fg_height: Range = (0.35, 1.3)  # bbox height / frame height; above 1 the person is cut by the frame
    fg_top: Range = (-0.05, 0.4)  # bbox top / frame height
    fg_center_x: Range = (0.05, 0.95)  # bbox centre / frame width; near the edges the person is cut
    rotation_deg: Range = (-8.0, 8.0)
    fg_flip_p: float = 0.5
    # 3. lighting (the alpha is untouched)
    transfer_p: float = 0.8  # colour statistics transfer towards the background, in CIELAB
    transfer_strength: Range = (0.2, 0.7)
    temperature: Range = (-0.08, 0.08)  # red gain +t, blue gain -t
    fg_brightness: Range = (0.85, 1.15)
    gradient_p: float = 0.5  # directional light across the person
    gradient_strength: Range = (0.1, 0.4)
    # 4. shadow (darkens the background only)
    shadow_p: float = 0.4
    cast_shadow_p: float = 0.5  # otherwise a contact shadow at the feet
    shadow_opacity: Range = (0.2, 0.6)
    shadow_blur: Range = (0.005, 0.03)
    shadow_shear: Range = (-0.9, 0.9)
    shadow_squash: Range = (0.08, 0.35)  # shadow height / person height
    # 5. occlusion and extra people
    occluder_p: float = 0.15
    occluder_size: Range = (0.1, 0.35)  # occluder height / frame height
    extra_person_p: float = 0.1
    extra_person_height: Range = (0.3, 0.9)
    # 6. camera degradations over the whole image
    noise_p: float = 0.5
    noise_sigma: Range = (1.0, 6.0)  # on 0..255
    motion_p: float = 0.08
    motion_length: Range = (0.004, 0.012)
    subject_motion_p: float = 0.5  # motion of the person only (its alpha blurs too), else the camera's
    jpeg_p: float = 0.5
    jpeg_quality: Range = (55.0, 95.0)
    grain_p: float = 0.2
    grain_strength: Range = (2.0, 6.0)
    grayscale_p: float = 0.03

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_p"):
                if not 0.0 <= value <= 1.0:
                    raise InputError(f"augmentation {item.name}={value}: a probability must be in [0, 1]")
            elif not (isinstance(value, tuple) and len(value) == 2 and value[0] <= value[1]):
                raise InputError(f"augmentation {item.name}={value!r}: give [low, high] with low <= high")

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: AugmentConfig | None = None) -> AugmentConfig:
        """`base` (default: the default preset) with `values` replacing fields; unknown keys are refused."""
        names = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"unknown augmentation keys {unknown}; known: {sorted(names)}")
        fixed = {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}
        return dataclasses.replace(base or cls(), **fixed)

    def to_dict(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }


def _none_preset() -> AugmentConfig:
    """Geometry (crop, scale, flip, placement, rotation) and the blend only: nothing photometric."""
    off = {item.name: 0.0 for item in dataclasses.fields(AugmentConfig) if item.name.endswith("_p")}
    keep = {"bg_flip_p": 0.5, "fg_flip_p": 0.5}
    neutral = {
        "bg_brightness": (1.0, 1.0),
        "bg_contrast": (1.0, 1.0),
        "bg_saturation": (1.0, 1.0),
        "temperature": (0.0, 0.0),
        "fg_brightness": (1.0, 1.0),
    }
    return dataclasses.replace(AugmentConfig(), **{**off, **keep, **neutral})


PRESETS: dict[str, AugmentConfig] = {
    "none": _none_preset(),
    "default": AugmentConfig(),
    "strong": AugmentConfig(
        bg_crop_scale=(0.4, 1.0),
        defocus_p=0.7,
        defocus_radius=(0.002, 0.02),
        bg_brightness=(0.6, 1.4),
        bg_contrast=(0.6, 1.4),
        bg_saturation=(0.4, 1.6),
        fg_height=(0.25, 1.5),
        fg_top=(-0.15, 0.5),
        fg_center_x=(-0.05, 1.05),
        rotation_deg=(-15.0, 15.0),
        transfer_strength=(0.3, 0.9),
        temperature=(-0.15, 0.15),
        fg_brightness=(0.7, 1.3),
        gradient_p=0.7,
        gradient_strength=(0.2, 0.6),
        shadow_p=0.6,
        shadow_opacity=(0.3, 0.8),
        occluder_p=0.3,
        extra_person_p=0.25,
        noise_p=0.7,
        noise_sigma=(2.0, 12.0),
        motion_p=0.2,
        motion_length=(0.005, 0.025),
        jpeg_p=0.7,
        jpeg_quality=(30.0, 90.0),
        grain_p=0.4,
        grain_strength=(3.0, 10.0),
        grayscale_p=0.08,
    ),
}


def load_augment(preset: str, path: str | os.PathLike | None = None) -> AugmentConfig:
    """The preset, with the fields of a YAML file (a mapping of AugmentConfig fields) replacing its values."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    if path is None:
        return PRESETS[preset]
    with open(path, encoding="utf-8") as file:
        values = yaml.safe_load(file) or {}
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of augmentation fields, got {type(values).__name__}")
    return AugmentConfig.from_dict(values, PRESETS[preset])


@dataclass(frozen=True)
class ComposeConfig:
    out: Path = option(Path(DATA_ROOT) / "composites", "Dataset directory to write.")
    foregrounds: tuple[str | Path, ...] = option(
        (f"{DATA_ROOT}/synth",),
        "Foreground pool DIR[:SPLIT]: a dataset directory (fg/ rows; photo rows need `datagen foreground DIR` first) "
        "or a folder of RGBA images. Without :SPLIT every split but test (benchmarks are used only when named). "
        "Repeatable.",
        flags=("--fg",),
    )
    backgrounds: tuple[str | Path, ...] = option(
        (f"{DATA_ROOT}/backgrounds",),
        "Backgrounds DIR[:SPLIT]: a dataset directory (every split but test unless named) or any folder of images. "
        "Repeatable.",
        flags=("--bg",),
    )
    raw_foreground: bool = option(
        False, "Use photo rows without fg/ as they are: their soft pixels keep the old background (a halo)."
    )
    occluders: Path | None = option(None, "RGBA pool of occluders  [default: procedural shapes].")
    n: int = option(1000, "Composites to make.")
    size: tuple[int, int] = option((1024, 1024), "Output size: a square side or WxH.", type=SIZE)
    # named ranges (PRESETS); recorded as "custom" when `augment` differs from them
    preset: str = option("default", "Augmentation strength; none = geometry and the blend only.",
                         type=click.Choice(["none", "default", "strong"]))  # fmt: skip
    augment: AugmentConfig | None = None  # None: the preset's ranges (the command line: --config FILE)
    seed: int = option(0)
    val_fraction: float = option(
        0.0,
        "Share held out as split validation; one foreground or background never lands in both splits.",
        type=click.FloatRange(0, 1, max_open=True),
    )
    workers: int = option(1, "Render processes.")
    shard: tuple[int, int] | None = option(None)
    overwrite: bool = option(False)
    cache_foreground_mb: float = 128.0  # decoded foregrounds kept per worker (LRU); bounds memory at any n
    cache_background_mb: float = 96.0  # decoded backgrounds kept per worker (LRU)
    focus: Path | None = option(
        None,
        "Each sample keeps one of 8 parameter draws in proportion to the error ratios of its families, person and "
        "attributes",
    )
    ray: str | None = option(None)  # render on Ray (datagen.cluster): its address, or "local"; None: here
    progress: bool = option(True)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS and not (self.preset == "custom" and self.augment is not None):
            raise InputError(f"unknown preset {self.preset!r}: use one of {', '.join(PRESETS)}")
        # one source of truth: the ranges rendered are the ranges recorded (a row never says "strong" for others)
        if self.augment is None:
            object.__setattr__(self, "augment", PRESETS[self.preset])
        elif self.augment != PRESETS.get(self.preset):
            object.__setattr__(self, "preset", "custom")
        if self.n < 1:
            raise InputError(f"n must be at least 1, got {self.n}")
        width, height = self.size
        if width < 16 or height < 16:
            raise InputError(f"size {width}x{height} is too small: at least 16x16")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        object.__setattr__(self, "shard", resolve_shard(self.shard, self.overwrite))
        check_shared_paths(self.ray, {"--out": self.out, "--fg": self.foregrounds, "--bg": self.backgrounds,
                                      "--occluders": self.occluders})  # fmt: skip
        if self.workers < 1 or min(self.cache_foreground_mb, self.cache_background_mb) < 0:
            raise InputError("workers must be >= 1 and cache sizes >= 0")
