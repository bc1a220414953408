"""ViTMatte refinement: `datagen refine` on coarse masks, and the shared pieces `infer --refine` uses."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from datagen.alpha import over, trimap_from_alpha
from datagen.cli import cli
from datagen.inspect import inspect_dataset
from datagen.io import read_alpha, read_foreground
from datagen.procedural import draw_background, draw_person
from datagen.records import read_rows, write_sample
from datagen.refine import Matter, RefineConfig, band_width, run_refine, soft_share
from tests.conftest import directory_bytes


def coarse_dataset(root, n=4, size=(97, 131), soft=(), trimaps=False):
    """Photo rows whose gt/ is a binary mask (as DIS5K's, or a model's thresholded output); `soft` ids keep a soft
    matte; `trimaps`: each row has the source's own trimap (as AIM-500's and AM-2k's)."""
    for index in range(n):
        rng = np.random.default_rng([index, 5])
        person = draw_person(rng, *size)
        image = over(person, draw_background(rng, *size))
        alpha = person[..., 3] if f"s{index}" in soft else np.where(person[..., 3] > 127, 255, 0).astype(np.uint8)
        source = "dis5k" if index % 2 == 0 else "mine"
        extra = {"trimap": trimap_from_alpha(alpha, 2, edge_of=127)} if trimaps else {}
        metadata = {"source": source, "license": "x"}
        write_sample(root, "train", f"s{index}", image=image, alpha=alpha, metadata=metadata, **extra)
    return root


def test_a_rerun_measures_no_alpha_again_unless_it_changed(tmp_path, tiny_vitmatte, monkeypatch):
    """The soft share of each alpha is kept in refine-soft.jsonl with the file's size and time: a rerun (or a run
    resumed after a crash) decodes none of them; a changed alpha, and a row whose cache line is unreadable, are
    measured again."""
    import os

    from datagen import refine

    root = coarse_dataset(tmp_path / "ds", n=4, soft=("s1", "s2"))
    base = dict(model=str(tiny_vitmatte), offline=True, device="cpu", progress=False)
    first = run_refine(RefineConfig(root, **base))
    assert (first.refined, first.soft_skipped) == (2, 2)
    measured = []
    monkeypatch.setattr(refine, "soft_share", lambda alpha: measured.append(alpha.shape) or soft_share(alpha))
    again = run_refine(RefineConfig(root, **base))
    assert (again.refined, again.soft_skipped, measured) == (0, 2, []), "nothing decoded on a rerun"
    alpha = root / "train/gt/s2.png"
    os.utime(alpha, ns=(alpha.stat().st_atime_ns, alpha.stat().st_mtime_ns + 10**9))  # touched: measured again
    cache = root / "refine-soft.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("".join(line + "\n" for line in lines if '"s1"' not in line) + '{"id": "s1", "split": \n')
    third = run_refine(RefineConfig(root, **base))
    assert (third.refined, third.soft_skipped, len(measured)) == (0, 2, 2), "s2 (changed) and s1 (bad line) again"
    assert run_refine(RefineConfig(root, **base)).soft_skipped == 2 and len(measured) == 2


def test_the_band_trimap_keeps_the_mask_outside_the_band_and_scales_with_the_person():
    mask = np.zeros((200, 100), np.uint8)
    mask[40:160, 30:70] = 255
    trimap = trimap_from_alpha(mask, 5, edge_of=127)
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
        trimap = read_alpha(root / "train" / row["refine_trimap_file_name"])
        np.testing.assert_array_equal(
            trimap, trimap_from_alpha(mask, row["refine_band_px"], edge_of=127)
        )  # the trimap used
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
    assert {"image", "alpha", "mask", "refine_trimap"} <= set(loaded.features)


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
    trimap = trimap_from_alpha(mask, 6, edge_of=127)
    image = over(person, draw_background(rng, 301, 199))
    (alpha,) = Matter(str(tiny_vitmatte), device="cpu", offline=True, max_side_px=128)([image], [trimap])
    assert alpha.shape == (301, 199)
    np.testing.assert_array_equal(alpha[trimap != 128], trimap[trimap != 128])


