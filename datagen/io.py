"""Image, alpha and RGBA reading and writing at the I/O border; atomic writes; run.json.

Arrays here are HWC ``uint8``: images RGB, foregrounds RGBA with straight (not premultiplied) alpha,
alphas and trimaps HxW. Reading accepts what real data sets contain (EXIF orientation, palette, grayscale,
CMYK, 16-bit PNG) and always returns those shapes; writing is always atomic (temporary name, then rename).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from datagen.errors import InputError, UserError

# PIL's own bomb guard stays on: it warns above MAX_IMAGE_PIXELS and raises above twice that. We turn the
# warning into our error too, so that a 100-megapixel "image" is refused with a clear message either way.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

EXIF_ORIENTATION_TAG = 0x0112
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}  # what readers take as images
SYSTEM_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def is_hidden(name: str) -> bool:
    """Hidden and system files (macOS `._*` forks, .DS_Store, Thumbs.db) that archives carry along."""
    return name.startswith(".") or name in SYSTEM_FILES


class ImageReadError(InputError):
    """A file that is not a readable image, or one we refuse (decompression bomb). Carries the path."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def open_image(path: str | os.PathLike, *, load: bool = True) -> Image.Image:
    """Open `path` with Pillow, turning every failure into an ImageReadError.

    With `load` the pixels are decoded (a truncated file fails here); without, only the header is read
    (format, mode, size, EXIF: cheap), and the bomb check still applies.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            if load:
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(
            path,
            f"refused as a possible decompression bomb ({error}); if the image is genuine, "
            f"downscale it first or raise PIL.Image.MAX_IMAGE_PIXELS",
        ) from error
    except FileNotFoundError as error:
        raise ImageReadError(path, "file not found") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"unreadable or truncated image ({error})") from error
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or invalid.

    Raises ImageReadError when reading the EXIF block fails (a PNG truncated before its eXIf chunk).
    """
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(
            getattr(image, "filename", "") or "image", f"unreadable or truncated image ({error})"
        ) from error
    return value if value in range(1, 9) else 1


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an HW or HWC array stored with EXIF `orientation` (1..8) upright, as a viewer shows it."""
    upright = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: np.rot90(a, k=2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, k=1),
    }[orientation](array)
    return np.ascontiguousarray(upright)


def is_16bit_png(path: str | os.PathLike) -> bool:
    """True when `path` is a PNG whose IHDR says 16 bits per channel (Pillow would truncate its colour)."""
    try:
        with open(path, "rb") as file:
            header = file.read(25)
    except OSError:
        return False  # missing or unreadable: open_image reports it with the path
    return header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) == 25 and header[24] == 16


def readable_path(path: str | os.PathLike) -> str:
    """`path` as text that JSON and UTF-8 can hold: the bytes of a name that is not valid UTF-8 (`caf\\xe9.jpg`, which
    Python holds as a lone surrogate) become `\\xNN` escapes. For what rows and records say, never to open a file."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _cv2_read(path: str | os.PathLike, flags: int) -> np.ndarray | None:
    """cv2.imread's decode of the file's bytes, read by Python: cv2.imread itself crashes the process (SIGSEGV) on a
    path that is not valid UTF-8 (`caf\\xe9.jpg`), so OpenCV never sees a path here."""
    with open(path, "rb") as file:
        return cv2.imdecode(np.frombuffer(file.read(), np.uint8), flags)


