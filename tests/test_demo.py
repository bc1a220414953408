"""`make demo` end to end at a tiny size: every stage runs as a user runs it, every artefact exists."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datagen.inspect import inspect_dataset

ROOT = Path(__file__).resolve().parents[1]


def run_demo_twice(folder: Path) -> dict:
    """The demo at a tiny size, then again (a rerun resumes); what the first run made, listed before the rerun. One
    torch thread: it runs beside the rest of the suite (tests/conftest.py, `beside`)."""
    out = folder / "demo"
    command = [sys.executable, "scripts/demo.py", "--out", str(out), "--n", "12", "--people", "4"]
    command += ["--steps", "3", "--size", "64", "--width-divisor", "8"]  # the full width trains in `make demo`
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment)
    made = {str(path.relative_to(out)): path.stat().st_size for path in out.rglob("*") if path.is_file()}
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=environment)
    return {"out": out, "first": first, "made": made, "again": again}


@pytest.mark.slow
@pytest.mark.beside.with_args(run_demo_twice)
def test_demo_pipeline_end_to_end(beside):
    out, result, made = beside["out"], beside["first"], beside["made"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("synth", "backgrounds", "composites", "p3m"):
        report = inspect_dataset(out / "datasets" / name)
        assert report.ok, (name, report.to_dict() if hasattr(report, "to_dict") else report)
    for artefact in ("composites.png", "cutouts.png", "eval.md", "train/curves.png", "train/metrics.jsonl"):
        assert made.get(artefact, 0) > 0, artefact
    for checkpoint in ("best.pt", "last.pt", "best.safetensors"):
        assert f"train/{checkpoint}" in made
    evaluation = json.loads((out / "eval.json").read_text())["datasets"]
    assert len(evaluation) == 2 and all(scores["n"] > 0 for scores in evaluation.values())
    assert len([name for name in made if name.startswith("worst-") and name.endswith(".png")]) == 2
    validation_images = [name for name in made if name.startswith("datasets/composites/validation/im/")]
    assert len([name for name in made if name.startswith("cutouts/")]) == len(validation_images) > 0
    assert "| train |" in result.stdout and "| evaluate |" in result.stdout  # the per-stage time and disk table

    # the rerun resumed: nothing was regenerated and training continued from last.pt (already at its last step)
    again = beside["again"]
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "--resume" in again.stdout