def test_a_missing_model_is_one_line_with_the_command(tmp_path):
    root = coarse_dataset(tmp_path / "ds", n=1)
    args = ["refine", str(root), "--model", str(tmp_path / "no-such-model"), "--offline", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "no such folder" in result.output and "hf download" not in result.output
    hub = CliRunner().invoke(cli, ["refine", str(root), "--model", "someone/vitmatte-x", "--offline", "--no-progress"])
    assert hub.exit_code == 1 and "hf download someone/vitmatte-x" in hub.output and "Traceback" not in hub.output
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
    assert bad.exit_code == 1 and "--refine-model" in bad.output and "no such folder" in bad.output
    assert "Traceback" not in bad.output and "--model " not in bad.output


def test_two_stage_cutouts_are_decontaminated_by_default(tmp_path, checkpoint, tiny_vitmatte):
    """`--refine vitmatte` cut-outs carry the estimated foreground colour in soft pixels like one-stage ones (issue 28);
    `--foreground none` writes the photo's colours; the refined matte is the same either way."""
    from PIL import Image

    from ormbg.infer import main

    image = over(draw_person(np.random.default_rng(1), 97, 131), draw_background(np.random.default_rng(2), 97, 131))
    Image.fromarray(image).save(tmp_path / "odd.png")
    args = [str(tmp_path / "odd.png"), "--checkpoint", str(checkpoint), "--size", "64", "--mode", "rgba"]
    args += ["--refine", "vitmatte", "--refine-model", str(tiny_vitmatte), "--no-progress"]
    cutouts = {}
    for name, extra in (("default", []), ("none", ["--foreground", "none"])):
        result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / name / "odd.png"), *extra])
        assert result.exit_code == 0, result.output
        cutouts[name] = np.asarray(Image.open(tmp_path / name / "odd.png"))
    alpha = cutouts["none"][..., 3]
    soft = (alpha > 0) & (alpha < 255)
    assert soft.any()
    np.testing.assert_array_equal(cutouts["default"][..., 3], alpha)
    np.testing.assert_array_equal(cutouts["none"][..., :3], image)
    np.testing.assert_array_equal(cutouts["default"][alpha == 255][:, :3], image[alpha == 255])
    assert (cutouts["default"][soft][:, :3] != image[soft]).any()


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


def test_a_source_trimap_is_never_overwritten_and_a_killed_run_marks_no_unrefined_row(
    tmp_path, tiny_vitmatte, monkeypatch
):
    """Refine writes the trimap it used to refine_trimap/, never over a dataset's own trimap/; a run killed after a
    row's mask/ copy resumes to the uninterrupted run's bytes, and no row whose alpha is still the mask is called
    refined."""
    import datagen.records

    config = dict(model=str(tiny_vitmatte), offline=True, device="cpu", batch_size=2, progress=False)
    straight = coarse_dataset(tmp_path / "straight", trimaps=True)
    source_trimaps = {p.name: p.read_bytes() for p in (straight / "train/trimap").iterdir()}
    run_refine(RefineConfig(straight, **config))
    assert {p.name: p.read_bytes() for p in (straight / "train/trimap").iterdir()} == source_trimaps
    assert all(row["trimap_file_name"].startswith("trimap/") for row in read_rows(straight, "train"))
    broken = coarse_dataset(tmp_path / "broken", trimaps=True)
    real = datagen.records.write_atomic

    def killed_at_the_first_new_alpha(path, data):
        if "/gt/" in str(path):
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(datagen.records, "write_atomic", killed_at_the_first_new_alpha)
    with pytest.raises(KeyboardInterrupt):
        run_refine(RefineConfig(broken, **config))
    monkeypatch.setattr(datagen.records, "write_atomic", real)
    assert (broken / "train/mask/s0.png").is_file()  # killed after the mask/ copy, before the new alpha
    again = run_refine(RefineConfig(broken, **config))
    assert (again.refined, again.existing) == (4, 0)
    for row in read_rows(broken, "train"):
        assert (broken / "train/gt" / f"{row['id']}.png").read_bytes() != (
            broken / "train/mask" / f"{row['id']}.png"
        ).read_bytes()

    def files(root):
        return {k: v for k, v in directory_bytes(root).items() if not k.startswith("refine.")}

    assert files(broken) == files(straight)


