"""Parquet shards (what `datagen push --dry-run` stages, or hf://user/name) as training and validation sources."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from datagen.hub import PushConfig, push
from ormbg.data import MixSampler, Recipe, Source
from ormbg.parquet import ParquetRows, open_parquet
from ormbg.train import main, run_train
from tests.conftest import directory_bytes, write_demo_dataset
from tests.test_train import config as train_config


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    root = tmp_path_factory.mktemp("parquet-data") / "people"
    write_demo_dataset(root, n_train=30, n_validation=4, n_test=2, size=(72, 48))
    return root


@pytest.fixture(scope="module")
def staged(directory, tmp_path_factory):
    """push --dry-run's staging: train in eight or nine shards of one row group each, validation and test."""
    out = tmp_path_factory.mktemp("staged") / "people-parquet"
    push(PushConfig(directory, "user/people", dry_run=out, max_shard_size="15KB"))
    return out


def first_shard(staged):
    return sorted((staged / "data").glob("train-*.parquet"))[0]


def keys_of(rows: ParquetRows, lane: int, count: int) -> list[tuple[str, int]]:
    found = [json.loads(rows.lane_row(lane, n)[2]) for n in range(count)]
    return [(item["parquet"], item["group"], item["row"]) for item in found]


@pytest.mark.parametrize("lanes_per_rank, world_size", [(2, 2), (4, 4)], ids=["4 lanes", "16 lanes > 9 groups"])
def test_each_epoch_reads_every_row_once_and_each_lane_its_own_row_groups(staged, lanes_per_rank, world_size):
    rows = open_parquet(str(staged), "train", seed=5)
    assert len(rows) == 30 and len(rows.groups) >= 5
    rows.lanes_per_rank, rows.world_size = lanes_per_rank, world_size
    per_lane, epochs = {}, {}
    for lane in range(rows.lanes):
        epochs[lane] = [int(rows._lane_epoch(lane, epoch)[1][-1]) for epoch in (0, 1)]
        assert min(epochs[lane]) > 0, "every lane has rows"
        per_lane[lane] = keys_of(rows, lane, sum(epochs[lane]))
    for epoch in (0, 1):
        read = []
        for lane, keys in per_lane.items():
            read += keys[: epochs[lane][0]] if epoch == 0 else keys[epochs[lane][0] :]
        assert len(read) == len(set(read)) == 30, f"epoch {epoch}: each row once, none skipped"
    groups = [{key[:2] for key in keys[: epochs[lane][0]]} for lane, keys in per_lane.items()]
    if rows.lanes <= len(rows.groups):
        assert all(not a & b for i, a in enumerate(groups) for b in groups[i + 1 :]), "no row group read by two lanes"
    again = open_parquet(str(staged), "train", seed=5)
    again.lanes_per_rank, again.world_size = lanes_per_rank, world_size
    count = len(per_lane[1])
    backwards = [json.loads(again.lane_row(1, n)[2]) for n in reversed(range(count))]
    assert [(b["parquet"], b["group"], b["row"]) for b in reversed(backwards)] == per_lane[1], "the seed's order"


def test_a_resumed_sampler_continues_each_lanes_count():
    straight = MixSampler([10, 30], [1.0, 2.0], 4, seed=2, streams=frozenset({1}), lanes=3)
    keys = iter(straight)
    everything = [next(keys) for _ in range(4 * 9)]
    resumed = iter(MixSampler([10, 30], [1.0, 2.0], 4, seed=2, start_step=5, streams=frozenset({1}), lanes=3))
    assert [next(resumed) for _ in range(4 * 4)] == everything[4 * 5 :]
    counts = {}
    for source, index, _, step, _, _ in everything:
        if source == 1:
            lane = step % 3
            assert index == counts.get(lane, 0), "a lane's rows are taken in order"
            counts[lane] = index + 1


def config(out, train, val, **changes):
    """test_train's narrow, quick run on these sources, with 2 loader workers (Parquet's lanes are per worker)."""
    values = dict(recipe=Recipe(tuple(train), tuple(val)), size=48, max_steps=4, workers=2, warmup_steps=2)
    return train_config(out, train[0].path, **{**values, **changes})


def test_training_on_parquet_resumes_to_the_uninterrupted_batches(staged, directory, tmp_path):
    """Parquet mixed with a dataset directory, 2 loader workers: a run stopped at step 2 and resumed (with another
    --workers) reads exactly the batches of the uninterrupted run; validation on the staged split scores as on files."""
    train = [Source(str(staged), "train", 2.0), Source(str(directory), "train", 1.0)]
    val = [Source(str(staged), "validation"), Source(str(directory), "validation")]
    straight = tmp_path / "straight"
    run_train(config(straight, train, val, dump_batches=4))
    made = [
        json.loads(row)["made_from"] for row in (straight / "batches/train/metadata.jsonl").read_text().splitlines()
    ]
    assert any("parquet" in json.loads(m) for m in made) and any("image" in json.loads(m) for m in made)
    interrupted = tmp_path / "interrupted"
    run_train(config(interrupted, train, val, dump_batches=4, max_steps=2))
    run_train(config(interrupted, train, val, dump_batches=4, resume=True, workers=1, stream_lanes=2))
    assert directory_bytes(interrupted / "batches") == directory_bytes(straight / "batches")
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if "val" in row:
            parquet, files = row["val"]["people-parquet:validation"], row["val"]["people:validation"]
            assert parquet == pytest.approx(files, rel=1e-6), "the same rows score the same from Parquet and files"


