"""The model's input: an image resized and laid out as a uint8 tensor (`prepare`), normalised on the device
(`normalize`); and its output brought back to each image's size (`mattes_at`). Shared by training's validation,
evaluation and inference, so all three score and write the same mattes; light on purpose (no albumentations), so
`import ormbg.infer` stays small."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW uint8 -> float in [-0.5, 0.5], the original's input normalisation (RGB / 255 - 0.5)."""
    return pixels.float() / 255.0 - 0.5


def prepare(image: np.ndarray, size_px: int) -> torch.Tensor:
    """The model's input for one HxWx3 uint8 image before `normalize`: resized to size_px x size_px (area when
    shrinking, linear when enlarging; the aspect ratio is not kept), 3xSxS uint8. Inference and evaluation use it."""
    height, width = image.shape[:2]
    shrink = size_px * size_px < height * width
    return image_tensor(
        cv2.resize(image, (size_px, size_px), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    )


def mattes_at(probability: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """The network's NxSxS probabilities as HxW float32 mattes at each image's own (height, width): linear resize,
    clipped to [0, 1]. The one way back to the image (inference writes it, evaluation and validation score it)."""
    return [
        np.clip(cv2.resize(p, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
        for p, (height, width) in zip(np.asarray(probability, np.float32), sizes)
    ]
