import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from datagen.alpha import crop_to_alpha
from datagen.cli import cli
from datagen.compose import run as compose_run
from datagen.compose.config import PRESETS, AugmentConfig, ComposeConfig, load_augment
from datagen.compose.geometry import place_background, place_foreground
from datagen.compose.params import sample_params
from datagen.compose.pools import PoolError, list_pool
from datagen.compose.render import Inputs, _occluder_layer, render
from datagen.inspect import inspect_dataset
from datagen.io import encode_png
from datagen.procedural import draw_background, draw_person
from datagen.records import read_rows
from tests.conftest import count_pool_processes, directory_bytes

SIZE = (96, 128)  # (W, H)


def none_params(seed=0, **changes):
    params = sample_params(np.random.default_rng(seed), PRESETS["none"], 1, 1, 0)
    for key, value in changes.items():
        params[key] = value
    return params


def test_preset_none_is_exactly_the_blend(person, background):
    foreground = crop_to_alpha(person)
    for seed in range(6):
        params = none_params(seed)
        image, alpha = render(Inputs(foreground, background), params, SIZE)
        bg = place_background(background, params["bg"], SIZE).astype(np.float32)
        layer = place_foreground(foreground, params["placement"], SIZE)
        expected_alpha = np.zeros(SIZE[::-1], np.float32)
        expected_alpha[layer.box] = layer.alpha
        expected = bg.copy()
        expected[layer.box] = layer.color + (1 - layer.alpha[..., None]) * bg[layer.box]
        assert np.abs(image.astype(np.float32) - expected).max() <= 0.5 + 1e-3, seed
        np.testing.assert_array_equal(alpha, np.rint(expected_alpha * 255).astype(np.uint8))
        assert ((alpha > 0) & (alpha < 255)).any(), "soft values must survive"


def test_unscaled_unrotated_placement_matches_the_fixture_exactly(person):
    """With scale 1, no rotation and an integer shift, pixels are the fixture's own: a*F + (1-a)*B."""
    foreground = crop_to_alpha(person)
    height, width = foreground.shape[:2]
    frame = (width + 40, height + 30)
    background = draw_background(np.random.default_rng(3), frame[1], frame[0])
    params = none_params(0)
    params["bg"].update(crop_scale=1.0, crop_x=0.0, crop_y=0.0, flip=False)
    params["placement"] = {
        "height": height / frame[1],
        "top": 10 / frame[1],
        "center_x": (17 + width / 2) / frame[0],
        "rotation_deg": 0.0,
        "flip": False,
    }
    image, alpha = render(Inputs(foreground, background), params, frame)
    box = (slice(10, 10 + height), slice(17, 17 + width))
    np.testing.assert_array_equal(alpha[box], foreground[..., 3])
    a = foreground[..., 3:].astype(np.float64) / 255
    blend = np.rint(a * foreground[..., :3] + (1 - a) * background[box])
    assert np.abs(image[box].astype(np.float64) - blend).max() <= 1
    transparent, opaque = foreground[..., 3] == 0, foreground[..., 3] == 255
    np.testing.assert_array_equal(image[box][transparent], background[box][transparent])
    np.testing.assert_array_equal(image[box][opaque], foreground[..., :3][opaque])
    outside = np.ones(frame[::-1], bool)
    outside[box] = False
    np.testing.assert_array_equal(image[outside], background[outside])
    assert (alpha[outside] == 0).all()


