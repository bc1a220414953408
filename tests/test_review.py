"""rejected.jsonl: a rejection is one appended line, an undo a second; every reader leaves rejected samples out."""

import json

import numpy as np
from click.testing import CliRunner

from datagen.cli import cli
from datagen.compose.pools import list_pool
from datagen.hub import PushConfig, push
from datagen.inspect import inspect_dataset
from datagen.procedural import draw_person
from datagen.records import iter_samples, read_rows, rejected_ids, write_sample


def people(root, n=4):
    for index in range(n):
        person = draw_person(np.random.default_rng([index, 9]), 48, 32)
        write_sample(
            root,
            "train",
            f"p{index}",
            foreground=person,
            alpha=person[..., 3],
            metadata={"source": "s", "license": "MIT"},
        )
    return root


def test_a_rejection_is_honoured_by_every_reader_counted_and_undone(tmp_path, dataset_dir):
    pool = people(tmp_path / "pool")
    runner = CliRunner()
    result = runner.invoke(cli, ["review", str(pool), "--reject", "p1", "--reason", "cut-off arm"])
    assert result.exit_code == 0 and "rejected p1" in result.output
    assert rejected_ids(pool) == {"p1": "cut-off arm"}
    assert [row["id"] for row in read_rows(pool, "train")] == ["p0", "p1", "p2", "p3"], "rows are never edited"
    assert (pool / "train/fg/p1.png").is_file(), "files are never deleted"
    assert [item.id for item in list_pool([pool], "foreground")] == ["pool:p0", "pool:p2", "pool:p3"]  # compose
    assert [s.id for s in iter_samples(pool)] == ["p0", "p2", "p3"]  # training and evaluation read through it
    report = inspect_dataset(pool)
    assert report.counts == {"train": 3} and report.rejected == 1 and report.ok
    assert "rejected        1" in report.format_text()
    from datagen.card import write_card

    card = write_card(pool, "pool", "People.").read_text()
    assert "| s | 3 | MIT |" in card and "1 samples were rejected in review" in card  # counted, left out
    listed = runner.invoke(cli, ["review", str(pool), "--list"])
    assert "p1\tcut-off arm" in listed.output and "1 rejected of 4 samples" in listed.output

    runner.invoke(cli, ["review", str(dataset_dir), "--reject", "demo-train-0"])
    push(PushConfig(dataset_dir, "user/demo", dry_run=tmp_path / "dry"))
    import datasets

    staged = datasets.load_dataset(str(tmp_path / "dry"), cache_dir=str(tmp_path / "cache"))
    assert staged["train"].num_rows == 2 and "demo-train-0" not in staged["train"]["id"]  # push

    undone = runner.invoke(cli, ["review", str(pool), "--undo", "p1"])
    assert undone.exit_code == 0 and rejected_ids(pool) == {}
    lines = [json.loads(line) for line in (pool / "rejected.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["p1", "p1"] and all("time" in line for line in lines)
    assert len(list_pool([pool], "foreground")) == 4
    unknown = runner.invoke(cli, ["review", str(pool), "--reject", "nope"])
    assert unknown.exit_code == 1 and "no sample 'nope'" in unknown.output


def test_training_leaves_rejected_samples_out(tmp_path, dataset_dir):
    from ormbg.data import Source, list_samples

    before = list_samples(Source(str(dataset_dir), "train"))
    CliRunner().invoke(cli, ["review", str(dataset_dir), "--reject", "demo-train-1"])
    after = list_samples(Source(str(dataset_dir), "train"))
    assert len(after) == len(before) - 1 and not any("demo-train-1" in image for image, _ in after)


def test_overwrite_clears_the_rejections_with_the_content_they_judged(tmp_path):
    """New samples under the same seeded ids must not inherit the old ones' rejections."""
    from datagen.synth import SynthConfig, run_synth

    config = dict(out=tmp_path / "synth", backend="procedural", n=8, batch_size=4, size=(64, 128), progress=False)
    run_synth(SynthConfig(**config))
    first = sorted(s.id for s in iter_samples(config["out"]))
    CliRunner().invoke(cli, ["review", str(config["out"]), "--reject", first[3], "--reason", "bad hand"])
    assert len(list(iter_samples(config["out"]))) == 7
    run_synth(SynthConfig(**config, overwrite=True))  # the same ids again
    assert rejected_ids(config["out"]) == {} and len(list(iter_samples(config["out"]))) == 8
