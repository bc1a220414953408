"""`python -m ormbg.export`: ORMBG to ONNX, checked against PyTorch.

    python -m ormbg.export --checkpoint ormbg.pth                      # -> ormbg.onnx beside it
    python -m ormbg.export --checkpoint runs/x/best.safetensors -o model.onnx --fp16

The graph takes `image`, Nx3xHxW float32 in [-0.5, 0.5] (RGB / 255 - 0.5: `ormbg.preprocess.prepare` resizes,
`ormbg.preprocess.normalize` scales), and returns `alpha`, Nx1xHxW probabilities of the finest side output (the
sigmoid is inside). Batch, height and width are dynamic (`--static` fixes them to 1 x --size x --size). After
writing, the export is run with onnxruntime on random inputs and compared with PyTorch; the largest difference is
printed and a difference above the tolerance (1e-3 for fp32) fails the export. It never writes over the weights it
reads."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn

from datagen import __version__
from datagen.console import CONTEXT_SETTINGS, logging_options, user_errors
from datagen.errors import InputError, MissingInputError
from datagen.io import output_error
from ormbg.model import ORMBG, load_model

log = logging.getLogger(__name__)


class AlphaModel(nn.Module):
    """ORMBG for deployment: image -> probability of the finest side output (fp32 out, whatever runs inside)."""

    def __init__(self, model: ORMBG, half: bool = False):
        super().__init__()
        self.model, self.half = (model.half() if half else model), half

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(image.half() if self.half else image)[0]
        return torch.sigmoid(logits.float())


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: Path
    out: Path | None = None  # default: the checkpoint's name with .onnx (never the checkpoint itself)
    size: int = 1024  # side of the traced input, and of the static graph
    fp16: bool = False  # weights and activations in half precision (inputs and outputs stay fp32)
    static: bool = False
    opset: int = 17
    tolerance: float | None = None  # largest allowed |onnx - torch|; default 1e-3 (fp32), 2e-2 (fp16)

    @property
    def target(self) -> Path:
        return Path(self.out) if self.out else Path(self.checkpoint).with_suffix(".onnx")

    def __post_init__(self) -> None:
        if not Path(self.checkpoint).is_file():
            raise MissingInputError(
                f"{self.checkpoint} does not exist: the published weights are `ormbg.pth` in the Hub repo "
                "schirrmacher/ormbg (hf download schirrmacher/ormbg ormbg.pth)"
            )
        if self.target.suffix != ".onnx":
            raise InputError(f"the output {self.target} must end in .onnx")
        if self.target.exists() and self.target.resolve() == Path(self.checkpoint).resolve():
            raise InputError(f"the output {self.target} is the checkpoint itself: choose another -o")
        if self.size < 32:
            raise InputError("size must be at least 32")


@dataclass
class ExportResult:
    path: Path
    max_difference: float
    checked_shapes: list[tuple[int, ...]]


def _session(path: Path, fp16: bool):
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if fp16 and "CUDAExecutionProvider" not in providers:
        return None  # the CPU provider lacks fp16 kernels for much of this graph
    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in providers]
    return onnxruntime.InferenceSession(str(path), providers=wanted)


def check_parity(path: Path, model: nn.Module, shapes: list[tuple[int, ...]], fp16: bool) -> float | None:
    """Largest |onnxruntime - PyTorch| over random inputs of `shapes`; None when no runtime can run it here."""
    session = _session(path, fp16)
    if session is None:
        return None
    device = "cuda" if fp16 else "cpu"
    model = model.to(device)
    generator = torch.Generator().manual_seed(0)
    largest = 0.0
    for shape in shapes:
        image = torch.rand(shape, generator=generator) - 0.5
        with torch.no_grad():
            expected = model(image.to(device)).cpu().numpy()
        got = session.run(["alpha"], {"image": image.numpy()})[0]
        largest = max(largest, float(np.abs(got - expected).max()))
    return largest


def run_export(config: ExportConfig) -> ExportResult:
    """Write the ONNX graph atomically next to (never over) the weights, then check it against PyTorch."""
    model = load_model(config.checkpoint)
    if config.fp16 and not torch.cuda.is_available():
        raise InputError("--fp16 export needs a CUDA GPU (to run half precision and to check parity)")
    wrapped = AlphaModel(model.eval(), half=config.fp16).eval()
    device = "cuda" if config.fp16 else "cpu"
    wrapped = wrapped.to(device)
    example = torch.zeros(1, 3, config.size, config.size, device=device)
    target = config.target
    partial = target.with_name(target.name + ".partial")
    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic = None if config.static else {"image": axes, "alpha": axes}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DeprecationWarning
            )  # the TorchScript exporter: dynamic sizes, no onnxscript
            torch.onnx.export(
                wrapped,
                (example,),
                str(partial),
                dynamo=False,
                input_names=["image"],
                output_names=["alpha"],
                dynamic_axes=dynamic,
                opset_version=config.opset,
            )
        os.replace(partial, target)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise output_error(target, error) from error
        raise
    side = config.size
    shapes = [(1, 3, side, side)] if config.static else [(1, 3, side, side), (2, 3, side // 2 + 7, side * 3 // 4)]
    difference = check_parity(target, wrapped, shapes, config.fp16)
    if difference is None:
        log.warning("parity not checked: no onnxruntime provider here runs fp16")
        return ExportResult(target, float("nan"), [])
    tolerance = config.tolerance or (2e-2 if config.fp16 else 1e-3)
    if difference > tolerance:
        raise ValueError(f"{target}: ONNX differs from PyTorch by {difference:.2e} (> {tolerance:.0e})")
    return ExportResult(target, difference, shapes)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="ormbg")
@logging_options(logging.INFO)
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True, help="ormbg.pth, .pt or .safetensors.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="[<checkpoint>.onnx]")
@click.option("--size", type=int, default=1024, show_default=True, help="Traced input side (static: the only one).")
@click.option("--fp16", is_flag=True, help="Half-precision graph (needs a CUDA GPU).")
@click.option("--static", is_flag=True, help="Fixed 1x3xSIZExSIZE input instead of dynamic batch and size.")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--tolerance", type=float, default=None, help="Largest allowed difference [1e-3; fp16 2e-2].")
def main(**options) -> None:
    """Export ORMBG weights to ONNX and check the export against PyTorch."""
    with user_errors():
        result = run_export(ExportConfig(**options))
    shapes = ", ".join("x".join(map(str, s)) for s in result.checked_shapes) or "none"
    click.echo(f"wrote {result.path}; largest |onnx - torch| {result.max_difference:.2e} on inputs {shapes}")


if __name__ == "__main__":
    main()
