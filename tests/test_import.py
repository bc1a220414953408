import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import datagen.stage
from datagen import io
from datagen.cli import cli
from datagen.importers import ImportConfig, run_import
from datagen.importers import convert as convert_module
from datagen.inspect import inspect_dataset
from datagen.io import encode_jpeg, encode_png, read_alpha, read_image, write_atomic
from datagen.records import iter_samples, read_rows
from datagen.samples import draw_pair, make_p3m_tree
from tests.conftest import count_pool_processes, directory_bytes


def put(path: Path, array: np.ndarray, fmt: str | None = None, **kwargs) -> np.ndarray:
    """Write an array as an image file (format from the suffix unless `fmt`); returns the array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **kwargs)
    return array


def pair(seed: int, height: int = 40, width: int = 32):
    return draw_pair(np.random.default_rng([seed]), height, width)


def import_ok(kind, src, out, **options):
    result = run_import(kind, src, ImportConfig(out=out, progress=False, **options))
    report = inspect_dataset(out)
    assert report.ok, report.format_text()
    return result


def rows_by_original(out):
    return {row["original_path"]: row for split in ("train", "validation", "test") for row in read_rows(out, split)}


def test_p3m_counts_exact_mattes_copied_jpegs_and_load_dataset(tmp_path):
    src = make_p3m_tree(tmp_path / "P3M-10k", n_train=3, n_test=2, height=48, width=40)
    (src / "train/blurred_image/.DS_Store").write_bytes(b"junk")
    out = tmp_path / "p3m"
    result = import_ok("p3m", src, out)
    assert result.counts == {"test/P3M-500-NP": 2, "test/P3M-500-P": 2, "train": 3}
    assert result.skipped == {"hidden or system file": 1}
    for key, row in rows_by_original(out).items():
        split = "train" if key.startswith("train") else "test"
        source_mask = src / key.replace("blurred_image", "mask").replace("original_image", "mask")
        np.testing.assert_array_equal(
            read_alpha(out / split / row["alpha_file_name"]), np.asarray(Image.open(source_mask.with_suffix(".png")))
        )
        assert (out / split / row["file_name"]).read_bytes() == (src / key).read_bytes(), "JPEG copied as is"
        assert row["image_copied"] is True and row["id"] == f"p3m-{Path(key).stem}"
        assert row["trimap_source"] == ("original" if split == "test" else "generated from the alpha")
    import datasets

    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].num_rows == 3 and loaded["test"].num_rows == 4
    assert set(loaded["test"].unique("subset")) == {"P3M-500-P", "P3M-500-NP"}


def test_p3m_without_validation_folder(tmp_path):
    src = make_p3m_tree(tmp_path / "src", n_train=0, n_test=1, height=32, width=32)
    (src / "validation").rename(tmp_path / "moved")
    for subset in ("P3M-500-P", "P3M-500-NP"):
        (tmp_path / "moved" / subset).rename(src / subset)
    assert import_ok("p3m", src, tmp_path / "out").counts == {"test/P3M-500-NP": 1, "test/P3M-500-P": 1}


def test_wrong_layout_fails_at_once_naming_expected_and_found(tmp_path):
    (tmp_path / "src/photos").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["import", "p3m", str(tmp_path / "src"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "expected train/blurred_image/" in result.output and "found photos/" in result.output
    assert not (tmp_path / "out").exists()


def test_ppm100_jpeg_mattes_keep_their_values(tmp_path):
    src = tmp_path / "PPM-100"
    for index in range(2):
        image, alpha = pair(index)
        put(src / f"image/{index:04d}.jpg", image, quality=95)
        put(src / f"matte/{index:04d}.jpg", alpha, quality=90)
    out = tmp_path / "out"
    assert import_ok("ppm100", src, out).counts == {"test": 2}
    for row in read_rows(out, "test"):
        matte = np.asarray(Image.open(src / "matte" / Path(row["original_path"]).name).convert("L"))
        written = read_alpha(out / "test" / row["alpha_file_name"])
        np.testing.assert_array_equal(written, matte)
        assert len(np.unique(written)) > 10, "JPEG matte values must not be thresholded"


def test_aim500_wrapped_with_categories_usr_ignored(tmp_path):
    src = tmp_path / "download" / "AIM-500"
    for index, stem in enumerate(["o_1", "o_2"]):
        image, alpha = pair(index)
        put(src / f"original/{stem}.jpg", image)
        put(src / f"mask/{stem}.png", alpha)
        put(src / f"trimap/{stem}.png", np.full_like(alpha, 128))
        put(src / f"usr/{stem}.png", np.zeros_like(alpha))
    (src / "aim_category_type.json").write_text(
        json.dumps({"o_1.jpg": {"type": "SO", "category": "animal"}, "o_2": ["NS", "plant"]})
    )
    out = tmp_path / "out"
    assert import_ok("aim500", tmp_path / "download", out).counts == {"test": 2}
    rows = {row["id"]: row for row in read_rows(out, "test")}
    assert (rows["aim500-o_1"]["type"], rows["aim500-o_1"]["category"]) == ("SO", "animal")
    assert (rows["aim500-o_2"]["type"], rows["aim500-o_2"]["category"]) == ("NS", "plant")
    assert all("usr" not in row["original_path"] for row in rows.values())
    assert all(row["trimap_file_name"] for row in rows.values())


def test_dis5k_splits_subsets_and_sanitized_unique_ids(tmp_path):
    src = tmp_path / "DIS5K"
    names = {
        "DIS-TR": ["1#Accessories#1#Bag#1", "1 Accessories 1 Bag 1"],
        "DIS-VD": ["2#x"],
        "DIS-TE1": ["3#y"],
        "DIS-TE4": ["1#Accessories#1#Bag#1"],
    }
    for seed, (part, stems) in enumerate(names.items()):
        for stem in stems:
            image, alpha = pair(seed)
            put(src / part / "im" / f"{stem}.jpg", image)
            put(src / part / "gt" / f"{stem}.png", alpha)
    out = tmp_path / "out"
    result = import_ok("dis5k", tmp_path, out)
    assert result.counts == {"test/TE1": 1, "test/TE4": 1, "train": 2, "validation": 1}
    ids = [row["id"] for split in ("train", "validation", "test") for row in read_rows(out, split)]
    assert len(ids) == len(set(ids)) == 5
    assert "dis5k-2_x" in ids and all("#" not in i and " " not in i for i in ids)


def test_am2k_with_validation_trimaps(tmp_path):
    src = tmp_path / "AM-2k"
    for split, count in (("train", 2), ("validation", 1)):
        for index in range(count):
            image, alpha = pair(index + 10 * len(split))
            put(src / f"{split}/original/m_{index}.jpg", image)
            put(src / f"{split}/mask/m_{index}.png", alpha)
            if split == "validation":
                put(src / f"{split}/trimap/m_{index}.png", np.full_like(alpha, 128))
    out = tmp_path / "out"
    assert import_ok("am2k", src, out).counts == {"train": 2, "validation": 1}
    assert all("trimap_file_name" in row for row in read_rows(out, "validation"))


def test_folder_globs_and_rgba_cutouts(tmp_path, person):
    image, alpha = pair(1)
    put(tmp_path / "src/photos/a.png", image)
    put(tmp_path / "src/mattes/a.png", alpha)
    put(tmp_path / "src/mattes/b.png", alpha)
    out = tmp_path / "out"
    result = import_ok("folder", tmp_path / "src", out, images="photos/*", alphas="mattes/*", split="validation")
    assert result.counts == {"validation": 1} and result.skipped == {"orphan matte": 1}
    np.testing.assert_array_equal(read_alpha(out / "validation/gt/folder-a.png"), alpha)

    put(tmp_path / "humans/x/1.png", person)
    put(tmp_path / "humans/y/1.png", person)
    put(tmp_path / "humans/flat.jpg", person[..., :3])
    pool = tmp_path / "pool"
    result = import_ok("folder", tmp_path / "humans", pool)
    assert result.counts == {"train": 2} and result.skipped == {"no alpha channel": 1}
    samples = list(iter_samples(pool))
    assert all(s.is_foreground_only for s in samples) and len({s.id for s in samples}) == 2
    np.testing.assert_array_equal(io.read_foreground(samples[0].path("foreground")), person)


@pytest.mark.parametrize("matte_grid", ["upright", "raw"])
def test_exif_rotated_image_and_its_matte(tmp_path, matte_grid):
    raw_image, raw_alpha = pair(3, height=30, width=40)  # stored 40x30, shown 30x40 (orientation 6)
    src = tmp_path / "PPM-100"
    exif = Image.Exif()
    exif[io.EXIF_ORIENTATION_TAG] = 6
    put(src / "image/r.jpg", raw_image, exif=exif, quality=95)
    upright_alpha = np.rot90(raw_alpha, k=-1)
    put(src / "matte/r.png", raw_alpha if matte_grid == "raw" else np.ascontiguousarray(upright_alpha))
    out = tmp_path / "out"
    import_ok("ppm100", src, out)
    (row,) = read_rows(out, "test")
    assert (row["width"], row["height"]) == (30, 40) and row["exif_orientation"] == 6
    assert row["image_copied"] is False
    assert read_image(out / "test" / row["file_name"]).shape == (40, 30, 3)
    np.testing.assert_array_equal(read_alpha(out / "test" / row["alpha_file_name"]), upright_alpha)
    assert ("alpha rotated" if matte_grid == "raw" else "alpha kept as stored") in row["notes"]


def test_every_skip_reason_is_recorded(tmp_path):
    src = tmp_path / "PPM-100"
    image, alpha = pair(5)
    put(src / "image/good.jpg", image)
    put(src / "matte/good.png", alpha)
    put(src / "image/orphan_image.jpg", image)
    put(src / "matte/orphan_matte.png", alpha)
    (src / "image/broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    put(src / "matte/broken.png", alpha)
    put(src / "image/badmatte.jpg", image)
    (src / "matte/badmatte.png").write_bytes(encode_png(alpha)[:50])
    put(src / "image/wrongsize.jpg", image)
    put(src / "matte/wrongsize.png", np.zeros((10, 10), np.uint8))
    put(src / "image/halfsize.jpg", image)
    put(src / "matte/halfsize.png", alpha[::2, ::2])
    (src / "image/._good.jpg").write_bytes(b"resource fork")
    (src / "image/Thumbs.db").write_bytes(b"x")
    (src / "image/notes.txt").write_text("x")
    out = tmp_path / "out"
    result = import_ok("ppm100", src, out)
    assert result.counts == {"test": 2}  # good and halfsize (resized: same aspect ratio)
    expected = {
        "orphan image": 1,
        "orphan matte": 1,
        "unreadable image": 1,
        "unreadable matte": 1,
        "matte size mismatch": 1,
        "hidden or system file": 2,
        "not an image file": 1,
    }
    assert dict(result.skipped) == expected
    record = json.loads((out / "run.json").read_text())
    assert record["skipped"] == expected
    assert record["license"].startswith("mattes CC BY-NC-SA 4.0")
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert {s["path"] for s in skipped} >= {"image/broken.jpg", "image/wrongsize.jpg", "matte/orphan_matte.png"}
    resized = next(row for row in read_rows(out, "test") if row["id"] == "ppm100-halfsize")
    assert resized["notes"] == "alpha resized from 16x20"
    assert not list((out / "test/im").glob("*broken*")), "a skipped pair writes nothing"
    output = CliRunner().invoke(cli, ["import", "ppm100", str(src), "-o", str(out), "--no-progress"]).output
    assert "matte size mismatch" in output and "skipped.jsonl" in output


def test_png_sources_are_reencoded_or_kept(tmp_path):
    src = make_p3m_tree(tmp_path / "src", n_train=2, n_test=0, height=32, width=24, image_ext=".png")
    out = tmp_path / "jpg"
    import_ok("p3m", src, out)
    assert all(row["file_name"].endswith(".jpg") and not row["image_copied"] for row in read_rows(out, "train"))
    kept = tmp_path / "png"
    import_ok("p3m", src, kept, keep_png=True)
    for row in read_rows(kept, "train"):
        np.testing.assert_array_equal(
            read_image(kept / "train" / row["file_name"]), read_image(src / row["original_path"])
        )


def test_resumed_and_parallel_runs_equal_an_uninterrupted_one(tmp_path, monkeypatch):
    src = make_p3m_tree(tmp_path / "src", n_train=6, n_test=2, height=32, width=24, image_ext=".png")
    reference = tmp_path / "reference"
    run_import("p3m", src, ImportConfig(out=reference, progress=False))

    calls = []
    real = convert_module.import_pair

    def dies_on_the_fifth(job):
        calls.append(job.sample_id)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(job)

    import datagen.importers as importers

    monkeypatch.setattr(importers, "import_pair", dies_on_the_fifth)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run_import("p3m", src, ImportConfig(out=resumed, progress=False))
    assert len(read_rows(resumed, "train")) == 4
    monkeypatch.setattr(importers, "import_pair", real)
    result = run_import("p3m", src, ImportConfig(out=resumed, progress=False))
    assert (result.new, result.existing) == (6, 4)
    assert directory_bytes(resumed) == directory_bytes(reference)

    parallel = tmp_path / "parallel"
    started = count_pool_processes(monkeypatch, datagen.stage)
    run_import("p3m", src, ImportConfig(out=parallel, workers=2, progress=False))
    assert started == [2], "two worker processes"
    assert directory_bytes(parallel) == directory_bytes(reference)

    again = run_import("p3m", src, ImportConfig(out=parallel, progress=False))
    assert (again.new, again.existing) == (0, 10)


def test_shards_fill_one_directory(tmp_path):
    src = make_p3m_tree(tmp_path / "src", n_train=5, n_test=1, height=32, width=24)
    out = tmp_path / "out"
    for index in range(3):
        run_import("p3m", src, ImportConfig(out=out, shard=(index, 3), progress=False))
    assert _counts(out) == {"train": 4, "validation": 1, "test": 2}  # validation: the 5% held out by name
    assert inspect_dataset(out).ok
    assert (out / "run.shard-2-of-3.json").is_file()
    with pytest.raises(ValueError, match="overwrite"):
        ImportConfig(out=out, shard=(0, 2), overwrite=True)


def _counts(out):
    return {split: len(read_rows(out, split)) for split in ("train", "validation", "test") if read_rows(out, split)}


def test_overwrite_starts_over(tmp_path):
    src = make_p3m_tree(tmp_path / "src", n_train=2, n_test=0, height=32, width=24)
    out = tmp_path / "out"
    run_import("p3m", src, ImportConfig(out=out, progress=False))
    write_atomic(out / "train/im/stray.jpg", encode_jpeg(np.zeros((4, 4, 3), np.uint8)))
    result = run_import("p3m", src, ImportConfig(out=out, overwrite=True, progress=False))
    assert (result.new, result.existing) == (2, 0)
    assert not (out / "train/im/stray.jpg").exists()


def test_trimap_from_alpha_marks_soft_pixels_unknown(person):
    from datagen.alpha import trimap_from_alpha

    alpha = person[..., 3]
    trimap = trimap_from_alpha(alpha, radius_px=2)
    assert set(np.unique(trimap)) == {0, 128, 255}
    soft = (alpha > 0) & (alpha < 255)
    assert (trimap[soft] == 128).all()
    assert (trimap[trimap == 255] == 255).all() and (alpha[trimap == 255] == 255).all()
    assert (alpha[trimap == 0] == 0).all()


def test_foreground_pool_loads_with_datasets(tmp_path, person):
    import datasets

    put(tmp_path / "humans/a.png", person)
    import_ok("folder", tmp_path / "humans", tmp_path / "pool")
    loaded = datasets.load_dataset(str(tmp_path / "pool"), cache_dir=str(tmp_path / "cache"))
    example = loaded["train"][0]
    np.testing.assert_array_equal(np.asarray(example["foreground"]), person)
    np.testing.assert_array_equal(np.asarray(example["alpha"]), person[..., 3])


def test_palette_files_truncated_png_and_rounded_matte_sizes(tmp_path, person):
    src = tmp_path / "PPM-100"
    image, alpha = pair(8, height=30, width=20)
    put(src / "image/palette.jpg", image)
    (src / "matte").mkdir()
    Image.fromarray(alpha, "L").convert("P").save(src / "matte/palette.png")  # a palette matte: its grey levels
    put(src / "image/rounded.jpg", image)
    bigger = np.asarray(Image.fromarray(alpha).resize((27, 40)))  # 20x30 at 4/3 with rounding: 26.7 -> 27
    put(src / "matte/rounded.png", bigger)
    png = encode_png(image)
    (src / "image/cut.png").write_bytes(png[: len(png) // 2])
    put(src / "matte/cut.png", alpha)
    put(src / "image/unreadable_matte.jpg", image)
    (src / "matte/unreadable_matte.png").write_bytes(b"\x89PNG\r\n\x1a\n nothing")
    out = tmp_path / "out"
    result = import_ok("ppm100", src, out)
    assert result.counts == {"test": 2}
    assert dict(result.skipped) == {"unreadable image": 1, "unreadable matte": 1}
    skipped = {json.loads(line)["path"] for line in (out / "skipped.jsonl").read_text().splitlines()}
    assert skipped == {"image/cut.png", "matte/unreadable_matte.png"}, "every skip path relative to SRC"
    rows = rows_by_original(out)
    np.testing.assert_array_equal(read_alpha(out / "test/gt/ppm100-palette.png"), alpha)
    assert rows["image/rounded.jpg"]["notes"] == "alpha resized from 27x40"
    assert read_alpha(out / "test/gt/ppm100-rounded.png").shape == (30, 20)

    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    Image.fromarray(person).quantize(method=Image.Quantize.FASTOCTREE).save(cutouts / "p.png")
    assert Image.open(cutouts / "p.png").mode == "P" and "transparency" in Image.open(cutouts / "p.png").info
    pool = tmp_path / "pool"
    import_ok("folder", cutouts, pool)
    (sample,) = iter_samples(pool)
    foreground = io.read_foreground(sample.path("foreground"))
    expected = np.asarray(Image.open(cutouts / "p.png").convert("RGBA"))
    np.testing.assert_array_equal(foreground, expected)
    assert foreground[..., 3].min() == 0 and foreground[..., 3].max() == 255


def test_rerun_after_a_lost_matte_restores_it_without_a_second_row(tmp_path):
    src = make_p3m_tree(tmp_path / "src", n_train=3, n_test=1, height=32, width=24)
    out = tmp_path / "out"
    import_ok("p3m", src, out)
    reference = directory_bytes(out)
    total = sum(len(read_rows(out, split)) for split in ("train", "test"))
    lost = read_rows(out, "train")[0]
    (out / "train" / lost["alpha_file_name"]).unlink()
    result = import_ok("p3m", src, out)
    assert (result.new, result.existing) == (1, total - 1)
    assert directory_bytes(out) == reference


def test_held_out_validation_is_the_same_for_any_workers_shards_and_added_files(tmp_path):
    src = make_p3m_tree(tmp_path / "src", n_train=40, n_test=1, height=24, width=16)

    def held(out):
        return sorted(row["original_path"] for row in read_rows(out, "validation"))

    one = tmp_path / "one"
    import_ok("p3m", src, one, val_fraction=0.2)
    assert 2 <= len(held(one)) <= 16 and all(path.startswith("train/") for path in held(one))
    assert not {row["id"] for row in read_rows(one, "validation")} & {row["id"] for row in read_rows(one, "train")}
    two = tmp_path / "two"
    import_ok("p3m", src, two, val_fraction=0.2, workers=2)
    assert held(two) == held(one)
    sharded = tmp_path / "sharded"
    for index in range(3):
        run_import("p3m", src, ImportConfig(out=sharded, shard=(index, 3), val_fraction=0.2, progress=False))
    assert held(sharded) == held(one)
    more = make_p3m_tree(tmp_path / "more", n_train=60, n_test=1, height=24, width=16, seed=1)
    for path in (more / "train").rglob("*.*"):  # other files added beside the first 40
        target = src / path.relative_to(more)
        if not target.exists():
            target.write_bytes(path.read_bytes())
    grown = tmp_path / "grown"
    import_ok("p3m", src, grown, val_fraction=0.2)
    assert set(held(one)) <= set(held(grown)), "adding files never moves a held-out pair back to train"
    none = tmp_path / "none"
    import_ok("p3m", src, none, val_fraction=0.0)
    assert held(none) == []


def test_folder_globs_find_what_pathlib_finds_in_its_order(tmp_path):
    from datagen.importers.folder import glob_entries

    for name in ("im/b.png", "im/a.png", "im/.hidden.png", "im/B.PNG", "im/c.jpg", "im/x-y.png", "im/sub/a.png",
                 "im/sub-b/z.png", "masks/a.png", "top.png", "im-x/q.png", "im.x/q.png", "im.x/sub/q.png"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    (tmp_path / "im/dir.png").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "im/sub", target_is_directory=True)  # `**` does not enter it
    patterns = ["im/*", "im/*.png", "im/*.PNG", "*", "im/[ab]*", "im/?.png", "im/sub", "**/*.png", "im/**/*", "nope/*",
                "*/*.png", "*/q.png", "im*/*", "*/sub/*", "**/sub/*", "?m/*", "im/*/*.png", "**/nope/*"]  # fmt: skip
    for pattern in patterns:
        expected = [(str(path), path.is_file()) for path in sorted(tmp_path.glob(pattern))]
        assert glob_entries(tmp_path, pattern) == expected, pattern


def test_folder_discovery_by_arrow_equals_the_python_one(tmp_path, monkeypatch):
    """`folder --images GLOB --alphas GLOB` lists one folder's names into Arrow columns (a million pairs in tens of
    MB); the pairs, their order and every skip with its reason are what index_by_stem and pair_files give."""
    import os

    from datagen.importers import ImportConfig, folder
    from datagen.importers.layout import PairColumns

    names = ["a.jpg", "b.JPG", "c.png", "c.jpg", "d.jpeg", "e", "f.", ".hidden.jpg", "Thumbs.db", "notes.txt",
             "orphan.jpg", "x.y.jpg", "ünï.jpg", "z 1.jpg", "new\nline.jpg"]  # fmt: skip
    mattes = ["a.png", "b.png", "c.png", "d.png", "x.y.png", "ünï.png", "z 1.png", "new\nline.png", "lone.png",
              "a.tif", ".DS_Store"]  # fmt: skip
    for folder_name, files in (("im", names), ("gt", mattes)):
        (tmp_path / folder_name).mkdir()
        for name in files:
            (tmp_path / folder_name / name).touch()
    (tmp_path / "im/sub.jpg").mkdir()  # a folder whose name looks like an image: not a file, passed over
    config = ImportConfig(out=tmp_path / "out", images="im/*", alphas="gt/*.*")

    def discovered():
        found = folder.discover(tmp_path, config)
        return found.pairs, [(skip.path, skip.reason) for skip in found.skipped]

    by_arrow, arrow_skips = discovered()
    assert isinstance(by_arrow, PairColumns)
    monkeypatch.setattr(folder, "stem_columns", lambda *args: None)  # the Python listing, as before
    by_python, python_skips = discovered()
    assert isinstance(by_python, list)
    assert sorted(by_arrow, key=lambda pair: pair.key) == by_python and arrow_skips == python_skips
    assert [pair.name for pair in by_python] == ["a", "b", "c", "d", "new\nline", "x.y", "z 1", "ünï"]
    assert {reason.split(":")[0] for _, reason in python_skips} >= {"orphan image", "orphan matte", "not an image file"}
    assert ("im/c.png", "second file with the stem 'c'") in python_skips, "c.jpg comes first in path order"
    assert python_skips[6:] == [  # the image folder's skips, the matte folder's, then the orphans
        ("gt/.DS_Store", "hidden or system file"),
        ("gt/a.tif", "second file with the stem 'a'"),
        ("im/orphan.jpg", "orphan image: no matte with this stem"),
        ("gt/lone.png", "orphan matte: no image with this stem"),
    ]
    monkeypatch.undo()
    if os.uname().sysname == "Linux":  # a name that is not UTF-8 (Python holds it with a surrogate): listed by Python
        (tmp_path / os.fsdecode(b"im/caf\xe9.jpg")).touch()
        (tmp_path / os.fsdecode(b"gt/caf\xe9.png")).touch()
        pairs, _ = discovered()
        assert isinstance(pairs, list) and "caf\\xe9" in [pair.key[3:-4] for pair in pairs]


def test_rgba_discovery_by_arrow_equals_what_rglob_found(tmp_path, monkeypatch):
    """`folder SRC` (RGBA cut-outs) walks SRC into Arrow columns, a batch at a time; the pairs and every skip with its
    reason are what the listing by `Path.rglob` gave: hidden folders entered, links to files followed, a link to a
    folder not entered, names that are not UTF-8 kept with their bytes and escaped in the key."""
    import os

    from datagen.importers import ImportConfig, folder
    from datagen.importers.layout import Pair, PairColumns
    from datagen.io import IMAGE_EXTENSIONS, is_hidden, readable_path

    src = tmp_path / "cutouts"
    names = ["a.png", "b.PNG", "c.webp", "d.txt", ".DS_Store", "Thumbs.db", "e", "f.", "x.y.png", "ünï.png",
             "new\nline.png", "sub/a.png", "sub/deeper/z 1.png", ".cache/h.png", "g.png/inside.png"]  # fmt: skip
    if os.uname().sysname == "Linux":
        names.append(os.fsdecode(b"caf\xe9.png"))
    for name in names:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).touch()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/linked.png").touch()
    (src / "link-to-folder").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (src / "link.png").symlink_to(tmp_path / "elsewhere/linked.png")
    (src / "broken.png").symlink_to(tmp_path / "nowhere.png")

    pairs, skips = [], []  # what the importer found with rglob before it listed into columns
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        key = readable_path(path.relative_to(src))
        if is_hidden(path.name):
            skips.append((key, "hidden or system file"))
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            skips.append((key, "not an image file"))
        else:
            pairs.append(Pair("train", key, path.stem, str(path), str(path), rgba=True))

    walk = folder._walk
    for batch in (65536, 3):  # one batch, and batches that end inside a folder
        monkeypatch.setattr(folder, "_walk", lambda root, skipped, batch=batch: walk(root, skipped, batch))
        found = folder.discover(src, ImportConfig(out=tmp_path / "out"))
        assert isinstance(found.pairs, PairColumns)
        assert sorted(found.pairs, key=lambda pair: pair.key) == sorted(pairs, key=lambda pair: pair.key)
        assert [(skip.path, skip.reason) for skip in found.skipped] == skips
    assert {pair.key for pair in pairs} >= {"link.png", ".cache/h.png", "g.png/inside.png", "sub/deeper/z 1.png"}
    assert not any(pair.key.startswith("link-to-folder") for pair in pairs)
    if os.uname().sysname == "Linux":
        assert "caf\\xe9.png" in {pair.key for pair in pairs}


def test_folder_discovery_by_arrow_across_folders_equals_the_python_one(tmp_path, monkeypatch):
    """Globs with wildcards in their folders (`*/im/*`, `**/gt/*.png`) list each folder into Arrow columns too; of two
    files with one stem in two folders the first in path order (by parts: `a/` before `a.b/`) is kept, as before."""
    import os

    from datagen.importers import ImportConfig, folder
    from datagen.importers.layout import PairColumns

    for name in ("a/im/x.jpg", "a.b/im/x.jpg", "a.b/im/y.jpg", "a-c/im/z.jpg", "a/im/.DS_Store", "a/im/n.txt",
                 "a/gt/x.png", "a.b/gt/y.png", "a-c/gt/z.png", "a-c/gt/lone.png", "b/deep/gt/x.png"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    for images, alphas in (("*/im/*", "*/gt/*"), ("*/im/*.jpg", "**/gt/*.png")):
        config = ImportConfig(out=tmp_path / "out", images=images, alphas=alphas)
        by_arrow = folder.discover(tmp_path, config)
        assert isinstance(by_arrow.pairs, PairColumns)
        with monkeypatch.context() as patch:
            patch.setattr(folder, "stem_columns", lambda *args: None)  # the Python listing, as before
            by_python = folder.discover(tmp_path, config)
        pairs = sorted(by_python.pairs, key=lambda pair: pair.key)
        assert sorted(by_arrow.pairs, key=lambda pair: pair.key) == pairs and by_arrow.skipped == by_python.skipped
        assert [(pair.key, pair.alpha[len(str(tmp_path)) + 1 :]) for pair in pairs] == [
            ("a-c/im/z.jpg", "a-c/gt/z.png"), ("a.b/im/y.jpg", "a.b/gt/y.png"), ("a/im/x.jpg", "a/gt/x.png")
        ]  # fmt: skip
        assert ("a.b/im/x.jpg", "second file with the stem 'x'") in [(s.path, s.reason) for s in by_python.skipped]
    if os.uname().sysname == "Linux":  # a folder whose name is not UTF-8: listed by Python, as before
        (tmp_path / os.fsdecode(b"caf\xe9/im")).mkdir(parents=True)
        (tmp_path / os.fsdecode(b"caf\xe9/im/w.jpg")).touch()
        (tmp_path / "a/gt/w.png").touch()
        found = folder.discover(tmp_path, ImportConfig(out=tmp_path / "out", images="*/im/*", alphas="*/gt/*"))
        assert isinstance(found.pairs, list) and "caf\\xe9/im/w.jpg" in [pair.key for pair in found.pairs]


def test_a_folder_that_cannot_be_read_is_a_skip_not_silence(tmp_path, monkeypatch):
    """RGBA cut-outs: a subfolder the walk cannot list (permissions) is recorded with its path and reason; the rest
    is imported."""
    import os

    from datagen.importers import ImportConfig, folder

    for name in ("a.png", "locked/b.png", "open/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    scandir = os.scandir

    def refusing(path):
        if os.path.basename(str(path).rstrip("/")) == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(folder.os, "scandir", refusing)
    found = folder.discover(tmp_path, ImportConfig(out=tmp_path / "out"))
    assert sorted(pair.key for pair in found.pairs) == ["a.png", "open/c.png"]
    assert [(skip.path, skip.reason) for skip in found.skipped] == [
        ("locked", "folder not readable: Permission denied")
    ]


def test_split_column_is_one_byte_a_row_and_reads_back(tmp_path):
    """The pairs' split column is dictionary codes over SPLITS (1 byte a row; strings took 9 MB a million pairs,
    about 8 MB of a no-op import's peak at 10^6): what the listing makes, what a list of Pairs becomes, what the
    hold-out writes; `split_codes` reads it, and a column of plain strings, alike."""
    import pyarrow as pa

    from datagen.importers import folder, held_out, hold_out
    from datagen.importers.layout import Pair, PairColumns, split_codes, split_column

    column = split_column(np.array([0, 2, 1, 0]))
    assert pa.types.is_dictionary(column.type) and column.indices.type == pa.int8()
    assert column.to_pylist() == ["train", "test", "validation", "train"]
    assert split_codes(column).tolist() == split_codes(pa.array(column.to_pylist())).tolist() == [0, 2, 1, 0]
    with pytest.raises(ValueError, match="not in"):
        split_codes(pa.array(["train", "val"]))
    listed = [Pair(split, f"{split}/{n}.jpg", str(n), "i", "a") for n, split in enumerate(["test", "train"])]
    pairs = PairColumns.of(listed)
    assert pairs.column("split").to_pylist() == ["test", "train"] and [p.split for p in pairs] == ["test", "train"]

    for name in [f"p{index:02d}" for index in range(40)]:
        for sub, suffix in (("im", ".jpg"), ("gt", ".png")):
            (tmp_path / sub).mkdir(exist_ok=True)
            (tmp_path / sub / f"{name}{suffix}").touch()
    listed = folder.discover(tmp_path, ImportConfig(out=tmp_path / "out", images="im/*", alphas="gt/*")).pairs
    held = hold_out(listed, "folder", 0.3)
    for found in (listed, held):
        assert pa.types.is_dictionary(found.column("split").type)
    splits = held.column("split").to_pylist()
    assert set(splits) == {"train", "validation"} and {p.split for p in held} == set(splits)
    moved = [key for key, split in zip(held.column("key").to_pylist(), splits) if split == "validation"]
    assert moved == [key for key in held.column("key").to_pylist() if held_out("folder", key, 0.3)]


def test_a_stage_gives_the_large_buffers_it_frees_back(tmp_path):
    """A stage's driver maps buffers of 4 MB and more on their own (`parallel.return_freed_memory`): glibc would
    otherwise serve them from its heap once a larger one had been freed, and keep them resident when freed (the
    no-op import of 10^6 photos peaked at 291-293 MB so, 270-273 MB with it). In a fresh process that has freed a
    24 MB buffer, three freed 12 MB frames stay resident; after a no-op import, or a no-op of a stage that only
    `stage.stage_run` sets it for (foreground), they go back; after synth rendered in the process, they are kept for
    its next frames (`reuse_freed_memory`, as a worker with work)."""
    import subprocess
    import sys

    image, alpha = pair(1)
    put(tmp_path / "src/im/a.jpg", image)
    put(tmp_path / "src/gt/a.png", alpha)
    out = tmp_path / "out"
    import_ok("folder", tmp_path / "src", out, images="im/*", alphas="gt/*")

    def returned_mb(stage: str = "") -> float:
        code = (
            "import numpy as np; big = np.ones(24 << 18, np.float32); del big\n"  # glibc's threshold rises to 24 MB
            f"{stage}\nfrom tests.conftest import freed_frames_returned_mb as f; print(f())"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(done.stdout.split()[-1])

    kept = returned_mb()
    no_op = returned_mb(
        "from datagen.importers import ImportConfig, run_import\n"
        f"result = run_import('folder', {str(tmp_path / 'src')!r}, ImportConfig(out={str(out)!r}, images='im/*', "
        "alphas='gt/*', progress=False)); assert not result.new and result.existing == 1"
    )
    from datagen.foreground import ForegroundConfig, run_foreground

    assert run_foreground(ForegroundConfig(out, progress=False)).new == 1
    stage = returned_mb(
        "from datagen.foreground import ForegroundConfig, run_foreground\n"
        f"result = run_foreground(ForegroundConfig({str(out)!r}, progress=False)); assert not result.new"
    )
    assert kept < 4 < 30 < min(no_op, stage), (kept, no_op, stage)
    working = returned_mb(  # a stage that renders in this process keeps them for its next frames, as a worker does
        "from datagen.synth import SynthConfig, run_synth\n"
        f"assert run_synth(SynthConfig(out={str(tmp_path / 'synth')!r}, backend='procedural', n=1, size=(64, 64), "
        "progress=False)).new == 1"
    )
    assert working < 4, working
