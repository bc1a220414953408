"""ORMBG: an IS-Net derivative for background removal, state-dict compatible with the published `ormbg.pth`.

One `RSU(depth, ...)` module says what the original code hand-copied four times (RSU7, RSU6, RSU5, RSU4) plus
its dilated variant (RSU4F), keeping the published key names (`stageN.rebnconvK.conv_s1.weight`, ...). The
forward returns the logits of the six side outputs at the input size; the sigmoid belongs to inference and
metrics. Any input size works: pooling uses ceil mode and every upsampling targets an exact size.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from datagen.errors import InputError, MissingInputError


class REBNCONV(nn.Module):
    """3x3 convolution (dilated), batch norm, ReLU. Attribute names are the published ones."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_channels)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def upsample_like(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.interpolate(source, size=target.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block of `depth` levels (RSU7 ... RSU4), or with `dilated` the flat RSU4F.

    Encoder: rebnconvin, then rebnconv1 .. rebnconv{depth-1} (max-pooled between them, or with dilations 1, 2,
    4, ... when `dilated`), then rebnconv{depth} with a larger dilation; decoder rebnconv{depth-1}d .. 1d on
    concatenated skips; output plus the input projection (residual).
    """

    def __init__(self, depth: int, in_channels: int, mid_channels: int, out_channels: int, dilated: bool = False):
        super().__init__()
        self.depth, self.dilated = depth, dilated
        self.rebnconvin = REBNCONV(in_channels, out_channels)
        dilations = [2**i for i in range(depth)] if dilated else [1] * (depth - 1) + [2]
        for level in range(1, depth + 1):
            channels_in = out_channels if level == 1 else mid_channels
            setattr(self, f"rebnconv{level}", REBNCONV(channels_in, mid_channels, dilations[level - 1]))
        for level in range(depth - 1, 0, -1):
            channels_out = out_channels if level == 1 else mid_channels
            setattr(self, f"rebnconv{level}d", REBNCONV(2 * mid_channels, channels_out, dilations[level - 1]))
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.rebnconvin(x)
        features, hidden = [], residual
        for level in range(1, self.depth):
            hidden = getattr(self, f"rebnconv{level}")(hidden)
            features.append(hidden)
            if not self.dilated and level < self.depth - 1:
                hidden = self.pool(hidden)
        hidden = getattr(self, f"rebnconv{self.depth}")(hidden)
        for level in range(self.depth - 1, 0, -1):
            skip = features[level - 1]
            hidden = getattr(self, f"rebnconv{level}d")(torch.cat([hidden, skip], dim=1))
            if not self.dilated and level > 1:
                hidden = upsample_like(hidden, features[level - 2])
        return hidden + residual


# (name, depth, in, mid, out, dilated) of the encoder and decoder stages, and the side-output inputs.
ENCODER = [
    ("stage1", 7, 64, 32, 64, False),
    ("stage2", 6, 64, 32, 128, False),
    ("stage3", 5, 128, 64, 256, False),
    ("stage4", 4, 256, 128, 512, False),
    ("stage5", 4, 512, 256, 512, True),
    ("stage6", 4, 512, 256, 512, True),
]
DECODER = [
    ("stage5d", 4, 1024, 256, 512, True),
    ("stage4d", 4, 1024, 128, 256, False),
    ("stage3d", 5, 512, 64, 128, False),
    ("stage2d", 6, 256, 32, 64, False),
    ("stage1d", 7, 128, 16, 64, False),
]
SIDE_CHANNELS = [64, 64, 128, 256, 512, 512]


class ORMBG(nn.Module):
    """x: Nx3xHxW normalised image -> six Nx1xHxW logits (side outputs 1..6, finest first).

    `width_divisor` divides every channel count of the tables above: 1 (the default) is the published ORMBG
    (44,046,790 parameters, the 798 keys of `ormbg.pth`); 8 gives the same keys at 1/64 of the parameters, for
    tests and quick experiments.
    """

    def __init__(self, width_divisor: int = 1, in_channels: int = 3, out_channels: int = 1):
        super().__init__()
        if width_divisor < 1 or 16 % width_divisor:
            raise InputError(f"width_divisor must divide 16 (1, 2, 4, 8 or 16), got {width_divisor}")
        self.width_divisor = width_divisor

        def width(channels: int) -> int:
            return channels // width_divisor

        self.conv_in = nn.Conv2d(in_channels, width(64), 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        for name, depth, cin, mid, cout, dilated in ENCODER + DECODER:
            setattr(self, name, RSU(depth, width(cin), width(mid), width(cout), dilated))
        for index, channels in enumerate(SIDE_CHANNELS, start=1):
            setattr(self, f"side{index}", nn.Conv2d(width(channels), out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.conv_in(x)
        encoded = []
        for index, (name, *_) in enumerate(ENCODER):
            hidden = getattr(self, name)(hidden if index == 0 else self.pool(hidden))
            encoded.append(hidden)
        decoded = [encoded[-1]]  # stage6 feeds side6 directly
        for (name, *_), skip in zip(DECODER, reversed(encoded[:-1])):
            hidden = getattr(self, name)(torch.cat([upsample_like(hidden, skip), skip], dim=1))
            decoded.append(hidden)
        features = list(reversed(decoded))  # stage1d, stage2d, ..., stage5d, stage6
        return [upsample_like(getattr(self, f"side{i}")(feature), x) for i, feature in enumerate(features, start=1)]


class WeightsError(InputError):
    """A weights or checkpoint file that cannot be used: names the file and says what it should be."""


PUBLISHED = "the published weights: `hf download schirrmacher/ormbg ormbg.pth` (the Hub repo schirrmacher/ormbg)"


def read_checkpoint(path: str | Path) -> dict:
    """The dict stored in a .pt/.pth (tensors, numbers, strings and containers only: `weights_only=True`, so a
    pickle cannot run code) or a .safetensors file. Raises WeightsError naming the file when it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: {PUBLISHED}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(f"{path}: not a readable .safetensors file ({error}); it may be truncated") from error
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
        if not found:
            raise WeightsError(
                f"{path}: not a readable PyTorch checkpoint; it may be truncated or another format"
            ) from error
        raise WeightsError(
            f"{path}: refused: not a plain PyTorch checkpoint of tensors (it names the Python object {found.group(1)}, "
            "and a pickle can run code). Only weights are loaded (weights_only=True): use a state dict or .safetensors"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({error}); it may be truncated") from error
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def width_divisor_of(state: dict) -> int:
    """The `width_divisor` of an ORMBG state dict (from its first convolution's 64 / width output channels)."""
    weight = state.get("conv_in.weight", state.get("module.conv_in.weight", state.get("_orig_mod.conv_in.weight")))
    if weight is None or 64 % weight.shape[0]:
        return 1  # not ORMBG's keys: load_weights says so
    return 64 // weight.shape[0]


def load_model(path: str | Path) -> ORMBG:
    """An ORMBG of the width the weights at `path` have (the published one, or a narrower one of ours), loaded."""
    state = read_checkpoint(path)
    model = ORMBG(width_divisor_of(state.get("model", state)))
    load_weights(model, path, state)
    return model


def load_weights(model: nn.Module, path: str | Path, state: dict | None = None) -> None:
    """Weights from the published ormbg.pth (a plain state dict), our checkpoints, or .safetensors; strict.

    Raises FileNotFoundError (with how to get the weights) or WeightsError (unreadable, or not this model's keys).
    """
    state = read_checkpoint(path) if state is None else state
    state = state.get("model", state)
    state = {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        detail = (
            f"{len(missing)} keys missing (first {missing[:2]}), {len(unexpected)} unexpected (first {unexpected[:2]})"
        )
        if not missing and not unexpected:
            detail = str(error).splitlines()[-1].strip()
        raise WeightsError(f"{path}: not weights of this ORMBG ({detail}); {PUBLISHED}") from error
