"""Losses on logits, in fp32: multi-side BCE (the original's), soft IoU and an SSIM structure term.

The sigmoid is applied once, here, to logits (the original applied it in the model and again in the loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    bce: float = 1.0  # on every side output
    iou: float = 0.5  # on the finest side output
    ssim: float = 0.5  # on the finest side output


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of Nx1xHxW maps in [0, 1] (11x11 Gaussian window, sigma 1.5)."""
    window = _gaussian_window(device=prediction.device)
    pad = window.shape[-1] // 2
    mu_p, mu_t = F.conv2d(prediction, window, padding=pad), F.conv2d(target, window, padding=pad)
    var_p = F.conv2d(prediction * prediction, window, padding=pad) - mu_p**2
    var_t = F.conv2d(target * target, window, padding=pad) - mu_t**2
    cov = F.conv2d(prediction * target, window, padding=pad) - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return value.mean()


def soft_iou_loss(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    intersection = (probability * target).sum(dim=(1, 2, 3))
    union = (probability + target - probability * target).sum(dim=(1, 2, 3))
    return (1 - (intersection + 1) / (union + 1)).mean()


def ormbg_loss(logits: list[torch.Tensor], alpha: torch.Tensor, weights: LossWeights = LossWeights()) -> dict:
    """logits: the model's six Nx1xHxW side outputs; alpha: Nx1xHxW target in [0, 1] (soft values are targets
    too). Returns {"loss": total, "bce": ..., "iou": ..., "ssim": ...} (scalars, fp32)."""
    logits = [side.float() for side in logits]
    alpha = alpha.float()
    bce = sum(F.binary_cross_entropy_with_logits(side, alpha) for side in logits)
    probability = torch.sigmoid(logits[0])
    iou = soft_iou_loss(probability, alpha)
    structure = 1 - ssim(probability, alpha)
    total = weights.bce * bce + weights.iou * iou + weights.ssim * structure
    return {"loss": total, "bce": bce.detach(), "iou": iou.detach(), "ssim": structure.detach()}
