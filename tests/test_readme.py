"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README shows a Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert (tmp_path / "datasets/mine/train/gt/mine-0000.png").is_file()


def readme_commands() -> list[list[str]]:
    """Every `datagen ...` and `python -m ormbg.X ...` line of the README's shell blocks, continuations joined
    and comments dropped, split into words."""
    import shlex

    commands = []
    for block in re.findall(r"```\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].split(" -> ")[0].strip()  # the flow block annotates with ->
            if line.startswith("datagen ") or line.startswith("python -m ormbg."):
                commands.append(shlex.split(line))
    return commands


def resolve(words: list[str]):
    """The click command a README line runs."""
    import importlib

    from datagen.cli import cli

    if words[0] == "datagen":
        return cli.commands[words[1]]
    return importlib.import_module(words[2]).main


def test_readme_commands_use_real_options():
    """Each option the README shows exists on the command it is given to (so every line can work as written)."""
    commands = readme_commands()
    assert len(commands) > 20
    for words in commands:
        command = resolve(words)
        known = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
        known |= {"-h", "--help"}
        for word in words[1:] if words[0] == "datagen" else words[3:]:
            if word.startswith("-") and not word.lstrip("-").replace(".", "").isdigit():
                assert word.split("=")[0] in known, f"README: {' '.join(words)}: {word} is not an option"
