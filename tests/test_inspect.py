import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from datagen.cli import cli
from datagen.inspect import inspect_dataset
from tests.conftest import count_pool_processes


def run_inspect(root, *args):
    return CliRunner().invoke(cli, ["inspect", str(root), "--no-progress", *args])


def test_clean_directory_passes(dataset_dir):
    result = run_inspect(dataset_dir)
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "train" in result.output and "procedural 3" in result.output
    report = json.loads(run_inspect(dataset_dir, "--json").output)
    assert report["counts"] == {"train": 3, "test": 2}
    assert report["errors"] == 0 and report["warnings"] == 0
    share = report["alpha_share"]
    assert share["soft"] > 0 and share["opaque"] > 0 and share["transparent"] > 0
    assert abs(sum(share.values()) - 1) < 1e-9
    assert report["sizes"] == {"64x96": 5}


def test_parallel_workers_give_the_same_report(dataset_dir, monkeypatch):
    import datagen.inspect

    started = count_pool_processes(monkeypatch, datagen.inspect)
    one = inspect_dataset(dataset_dir).to_dict()
    two = inspect_dataset(dataset_dir, workers=2).to_dict()
    assert one == two
    assert started == [2], "two worker processes for workers=2"


def _expect_error(root, file_fragment, message_fragment):
    result = run_inspect(root)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip().startswith("ERROR")]
    assert any(file_fragment in line and message_fragment in line for line in lines), result.output


def test_alpha_of_another_size(dataset_dir):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(dataset_dir / "train/gt/demo-train-1.png")
    _expect_error(dataset_dir, "train/gt/demo-train-1.png", "alpha is 10x10, image is 64x96")


def test_three_channel_alpha(dataset_dir):
    Image.fromarray(np.zeros((96, 64, 3), np.uint8)).save(dataset_dir / "train/gt/demo-train-0.png")
    _expect_error(dataset_dir, "train/gt/demo-train-0.png", "one 8-bit channel, found mode RGB")


def test_sixteen_bit_alpha(dataset_dir):
    import cv2

    cv2.imwrite(str(dataset_dir / "test/gt/demo-test-0.png"), np.zeros((96, 64), np.uint16))
    _expect_error(dataset_dir, "test/gt/demo-test-0.png", "one 8-bit channel")


def test_jpeg_alpha(dataset_dir):
    Image.fromarray(np.zeros((96, 64), np.uint8)).save(dataset_dir / "test/gt/demo-test-0.png", format="JPEG")
    _expect_error(dataset_dir, "test/gt/demo-test-0.png", "lossless PNG, found JPEG")


def test_missing_image(dataset_dir):
    (dataset_dir / "train/im/demo-train-2.jpg").unlink()
    _expect_error(dataset_dir, "train/im/demo-train-2.jpg", "missing image")


def test_row_pointing_at_nothing(dataset_dir):
    row = {"id": "ghost", "file_name": "im/ghost.jpg", "alpha_file_name": "gt/ghost.png", "width": 1, "height": 1}
    with open(dataset_dir / "train/metadata.jsonl", "a") as file:
        file.write(json.dumps(row) + "\n")
    _expect_error(dataset_dir, "train/metadata.jsonl", "'ghost' points at nothing")


def test_duplicate_id(dataset_dir):
    path = dataset_dir / "test/metadata.jsonl"
    first = path.read_text().splitlines()[0]
    with open(path, "a") as file:
        file.write(first + "\n")
    _expect_error(dataset_dir, "test/metadata.jsonl:3", "duplicate id 'demo-test-0'")


def test_truncated_png(dataset_dir):
    path = dataset_dir / "train/gt/demo-train-0.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(dataset_dir, "train/gt/demo-train-0.png", "truncated")


def test_bad_json_line_and_bad_trimap(dataset_dir):
    with open(dataset_dir / "test/metadata.jsonl", "a") as file:
        file.write("{not json\n")
    Image.fromarray(np.full((96, 64), 7, np.uint8)).save(dataset_dir / "train/trimap/demo-train-0.png")
    result = run_inspect(dataset_dir)
    assert result.exit_code == 1
    assert "test/metadata.jsonl:3: not JSON" in result.output
    assert "train/trimap/demo-train-0.png: trimap has values other than 0/128/255" in result.output


