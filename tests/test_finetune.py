"""docs/finetune.md runs as written: every command of its flow, its recipe, and --init of a published-layout .pth."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from datagen.alpha import over
from datagen.cli import cli
from datagen.procedural import draw_background, draw_person
from ormbg.model import ORMBG
from tests.conftest import write_demo_dataset

DOC = Path(__file__).resolve().parents[1] / "docs/finetune.md"
# Options appended to the doc's commands here (click keeps the last value): tiny sizes and steps, the narrow model.
SMALLER = {
    "compose": ["-n", "8", "--size", "64x64", "--no-progress"],
    "ormbg.train": ["--size", "64", "--batch-size", "2", "--max-steps", "2", "--val-every", "2", "--warmup-steps", "1"]
    + ["--workers", "0", "--width-divisor", "8", "--no-progress"],
    "ormbg.evaluate": ["--size", "64", "--workers", "0"],
}


def photos(folder: Path, count: int, seed: int) -> None:
    """`count` procedural people on backgrounds as images/*.jpg with mattes/*.png, as a user's folder would hold."""
    (folder / "images").mkdir(parents=True)
    (folder / "mattes").mkdir()
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        person = draw_person(rng, 96, 64)
        Image.fromarray(over(person, draw_background(rng, 96, 64))).save(
            folder / f"images/p{index:02d}.jpg", quality=95
        )
        Image.fromarray(person[..., 3]).save(folder / f"mattes/p{index:02d}.png")


@pytest.mark.slow
def test_the_finetune_guide_runs_as_written(tmp_path, monkeypatch):
    from ormbg.evaluate import main as evaluate_main
    from ormbg.train import main as train_main

    text = DOC.read_text()
    shell = re.search(r"```\n(.*?)```", text, flags=re.S)[1]
    commands = [shlex.split(line) for line in shell.strip().splitlines()]
    assert [words[0] if words[0] == "datagen" else words[2] for words in commands] == (
        ["datagen"] * 4 + ["ormbg.train", "ormbg.evaluate", "ormbg.evaluate"]
    )
    monkeypatch.chdir(tmp_path)
    photos(tmp_path / "my-photos", 24, 1)
    photos(tmp_path / "my-test-photos", 4, 2)
    (tmp_path / "my-backgrounds").mkdir()
    for index in range(4):
        background = draw_background(np.random.default_rng([3, index]), 80, 80)
        Image.fromarray(background).save(tmp_path / f"my-backgrounds/b{index}.jpg")
    write_demo_dataset(tmp_path / "datasets/composites", n_train=6, n_validation=2, n_test=0, size=(64, 64))
    (tmp_path / "finetune.yaml").write_text(re.search(r"```yaml\n(.*?)```", text, flags=re.S)[1])
    torch.save(ORMBG(8).state_dict(), tmp_path / "ormbg.pth")  # the published layout (keys), narrow for speed

    for words in commands:
        if words[0] == "datagen":
            command, args = cli, words[1:] + SMALLER.get(words[1], [])
        else:
            command = {"ormbg.train": train_main, "ormbg.evaluate": evaluate_main}[words[2]]
            args = words[3:] + SMALLER[words[2]]
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 0, (words, result.output, result.exception)

    rows = {
        split: len(list((tmp_path / f"datasets/mine/{split}/gt").glob("*.png")))
        for split in ("train", "validation", "test")
    }
    assert rows["validation"] >= 1 and rows["test"] == 4 and rows["train"] + rows["validation"] == 24, rows
    config = (tmp_path / "runs/mine/config.yaml").read_text()
    assert "ormbg.pth" in config and "mine-composites" in config, "--init and the recipe reached the run"
    published = json.loads((tmp_path / "published.json").read_text())["datasets"]
    finetuned = json.loads((tmp_path / "finetuned.json").read_text())["datasets"]
    assert [scores["n"] for scores in published.values()] == [scores["n"] for scores in finetuned.values()] == [4]
