"""ViTMatte refinement: `datagen refine` on coarse masks, and the shared pieces `infer --refine` uses."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from datagen.alpha import over
from datagen.cli import cli
from datagen.inspect import inspect_dataset
from datagen.io import read_alpha
from datagen.procedural import draw_background, draw_person
from datagen.records import read_rows, write_sample
from datagen.refine import Matter, RefineConfig, band_trimap, band_width, run_refine, soft_share
from tests.conftest import directory_bytes


def coarse_dataset(root, n=4, size=(97, 131), soft=()):
    """Photo rows whose gt/ is a binary mask (as DIS5K's, or a model's thresholded output); `soft` ids keep a soft
    matte."""
    for index in range(n):
        rng = np.random.default_rng([index, 5])
        person = draw_person(rng, *size)
        image = over(person, draw_background(rng, *size))
        alpha = person[..., 3] if f"s{index}" in soft else np.where(person[..., 3] > 127, 255, 0).astype(np.uint8)
        source = "dis5k" if index % 2 == 0 else "mine"
        write_sample(root, "train", f"s{index}", image=image, alpha=alpha, metadata={"source": source, "license": "x"})
    return root


def test_band_trimap_keeps_the_mask_outside_the_band_and_scales_with_the_person():
    mask = np.zeros((200, 100), np.uint8)
    mask[40:160, 30:70] = 255
    trimap = band_trimap(mask, 5)
    known = trimap != 128
    np.testing.assert_array_equal(trimap[known], mask[known])
    assert (
        (trimap[40:160, 30:70][5:-5, 5:-5] == 255).all() and (trimap[100, 25:35] == 128).all() and trimap[100, 24] == 0
    )
    assert band_width(mask, band_fraction=0.05) == 6 and band_width(mask, band_px=9) == 9
    assert band_width(mask[::2, ::2], band_fraction=0.05) == 3  # a smaller person, a narrower band


def test_preparation_equals_the_image_processor(tiny_vitmatte):
    """Our batched preparation is the processor's (normalised RGB, trimap / 255, zero padding to 32)."""
    from transformers import VitMatteImageProcessorPil

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 70, 3), np.uint8)
    trimap = rng.choice(np.array([0, 128, 255], np.uint8), (45, 70))
    ours = Matter(str(tiny_vitmatte), device="cpu", offline=True).prepare(image, trimap).numpy()
    theirs = VitMatteImageProcessorPil()(images=image, trimaps=trimap, return_tensors="np")["pixel_values"][0]
    assert ours.shape == theirs.shape == (4, 64, 96)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_refine_keeps_the_mask_outside_the_band_writes_what_it_used_and_resumes(tmp_path, tiny_vitmatte):
    root = coarse_dataset(tmp_path / "ds")
    originals = {row["id"]: (root / "train" / row["alpha_file_name"]).read_bytes() for row in read_rows(root, "train")}
    config = RefineConfig(root, model=str(tiny_vitmatte), offline=True, device="cpu", batch_size=3, progress=False)
    result = run_refine(config)
    assert (result.refined, result.rows_updated) == (4, {"train": 4})
    report = inspect_dataset(root)
    assert report.ok, report.format_text()
    for row in read_rows(root, "train"):
        assert row["alpha_source"] == "vitmatte" and row["refine_model"] == str(tiny_vitmatte)
        mask_bytes = (root / "train" / row["mask_file_name"]).read_bytes()
        assert mask_bytes == originals[row["id"]], "the original mask is kept byte for byte"
        mask = read_alpha(root / "train" / row["mask_file_name"])
        trimap = read_alpha(root / "train" / row["trimap_file_name"])
        np.testing.assert_array_equal(trimap, band_trimap(mask, row["refine_band_px"]))  # the trimap used
        alpha = read_alpha(root / "train" / row["alpha_file_name"])
        known = trimap != 128
        np.testing.assert_array_equal(alpha[known], mask[known])  # outside the band: exactly the mask
        assert alpha.shape == (97, 131)
    before = directory_bytes(root)
    again = run_refine(config)
    assert (again.refined, again.existing) == (0, 4)
    assert {k: v for k, v in directory_bytes(root).items() if not k.startswith("refine")} == {
        k: v for k, v in before.items() if not k.startswith("refine")
    }
    import datasets

    loaded = datasets.load_dataset(str(root), cache_dir=str(tmp_path / "cache"))["train"]
    assert {"image", "alpha", "mask", "trimap"} <= set(loaded.features)


def test_an_interrupted_refine_resumes_to_the_same_bytes(tmp_path, tiny_vitmatte, monkeypatch):
    from datagen import refine as refine_module

    straight = coarse_dataset(tmp_path / "straight")
    config = dict(model=str(tiny_vitmatte), offline=True, device="cpu", batch_size=1, progress=False)
    run_refine(RefineConfig(straight, **config))
    broken = coarse_dataset(tmp_path / "broken")
    real, calls = refine_module.write_atomic, []

    def killed_on_the_seventh(path, data):
        calls.append(path)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(refine_module, "write_atomic", killed_on_the_seventh)
    with pytest.raises(KeyboardInterrupt):
        run_refine(RefineConfig(broken, **config))
    monkeypatch.setattr(refine_module, "write_atomic", real)
    run_refine(RefineConfig(broken, **config))

    def files(root):
        return {k: v for k, v in directory_bytes(root).items() if not k.startswith("refine")}

    assert files(broken) == files(straight)


