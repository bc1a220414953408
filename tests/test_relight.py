"""IC-Light relighting: the offset merge, the alignment check, and `datagen relight` end to end on a tiny pipeline."""

import json

import numpy as np
import pytest
import torch

from datagen.alpha import over
from datagen.inspect import inspect_dataset
from datagen.procedural import draw_background, draw_person
from datagen.records import read_rows, set_rejected, write_sample
from datagen.relight import (
    AlignmentThresholds,
    RelightConfig,
    alignment_scores,
    condition_inputs,
    run_relight,
    widen_conv_in,
)
from datagen.weights import merge_offset
from tests.conftest import directory_bytes
from tests.tiny_sd15 import tiny_offset, tiny_sd15


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd15")
    base = tiny_sd15(folder)
    return base, tiny_offset(base, "fbc", folder / "iclight_sd15_fbc.safetensors", scale=0.01)


def photo(index: int, size=(96, 64)):
    rng = np.random.default_rng([index, 3])
    person = draw_person(rng, *size)
    return over(person, draw_background(rng, *size)), person[..., 3]


def test_the_offset_is_added_to_every_key_and_must_fit_exactly(sd15):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    base, offset_path = sd15
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    before = {key: value.clone() for key, value in widen_conv_in(unet, 8).state_dict().items()}
    assert unet.conv_in.in_channels == 12 and unet.config.in_channels == 12
    assert (before["conv_in.weight"][:, 4:] == 0).all(), "new input channels start at zero"
    offset = load_file(str(offset_path))
    merge_offset(unet, offset, every_key=True)
    after = unet.state_dict()
    for key in before:
        torch.testing.assert_close(after[key], before[key] + offset[key])
    assert all(offset[key].abs().sum() > 0 for key in offset), "the fixture offsets every key"
    with pytest.raises(ValueError, match="1 keys missing"):
        merge_offset(unet, {k: v for k, v in offset.items() if k != "conv_in.bias"}, every_key=True)
    with pytest.raises(ValueError, match="1 keys not in the UNet"):
        merge_offset(unet, {**offset, "extra.weight": torch.zeros(1)}, every_key=True)
    with pytest.raises(ValueError, match="first conv_in.weight"):
        merge_offset(unet, {**offset, "conv_in.weight": torch.zeros(3, 3)}, every_key=True)


def test_the_check_passes_an_identity_relight_and_rejects_a_shifted_person():
    image, alpha = photo(0, (160, 112))
    thresholds = AlignmentThresholds()
    identity = alignment_scores(image, image, alpha)
    assert identity["relight_edge_ratio"] == pytest.approx(1.0) and thresholds.rejection(identity) is None
    relit = np.clip(image.astype(int) * 0.8 + 20, 0, 255).astype(np.uint8)  # darker, same shapes
    assert thresholds.rejection(alignment_scores(image, relit, alpha)) is None, alignment_scores(image, relit, alpha)
    person, background = condition_inputs(image, alpha)
    moved_person = np.roll(np.dstack([image, alpha]), (4, 4), axis=(0, 1))  # the person drifted 4 px off its alpha
    shifted = over(moved_person, background)
    scores = alignment_scores(image, shifted, alpha)
    assert thresholds.rejection(scores) is not None, scores


def test_relight_end_to_end_keeps_the_alpha_bytes_and_resumes(tmp_path, sd15):
    base, offset = sd15
    src = tmp_path / "composites"
    for index in range(3):
        image, alpha = photo(index)
        write_sample(
            src, "train", f"c{index}", image=image, alpha=alpha, metadata={"source": "composite", "license": "MIT"}
        )
    out = tmp_path / "relit"
    config = dict(
        src=src, out=out, model=str(base), weights=str(offset), steps=2, size_px=64, highres_scale=1.5,
        device="cpu", dtype="fp32", offline=True, thresholds=AlignmentThresholds.accept_all(), progress=False,
    )  # fmt: skip
    result = run_relight(RelightConfig(**config))
    assert (result.new, result.existing) == (3, 0)
    report = inspect_dataset(out)
    assert report.ok, report.format_text()
    for row in read_rows(out, "train"):
        assert (out / "train" / row["alpha_file_name"]).read_bytes() == (
            src / "train/gt" / f"{row['id']}.png"
        ).read_bytes()
        assert row["relight_model"] == "fbc" and row["relight_prompt"] and "relight_edge_ratio" in row
        assert "IC-Light" in row["license"]
    before = directory_bytes(out)
    assert run_relight(RelightConfig(**config)).existing == 3
    assert {k: v for k, v in directory_bytes(out).items() if k != "README.md"} == {
        k: v for k, v in before.items() if k != "README.md"
    }
    strict = run_relight(
        RelightConfig(
            **{
                **config,
                "out": tmp_path / "strict",
                "thresholds": AlignmentThresholds(min_edge_ratio=2.0),
                "max_attempts": 2,
            }
        )
    )
    assert strict.new == 0 and strict.rejected == {"misaligned edges": 6} and sum(strict.skipped.values()) == 3
    assert json.loads((tmp_path / "strict/run.json").read_text())["rejected"] == {"misaligned edges": 6}


def test_missing_weights_say_how_to_get_them(tmp_path, sd15):
    from click.testing import CliRunner

    from datagen.cli import cli

    base, _ = sd15
    src = tmp_path / "src"
    image, alpha = photo(0)
    write_sample(src, "train", "c0", image=image, alpha=alpha, metadata={"source": "s"})
    args = ["relight", str(src), "-o", str(tmp_path / "out"), "--model", str(base), "--offline", "--device", "cpu"]
    result = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert result.exit_code == 1 and "hf download lllyasviel/ic-light iclight_sd15_fbc.safetensors" in result.output
    result = CliRunner().invoke(cli, [*args[:4], "--model", str(tmp_path / "nope"), "--offline", "--no-progress"])
    assert result.exit_code == 1 and "hf download" in result.output and "Traceback" not in result.output


def test_relight_leaves_rejected_samples_out_and_the_others_unchanged(tmp_path, sd15):
    """A rejected source sample is not relit; the others keep their draws (their index in SRC)."""
    base, offset = sd15
    config = dict(
        model=str(base), weights=str(offset), steps=1, size_px=64, device="cpu", dtype="fp32", offline=True,
        thresholds=AlignmentThresholds.accept_all(), progress=False,
    )  # fmt: skip
    src = tmp_path / "src"
    for index in range(3):
        image, alpha = photo(index)
        write_sample(src, "train", f"c{index}", image=image, alpha=alpha, metadata={"source": "c", "license": "MIT"})
    run_relight(RelightConfig(src=src, out=tmp_path / "all", **config))
    set_rejected(src, "c1", "blurred")
    result = run_relight(RelightConfig(src=src, out=tmp_path / "kept", **config))
    assert result.new == 2 and [row["id"] for row in read_rows(tmp_path / "kept", "train")] == ["c0", "c2"]
    for name in ("c0", "c2"):
        assert (tmp_path / "kept/train/im" / f"{name}.jpg").read_bytes() == (
            tmp_path / "all/train/im" / f"{name}.jpg"
        ).read_bytes()


def test_relight_of_an_empty_or_non_dataset_folder_is_one_line(tmp_path):
    from click.testing import CliRunner

    from datagen.cli import cli

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["relight", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--offline"])
    assert result.exit_code == 1 and "is it a dataset directory" in result.output and "Traceback" not in result.output
