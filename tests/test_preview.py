import numpy as np
from click.testing import CliRunner

from datagen.cli import cli
from datagen.io import read_image
from datagen.preview import LABEL_PX, checkerboard, choose_samples
from datagen.records import write_sample

GAP = 4


def test_preview_has_one_row_per_sample(dataset_dir, tmp_path):
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(cli, ["preview", str(dataset_dir), "-o", str(out), "-n", "2", "--tile-px", "64"])
    assert result.exit_code == 0, result.output
    sheet = read_image(out)
    assert sheet.shape == (2 * (64 + LABEL_PX + GAP) + GAP, 3 * (64 + GAP) + GAP, 3)
    # The middle tile is the alpha: grey, and not empty.
    alpha_tile = sheet[GAP : GAP + 64, 2 * GAP + 64 : 2 * GAP + 128]
    assert np.array_equal(alpha_tile[..., 0], alpha_tile[..., 1]) and alpha_tile.max() > 200


def test_preview_asks_for_more_than_there_is(dataset_dir, tmp_path):
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(cli, ["preview", str(dataset_dir), "-o", str(out), "--split", "test", "-n", "16"])
    assert result.exit_code == 0 and "(2 samples)" in result.output


def test_same_seed_same_choice(tmp_path, person):
    for index in range(10):
        write_sample(tmp_path, "train", f"s{index}", image=person[..., :3], alpha=person[..., 3])
    ids = lambda seed: [s.id for s in choose_samples(tmp_path, 4, None, seed)]  # noqa: E731
    assert ids(3) == ids(3) and len(set(ids(3))) == 4
    assert any(ids(seed) != ids(3) for seed in range(4, 10))


def test_foreground_pool_rows_have_two_tiles(tmp_path, person):
    write_sample(tmp_path, "train", "f", foreground=person, alpha=person[..., 3])
    out = tmp_path / "pool.png"
    result = CliRunner().invoke(cli, ["preview", str(tmp_path), "-o", str(out), "--tile-px", "64"])
    assert result.exit_code == 0, result.output
    assert read_image(out).shape[1] == 2 * (64 + GAP) + GAP


def test_preview_of_no_dataset_fails_clearly(tmp_path):
    result = CliRunner().invoke(cli, ["preview", str(tmp_path), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no split with a metadata.jsonl" in result.output


def test_checkerboard_alternates():
    board = checkerboard(32, 32, 16)
    assert board[0, 0, 0] != board[0, 16, 0] and board[0, 0, 0] == board[16, 16, 0]


def test_pushed_shards_preview_as_their_directory(dataset_dir, tmp_path, person):
    """What push writes (a folder of Parquet shards; hf://user/name is the same code) is previewed in place: every
    train row drawn gives the directory's own sheet, a foreground pool's rows their two tiles, a broken row a
    crossed-out tile."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datagen.hub import PushConfig, push

    staged = tmp_path / "staged"
    push(PushConfig(dataset_dir, "user/demo", dry_run=staged, max_shard_size="10KB"))
    sheets = {}
    for name, root in (("dir", dataset_dir), ("parquet", staged)):
        args = ["preview", str(root), "-o", str(tmp_path / f"{name}.png"), "-n", "9", "--tile-px", "64"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0 and "(3 samples)" in result.output, result.output
        sheets[name] = read_image(tmp_path / f"{name}.png")
    np.testing.assert_array_equal(sheets["parquet"], sheets["dir"])

    pool = tmp_path / "pool"
    write_sample(pool, "train", "f", foreground=person, alpha=person[..., 3])
    push(PushConfig(pool, "user/pool", dry_run=tmp_path / "pool-staged"))
    result = CliRunner().invoke(cli, ["preview", str(tmp_path / "pool-staged"), "-o", str(tmp_path / "p.png")])
    assert result.exit_code == 0 and read_image(tmp_path / "p.png").shape[1] == 2 * (256 + GAP) + GAP

    shard = sorted((staged / "data").glob("test-*.parquet"))[0]  # the first test row, drawn first
    table = pq.read_table(shard)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    columns["alpha"][0] = {"bytes": b"\x89PNG\r\n\x1a\n broken", "path": "x.png"}
    pq.write_table(pa.Table.from_pydict(columns, schema=table.schema), shard)
    args = ["preview", str(staged), "--split", "test", "-o", str(tmp_path / "t.png"), "--tile-px", "64"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    sheet = read_image(tmp_path / "t.png")
    assert sheet.shape[1] == 3 * (64 + GAP) + GAP, "the other row still has its three tiles"
    from datagen.preview import _fit, unreadable_tile

    crossed = sheet[GAP : GAP + 64, GAP : GAP + 64]
    np.testing.assert_array_equal(crossed, _fit(unreadable_tile(), 64), "a crossed-out tile for the broken row")
