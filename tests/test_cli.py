import subprocess
import sys

import pytest
from click.testing import CliRunner

from datagen.cli import cli

COMMANDS = [
    "synth",
    "compose",
    "import",
    "foreground",
    "refine",
    "relight",
    "review",
    "push",
    "pull",
    "inspect",
    "preview",
]


def test_group_help_lists_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"  {command} " in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0 and "Usage: " in result.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "datagen", "--version"], capture_output=True, text=True, check=True)
    assert "datagen, version" in out.stdout


@pytest.fixture
def full_disk(monkeypatch):
    """Every write that reaches fsync or rename fails as on a full disk (the tests run as root, so a tmpfs
    mount or chmod is not an option everywhere)."""
    import errno
    import os

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    def install():
        monkeypatch.setattr(os, "fsync", full)
        monkeypatch.setattr(os, "replace", full)

    return install


def leftovers(root):
    return [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def test_a_full_disk_is_one_line_for_every_writer(tmp_path, full_disk, checkpoint, dataset_dir):
    from PIL import Image

    from datagen.procedural import draw_background
    from ormbg.export import main as export_main
    from ormbg.infer import main as infer_main

    synth = ["synth", "--backend", "procedural", "-n", "2", "--size", "64x128", "-o", str(tmp_path / "synth")]
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(draw_background(__import__("numpy").random.default_rng(0), 40, 30)).save(photos / "a.jpg")
    runs = [
        (cli, [*synth, "--no-progress"]),
        (cli, ["preview", str(dataset_dir), "-o", str(tmp_path / "sheet.png")]),
        (infer_main, [str(photos), "-o", str(tmp_path / "cut"), "--checkpoint", str(checkpoint), "--size", "64"]),
        (export_main, ["--checkpoint", str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--size", "64"]),
    ]
    full_disk()
    for command, args in runs:
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 1, (args, result.output)
        assert "No space left on device" in result.output and "cannot write" in result.output, result.output
        assert "Traceback" not in result.output
    assert leftovers(tmp_path) == []


def test_compose_and_import_on_a_full_disk(tmp_path, full_disk):
    import numpy as np

    from datagen.procedural import draw_background, draw_person
    from datagen.records import write_sample
    from datagen.samples import make_p3m_tree

    for index in range(2):
        person = draw_person(np.random.default_rng([index]), 60, 40)
        write_sample(tmp_path / "fg", "train", f"p{index}", foreground=person, alpha=person[..., 3])
        write_sample(
            tmp_path / "bg",
            "train",
            f"b{index}",
            image=draw_background(np.random.default_rng(index), 50, 50),
            alpha=None,
        )
    src = make_p3m_tree(tmp_path / "P3M", n_train=2, n_test=1, height=32, width=24)
    full_disk()
    compose = ["compose", "--fg", str(tmp_path / "fg"), "--bg", str(tmp_path / "bg"), "-n", "2", "--size", "32"]
    for args in (
        [*compose, "-o", str(tmp_path / "c"), "--no-progress"],
        ["import", "p3m", str(src), "-o", str(tmp_path / "p"), "--no-progress"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and "cannot write" in result.output and "Traceback" not in result.output, (
            result.output
        )
    assert leftovers(tmp_path) == []


def test_ormbg_console_script_version_and_commands():
    from ormbg.cli import cli as ormbg_cli

    result = CliRunner().invoke(ormbg_cli, ["--help"])
    assert result.exit_code == 0 and all(
        f"  {name} " in result.output for name in ("train", "evaluate", "infer", "export", "app")
    )
    for name in ("train", "evaluate", "infer", "export", "app"):
        sub = CliRunner().invoke(ormbg_cli, [name, "--help"])
        assert sub.exit_code == 0 and "-q, --quiet" in sub.output and "-v, --verbose" in sub.output, name
        assert "see the module docstring" not in sub.output
    version = subprocess.run([sys.executable, "-m", "ormbg.train", "--version"], capture_output=True, text=True)
    assert "ormbg, version" in version.stdout, version.stderr
    from pathlib import Path

    script = Path(sys.executable).parent / "ormbg"  # installed by `pip install -e .` (make install)
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert "ormbg, version" in result.stdout


@pytest.mark.parametrize("args", [["-v", "inspect"], ["inspect", "-v"], ["inspect", "-q"], ["-q", "inspect"]])
def test_verbosity_before_or_after_the_subcommand(args, dataset_dir):
    import logging

    result = CliRunner().invoke(cli, [*args, str(dataset_dir), "--no-progress"])
    assert result.exit_code == 0, result.output
    expected = logging.ERROR if "-q" in args else logging.INFO
    assert logging.getLogger().level == expected
