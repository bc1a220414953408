"""Training data: a recipe of dataset directories mixed by weight, read from their files, augmented on the fly.

Sampling is stateless: the samples of optimizer step s on process r come from default_rng([seed, s, r]), and
each sample's augmentation is seeded the same way, so `--resume` at step s continues with exactly the batches
an uninterrupted run would have drawn, for any number of DataLoader workers.
"""

from __future__ import annotations

import os

from datagen.errors import InputError, MissingInputError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates over the network

import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field, fields  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.data import Dataset, Sampler  # noqa: E402

from datagen.io import ImageReadError, read_alpha, read_image, read_pair  # noqa: E402
from datagen.parallel import (  # noqa: E402
    forkserver_context,
    release_freed_memory,
    reuse_freed_memory,
    runs_in_workers,
)
from datagen.records import SPLITS, complete_mask, file_table, names_a_file, parse_spec, rejected_ids  # noqa: E402
from datagen.shards import is_shard_location  # noqa: E402
from ormbg.composites import FIXED_VALIDATION, ComposeSource, OnlineComposites  # noqa: E402
from ormbg.parquet import ParquetRows, lane_of, open_parquet  # noqa: E402
from ormbg.preprocess import image_tensor, prepare  # noqa: E402

runs_in_workers(__name__)  # its functions run in DataLoader workers

log = logging.getLogger(__name__)
HOW_TO_MAKE = {
    "composites": "datagen compose",
    "p3m": "datagen import p3m /path/to/P3M-10k",
    "synth": "datagen synth",
    "ppm100": "datagen import ppm100 /path/to/PPM-100",
    "aim500": "datagen import aim500 /path/to/AIM-500",
    "dis5k": "datagen import dis5k /path/to/DIS5K",
    "am2k": "datagen import am2k /path/to/AM-2k",
}


@dataclass(frozen=True)
class Source:
    """One dataset directory's split in a recipe, sampled with `weight` (relative to the other sources)."""

    path: str
    split: str = "train"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise InputError(f"{self.path}: split {self.split!r} is not one of {', '.join(SPLITS)}")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight <= 0:
            raise InputError(f"{self.path}: weight {self.weight!r} must be a number above 0")

    @property
    def name(self) -> str:
        return f"{Path(self.path).name}:{self.split}"

    @classmethod
    def parse(cls, text: str, default_split: str, option: str) -> Source:
        """`DIR[:SPLIT[:WEIGHT]]` (the --data and --val strings) through records.parse_spec."""
        path, split, weight = parse_spec(text, option, weighted=True)
        return cls(path, split or default_split, weight)


RECIPE_KEYS = ("train", "validation")
SOURCE_KEYS = tuple(f.name for f in fields(Source))


