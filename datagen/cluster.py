"""Ray for the per-sample stages (`--ray [ADDRESS]` on synth, compose, import, foreground, refine and relight).

The driver (the `datagen` process) plans the work exactly as a local run does and stays the only writer of rows:
`ray_map` sends batches of jobs to Ray, each worker writes the sample files (atomically, under the output
directory) and returns what the local per-sample function returns (a row, a Skip, ...), and the driver records the
results in job order, as it does for its own process pool. Nothing depends on file locks across machines.

- CPU stages run as Ray tasks (`num_cpus=1`, retried by Ray when a worker dies: `max_retries`). A task carries a
  batch of jobs, so Ray's per-task cost (about a millisecond) stays small beside the batch's work; each worker
  process runs the stage's set-up once (pools, caches) and keeps it for the later batches it gets.
- GPU stages (synth with LayerDiffuse, refine, relight) run on actors (`num_gpus=1`), one per GPU, each loading its
  pipeline once: a task would reload it for every batch (Ray ends a GPU task's process after each call). Ray
  restarts a dead actor and retries its batch (`max_restarts`, `max_task_retries`). `--device cpu` runs the same
  actors on CPUs (one per CPU), which is how CI tests them.

Every job writes files that depend only on the job (seed, index, inputs), so a retried batch rewrites the same
bytes and a Ray run equals a local one. The output directory must be on storage every node mounts at the same path.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.parallel import reuse_freed_memory

LOCAL = "local"  # `--ray` without a value: a Ray instance on this machine, started for the run
INSTALL = "pip install -e '.[ray]'  (or: pip install 'ray[data]>=2.40')"
IN_FLIGHT_PER_WORKER = 2  # batches submitted per worker beyond the one it runs: workers never wait for the driver
MAX_RETRIES = 3  # a batch whose worker died is run again this many times before the run fails
PASSED_ENVIRONMENT = ("NO_ALBUMENTATIONS_UPDATE", "HF_HUB_OFFLINE", "HF_HOME", "HF_TOKEN", "OMP_NUM_THREADS")
HELP = (
    "Run on Ray: a local Ray instance (no value), `auto` (the cluster this machine belongs to), `ray://HOST:10001` "
    "or `HOST:6379`. Install with " + INSTALL + ". On a cluster, paths must name storage that every node mounts at "
    "the same place (relative paths are refused); this process plans the work and writes every row."
)


@dataclass
class RayReport:
    """What a stage's Ray run used, for its run.json (`ray`): the address, batches run, and the worker processes
    and nodes that ran them (a test asserts the parallelism it got from these)."""

    address: str
    batches: int = 0
    processes: set[str] = field(default_factory=set)  # "<node id>:<pid>"

    def to_record(self) -> dict[str, Any]:
        nodes = {process.split(":")[0] for process in self.processes}
        return {"address": self.address, "batches": self.batches, "worker_processes": len(self.processes),
                "nodes": len(nodes)}  # fmt: skip


_REPORTS: list[RayReport] = []


@contextmanager
def recording(address: str | None) -> Iterator[RayReport | None]:
    """Around a stage's run: every ray_map inside it counts into the yielded RayReport (None without Ray)."""
    if not address:
        yield None
        return
    report = RayReport(address)
    _REPORTS.append(report)
    try:
        yield report
    finally:
        _REPORTS.remove(report)


class RayUnavailable(InputError):
    """--ray without Ray installed, or a cluster that cannot run the stage (no GPU)."""


