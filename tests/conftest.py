"""Every fixture is made in code: no downloads, no files checked in but tests/data/ key lists."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the app tests: no network calls

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from datagen.alpha import over  # noqa: E402
from datagen.procedural import draw_background, draw_person  # noqa: E402
from datagen.records import write_sample  # noqa: E402

_BESIDE: dict[str, tuple[Future, Path]] = {}
_BESIDE_THREAD: list[ThreadPoolExecutor] = []


def pytest_collection_modifyitems(items):
    """Tests marked `beside` last, so their subprocesses have the whole suite's time to finish."""
    items.sort(key=lambda item: item.get_closest_marker("beside") is not None)


def pytest_collection_finish(session):
    """Tests marked `beside(start)` wait on subprocesses and need no fixture: `start(folder)` is called as soon as the
    suite is collected, one after another in one thread, and the test (run last) reads what it returned through the
    `beside` fixture. The demo twice (40 s), the learning run (45 s, one torch thread) and the two-process training
    runs then use this 2-core machine's second core, which the in-process tests leave mostly idle, at a lower priority
    (`_lower_priority`): `make test` 268 s -> 192 s here (2026-12-02). The tests' assertions are the same; only when
    their subprocesses run changes."""
    marked = [item for item in session.items if item.get_closest_marker("beside")]
    if marked:
        thread = ThreadPoolExecutor(1, thread_name_prefix="beside", initializer=_lower_priority)
        _BESIDE_THREAD.append(thread)
        for item in marked:
            folder = Path(tempfile.mkdtemp(prefix="ormbg-beside-"))
            _BESIDE[item.nodeid] = (thread.submit(item.get_closest_marker("beside").args[0], folder), folder)


def _lower_priority() -> None:
    """Nice 10 for the beside thread, and so for the subprocesses it starts (Linux keeps a nice value per thread and a
    child inherits its thread's): they fill the idle core without slowing the tests that run in this process."""
    if sys.platform == "linux":  # elsewhere the id would name a process, not this thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def pytest_sessionfinish(session):
    """A session stopped early (-x, Ctrl-C) does not wait for the jobs not yet started, nor leaves their folders."""
    for thread in _BESIDE_THREAD:
        thread.shutdown(wait=True, cancel_futures=True)
    for _, folder in _BESIDE.values():
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def beside(request):
    """What this test's `beside(start)` marker's start(folder) returned (it ran from the start of the suite)."""
    future, folder = _BESIDE[request.node.nodeid]
    try:
        yield future.result()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def person() -> np.ndarray:
    """A 96x64 RGBA person-like foreground with soft edges and semi-transparent hair strands."""
    return draw_person(np.random.default_rng([7, 0]), 96, 64)


@pytest.fixture(params=[(97, 131), (50, 33), (301, 199)], ids=lambda s: f"{s[0]}x{s[1]}")
def background(request) -> np.ndarray:
    """Backgrounds of odd sizes (height, width)."""
    height, width = request.param
    return draw_background(np.random.default_rng([11, height, width]), height, width)


def write_demo_dataset(
    root, n_train: int = 3, n_test: int = 2, size=(96, 64), trimap: bool = False, n_validation: int = 0
):
    """A small contract directory of procedural persons over procedural backgrounds; returns the rows."""
    height, width = size
    rows = []
    for split, count in (("train", n_train), ("validation", n_validation), ("test", n_test)):
        for index in range(count):
            rng = np.random.default_rng([1, index, len(split)])
            foreground = draw_person(rng, height, width)
            image = over(foreground, draw_background(rng, height, width))
            alpha = foreground[..., 3]
            extra = {}
            if trimap:
                extra["trimap"] = np.where(alpha == 0, 0, np.where(alpha == 255, 255, 128)).astype(np.uint8)
            rows.append(
                write_sample(
                    root,
                    split,
                    f"demo-{split}-{index}",
                    image=image,
                    alpha=alpha,
                    metadata={"source": "procedural", "license": "Apache-2.0"},
                    **extra,
                )
            )
    return rows


@pytest.fixture
def dataset_dir(tmp_path):
    """A written dataset directory: train (3) and test (2), procedural persons, with trimaps."""
    root = tmp_path / "ds"
    write_demo_dataset(root, trimap=True)
    (root / "README.md").write_text("# demo\n")
    (root / "run.json").write_text("{}\n")
    return root


def directory_bytes(out) -> dict[str, bytes]:
    """Every file below `out` by relative path, except run records and refine's soft-share cache (they hold times) and
    lock files (one per shard): for equality checks."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file()
        and not (p.name.startswith("run.") and p.suffix == ".json")
        and not p.name.startswith(".lock")
        and p.name != "refine-soft.jsonl"
    }


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A published-layout ORMBG state dict (`ormbg.pth`) with random weights and random batch-norm statistics,
    so that its mattes vary across the image like a trained model's (default statistics give ~0.5 everywhere)."""
    import torch

    from ormbg.model import ORMBG

    torch.manual_seed(0)
    model = ORMBG()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    model.side1.weight.data.mul_(50)  # logits of a few units, as a trained model gives
    path = tmp_path_factory.mktemp("weights") / "ormbg.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_vitmatte(tmp_path_factory):
    """A tiny random ViTMatte checkpoint folder (config + weights via save_pretrained), loaded like a real one."""
    import torch
    from transformers import VitMatteForImageMatting

    from datagen.refine import vitmatte_config

    torch.manual_seed(0)
    config = vitmatte_config("tiny")
    folder = tmp_path_factory.mktemp("vitmatte") / "tiny-vitmatte"
    VitMatteForImageMatting(config).save_pretrained(folder)
    return folder


def freed_frames_returned_mb(_: object = None) -> float:
    """MB of resident memory a process gives back when it frees three 1024 px float frames it has just made (as a
    render or a training sample does): about 36 where freed buffers go back to the system (each next one then faults
    on every page), none where they are kept for the next ones. Counted in MB, not faults: huge pages change the
    count of faults, not this."""

    def resident_mb() -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    frames = [np.ones((1024, 1024, 3), np.float32) for _ in range(3)]
    before = resident_mb()
    del frames
    return before - resident_mb()


class FaultProbe:
    """A Dataset of one item: `freed_frames_returned_mb` in the DataLoader worker that reads it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> float:
        return freed_frames_returned_mb()


def count_pool_processes(monkeypatch, module) -> list[int]:
    """How many worker processes each pool that `module` opens started (its `process_pool` wrapped), appended to the
    list returned as each pool shuts down: a test of `workers=N` asserts it got N, not one process that gave the same
    answer."""
    started, process_pool = [], module.process_pool

    def counted(*args, **kwargs):
        pool = process_pool(*args, **kwargs)
        shutdown = pool.shutdown

        def counted_shutdown(*args, **kwargs):
            if pool._processes is not None:  # the first shutdown; it forgets its processes
                started.append(len(pool._processes))
            shutdown(*args, **kwargs)

        pool.shutdown = counted_shutdown
        return pool

    monkeypatch.setattr(module, "process_pool", counted)
    return started
