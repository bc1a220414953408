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


def defocus(image: np.ndarray, radius_px: float) -> np.ndarray:
    """Bokeh-like blur: a disc kernel, applied at reduced resolution when the radius is large."""
    if radius_px < 0.5:
        return image
    factor = max(1, int(radius_px // 3))
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    blurred = cv2.filter2D(small, -1, disc_kernel(radius_px / factor), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR) if factor > 1 else blurred


def adjust_background(image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Defocus, brightness, contrast (around mid-grey) and saturation of an HxWx3 uint8 background."""
    image = defocus(image, params["defocus_radius"] * image.shape[0])
    gain, contrast = params["brightness"], params["contrast"]
    if gain != 1.0 or contrast != 1.0:
        table = (LEVELS - 127.5) * contrast + 127.5
        image = cv2.LUT(image, _lut([table * gain] * 3))
    saturation = params["saturation"]
    if saturation != 1.0:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = cv2.LUT(hsv[..., 1], np.clip(np.rint(LEVELS * saturation), 0, 255).astype(np.uint8))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return image


def lab_statistics(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each CIELAB channel (8-bit Lab) of an RGB uint8 image, under `mask`."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float32)
    if mask is not None:
        lab = lab[mask.reshape(-1)]
    if lab.shape[0] == 0:
        return np.zeros(3, np.float32), np.ones(3, np.float32)
    return lab.mean(axis=0), lab.std(axis=0) + 1e-3


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
    image, alpha = cv2.cvtColor(foreground, cv2.COLOR_RGBA2RGB), foreground[..., 3]
    strength = lighting["transfer"]
    if strength > 0:
        fg_mean, fg_std = lab_statistics(image[::4, ::4], alpha[::4, ::4] > 127)
        bg_mean, bg_std = background_stats
        ratio = np.clip(bg_std / fg_std, 0.6, 1.6) ** strength
        tables = [
            (LEVELS - fg_mean[c]) * ratio[c] + fg_mean[c] + strength * (bg_mean[c] - fg_mean[c]) for c in range(3)
        ]
        lab = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_RGB2Lab), _lut(tables))
        image = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    gain, warm = lighting["brightness"], lighting["temperature"]
    if gain != 1 or warm != 0:
        image = cv2.LUT(image, _lut([LEVELS * gain * (1 + warm), LEVELS * gain, LEVELS * gain * (1 - warm)]))
    if lighting["gradient"] > 0:
        field = light_gradient(alpha.shape, lighting["gradient"], lighting["gradient_angle_deg"])
        image = cv2.multiply(image, cv2.merge([field, field, field]), dtype=cv2.CV_8U)
    relit = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    relit[..., 3] = alpha
    return relit


def light_gradient(shape: tuple[int, int], strength: float, angle_deg: float) -> np.ndarray:
    """HxW float32 gain field 1 - s/2 .. 1 + s/2 rising along `angle_deg` across the box."""
    height, width = shape
    angle = math.radians(angle_deg)
    ys, xs = np.ogrid[0:height, 0:width]
    projection = (xs - width / 2) * math.cos(angle) + (ys - height / 2) * math.sin(angle)
    extent = max(1.0, abs(width * math.cos(angle)) + abs(height * math.sin(angle)))
    return (1.0 + strength * projection / extent).astype(np.float32)
