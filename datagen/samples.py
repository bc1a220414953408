"""Miniature copies of real data-set layouts, drawn procedurally: for the demo, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datagen.alpha import over
from datagen.io import encode_jpeg, encode_png, write_atomic
from datagen.procedural import draw_background, draw_person


def draw_pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like image (HxWx3 uint8) of a procedural person and its exact alpha (HxW uint8)."""
    foreground = draw_person(rng, height, width)
    return over(foreground, draw_background(rng, height, width)), np.ascontiguousarray(foreground[..., 3])


def make_p3m_tree(
    root: str | Path, n_train: int, n_test: int, height: int, width: int, seed: int = 0, image_ext: str = ".jpg"
) -> Path:
    """A P3M-10k layout under `root`: train/blurred_image + train/mask, validation/P3M-500-{P,NP} with trimaps.

    n_test pairs go into each of P3M-500-P and P3M-500-NP. Images are JPEG q90 (or PNG with
    image_ext='.png'), masks one-channel PNG, names like the real ones (`p_<hex>`). Returns `root`.
    """
    root = Path(root)
    folders = [("train/blurred_image", "train/mask", None, n_train, "p")]
    folders += [
        (
            f"validation/P3M-500-{s}/{img}",
            f"validation/P3M-500-{s}/mask",
            f"validation/P3M-500-{s}/trimap",
            n_test,
            s.lower(),
        )
        for s, img in (("P", "blurred_image"), ("NP", "original_image"))
    ]
    for image_dir, mask_dir, trimap_dir, count, prefix in folders:
        for index in range(count):
            rng = np.random.default_rng([seed, index, len(image_dir)])
            image, alpha = draw_pair(rng, height, width)
            stem = f"{prefix}_{rng.integers(0, 2**32):08x}"
            data = encode_jpeg(image, 90) if image_ext == ".jpg" else encode_png(image)
            write_atomic(root / image_dir / f"{stem}{image_ext}", data)
            write_atomic(root / mask_dir / f"{stem}.png", encode_png(alpha))
            if trimap_dir:
                trimap = np.where(alpha == 0, 0, np.where(alpha == 255, 255, 128)).astype(np.uint8)
                write_atomic(root / trimap_dir / f"{stem}.png", encode_png(trimap))
    return root
