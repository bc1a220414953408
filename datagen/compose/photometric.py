"""Photometric steps: background defocus and colour, and relighting the person to its background.

Relighting changes the person's colour only; the alpha is never touched. Per-channel operations run as
8-bit lookup tables (cv2.LUT) and CIELAB conversions on uint8, which keeps them a few milliseconds at 1024 px.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

LEVELS = np.arange(256, dtype=np.float32)
STATS_THUMB_PX = 64  # colour statistics of the person are taken on a thumbnail this wide


def _lut(tables: list[np.ndarray]) -> np.ndarray:
    """Three 256-entry float tables -> a (256, 1, 3) uint8 table for cv2.LUT."""
    return np.clip(np.rint(np.stack(tables, axis=-1)), 0, 255).astype(np.uint8).reshape(256, 1, 3)


def disc_kernel(radius_px: float) -> np.ndarray:
    """A normalised anti-aliased disc: the shape of an out-of-focus highlight (bokeh)."""
    size = 2 * math.ceil(radius_px) + 1
    kernel = np.zeros((size * 4, size * 4), np.uint8)
    cv2.circle(kernel, (size * 2, size * 2), int(round(radius_px * 4)), 255, -1, cv2.LINE_AA)
    kernel = cv2.resize(kernel, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    return kernel / kernel.sum()


def defocus_factor(radius_px: float) -> int:
    """How much smaller a defocus of `radius_px` is computed: its disc then has a radius of at most 2 px (a blurred
    image loses nothing by being computed small). 1: no defocus, or one computed at full size."""
    return max(1, math.ceil(radius_px / 2)) if radius_px >= 0.5 else 1


def defocus(image: np.ndarray, radius_px: float, size: tuple[int, int]) -> np.ndarray:
    """`image` (any size, HxWx3 uint8) brought to `size` (W, H) with a bokeh-like blur: a disc kernel of `radius_px`
    (in pixels of `size`) applied at 1/defocus_factor of `size`. The image goes straight to that small size, never
    through `size` first: one resampling instead of two (up, then down again): at 1024 px 1.3 ms less from an 800x600
    background, 4.4 ms from 2000x1400."""
    width, height = size
    factor = defocus_factor(radius_px)
    small_size = (max(1, width // factor), max(1, height // factor))
    shrink = image.shape[1] > small_size[0]
    image = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if radius_px < 0.5:
        return image
    blurred = cv2.filter2D(image, -1, disc_kernel(radius_px / factor), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR) if factor > 1 else blurred


LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # Rec. 601 weights, as OpenCV's RGB2GRAY


def colour_matrix(brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """3x4 matrix for cv2.transform: saturation (mix with luma), contrast around mid-grey, brightness gain."""
    mix = saturation * np.eye(3, dtype=np.float32) + (1 - saturation) * np.tile(LUMA, (3, 1))
    matrix = np.zeros((3, 4), np.float32)
    matrix[:, :3] = brightness * contrast * mix
    matrix[:, 3] = brightness * 127.5 * (1 - contrast)
    return matrix


def adjust_background(image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Brightness, contrast (around mid-grey) and saturation of an HxWx3 uint8 background (placed and defocused by
    `geometry.place_background`).

    The three colour changes are linear, so they run as one 3x4 matrix (cv2.transform rounds and saturates).
    """
    if (params["brightness"], params["contrast"], params["saturation"]) != (1.0, 1.0, 1.0):
        image = cv2.transform(image, colour_matrix(params["brightness"], params["contrast"], params["saturation"]))
    return image


def lab_statistics(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each CIELAB channel of a small RGB uint8 image under `mask`, in the
    units of OpenCV's 8-bit Lab (L * 255 / 100, a + 128, b + 128), which the transfer tables work in.

    Converted in float32: OpenCV's 8-bit Lab conversion costs about 2 ms even on a thumbnail.
    """
    lab = cv2.cvtColor(image.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)
    mask = None if mask is None else mask.astype(np.uint8)
    if mask is not None and not mask.any():
        return np.zeros(3, np.float32), np.ones(3, np.float32)
    mean, std = (value.reshape(3).astype(np.float32) for value in cv2.meanStdDev(lab, mask=mask))
    scale, shift = np.array([255 / 100, 1, 1], np.float32), np.array([0, 128, 128], np.float32)
    return mean * scale + shift, std * scale + 1e-3


def is_neutral(lighting: dict[str, Any]) -> bool:
    return (
        lighting["transfer"] == 0
        and lighting["temperature"] == 0
        and lighting["brightness"] == 1
        and lighting["gradient"] == 0
    )


def relight(foreground: np.ndarray, lighting: dict[str, Any], background_stats) -> np.ndarray:
    """Harmonise a person (HxWx4 uint8 straight RGBA) to its background; returns a new RGBA, same alpha.

    Colour statistics transfer in CIELAB towards the background (partial, by `transfer`), colour temperature
    and brightness gains, then a directional light gradient across the person. Runs before placement, on
    the straight colour of the source, so no un-premultiplying is needed.
    """
    if is_neutral(lighting):
        return foreground
    alpha, strength = foreground[..., 3], lighting["transfer"]
    if strength > 0:
        thumb_h = max(1, round(STATS_THUMB_PX * foreground.shape[0] / foreground.shape[1]))
        thumb = cv2.resize(foreground, (STATS_THUMB_PX, thumb_h), interpolation=cv2.INTER_NEAREST)
        fg_mean, fg_std = lab_statistics(cv2.cvtColor(thumb, cv2.COLOR_RGBA2RGB), thumb[..., 3] > 127)
        bg_mean, bg_std = background_stats
        ratio = np.clip(bg_std / fg_std, 0.6, 1.6) ** strength
        tables = [
            (LEVELS - fg_mean[c]) * ratio[c] + fg_mean[c] + strength * (bg_mean[c] - fg_mean[c]) for c in range(3)
        ]
        lab = cv2.LUT(cv2.cvtColor(foreground, cv2.COLOR_RGB2Lab), _lut(tables))  # RGBA in, Lab out
        image = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    else:
        image = cv2.cvtColor(foreground, cv2.COLOR_RGBA2RGB)
    gain, warm = lighting["brightness"], lighting["temperature"]
    gains = (gain * (1 + warm), gain, gain * (1 - warm))
    if lighting["gradient"] > 0:  # gains and gradient in one multiply
        field = light_gradient(alpha.shape, lighting["gradient"], lighting["gradient_angle_deg"])
        image = cv2.multiply(image, cv2.merge([field * g for g in gains]), dtype=cv2.CV_8U)
    elif gains != (1, 1, 1):
        image = cv2.LUT(image, _lut([LEVELS * g for g in gains]))
    relit = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    relit[..., 3] = alpha
    return relit


def light_gradient(shape: tuple[int, int], strength: float, angle_deg: float) -> np.ndarray:
    """HxW float32 gain field 1 - s/2 .. 1 + s/2 rising along `angle_deg` across the box."""
    height, width = shape
    angle = math.radians(angle_deg)
    extent = max(1.0, abs(width * math.cos(angle)) + abs(height * math.sin(angle)))
    xs = (np.arange(width, dtype=np.float32) - width / 2) * (strength * math.cos(angle) / extent)
    ys = (np.arange(height, dtype=np.float32) - height / 2) * (strength * math.sin(angle) / extent) + 1.0
    return ys[:, None] + xs[None, :]
