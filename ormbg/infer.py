"""`python -m ormbg.infer`: cut people out of images with ORMBG (PyTorch weights or an ONNX export).

    python -m ormbg.infer photos/ -o cutouts/ --checkpoint ormbg.pth                # RGBA PNG cutouts
    python -m ormbg.infer a.jpg b.png -o out/ --checkpoint runs/x/best.safetensors --mode alpha
    python -m ormbg.infer photos/ -o out/ --onnx ormbg.onnx --mode composite --color "#00ff00"

Each image is resized to the model's input size and its matte resized back, so every output keeps its
image's size; outputs keep the input names (relative paths under a folder are kept). The matte is the
model's probability, with no per-image min-max stretch (a stretch invents a subject where there is none).
Existing outputs are kept (the run resumes); `--overwrite` redoes them. Unreadable images are skipped and
listed in `skipped.jsonl` in the output folder.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch

from datagen import __version__
from datagen.alpha import over
from datagen.console import CONTEXT_SETTINGS, logging_options, user_errors
from datagen.errors import InputError, MissingInputError
from datagen.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    encode_jpeg,
    encode_png,
    read_image,
    remove_stale_temporaries_of,
    write_atomic,
)
from datagen.parallel import pick_device, torch_dtype
from datagen.refine import DEFAULT_MODEL as VITMATTE
from ormbg.preprocess import mattes_at, normalize, prepare

log = logging.getLogger(__name__)

MODES = ("rgba", "alpha", "composite")
FOREGROUNDS = ("ml", "blur-fusion", "none")  # as `datagen foreground --method`, and none: the photo's colours
DEFAULT_FOREGROUND = "ml"  # the most accurate (docs/benchmarks.md)


class Predictor:
    """Alpha mattes from ORMBG: `predict(pixels, sizes)` on prepared batches, or `__call__(images)` on
    HxWx3 uint8 images. Returns HxW float32 mattes in [0, 1] at each image's own size.

    With `refine_model` (a ViTMatte Hub id or folder) `__call__` adds the second stage: ORMBG's matte -> a trimap of
    its soft and uncertain pixels, widened (`datagen.refine.uncertain_trimap`) -> ViTMatte in that band; outside it
    the matte is ORMBG's, rounded to 0 or 255. `refine(images, alphas)` is that stage alone.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        onnx: str | os.PathLike | None = None,
        size_px: int = 1024,
        device: str = "auto",
        precision: str = "fp32",
        refine_model: str | None = None,
    ):
        if (checkpoint is None) == (onnx is None):
            raise ValueError("give exactly one of a checkpoint (ormbg.pth, .pt, .safetensors) and an ONNX model")
        self.size_px, self.session, self.model, self.matter = size_px, None, None, None
        if refine_model is not None:
            from datagen.refine import Matter

            dtype = "fp32" if precision == "fp32" else precision
            self.matter = Matter(refine_model, device, dtype, option="--refine-model")
        if onnx is not None:
            self.session = _onnx_session(onnx)
            return
        from ormbg.model import load_model

        self.device = pick_device(device)
        self.dtype = None if precision == "fp32" else torch_dtype(precision)  # None: no autocast
        self.model = load_model(checkpoint).eval().to(self.device)

    @property
    def uses_cpu(self) -> bool:
        """Whether the model runs on the CPU (its threads then already use the cores)."""
        if self.session is not None:
            return self.session.get_providers()[0] == "CPUExecutionProvider"
        return self.device.type == "cpu"

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        """pixels: Nx3xSxS uint8 from `ormbg.preprocess.prepare`; sizes: (height, width) of each original image."""
        if self.session is not None:
            probability = self.session.run(["alpha"], {"image": normalize(pixels).numpy()})[0][:, 0]
        else:
            pixels = normalize(pixels.to(self.device))
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                logits = self.model(pixels)[0]
            probability = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        return mattes_at(probability, sizes)

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        pixels = torch.stack([prepare(image, self.size_px) for image in images])
        alphas = self.predict(pixels, [image.shape[:2] for image in images])
        return self.refine(images, alphas) if self.matter is not None else alphas

    def refine(self, images: list[np.ndarray], alphas: list[np.ndarray]) -> list[np.ndarray]:
        """The second stage: ViTMatte in the band of each matte's uncertain pixels; HxW float32 in [0, 1]."""
        from datagen.refine import uncertain_trimap

        trimaps = [uncertain_trimap(np.rint(alpha * 255).astype(np.uint8)) for alpha in alphas]
        return [refined.astype(np.float32) / 255 for refined in self.matter(images, trimaps)]


