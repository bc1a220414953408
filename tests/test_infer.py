import hashlib
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from datagen.io import read_image
from datagen.procedural import draw_background
from ormbg.export import ExportConfig, run_export
from ormbg.export import main as export_main
from ormbg.infer import InferConfig, Predictor, main, parse_color, run_infer


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def photos(tmp_path):
    """Images of odd sizes and formats, one in a subfolder, and one file that is not an image."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, (height, width) in {"a.jpg": (97, 131), "b.png": (50, 33), "sub/c.jpg": (120, 80)}.items():
        Image.fromarray(draw_background(np.random.default_rng(len(name) + height), height, width)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_help():
    for command in (main, export_main):
        result = CliRunner().invoke(command, ["--help"])
        assert result.exit_code == 0 and "--checkpoint" in result.output


@pytest.mark.parametrize("mode", ["rgba", "alpha", "composite"])
def test_outputs_keep_names_and_sizes(tmp_path, photos, checkpoint, mode):
    out = tmp_path / "out"
    args = [str(photos), "-o", str(out), "--checkpoint", str(checkpoint), "--size", "64", "--mode", mode]
    result = CliRunner().invoke(main, [*args, "--batch-size", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 3" in result.output and "skipped 1" in result.output
    suffix = ".jpg" if mode == "composite" else ".png"
    for name, size in {"a": (131, 97), "sub/c": (80, 120)}.items():
        image = Image.open(out / f"{name}{suffix}")
        assert image.size == size
        assert image.mode == {"rgba": "RGBA", "alpha": "L", "composite": "RGB"}[mode]
    assert Image.open(out / "b.png").size == (33, 50)
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert skipped[0]["path"].endswith("broken.jpg") and "unreadable" in skipped[0]["reason"]


def test_cutout_alpha_is_the_matte_and_colour_matches(tmp_path, photos, checkpoint):
    image = np.asarray(Image.open(photos / "b.png"))
    alpha = Predictor(checkpoint, size_px=64)([image])[0]
    assert alpha.shape == image.shape[:2] and 0 <= alpha.min() and alpha.max() <= 1
    assert alpha.max() - alpha.min() > 0.05  # the fixture's weights give a varying matte, not a constant
    base = dict(inputs=(str(photos / "b.png"),), checkpoint=checkpoint, size=64, progress=False, foreground="none")
    run_infer(InferConfig(out=tmp_path / "rgba", **base))
    cutout = np.asarray(Image.open(tmp_path / "rgba/b.png"))
    np.testing.assert_array_equal(cutout[..., :3], image)
    np.testing.assert_array_equal(cutout[..., 3], np.round(alpha * 255).astype(np.uint8))
    run_infer(InferConfig(out=tmp_path / "green", mode="composite", color="#00ff00", **base))
    composite = np.asarray(Image.open(tmp_path / "green/b.png")).astype(float)
    weight = cutout[..., 3:].astype(float) / 255
    expected = image * weight + np.array([0, 255, 0]) * (1 - weight)
    assert np.abs(composite - expected).max() <= 0.5 + 1e-9


def test_rerun_keeps_outputs_and_overwrite_redoes_them(tmp_path, photos, checkpoint):
    config = dict(inputs=(str(photos),), out=tmp_path / "out", checkpoint=checkpoint, size=64, progress=False)
    assert run_infer(InferConfig(**config)).written == 3
    again = run_infer(InferConfig(**config))
    assert (again.written, again.kept) == (0, 3)
    assert run_infer(InferConfig(overwrite=True, **config)).written == 3


def test_names_with_dots_single_file_output_collisions_and_empty_input(tmp_path, checkpoint):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("shot.v1.jpg", "shot.v2.jpg", "x.y.z.png"):
        Image.fromarray(draw_background(np.random.default_rng(len(name)), 40, 30)).save(folder / name)
    base = ["--checkpoint", str(checkpoint), "--size", "64", "--no-progress"]
    result = CliRunner().invoke(main, [str(folder), "-o", str(tmp_path / "out"), *base])
    assert result.exit_code == 0 and "wrote 3" in result.output, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shot.v1.png", "shot.v2.png", "x.y.z.png"]

    single = tmp_path / "cutout.png"
    result = CliRunner().invoke(main, [str(folder / "shot.v1.jpg"), "-o", str(single), *base])
    assert result.exit_code == 0 and single.is_file() and Image.open(single).mode == "RGBA", result.output

    Image.fromarray(draw_background(np.random.default_rng(0), 40, 30)).save(folder / "shot.v1.png")
    result = CliRunner().invoke(main, [str(folder), "-o", str(tmp_path / "clash"), *base])
    assert result.exit_code == 1 and "would both write" in result.output and "shot.v1.png" in result.output
    composite = CliRunner().invoke(main, [str(folder), "-o", str(tmp_path / "c"), "--mode", "composite", *base])
    assert composite.exit_code == 0 and "wrote 4" in composite.output, "a.jpg and a.png differ as composites"

    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, [str(empty), "-o", str(tmp_path / "none"), *base])
    assert result.exit_code == 1 and "no images in" in result.output


def test_stdin_to_stdout(tmp_path, photos, checkpoint):
    import io
    import subprocess
    import sys

    data = (photos / "a.jpg").read_bytes()
    command = [sys.executable, "-m", "ormbg.infer", "-", "-o", "-", "--checkpoint", str(checkpoint), "--size", "64"]
    result = subprocess.run(command, input=data, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    cutout = Image.open(io.BytesIO(result.stdout))
    assert cutout.format == "PNG" and cutout.mode == "RGBA" and cutout.size == (131, 97)
    bad = subprocess.run(command, input=b"not an image", capture_output=True, timeout=120)
    assert bad.returncode == 1 and b"stdin" in bad.stderr and b"Traceback" not in bad.stderr and not bad.stdout


def test_a_named_output_file_gets_the_format_its_name_says(tmp_path, photos, checkpoint):
    """`- -o x.jpg --mode composite` and `a.jpg -o x.jpeg --mode composite` write JPEG; a matte or cut-out named .jpg
    is refused (JPEG cannot hold it), and so is `-o` an existing folder for stdin."""
    base = ["--checkpoint", str(checkpoint), "--size", "64"]
    runner = CliRunner()
    for inputs, name in ((["-"], "x.jpg"), ([str(photos / "a.jpg")], "y.JPEG")):
        data = (photos / "a.jpg").read_bytes()
        result = runner.invoke(main, [*inputs, "-o", str(tmp_path / name), "--mode", "composite", *base], input=data)
        assert result.exit_code == 0, result.output
        assert Image.open(tmp_path / name).format == "JPEG"
    for args in (["-o", str(tmp_path / "m.jpg"), "--mode", "alpha"], ["-o", str(tmp_path)]):
        result = runner.invoke(main, ["-", *args, *base], input=data)
        assert result.exit_code == 1 and "-o" in result.output and "Traceback" not in result.output, result.output
    result = runner.invoke(main, [str(photos / "a.jpg"), "-o", str(tmp_path / "r.jpg"), *base])
    assert result.exit_code == 1 and "name the file .png" in result.output and not (tmp_path / "r.jpg").exists()


def test_bad_arguments():
    with pytest.raises(ValueError, match="colour"):
        parse_color("blue-ish")
    assert parse_color("#FF8000") == (255, 128, 0)
    with pytest.raises(ValueError, match="exactly one"):
        Predictor()


def test_onnx_export_parity_and_weights_untouched(tmp_path, checkpoint, photos):
    """fp32 export beside the weights: parity under 1e-3 on two input shapes, the weights byte-identical, and
    `infer --onnx` gives the PyTorch mattes."""
    weights = tmp_path / "ormbg.pth"
    weights.write_bytes(checkpoint.read_bytes())
    before = sha256(weights)
    result = CliRunner().invoke(export_main, ["--checkpoint", str(weights), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "largest |onnx - torch|" in result.output
    assert (tmp_path / "ormbg.onnx").is_file() and sha256(weights) == before
    exported = run_export(ExportConfig(checkpoint=weights, out=tmp_path / "again.onnx", size=64))
    assert exported.max_difference < 1e-3 and len(exported.checked_shapes) == 2
    image = np.asarray(Image.open(photos / "a.jpg"))
    torch_alpha = Predictor(checkpoint, size_px=64)([image])[0]
    onnx_alpha = Predictor(onnx=tmp_path / "ormbg.onnx", size_px=64)([image])[0]
    assert np.abs(torch_alpha - onnx_alpha).max() < 1e-3


def test_export_refuses_to_overwrite_the_weights(tmp_path, checkpoint):
    weights = tmp_path / "model.onnx"  # weights that happen to carry the output's name
    weights.write_bytes(checkpoint.read_bytes())
    with pytest.raises(ValueError, match="checkpoint itself"):
        ExportConfig(checkpoint=weights)
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        ExportConfig(checkpoint=checkpoint, out=tmp_path / "model.pth")
    with pytest.raises(FileNotFoundError, match="schirrmacher/ormbg"):
        ExportConfig(checkpoint=tmp_path / "missing.pth")


# Tolerances: on this project's CPU, autocast gave 4.8e-3 (bf16) and 7.2e-4 (fp16) against fp32 on these weights.
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-3), ("bf16", 2e-2), ("fp16", 5e-3)])
def test_cuda_mattes_match_the_cpu(photos, checkpoint, precision, tolerance, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    images = [np.asarray(Image.open(photos / name).convert("RGB")) for name in ("a.jpg", "b.png", "sub/c.jpg")]
    expected = Predictor(checkpoint, size_px=64, device="cpu")(images)
    got = Predictor(checkpoint, size_px=64, device="cuda", precision=precision)(images)
    for cpu, cuda in zip(expected, got):
        assert cuda.shape == cpu.shape and cuda.dtype == np.float32
        assert np.abs(cuda - cpu).max() < tolerance


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_export_on_cuda(tmp_path, checkpoint):
    """Half-precision weights in the graph; parity within 2e-2 where onnxruntime has the CUDA provider (a CPU-only
    onnxruntime cannot run it, and the export says so instead)."""
    import onnx
    import onnxruntime

    result = run_export(ExportConfig(checkpoint=checkpoint, out=tmp_path / "half.onnx", size=64, fp16=True))
    graph = onnx.load(result.path).graph
    assert {initializer.data_type for initializer in graph.initializer} == {onnx.TensorProto.FLOAT16}
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert result.max_difference < 2e-2 and len(result.checked_shapes) == 2
    else:
        assert math.isnan(result.max_difference) and result.checked_shapes == []


def test_cutouts_carry_the_persons_colour_and_none_keeps_the_photos(tmp_path, photos, checkpoint):
    """--foreground ml (the default) and blur-fusion change only the colour of soft pixels (the matte and the opaque
    pixels stay the photo's); --foreground none writes the photo's colours, as infer did before."""
    base = ["--checkpoint", str(checkpoint), "--size", "64", "--no-progress", "--mode", "rgba"]
    source = read_image(photos / "a.jpg")
    cutouts = {}
    for method in ("ml", "blur-fusion", "none"):
        out = tmp_path / method
        args = [str(photos / "a.jpg"), "-o", str(out / "a.png"), *base, "--foreground", method]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        cutouts[method] = np.asarray(Image.open(out / "a.png"))
    alpha = cutouts["none"][..., 3]
    soft = (alpha > 0) & (alpha < 255)
    assert soft.any()  # the random weights give soft values everywhere; opaque pixels are tested in test_foreground
    np.testing.assert_array_equal(cutouts["none"][..., :3], source)  # the photo's colours, byte for byte
    for method in ("ml", "blur-fusion"):
        np.testing.assert_array_equal(cutouts[method][..., 3], alpha)
        np.testing.assert_array_equal(cutouts[method][alpha == 255][:, :3], source[alpha == 255])
        assert (cutouts[method][soft][:, :3] != source[soft]).any(), method
    assert run_infer(InferConfig(inputs=(str(photos / "a.jpg"),), out=tmp_path / "x", checkpoint=checkpoint,
                                 size=64, progress=False)).written == 1  # fmt: skip
    with pytest.raises(ValueError, match="--foreground"):
        InferConfig(inputs=(), out=tmp_path, foreground="median")
