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


def _gaussian(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of Nx1xHxW maps in [0, 1] (11x11 Gaussian window, sigma 1.5, zero padding).

    The five local means (of p, t, p^2, t^2, pt) come from one grouped, separable convolution: a 1x11 then an
    11x1 pass over the five maps stacked as channels (22 taps instead of 121, two launches instead of five)."""
    g = _gaussian(device=prediction.device)
    pad = g.numel() // 2
    maps = torch.cat([prediction, target, prediction * prediction, target * target, prediction * target], dim=1)
    means = F.conv2d(maps, g.view(1, 1, 1, -1).expand(5, 1, 1, -1), padding=(0, pad), groups=5)
    means = F.conv2d(means, g.view(1, 1, -1, 1).expand(5, 1, -1, 1), padding=(pad, 0), groups=5)
    mu_p, mu_t, pp, tt, pt = means.unbind(dim=1)
    var_p, var_t, cov = pp - mu_p**2, tt - mu_t**2, pt - mu_p * mu_t
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
