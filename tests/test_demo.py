"""`make demo` end to end at a tiny size: every stage runs as a user runs it, every artefact exists."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from datagen.inspect import inspect_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_pipeline_end_to_end(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "scripts/demo.py", "--out", str(out), "--n", "12", "--people", "4"]
    command += ["--steps", "3", "--size", "64", "--width-divisor", "8"]  # the full width trains in `make demo`
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("synth", "backgrounds", "composites", "p3m"):
        report = inspect_dataset(out / "datasets" / name)
        assert report.ok, (name, report.to_dict() if hasattr(report, "to_dict") else report)
    for artefact in ("composites.png", "cutouts.png", "eval.md", "train/curves.png", "train/metrics.jsonl"):
        assert (out / artefact).stat().st_size > 0, artefact
    for checkpoint in ("best.pt", "last.pt", "best.safetensors"):
        assert (out / "train" / checkpoint).is_file()
    evaluation = json.loads((out / "eval.json").read_text())["datasets"]
    assert len(evaluation) == 2 and all(scores["n"] > 0 for scores in evaluation.values())
    assert len(list((out).glob("worst-*.png"))) == 2
    validation_images = list((out / "datasets/composites/validation/im").glob("*.jpg"))
    assert len(list((out / "cutouts").glob("*.png"))) == len(validation_images) > 0
    assert "| train |" in result.stdout and "| evaluate |" in result.stdout  # the per-stage time and disk table

    # a rerun resumes: nothing is regenerated and training continues from last.pt (already at its last step)
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "--resume" in again.stdout