def test_refine_after_foreground_removes_the_stale_fg_and_foreground_makes_it_again(tmp_path, tiny_vitmatte):
    """fg/ estimated from the mask goes when refine replaces the alpha (records.replace_alpha); the rows lose its
    columns; `datagen foreground` then estimates it from the refined alpha; inspect reports a stale fg/."""
    from datagen.foreground import ForegroundConfig, run_foreground

    root = coarse_dataset(tmp_path / "ds")
    run_foreground(ForegroundConfig(root, method="blur-fusion", progress=False))
    config = RefineConfig(root, model=str(tiny_vitmatte), offline=True, device="cpu", progress=False)
    result = run_refine(config)
    assert result.refined == 4 and result.foregrounds_removed == 4
    assert not list((root / "train/fg").iterdir())
    assert not any("foreground_file_name" in row or "foreground_method" in row for row in read_rows(root, "train"))
    assert inspect_dataset(root).ok
    assert run_foreground(ForegroundConfig(root, method="blur-fusion", progress=False)).new == 4
    for row in read_rows(root, "train"):
        fg = read_foreground(root / "train" / row["foreground_file_name"])
        np.testing.assert_array_equal(fg[..., 3], read_alpha(root / "train" / row["alpha_file_name"]))
    assert inspect_dataset(root).ok
    (root / "train/gt/s1.png").write_bytes((root / "train/mask/s1.png").read_bytes())  # an alpha changed by hand
    report = inspect_dataset(root)
    assert not report.ok and "train/fg/s1.png: its alpha differs from gt/s1.png" in report.format_text()
    fixed = run_foreground(ForegroundConfig(root, method="blur-fusion", overwrite=True, progress=False))
    assert fixed.new == 4 and inspect_dataset(root).ok  # --overwrite estimates every fg/ again, same method or not


def test_a_refine_of_some_rows_then_the_rest_leaves_no_fg_of_an_old_alpha(tmp_path, tiny_vitmatte):
    """Refining s0 drops the fg columns from every row (records.forget_derived: rows stay uniform) while s1's fg/,
    still right, stays. Refining s1 later must delete that fg/ too, though its row no longer says a stage made it,
    or `datagen foreground` would take it as done: an fg/ of the old alpha under the new one."""
    from datagen.foreground import ForegroundConfig, run_foreground

    root = coarse_dataset(tmp_path / "ds", n=2)
    run_foreground(ForegroundConfig(root, method="blur-fusion", progress=False))
    base = dict(model=str(tiny_vitmatte), offline=True, device="cpu", progress=False)
    first = run_refine(RefineConfig(root, where=("id=s0",), **base))
    assert (first.refined, first.foregrounds_removed) == (1, 1)
    assert (root / "train/fg/s1.png").is_file(), "s1's fg/ is still that of its alpha: kept"
    second = run_refine(RefineConfig(root, **base))
    assert (second.refined, second.foregrounds_removed) == (1, 1)
    assert not (root / "train/fg/s1.png").exists()
    assert run_foreground(ForegroundConfig(root, method="blur-fusion", progress=False)).new == 2
    for row in read_rows(root, "train"):
        fg = read_foreground(root / "train" / row["foreground_file_name"])
        np.testing.assert_array_equal(fg[..., 3], read_alpha(root / "train" / row["alpha_file_name"]))
    assert inspect_dataset(root).ok


def test_another_model_or_method_refuses_or_redoes_never_relabels(tmp_path, tiny_vitmatte):
    import shutil

    from datagen.foreground import ForegroundConfig, run_foreground

    root = coarse_dataset(tmp_path / "ds")
    base = dict(offline=True, device="cpu", progress=False)
    run_refine(RefineConfig(root, model=str(tiny_vitmatte), **base))
    other = tmp_path / "other-vitmatte"
    shutil.copytree(tiny_vitmatte, other)
    with pytest.raises(ValueError, match="--overwrite"):
        run_refine(RefineConfig(root, model=str(other), **base))
    redone = run_refine(RefineConfig(root, model=str(other), overwrite=True, **base))
    assert redone.refined == 4 and {row["refine_model"] for row in read_rows(root, "train")} == {str(other)}

    run_foreground(ForegroundConfig(root, method="blur-fusion", progress=False))
    with pytest.raises(ValueError, match="--overwrite"):
        run_foreground(ForegroundConfig(root, method="ml", progress=False))
    assert {row["foreground_method"] for row in read_rows(root, "train")} == {"blur-fusion"}
    run_foreground(ForegroundConfig(root, method="ml", overwrite=True, progress=False))
    fresh = coarse_dataset(tmp_path / "fresh")
    run_refine(RefineConfig(fresh, model=str(other), **base))
    run_foreground(ForegroundConfig(fresh, method="ml", progress=False))
    assert {row["foreground_method"] for row in read_rows(root, "train")} == {"ml"}
    for name in ("fg", "gt", "mask", "refine_trimap"):
        theirs = {p.name: p.read_bytes() for p in (fresh / "train" / name).iterdir()}
        assert {p.name: p.read_bytes() for p in (root / "train" / name).iterdir()} == theirs, name