def test_occluder_removes_exactly_its_area(person, background):
    foreground = crop_to_alpha(person)
    params = none_params(1)
    clean_image, clean_alpha = render(Inputs(foreground, background), params, SIZE)
    occluder = {
        "shape_seed": 5,
        "height": 0.4,
        "center_x": 0.0,
        "center_y": 0.0,
        "rotation_deg": 30.0,
        "occluder": "procedural",
    }
    occluded = copy.deepcopy(params)
    occluded["occluders"] = [occluder]
    image, alpha = render(Inputs(foreground, background, occluders=[None]), occluded, SIZE)
    person_layer = place_foreground(foreground, params["placement"], SIZE)
    occ = _occluder_layer(None, occluder, person_layer, SIZE)
    occ_alpha = np.zeros(SIZE[::-1], np.float32)
    occ_alpha[occ.box] = occ.alpha
    assert (occ_alpha == 1).any() and ((occ_alpha == 1) & (clean_alpha == 255)).any(), "must cover the person"
    expected = np.rint(clean_alpha / 255 * (1 - occ_alpha) * 255)
    assert np.abs(alpha.astype(int) - expected).max() <= 1
    assert (alpha[occ_alpha == 1] == 0).all()
    np.testing.assert_array_equal(alpha[occ_alpha == 0], clean_alpha[occ_alpha == 0])
    np.testing.assert_array_equal(image[occ_alpha == 0], clean_image[occ_alpha == 0])


def test_extra_person_is_foreground_too(person, background):
    other = crop_to_alpha(draw_person(np.random.default_rng(9), 80, 60))
    params = none_params(2)
    extra_placement = {"height": 0.5, "top": 0.3, "center_x": 0.25, "rotation_deg": 0.0, "flip": False}
    params["extra_people"] = [{"foreground": "x", "placement": extra_placement}]
    _, alpha = render(Inputs(crop_to_alpha(person), background, extra_people=[other]), params, SIZE)
    main = place_foreground(crop_to_alpha(person), params["placement"], SIZE)
    extra = place_foreground(other, extra_placement, SIZE)
    a1, a2 = np.zeros(SIZE[::-1], np.float32), np.zeros(SIZE[::-1], np.float32)
    a1[main.box], a2[extra.box] = main.alpha, extra.alpha
    expected = np.rint((1 - (1 - a1) * (1 - a2)) * 255)
    assert np.abs(alpha.astype(int) - expected).max() <= 1 and (a2 > 0).any()


def test_lighting_and_shadow_never_touch_the_alpha(person, background):
    foreground = crop_to_alpha(person)
    params = none_params(3)
    _, plain_alpha = render(Inputs(foreground, background), params, SIZE)
    lit = copy.deepcopy(params)
    lit["lighting"] = {
        "transfer": 0.7,
        "temperature": 0.1,
        "brightness": 1.2,
        "gradient": 0.4,
        "gradient_angle_deg": 30.0,
    }
    lit["shadow"] = {"kind": "cast", "opacity": 0.6, "blur": 0.01, "shear": 0.5, "squash": 0.3}
    image, alpha = render(Inputs(foreground, background), lit, SIZE)
    np.testing.assert_array_equal(alpha, plain_alpha)
    plain_image, _ = render(Inputs(foreground, background), params, SIZE)
    assert np.abs(image.astype(int) - plain_image).mean() > 1, "lighting must change the colours"


@pytest.mark.parametrize("subject", [True, False])
def test_motion_blur_moves_the_alpha_with_the_pixels(person, background, subject):
    foreground = crop_to_alpha(person)
    params = none_params(4)
    _, sharp = render(Inputs(foreground, background), params, SIZE)
    moving = copy.deepcopy(params)
    moving["degradations"].update(motion_length=0.08, motion_angle_deg=0.0, motion_subject=subject)
    _, blurred = render(Inputs(foreground, background), moving, SIZE)
    assert np.count_nonzero((blurred > 0) & (blurred < 255)) > np.count_nonzero((sharp > 0) & (sharp < 255))
    assert abs(int(blurred.astype(int).sum()) - int(sharp.astype(int).sum())) < 0.02 * sharp.sum()


def test_small_background_is_scaled_not_tiled():
    background = np.zeros((8, 8, 3), np.uint8)
    background[:, :, 0] = np.arange(8)[None, :] * 30
    params = {"crop_scale": 1.0, "crop_x": 0.5, "crop_y": 0.5, "flip": False, "defocus_radius": 0.0}
    placed = place_background(background, params, (64, 64))
    red = placed[32, :, 0].astype(int)
    assert (np.diff(red) >= 0).all() and red[-1] > red[0], "a tiled background would repeat the ramp"


