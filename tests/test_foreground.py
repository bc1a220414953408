"""Foreground colour estimation and the `datagen foreground` stage; benchmark sets kept out of pools."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import datagen.stage
from datagen.alpha import over
from datagen.cli import cli
from datagen.compose.config import ComposeConfig
from datagen.compose.pools import PoolError, list_pool
from datagen.compose.run import run_compose
from datagen.foreground import ForegroundConfig, estimate_foreground, run_foreground
from datagen.inspect import inspect_dataset
from datagen.io import read_foreground
from datagen.procedural import draw_background, draw_person
from datagen.records import read_rows, update_rows, write_sample
from tests.conftest import count_pool_processes, directory_bytes


def soft_error(truth: np.ndarray, estimate: np.ndarray, alpha: np.ndarray) -> float:
    """Alpha-weighted mean absolute error of F over the soft pixels, 8-bit levels."""
    soft = (alpha > 0) & (alpha < 255)
    weight = alpha[soft].astype(np.float64) / 255
    return float((weight * np.abs(truth[soft].astype(np.float64) - estimate[soft]).mean(axis=1)).sum() / weight.sum())


@pytest.mark.parametrize("method, factor", [("ml", 3.0), ("blur-fusion", 2.0)])
def test_estimated_colour_beats_the_photo_and_keeps_opaque_pixels(method, factor):
    """The default (ml) takes the soft pixels' error to at most a third of the photo's (the issue's target); the
    faster approximation to at most a half."""
    person = draw_person(np.random.default_rng([4, 2]), 256, 192)  # hair-like strands: many soft pixels
    truth, alpha = person[..., :3], person[..., 3]
    assert ((alpha > 0) & (alpha < 255)).mean() > 0.01
    for background in (
        np.full((256, 192, 3), (20, 160, 40), np.uint8),
        draw_background(np.random.default_rng(3), 256, 192),
    ):
        photo = over(person, background)
        estimate = estimate_foreground(photo, alpha, method)
        raw, estimated = soft_error(truth, photo, alpha), soft_error(truth, estimate, alpha)
        assert estimated * factor <= raw, (method, raw, estimated)
        opaque = alpha == 255
        np.testing.assert_array_equal(estimate[opaque], photo[opaque])  # a = 1: F is the photo, to the byte


def data_bytes(root) -> dict[str, bytes]:
    """directory_bytes without the stage's own records (foreground*.json: times, shard names)."""
    return {name: data for name, data in directory_bytes(root).items() if not name.startswith("foreground")}


def photo_dataset(root, n=6, split="train", size=(72, 48)):
    """Photo rows (im/ + gt/) of procedural people over procedural backgrounds."""
    for index in range(n):
        rng = np.random.default_rng([index, 8])
        person = draw_person(rng, *size)
        image = over(person, draw_background(rng, *size))
        write_sample(
            root, split, f"photo-{index}", image=image, alpha=person[..., 3], metadata={"source": "t", "license": "MIT"}
        )
    return root


def test_foreground_stage_writes_fg_resumes_and_shards_to_the_same_bytes(tmp_path, monkeypatch):
    straight = photo_dataset(tmp_path / "straight")
    result = run_foreground(ForegroundConfig(straight, progress=False))
    assert (result.new, result.rows_updated) == (6, {"train": 6})
    rows = read_rows(straight, "train")
    assert all(r["foreground_file_name"] == f"fg/{r['id']}.png" and r["foreground_method"] == "ml" for r in rows)
    report = inspect_dataset(straight)
    assert report.ok, report.format_text()
    sample = rows[0]
    rgba = read_foreground(straight / "train" / sample["foreground_file_name"])
    from datagen.io import read_alpha

    np.testing.assert_array_equal(rgba[..., 3], read_alpha(straight / "train" / sample["alpha_file_name"]))

    parallel = photo_dataset(tmp_path / "parallel")
    started = count_pool_processes(monkeypatch, datagen.stage)
    run_foreground(ForegroundConfig(parallel, workers=2, progress=False))
    assert started == [2] and data_bytes(parallel) == data_bytes(straight), "two worker processes, the same bytes"

    sharded = photo_dataset(tmp_path / "sharded")
    first = run_foreground(ForegroundConfig(sharded, shard=(0, 2), progress=False))
    assert first.waiting == {"train": 3} and "foreground_file_name" not in read_rows(sharded, "train")[0]
    run_foreground(ForegroundConfig(sharded, shard=(1, 2), progress=False))
    assert data_bytes(sharded) == data_bytes(straight)

    metadata = straight / "train/metadata.jsonl"
    before = metadata.stat().st_ino
    again = run_foreground(ForegroundConfig(straight, progress=False))
    assert (again.new, again.existing, again.rows_updated) == (0, 6, {"train": 0})
    assert metadata.stat().st_ino == before, "a rerun with nothing to record leaves the metadata file as it was"
    update_rows(straight, "train", lambda row: {"foreground_method": None} if row["id"] == rows[1]["id"] else {})
    assert run_foreground(ForegroundConfig(straight, progress=False)).rows_updated == {"train": 1}
    assert read_rows(straight, "train") == rows, "a row that lost its label gets it back"
    (straight / "train" / rows[2]["foreground_file_name"]).unlink()  # a lost file is made again
    assert run_foreground(ForegroundConfig(straight, progress=False)).new == 1
    assert data_bytes(sharded) == data_bytes(straight)


def test_compose_refuses_a_photo_pool_without_fg_with_the_command_that_fixes_it(tmp_path):
    photos = photo_dataset(tmp_path / "photos")
    backgrounds = tmp_path / "bg"
    write_sample(backgrounds, "train", "b", image=draw_background(np.random.default_rng(1), 60, 60), alpha=None)
    args = ["compose", "--fg", str(photos), "--bg", str(backgrounds), "-n", "2", "--size", "32", "--no-progress"]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "c1")])
    assert (
        result.exit_code == 1
        and f"datagen foreground {photos}" in result.output
        and "--raw-foreground" in result.output
    )
    assert CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "c2"), "--raw-foreground"]).exit_code == 0
    assert CliRunner().invoke(cli, ["foreground", str(photos), "--no-progress"]).exit_code == 0
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "c3")])
    assert result.exit_code == 0, result.output
    used = {json.loads(row["params"])["foreground"] for row in read_rows(tmp_path / "c3", "train")}
    items = {item.id: item for item in list_pool([photos], "foreground")}
    assert all(items[name].path.parent.name == "fg" for name in used), "composites use the estimated colour"


