"""Worker processes for the CPU stages (inspect, import, compose).

Workers start from a fresh interpreter ("forkserver"), not a fork of a parent whose OpenCV thread pool may
already be running (a forked copy of it can deadlock), and each runs OpenCV single-threaded so N workers use
N cores instead of oversubscribing them, and keeps the memory it frees for its next buffers (`reuse_freed_memory`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from datagen.errors import InputError
from datagen.io import pid_alive

# What the forkserver imports once, before it forks any worker: the libraries every worker uses, then each module
# that registered itself with `runs_in_workers`.
WORKER_MODULES = ["numpy", "cv2", "PIL.Image"]
PARENT_POLL_S = 0.5  # how often a worker checks that the process that made its pool is alive
# glibc's mallopt parameters (malloc.h) and what a worker sets them to (reuse_freed_memory)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = (128 << 20, 32 << 20)  # the second where a glibc caps the threshold at half its 64 MB heap
TRIM_THRESHOLD_BYTES = 512 << 20


def _libc(name: str):
    """Function `name` of the C library the process runs on (glibc's mallopt, malloc_trim), or None where it has none
    (another C library, or none we can reach)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def _mallopt():
    """glibc's mallopt, or None (`_libc`)."""
    mallopt = _libc("mallopt")
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep the large buffers a worker frees for its next ones. By default a buffer of a few MB
    (a 1024 px float frame is 12 MB) comes from fresh pages, mapped or grown anew after the last one went back to the
    system, and each 4 KB page costs a fault on first touch: rendering a 1024 px composite took about 1,800 faults,
    the training loader about 3,700 a sample. Kept, the pages are reused: the loader's worker 34.3 -> 26.2 ms a sample
    (1,200 samples, half online composites at 1024 px), resident memory flat at 515 MB against 448-467 (peak 507).
    Each worker process calls it at start-up (a Ray task's, not a Ray actor's: an actor loads a model, whose freed host
    copies should go back), a one-worker stage in its own process once it has work (`stage.map_items`, synth's loop,
    refine's and relight's once their model is loaded, pull's rows); a no-op (False) off glibc."""
    mallopt = _mallopt()
    if mallopt is None or not any(mallopt(M_MMAP_THRESHOLD, value) == 1 for value in MMAP_THRESHOLD_BYTES):
        return False  # musl's mallopt, a stub, says 0
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1


MAPPED_BYTES = 4 << 20  # a stage's driver: buffers from this size are mapped on their own (return_freed_memory)


def return_freed_memory() -> bool:
    """Have glibc's malloc map every buffer of MAPPED_BYTES or more on its own, so that it goes back to the system when
    freed. By default glibc raises that threshold to the largest buffer freed so far (up to 32 MB): after the first
    large free, buffers of a few MB (a million hashes, sort orders, a batch of names) come from its heap and, freed,
    stay resident beside what the next phase allocates. A stage's driver sets it as it starts (`stage.stage_run`, and
    `run_import` before it lists its source): the no-op import of 10^6 photos peaked at 270-273 MB with it, 291-293
    without. A stage that then has work in this process switches to `reuse_freed_memory`, as its workers do
    (`stage.map_items` with one worker, synth's loop, refine and relight once their model is loaded). A no-op (False)
    off glibc."""
    mallopt = _mallopt()
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, MAPPED_BYTES) == 1


def release_freed_memory() -> None:
    """Give back what a one-off phase freed and the allocators still hold: Arrow's memory pool (mimalloc or jemalloc
    keep freed pages) and glibc's heap (`malloc_trim`). For a process that runs for hours after it: training, once its
    sources are listed (10^6 rows: 840 MB held after the listing, 450 MB so)."""
    try:
        import pyarrow as pa
    except ImportError:
        pa = None
    if pa is not None:
        pa.default_memory_pool().release_unused()
    if (malloc_trim := _libc("malloc_trim")) is not None:
        malloc_trim(0)


def launcher() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment (`accelerate launch`, `torchrun`); (0, 1, 0)
    when started alone."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def pick_device(device: str = "auto"):
    """One rule for where torch work runs (synth, training, inference, evaluation): `device` as given ("cpu", "cuda",
    "cuda:1", "mps"), or for "auto": this process's CUDA device (cuda:LOCAL_RANK under a launcher), else Apple's
    MPS, else the CPU. Returns a torch.device."""
    import torch

    if device != "auto":
        return _checked_device(device)
    if torch.cuda.is_available():
        _, world, local_rank = launcher()
        return torch.device(f"cuda:{local_rank}" if world > 1 else "cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def torch_dtype(name: str, device: str = "cpu"):
    """The torch dtype of a --dtype / --precision name (fp32, fp16, bf16); "auto": fp16 on an accelerator, fp32 on the
    CPU. The one map of these names for every stage."""
    import torch

    if name == "auto":
        return torch.float32 if str(device) == "cpu" else torch.float16
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _checked_device(device: str):
    """torch.device(device) when this machine has it; else a ValueError naming --device and what there is."""
    import torch

    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device {device}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this machine has no CUDA device (or torch was built without CUDA); "
                         "use --device cpu, or auto")  # fmt: skip
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise InputError(f"--device {device}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 ...)")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {device}: MPS is not available here; use --device cpu, or auto")
    return chosen


def _exit_with_parent(parent: int) -> None:
    """Exit this worker as soon as `parent` is gone (killed with SIGKILL, it cannot shut its pool down; the
    workers would otherwise wait for work that never comes, holding memory and the resource tracker)."""
    while pid_alive(parent):
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _start_worker(parent: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    import cv2

    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    cv2.setNumThreads(1)
    reuse_freed_memory()
    if initializer is not None:
        initializer(*initargs)


def runs_in_workers(module: str) -> None:
    """Register `module`, whose functions run in worker processes, for the forkserver to import before it forks any
    worker: each worker is then a fork of it, started in milliseconds instead of importing the module and its
    libraries itself (about a second; training's data code, with torch, 2.5 s). Modules call it when imported. A
    process has one server, started by its first pool with what is registered by then, so code that imports the
    compose and the training modules before starting either (a notebook, the tests) gets one server for both; before
    this, a server started by compose made every later DataLoader worker import torch itself."""
    if module not in WORKER_MODULES:
        WORKER_MODULES.append(module)


def forkserver_context():
    """The start method of every worker pool here: the forkserver, preloaded with WORKER_MODULES (importing starts no
    OpenCV threads, so its forks are safe)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_MODULES))
    return context


def process_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of `workers` forkserver processes with single-threaded OpenCV, which exit when this
    process dies (the caller's module registers itself with `runs_in_workers`)."""
    initargs = (os.getpid(), initializer, initargs)
    return ProcessPoolExecutor(workers, mp_context=forkserver_context(), initializer=_start_worker, initargs=initargs)


def bounded_map(pool, function: Callable[..., Any], arguments: Iterable[tuple], window: int) -> Iterator[Any]:
    """`function(*args)` for each tuple of `arguments` on `pool`, results in order, at most `window` in flight: a
    million items are never all submitted at once (Executor.map would queue every one before the first result)."""
    pending: deque = deque()
    try:
        for args in arguments:
            pending.append(pool.submit(function, *args))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # an error, Ctrl-C or a consumer that stops: what has not started is not run (as Executor.map)
        for future in pending:
            future.cancel()


@contextmanager
def single_threaded_opencv() -> Iterator[None]:
    """OpenCV on one thread for the duration (a one-worker run then uses one core, like each pool worker)."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