def test_orphans_and_temporaries_warn_but_pass(dataset_dir):
    (dataset_dir / "train/im/stray.jpg").write_bytes(b"x")
    (dataset_dir / "train/gt/.a.png.123.tmp").write_bytes(b"x")
    result = run_inspect(dataset_dir)
    assert result.exit_code == 0, result.output
    assert "WARNING train/im/stray.jpg: orphan file" in result.output
    assert "WARNING train/gt/.a.png.123.tmp: temporary file" in result.output


def test_empty_and_full_alphas_are_listed(tmp_path, person):
    from datagen.records import write_sample

    for name, value in (("e", 0), ("f", 255)):
        write_sample(tmp_path, "train", name, image=person[..., :3], alpha=np.full((96, 64), value, np.uint8))
    report = inspect_dataset(tmp_path)
    assert report.empty_alpha == ["train/e"] and report.full_alpha == ["train/f"]


@pytest.mark.parametrize("content", [None, "empty"])
def test_not_a_dataset(tmp_path, content):
    if content:
        (tmp_path / "train").mkdir()
    result = run_inspect(tmp_path)
    assert result.exit_code == 1


def _stage(dataset_dir, out, **options):
    from datagen.hub import PushConfig, push

    push(PushConfig(dataset_dir, "user/demo", dry_run=out, **options))
    return out


def test_pushed_shards_are_inspected_as_the_directory_they_were_pushed_from(tmp_path, dataset_dir, monkeypatch):
    """What push writes (a folder of Parquet shards) is checked in place: the same counts, sources, sizes, alpha
    shares and empty/full alphas as the directory, in one process or two (two worker processes, counted)."""
    import datagen.shards

    staged = _stage(dataset_dir, tmp_path / "staged", max_shard_size="10KB")
    assert len(list((staged / "data").glob("train-*.parquet"))) > 1, "several shards"
    directory = inspect_dataset(dataset_dir).to_dict()
    started = count_pool_processes(monkeypatch, datagen.shards)
    for workers in (1, 2):
        report = inspect_dataset(staged, workers=workers).to_dict()
        assert report["ok"] and report["errors"] == report["warnings"] == 0, report["problems"]
        for key in ("counts", "sources", "sizes", "alpha_share", "empty_alpha", "full_alpha"):
            assert report[key] == directory[key], key
    assert started == [2], "one process for workers=1, two worker processes for workers=2"
    result = run_inspect(staged)
    assert result.exit_code == 0 and "OK" in result.output and "procedural 3" in result.output, result.output