def test_defocus_blurs_over_its_radius_in_output_pixels():
    """The defocus radius is a share of the output height, whatever the background's own size: a step edge spreads
    over about the disc's diameter in output pixels; a flat background stays exactly flat."""
    size = (240, 180)
    for side in (90, 600):  # scaled up, and scaled down straight to the defocus's reduced size
        step = np.zeros((side, side * 2, 3), np.uint8)
        step[:, side:] = 200
        widths = []
        for radius in (0.0, 0.02, 0.05):
            params = {"crop_scale": 1.0, "crop_x": 0.5, "crop_y": 0.5, "flip": False, "defocus_radius": radius}
            placed = place_background(step, params, size)
            assert placed.shape == (size[1], size[0], 3)
            row = placed[size[1] // 2, :, 0].astype(float)
            widths.append(np.count_nonzero((row > 20) & (row < 180)))
            flat = place_background(np.full_like(step, 77), params, size)
            assert (flat == 77).all(), (side, radius)
        disc = [2 * r * size[1] for r in (0.02, 0.05)]  # diameters in output pixels: 7.2 and 18
        assert widths[0] <= 4 and disc[0] / 2 <= widths[1] <= 2 * disc[0] and disc[1] / 2 <= widths[2] <= 2 * disc[1], (
            side,
            widths,
        )


def test_augment_config_from_yaml(tmp_path):
    path = tmp_path / "aug.yaml"
    path.write_text("noise_p: 1.0\nnoise_sigma: [2, 3]\n")
    config = load_augment("none", path)
    assert config.noise_p == 1.0 and config.noise_sigma == (2, 3) and config.transfer_p == 0.0
    path.write_text("nosie_p: 1.0\n")
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        load_augment("default", path)
    with pytest.raises(ValueError, match="probability"):
        AugmentConfig(noise_p=2.0)
    with pytest.raises(ValueError, match="low <= high"):
        AugmentConfig(noise_sigma=(3.0, 1.0))


# ----- the batch job -----


@pytest.fixture
def pools(tmp_path):
    """A folder of 6 RGBA people and a folder of 4 odd-sized backgrounds (one grayscale, one palette)."""
    fg, bg = tmp_path / "fg", tmp_path / "bg"
    fg.mkdir(), bg.mkdir()
    for index in range(6):
        Image.fromarray(draw_person(np.random.default_rng([index]), 120, 80)).save(fg / f"p{index}.png")
    for index in range(4):
        image = Image.fromarray(draw_background(np.random.default_rng([index, 1]), 90 + 17 * index, 130))
        image = image.convert("L") if index == 1 else image.convert("P") if index == 2 else image
        image.save(bg / f"b{index}.png")
    return fg, bg


def compose(pools, out, **options):
    fg, bg = pools
    options.setdefault("n", 10)
    options.setdefault("size", (64, 80))
    return compose_run.run_compose(
        ComposeConfig(out=out, foregrounds=(fg,), backgrounds=(bg,), progress=False, **options)
    )


def rows(out: Path) -> dict[str, dict]:
    return {row["id"]: row for split in ("train", "validation") for row in read_rows(out, split)}


def test_output_is_valid_and_records_every_parameter(pools, tmp_path):
    out = tmp_path / "out"
    result = compose(pools, out, preset="strong", n=12)
    assert result.new == 12 and result.counts == {"train": 12}
    report = inspect_dataset(out)
    assert report.ok, report.format_text()
    for row in rows(out).values():
        params = json.loads(row["params"])
        assert params["foreground"] == row["foreground_id"] and row["foreground_id"].startswith("fg:p")
        assert {"bg", "placement", "lighting", "shadow", "occluders", "degradations"} <= set(params)
    import datasets

    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].num_rows == 12 and isinstance(loaded["train"].features["alpha"], datasets.Image)


