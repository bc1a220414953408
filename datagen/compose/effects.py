"""Shadows, motion blur and camera degradations (noise, grain, JPEG, grayscale)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from datagen.compose.geometry import Layer

SHADOW_SCALE = 4  # shadows are drawn at 1/4 resolution: they are blurred anyway
NOISE_MARGIN = 257  # the noise bank is this much larger than the frame; offsets pick a window in it


def darken_with_shadow(canvas: np.ndarray, person: Layer, shadow: dict[str, Any]) -> None:
    """Darken the background canvas (HxWx3 float32) in place with a shadow made from the person's alpha.

    The alpha is squashed vertically towards the bottom of the person's box (the feet), sheared for a cast
    shadow, blurred, and multiplies the background by 1 - opacity * shadow. It is not foreground: the
    ground-truth alpha never includes it.
    """
    height, width = canvas.shape[:2]
    small_w, small_h = max(1, width // SHADOW_SCALE), max(1, height // SHADOW_SCALE)
    box_h, box_w = person.alpha.shape
    alpha = cv2.resize(
        person.alpha, (max(1, box_w // SHADOW_SCALE), max(1, box_h // SHADOW_SCALE)), interpolation=cv2.INTER_AREA
    )
    squash, shear = shadow["squash"], shadow["shear"]
    foot_y = (person.top + box_h) / SHADOW_SCALE  # box bottom, in the small frame
    left, top = person.left / SHADOW_SCALE, person.top / SHADOW_SCALE
    # A point (x, y) of the box maps to y' = foot - (foot - y) * squash, x' = x + shear * (foot - y) * squash.
    rows = foot_y - top
    matrix = np.array(
        [
            [1.0, -shear * squash, left + shear * squash * rows],
            [0.0, squash, foot_y - squash * rows],
        ]
    )
    mask = cv2.warpAffine(alpha, matrix, (small_w, small_h), flags=cv2.INTER_LINEAR, borderValue=0)
    sigma = max(0.5, shadow["blur"] * height / SHADOW_SCALE)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    rows, cols = np.flatnonzero(mask.max(axis=1) > 1e-3), np.flatnonzero(mask.max(axis=0) > 1e-3)
    if rows.size == 0:
        return
    # Only the shadow's bounding box (in full-size pixels) is upsampled and multiplied.
    top, bottom = rows[0] * SHADOW_SCALE, min(height, (rows[-1] + 1) * SHADOW_SCALE)
    left, right = cols[0] * SHADOW_SCALE, min(width, (cols[-1] + 1) * SHADOW_SCALE)
    full = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)[top:bottom, left:right]
    keep = 1.0 - shadow["opacity"] * full
    canvas[top:bottom, left:right] *= cv2.merge([keep, keep, keep])


def motion_kernel(length_px: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel of `length_px` at `angle_deg`: linear motion during the exposure."""
    size = 2 * math.ceil(length_px / 2) + 1
    kernel = np.zeros((size, size), np.float32)
    centre, angle = size // 2, math.radians(angle_deg)
    dx, dy = math.cos(angle) * length_px / 2, math.sin(angle) * length_px / 2
    cv2.line(
        kernel, (round(centre - dx), round(centre - dy)), (round(centre + dx), round(centre + dy)), 1.0, 1, cv2.LINE_AA
    )
    return kernel / kernel.sum()


def blur_layer(layer: Layer, kernel: np.ndarray, size: tuple[int, int]) -> Layer:
    """Subject motion: the same kernel on premultiplied colour and alpha (correct for a moving layer).

    The box grows by the kernel radius, clipped to the frame `size` (W, H).
    """
    width, height = size
    pad = kernel.shape[0] // 2
    top, left = max(0, layer.top - pad), max(0, layer.left - pad)
    box_h, box_w = layer.alpha.shape
    bottom, right = min(height, layer.top + box_h + pad), min(width, layer.left + box_w + pad)
    data = np.zeros((bottom - top, right - left, 4), np.float32)
    inner = data[layer.top - top : layer.top - top + box_h, layer.left - left : layer.left - left + box_w]
    inner[..., :3], inner[..., 3] = layer.color, layer.alpha
    # Replicate: where the box touches the frame edge the person goes on beyond it; elsewhere the box
    # already has `pad` zeros around the person, so replicating them adds nothing.
    data = cv2.filter2D(data, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    return Layer(np.ascontiguousarray(data[..., :3]), np.ascontiguousarray(data[..., 3]), top, left)


@lru_cache(maxsize=4)
def noise_bank(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal noise (H+M)x(W+M)x3 and blurred luminance grain (H+M)x(W+M), float32, fixed seed.

    Drawn once per process: a window of it at a per-sample offset is as random as fresh noise for training,
    and costs an add instead of 3 million draws. Fixed seed, so every worker and shard sees the same bank.
    """
    rng = np.random.default_rng(0x6E6F697365)
    noise = rng.standard_normal((height + NOISE_MARGIN, width + NOISE_MARGIN, 3), dtype=np.float32)
    grain = cv2.GaussianBlur(noise[..., 0], (0, 0), 0.8)
    grain /= grain.std()
    return noise, grain


def degrade(image: np.ndarray, alpha: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Camera degradations of the whole frame: image HxWx3 float32 0..255 (used up: changed in place) -> uint8; alpha
    HxW float32 0..1.

    Camera motion blurs image and alpha alike; then sensor noise, film grain, grayscale, JPEG re-compression
    (which the alpha, a label, never gets).
    """
    height, width = alpha.shape
    length = params["motion_length"] * height
    if length >= 1 and not params["motion_subject"]:
        kernel = motion_kernel(length, params["motion_angle_deg"])
        image = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)
        alpha = cv2.filter2D(alpha, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if params["noise_sigma"] > 0 or params["grain"] > 0:
        noise, grain = noise_bank(height, width)
        oy, ox = (value % NOISE_MARGIN for value in params["noise_offset"])
        if params["noise_sigma"] > 0:
            cv2.scaleAdd(noise[oy : oy + height, ox : ox + width], params["noise_sigma"], image, dst=image)
        if params["grain"] > 0:  # the offsets swapped: another window than the noise's
            # one grain plane added to the three channels as a merged 3-channel array: numpy's broadcast over a last
            # axis of 3 costs 4.8-6.6 ms at 1024 px, this 2.2 (the same float32 sums)
            plane = params["grain"] * grain[ox : ox + height, oy : oy + width]
            cv2.add(image, cv2.merge([plane, plane, plane]), dst=image)
    # to 8 bits: negatives (from noise) to 0 in place, then rounded to nearest (half to even) and saturated at 255.
    # cv2.add(image, 0.0, dtype=CV_8U) gives the same bytes but takes 4.6-6.5 ms at 1024 px against 1.3-1.6 here
    # (OpenCV 5.1; its mixed-type path slows down where values need saturating)
    cv2.threshold(image, 0, 0, cv2.THRESH_TOZERO, dst=image)
    result = cv2.convertScaleAbs(image)
    if params["grayscale"]:
        result = cv2.cvtColor(cv2.cvtColor(result, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if params["jpeg_quality"]:
        bgr = cv2.cvtColor(result, cv2.COLOR_RGB2BGR)
        data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, params["jpeg_quality"]])[1]
        # these bytes carry no EXIF: not looking for an orientation saves OpenCV 5 about 4 ms at 1024 px, same pixels
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        result = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return result, alpha
