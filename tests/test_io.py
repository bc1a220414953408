import numpy as np
import pytest
from PIL import Image, ImageOps

from datagen import io
from datagen.io import ImageReadError, apply_orientation, read_alpha, read_foreground, read_image


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[io.EXIF_ORIENTATION_TAG] = orientation
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pillow(orientation):
    array = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    image = Image.fromarray(array)
    image.getexif()[io.EXIF_ORIENTATION_TAG] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(apply_orientation(array, orientation), expected)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_read_image_is_upright(tmp_path, orientation):
    path = tmp_path / "rotated.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8)).save(
        path, exif=_exif(orientation)
    )
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    image = read_image(path)
    assert image.shape == ((30, 20, 3) if orientation in (6, 8) else (20, 30, 3))
    np.testing.assert_array_equal(image, upright)


def test_palette_grayscale_cmyk_become_rgb(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (12, 17, 3), np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb).convert("L").save(tmp_path / "l.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    for name in ("p.png", "l.png", "c.jpg"):
        image = read_image(tmp_path / name)
        assert image.shape == (12, 17, 3) and image.dtype == np.uint8, name
    grey = read_image(tmp_path / "l.png")
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_16bit_png_is_scaled_not_truncated(tmp_path):
    import cv2

    values = np.array([[0, 200, 32896, 65280, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "a16.png"), values)
    np.testing.assert_array_equal(read_alpha(tmp_path / "a16.png"), [[0, 1, 128, 254, 255]])
    rgb16 = np.dstack([values, values, np.zeros_like(values)])  # BGR on disk: red channel is 0
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16)
    image = read_image(tmp_path / "rgb16.png")
    np.testing.assert_array_equal(image[..., 0], [[0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(image[..., 2], [[0, 1, 128, 254, 255]])
    grey = read_image(tmp_path / "a16.png")  # a 16-bit greyscale photo: 8-bit RGB, as FORMAT.md says
    assert grey.shape == (1, 5, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 1], [[0, 1, 128, 254, 255]])
    np.testing.assert_array_equal(read_foreground(tmp_path / "a16.png")[..., 3], [[255] * 5])


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="decompression bomb") as error:
        read_image(tmp_path / "big.png")
    assert "big.png" in str(error.value)


def test_unreadable_names_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")


def test_alpha_from_rgba_rgb_and_grey(tmp_path, person):
    Image.fromarray(person).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_alpha(tmp_path / "rgba.png"), person[..., 3])
    np.testing.assert_array_equal(read_foreground(tmp_path / "rgba.png"), person)
    three = np.dstack([person[..., 3], np.zeros_like(person[..., 3]), np.full_like(person[..., 3], 9)])
    Image.fromarray(three).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_alpha(tmp_path / "rgb.png"), person[..., 3])


def test_person_fixture_has_soft_alpha(person):
    alpha = person[..., 3]
    soft = (alpha > 0) & (alpha < 255)
    assert (alpha == 0).any() and (alpha == 255).any()
    assert soft.mean() > 0.01, "hair strands and soft edges must give semi-transparent pixels"
    assert ((alpha > 40) & (alpha < 215)).sum() > 50


def test_png_round_trip_is_lossless(tmp_path, person):
    io.write_atomic(tmp_path / "x.png", io.encode_png(person))
    np.testing.assert_array_equal(read_foreground(tmp_path / "x.png"), person)
    io.write_atomic(tmp_path / "a.png", io.encode_png(person[..., 3]))
    np.testing.assert_array_equal(read_alpha(tmp_path / "a.png"), person[..., 3])
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_truncated_jpeg_is_an_error_not_grey_pixels(tmp_path):
    data = io.encode_jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")


