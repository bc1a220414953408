import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from datagen import records
from datagen.io import read_alpha, read_image
from datagen.records import (
    ID_PATTERN,
    SPLITS,
    ResumeState,
    append_row,
    iter_samples,
    read_rows,
    reset_dataset,
    sanitize_id,
    seeded_id,
    unique_ids,
    write_sample,
)
from tests.conftest import write_demo_dataset

REPO = Path(__file__).resolve().parents[1]


def test_ids_are_sanitized_deterministic_and_unique():
    names = ["1#Accessories#1#Bag#1", "1 Accessories 1 Bag 1", "p_015cd10e", ".hidden"]
    ids = dict(zip(names, unique_ids("dis5k", names).to_pylist()))
    assert len(set(ids.values())) == len(names)
    assert all(ID_PATTERN.match(i) for i in ids.values())
    assert ids["p_015cd10e"] == "dis5k-p_015cd10e"
    reverse = names[::-1]
    assert dict(zip(reverse, unique_ids("dis5k", reverse).to_pylist())) == ids, "ids must not depend on order"
    assert unique_ids("dis5k", names[:1]).to_pylist() == ["dis5k-1_Accessories_1_Bag_1"]
    # keys tell samples apart, names make the ids: one stem in two folders gets two ids, each from its own key
    keys, stems = ["a/x.jpg", "b/x.jpg", "c/y.jpg"], ["x", "x", "y"]
    both = unique_ids("f", keys, stems).to_pylist()
    assert both[2] == "f-y" and len(set(both)) == 3 and all(i.startswith("f-x-") for i in both[:2])
    assert unique_ids("f", keys[1:], stems[1:]).to_pylist()[0] == "f-x", "alone, a key needs no suffix"
    assert unique_ids("f", keys[::-1], stems[::-1]).to_pylist() == both[::-1]
    assert seeded_id("synth", 3, 12) == "synth-s3-0000012"
    with pytest.raises(ValueError):
        sanitize_id("###")


@pytest.mark.parametrize("collide", [False, True], ids=["hashes", "colliding hashes"])
def test_string_index_and_repeats_answer_as_arrow_and_python_do(monkeypatch, collide):
    """`index_in` and `repeated` match by 64-bit hashes and then compare strings: they answer what Arrow's hash table
    and a Counter answer, batch after batch, also when most hashes collide (a hash of three values)."""
    import pyarrow.compute as pc

    monkeypatch.setattr(records, "STRING_BATCH", 7)  # many batches, a batch ending inside a run of one hash
    if collide:
        monkeypatch.setattr(records, "hash", lambda value: len(value or "") % 3, raising=False)
    rng = np.random.default_rng(0)
    words = [f"w{i}" * (1 + i % 4) for i in rng.integers(0, 200, 300)]
    value_set = pa.array([*words[:150], None])  # repeats: the first occurrence is the answer
    values = pa.chunked_array([pa.array(words[100:]), pa.array([None, "", "absent", words[0]])])
    expected = pc.index_in(values, value_set=value_set, skip_nulls=True).fill_null(-1).to_numpy()
    found = records.index_in(values, value_set)
    assert found.dtype == np.int64 and (found == expected).all()
    assert (found >= 0).sum() > 50 and (found < 0).sum() > 50  # both answers are asked
    counts = Counter(words)
    assert records.repeated(pa.array(words)).tolist() == [counts[word] > 1 for word in words]
    assert not records.repeated(pa.array(sorted(counts))).any()
    assert (records.index_in(pa.array([], pa.string()), value_set) == []).all()
    assert (records.index_in(values, pa.array([], pa.string())) == -1).all()
    with pytest.raises(TypeError, match="binary"):
        records.index_in(values, value_set.cast(pa.binary()))  # a str never equals bytes: refused, not all -1


