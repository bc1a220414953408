"""Worker processes for the CPU stages (inspect, import, compose).

Workers start from a fresh interpreter ("forkserver"), not a fork of a parent whose OpenCV thread pool may
already be running (a forked copy of it can deadlock), and each runs OpenCV single-threaded so N workers use
N cores instead of oversubscribing them.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

PRELOAD = ["numpy", "cv2", "PIL.Image", "datagen.compose.run", "datagen.importers", "datagen.inspect"]


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    import cv2

    cv2.setNumThreads(1)
    if initializer is not None:
        initializer(*initargs)


def process_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of `workers` forkserver processes with single-threaded OpenCV."""
    context = multiprocessing.get_context("forkserver")
    # The server imports these once; each worker is then a fork of it, started in milliseconds instead of
    # re-importing numpy, OpenCV and datagen (about a second). Importing starts no OpenCV threads.
    context.set_forkserver_preload(PRELOAD)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(initializer, initargs))


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