@dataclass(frozen=True)
class Recipe:
    train: tuple[Source | ComposeSource, ...]
    validation: tuple[Source, ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        """A recipe YAML (`train:` and `validation:` lists of {path, split, weight})."""
        if not Path(path).is_file():
            raise MissingInputError(
                f"no recipe at {path}: run from the repository root (where datasets/recipes/ is), or give the "
                "training data with --data DIR[:SPLIT[:WEIGHT]] (and --val DIR[:SPLIT]) or --recipe FILE"
            )
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(yaml.safe_load(file) or {}, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Recipe:
        """From {"train": [...], "validation": [...]} (a recipe file, or the `recipe` of a run's config.yaml);
        unknown keys and bad values are errors that name `where` and the key."""
        if not isinstance(data, dict) or set(data) - set(RECIPE_KEYS):
            unknown = sorted(set(data) - set(RECIPE_KEYS)) if isinstance(data, dict) else data
            raise InputError(f"{where}: unknown recipe keys {unknown}; a recipe has {' and '.join(RECIPE_KEYS)}")

        def sources(key: str) -> tuple[Source, ...]:
            items = data.get(key) or []
            if not isinstance(items, list):
                raise InputError(f"{where}: `{key}` must be a list of {{path, split, weight}}")
            result = []
            for item in items:
                if isinstance(item, dict) and "compose" in item:
                    if key == "validation":
                        raise InputError(f"{where}: `validation` has a compose entry: {FIXED_VALIDATION}")
                    result.append(ComposeSource.from_dict(item, where))
                    continue
                if not isinstance(item, dict) or "path" not in item or set(item) - set(SOURCE_KEYS):
                    unknown = sorted(set(item) - set(SOURCE_KEYS)) if isinstance(item, dict) else item
                    raise InputError(f"{where}: `{key}` entry {item!r}: unknown keys {unknown} (use {SOURCE_KEYS})")
                try:
                    result.append(Source(**item))
                except ValueError as error:
                    raise InputError(f"{where}: `{key}`: {error}") from None
            return tuple(result)

        return cls(sources("train"), sources("validation"))

    @classmethod
    def parse(cls, data: list[str], val: list[str], compose: list[str] | tuple[str, ...] = ()) -> Recipe:
        """From `DIR[:SPLIT[:WEIGHT]]` and `DIR[:SPLIT]` strings (the --data / --val options) and `fg=...,bg=...`
        strings (--compose). The default split of --data is train, of --val validation (test splits are
        benchmarks: named, never assumed). A compose source in --val is refused."""
        for text in val:
            if "fg=" in text or "bg=" in text:
                raise InputError(f"--val {text!r}: {FIXED_VALIDATION}")
        train = [Source.parse(text, "train", "--data") for text in data]
        train += [ComposeSource.parse(text) for text in compose]
        return cls(tuple(train), tuple(Source.parse(text, "validation", "--val") for text in val))


def open_source(source: Source, option: str = "--data", seed: int = 0) -> SamplePairs | ParquetRows:
    """A source's samples: (image path, alpha path) pairs of a dataset directory, or the rows of Parquet shards (a
    folder of them, such as `datagen push --dry-run` stages, or hf://user/name), ordered from `seed`. A --val Hub
    dataset is downloaded once into the Hugging Face cache; a training one is read in place."""
    if is_shard_location(source.path):
        return open_parquet(source.path, source.split, seed, option, download=option == "--val")
    return list_samples(source, option)


class SamplePairs:
    """(image path, alpha path) of a source's samples, sorted by image path, packed as two strings' bytes and their
    offsets in tensors instead of a Python object per sample: DataLoader workers receive the tensors through torch's
    shared memory, so a worker's memory does not grow with the dataset (fork's copy-on-write would copy every object
    it touched; forkserver would pickle them all). Built from Arrow string arrays of names relative to `folder`, with
    no Python object per sample either."""

    def __init__(self, folder: str, images, alphas):
        import pyarrow as pa
        import pyarrow.compute as pc

        self.folder = folder
        keys = [("image", "ascending"), ("alpha", "ascending")]
        order = pc.sort_indices(pa.table({"image": images, "alpha": alphas}), keys)
        self.images, self.alphas = (_packed(pc.take(names, order)) for names in (images, alphas))

    def __len__(self) -> int:
        return len(self.images[0]) - 1

    def __getitem__(self, index: int) -> tuple[str, str]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.folder + _unpacked(self.images, index), self.folder + _unpacked(self.alphas, index)


def _packed(names) -> tuple[torch.Tensor, torch.Tensor]:
    """An Arrow string column (ChunkedArray) as (offsets int64, UTF-8 bytes uint8) tensors in shared memory."""
    import pyarrow as pa

    names = names.combine_chunks().cast(pa.large_string())  # int64 offsets, whatever the names add up to
    _, offsets, data = names.buffers()
    count = len(names)
    offsets = np.frombuffer(offsets, dtype=np.int64)[names.offset : names.offset + count + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    blob = data[offsets[0] : offsets[-1]] if count else data[:0]
    return (
        torch.from_numpy(offsets - offsets[0]).share_memory_(),  # a new array already: no clone
        torch.from_numpy(np.append(blob, np.uint8(0))).share_memory_(),  # a byte more: never empty
    )


def _unpacked(packed: tuple[torch.Tensor, torch.Tensor], index: int) -> str:
    offsets, blob = packed
    start, end = offsets[index : index + 2].tolist()
    return blob[start:end].numpy().tobytes().decode("utf-8")


def list_samples(source: Source, option: str = "--data") -> SamplePairs:
    """The photo samples of a source (image and alpha on disk); a clear error naming `option` when it is missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not Path(source.path).is_dir():
        make = HOW_TO_MAKE.get(Path(source.path).name, "datagen compose or datagen import")
        raise MissingInputError(f"{option} {source.path} does not exist: make it with `{make}`")
    folder = f"{Path(source.path)}{os.sep}{source.split}{os.sep}"  # strings, not Paths: a million rows
    # the samples iter_samples yields, read by Arrow and checked by folder listings (17.5 s -> 5.8 s at 10^6 rows)
    table = file_table(source.path, source.split)
    keep = complete_mask(folder, table)
    for column in ("file_name", "alpha_file_name"):
        keep &= names_a_file(table.column(column))
    if rejected := rejected_ids(source.path):
        dropped = pc.is_in(table.column("id"), value_set=pa.array(list(rejected), pa.string()))
        keep &= ~dropped.to_numpy(zero_copy_only=False)
        log.info("%s: %d samples rejected in rejected.jsonl are left out", source.path, len(rejected))
    if not keep.any():
        raise MissingInputError(f"{option} {source.path} has no image + alpha samples in split {source.split!r}")
    table = table.select(["file_name", "alpha_file_name"]).filter(pa.array(keep))
    del keep
    release_freed_memory()  # the listing's hashes and the other file columns, before the names are sorted and packed
    return SamplePairs(folder, table.column("file_name"), table.column("alpha_file_name"))


class SmallRotation(A.DualTransform):
    """Rotation about the centre by a uniform angle in [-limit, limit] degrees, bilinear, black border; the alpha
    rotated as float with the same matrix. The image is warped as four channels: OpenCV's vectorised 4-channel
    path makes the whole rotation about half as costly as A.Affine's (figures: docs/benchmarks.md)."""

    def __init__(self, limit: float = 10.0, p: float = 0.5):
        super().__init__(p=p)
        self.limit = limit

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        angle = self.py_random.uniform(-self.limit, self.limit)
        return {"matrix": cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)}

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        size = (img.shape[1], img.shape[0])
        if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
            rotated = cv2.warpAffine(cv2.cvtColor(img, cv2.COLOR_RGB2RGBA), matrix, size, flags=cv2.INTER_LINEAR)
            return cv2.cvtColor(rotated, cv2.COLOR_RGBA2RGB)
        return cv2.warpAffine(img, matrix, size, flags=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, matrix: np.ndarray, **params: Any) -> np.ndarray:
        return cv2.warpAffine(mask, matrix, (mask.shape[1], mask.shape[0]), flags=cv2.INTER_LINEAR)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("limit",)


def train_transform(size_px: int) -> A.Compose:
    """Image and alpha together: random resized crop, flip, small rotation (alpha resampled linearly, never
    thresholded); colour jitter (brightness, contrast, hue, saturation) and grid dropout on the image only."""
    return A.Compose(
        [
            A.RandomResizedCrop(
                size=(size_px, size_px),
                scale=(0.4, 1.0),
                ratio=(0.75, 1.333),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_LINEAR,
            ),
            A.HorizontalFlip(p=0.5),
            SmallRotation(limit=10, p=0.3),
            # colour jitter as a brightness/contrast lookup table and an HSV shift: albumentations' ColorJitter
            # with hue costs about twice as much (scripts/bench_train.py; figures in docs/benchmarks.md)
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=0, p=0.5),
            A.GridDropout(ratio=0.2, p=0.1),
        ]
    )


def to_tensors(image: np.ndarray, alpha: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """HxWx3 uint8 + HxW float alpha -> 3xHxW uint8 and 1xHxW float in [0, 1]. The image stays uint8 until it is
    on the device (`normalize`): a quarter of the bytes to pin and copy, and no float pass in the workers."""
    return image_tensor(image), torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None]


class TrainSet(Dataset):
    """Map-style dataset indexed by `MixSampler`'s keys (source, sample index, augmentation seed, step, rank, slot).

    A source is `SamplePairs` (image path, alpha path), `ParquetRows` (the key's index: the how-many-th row of its
    lane) or `OnlineComposites` (drawn from (seed, step, rank, slot))."""

    def __init__(self, sources: list[SamplePairs | ParquetRows | OnlineComposites], size_px: int):
        self.sources, self.size_px = sources, size_px
        self.transform = train_transform(size_px)

    def __len__(self) -> int:
        return sum(len(samples) for samples in self.sources)

    def __getitem__(self, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, str, str]:
        """(3xSxS uint8 image, 1xSxS float alpha, unreadable, what): an unreadable sample is replaced by the next one
        of its source (deterministically); `unreadable` lists the files passed over, as JSON [[path, reason], ...];
        `what` (JSON) is the sample's file, or an online composite's drawn parameters."""
        source, index, seed, step, rank, slot = key
        samples, unreadable = self.sources[source], []
        if isinstance(samples, OnlineComposites):
            image, alpha_u8, what, unreadable = samples.sample(step, rank, slot, self.size_px)
            return self._augment(image, np.multiply(alpha_u8, 1 / 255, dtype=np.float32), seed, unreadable, what)
        for offset in range(MAX_SUBSTITUTES):
            try:
                if isinstance(samples, ParquetRows):  # index: the how-many-th row of its lane (MixSampler)
                    image, alpha_u8, what = samples.sample(step, rank, index + offset)
                else:
                    image_path, alpha_path = samples[(index + offset) % len(samples)]
                    image, alpha_u8 = read_pair(image_path, alpha_path)
                    what = json.dumps({"image": image_path})
                break
            except ImageReadError as error:
                unreadable.append([error.path, error.reason])
        else:
            raise InputError(
                f"{MAX_SUBSTITUTES} unreadable samples in a row, last {unreadable[-1][0]}: run datagen inspect"
            )
        return self._augment(image, np.multiply(alpha_u8, 1 / 255, dtype=np.float32), seed, unreadable, what)

    def _augment(self, image, alpha, seed: int, unreadable: list, what: str):
        self.transform.set_random_seed(seed)
        out = self.transform(image=image, mask=alpha)
        mask = np.asarray(out["mask"], dtype=np.float32)
        pixels, alpha = to_tensors(out["image"], np.clip(mask, 0.0, 1.0, out=mask))  # linear resampling stays in [0, 1]
        return pixels, alpha, json.dumps(unreadable), what


MAX_SUBSTITUTES = 8  # unreadable samples passed over for one slot before training stops


class BadSamples:
    """Unreadable samples met by training or evaluation: each logged once with its path, appended to a JSONL file
    (`path`), counted; more than `limit` stops the job with a ValueError."""

    def __init__(self, limit: int, path: Path | None = None):
        self.limit, self.path, self.seen = limit, path, {}

    @staticmethod
    def default_limit(total: int) -> int:
        """1% of the samples, at least 1: a few bad files are skipped, a broken dataset stops the job."""
        return max(1, total // 100)

    def add(self, path: str, reason: str) -> None:
        if path in self.seen:
            return
        self.seen[path] = reason
        log.warning("unreadable sample skipped: %s (%s)", path, reason)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps({"path": path, "reason": reason}) + "\n")
        if len(self.seen) > self.limit:
            raise InputError(
                f"{len(self.seen)} unreadable samples, more than --max-bad-samples {self.limit} (listed in "
                f"{self.path or 'the log'}): check the data with `datagen inspect DIR`"
            )

    def add_json(self, batch: list[str]) -> None:
        """Add the [[path, reason], ...] lists that the datasets return with each sample."""
        for text in batch:
            for path, reason in json.loads(text):
                self.add(path, reason)


def init_worker(_: int) -> None:
    """DataLoader worker set-up: single-threaded OpenCV, one thread per worker process, freed buffers kept for the
    next samples (`datagen.parallel.reuse_freed_memory`: a quarter less time a 1024 px sample)."""
    cv2.setNumThreads(1)
    reuse_freed_memory()


def loader_options(workers: int, persistent: bool = False) -> dict[str, Any]:
    """DataLoader arguments for `workers` worker processes. They are started by forkserver, not fork: a forked
    copy of a process whose OpenCV thread pool has run (the main process draws curves and resizes with OpenCV)
    can deadlock, and did in a `make test` run. The server has imported this module (`runs_in_workers`), so a worker
    starts in milliseconds instead of importing torch, OpenCV and albumentations itself."""
    if workers == 0:
        return {"num_workers": 0}
    return {
        "num_workers": workers,
        "multiprocessing_context": forkserver_context(),
        "worker_init_fn": init_worker,
        "persistent_workers": persistent,
    }


class MixSampler(Sampler):
    """Keys for `TrainSet`. For step s (from `start_step`) the global batch, `batch_size` samples for each of
    `world_size` processes, is drawn from default_rng([seed, s]): sources by weight, then each source's samples without
    replacement (a sample appears twice in a global batch only when its source has fewer samples than it contributes);
    process `rank` takes its `batch_size` slots of it. Every rank draws the same global batch, so no id is seen twice
    across ranks in a step. Infinite; the training loop stops it.

    A source in `streams` (Parquet shards: read in order, not by index) gets, instead of a sample index, the count of
    rows its lane (`ormbg.parquet.lane_of`, `lanes` per rank) has given before: the lane's next row. The counts up to
    `start_step` are replayed from the draws, so a resumed run reads on where the uninterrupted one would."""

    def __init__(
        self,
        sizes: list[int],
        weights: list[float],
        batch_size: int,
        seed: int,
        rank: int = 0,
        start_step: int = 0,
        world_size: int = 1,
        streams: frozenset[int] = frozenset(),
        lanes: int = 1,
    ):
        total = float(sum(weights))
        self.sizes, self.probabilities = sizes, [w / total for w in weights]
        self.batch_size, self.seed, self.rank, self.start_step = batch_size, seed, rank, start_step
        self.world_size, self.streams, self.lanes = world_size, streams, lanes

    def mine(self, step: int) -> list[tuple[int, int, int]]:
        """This process's slots of step `step`'s global batch."""
        return self.global_batch(step)[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def global_batch(self, step: int) -> list[tuple[int, int, int]]:
        """(source, sample index, augmentation seed) of every slot of step `step`, all ranks, rank-major."""
        rng = np.random.default_rng([self.seed, step])
        slots = self.batch_size * self.world_size
        sources = rng.choice(len(self.sizes), size=slots, p=self.probabilities)
        indices = np.empty(slots, np.int64)
        for source, size in enumerate(self.sizes):
            where = np.flatnonzero(sources == source)
            for start in range(0, len(where), size):  # O(slots) draws without replacement, whatever the source size
                part = where[start : start + size]
                indices[part] = rng.choice(size, len(part), replace=False)
        seeds = rng.integers(2**31, size=slots)
        return [(int(s), int(i), int(a)) for s, i, a in zip(sources, indices, seeds)]

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        """(source, sample index, augmentation seed, step, rank, slot): the last three seed online composites."""
        drawn: dict[tuple[int, int], int] = {}  # (stream source, lane) -> rows read from it so far
        step = 0 if self.streams else self.start_step  # with streams, the steps before start_step are replayed
        while True:
            lane = lane_of(step, self.rank, self.lanes)
            for slot, (source, index, seed) in enumerate(self.mine(step)):
                if source in self.streams:
                    index = drawn.get((source, lane), 0)
                    drawn[source, lane] = index + 1
                if step >= self.start_step:
                    yield source, index, seed, step, self.rank, slot
            step += 1


class EvalSet(Dataset):
    """Samples to score, read one way for `ormbg.evaluate` and for training's validation: the image as `prepare`
    makes it (or, with `predictions`, another model's matte <id>.png from that folder), the alpha at its own size
    (uint8) and the trimap where there is one. Validation thus scores the matte brought back to the ground truth's
    size (`preprocess.mattes_at`) exactly as evaluate does: the same checkpoint and data give the same MAE.

    `samples`: a split's `Sample`s (ids, trimaps and subsets: what evaluate reads), a validation source's
    `SamplePairs`, or `ParquetRows` (evaluate opens them with their ids, subsets and trimaps). `images`: also keep the
    decoded image (the second stage's input). An item is a dict (its `image_ref`: the image's path, or its row in the
    ParquetRows), or {"id", "unreadable": [path, reason]} when a file of it cannot be read. Training batches them
    with `collate_eval`; evaluate takes the list."""

    def __init__(self, samples, size_px: int, predictions: Path | None = None, images: bool = False):
        self.samples, self.size_px, self.predictions, self.images = samples, size_px, predictions, images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"id": f"row {index}", "trimap": None, "subset": ""}
        try:
            return self._read(index, item)
        except ImageReadError as error:
            return {"id": item["id"], "unreadable": [error.path, error.reason]}

    def _read(self, index: int, item: dict[str, Any]) -> dict[str, Any]:
        """Fill `item` (its id first, so an unreadable file still names its sample)."""
        if isinstance(self.samples, ParquetRows):  # id, subset and trimap where the rows have them (evaluation's)
            where = self.samples.locate(index)
            extras = self.samples.extras(*where)
            item.update(id=str(extras.get("id", item["id"])), subset=str(extras.get("subset") or ""), image_ref=index)
            item["trimap"] = extras.get("trimap")
            image, item["alpha"], _ = self.samples.read(*where)
            if self.predictions is not None:
                return self._prediction(item)
        elif isinstance(self.samples, SamplePairs):
            image_path, alpha_path = self.samples[index]
            item["id"] = Path(image_path).stem
            image, item["alpha"] = read_pair(image_path, alpha_path)
        else:
            sample = self.samples[index]
            item["id"] = sample.id
            item.update(image_ref=str(sample.path("image")), subset=str(sample.row.get("subset") or ""))
            item["alpha"] = read_alpha(sample.path("alpha"))
            if sample.path("trimap"):
                item["trimap"] = read_alpha(sample.path("trimap"))
            if self.predictions is not None:
                return self._prediction(item)
            image = read_image(sample.path("image"))
        item["pixels"] = prepare(image, self.size_px)
        if self.images:
            item["image"] = image
        return item

    def _prediction(self, item: dict[str, Any]) -> dict[str, Any]:
        """`item` with another model's matte <id>.png (None where there is none), uint8: an eighth of the bytes to
        pass from the loader worker."""
        path = self.predictions / f"{item['id']}.png"
        item["prediction"] = read_alpha(path) if path.is_file() else None
        return item


def collate_eval(items: list[dict[str, Any]]) -> tuple[torch.Tensor, list, list[str]]:
    """EvalSet items -> (Nx3xSxS pixels, the N alphas at their own sizes, the N unreadable lists as JSON); an
    unreadable item gives zeros and a 1x1 alpha, to be left out."""
    size = next((item["pixels"].shape[-1] for item in items if "pixels" in item), 1)
    pixels = [item.get("pixels", torch.zeros((3, size, size), dtype=torch.uint8)) for item in items]
    alphas = [item.get("alpha", np.zeros((1, 1), np.uint8)) for item in items]
    unreadable = [json.dumps([item["unreadable"]] if "unreadable" in item else []) for item in items]
    return torch.stack(pixels), alphas, unreadable


def describe(recipe: Recipe) -> dict[str, Any]:
    """The recipe as its YAML form (what config.yaml holds and `Recipe.from_dict` reads back)."""
    train = [s.to_dict() if isinstance(s, ComposeSource) else dict(vars(s)) for s in recipe.train]
    return {"train": train, "validation": [dict(vars(s)) for s in recipe.validation]}