def test_the_cli_trains_on_a_staged_folder_and_hub_paths_say_what_went_wrong(staged, tmp_path):
    runner = CliRunner()
    common = ["--size", "48", "--batch-size", "2", "--max-steps", "2", "--val-every", "2", "--workers", "0"]
    common += ["--width-divisor", "8", "--no-progress", "--warmup-steps", "1"]
    result = runner.invoke(
        main, ["--data", f"{staged}:train:1", "--val", str(staged), "--out", str(tmp_path / "r")] + common
    )
    assert result.exit_code == 0, result.output
    assert "trained to step 2" in result.output
    result = runner.invoke(main, ["--data", "hf://user/nothing-here:train:0.5", "--out", str(tmp_path / "h")] + common)
    assert result.exit_code == 1 and "hf://user/nothing-here: the Hub could not be read" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(main, ["--data", f"{staged}:test", "--out", str(tmp_path / "t")] + common)
    assert result.exit_code == 0, "a test split is trained on only when named, as here"


def test_a_hub_dataset_is_read_through_the_hub_file_system(staged, tmp_path, monkeypatch):
    """hf://user/name goes through the same code with huggingface_hub's file system; here a local stand-in holds
    the repository at datasets/user/people, as HfFileSystem names it."""
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    import datagen.shards

    shutil.copytree(staged, tmp_path / "hub/datasets/user/people")
    monkeypatch.setattr(
        datagen.shards, "hub_filesystem", lambda: DirFileSystem(str(tmp_path / "hub"), LocalFileSystem())
    )
    hub = open_parquet("hf://user/people", "train", seed=5)
    local = open_parquet(str(staged), "train", seed=5)
    assert hub.name(0) == local.name(0) == f"data/{first_shard(staged).name}"
    for index in (0, 17, 29):
        np.testing.assert_array_equal(hub.row(index)[0], local.row(index)[0])
        np.testing.assert_array_equal(hub.row(index)[1], local.row(index)[1])
    result = run_train(config(tmp_path / "run", [Source("hf://user/people", "train")], [], workers=0, max_steps=2))
    assert result.step == 2


def test_shards_without_a_matte_or_the_split_are_refused_with_what_was_found(staged, tmp_path):
    import pyarrow.parquet as pq

    with pytest.raises(FileNotFoundError, match=r"no Parquet files of split 'validation' \(splits found: train\)"):
        folder = tmp_path / "only-train"
        folder.mkdir()
        shutil.copy(first_shard(staged), folder)
        open_parquet(str(folder), "validation")
    table = pq.read_table(first_shard(staged)).drop_columns(["alpha"])
    (tmp_path / "no-matte").mkdir()
    pq.write_table(table, tmp_path / "no-matte/train-0.parquet")
    with pytest.raises(ValueError, match=r"no matte column \(alpha, mask, matte, gt, label\) among its image columns"):
        open_parquet(str(tmp_path / "no-matte"), "train")
    table = pq.read_table(first_shard(staged)).rename_columns(
        ["id", "image", "mask", "width", "height", "source", "license"]
    )
    (tmp_path / "mask").mkdir()
    pq.write_table(table, tmp_path / "mask/train-0.parquet")
    assert open_parquet(str(tmp_path / "mask"), "train").matte_column == "mask", "pull's other layouts work too"


def test_an_unreadable_row_is_skipped_and_recorded_as_a_file_is(staged, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "broken"
    folder.mkdir()
    for shard in sorted((staged / "data").glob("train-*.parquet")):
        table = pq.read_table(shard)
        if shard == first_shard(staged):
            images = table.column("image").to_pylist()
            images[0] = {"bytes": images[0]["bytes"][:200], "path": images[0]["path"]}  # a truncated PNG
            table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images))
        pq.write_table(table, folder / shard.name)
    out = tmp_path / "run"
    run_train(config(out, [Source(str(folder), "train")], [], workers=0, max_steps=12, max_bad_samples=5))
    bad = [json.loads(line) for line in (out / "bad_samples.jsonl").read_text().splitlines()]
    assert [row["path"] for row in bad] == [f"{folder}/{first_shard(staged).name}:group 0:row 0"], bad
    assert "truncated" in bad[0]["reason"]
