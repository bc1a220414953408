import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from datagen.cli import cli
from datagen.inspect import inspect_dataset


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


def test_parallel_workers_give_the_same_report(dataset_dir):
    one = inspect_dataset(dataset_dir).to_dict()
    two = inspect_dataset(dataset_dir, workers=2).to_dict()
    assert one == two


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


def test_parquet_shards_are_sent_to_pull(tmp_path, dataset_dir):
    from datagen.hub import PushConfig, push

    push(PushConfig(dataset_dir, "user/demo", dry_run=tmp_path / "staged"))
    result = run_inspect(tmp_path / "staged")
    assert result.exit_code == 1
    staged = tmp_path / "staged"
    assert f"holds Parquet shards, and inspect reads dataset directories: `datagen pull {staged} -o" in result.output


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
