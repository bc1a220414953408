"""Alpha primitives on HWC uint8 arrays, shared by every stage: the blend, premultiplication, the alpha's bounding
box and crop, and a trimap from an alpha. The ground floor: it imports nothing of datagen."""

from __future__ import annotations

import cv2
import numpy as np


class EmptyAlphaError(ValueError):
    """A foreground whose alpha is zero everywhere."""


class NoAlphaError(EmptyAlphaError):
    """A foreground whose file has no alpha channel: read as one, its alpha would be 255 everywhere (a rectangle)."""


def over(foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Straight-alpha 'over' of an HxWx4 RGBA uint8 foreground on an HxWx3 RGB uint8 background -> HxWx3 uint8.

    Never premultiplies: colour = fg * a + bg * (1 - a), rounded, in float32. Alpha 0 returns the background's bytes
    and alpha 255 the foreground's, exactly.
    """
    if foreground.shape[:2] != background.shape[:2]:
        raise ValueError(f"foreground {foreground.shape[:2]} and background {background.shape[:2]} differ in size")
    alpha = foreground[..., 3:4].astype(np.float32) / 255
    blend = foreground[..., :3].astype(np.float32) * alpha + background.astype(np.float32) * (1 - alpha)
    return np.rint(blend).astype(np.uint8)


def premultiply(foreground: np.ndarray) -> np.ndarray:
    """HxWx4 uint8 straight RGBA -> HxWx4 uint8 premultiplied: colour round(F * a / 255), alpha unchanged."""
    return cv2.cvtColor(foreground, cv2.COLOR_RGBA2mRGBA)


def alpha_bbox(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) (exclusive) of the pixels with alpha > 0; None if there are none."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def crop_to_alpha(foreground: np.ndarray) -> np.ndarray:
    """The RGBA foreground cropped to its alpha bounding box (a view); raises EmptyAlphaError on an empty alpha."""
    box = alpha_bbox(foreground[..., 3])
    if box is None:
        raise EmptyAlphaError("its alpha is empty (zero everywhere)")
    top, left, bottom, right = box
    return foreground[top:bottom, left:right]


def trimap_from_alpha(alpha: np.ndarray, radius_px: int | None = None, edge_of: int | None = None) -> np.ndarray:
    """A trimap (HxW uint8: 0 / 128 / 255) from an alpha: unknown within `radius_px` of any soft pixel.

    The band is the dilation of alpha > 0 minus the erosion of alpha == 255 by a disc of `radius_px`
    (default 1% of the short side, at least 3 px): the usual recipe of Deep Image Matting. `edge_of`: a coarse
    mask's trimap instead (`datagen refine`): unknown within `radius_px` of the edge of alpha > edge_of, the mask's
    0 or 255 elsewhere.
    """
    radius_px = radius_px or max(3, round(min(alpha.shape) * 0.01))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    inside = (alpha > 0 if edge_of is None else alpha > edge_of).astype(np.uint8)
    maybe = cv2.dilate(inside, disc)
    sure = cv2.erode(inside if edge_of is not None else (alpha == 255).astype(np.uint8), disc)
    return np.where(sure > 0, 255, np.where(maybe > 0, 128, 0)).astype(np.uint8)