def test_same_seed_same_bytes_for_any_workers_and_shards(pools, tmp_path, monkeypatch):
    reference = tmp_path / "one"
    compose(pools, reference)
    parallel = tmp_path / "two"
    started = count_pool_processes(monkeypatch, compose_run)  # one single-process pool per worker
    compose(pools, parallel, workers=2)
    assert started == [1, 1], "two worker processes"
    assert directory_bytes(parallel) == directory_bytes(reference)
    sharded = tmp_path / "shards"
    for index in range(3):
        compose(pools, sharded, shard=(index, 3))
    assert rows(sharded) == rows(reference)
    files = {k: v for k, v in directory_bytes(sharded).items() if not k.endswith((".jsonl", ".md"))}
    assert files == {k: v for k, v in directory_bytes(reference).items() if not k.endswith((".jsonl", ".md"))}
    other_seed = tmp_path / "seed1"
    compose(pools, other_seed, seed=1)
    assert directory_bytes(other_seed) != directory_bytes(reference)


def test_killed_run_resumes_to_the_same_result(pools, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    compose(pools, reference)
    real, calls = compose_run.compose_one, []

    def killed_on_the_sixth(job):
        calls.append(job.index)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(compose_run, "compose_one", killed_on_the_sixth)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        compose(pools, resumed)
    monkeypatch.setattr(compose_run, "compose_one", real)
    assert len(rows(resumed)) == 5
    result = compose(pools, resumed)
    assert (result.new, result.existing) == (5, 5)
    assert directory_bytes(resumed) == directory_bytes(reference)


def test_a_run_draws_its_jobs_as_it_goes_not_all_before_the_first(pools, tmp_path, monkeypatch):
    """A million-sample run must not hold a million drawn jobs (0.085 ms and 2.5 KB each) before its first composite:
    jobs are drawn as the workers take them, at most the window in flight ahead of the last one written."""
    real_draw, real_one, drawn, seen = compose_run.make_job, compose_run.compose_one, [], []
    monkeypatch.setattr(
        compose_run, "make_job", lambda *args, **kwargs: drawn.append(args[0]) or real_draw(*args, **kwargs)
    )
    monkeypatch.setattr(compose_run, "compose_one", lambda job: seen.append(len(drawn)) or real_one(job))
    result = compose(pools, tmp_path / "out", n=60)
    assert result.new == 60 and sorted(drawn) == list(range(60)), "every sample drawn once (no failed draws here)"
    assert max(number - done for done, number in enumerate(seen)) <= 1, seen[:5]  # one worker: drawn, then made


def test_a_pool_holds_no_python_object_per_item(tmp_path):
    """A pool of a million foregrounds goes to every compose and loader worker: as Arrow columns, not a PoolItem (with
    its Paths) per item, which took about 400 bytes each and a second per 10^5 to unpickle in each worker."""
    import gc
    import pickle

    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "seed.png").write_bytes(encode_png(np.full((4, 4, 3), 90, np.uint8)))
    list_pool([folder], "background")  # first use: imports (pyarrow's functions are objects too)
    for index in range(3000):
        os.link(folder / "seed.png", folder / f"b{index:05d}.png")
    gc.collect()
    before = len(gc.get_objects())
    pool = list_pool([folder], "background")
    gc.collect()
    assert len(pool) == 3001 and len(gc.get_objects()) - before < 300
    assert pool[0].id == "many:b00000.png" and pool[0].path == folder / "b00000.png" and pool[-1].id == "many:seed.png"
    copy = pickle.loads(pickle.dumps(pool))
    assert [item.id for item in copy] == [item.id for item in pool] and copy[7] == pool[7]
    held = np.arange(3001) % 3 == 0
    assert [item.id for item in pool.subset(held)] == [item.id for item, h in zip(pool, held) if h]


