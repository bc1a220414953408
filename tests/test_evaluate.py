import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from datagen.records import iter_samples
from ormbg.evaluate import EvaluateConfig, main, resolve_split, run_evaluate
from tests.conftest import count_pool_processes, write_demo_dataset

SPEC_KEYS = {"n", "mae", "max_f", "mean_f", "adaptive_f", "s_measure", "e_measure", "weighted_f"}
SPEC_KEYS |= {"sad", "mse", "grad", "conn"}


def test_help():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "--predictions" in result.output and "--worst" in result.output


def test_perfect_predictions_score_perfectly(tmp_path, dataset_dir):
    """Mattes written by 'another model' that equal the ground truth: MAE 0, max-F 1, matting errors 0."""
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for sample in iter_samples(dataset_dir, "test"):
        shutil.copy(sample.path("alpha"), predictions / f"{sample.id}.png")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        main, ["--predictions", str(predictions), "--data", str(dataset_dir), "--json", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    scores = report["datasets"][f"{dataset_dir}:test"]
    assert SPEC_KEYS <= set(scores)
    assert scores["n"] == 2 and scores["missing"] == 0
    assert scores["mae"] == 0 and scores["sad"] == 0 and scores["mse"] == 0 and scores["grad"] == 0
    assert scores["conn"] == 0
    assert scores["max_f"] == pytest.approx(1.0)
    assert scores["unknown"]["n"] == 2 and scores["unknown"]["sad"] == 0  # the fixture has trimaps
    assert "| dataset | n | MAE | maxF" in result.output and "unknown band" in result.output
    assert "no min-max stretch" in report["protocol"]


def test_missing_predictions_are_counted_and_none_is_an_error(tmp_path, dataset_dir):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    config = EvaluateConfig(data=(str(dataset_dir),), predictions=predictions, workers=0, progress=False)
    with pytest.raises(FileNotFoundError, match="none of the 2"):
        run_evaluate(config)
    first = sorted(iter_samples(dataset_dir, "test"), key=lambda s: s.id)[0]
    alpha = np.asarray(Image.open(first.path("alpha")))
    Image.fromarray(255 - alpha).save(predictions / f"{first.id}.png")  # the inverse: as wrong as it gets
    scores = run_evaluate(config)["datasets"][f"{dataset_dir}:test"]
    assert scores["n"] == 1 and scores["missing"] == 1
    assert scores["mae"] == pytest.approx(np.abs(1 - 2 * alpha.astype(float) / 255).mean())


def test_checkpoint_evaluation_with_worst_sheet(tmp_path, checkpoint):
    data = tmp_path / "ds"
    write_demo_dataset(data, n_train=3, n_test=3, size=(70, 45))
    out = tmp_path / "report" / "eval.json"
    args = ["--checkpoint", str(checkpoint), "--data", f"{data}:train", "--data", str(data), "--size", "64"]
    args += ["--json", str(out), "--worst", "2", "--workers", "0", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    datasets = json.loads(out.read_text())["datasets"]
    assert set(datasets) == {f"{data}:train", f"{data}:test"}
    for scores in datasets.values():
        assert scores["n"] == 3 and 0 < scores["mae"] < 1 and 0 <= scores["max_f"] <= 1
    sheet = out.parent / "worst-ds-test.png"
    assert sheet.is_file()
    assert Image.open(sheet).size[1] > 2 * 64  # two rows


def test_split_resolution(tmp_path, dataset_dir):
    assert resolve_split(str(dataset_dir)) == (dataset_dir, "test")
    assert resolve_split(f"{dataset_dir}:train") == (dataset_dir, "train")
    with pytest.raises(ValueError, match="no split 'validation'"):
        resolve_split(f"{dataset_dir}:validation")
    with pytest.raises(FileNotFoundError, match="not a dataset directory"):
        resolve_split(str(tmp_path / "nothing"))


def test_exactly_one_source_of_mattes(dataset_dir, checkpoint):
    with pytest.raises(ValueError, match="exactly one"):
        EvaluateConfig(data=(str(dataset_dir),))
    with pytest.raises(ValueError, match="exactly one"):
        EvaluateConfig(data=(str(dataset_dir),), checkpoint=checkpoint, predictions=dataset_dir)


def test_scoring_in_worker_processes_gives_the_report_of_one_process(tmp_path, checkpoint, monkeypatch):
    import ormbg.evaluate

    started = count_pool_processes(monkeypatch, ormbg.evaluate)
    data = tmp_path / "ds"
    write_demo_dataset(data, n_test=7, size=(70, 45), trimap=True)
    reports, sheets = [], []
    for metric_workers in (1, 2):
        worst = tmp_path / f"worst-{metric_workers}"
        config = EvaluateConfig(
            data=(str(data),),
            checkpoint=checkpoint,
            size=64,
            batch_size=2,
            workers=0,
            metric_workers=metric_workers,
            worst=3,
            worst_dir=worst,
            progress=False,
        )
        report = run_evaluate(config)
        sheets.append((worst / "worst-ds-test.png").read_bytes())
        del report["datasets"][f"{data}:test"]["worst_sheet"]
        reports.append(report)
    assert reports[0] == reports[1] and sheets[0] == sheets[1]
    assert reports[0]["datasets"][f"{data}:test"]["n"] == 7
    assert started == [2], "metric_workers=2 scored in two worker processes"


def test_measures_stay_in_this_process_when_the_model_uses_the_cpu(checkpoint, monkeypatch):
    from ormbg.evaluate import auto_metric_workers
    from ormbg.infer import Predictor

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert auto_metric_workers(Predictor(checkpoint, size_px=64, device="cpu")) == 1
    assert auto_metric_workers(None) == 8  # mattes from files: the cores are free


def test_an_unreadable_sample_is_left_out_counted_and_limited(tmp_path, dataset_dir):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    samples = sorted(iter_samples(dataset_dir, "test"), key=lambda s: s.id)
    for sample in samples:
        shutil.copy(sample.path("alpha"), predictions / f"{sample.id}.png")
    samples[0].path("alpha").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    config = dict(data=(str(dataset_dir),), predictions=predictions, workers=2, progress=False)
    scores = run_evaluate(EvaluateConfig(**config))["datasets"][f"{dataset_dir}:test"]
    assert scores["n"] == 1 and scores["unreadable"] == 1 and scores["mae"] == 0
    with pytest.raises(ValueError, match="more than --max-bad-samples 0"):
        run_evaluate(EvaluateConfig(max_bad_samples=0, **config))


def test_the_report_is_printed_even_when_the_json_cannot_be_written(tmp_path, dataset_dir, monkeypatch):
    import errno
    import os

    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for sample in iter_samples(dataset_dir, "test"):
        shutil.copy(sample.path("alpha"), predictions / f"{sample.id}.png")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "eval.json"
    args = ["--predictions", str(predictions), "--data", str(dataset_dir), "--json", str(out), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "| dataset | n | MAE" in result.output
    assert f"cannot write {out}: No space left on device" in result.output and "Traceback" not in result.output
    assert list(tmp_path.glob(".eval.json*")) == []


def test_subsets_are_reported_apart_and_together(tmp_path):
    """P3M-500-P and -NP are reported apart in the field's papers: one line per subset, and the whole split."""
    from datagen.importers import ImportConfig, run_import
    from datagen.samples import make_p3m_tree

    src = make_p3m_tree(tmp_path / "src", n_train=0, n_test=3, height=40, width=32)
    data = tmp_path / "p3m"
    run_import("p3m", src, ImportConfig(out=data, progress=False))
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for sample in iter_samples(data, "test"):
        alpha = np.asarray(Image.open(sample.path("alpha")))
        wrong = alpha if sample.row["subset"] == "P3M-500-P" else 255 - alpha  # perfect on P, inverted on NP
        Image.fromarray(wrong).save(predictions / f"{sample.id}.png")
    args = ["--predictions", str(predictions), "--data", f"{data}:test", "--json", str(tmp_path / "e.json")]
    result = CliRunner().invoke(main, [*args, "--no-progress", "--workers", "0"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "e.json").read_text())["datasets"][f"{data}:test"]
    assert scores["n"] == 6 and set(scores["subsets"]) == {"P3M-500-P", "P3M-500-NP"}
    assert scores["subsets"]["P3M-500-P"]["mae"] == 0 and scores["subsets"]["P3M-500-NP"]["mae"] > 0.3
    assert scores["mae"] == pytest.approx(scores["subsets"]["P3M-500-NP"]["mae"] / 2)
    assert f"| {data}:test / P3M-500-NP |" in result.output and f"| {data}:test / P3M-500-P |" in result.output


def _staged(data, out):
    """`datagen push --dry-run`'s Parquet of a dataset directory, several shards a split."""
    from datagen.hub import PushConfig, push

    push(PushConfig(data, "user/data", dry_run=out, max_shard_size="10KB"))
    assert len(list((out / "data").glob("test-*.parquet"))) > 1
    return out


def _without(scores, *keys):
    return {key: value for key, value in scores.items() if key not in keys}


def test_the_parquet_that_push_stages_scores_as_its_directory(tmp_path, checkpoint):
    """Evaluation reads what `datagen push` writes (a staged folder, or hf://user/name by the same code): the same
    samples by id, trimap band and worst sheet as the directory it came from; its default split is test too."""
    data = tmp_path / "ds"
    write_demo_dataset(data, n_train=2, n_test=5, size=(70, 45), trimap=True)
    staged = _staged(data, tmp_path / "staged")
    assert resolve_split(str(staged)) == resolve_split(f"{staged}/") == (str(staged), "test")
    assert resolve_split(f"{staged}:train") == (str(staged), "train")
    with pytest.raises(ValueError, match=r"no split 'validation' \(it has test, train\)"):
        resolve_split(f"{staged}:validation")
    worst = tmp_path / "worst"
    config = EvaluateConfig(
        data=(str(data), str(staged)), checkpoint=checkpoint, size=64, worst=2, workers=0, worst_dir=worst,
        progress=False,
    )  # fmt: skip
    report = run_evaluate(config)["datasets"]
    files, parquet = report[f"{data}:test"], report[f"{staged}:test"]
    assert files["n"] == 5 and files["unknown"]["n"] == 5, "the trimap band is scored from the trimap column"
    assert [entry["id"] for entry in parquet["per_sample"]] == [entry["id"] for entry in files["per_sample"]]
    assert _without(parquet, "worst_sheet") == _without(files, "worst_sheet")
    assert (worst / "worst-staged-test.png").read_bytes() == (worst / "worst-ds-test.png").read_bytes()


def test_predictions_and_subsets_are_matched_by_the_parquet_ids(tmp_path):
    from datagen.importers import ImportConfig, run_import
    from datagen.samples import make_p3m_tree

    src = make_p3m_tree(tmp_path / "src", n_train=0, n_test=4, height=40, width=32)
    data = tmp_path / "p3m"
    run_import("p3m", src, ImportConfig(out=data, progress=False))
    staged = _staged(data, tmp_path / "staged")
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for sample in list(iter_samples(data, "test"))[1:]:  # one missing
        alpha = np.asarray(Image.open(sample.path("alpha")))
        Image.fromarray(alpha if sample.row["subset"] == "P3M-500-P" else 255 - alpha).save(
            predictions / f"{sample.id}.png"
        )
    args = ["--predictions", str(predictions), "--data", f"{data}:test", "--data", str(staged), "--workers", "0"]
    result = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "e.json"), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())["datasets"]
    files, parquet = report[f"{data}:test"], report[f"{staged}:test"]
    assert parquet == files and files["missing"] == 1 and set(files["subsets"]) == {"P3M-500-P", "P3M-500-NP"}
    assert f"| {staged}:test / P3M-500-NP |" in result.output
    from datagen.slices import slice_report

    whole = json.loads((tmp_path / "e.json").read_text())
    sliced = {}
    for name in (f"{data}:test", f"{staged}:test"):  # slices read the rows of the Parquet as of the directory
        (tmp_path / "one.json").write_text(json.dumps({**whole, "datasets": {name: whole["datasets"][name]}}))
        sliced[name] = {k: v for k, v in slice_report(tmp_path / "one.json", min_n=1).items() if k != "report"}
    assert sliced[f"{data}:test"] == sliced[f"{staged}:test"]
    subsets = {
        entry["value"]: entry["n"] for entry in sliced[f"{staged}:test"]["slices"] if entry["family"] == "subset"
    }
    overall = sliced[f"{staged}:test"]["overall"]["n"]
    assert set(subsets) == {"P3M-500-P", "P3M-500-NP"} and sum(subsets.values()) == overall == files["n"]


def test_a_hub_dataset_that_cannot_be_read_is_one_line(tmp_path, dataset_dir):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    args = ["--predictions", str(predictions), "--data", "hf://user/nothing-here:test", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "hf://user/nothing-here: the Hub could not be read" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_hub_dataset_is_downloaded_once_and_scores_as_its_files(tmp_path, checkpoint, monkeypatch):
    """hf://user/name: listed through huggingface_hub's file system and its split's files fetched with
    hf_hub_download (here local stand-ins for both, holding the repository at datasets/user/data)."""
    import huggingface_hub
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    import datagen.shards

    data = tmp_path / "ds"
    write_demo_dataset(data, n_train=2, n_test=4, size=(70, 45), trimap=True)
    repo = tmp_path / "hub/datasets/user/data"
    _staged(data, repo)
    fetched = []

    def download(repo_id, filename, repo_type):
        assert (repo_id, repo_type) == ("user/data", "dataset")
        fetched.append(filename)
        return str(repo / filename)

    hub = DirFileSystem(str(tmp_path / "hub"), LocalFileSystem())
    monkeypatch.setattr(datagen.shards, "hub_filesystem", lambda: hub)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    config = EvaluateConfig(data=(str(data), "hf://user/data"), checkpoint=checkpoint, size=64, workers=0)
    report = run_evaluate(config)["datasets"]
    assert sorted(fetched) == sorted(f"data/{p.name}" for p in (repo / "data").glob("test-*.parquet"))
    assert report["hf://user/data:test"] == report[f"{data}:test"]