def test_string_column_builds_the_array_pyarrow_builds():
    column = records.StringColumn()
    column.extend(["a", "bé"])
    column.extend(["x"], prefix="p/")
    column.extend([])
    column.extend(["ü"], prefix="é/")  # lengths in bytes, not characters
    column.extend_array(pa.array(["q", "rs", "", "tü"]).slice(1, 3))  # an offset into the buffers
    column.extend_array(pa.array([], pa.string()))
    assert column.finish().equals(pa.array(["a", "bé", "p/x", "é/ü", "rs", "", "tü"]))
    assert len(column) == 0, "finish starts the column anew"
    with pytest.raises(UnicodeEncodeError):
        column.extend(["ok", "\udcff"])  # a file name that is not UTF-8
    assert len(column) == 0, "a refused batch adds nothing"
    column.extend(["a"])
    copy = column.copy()
    copy.extend_bytes([b"\xff"])
    assert copy.finish(binary=True).equals(pa.array([b"a", b"\xff"], pa.binary()))
    assert column.finish().to_pylist() == ["a"]


def test_sample_ids_made_when_asked_answer_as_their_column(tmp_path, monkeypatch):
    """`SampleIds` (what a no-op import asks, a batch at a time) gives the ids `unique_ids` gives, and the resume check
    answers alike for both, over two splits, for ids read by Arrow and for a Python set."""
    monkeypatch.setattr(records, "STRING_BATCH", 2)
    keys, stems = ["a/x.jpg", "b/x.jpg", "c/y.jpg", "d/z.jpg", "e/w.jpg"], ["x", "x", "y", "z", "w"]
    ids = records.SampleIds("f", keys, stems)
    column = unique_ids("f", keys, stems).to_pylist()
    assert ids.column().to_pylist() == column and column[0].startswith("f-x-") and column[2] == "f-y"
    assert ids.take(np.array([4, 1, 0])) == [column[4], column[1], column[0]]
    done = {"train": records.IdSet(arrow=pa.array([column[0], column[3]])), "validation": records.IdSet({column[4]})}
    state = ResumeState(tmp_path, {**done, "test": records.IdSet()}, {})
    splits = pa.array(["train", "train", "validation", "train", "validation"])
    assert state.done_mask(splits, ids).tolist() == [True, False, False, True, True]
    assert state.done_mask(splits, pa.array(column)).tolist() == [True, False, False, True, True]


def test_write_then_read_round_trip(tmp_path, person):
    rgb = person[..., :3]
    row = write_sample(
        tmp_path, "train", "a-1", image=rgb, alpha=person[..., 3], metadata={"source": "test", "seed": 5}
    )
    assert row["file_name"] == "im/a-1.jpg" and row["alpha_file_name"] == "gt/a-1.png"
    assert (row["width"], row["height"]) == (64, 96)
    (sample,) = iter_samples(tmp_path)
    assert sample.row == row
    np.testing.assert_array_equal(read_alpha(sample.path("alpha")), person[..., 3])
    assert np.abs(read_image(sample.path("image")).astype(int) - rgb).mean() < 3  # JPEG q95
    assert set(ResumeState.read(tmp_path).done["train"]) == {"a-1"}


def test_png_image_and_foreground_pool(tmp_path, person):
    write_sample(tmp_path, "train", "p", image=person[..., :3], image_format="png", alpha=person[..., 3])
    np.testing.assert_array_equal(read_image(tmp_path / "train/im/p.png"), person[..., :3])
    row = write_sample(tmp_path, "validation", "f", foreground=person, alpha=person[..., 3])
    assert "file_name" not in row and row["foreground_file_name"] == "fg/f.png"
    (sample,) = iter_samples(tmp_path, "validation")
    assert sample.is_foreground_only


def test_bad_arguments_fail_clearly(tmp_path, person):
    with pytest.raises(ValueError, match="invalid id"):
        write_sample(tmp_path, "train", "a b", image=person[..., :3], alpha=person[..., 3])
    with pytest.raises(ValueError, match="unknown split"):
        write_sample(tmp_path, "val", "a", image=person[..., :3], alpha=person[..., 3])
    with pytest.raises(ValueError, match="sizes must match"):
        write_sample(tmp_path, "train", "a", image=person[:10, :, :3], alpha=person[..., 3])
    with pytest.raises(ValueError, match="uint8"):
        write_sample(tmp_path, "train", "a", image=person[..., :3], alpha=person[..., 3] / 255.0)
    assert not (tmp_path / "train").exists()


