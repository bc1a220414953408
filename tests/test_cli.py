import subprocess
import sys

import pytest
from click.testing import CliRunner

from datagen.cli import cli

COMMANDS = ["synth", "compose", "import", "push", "pull", "inspect", "preview"]


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
