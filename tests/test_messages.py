"""Messages that say what is true and what to do: each case once misled (a wrong option, a wrong command)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.records import read_rows, write_sample
from ormbg.train import main as train_main
from tests.conftest import write_demo_dataset


def test_relight_refuses_bad_options_before_loading_anything(tmp_path, dataset_dir):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    runner = CliRunner()
    base = ["relight", str(dataset_dir), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "no-model")]
    for args, expected in (
        (["--prompts", str(empty)], "no lighting description"),
        (["--size", "65"], "multiple of 64"),
        (["--highres-scale", "-1"], "--highres-scale -1"),
    ):
        result = runner.invoke(cli, [*base, *args])
        assert result.exit_code == 1 and expected in result.output, (args, result.output)
        assert not (tmp_path / "out").exists(), "refused before any work"


def test_training_messages_name_options_it_has(tmp_path, dataset_dir):
    runner = CliRunner()
    base = ["--data", f"{dataset_dir}:train", "--size", "32", "--width-divisor", "8", "--workers", "0"]
    run = tmp_path / "run"
    result = runner.invoke(train_main, [*base, "--out", str(run), "--max-steps", "1", "--no-progress"])
    assert result.exit_code == 0 and "no validation set" in result.output and "inf" not in result.output
    (run / "last.pt").unlink()  # as if killed before its first checkpoint
    for extra in ([], ["--resume"]):
        result = runner.invoke(train_main, [*base, "--out", str(run), *extra])
        assert result.exit_code == 1 and "--overwrite" in result.output, (extra, result.output)
    result = runner.invoke(train_main, [*base, "--out", str(tmp_path / "b1"), "--batch-size", "1"])
    assert result.exit_code == 1 and "at least 2 images" in result.output
    compose = f"fg={dataset_dir}:train,bg={dataset_dir}:train"  # photo rows without fg/
    result = runner.invoke(train_main, [*base, "--out", str(tmp_path / "c"), "--compose", compose])
    assert result.exit_code == 1 and "datagen foreground" in result.output
    assert "--raw-foreground" not in result.output, "training has no such option"


def test_compose_after_a_foreground_run_with_a_skipped_row_names_it(tmp_path):
    from datagen.foreground import ForegroundConfig, run_foreground

    photos = tmp_path / "photos"
    write_demo_dataset(photos, n_train=3, n_test=0)
    data = (photos / "train/gt/demo-train-1.png").read_bytes()
    (photos / "train/gt/demo-train-1.png").write_bytes(data[: len(data) // 2])
    result = run_foreground(ForegroundConfig(photos, method="blur-fusion", progress=False))
    assert result.new == 2 and result.waiting == {"train": 1}
    args = ["compose", "--fg", str(photos), "--bg", str(photos), "-n", "1", "-o", str(tmp_path / "c")]
    message = CliRunner().invoke(cli, args).output
    assert "demo-train-1" in message and "skipped.jsonl" in message and "--reject" in message, message
    CliRunner().invoke(cli, ["review", str(photos), "--reject", "demo-train-1", "--reason", "truncated"])
    assert run_foreground(ForegroundConfig(photos, method="blur-fusion", progress=False)).waiting == {}
    assert all("foreground_file_name" in row for row in read_rows(photos, "train"))


def test_busy_in_place_stages_do_not_suggest_out(tmp_path):
    from datagen.foreground import ForegroundConfig, run_foreground
    from datagen.records import BusyError, dataset_lock

    photos = tmp_path / "photos"
    write_demo_dataset(photos, n_train=1, n_test=0)
    with dataset_lock(photos), pytest.raises(BusyError) as error:
        run_foreground(ForegroundConfig(photos, method="blur-fusion", progress=False))
    assert "--out" not in str(error.value) and "another run" in str(error.value)


def test_review_of_a_non_dataset_fails_and_a_reason_stays_on_one_line(tmp_path, dataset_dir):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    result = runner.invoke(cli, ["review", str(tmp_path / "empty"), "--list"])
    assert result.exit_code == 1 and "is it a dataset directory" in result.output
    runner.invoke(cli, ["review", str(dataset_dir), "--reject", "demo-train-0", "--reason", "arm\ncut off"])
    listed = runner.invoke(cli, ["review", str(dataset_dir), "--list"]).output.splitlines()
    assert listed[0] == "demo-train-0\tarm cut off"


def test_infer_removes_a_killed_runs_temporary_outputs(tmp_path, checkpoint):
    import os

    from ormbg.infer import main as infer

    photos = tmp_path / "photos"
    photos.mkdir()
    from datagen.io import encode_jpeg
    from datagen.procedural import draw_background

    (photos / "a.jpg").write_bytes(encode_jpeg(draw_background(np.random.default_rng(0), 40, 30)))
    out = tmp_path / "out"
    out.mkdir()
    dead = 2**22 + 12345  # no such pid
    assert not os.path.exists(f"/proc/{dead}")
    (out / f".a.png.{dead}.tmp").write_bytes(b"half")
    result = CliRunner().invoke(infer, [str(photos), "-o", str(out), "--checkpoint", str(checkpoint), "--size", "64"])
    assert result.exit_code == 0 and sorted(p.name for p in out.iterdir()) == ["a.png"], result.output


def test_write_sample_keeps_json_of_rows(tmp_path):
    """A row with every kind of plane round-trips through metadata.jsonl (refine_trimap included)."""
    plane = np.full((4, 4), 128, np.uint8)
    row = write_sample(tmp_path, "train", "x", image=np.zeros((4, 4, 3), np.uint8), alpha=plane, trimap=plane,
                       mask=plane, refine_trimap=plane)  # fmt: skip
    assert json.loads((tmp_path / "train/metadata.jsonl").read_text()) == row
    assert row["refine_trimap_file_name"] == "refine_trimap/x.png"
    assert (tmp_path / "train/refine_trimap/x.png").is_file()


def test_user_errors_are_one_line_and_a_bug_keeps_its_traceback(tmp_path):
    import click

    from datagen.console import user_errors
    from datagen.errors import InputError
    from datagen.io import read_json

    @click.command()
    @click.argument("kind")
    def command(kind):
        with user_errors():
            if kind == "user":
                raise InputError("--size 0: give a side of 16 px or more")
            if kind == "json":
                (tmp_path / "run.json").write_text("{not json")
                read_json(tmp_path / "run.json")
            raise ValueError("an internal invariant broke")  # a bug: not the user's to fix

    runner = CliRunner()
    user = runner.invoke(command, ["user"])
    assert user.exit_code == 1 and user.output == "Error: --size 0: give a side of 16 px or more\n"
    corrupt = runner.invoke(command, ["json"])
    assert corrupt.exit_code == 1 and f"{tmp_path / 'run.json'}: not valid JSON" in corrupt.output
    bug = runner.invoke(command, ["bug"])
    assert isinstance(bug.exception, ValueError) and "Error:" not in bug.output  # propagates, traceback and all


def test_a_bug_in_a_stage_says_where_its_files_are_and_keeps_its_traceback(tmp_path, monkeypatch, capsys):
    import datagen.compose.run as compose_run
    from datagen.compose.config import ComposeConfig

    def broken(job):
        raise ZeroDivisionError("a bug in a worker")

    monkeypatch.setattr(compose_run, "compose_one", broken)
    fg, bg = tmp_path / "fg", tmp_path / "bg"
    fg.mkdir(), bg.mkdir()
    person = np.zeros((32, 16, 4), np.uint8)
    person[8:28, 4:12] = 255
    encode = __import__("datagen.io", fromlist=["encode_png"]).encode_png
    (fg / "p.png").write_bytes(encode(person))
    (bg / "b.png").write_bytes(encode(np.full((40, 40, 3), 90, np.uint8)))
    config = ComposeConfig(out=tmp_path / "out", foregrounds=(fg,), backgrounds=(bg,), n=2, size=(32, 32),
                           progress=False)  # fmt: skip
    with pytest.raises(ZeroDivisionError):
        compose_run.run_compose(config, command="datagen compose --fg x")
    err = capsys.readouterr().err
    assert "datagen compose: stopped by an unexpected error" in err and str(tmp_path / "out") in err, err


def test_a_bug_in_training_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import ormbg.train as train

    def broken(self):
        raise ZeroDivisionError("a bug in a step")

    monkeypatch.setattr(train.Trainer, "__init__", lambda self, config: None)
    monkeypatch.setattr(train.Trainer, "fit", broken)
    with pytest.raises(ZeroDivisionError):
        train.run_train(train.TrainConfig(out=tmp_path / "run"))
    err = capsys.readouterr().err
    assert f"`--out {tmp_path / 'run'} --resume` continues from its last checkpoint" in err, err
