"""Segmentation metrics on alpha maps in [0, 1]: MAE and the F-measure curve (beta^2 = 0.3)."""

from __future__ import annotations

import torch

BETA2 = 0.3


class Meter:
    """Accumulates MAE and per-threshold precision/recall counts over batches; max-F as in the literature
    (thresholds 0..255 on the prediction, ground truth binarised at 0.5, F per image, averaged, then max)."""

    def __init__(self, thresholds: int = 256):
        self.thresholds = torch.linspace(0, 1, thresholds)
        self.mae_sum, self.count = 0.0, 0
        self.f_sum = torch.zeros(thresholds, dtype=torch.float64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """prediction, target: Nx1xHxW in [0, 1]."""
        prediction, target = prediction.float().cpu(), target.float().cpu()
        self.mae_sum += (prediction - target).abs().mean(dim=(1, 2, 3)).sum().item()
        self.count += prediction.shape[0]
        binary = target > 0.5
        for image, truth in zip(prediction.flatten(1), binary.flatten(1)):
            above = image[None, :] >= self.thresholds[:, None]
            tp = (above & truth[None, :]).sum(dim=1).double()
            precision = tp / above.sum(dim=1).clamp(min=1)
            recall = tp / truth.sum().clamp(min=1)
            f = (1 + BETA2) * precision * recall / (BETA2 * precision + recall).clamp(min=1e-12)
            self.f_sum += f

    def result(self) -> dict[str, float]:
        return {"mae": self.mae_sum / max(1, self.count), "max_f": float((self.f_sum / max(1, self.count)).max())}