def _onnx_session(path: str | os.PathLike):
    import onnxruntime

    if not Path(path).is_file():
        raise MissingInputError(f"{path} does not exist: make it with `python -m ormbg.export --checkpoint ...`")
    providers = [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in onnxruntime.get_available_providers()
    ]
    return onnxruntime.InferenceSession(str(path), providers=providers)


def parse_color(text: str) -> tuple[int, int, int]:
    """'#rrggbb', 'rrggbb', 'white', 'black', 'green' -> RGB."""
    named = {"white": "ffffff", "black": "000000", "green": "00ff00", "grey": "808080", "gray": "808080"}
    value = named.get(text.lower(), text.lstrip("#"))
    if len(value) != 6 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise InputError(f"colour {text!r}: give #rrggbb or one of {sorted(named)}")
    return tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))


def list_images(inputs: list[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """(image path, output stem relative to the output folder) for files and folders (searched recursively).

    The stem is the whole name without its last suffix (`shot.v1.jpg` -> `shot.v1`); relative folders are kept.
    """
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
                relative = path.relative_to(item)
                found.append((path, relative.with_name(relative.stem)))
        elif item.is_file():
            found.append((item, Path(item.stem)))
        else:
            raise MissingInputError(f"{item} is neither an image file nor a folder")
    if not found:
        shown = ", ".join(map(str, inputs))
        raise MissingInputError(f"no images in {shown} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return found


def output_path(out: Path, stem: Path, source: Path, mode: str) -> Path:
    """Cutouts and mattes are PNG; a composite keeps a JPEG input's format. The stem is kept whole."""
    keep_jpeg = mode == "composite" and source.suffix.lower() in (".jpg", ".jpeg")
    return out / stem.with_name(stem.name + (".jpg" if keep_jpeg else ".png"))


def plan_outputs(inputs: list[str | os.PathLike], out: Path, mode: str) -> list[tuple[Path, Path]]:
    """(input, output file) pairs. One input file and an `out` with an image suffix: that file is the output.

    Two inputs that would write the same file are refused (the final names are compared, not the stems)."""
    images = list_images(inputs)
    if len(images) == 1 and Path(inputs[0]).is_file() and out.suffix.lower() in IMAGE_EXTENSIONS:
        return [(images[0][0], check_output_name(out, mode))]
    items = [(source, output_path(out, stem, source, mode)) for source, stem in images]
    seen: dict[Path, Path] = {}
    for source, target in items:
        if target in seen:
            raise InputError(f"{seen[target]} and {source} would both write {target}: give them from different folders")
        seen[target] = source
    return items


def check_output_name(path: Path, mode: str) -> Path:
    """An output file named by the user: JPEG for a composite named .jpg/.jpeg, else PNG; a matte or cut-out (which
    JPEG cannot hold losslessly, or with its alpha) named .jpg is refused rather than written as PNG bytes."""
    if path.is_dir():
        raise InputError(f"-o {path} is a folder: name the output file (cutout.png), or give -o - for stdout")
    if path.suffix.lower() in (".jpg", ".jpeg") and mode != "composite":
        raise InputError(f"-o {path}: --mode {mode} writes PNG (lossless, with its alpha); name the file .png")
    return path


def cutout_colors(image: np.ndarray, alpha_u8: np.ndarray, foreground: str = DEFAULT_FOREGROUND) -> np.ndarray:
    """The colours a cut-out carries (HxWx3 uint8): the person's own colour estimated from the photo and the matte
    (`datagen.foreground.estimate_foreground`: "ml" or "blur-fusion"), so the old background does not show as a
    fringe in soft pixels on a new one; "none": the photo's colours. Where alpha is 255 the photo's, exactly."""
    if foreground == "none":
        return image
    from datagen.foreground import estimate_foreground

    return estimate_foreground(image, alpha_u8, foreground)


def render(
    image: np.ndarray,
    alpha: np.ndarray,
    mode: str,
    color: tuple[int, int, int],
    path: Path,
    foreground: str = DEFAULT_FOREGROUND,
) -> bytes:
    """The encoded output for one image: RGBA cutout, alpha matte, or a composite over `color`; cut-outs and
    composites carry `cutout_colors` (`foreground`: ml, blur-fusion or none)."""
    alpha_u8 = np.round(alpha * 255).astype(np.uint8)
    if mode == "alpha":
        return encode_png(alpha_u8)
    colors = cutout_colors(image, alpha_u8, foreground)
    if mode == "rgba":
        return encode_png(np.dstack([colors, alpha_u8]))
    composite = over(np.dstack([colors, alpha_u8]), np.broadcast_to(np.array(color, np.uint8), colors.shape))
    return encode_jpeg(composite) if path.suffix.lower() in (".jpg", ".jpeg") else encode_png(composite)


@dataclass(frozen=True)
class InferConfig:
    inputs: tuple[str, ...]
    out: Path
    checkpoint: Path | None = None
    onnx: Path | None = None
    mode: str = "rgba"  # rgba cutouts, alpha mattes, or composites over `color`
    color: str = "#ffffff"
    size: int = 1024  # model input side, px
    batch_size: int = 4
    device: str = "auto"
    precision: str = "fp32"
    overwrite: bool = False
    refine: str | None = None  # "vitmatte": ViTMatte as a second stage
    refine_model: str = VITMATTE  # its Hub id or local folder
    foreground: str = DEFAULT_FOREGROUND  # colours of cut-outs and composites: ml, blur-fusion or none (the photo's)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.refine not in (None, "vitmatte"):
            raise InputError(f"refine must be vitmatte, got {self.refine!r}")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.foreground not in FOREGROUNDS:
            raise InputError(f"--foreground {self.foreground}: use one of {', '.join(FOREGROUNDS)}")
        if self.size < 32 or self.batch_size < 1:
            raise InputError("size must be >= 32 and batch_size >= 1")
        parse_color(self.color)


@dataclass
class InferResult:
    written: int = 0
    kept: int = 0
    skipped: int = 0


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_infer(config: InferConfig) -> InferResult:
    """Write one output per input image into config.out; returns the counts."""
    from tqdm import tqdm

    out = Path(config.out)
    items = plan_outputs(list(config.inputs), out, config.mode)
    for _, target in items:
        remove_stale_temporaries_of(target)  # a killed run's half-written outputs (.<name>.<pid>.tmp), nothing else
    todo = [(source, target) for source, target in items if config.overwrite or not target.exists()]
    result = InferResult(kept=len(items) - len(todo))
    predictor = make_predictor(config)
    color, skipped = parse_color(config.color), []
    with tqdm(total=len(todo), desc="infer", unit="img", disable=not config.progress) as bar:
        for batch in _batches(todo, config.batch_size):
            images, targets = [], []
            for source, target in batch:
                try:
                    images.append(read_image(source))
                    targets.append((source, target))
                except ImageReadError as error:
                    skipped.append({"path": str(source), "reason": str(error)})
            if images:
                for image, alpha, (_, target) in zip(images, predictor(images), targets):
                    write_atomic(target, render(image, alpha, config.mode, color, target, config.foreground))
                    result.written += 1
            bar.update(len(batch))
    result.skipped = len(skipped)
    if skipped:
        folder = out.parent if out.suffix.lower() in IMAGE_EXTENSIONS else out
        write_atomic(folder / "skipped.jsonl", "".join(json.dumps(s) + "\n" for s in skipped).encode())
    return result


def make_predictor(config: InferConfig) -> Predictor:
    refine_model = config.refine_model if config.refine else None
    return Predictor(config.checkpoint, config.onnx, config.size, config.device, config.precision, refine_model)


def infer_bytes(data: bytes, config: InferConfig, target: Path = Path("stdout.png")) -> bytes:
    """One encoded image in, its encoded output (`config.mode`) out, in the format `target`'s name says (PNG for
    stdout): `infer - -` reads stdin, writes stdout; `infer - -o x.jpg --mode composite` writes JPEG."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "stdin"
        source.write_bytes(data)
        image = read_image(source)  # ImageReadError names "stdin" when the bytes are not an image
    (alpha,) = make_predictor(config)([image])
    return render(image, alpha, config.mode, parse_color(config.color), target, config.foreground)


@click.command(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="ormbg")
@logging_options(logging.INFO)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, allow_dash=True))
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output folder; for one input image, a file name with an image suffix (cutout.png) is the output file; "
    "`-` writes one image's PNG to stdout (`- -o -`: stdin to stdout).",
)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="ormbg.pth, our .pt or .safetensors.")
@click.option("--onnx", type=click.Path(path_type=Path), default=None, help="Run this ONNX export with onnxruntime.")
@click.option("--mode", type=click.Choice(MODES), default="rgba", show_default=True, help="What to write.")
@click.option("--color", default="#ffffff", show_default=True, help="Background of --mode composite.")
@click.option(
    "--foreground",
    type=click.Choice(FOREGROUNDS),
    default=DEFAULT_FOREGROUND,
    show_default=True,
    help="Colours of cut-outs and composites: ml (pymatting's estimator) or blur-fusion (faster) take the old "
    "background out of soft pixels such as hair, so no fringe shows on a new background (as `datagen foreground`); "
    "none keeps the photo's colours. The matte is the same either way.",
)
@click.option("--size", type=int, default=1024, show_default=True, help="Model input side in px.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--overwrite", is_flag=True, help="Redo outputs that exist.")
@click.option(
    "--refine",
    type=click.Choice(["vitmatte"]),
    default=None,
    help="Two-stage matting: ViTMatte refines the band of ORMBG's soft and uncertain pixels.",
)
@click.option(
    "--refine-model",
    default=VITMATTE,
    show_default=True,
    help="ViTMatte Hub id or local folder for --refine.",
)
@click.option("--progress/--no-progress", default=True)
def main(inputs, **options) -> None:
    """Write RGBA cutouts, alpha mattes or composites for image files and folders.

    \b
    python -m ormbg.infer photos/ -o cutouts/ --checkpoint ormbg.pth            # RGBA PNG cutouts, names kept
    python -m ormbg.infer a.jpg -o a-cutout.png --checkpoint ormbg.pth          # one image to one file
    cat a.jpg | python -m ormbg.infer - -o - --checkpoint ormbg.pth > cut.png   # stdin to stdout
    """
    if "-" in inputs or str(options["out"]) == "-":
        with user_errors():
            if inputs != ("-",) and len(inputs) != 1:
                raise InputError("`-` takes exactly one image (stdin in, or one file to stdout)")
            config = InferConfig(inputs=tuple(inputs), **{**options, "out": Path("-")})
            target = (
                Path("stdout.png") if str(options["out"]) == "-" else check_output_name(options["out"], config.mode)
            )
            data = sys.stdin.buffer.read() if inputs == ("-",) else Path(inputs[0]).read_bytes()
            output = infer_bytes(data, config, target)
        if str(options["out"]) == "-":
            sys.stdout.buffer.write(output)
            sys.stdout.buffer.flush()
        else:
            with user_errors():
                write_atomic(options["out"], output)
        return
    with user_errors():
        result = run_infer(InferConfig(inputs=tuple(inputs), **options))
    click.echo(
        f"wrote {result.written}, kept {result.kept} existing, skipped {result.skipped} unreadable"
        f"{' (see skipped.jsonl)' if result.skipped else ''}; outputs in {options['out']}"
    )


if __name__ == "__main__":
    main()