def test_where_and_the_soft_rule_choose_the_rows(tmp_path, tiny_vitmatte):
    root = coarse_dataset(tmp_path / "ds", n=4, soft=("s2",))
    soft_before = (root / "train/gt/s2.png").read_bytes()
    base = dict(model=str(tiny_vitmatte), offline=True, device="cpu", progress=False)
    result = run_refine(RefineConfig(root, where=(("source", "dis5k"),), **base))
    assert (result.refined, result.soft_skipped) == (1, 1)  # s0 refined; s2 (dis5k) is soft already
    rows = {row["id"]: row for row in read_rows(root, "train")}
    assert rows["s0"]["alpha_source"] == "vitmatte" and rows["s2"]["alpha_source"] == "original"
    assert rows["s1"]["alpha_source"] == "original" and rows["s1"]["refine_band_px"] == 0  # --where left it out
    assert (root / "train/gt/s2.png").read_bytes() == soft_before == (root / "train/mask/s2.png").read_bytes()
    assert inspect_dataset(root).ok
    forced = run_refine(RefineConfig(root, where=(("source", "dis5k"),), force=True, **base))
    assert forced.refined == 1 and {r["id"]: r for r in read_rows(root, "train")}["s2"]["alpha_source"] == "vitmatte"
    assert soft_share(np.array([[0, 255, 128, 255]], np.uint8)) == pytest.approx(1 / 3)


def test_large_images_take_a_resized_pass_with_the_band_restored(tiny_vitmatte):
    rng = np.random.default_rng(2)
    person = draw_person(rng, 301, 199)
    mask = np.where(person[..., 3] > 127, 255, 0).astype(np.uint8)
    trimap = band_trimap(mask, 6)
    image = over(person, draw_background(rng, 301, 199))
    (alpha,) = Matter(str(tiny_vitmatte), device="cpu", offline=True, max_side_px=128)([image], [trimap])
    assert alpha.shape == (301, 199)
    np.testing.assert_array_equal(alpha[trimap != 128], trimap[trimap != 128])


def test_a_missing_model_is_one_line_with_the_command(tmp_path):
    root = coarse_dataset(tmp_path / "ds", n=1)
    args = ["refine", str(root), "--model", str(tmp_path / "no-such-model"), "--offline", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "hf download" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["refine", str(root), "--where", "source", "--no-progress"])
    assert result.exit_code == 1 and "FIELD=VALUE" in result.output
    assert read_rows(root, "train")[0].get("alpha_source") is None, "nothing changed"


def test_infer_refine_keeps_odd_sizes_and_changes_only_the_uncertain_band(tmp_path, checkpoint, tiny_vitmatte):
    from PIL import Image

    from datagen.refine import uncertain_trimap
    from ormbg.infer import Predictor, main

    image = over(draw_person(np.random.default_rng(1), 97, 131), draw_background(np.random.default_rng(2), 97, 131))
    Image.fromarray(image).save(tmp_path / "odd.png")
    args = [str(tmp_path / "odd.png"), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint), "--size", "64"]
    args += ["--mode", "alpha", "--refine", "vitmatte", "--refine-model", str(tiny_vitmatte), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    refined = read_alpha(tmp_path / "out/odd.png")
    assert refined.shape == (97, 131)
    first = np.rint(Predictor(checkpoint, size_px=64)([image])[0] * 255).astype(np.uint8)
    trimap = uncertain_trimap(first)
    np.testing.assert_array_equal(refined[trimap != 128], trimap[trimap != 128])
    bad_args = [a if a != str(tmp_path / "out") else str(tmp_path / "out2") for a in args[:-2]]
    bad = CliRunner().invoke(main, [*bad_args, str(tmp_path / "nope"), "--no-progress"])
    assert bad.exit_code == 1 and "hf download" in bad.output and "Traceback" not in bad.output


def test_evaluate_refine_reports_the_second_stage(tmp_path, checkpoint, tiny_vitmatte, dataset_dir):
    from ormbg.evaluate import main

    out = tmp_path / "e.json"
    args = ["--checkpoint", str(checkpoint), "--data", str(dataset_dir), "--size", "64", "--workers", "0"]
    args += ["--refine", "vitmatte", "--refine-model", str(tiny_vitmatte), "--json", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())["datasets"][f"{dataset_dir}:test"]
    assert scores["second_stage"] == f"vitmatte ({tiny_vitmatte})" and scores["n"] == 2 and "unknown" in scores
    assert "second stage |" in result.output and "ViTMatte" in json.loads(out.read_text())["protocol"]