def test_interrupted_write_leaves_no_complete_sample(tmp_path, person, monkeypatch):
    real_write = records.write_atomic
    calls = []

    def crash_after_first_file(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the image and the alpha")
        real_write(path, data)

    monkeypatch.setattr(records, "write_atomic", crash_after_first_file)
    with pytest.raises(KeyboardInterrupt):
        write_sample(tmp_path, "train", "x", image=person[..., :3], alpha=person[..., 3])
    monkeypatch.setattr(records, "write_atomic", real_write)
    assert (tmp_path / "train/im/x.jpg").exists(), "the simulation must have written the first file"
    assert set(ResumeState.read(tmp_path).done["train"]) == set()
    assert list(iter_samples(tmp_path)) == []

    write_sample(tmp_path, "train", "x", image=person[..., :3], alpha=person[..., 3])
    assert [s.id for s in iter_samples(tmp_path)] == ["x"]


def test_a_row_whose_file_vanished_is_not_complete(tmp_path, person):
    write_sample(tmp_path, "train", "x", image=person[..., :3], alpha=person[..., 3])
    (tmp_path / "train/gt/x.png").unlink()
    assert set(ResumeState.read(tmp_path).done["train"]) == set()


def test_interrupted_row_append_is_dropped_and_repaired(tmp_path, person):
    write_sample(tmp_path, "train", "a", image=person[..., :3], alpha=person[..., 3])
    path = tmp_path / "train/metadata.jsonl"
    with open(path, "a") as file:
        file.write('{"id": "b", "file_na')  # killed mid-append
    assert [row["id"] for row in read_rows(tmp_path, "train")] == ["a"]
    append_row(path, {"id": "c"})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "c"]


def test_bad_metadata_line_names_file_and_line(tmp_path, person):
    write_sample(tmp_path, "train", "a", image=person[..., :3], alpha=person[..., 3])
    with open(tmp_path / "train/metadata.jsonl", "a") as file:
        file.write("oops\n")
    with pytest.raises(records.MetadataError, match=r"metadata.jsonl:2"):
        read_rows(tmp_path, "train")


def test_reset_removes_only_contract_files(tmp_path, person):
    write_sample(tmp_path, "train", "a", image=person[..., :3], alpha=person[..., 3])
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "run.json").write_text("{}")
    reset_dataset(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_load_dataset_reads_the_contract(tmp_path):
    import datasets

    root = tmp_path / "ds"
    rows = write_demo_dataset(root, n_train=3, n_test=2, trimap=True)
    loaded = datasets.load_dataset(str(root), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "test"}
    assert loaded["train"].num_rows == 3 and loaded["test"].num_rows == 2
    features = loaded["train"].features
    for column in ("image", "alpha", "trimap"):
        assert isinstance(features[column], datasets.Image), column
    for column in ("id", "source", "license", "width", "height"):
        assert column in features, column
    by_id = {row["id"]: row for row in rows}
    for example in loaded["test"]:
        expected = read_alpha(root / "test" / by_id[example["id"]]["alpha_file_name"])
        np.testing.assert_array_equal(np.asarray(example["alpha"]), expected)
        assert example["image"].size == (example["width"], example["height"])


def test_import_datasets_from_repo_root_gets_hugging_face():
    assert not (REPO / "datasets" / "__init__.py").exists()
    code = "import datasets, sys; print(datasets.__file__); print(hasattr(datasets, 'load_dataset'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    path, has_loader = out.stdout.split()
    assert has_loader == "True"
    assert Path(path).resolve().parent != (REPO / "datasets").resolve()


def test_cli_import_does_not_load_torch():
    code = (
        "import sys, datagen.cli; heavy = {'torch', 'diffusers', 'datasets', 'transformers', 'cv2'} & "
        "set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dependencies_point_one_way():
    """ormbg never reaches into datagen's command line; inference does not load the training augmentations; the
    compositor and the importers do not import each other (the alpha primitives and file-name rules sit below)."""
    import ast

    for package in ("ormbg", "datagen/compose", "datagen/importers"):
        for path in (REPO / package).rglob("*.py"):
            imported = {
                node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names
                if not isinstance(node, ast.ImportFrom) or node.module
            }
            forbidden = {
                "ormbg": "datagen.cli",
                "datagen/compose": "datagen.importers",
                "datagen/importers": "datagen.compose",
            }
            assert not any(name and name.startswith(forbidden[package]) for name in imported), (path, imported)
    code = "import sys, ormbg.infer; print('albumentations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_background_rows_have_no_alpha(tmp_path, background):
    import datasets
    from datagen.inspect import inspect_dataset
    from datagen.preview import write_preview

    row = write_sample(tmp_path, "train", "bg-0", image=background, alpha=None, metadata={"source": "test"})
    assert "alpha_file_name" not in row and (row["height"], row["width"]) == background.shape[:2]
    (sample,) = iter_samples(tmp_path)
    assert sample.is_background and not sample.is_foreground_only
    assert inspect_dataset(tmp_path).errors == []
    assert write_preview(tmp_path, tmp_path / "sheet.png") == 1
    loaded = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / "cache"), split="train")
    assert loaded[0]["image"].size == (background.shape[1], background.shape[0])
    with pytest.raises(ValueError, match="background"):
        write_sample(tmp_path, "train", "bad", image=background, alpha=None, trimap=background[..., 0])