def _read_16bit_png(path: str | os.PathLike) -> np.ndarray:
    """A 16-bit PNG as HW, HWC RGB or HWC RGBA uint8, each value scaled (rounded) from 0..65535 to 0..255."""
    data = _cv2_read(path, cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ImageReadError(path, "unreadable or truncated 16-bit PNG")
    scaled = ((data.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if scaled.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if scaled.shape[2] == 4 else cv2.COLOR_BGR2RGB
        scaled = cv2.cvtColor(scaled, code)
    return scaled


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale single-channel integer or float modes (I;16, I, F) to L without truncating; resolve a palette.

    A palette image is converted through its palette (its indices mean nothing on their own): to RGBA when it
    has transparency (tRNS), to L when every palette colour is grey, else to RGB.
    """
    if image.mode in ("P", "PA"):
        if image.mode == "PA" or "transparency" in image.info:
            return image.convert("RGBA")
        palette = np.asarray(image.getpalette() or [], np.uint8).reshape(-1, 3)
        grey = bool(np.all(palette == palette[:, :1]))
        return image.convert("L" if grey else "RGB")
    if image.mode in ("L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "1", "LAB", "HSV", "RGBX"):
        return image
    array = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(np.rint(array * 255.0), 0, 255)
    else:  # I;16 variants and 32-bit I from 16-bit sources: values in 0..65535
        scaled = (array.astype(np.int64).clip(0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def read_pixels(path: str | os.PathLike, *, upright: bool = True) -> tuple[np.ndarray, str, int]:
    """Decode `path` into uint8 pixels: (array HW / HWC, Pillow mode after 8-bit scaling, EXIF orientation).

    With `upright`, the EXIF orientation is applied. Palette and CMYK stay as Pillow modes for the caller to
    convert; 16-bit data is scaled to 8 bit with rounding.
    """
    if is_16bit_png(path):  # OpenCV decodes all 16 bits; Pillow would truncate colour to 8
        orientation = exif_orientation(open_image(path, load=False))
        array = _read_16bit_png(path)
        mode = "L" if array.ndim == 2 else {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    else:
        image = open_image(path)
        orientation = exif_orientation(image)
        image = _to_8bit(image)
        mode = image.mode
        array = np.asarray(image)
    if upright and orientation != 1:
        array = apply_orientation(array, orientation)
    return array, mode, orientation


def _convert(array: np.ndarray, mode: str, target: str) -> np.ndarray:
    if mode == target:
        return array
    return np.asarray(Image.fromarray(array, mode=mode).convert(target))


def jpeg_is_complete(path: str | os.PathLike) -> bool:
    """A cheap structural check: the file ends with the JPEG end-of-image marker (a truncated file does not)."""
    with open(path, "rb") as file:
        file.seek(0, 2)
        file.seek(max(0, file.tell() - 64))
        tail = file.read().rstrip(b"\x00\r\n ")
    return tail.endswith(b"\xff\xd9")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image as HxWx3 uint8 RGB, upright. Transparency, if any, is dropped (not composited)."""
    header = open_image(path, load=False)
    if header.format == "JPEG" and header.mode == "RGB" and exif_orientation(header) == 1 and jpeg_is_complete(path):
        # Fast path (OpenCV decodes baseline JPEG about twice as fast as Pillow here); same libjpeg output.
        data = _cv2_read(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if data is not None:
            return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    if is_16bit_png(path):
        array, mode, _ = read_pixels(path)
        if mode in ("RGB", "RGBA"):
            return array[..., :3]
        grey = array if array.ndim == 2 else array[..., 0]  # L, or LA's grey channel
        return np.repeat(grey[..., None], 3, axis=2)
    image = open_image(path)
    orientation = exif_orientation(image)
    rgb = np.asarray(_to_8bit(image).convert("RGB"))
    return apply_orientation(rgb, orientation) if orientation != 1 else rgb


def _read_plain_png(path: str | os.PathLike, mode: str) -> np.ndarray | None:
    """Fast path: an 8-bit PNG of Pillow `mode` ("RGBA" or "L") without EXIF rotation, decoded by OpenCV
    (RGBA: about 20% faster than Pillow; L: about 15%). RGBA comes back as RGBA, L as HxW.

    None when the file is anything else (or fails to decode): the caller then takes the general path.
    """
    header = open_image(path, load=False)
    # Only an eXIf chunk before the pixels is seen without decoding (Pillow's getexif() would decode the whole
    # PNG to look for one after them, which defeats the purpose; such files are vanishingly rare).
    if header.format != "PNG" or header.mode != mode or "exif" in header.info or is_16bit_png(path):
        return None
    data = _cv2_read(path, cv2.IMREAD_UNCHANGED)
    channels = {"RGBA": 4, "L": None}[mode]
    if data is None or (data.shape[2] if data.ndim == 3 else None) != channels:
        return None
    return cv2.cvtColor(data, cv2.COLOR_BGRA2RGBA) if channels else data


def has_alpha_channel(image: Image.Image) -> bool:
    """Whether a Pillow image (its header is enough) carries transparency: an alpha band, or a transparent palette
    entry or grey level."""
    return "A" in image.getbands() or "transparency" in image.info


def read_foreground(path: str | os.PathLike) -> np.ndarray:
    """An RGBA foreground as HxWx4 uint8, straight alpha, upright; images without alpha get alpha 255."""
    fast = _read_plain_png(path, "RGBA")
    if fast is not None:
        return fast
    array, mode, _ = read_pixels(path)
    if mode == "LA":
        return np.dstack([np.repeat(array[..., :1], 3, axis=2), array[..., 1]])
    if mode == "L":
        return np.dstack([np.repeat(array[..., None], 3, axis=2), np.full(array.shape, 255, np.uint8)])
    return _convert(array, mode, "RGBA")


def read_alpha(path: str | os.PathLike, *, upright: bool = True) -> np.ndarray:
    """A matte as HxW uint8, soft values kept.

    One channel as is; 16-bit scaled; RGBA or LA: its alpha channel; RGB: channel 0 (mattes stored as three
    equal channels); palette: through its palette (its alpha where it has transparency, else its grey level).
    Never thresholded.
    """
    fast = _read_plain_png(path, "L")  # the contract's own mattes: one-channel 8-bit PNG
    if fast is not None:
        return fast
    array, mode, _ = read_pixels(path, upright=upright)
    if mode in ("RGBA", "LA"):
        return np.ascontiguousarray(array[..., -1])
    if mode in ("RGB", "CMYK", "YCbCr"):
        return np.ascontiguousarray(_convert(array, mode, "RGB")[..., 0])
    return _convert(array, mode, "L")


def read_pair(image_path: str | os.PathLike, alpha_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A sample's image (HxWx3 uint8) and alpha (HxW uint8), read as read_image and read_alpha do; an alpha of another
    size than its image is an ImageReadError naming the alpha, so every reader skips such a sample as unreadable."""
    return check_pair(read_image(image_path), read_alpha(alpha_path), alpha_path)


def check_pair(image: np.ndarray, alpha: np.ndarray, where: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(image, alpha), or an ImageReadError naming `where` (the matte) when their sizes differ."""
    if image.shape[:2] != alpha.shape:
        raise ImageReadError(
            where,
            f"matte size mismatch: matte {alpha.shape[1]}x{alpha.shape[0]}, image {image.shape[1]}x{image.shape[0]}",
        )
    return image, alpha


def decode_bytes(data: bytes, reader, where: str):
    """Decode an image file's bytes (a Parquet row's) with one of the readers above, so the same checks apply (EXIF,
    16-bit, palette, truncation, bombs); an ImageReadError names `where` (the row), never the temporary file."""
    import tempfile

    folder = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory, where Linux has it
    suffix = ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"
    with tempfile.NamedTemporaryFile(suffix=suffix, dir=folder) as file:
        file.write(data)
        file.flush()
        try:
            return reader(file.name)
        except ImageReadError as error:
            raise ImageReadError(where, error.reason.replace(file.name, where)) from None


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """HxWx3 uint8 RGB -> JPEG bytes (4:2:0, baseline)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def encode_png(array: np.ndarray) -> bytes:
    """HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA, straight) uint8 -> lossless PNG bytes."""
    if array.dtype != np.uint8:
        raise TypeError(f"PNG encoding expects uint8, got {array.dtype}")
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        array = cv2.cvtColor(array, code)
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


class OutputError(UserError, OSError):
    """An output that cannot be written (disk full, read-only, no permission): one line with the path and cause.

    Built as OutputError(errno, message) so that it pickles across worker processes like any OSError.
    """


# The errors of a full, read-only or forbidden output: what a user fixes by freeing space or choosing --out.
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def output_error(path: str | os.PathLike, error: OSError) -> OSError:
    """`error` as an OutputError naming `path` when it is one of OUTPUT_ERRNOS, else `error` unchanged."""
    if isinstance(error, OutputError) or error.errno not in OUTPUT_ERRNOS:
        return error
    return OutputError(error.errno, f"cannot write {path}: {error.strerror} (free space or choose another output)")


MAX_NAME_BYTES = 255  # the longest file name ext4, XFS, APFS and NTFS take


def temporary_name(path: Path) -> Path:
    """Where `write_atomic` writes `path` before the rename: `.<name>.<pid>.tmp` beside it."""
    name = path.name
    if len(os.fsencode(name)) > MAX_NAME_BYTES - 24:  # room for the dot, the pid and .tmp within the name limit
        name = hashlib.sha1(os.fsencode(name)).hexdigest()
    return path.with_name(f".{name}.{os.getpid()}.tmp")


def write_atomic(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
    """Write `data` (bytes, or chunks of bytes as they are made) to `path` through a temporary file in the same folder
    and a rename.

    A reader never sees a half-written file under `path`: either the old content, the new, or nothing. On
    failure (an exception from the chunks included) the temporary file is removed and `path` left as it was; a full
    or read-only output raises OutputError naming `path`.
    """
    path = Path(path)
    temporary = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            if isinstance(data, bytes | bytearray | memoryview):
                file.write(data)
            else:
                file.writelines(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise output_error(path, error) from error
        raise


TEMPORARY_PATTERN = re.compile(r"^\..+\.(\d+)\.tmp$")


def remove_stale_temporaries(root: str | os.PathLike) -> int:
    """Delete `.<name>.<pid>.tmp` files below `root` whose writing process is gone (a killed run's leftovers).

    Files of live processes (another shard writing now) are left alone. Returns how many were removed.
    """
    removed = 0
    for path in _hidden_temporaries(str(root)):
        match = TEMPORARY_PATTERN.match(os.path.basename(path))
        if match and not pid_alive(int(match.group(1))):
            Path(path).unlink(missing_ok=True)
            removed += 1
    return removed


def _hidden_temporaries(root: str) -> Iterator[str]:
    """Paths of `.*.tmp` files below `root` (`walk_files`: a folder of a million files is never held as a list)."""
    for entry in walk_files(root):
        if entry.name.startswith(".") and entry.name.endswith(".tmp"):
            yield entry.path


def walk_files(root: str, unreadable: Callable[[str, OSError], None] | None = None) -> Iterator[os.DirEntry]:
    """The entries below `root` that are not folders, streamed with os.scandir, depth first in no set order (Path.rglob
    lists each folder first: about 150 MB and seconds at a million entries). A link to a folder is not entered. A
    folder that cannot be listed goes to `unreadable(its path, the error)`; without it, one that vanished meanwhile is
    passed over and any other error raised."""
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            entries = os.scandir(folder)
        except OSError as error:
            if unreadable is not None:
                unreadable(folder, error)
                continue
            if isinstance(error, FileNotFoundError | NotADirectoryError):
                continue
            raise
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                else:
                    yield entry


def remove_stale_temporaries_of(path: str | os.PathLike) -> int:
    """Delete the temporaries a killed write_atomic left for the one file `path` (in its folder only, its own name
    only, writers that are gone only). For outputs among a user's files, where a sweep of the folder would not do."""
    path = Path(path)
    prefix = temporary_name(path).name.rsplit(".", 2)[0]  # ".<name>" (or its hash, for a long name)
    removed = 0
    for candidate in path.parent.glob(glob.escape(prefix) + ".*.tmp"):
        match = TEMPORARY_PATTERN.match(candidate.name)
        if match and not pid_alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """True when a process `pid` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as indented JSON, atomically."""
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=False, default=str) + "\n").encode())


def shard_file_name(name: str, shard: tuple[int, int] = (0, 1)) -> str:
    """run.json -> run.shard-I-of-K.json when sharded, so shards never write over each other's records."""
    index, count = shard
    if count == 1:
        return name
    stem, _, suffix = name.partition(".")
    return f"{stem}.shard-{index}-of-{count}.{suffix}"


def write_run_json(
    root: str | os.PathLike, record: dict[str, Any], shard: tuple[int, int] = (0, 1), name: str = "run.json"
) -> Path:
    """Write DIR/run.json (what made the dataset: command, config, version, counts, failures, time), or the record
    `name` of a stage that edits a dataset in place (foreground.json, refine.json); one per shard."""
    path = Path(root) / shard_file_name(name, shard)
    write_json(path, record)
    return path


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; a file that is not JSON is an InputError naming it (never a bare decoder message)."""
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not valid JSON ({error}); rewrite it or remove it") from None