def test_two_shards_at_the_same_time_give_a_valid_dataset(pools, tmp_path):
    fg, bg = pools
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "datagen",
        "compose",
        "--fg",
        str(fg),
        "--bg",
        str(bg),
        "-n",
        "16",
        "--size",
        "48x64",
        "-o",
        str(out),
        "--no-progress",
    ]
    processes = [
        subprocess.Popen([*command, "--shard", f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for process in processes:
        _, error = process.communicate(timeout=120)
        assert process.returncode == 0, error.decode()
    report = inspect_dataset(out)
    assert report.ok and report.counts == {"train": 16}, report.format_text()
    assert sorted(row["index"] for row in rows(out).values()) == list(range(16))


def test_validation_split_never_shares_a_foreground_or_background(pools, tmp_path):
    out = tmp_path / "out"
    result = compose(pools, out, n=40, val_fraction=0.35)
    assert result.counts["train"] > 0 and result.counts["validation"] > 0
    by_split = {split: list(read_rows(out, split)) for split in ("train", "validation")}
    for key in ("foreground_id", "background_id"):
        train = {row[key] for row in by_split["train"]}
        validation = {row[key] for row in by_split["validation"]}
        assert not train & validation, key


def test_bad_pool_files_are_recorded_once_and_redrawn(pools, tmp_path):
    fg, bg = pools
    (fg / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.fromarray(np.zeros((10, 10, 4), np.uint8)).save(fg / "empty.png")
    (bg / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    Image.fromarray(draw_person(np.random.default_rng([9]), 120, 80)[..., :3]).save(fg / "no-alpha.jpg")  # a photo
    out = tmp_path / "out"
    result = compose(pools, out, n=40)
    assert result.new == 40, "every sample is redrawn until its inputs are usable"
    assert result.skipped == {"unreadable input": 2, "bad foreground": 2}, "each bad file recorded once"
    skipped = {
        Path(s["path"]).name: s["reason"] for s in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())
    }
    assert sorted(skipped) == ["broken.png", "empty.png", "no-alpha.jpg", "truncated.jpg"]
    assert (
        skipped["no-alpha.jpg"]
        == "bad foreground: no alpha channel: a plain folder's images must be RGBA cut-outs (PNG, WebP)"
    ), "never a rectangle labelled person"
    record = json.loads((out / "run.json").read_text())
    assert record["skipped"] == result.skipped
    assert any(row["draw"] > 0 for row in rows(out).values())
    assert not any("broken" in row["params"] or "truncated" in row["params"] for row in rows(out).values())
    assert inspect_dataset(out).ok
    parallel = tmp_path / "parallel"
    compose(pools, parallel, n=40, workers=2)
    assert directory_bytes(parallel) == directory_bytes(out), "which draw a sample gets never depends on workers"


def test_a_pool_on_the_hub_or_in_parquet_is_sent_to_pull(pools, tmp_path, dataset_dir):
    from datagen.hub import PushConfig, push

    fg, bg = pools
    with pytest.raises(PoolError, match=r"not the Hub: `datagen pull you/people -o datasets/people` first"):
        list_pool(["hf://you/people"], "foreground")
    push(PushConfig(dataset_dir, "user/demo", dry_run=tmp_path / "staged"))
    with pytest.raises(PoolError, match=r"background pool .*staged: it holds Parquet shards, and a background pool"):
        list_pool([str(tmp_path / "staged")], "background")


def test_a_stage_never_adds_its_rows_to_a_dataset_another_stage_made(pools, tmp_path):
    """compose into synth's folder (or pull into compose's) would mix two kinds of rows and replace run.json, the
    record of what made them: refused, nothing written; a stage adds to its own, and --overwrite starts over."""
    from datagen.hub import PushConfig, pull, push
    from datagen.synth import SynthConfig, run_synth

    synth = tmp_path / "synth"
    run_synth(SynthConfig(out=synth, backend="procedural", n=2, size=(48, 64), progress=False))
    before = directory_bytes(synth)
    with pytest.raises(
        ValueError, match=r"synth was made by `datagen synth` \(its run.json\): give `datagen compose` a"
    ):
        compose(pools, synth, n=2)
    assert directory_bytes(synth) == before, "nothing written"
    assert run_synth(SynthConfig(out=synth, backend="procedural", n=3, size=(48, 64), progress=False)).new == 1
    assert compose(pools, synth, n=2, overwrite=True).new == 2
    assert json.loads((synth / "run.json").read_text())["command"] == "datagen compose"
    out = tmp_path / "composites"
    compose(pools, out, n=3)
    push(PushConfig(out, "user/c", dry_run=tmp_path / "staged"))
    with pytest.raises(ValueError, match=r"made by `datagen compose` \(its run.json\): give `datagen pull` a folder"):
        pull(str(tmp_path / "staged"), out)


def test_resume_after_a_lost_file_restores_it_without_a_second_row(pools, tmp_path):
    out = tmp_path / "out"
    compose(pools, out)
    reference = directory_bytes(out)
    lost = next(iter(rows(out)))
    (out / "train" / "gt" / f"{lost}.png").unlink()
    result = compose(pools, out)
    assert (result.new, result.existing) == (1, 9)
    assert len(read_rows(out, "train")) == 10
    assert directory_bytes(out) == reference
    assert inspect_dataset(out).ok


def test_a_second_run_on_the_same_output_is_refused_while_the_first_holds_it(pools, tmp_path):
    from datagen.records import BusyError, dataset_lock

    out = tmp_path / "out"
    with dataset_lock(out):
        with pytest.raises(BusyError, match=rf"pid {os.getpid()}"):
            compose(pools, out)
        compose(pools, out, shard=(1, 2))  # another shard has its own lock
    assert compose(pools, out).new == 5  # the lock is released with its holder


def test_cli_compose_and_missing_pool_message(pools, tmp_path):
    fg, bg = pools
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "compose",
            "--fg",
            str(fg),
            "--bg",
            str(bg),
            "-n",
            "3",
            "--size",
            "32x48",
            "-o",
            str(out),
            "--preset",
            "none",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "new 3" in result.output and Image.open(out / "train/im/composite-s0-0000000.jpg").size == (32, 48)
    missing = CliRunner().invoke(cli, ["compose", "--fg", str(tmp_path / "nope"), "--bg", str(bg)])
    assert missing.exit_code == 1 and "datagen synth" in missing.output


def test_the_preset_named_is_the_preset_rendered(pools, tmp_path):
    assert ComposeConfig(preset="strong").augment == PRESETS["strong"]
    out = tmp_path / "strong"
    compose(pools, out, preset="strong", n=3)
    row = read_rows(out, "train")[0]
    params = json.loads(row["params"])
    config = ComposeConfig(out=out, foregrounds=(pools[0],), backgrounds=(pools[1],), preset="strong", n=3)
    pools_by_split, occluders = compose_run.split_pools(config)
    expected = compose_run.make_job(row["index"], config, pools_by_split, occluders).drawn.params
    assert row["preset"] == "strong" and params == json.loads(json.dumps(expected, sort_keys=True))
    default = compose_run.make_job(
        row["index"],
        ComposeConfig(out=out, foregrounds=(pools[0],), backgrounds=(pools[1],)),
        pools_by_split,
        occluders,
    )
    assert default.drawn.params != expected, "strong ranges draw other parameters than the default ones"
    yaml_file = tmp_path / "aug.yaml"
    yaml_file.write_text("shadow_p: 0.0\n")
    custom = ComposeConfig(preset="strong", augment=load_augment("strong", yaml_file))
    assert custom.preset == "custom" and custom.augment.shadow_p == 0.0
    with pytest.raises(ValueError, match="unknown preset"):
        ComposeConfig(preset="custom")