def test_a_pool_stage_takes_its_items_as_the_workers_go():
    """map_items on a pool keeps a bounded window in flight and gives the results in order: Executor.map submits
    every item before the first result (a million jobs made, pickled and queued at once)."""
    from datagen.stage import CHUNKS_PER_WORKER, map_items

    taken = []

    class Counted:  # sized, as a stage's jobs are; records how far it was read
        def __len__(self) -> int:
            return 1000

        def __iter__(self):
            for item in range(1000):
                taken.append(item)
                yield -item

    results = map_items(abs, Counted(), workers=2, chunksize=2)
    first = next(results)
    assert first == 0 and len(taken) <= (CHUNKS_PER_WORKER * 2 + 1) * 2, len(taken)
    assert [first, *results] == list(range(1000))


def test_pool_workers_exit_when_their_parent_is_killed(tmp_path):
    """A run killed with SIGKILL cannot shut its pool down: its workers notice and exit within seconds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from datagen.io import pid_alive

    script = (
        "import os, sys, time\n"
        "from datagen.parallel import process_pool\n"
        "pool = process_pool(2)\n"
        "pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
        "print(' '.join(map(str, pids)), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert workers and all(pid_alive(pid) for pid in workers)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(pid_alive(pid) and not _zombie(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(pid_alive(pid) and not _zombie(pid) for pid in workers), "workers outlived their parent"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_row_appended_while_update_rows_replaces_the_file_is_kept(tmp_path):
    """An appender blocked on the lock of the file update_rows is replacing must append to the new file (it used to
    append to the replaced one, and its row was lost)."""
    import threading
    import time

    from datagen.records import append_row, metadata_path, read_rows, update_rows

    root = tmp_path / "ds"
    append_row(metadata_path(root, "train"), {"id": "a"})
    entered = threading.Event()

    def slow_update(row):
        entered.set()
        time.sleep(0.5)  # the appender starts and blocks on the lock meanwhile
        return {"seen": True}

    updater = threading.Thread(target=update_rows, args=(root, "train", slow_update))
    updater.start()
    entered.wait()
    appender = threading.Thread(target=append_row, args=(metadata_path(root, "train"), {"id": "b"}))
    appender.start()
    updater.join()
    appender.join()
    assert [row["id"] for row in read_rows(root, "train")] == ["a", "b"]


def test_update_rows_streams_and_replaces_the_file_only_when_a_row_changed(tmp_path):
    from datagen.records import append_row, metadata_path, read_rows, update_rows

    root = tmp_path / "ds"
    path = metadata_path(root, "train")
    for index in range(5):
        append_row(path, {"id": f"s{index}", "n": index})
    inode = path.stat().st_ino
    assert update_rows(root, "train", lambda row: {"n": row["n"]}) == 0
    assert path.stat().st_ino == inode and sorted(p.name for p in path.parent.iterdir()) == ["metadata.jsonl"]
    assert update_rows(root, "train", lambda row: {"odd": True} if row["n"] % 2 else {"n": None}) == 5
    assert read_rows(root, "train") == [{"id": "s0"}, {"id": "s1", "n": 1, "odd": True}, {"id": "s2"},
                                        {"id": "s3", "n": 3, "odd": True}, {"id": "s4"}]  # fmt: skip
    with open(path, "a") as file:
        file.write("{not json\n")
        file.write('{"id": "s5"}\n')
    text = path.read_bytes()
    with pytest.raises(records.MetadataError, match="metadata.jsonl:6"):
        update_rows(root, "train", lambda row: {"seen": True})
    assert path.read_bytes() == text and sorted(p.name for p in path.parent.iterdir()) == ["metadata.jsonl"]


def _mixed_split(root: Path, person: np.ndarray) -> None:
    """A split with what a reader must skip: a vanished file, a directory where a file should be, a rejected row,
    a foreground-only row, a row without files, a symbolic link that counts as its file, and a stray file whose name
    is not UTF-8 (Arrow cannot hold it: the listing used to raise UnicodeEncodeError)."""
    for index in range(6):
        write_sample(root, "train", f"s{index}", image=person[..., :3], alpha=person[..., 3])
    write_sample(root, "train", "fg-only", foreground=person, alpha=person[..., 3])
    append_row(root / "train/metadata.jsonl", {"id": "no-files", "file_name": "", "alpha_file_name": None})
    (root / "train/gt/s1.png").unlink()
    (root / "train/im/s2.jpg").unlink()
    (root / "train/im/s2.jpg").mkdir()
    (root / "train/gt/s3.png").rename(root / "train/gt/elsewhere.png")
    (root / "train/gt/s3.png").symlink_to(root / "train/gt/elsewhere.png")
    records.set_rejected(root, "s4", "blurry")
    (root / os.fsdecode(b"train/im/stray-caf\xe9.jpg")).write_bytes(b"")  # a name that is not UTF-8: listed past


@pytest.mark.parametrize("listing_min", [1, 10**9], ids=["listed", "stat-ed"])
def test_arrow_reading_finds_the_samples_iter_samples_finds(tmp_path, person, monkeypatch, listing_min):
    monkeypatch.setattr(records, "LISTING_MIN", listing_min)
    monkeypatch.setattr(records, "ARROW_MIN_BYTES", 0)  # ResumeState reads this small file by Arrow too
    _mixed_split(tmp_path, person)
    table = records.file_table(tmp_path, "train")
    assert table.column("id").to_pylist() == [row["id"] for row in read_rows(tmp_path, "train")]
    complete = records.complete_mask(f"{tmp_path}/train/", table)
    found = [i for i, ok in zip(table.column("id").to_pylist(), complete) if ok]
    assert found == [s.id for s in iter_samples(tmp_path, "train", include_rejected=True)]
    assert found == ["s0", "s3", "s4", "s5", "fg-only", "no-files"]
    ids = pa.array([*table.column("id").to_pylist(), "not-a-sample"])
    expected = [i in found for i in ids.to_pylist()]
    state = ResumeState.read(tmp_path)  # asked a column at a time (done_mask) while its ids are still Arrow
    assert state.done_mask(pa.array(["train"] * len(ids)), ids).tolist() == expected
    assert set(state.done["train"]) == set(found) and set(state.rowed["train"]) == set(table.column("id").to_pylist())
    monkeypatch.setattr(records, "ARROW_MIN_BYTES", 1 << 30)  # line by line, as a small dataset is read
    by_lines = ResumeState.read(tmp_path)
    assert by_lines.done_mask(pa.array(["train"] * len(ids)), ids).tolist() == expected
    for split in SPLITS:
        assert set(by_lines.done[split]) == set(state.done[split]) and set(by_lines.rowed[split]) == set(
            state.rowed[split]
        )

    from ormbg.data import Source, list_samples

    pairs = list_samples(Source(str(tmp_path), "train"))
    folder = f"{tmp_path}/train/"
    assert [pairs[i] for i in range(len(pairs))] == [
        (folder + f"im/{i}.jpg", folder + f"gt/{i}.png") for i in ("s0", "s3", "s5")
    ]


def test_metadata_arrow_cannot_read_alike_is_read_row_by_row(tmp_path, person, monkeypatch):
    monkeypatch.setattr(records, "ARROW_MIN_BYTES", 0)  # ResumeState tries Arrow on this small file too
    write_sample(tmp_path, "train", "a", image=person[..., :3], alpha=person[..., 3])
    path = tmp_path / "train/metadata.jsonl"
    text = path.read_text()
    cases = {
        text + "\n" + '{"id": "b"}\n': ["a", "b"],  # a blank line
        text + '{"id": "b", "file_na': ["a"],  # an interrupted append
        text + '{"id": "b", "v": NaN, "w": [1, {"x": "y"}]}\n': ["a", "b"],
    }
    for content, ids in cases.items():
        path.write_text(content)
        assert records.file_table(tmp_path, "train").column("id").to_pylist() == ids
        assert [row["id"] for row in read_rows(tmp_path, "train")] == ids
        assert set(ResumeState.read(tmp_path).rowed["train"]) == set(ids)
    bad = {
        '{"id": "b"} {"id": "c"}\n': "not JSON",  # two objects on one line
        '{"file_name": "im/b.jpg"}\n': "has no string 'id'",
        '{"id": 3}\n': "has no string 'id'",
        "[1, 2]\n": "not a JSON object",
        '{"id": "b", "file_name": 3}\n': "file_name is 3, not a string",
    }
    for line, message in bad.items():
        path.write_text(text + line)
        with pytest.raises(records.MetadataError, match=rf"metadata.jsonl:2: {message}"):
            records.file_table(tmp_path, "train")
        if "not a string" not in message:  # ResumeState reads ids and files as iter_rows does
            with pytest.raises(records.MetadataError, match=rf"metadata.jsonl:2: {message}"):
                ResumeState.read(tmp_path)
    assert records.file_table(tmp_path, "validation").num_rows == 0


@pytest.mark.parametrize("arrow_min_bytes", [0, 1 << 30], ids=["arrow", "lines"])
def test_seeded_done_reads_the_indices_out_of_the_done_ids(tmp_path, monkeypatch, arrow_min_bytes):
    """compose and synth ask which of their indices are done (no set of a million ids): exactly the ids that
    seeded_id makes, in either split, whichever reader read them."""
    monkeypatch.setattr(records, "ARROW_MIN_BYTES", arrow_min_bytes)
    arabic_digits = "composite-s0-" + "\u0660" * 6 + "\u0661"  # decimal, but not what f"{i:07d}" writes
    ids = {
        "train": [seeded_id("composite", 0, 3), seeded_id("composite", 0, 12_345_678), "composite-s0-00000004",
                  seeded_id("composite", 1, 5), "composite-s0-000000x", arabic_digits, "xcomposite-s0-0000006",
                  seeded_id("composite", 0, 10_000_001)],
        "validation": [seeded_id("composite", 0, 7), seeded_id("composite", 0, 0)],
    }  # fmt: skip
    for split, names in ids.items():
        for sample_id in names:
            append_row(tmp_path / split / "metadata.jsonl", {"id": sample_id})
    state = ResumeState.read(tmp_path)
    done = state.seeded_done(("train", "validation"), "composite", 0, 20_000_000)
    assert np.flatnonzero(done).tolist() == [0, 3, 7, 10_000_001, 12_345_678]
    assert np.flatnonzero(state.seeded_done(("train",), "composite", 0, 10)).tolist() == [3]
    assert state.seeded_done(("validation",), "composite", 1, 10).sum() == 0


def test_cache_batches_read_what_parse_metadata_reads_and_leave_out_bad_lines(tmp_path):
    """A cache file is read by Arrow when it can and line by line otherwise, to the same rows (a reader takes each id's
    last one); a line that is not JSON, lacks a column or holds a value of another type is left out (a cache: measured
    again)."""
    import pyarrow as pa

    from datagen.records import cache_batches

    def last_rows(path):
        return {row["id"]: row for batch in cache_batches(path, schema) for row in batch.to_pylist()}

    schema = pa.schema([("id", pa.string()), ("size", pa.int64()), ("share", pa.float64())])
    good = [{"id": "a", "size": 3, "share": 0.5}, {"id": "b", "size": 4, "share": 1}]
    good.append({"id": "a", "size": 5, "share": 0})
    path = tmp_path / "cache.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in good))
    batches = list(cache_batches(path, schema))
    expected = pa.table({"id": ["a", "b", "a"], "size": [3, 4, 5], "share": [0.5, 1.0, 0.0]}, schema=schema)
    assert pa.Table.from_batches(batches).equals(expected)
    expected = {"a": {"id": "a", "size": 5, "share": 0.0}, "b": {"id": "b", "size": 4, "share": 1.0}}
    assert last_rows(path) == expected and last_rows(tmp_path / "none.jsonl") == {}
    bad = ['{"id": "c", "size": "x", "share": 0.1}', '{"id": "d", "share": 0.1}', "not json"]
    bad += ['{"id": "e", "size": true, "share": 0.1}', '{"id": 7, "size": 1, "share": 0.1}']
    path.write_text("".join(json.dumps(row) + "\n" for row in good) + "".join(line + "\n" for line in bad) + '{"id"')
    assert last_rows(path) == expected
    path.write_text("".join(json.dumps(row) + "\n" for row in good) + '{"id": "d", "share": 0.1}\n')
    assert last_rows(path) == expected, "a row without a column, read by Arrow (a null): left out"


@pytest.mark.parametrize("ids", [None, "as read", "other order", "fewer"])
def test_forget_derived_drops_a_kind_only_when_one_of_its_files_is_gone(tmp_path, person, ids):
    """The fg/ of `datagen foreground` (rows with foreground_method) named fg/<id>.png or otherwise: its columns leave
    every row once one marked row's file is gone; kept while all are there. The same with the split's ids given as a
    StringIndex (refine's, read before): in file order, or not those rows (read on their own then)."""
    import pyarrow as pa

    from datagen.records import StringIndex, file_table, forget_derived, update_rows

    def forget():
        if ids is None:
            return forget_derived(tmp_path, "train")
        order = file_table(tmp_path, "train", ()).column("id").to_pylist()
        order = {"as read": order, "other order": order[::-1], "fewer": order[:2]}[ids]
        return forget_derived(tmp_path, "train", StringIndex(pa.array(order, pa.string())))

    for name in ("a", "b", "c"):
        write_sample(tmp_path, "train", name, image=person[..., :3], alpha=person[..., 3], foreground=person)
    (tmp_path / "train/fg/c.png").rename(tmp_path / "train/fg/other-c.png")

    def mark(row):
        name = "fg/other-c.png" if row["id"] == "c" else f"fg/{row['id']}.png"
        return {"foreground_file_name": name, "foreground_method": "ml"}

    update_rows(tmp_path, "train", mark)
    before = read_rows(tmp_path, "train")
    assert forget() == 0 and read_rows(tmp_path, "train") == before
    for gone in ("fg/other-c.png", "fg/a.png", "fg/b.png"):
        (tmp_path / "train" / gone).rename(tmp_path / "train" / f"{gone}.kept")
        assert forget() == 3, gone
        columns = {"foreground_method", "foreground_file_name"}
        assert not any(columns & row.keys() for row in read_rows(tmp_path, "train"))
        (tmp_path / "train" / f"{gone}.kept").rename(tmp_path / "train" / gone)
        update_rows(tmp_path, "train", mark)


@pytest.mark.parametrize("arrow_min", [0, 1 << 30], ids=["arrow", "line by line"])
def test_a_resume_check_leaves_out_the_files_in_place_stages_added(tmp_path, person, monkeypatch, arrow_min):
    """refine's mask/ and refine_trimap/, and a foreground-ed fg/ (foreground_method set), are not the files of the
    stage that wrote the row: one gone does not make that stage write the row again (over the alpha refine replaced);
    a row's own file gone does, a synthetic person's own fg/ (no marker) included."""
    from datagen.records import update_rows

    monkeypatch.setattr(records, "ARROW_MIN_BYTES", arrow_min)
    for name in ("refined", "estimated", "own-alpha", "person"):
        extra = {"foreground": person} if name == "person" else {"image": person[..., :3]}
        write_sample(tmp_path, "train", name, alpha=person[..., 3], **extra)
    added = {
        "refined": {"mask_file_name": "mask/refined.png", "refine_trimap_file_name": "refine_trimap/refined.png"},
        "estimated": {"foreground_file_name": "fg/estimated.png", "foreground_method": "ml"},
    }
    update_rows(tmp_path, "train", lambda row: added.get(row["id"], {}))  # none of these files is on disk
    (tmp_path / "train/gt/own-alpha.png").unlink()
    state = ResumeState.read(tmp_path)
    assert [state.is_done("train", name) for name in ("refined", "estimated", "own-alpha", "person")] == [
        True, True, False, True
    ]  # fmt: skip
    (tmp_path / "train/fg/person.png").unlink()
    assert not ResumeState.read(tmp_path).is_done("train", "person")
