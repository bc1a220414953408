"""One bad file in a dataset is skipped with its reason by every stage that reads it; nothing stops the run."""

import json

import numpy as np
import pytest

from datagen.io import encode_png
from datagen.records import read_rows
from tests.conftest import write_demo_dataset


@pytest.fixture
def flawed(tmp_path):
    """train: 4 photo rows, demo-train-1's alpha of another size, demo-train-2's alpha truncated."""
    root = tmp_path / "flawed"
    write_demo_dataset(root, n_train=4, n_test=0)
    (root / "train/gt/demo-train-1.png").write_bytes(encode_png(np.full((40, 30), 255, np.uint8)))
    data = (root / "train/gt/demo-train-2.png").read_bytes()
    (root / "train/gt/demo-train-2.png").write_bytes(data[: len(data) // 2])
    return root


def test_refine_skips_a_truncated_alpha_and_refines_the_rest(flawed, tiny_vitmatte):
    from datagen.refine import RefineConfig, run_refine

    result = run_refine(RefineConfig(flawed, model=str(tiny_vitmatte), offline=True, device="cpu", force=True,
                                     progress=False))  # fmt: skip
    assert result.refined == 2 and sum(result.skipped.values()) == 2
    assert result.skips_file == "refine-skipped.jsonl"  # the importer's skipped.jsonl is not refine's to write
    reasons = [json.loads(line)["reason"] for line in (flawed / result.skips_file).read_text().splitlines()]
    assert any("truncated" in r for r in reasons) and any("matte size mismatch" in r for r in reasons)


def test_training_skips_a_matte_of_another_size(flawed, tmp_path):
    from ormbg.data import Recipe, Source
    from ormbg.train import TrainConfig, run_train

    recipe = Recipe((Source(str(flawed), "train", 1.0),), (Source(str(flawed), "train"),))
    config = TrainConfig(out=tmp_path / "run", recipe=recipe, size=64, batch_size=2, max_steps=2, val_every=2,
                         workers=0, width_divisor=8, progress=False, max_bad_samples=4)  # fmt: skip
    result = run_train(config)
    assert result.step == 2 and any("matte size mismatch" in reason for reason in result.bad_samples.values())


def test_push_preview_and_the_review_page_show_a_placeholder(flawed, tmp_path):
    from datagen.hub import PushConfig, push
    from datagen.preview import unreadable_tile
    from ormbg.app import review_page

    files = push(PushConfig(flawed, "user/flawed", dry_run=tmp_path / "dry"))
    assert "preview.png" in files
    items, ids, _ = review_page(str(flawed), "train")
    assert ids == [f"demo-train-{i}" for i in range(4)] and len(items) == 4
    from PIL import Image

    tile = np.asarray(Image.open(items[1][0]).convert("RGB"))
    red = (tile[..., 0] > 150) & (tile[..., 1] < 80)
    assert red.any() and unreadable_tile()[0, 0, 0] == 200  # the crossed-out placeholder
    assert len(read_rows(flawed, "train")) == 4  # nothing was changed


def test_relight_skips_a_matte_of_another_size(flawed, tmp_path):
    from datagen.relight import AlignmentThresholds, RelightConfig, run_relight
    from tests.tiny_sd15 import tiny_offset, tiny_sd15

    base = tiny_sd15(tmp_path / "sd15")
    offset = tiny_offset(base, "fbc", tmp_path / "sd15/iclight_sd15_fbc.safetensors", scale=0.01)
    config = RelightConfig(src=flawed, out=tmp_path / "relit", model=str(base), weights=str(offset), steps=1,
                           size_px=64, device="cpu", dtype="fp32", offline=True,
                           thresholds=AlignmentThresholds.accept_all(), progress=False)  # fmt: skip
    result = run_relight(config)
    assert result.new == 2 and sum(result.skipped.values()) == 2