def test_pools_leave_test_splits_out_unless_named(tmp_path):
    pool = tmp_path / "people"
    for split in ("train", "validation", "test"):
        for index in range(3):
            person = draw_person(np.random.default_rng([index, len(split)]), 60, 40)
            write_sample(
                pool, split, f"{split}-{index}", foreground=person, alpha=person[..., 3], metadata={"source": "s"}
            )
    default = list_pool([pool], "foreground")
    assert len(default) == 6 and not any(":test-" in item.id for item in default)
    named = list_pool([f"{pool}:test"], "foreground")
    assert len(named) == 3 and all(":test-" in item.id for item in named)
    with pytest.raises(PoolError, match="no split 'validation'"):
        list_pool([f"{photo_dataset(tmp_path / 'only-train')}:validation"], "foreground", raw_foreground=True)
    backgrounds = tmp_path / "bg"
    write_sample(backgrounds, "train", "b", image=draw_background(np.random.default_rng(1), 60, 60), alpha=None)
    out = tmp_path / "composites"
    run_compose(
        ComposeConfig(
            out=out, foregrounds=(f"{pool}:test",), backgrounds=(backgrounds,), n=4, size=(32, 32), progress=False
        )
    )
    assert all(row["foreground_id"].startswith("people:test-") for row in read_rows(out, "train"))
    assert "Made from test splits, named by the user" in (out / "README.md").read_text()
    assert json.loads((out / "run.json").read_text())["test_splits_used"] == [f"{pool}:test"]
    plain = tmp_path / "plain"
    run_compose(
        ComposeConfig(out=plain, foregrounds=(pool,), backgrounds=(backgrounds,), n=4, size=(32, 32), progress=False)
    )
    assert not any(":test-" in row["foreground_id"] for row in read_rows(plain, "train"))
    assert "test splits" not in (plain / "README.md").read_text()


def test_import_with_foreground_makes_compositing_material(tmp_path):
    from datagen.importers import ImportConfig, run_import
    from datagen.samples import make_p3m_tree

    src = make_p3m_tree(tmp_path / "src", n_train=3, n_test=1, height=40, width=32)
    out = tmp_path / "p3m"
    run_import("p3m", src, ImportConfig(out=out, foreground="ml", val_fraction=0.0, progress=False))
    report = inspect_dataset(out)
    assert report.ok, report.format_text()
    rows = read_rows(out, "train")
    assert all(row["foreground_method"] == "ml" and row["foreground_file_name"] for row in rows)
    items = list_pool([out], "foreground")
    assert len(items) == 3 and all(item.path.parent.name == "fg" for item in items), "test split left out, fg/ used"


@pytest.mark.parametrize("method", ["ml", "blur-fusion"])
def test_tiny_images_get_a_foreground(method):
    """A 1x1 image (pymatting's estimator divides by zero on it) and thin strips get F of their own size."""
    for height, width in ((1, 1), (1, 5), (5, 1), (2, 2)):
        image = np.full((height, width, 3), 90, np.uint8)
        estimate = estimate_foreground(image, np.full((height, width), 128, np.uint8), method)
        assert estimate.shape == (height, width, 3) and estimate.dtype == np.uint8


def test_ml_loads_only_pymattings_foreground_estimator():
    """`import pymatting` compiles every numba function of the package (45-55 s in a fresh environment); ml needs one
    file of it. In a fresh process an estimate is made and the package itself is never imported."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from datagen.foreground import estimate_foreground; "
        "image = np.random.default_rng(0).integers(0, 256, (24, 20, 3), dtype=np.uint8); "
        "alpha = np.zeros((24, 20), np.uint8); alpha[4:20, 5:15] = 128; "
        "f = estimate_foreground(image, alpha, 'ml'); "
        "print(f.shape, 'pymatting' in sys.modules, 'pymatting.foreground.estimate_foreground_ml' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "(24, 20, 3) False True", out.stdout + out.stderr