def ray_module():
    """The `ray` package, or a RayUnavailable that says how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def connect(address: str = LOCAL):
    """Connect to Ray once per process (a later call reuses the connection; tests start their own instance first).
    `address`: LOCAL starts an instance on this machine; anything else is passed to `ray.init(address=...)`."""
    ray = ray_module()
    if not ray.is_initialized():
        environment = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
        options: dict[str, Any] = {"include_dashboard": False, "runtime_env": {"env_vars": environment}}
        if address != LOCAL:
            options["address"] = address
        ray.init(**options)
    return ray


def check_shared_paths(address: str | None, paths: dict[str, Any]) -> None:
    """On a cluster (an address, not LOCAL) a relative path would name another folder on each node: refuse it, naming
    the option. `paths`: option -> path (or list of paths; a spec `PATH[:SPLIT[:WEIGHT]]` is judged by its path)."""
    if address in (None, LOCAL):
        return
    for option, value in paths.items():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path is not None and not Path(str(path)).is_absolute():
                raise InputError(
                    f"{option} {path}: a relative path names a different folder on each Ray node; give an absolute "
                    "path on storage every node mounts at the same place (NFS, Lustre, a bucket mount)"
                )


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` items (the last may be shorter), taken from `items` as they come (a sequence, or rows made a
    batch at a time)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def ray_map(
    function: Callable[[Any], Any],
    items: Collection[Any],  # sized (an empty one starts no Ray) and iterated once, in order
    address: str = LOCAL,
    setup: Callable[..., None] | None = None,
    setup_args: tuple = (),
    batch_size: int = 16,
    gpus: float = 0,
    actors: bool = False,
    per_batch: bool = False,
) -> Iterator[Any]:
    """`function(item)` for every item on Ray, results in item order (as `map`), a bounded window in flight.

    `setup(*setup_args)` runs once in each worker process before its first batch (what a local pool's initializer
    does). `per_batch`: `function` takes the whole batch and returns a list of results, one per item (GPU stages
    batch their model calls). `actors` (implied by `gpus`): long-lived workers, one per GPU (`gpus` each) or per CPU.
    """
    if not items:
        return  # nothing to do (a resumed run that is complete): no Ray instance is started for it
    ray = connect(address)
    resources = ray.cluster_resources()
    held = [ray.put((setup, setup_args))]  # inside a list: Ray passes the reference, not the value, to each task
    if actors or gpus:
        submit, workers = _actor_pool(ray, resources, held, gpus, function, per_batch)
    else:
        remote = ray.remote(_run_batch).options(num_cpus=1, max_retries=MAX_RETRIES)
        workers = max(1, int(resources.get("CPU", 1)))

        def submit(batch):
            return remote.remote(function, held, batch, per_batch), None

    # Ctrl-C or an error stops the sending; what is in flight is left to finish, never ray.cancel-ed: cancelling a
    # running task races with its reply and aborts the driver's process ("Check failed: it !=
    # submissible_tasks_.end() Tried to complete task that was not pending", ray-project/ray#54846; it killed this
    # project's test process once). A batch that finishes writes files without rows (the driver writes every row),
    # which a rerun writes again with the same bytes; a CLI driver's exit ends its job's tasks.
    window: deque = deque()
    for batch in batched(items, batch_size):
        window.append(submit(batch))
        if len(window) >= workers * (1 + IN_FLIGHT_PER_WORKER):
            yield from _take(ray, window)
    while window:
        yield from _take(ray, window)


def _take(ray, window: deque) -> list[Any]:
    reference, release = window.popleft()
    try:
        process, results = ray.get(reference)
    except ray.exceptions.RayTaskError as error:
        raise _worker_error(ray, error) from None
    finally:
        if release:
            release()
    for report in _REPORTS:
        report.batches += 1
        report.processes.add(process)
    return results


def _worker_error(ray, error) -> BaseException:
    """The exception a worker raised, as its own class (an OutputError stays one line naming the file, as in a local
    run), with the worker's traceback as a note; Ray's own failures (a node lost) as Ray raised them."""
    cause = getattr(error, "cause", None)
    if not isinstance(cause, Exception) or isinstance(cause, ray.exceptions.RayError):
        return error
    cause.add_note(f"(raised on a Ray worker:)\n{error}")  # Ray's message: the worker's pid, node and traceback
    return cause


def _actor_pool(ray, resources: dict[str, float], held: list, gpus: float, function: Callable, per_batch: bool):
    """(submit, worker count) for a pool of actors: one per GPU (or per CPU when `gpus` is 0), the next batch to the
    actor with the fewest batches in flight."""
    if gpus:
        count = int(resources.get("GPU", 0) // gpus)
        if count < 1:
            raise RayUnavailable(
                "the Ray cluster has no GPU for this stage: start nodes with GPUs (`ray start ... --num-gpus N`), or "
                "add --device cpu to run it on the cluster's CPUs"
            )
        options = {"num_gpus": gpus, "num_cpus": 1}
    else:
        count, options = max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}
    actor_class = ray.remote(_StageActor).options(max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES, **options)
    actors = [actor_class.remote() for _ in range(count)]
    load = [0] * count

    def submit(batch):
        chosen = load.index(min(load))
        load[chosen] += 1

        def release():
            load[chosen] -= 1

        return actors[chosen].run.remote(function, held, batch, per_batch), release

    return submit, count


_PREPARED: list[str] = []  # the setups this worker process has run (by object id); a later batch reuses them


def _prepare(held: list, task: bool) -> None:
    import ray

    key = held[0].hex()
    if key in _PREPARED:
        return
    import cv2

    cv2.setNumThreads(1)  # one core per task, as in the local pool (Ray gives each task one CPU)
    if task:  # as a pool's worker; not an actor, which loads a model (freed host copies of its weights go back)
        reuse_freed_memory()
    setup, setup_args = ray.get(held[0])
    if setup is not None:
        setup(*setup_args)
    _PREPARED[:] = [key]


def _run_items(function: Callable, batch: list, per_batch: bool) -> list[Any]:
    results = function(batch) if per_batch else [function(item) for item in batch]
    if len(results) != len(batch):
        raise RuntimeError(f"{function.__name__} returned {len(results)} results for {len(batch)} jobs")
    return results


def _run_batch(
    function: Callable, held: list, batch: list, per_batch: bool, task: bool = True
) -> tuple[str, list[Any]]:
    """A Ray task (or, `task` False, an actor's call): this process's set-up (once), then the batch. Returns
    ("<node id>:<pid>", the results)."""
    import ray

    _prepare(held, task)
    results = _run_items(function, batch, per_batch)
    return f"{ray.get_runtime_context().get_node_id()[:12]}:{os.getpid()}", results


class _StageActor:
    """A Ray actor: the stage's set-up (loading its pipeline) before its first batch, then batch after batch in the
    same process. (The set-up is not a constructor argument: a restarted actor then needs nothing kept for it.)"""

    def run(self, function: Callable, held: list, batch: list, per_batch: bool) -> tuple[str, list[Any]]:
        return _run_batch(function, held, batch, per_batch, task=False)
