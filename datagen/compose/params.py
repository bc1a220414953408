"""Drawing the parameters of one composite, apart from any pixel work (as albumentations does).

`sample_params(rng, augment, ...)` returns a JSON-serialisable dict: everything `render` needs besides the
pixels, written whole into the sample's metadata so the composite can be re-rendered exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datagen.compose.config import AugmentConfig, Range


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    low, high = bounds
    return float(rng.uniform(low, high)) if high > low else float(low)


def _chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def sample_placement(rng: np.random.Generator, aug: AugmentConfig, height: Range | None = None) -> dict[str, Any]:
    """Where the person's alpha bounding box goes, as fractions of the frame, plus rotation and flip."""
    return {
        "height": _uniform(rng, height or aug.fg_height),
        "top": _uniform(rng, aug.fg_top),
        "center_x": _uniform(rng, aug.fg_center_x),
        "rotation_deg": _uniform(rng, aug.rotation_deg),
        "flip": _chance(rng, aug.fg_flip_p),
    }


def sample_background(rng: np.random.Generator, aug: AugmentConfig) -> dict[str, Any]:
    return {
        "crop_scale": _uniform(rng, aug.bg_crop_scale),
        "crop_x": float(rng.random()),  # where the crop sits in the free range, 0 = left
        "crop_y": float(rng.random()),
        "flip": _chance(rng, aug.bg_flip_p),
        "defocus_radius": _uniform(rng, aug.defocus_radius) if _chance(rng, aug.defocus_p) else 0.0,
        "brightness": _uniform(rng, aug.bg_brightness),
        "contrast": _uniform(rng, aug.bg_contrast),
        "saturation": _uniform(rng, aug.bg_saturation),
    }


def sample_lighting(rng: np.random.Generator, aug: AugmentConfig) -> dict[str, Any]:
    return {
        "transfer": _uniform(rng, aug.transfer_strength) if _chance(rng, aug.transfer_p) else 0.0,
        "temperature": _uniform(rng, aug.temperature),
        "brightness": _uniform(rng, aug.fg_brightness),
        "gradient": _uniform(rng, aug.gradient_strength) if _chance(rng, aug.gradient_p) else 0.0,
        "gradient_angle_deg": float(rng.uniform(0, 360)),
    }


def sample_shadow(rng: np.random.Generator, aug: AugmentConfig) -> dict[str, Any] | None:
    if not _chance(rng, aug.shadow_p):
        return None
    cast = _chance(rng, aug.cast_shadow_p)
    return {
        "kind": "cast" if cast else "contact",
        "opacity": _uniform(rng, aug.shadow_opacity),
        "blur": _uniform(rng, aug.shadow_blur),
        "shear": _uniform(rng, aug.shadow_shear) if cast else 0.0,
        "squash": _uniform(rng, aug.shadow_squash),
    }


def sample_occluder(rng: np.random.Generator, aug: AugmentConfig, pool_size: int) -> dict[str, Any]:
    """An occluder from the pool (index) or, with an empty pool, a procedural shape; placed over the person."""
    return {
        "pool_index": int(rng.integers(pool_size)) if pool_size else -1,
        "shape_seed": int(rng.integers(2**31)),
        "height": _uniform(rng, aug.occluder_size),
        "center_x": float(rng.uniform(-0.5, 0.5)),  # relative to the person's bbox centre, in bbox widths
        "center_y": float(rng.uniform(-0.3, 0.5)),  # relative to the bbox centre, in bbox heights
        "rotation_deg": float(rng.uniform(-90, 90)),
    }


def sample_degradations(rng: np.random.Generator, aug: AugmentConfig) -> dict[str, Any]:
    motion = _chance(rng, aug.motion_p)
    return {
        "noise_sigma": _uniform(rng, aug.noise_sigma) if _chance(rng, aug.noise_p) else 0.0,
        "noise_offset": [int(v) for v in rng.integers(0, 2**16, size=2)],
        "motion_length": _uniform(rng, aug.motion_length) if motion else 0.0,
        "motion_angle_deg": float(rng.uniform(0, 180)),
        "motion_subject": _chance(rng, aug.subject_motion_p),
        "jpeg_quality": int(round(_uniform(rng, aug.jpeg_quality))) if _chance(rng, aug.jpeg_p) else 0,
        "grain": _uniform(rng, aug.grain_strength) if _chance(rng, aug.grain_p) else 0.0,
        "grayscale": _chance(rng, aug.grayscale_p),
    }


def sample_params(
    rng: np.random.Generator, aug: AugmentConfig, n_foregrounds: int, n_backgrounds: int, n_occluders: int
) -> dict[str, Any]:
    """All parameters of one composite. Indices point into the foreground / background / occluder lists
    that the caller passes (for one split); -1 means none."""
    params: dict[str, Any] = {
        "foreground": int(rng.integers(n_foregrounds)),
        "background": int(rng.integers(n_backgrounds)),
        "bg": sample_background(rng, aug),
        "placement": sample_placement(rng, aug),
        "lighting": sample_lighting(rng, aug),
        "shadow": sample_shadow(rng, aug),
        "occluders": [sample_occluder(rng, aug, n_occluders)] if _chance(rng, aug.occluder_p) else [],
        "extra_people": [],
        "degradations": sample_degradations(rng, aug),
    }
    if n_foregrounds > 1 and _chance(rng, aug.extra_person_p):
        other = int(rng.integers(n_foregrounds - 1))
        other += other >= params["foreground"]  # never the same person twice
        params["extra_people"] = [
            {"foreground": other, "placement": sample_placement(rng, aug, aug.extra_person_height)}
        ]
    return params