def _rewrite(shard, change):
    """Rewrite one Parquet shard with `change(columns)` applied to its columns (lists by name; one may be removed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    change(columns)
    schema = pa.schema([field for field in table.schema if field.name in columns], metadata=table.schema.metadata)
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), shard)


def test_broken_rows_of_a_shard_are_reported_by_shard_row_and_id(tmp_path, dataset_dir, person):
    staged = _stage(dataset_dir, tmp_path / "staged")
    shard = next((staged / "data").glob("train-*.parquet"))
    name = f"data/{shard.name}"
    jpeg = io.BytesIO()
    Image.fromarray(person[:48, :32, 3]).save(jpeg, format="JPEG")

    def change(columns):
        columns["alpha"][0] = {"bytes": jpeg.getvalue(), "path": "x.jpg"}  # a lossy alpha (of another size too)
        columns["image"][1] = {"bytes": columns["image"][1]["bytes"][:200], "path": "y.png"}  # truncated
        columns["id"][2] = columns["id"][1]  # a duplicate

    _rewrite(shard, change)
    report = inspect_dataset(staged)
    problems = [f"{p.path}: {p.message}" for p in report.errors]
    assert any(p.startswith(f"{name}:row 0 (demo-train-0):alpha: alpha must be a lossless PNG") for p in problems)
    assert any(p.startswith(f"{name}:row 0 (demo-train-0):alpha: alpha is ") for p in problems), problems
    assert any(p.startswith(f"{name}:row 1 (demo-train-1):image: unreadable or truncated") for p in problems)
    assert f"{name}:row 2: duplicate id 'demo-train-1' (first at {name}:row 1)" in problems
    assert report.counts == {"train": 2, "test": 2}, "the duplicate is not counted"
    result = run_inspect(staged)
    assert result.exit_code == 1 and "CONTRACT VIOLATED" in result.output


def test_shards_with_other_columns_or_unreadable_are_reported(tmp_path, dataset_dir):
    staged = _stage(dataset_dir, tmp_path / "staged")
    test_shard = next((staged / "data").glob("test-*.parquet"))
    _rewrite(test_shard, lambda columns: columns.pop("license"))
    (staged / "data/validation-00000-of-00001.parquet").write_bytes(b"not parquet")
    (staged / "README.md").unlink()
    problems = {p.path: (p.severity, p.message) for p in inspect_dataset(staged).problems}
    assert problems[f"data/{test_shard.name}"][1].startswith("its columns differ from data/train-")
    assert "(license)" in problems[f"data/{test_shard.name}"][1]
    assert problems["data/validation-00000-of-00001.parquet"][1].startswith("not a readable Parquet file")
    assert problems["README.md"] == ("warning", "missing (dataset card)")


def test_another_layout_is_checked_with_one_problem_per_missing_column(tmp_path, person):
    """A Hub dataset of another layout (`image` + `mask`, no id, width or height): its rows are checked and counted
    by their place, the matte read from `mask` (as training and pull read it), each missing column said once."""
    import datasets

    rows = {"image": [person[..., :3]] * 3, "mask": [person[..., 3]] * 3}
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    (tmp_path / "other/data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "other/data/train-00000-of-00001.parquet")
    report = inspect_dataset(tmp_path / "other")
    assert report.counts == {"train": 3}
    assert [p.message.split(" (")[0] for p in report.errors] == [
        "no `id` column",
        "no `width` column",
        "no `height` column",
    ]
    assert report.alpha_pixels["soft"] > 0 and report.sizes == {(64, 96): 3}


def test_a_hub_dataset_is_inspected_in_place(tmp_path, dataset_dir, monkeypatch):
    """hf://user/name through huggingface_hub's file system (here a local stand-in at datasets/user/demo); a Hub
    that cannot be reached is one line."""
    import shutil

    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem
    from huggingface_hub.errors import OfflineModeIsEnabled

    import datagen.shards

    staged = _stage(dataset_dir, tmp_path / "staged")
    shutil.copytree(staged, tmp_path / "hub/datasets/user/demo")
    hub = DirFileSystem(str(tmp_path / "hub"), LocalFileSystem())
    monkeypatch.setattr(datagen.shards, "hub_filesystem", lambda: hub)
    local, remote = inspect_dataset(staged).to_dict(), inspect_dataset("hf://user/demo").to_dict()
    assert remote.pop("root") == "hf://user/demo" and local.pop("root") == str(staged)
    assert remote == local and remote["ok"]

    def offline():
        raise OfflineModeIsEnabled("offline mode is enabled")

    monkeypatch.setattr(datagen.shards, "hub_filesystem", offline)
    result = run_inspect("hf://user/demo")
    assert result.exit_code == 1 and "hf://user/demo: the Hub could not be read" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_rows_with_other_columns_or_nulls_violate(dataset_dir):
    path = dataset_dir / "test/metadata.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["extra"] = "only here"
    rows[1]["source"] = None
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_inspect(dataset_dir)
    assert result.exit_code == 1
    assert "column 'extra' is missing from 4 row(s)" in result.output
    assert "column 'source' is null in row test/demo-test-1" in result.output


def test_a_broken_line_in_rejected_jsonl_is_a_reported_problem(dataset_dir):
    (dataset_dir / "rejected.jsonl").write_text('{"id": "demo-train-0", "reason": "x"}\n{broken\n')
    result = CliRunner().invoke(cli, ["inspect", str(dataset_dir)])
    assert result.exit_code == 1 and "rejected.jsonl" in result.output and "Traceback" not in result.output
    assert "CONTRACT VIOLATED" in result.output
