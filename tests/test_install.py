"""`make install`'s torch step (scripts/install_torch.sh), run against a stand-in python that logs its calls."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def run_installer(tmp_path, index_reachable: bool, nvidia: bool = False) -> tuple[str, list[str]]:
    """Run the script with a fake python (the reachability probe succeeds or fails as asked) and a PATH without
    (or with) nvidia-smi; returns its output and the fake python's calls in order."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    probe = "0" if index_reachable else "1"
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/bash\necho "$*" >> {log}\nif [ "$1" = "-c" ]; then exit {probe}; fi\nexit 0\n')
    fake.chmod(0o755)
    if nvidia:
        (bin_dir / "nvidia-smi").write_text("#!/bin/bash\nexit 0\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run(["bash", str(SCRIPT), str(fake)], capture_output=True, text=True, env=env, check=True)
    calls = log.read_text().splitlines() if log.exists() else []
    return result.stdout, calls


def test_without_cuda_the_cpu_index_is_tried_first(tmp_path):
    output, calls = run_installer(tmp_path, index_reachable=True)
    assert calls[0].startswith("-c ") and calls[0].endswith(CPU_INDEX), "the CPU index is probed first"
    assert calls[1].startswith("-m pip install") and f"--index-url {CPU_INDEX}" in calls[1]
    assert "torch==2.13.0" in calls[1] and len(calls) == 2
    assert "CPU build" in output and CPU_INDEX in output


def test_an_unreachable_cpu_index_falls_back_to_the_default_and_says_so(tmp_path):
    output, calls = run_installer(tmp_path, index_reachable=False)
    assert calls[0].endswith(CPU_INDEX)
    assert calls[1] == "-m pip install --quiet torch==2.13.0"
    assert "cannot be reached" in output and "default index" in output


@pytest.mark.parametrize("reachable", [True, False])
def test_a_cuda_machine_installs_nothing_here(tmp_path, reachable):
    output, calls = run_installer(tmp_path, index_reachable=reachable, nvidia=True)
    assert calls == [] and "CUDA build" in output
