"""The blend itself: straight-alpha 'over', in float32, exact at alpha 0 and 1."""

from __future__ import annotations

import numpy as np


def over(foreground: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Straight-alpha 'over' of an HxWx4 RGBA uint8 foreground on an HxWx3 RGB uint8 background -> HxWx3 uint8.

    Never premultiplies: colour = fg * a + bg * (1 - a), rounded. Alpha 0 returns the background's bytes and
    alpha 255 the foreground's, exactly.
    """
    if foreground.shape[:2] != background.shape[:2]:
        raise ValueError(f"foreground {foreground.shape[:2]} and background {background.shape[:2]} differ in size")
    alpha = foreground[..., 3:4].astype(np.float32) / 255
    blend = foreground[..., :3].astype(np.float32) * alpha + background.astype(np.float32) * (1 - alpha)
    return np.rint(blend).astype(np.uint8)