def test_bad_devices_other_models_and_odd_sizes_are_one_line_or_a_skip(tmp_path, tiny_vitmatte):
    """--device banana / cuda without CUDA, a model folder of another kind: one line, no traceback; an alpha of
    another size than its image (with --force): skipped with its reason, the other rows refined."""
    import torch
    from transformers import BertConfig, BertModel

    from datagen.io import encode_png

    root = coarse_dataset(tmp_path / "ds", n=3)
    base = ["refine", str(root), "--offline", "--no-progress"]
    runner = CliRunner()
    devices = ["banana"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        result = runner.invoke(cli, [*base, "--model", str(tiny_vitmatte), "--device", device])
        assert result.exit_code == 1 and f"--device {device}" in result.output and "Traceback" not in result.output
    BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    ).save_pretrained(tmp_path / "bert")
    result = runner.invoke(cli, [*base, "--model", str(tmp_path / "bert")])
    assert result.exit_code == 1 and "'bert' model, not ViTMatte" in result.output, result.output
    (root / "train/gt/s1.png").write_bytes(encode_png(np.zeros((30, 30), np.uint8)))
    result = runner.invoke(cli, [*base, "--model", str(tiny_vitmatte), "--device", "cpu", "--force"])
    assert result.exit_code == 0 and "new 2" in result.output, result.output
    skipped = [json.loads(line) for line in (root / "refine-skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == 1 and "matte size mismatch" in skipped[0]["reason"]


def test_shards_refine_their_rows_and_the_last_one_records_the_split(tmp_path, tiny_vitmatte):
    """Two shards, one after the other, give the files and rows of one unsharded run: the first leaves the other's rows
    waiting (and the rows unrecorded), the second sees the first's work done and records the whole split; a no-op rerun
    leaves the metadata file as it is (not even rewritten)."""
    config = dict(model=str(tiny_vitmatte), offline=True, device="cpu", progress=False)
    straight = coarse_dataset(tmp_path / "straight", n=5, soft=("s3",))
    run_refine(RefineConfig(straight, **config))
    sharded = coarse_dataset(tmp_path / "sharded", n=5, soft=("s3",))
    first = run_refine(RefineConfig(sharded, shard=(0, 2), **config))
    assert (first.refined, first.waiting, first.rows_updated) == (3, {"train": 1}, {})
    assert all("alpha_source" not in row for row in read_rows(sharded, "train"))
    second = run_refine(RefineConfig(sharded, shard=(1, 2), **config))
    assert (second.refined, second.soft_skipped, second.waiting, second.rows_updated) == (1, 1, {}, {"train": 5})

    def files(root):
        return {k: v for k, v in directory_bytes(root).items() if not k.startswith("refine")}

    assert files(sharded) == files(straight)
    metadata = sharded / "train/metadata.jsonl"
    before = metadata.stat()
    again = run_refine(RefineConfig(sharded, **config))
    assert (again.refined, again.existing, again.soft_skipped, again.rows_updated) == (0, 4, 1, {"train": 0})
    assert (metadata.stat().st_ino, metadata.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_overwrite_with_where_keeps_what_the_other_rows_record(tmp_path, tiny_vitmatte):
    """`--overwrite --where source=dis5k` refines those rows again; the rows it leaves out keep their refine_model and
    band (they were refined, and still are)."""
    import shutil

    root = coarse_dataset(tmp_path / "ds")
    base = dict(offline=True, device="cpu", progress=False)
    run_refine(RefineConfig(root, model=str(tiny_vitmatte), **base))
    before = {row["id"]: row for row in read_rows(root, "train")}
    other = tmp_path / "other-vitmatte"
    shutil.copytree(tiny_vitmatte, other)
    redone = run_refine(RefineConfig(root, model=str(other), overwrite=True, where=(("source", "dis5k"),), **base))
    assert redone.refined == 2
    for row in read_rows(root, "train"):
        assert row["alpha_source"] == "vitmatte"
        if row["source"] == "dis5k":
            assert row["refine_model"] == str(other)
        else:
            assert row == before[row["id"]], "a row --where left out is recorded as it was"


def test_rows_read_by_arrow_or_line_by_line_are_the_same(tmp_path, monkeypatch):
    """SplitRows reads the rows by Arrow a batch at a time; where Arrow's reading could differ (here a blank line, found
    after every batch was read) they are read again line by line, from the first: the same ids, file names and flags,
    whatever the batch size (alpha names held only where they are not gt/<id>.png); the rows to refine read again
    (`rows`) are those asked."""
    import pyarrow as pa

    import datagen.records
    from datagen.refine import SplitRows

    root = coarse_dataset(tmp_path / "ds", n=7)
    write_sample(root, "train", "bg", image=draw_background(np.random.default_rng(1), 8, 8), alpha=None)
    metadata = root / "train/metadata.jsonl"
    metadata.write_text(metadata.read_text().replace('"gt/s2.png"', '"mattes/s2 b.png"'))  # not named as stages name
    first = SplitRows.read(root, "train")
    straight = first.table
    assert straight.column("photo").to_pylist() == [True] * 7 + [False]
    assert straight.column("id").num_chunks == 1
    alphas = ["gt/s0.png", "gt/s1.png", "mattes/s2 b.png", *(f"gt/s{i}.png" for i in range(3, 7)), ""]
    assert first.alpha_names(np.arange(8)) == alphas and first.other_rows.tolist() == [2, 7], "only those held"
    assert first.alpha_names(np.array([7, 2, 3])) == ["", "mattes/s2 b.png", "gt/s3.png"]
    metadata.write_text(metadata.read_text().replace("\n", "\n\n", 1))
    monkeypatch.setattr(datagen.records, "STRING_BATCH", 3)
    again = SplitRows.read(root, "train")
    assert again.table.equals(straight) and again.alpha_names(np.arange(8)) == alphas
    rows = again.rows(np.array([1, 4, 5]))
    assert rows.column("id").to_pylist() == ["s1", "s4", "s5"] and rows.column("file_name")[0].as_py() == "im/s1.jpg"
    assert pa.Table.from_batches(rows.to_batches()).num_rows == 3


def test_files_of_ids_answers_as_a_stat_would(tmp_path, monkeypatch):
    """Which ids have `<folder><id><suffix>`: a listing searched a batch at a time, the ids not listed stat-ed (one made
    invisible to the listing here is still found), none when the folder is missing."""
    import pyarrow as pa

    import datagen.records
    from datagen.records import StringIndex, files_of_ids

    ids = pa.array([f"s{i}" for i in range(9)] + ["caf\u00e9"])
    folder = tmp_path / "mask"
    folder.mkdir()
    for name in ("s1", "s3", "s4", "s8", "caf\u00e9"):
        (folder / f"{name}.png").write_bytes(b"x")
    (folder / "s5.jpg").write_bytes(b"x")
    (folder / "s6.png").mkdir()  # a folder is not a file
    rows = np.arange(10)
    expected = [False, True, False, True, True, False, False, False, True, True]
    monkeypatch.setattr(datagen.records, "STRING_BATCH", 2)
    assert files_of_ids(f"{folder}/", StringIndex(ids), ".png", rows).tolist() == expected
    assert files_of_ids(f"{folder}/", StringIndex(ids), ".png", np.array([3, 2])).tolist() == [True, False]
    real = datagen.records._listed_names
    hidden = lambda *args: ([name for name in names if name != "s3.png"] for names in real(*args))  # noqa: E731
    monkeypatch.setattr(datagen.records, "_listed_names", hidden)
    assert files_of_ids(f"{folder}/", StringIndex(ids), ".png", rows).tolist() == expected
    assert not files_of_ids(f"{tmp_path}/none/", StringIndex(ids), ".png", rows).any()


def test_refine_keeps_the_memory_it_frees_once_its_model_is_loaded(tmp_path, tiny_vitmatte):
    """A stage's driver gives large freed buffers back (`parallel.return_freed_memory`, set by stage_run); once refine
    has loaded its model and has rows to refine, its frames reuse freed memory, as a worker's do (a tiny ViTMatte at
    1024 px on the CPU: 607-713 ms an image as a process starts, 669-851 under stage_run's setting, 240-272 so)."""
    import subprocess
    import sys

    root = coarse_dataset(tmp_path / "ds", n=2)
    code = (
        "from datagen.refine import RefineConfig, run_refine\n"
        f"config = RefineConfig({str(root)!r}, model={str(tiny_vitmatte)!r}, offline=True, device='cpu', "
        "progress=False)\n"
        "assert run_refine(config).refined == 2\n"
        "from tests.conftest import freed_frames_returned_mb as f; print(f())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stdout.split()[-1]) < 4, done.stdout
