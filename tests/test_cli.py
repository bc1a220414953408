import json
import shlex
import subprocess
import sys

import click
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


@pytest.fixture
def read_only(tmp_path):
    """Make folders read-only for the test: `chattr +i` (root ignores mode bits), else mode 0o555."""
    import os
    import subprocess

    made = []

    def freeze(path):
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("chattr +i is not available here, and root ignores mode bits")
        else:
            path.chmod(0o555)
        made.append(path)

    yield freeze
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(0o755)


def test_a_read_only_output_is_one_line_naming_it(tmp_path, read_only):
    """compose, foreground, refine, review and train on a read-only folder: exit 1, one line with the path."""
    import numpy as np

    from datagen.procedural import draw_background, draw_person
    from datagen.records import write_sample
    from ormbg.train import main as train_main
    from tests.conftest import write_demo_dataset

    people, backgrounds = tmp_path / "people", tmp_path / "bg"
    for index in range(2):
        person = draw_person(np.random.default_rng(index), 48, 32)
        write_sample(people, "train", f"p{index}", foreground=person, alpha=person[..., 3])
        write_sample(backgrounds, "train", f"b{index}", image=draw_background(np.random.default_rng(index), 48, 32),
                     alpha=None)  # fmt: skip
    photos = tmp_path / "photos"
    write_demo_dataset(photos, n_train=2, n_test=0)
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    read_only(photos)
    runner = CliRunner()
    commands = {
        "compose": (cli, ["compose", "--fg", str(people), "--bg", str(backgrounds), "-n", "1", "-o", str(locked)]),
        "foreground": (cli, ["foreground", str(photos), "--method", "blur-fusion"]),
        "refine": (cli, ["refine", str(photos), "--model", str(tmp_path / "none")]),
        "review": (cli, ["review", str(photos), "--reject", "demo-train-0"]),
        "train": (train_main, ["--data", f"{photos}:train", "--out", str(locked), "--max-steps", "1"]),
    }
    for name, (command, args) in commands.items():
        result = runner.invoke(command, args)
        assert result.exit_code == 1, (name, result.output, result.exception)
        assert "Traceback" not in result.output and ("locked" in result.output or "photos" in result.output), (
            name,
            result.output,
        )
        assert "cannot write" in result.output, (name, result.output)


def test_run_json_records_the_command_as_run_even_after_group_options(tmp_path):
    """`datagen -v synth ...` records `datagen synth ...` (sys.argv[2:] gave `datagen synth synth ...` then)."""
    out = tmp_path / "my people"
    args = ["synth", "--backend", "procedural", "-n", "2", "--size", "64x128", "-o", str(out), "--no-progress"]
    result = CliRunner().invoke(cli, ["-v", *args])
    assert result.exit_code == 0, result.output
    command = json.loads((out / "run.json").read_text())["command"]
    assert (
        command
        == "datagen synth --backend procedural -n 2 --size 64x128 -o " + shlex.quote(str(out)) + " --no-progress"
    )


STAGE_ARGUMENTS = {"foreground": ["."], "refine": ["."], "relight": ["."], "push": [".", "user/name"]}


@pytest.mark.parametrize("command", ["synth", "import", "compose", "foreground", "refine", "relight", "push"])
def test_every_option_default_is_the_configs(command):
    """The stages' options are made from their config dataclasses: the command line's defaults build exactly the
    config that the dataclass's own defaults build (a default restated by hand, or a type that converts it to
    something else, fails here)."""
    import dataclasses

    from datagen.console import load_config_class

    stage = cli.commands[command]
    config_class = load_config_class(stage._config)
    fields = {item.name for item in dataclasses.fields(config_class)}
    arguments = STAGE_ARGUMENTS.get(command, [])
    parsed = stage.make_context(command, ["folder", "."] if command == "import" else arguments).params
    options = [param.name for param in stage.params if isinstance(param, click.Option) and param.name in fields]
    assert len(options) >= 5, options
    positional = {name: parsed[name] for name in fields if name in parsed and name not in options}
    from_command_line = config_class(**positional, **{name: parsed[name] for name in options})
    assert from_command_line == config_class(**positional), command
    for name in options:  # and each one on its own (a None default resolved in __post_init__ hides nothing)
        assert config_class(**positional, **{name: parsed[name]}) == config_class(**positional), (command, name)


def test_shared_options_mean_the_same_on_every_stage():
    """--shard, --device, --dtype, --progress, --overwrite, --ray, --split, --out (a dataset directory; preview's is
    the sheet it draws): one definition each."""
    import click as click_module

    seen = {}
    for name, command in cli.commands.items():
        for param in command.params:
            shared = ("shard", "device", "dtype", "ray", "splits", "out", "progress", "overwrite")
            if param.name in shared and (name, param.name) != ("preview", "out"):
                info = json.dumps(param.type.to_info_dict(), sort_keys=True, default=str)
                key = (param.name, tuple(param.opts), tuple(param.secondary_opts), info,
                       isinstance(param, click_module.Option) and param.multiple)  # fmt: skip
                if param.name not in ("out", "overwrite"):
                    key += (param.help,)
                seen.setdefault(param.name, set()).add(key)
    assert {name for name, kinds in seen.items() if len(kinds) > 1} == set(), seen


def test_shard_is_i_of_k_or_the_launchers_rank_on_every_stage(monkeypatch, tmp_path):
    from datagen.compose.config import ComposeConfig
    from datagen.errors import InputError
    from datagen.foreground import ForegroundConfig
    from datagen.importers import ImportConfig

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert ComposeConfig().shard == ImportConfig().shard == ForegroundConfig(tmp_path).shard == (1, 3)
    assert ComposeConfig(shard="2/4").shard == (2, 4) and ImportConfig(shard=(0, 2)).shard == (0, 2)
    for bad in ("3", "4/4", "a/b", "1/2/3"):
        with pytest.raises(InputError, match="--shard"):
            ComposeConfig(shard=bad)
    result = CliRunner().invoke(cli, ["compose", "--shard", "5/2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and "--shard 5/2: need 0 <= I < K" in result.output, result.output


def test_commands_that_read_a_dataset_directory_send_parquet_shards_to_pull(tmp_path, dataset_dir):
    """Given what push writes (a folder of Parquet shards) where a dataset directory is needed, every command says
    to pull it first, in one line."""
    from datagen.hub import PushConfig, push

    staged = tmp_path / "staged"
    push(PushConfig(dataset_dir, "user/demo", dry_run=staged))
    for command in ("foreground", "review", "push", "refine", "relight", "compose"):
        args = {
            "push": [str(staged), "user/again", "--dry-run", str(tmp_path / "again")],
            "relight": [str(staged), "-o", str(tmp_path / "relit")],
            "compose": ["--fg", str(staged), "--bg", str(dataset_dir), "-o", str(tmp_path / "c")],
        }.get(command, [str(staged)])
        result = CliRunner().invoke(cli, [command, *args])
        assert result.exit_code == 1, (command, result.output)
        assert f"`datagen pull {staged} -o DIR` first" in result.output, (command, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
