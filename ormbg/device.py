"""One rule for where the model runs, shared by training, inference and evaluation."""

from __future__ import annotations

import torch


def pick_device(device: str = "auto") -> torch.device:
    """`device` as given ("cpu", "cuda", "cuda:1", "mps"), or for "auto": CUDA, else Apple's MPS, else the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