def test_palette_matte_and_palette_cutout_keep_their_values(tmp_path):
    """A P-mode matte is its grey levels, a P-mode cut-out with tRNS its colours and alpha (never the indices)."""
    matte = np.tile(np.array([0, 37, 128, 200, 255], np.uint8), (4, 1))
    Image.fromarray(matte, "L").convert("P").save(tmp_path / "matte.png")
    assert Image.open(tmp_path / "matte.png").mode == "P"
    np.testing.assert_array_equal(read_alpha(tmp_path / "matte.png"), matte)

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = (200, 30, 90)
    rgba[1:3, 1:4, 3] = 255
    palette = Image.new("P", (5, 4))
    palette.putpalette([0, 0, 0, 200, 30, 90])
    palette.putdata([1 if a else 0 for a in rgba[..., 3].ravel()])
    palette.save(tmp_path / "cutout.png", transparency=0)
    assert Image.open(tmp_path / "cutout.png").mode == "P"
    read = read_foreground(tmp_path / "cutout.png")
    np.testing.assert_array_equal(read[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(read[rgba[..., 3] > 0][:, :3], rgba[rgba[..., 3] > 0][:, :3])
    np.testing.assert_array_equal(read_alpha(tmp_path / "cutout.png"), rgba[..., 3])


def test_truncated_png_is_an_image_read_error(tmp_path):
    data = io.encode_png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(ImageReadError, match="cut.png"):
        io.exif_orientation(io.open_image(tmp_path / "cut.png", load=False))


def test_write_atomic_on_a_full_disk_names_the_path_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno
    import os

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "sub" / "x.png"
    with pytest.raises(io.OutputError, match=r"cannot write .*x\.png: No space left on device"):
        io.write_atomic(target, b"data")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []


def test_write_atomic_into_a_read_only_folder(tmp_path, monkeypatch):
    import errno
    import os

    def read_only(source, target):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", read_only)  # the tests run as root, where chmod does not stop a write
    with pytest.raises(io.OutputError, match=r"ro/x\.png: Read-only file system"):
        io.write_atomic(tmp_path / "ro" / "x.png", b"data")
    assert list((tmp_path / "ro").iterdir()) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "train" / "im" / f".a.jpg.{int(dead.stdout)}.tmp"
    live = tmp_path / "train" / "im" / f".b.jpg.{os.getpid()}.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x"), live.write_bytes(b"x")
    assert io.remove_stale_temporaries(tmp_path) == 1
    assert not stale.exists() and live.exists()


def test_names_that_are_not_utf8_are_read_imported_inferred_and_composited(tmp_path, checkpoint):
    """cv2.imread crashes the process on such a path (SIGSEGV): the steps run in a child process, so a crash is a
    failed assertion, not a lost test run."""
    import subprocess
    import sys

    script = f"""
import os, sys
import numpy as np
from click.testing import CliRunner
from datagen.alpha import over
from datagen.cli import cli
from datagen.io import encode_jpeg, encode_png, read_alpha, read_foreground, read_image
from datagen.procedural import draw_background, draw_person
from datagen.records import read_rows, write_sample
from ormbg.infer import main as infer

root = os.fsencode({str(tmp_path)!r})
for name in (b"src", b"bg", b"people"):
    os.makedirs(root + b"/" + name, exist_ok=True)
person = draw_person(np.random.default_rng(0), 64, 48)
photo = over(person, draw_background(np.random.default_rng(1), 64, 48))
open(root + b"/src/caf\\xe9.jpg", "wb").write(encode_jpeg(photo))
open(root + b"/src/caf\\xe9.png", "wb").write(encode_png(person[..., 3]))
open(root + b"/src/caf\\xe9-rgba.png", "wb").write(encode_png(person))
open(root + b"/bg/caf\\xe9.jpg", "wb").write(encode_jpeg(photo))
name = os.fsdecode(root + b"/src/caf\\xe9")
assert read_image(name + ".jpg").shape == (64, 48, 3) and read_alpha(name + ".png").shape == (64, 48)
assert read_foreground(name + "-rgba.png").shape == (64, 48, 4)
top = os.fsdecode(root)
runner = CliRunner()
args = ["import", "folder", top + "/src", "--images", "*.jpg", "--alphas", "*.png", "-o", top + "/imported"]
result = runner.invoke(cli, [*args, "--no-progress", "--val-fraction", "0"])
assert result.exit_code == 0, result.output
rows = read_rows(top + "/imported", "train")
assert [row["original_path"] for row in rows] == ["caf\\\\xe9.jpg"], rows
result = runner.invoke(infer, [top + "/bg", "-o", top + "/cut", "--checkpoint", {str(checkpoint)!r}, "--size", "64",
                               "--no-progress"])
assert result.exit_code == 0 and os.path.isfile(root + b"/cut/caf\\xe9.png"), result.output
write_sample(top + "/people", "train", "p0", foreground=person, alpha=person[..., 3], metadata={{}})
result = runner.invoke(cli, ["compose", "--fg", top + "/people", "--bg", top + "/bg", "-n", "2", "--size", "32x48",
                             "-o", top + "/comp", "--no-progress"])
assert result.exit_code == 0, result.output
assert {{row["background_id"] for row in read_rows(top + "/comp", "train")}} == {{"bg:caf\\\\xe9.jpg"}}
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), (done.returncode, done.stderr[-3000:])


def test_a_235_character_name_is_imported_and_inferred(tmp_path, checkpoint):
    """Its id is cut to 200 characters with a hash of the whole name; write_atomic's temporary name stays within
    255 bytes (it was `.<name>.<pid>.tmp`, too long for the file system)."""
    from click.testing import CliRunner

    from datagen.cli import cli
    from datagen.io import encode_jpeg, encode_png
    from datagen.procedural import draw_person
    from datagen.records import read_rows
    from ormbg.infer import main as infer

    stem = "a" * 235
    person = draw_person(np.random.default_rng(0), 48, 32)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{stem}.jpg").write_bytes(encode_jpeg(person[..., :3]))
    (tmp_path / "src" / f"{stem}.png").write_bytes(encode_png(person[..., 3]))
    runner = CliRunner()
    args = ["import", "folder", str(tmp_path / "src"), "--images", "*.jpg", "--alphas", "*.png"]
    result = runner.invoke(cli, [*args, "-o", str(tmp_path / "ds"), "--val-fraction", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    (row,) = read_rows(tmp_path / "ds", "train")
    assert len(row["id"]) == 200 and row["original_path"] == f"{stem}.jpg"
    (tmp_path / "src" / f"{stem}.png").unlink()
    args = [str(tmp_path / "src"), "-o", str(tmp_path / "cut"), "--checkpoint", str(checkpoint), "--size", "64"]
    result = runner.invoke(infer, [*args, "--no-progress"])
    assert result.exit_code == 0 and (tmp_path / "cut" / f"{stem}.png").is_file(), result.output
