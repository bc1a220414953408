"""`--ray`: every per-sample stage on a (local) Ray instance gives the bytes of a local run; the driver writes every
row; a killed worker's batch is retried; a Ctrl-C of the driver leaves a directory that a rerun resumes.

Ray runs in this process (`ray.init(num_cpus=2)`, dashboard off), as on a one-node cluster; each test asserts from
run.json's `ray` record that two worker processes ran its batches, so a run that quietly stayed local fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import ray
import torch
from click.testing import CliRunner

from datagen import cluster
from datagen.cli import cli
from datagen.compose import run as compose_run
from datagen.compose.config import ComposeConfig
from datagen.foreground import ForegroundConfig, run_foreground
from datagen.importers import ImportConfig, run_import
from datagen.io import OutputError
from datagen.records import ResumeState, read_rows, write_sample
from datagen.refine import RefineConfig, run_refine
from datagen.samples import make_p3m_tree
from datagen.synth import SynthConfig, run_synth
from tests.conftest import directory_bytes
from tests.test_compose import pools  # noqa: F401  (a fixture)
from tests.test_foreground import photo_dataset
from tests.test_refine import coarse_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance of two CPUs for the module; the stages' `connect` reuses it. Both worker processes are
    started before the first test: a stage's few millisecond batches could otherwise all run on the first worker
    while the second is still starting on a loaded machine, and `ray_record` would fail for the environment."""
    ray.init(num_cpus=2, include_dashboard=False)

    @ray.remote(num_cpus=1)
    def pid_after(seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    deadline = time.monotonic() + 120
    while len(set(ray.get([pid_after.remote(0.5) for _ in range(2)]))) < 2:  # two tasks at once on two processes
        assert time.monotonic() < deadline, "the local Ray instance never ran two worker processes at once"
    yield
    ray.shutdown()


def data(out) -> dict[str, bytes]:
    """directory_bytes without the records of in-place stages (foreground.json, refine.json: they hold times)."""
    records = ("foreground.json", "refine.json")
    return {path: value for path, value in directory_bytes(out).items() if path not in records}


def ray_record(out, name="run.json") -> dict:
    record = json.loads((out / name).read_text())["ray"]
    assert record["worker_processes"] == 2 and record["nodes"] == 1, record  # the parallelism we asked for
    return record


def compose(pools, out, **options):  # noqa: F811
    fg, bg = pools
    config = ComposeConfig(out=out, foregrounds=(fg,), backgrounds=(bg,), n=24, size=(96, 112), progress=False)
    return compose_run.run_compose(dataclasses.replace(config, **options))


def test_ray_workers_reuse_the_memory_they_free():
    """As a local pool's workers (tests/test_train.py): a Ray task's process keeps freed buffers for the next ones."""
    from tests.conftest import freed_frames_returned_mb

    returned = list(cluster.ray_map(freed_frames_returned_mb, [0, 1], cluster.LOCAL, batch_size=1))
    assert max(returned) < 4, returned  # MB; about 36 in a process as started (tests/test_train.py measures it)


def test_compose_on_ray_equals_the_local_run_byte_for_byte(pools, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(compose_run, "RAY_BATCH", 4)
    compose(pools, tmp_path / "local")
    result = compose(pools, tmp_path / "ray", ray=cluster.LOCAL)
    assert result.new == 24 and result.ray["batches"] == 6
    assert directory_bytes(tmp_path / "ray") == directory_bytes(tmp_path / "local")
    ray_record(tmp_path / "ray")


def test_a_killed_ray_worker_is_retried_and_the_output_still_equals_the_local_run(pools, tmp_path, monkeypatch):  # noqa: F811
    """SIGKILL the first worker process seen running a batch; Ray runs that batch again elsewhere."""
    monkeypatch.setattr(compose_run, "RAY_BATCH", 2)
    compose(pools, tmp_path / "local", n=40, size=(256, 256))
    killed: list[int] = []
    done = threading.Event()

    def kill_one_worker():
        while not done.is_set() and not killed:
            for path in glob.glob("/proc/[0-9]*/cmdline"):
                try:
                    with open(path, "rb") as file:
                        title = file.read().split(b"\0")[0]
                except OSError:
                    continue
                if title == b"ray::_run_batch":
                    os.kill(int(path.split("/")[2]), signal.SIGKILL)
                    killed.append(int(path.split("/")[2]))
                    break
            time.sleep(0.005)

    watcher = threading.Thread(target=kill_one_worker, daemon=True)
    watcher.start()
    try:
        result = compose(pools, tmp_path / "ray", n=40, size=(256, 256), ray=cluster.LOCAL)
    finally:
        done.set()
        watcher.join()
    assert killed, "no worker was killed: the run ended before one was seen working"
    assert result.new == 40 and result.skipped == {}
    assert directory_bytes(tmp_path / "ray") == directory_bytes(tmp_path / "local")


def test_a_ctrl_c_of_the_driver_leaves_a_directory_a_rerun_resumes(pools, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(compose_run, "RAY_BATCH", 4)
    compose(pools, tmp_path / "local")
    real, added = ResumeState.add, []

    def interrupted_at_the_tenth_row(self, split, row):
        added.append(row["id"])
        if len(added) == 10:
            raise KeyboardInterrupt
        real(self, split, row)

    monkeypatch.setattr(ResumeState, "add", interrupted_at_the_tenth_row)
    with pytest.raises(KeyboardInterrupt):
        compose(pools, tmp_path / "ray", ray=cluster.LOCAL)
    # the batches in flight are left to finish (ray_map never cancels): let them, so none of them (or a retry of one)
    # is still writing, temporaries and all, when the rerun's directory is compared
    wait_until_ray_is_idle()
    monkeypatch.setattr(ResumeState, "add", real)
    assert len(read_rows(tmp_path / "ray", "train")) == 9
    result = compose(pools, tmp_path / "ray", ray=cluster.LOCAL)  # a Ray rerun; a local one resumes the same way
    assert (result.new, result.existing) == (15, 9)
    assert directory_bytes(tmp_path / "ray") == directory_bytes(tmp_path / "local")


def wait_until_ray_is_idle(timeout_s: float = 120) -> None:
    """Until every CPU of the local instance is free (no task running) at three looks 0.2 s apart."""
    deadline, free = time.monotonic() + timeout_s, 0
    while free < 3:
        assert time.monotonic() < deadline, "tasks of the interrupted run still hold the local Ray instance's CPUs"
        idle = ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU", 0)
        free = free + 1 if idle else 0
        time.sleep(0.2)


def rows_as_set(out) -> set[str]:
    return {
        json.dumps(row, sort_keys=True) for split in ("train", "validation", "test") for row in read_rows(out, split)
    }


def files_but_rows(out) -> dict[str, bytes]:
    return {path: data for path, data in directory_bytes(out).items() if not path.endswith("metadata.jsonl")}


def test_procedural_synth_on_ray_equals_the_local_run(tmp_path, monkeypatch):
    import datagen.synth as synth

    monkeypatch.setattr(synth, "PROCEDURAL_RAY_BATCH", 5)
    base = dict(backend="procedural", n=30, size=(64, 80), seed=3, progress=False)
    local = run_synth(SynthConfig(out=tmp_path / "local", **base))
    on_ray = run_synth(SynthConfig(out=tmp_path / "ray", ray=cluster.LOCAL, **base))
    assert (on_ray.new, on_ray.failed, on_ray.rejected) == (local.new, local.failed, local.rejected)
    assert sum(local.rejected.values()) > 0  # a retried person is part of what must agree
    # rows may come in another order (a local run queues a rejected person's next attempt behind the others)
    assert rows_as_set(tmp_path / "ray") == rows_as_set(tmp_path / "local")
    assert files_but_rows(tmp_path / "ray") == files_but_rows(tmp_path / "local")
    ray_record(tmp_path / "ray")


def test_import_on_ray_equals_the_local_run_byte_for_byte(tmp_path, monkeypatch):
    import datagen.importers as importers

    monkeypatch.setattr(importers, "RAY_BATCH", 3)
    src = make_p3m_tree(tmp_path / "src", n_train=8, n_test=3, height=32, width=24, image_ext=".png")
    run_import("p3m", src, ImportConfig(out=tmp_path / "local", progress=False))
    result = run_import("p3m", src, ImportConfig(out=tmp_path / "ray", ray=cluster.LOCAL, progress=False))
    assert result.new == 14  # 8 train + 3 of each test subset
    assert directory_bytes(tmp_path / "ray") == directory_bytes(tmp_path / "local")
    ray_record(tmp_path / "ray")


def test_foreground_on_ray_equals_the_local_run(tmp_path, monkeypatch):
    import datagen.foreground as foreground

    monkeypatch.setattr(foreground, "RAY_BATCH", 2)
    for name in ("local", "ray"):
        photo_dataset(tmp_path / name, n=6)
    run_foreground(ForegroundConfig(tmp_path / "local", method="blur-fusion", progress=False))
    result = run_foreground(ForegroundConfig(tmp_path / "ray", method="blur-fusion", ray=cluster.LOCAL, progress=False))
    assert result.new == 6 and result.rows_updated == {"train": 6}
    assert data(tmp_path / "ray") == data(tmp_path / "local")
    ray_record(tmp_path / "ray", "foreground.json")


@contextlib.contextmanager
def one_torch_thread():
    """A local run as each Ray worker of one CPU runs (Ray sets OMP_NUM_THREADS=1 there): torch's CPU sums depend on
    the thread count, so model stages on CPUs are compared at one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_refine_on_ray_actors_equals_the_local_run(tmp_path, tiny_vitmatte):
    """ViTMatte on actors (one per CPU here with --device cpu; one per GPU on a cluster), each loading it once."""
    for name in ("local", "ray"):
        coarse_dataset(tmp_path / name, n=6, size=(60, 44))
    base = dict(model=str(tiny_vitmatte), offline=True, device="cpu", batch_size=2, progress=False)
    with one_torch_thread():
        run_refine(RefineConfig(tmp_path / "local", **base))
    result = run_refine(RefineConfig(tmp_path / "ray", ray=cluster.LOCAL, **base))
    assert result.refined == 6 and result.ray["batches"] == 3
    assert data(tmp_path / "ray") == data(tmp_path / "local")
    ray_record(tmp_path / "ray", "refine.json")


def test_a_gpu_stage_on_a_cluster_without_gpus_says_what_to_do(tmp_path, tiny_vitmatte):
    coarse_dataset(tmp_path / "d", n=2, size=(40, 30))
    config = RefineConfig(tmp_path / "d", model=str(tiny_vitmatte), offline=True, ray=cluster.LOCAL, progress=False)
    with pytest.raises(cluster.RayUnavailable, match="--device cpu"):
        run_refine(config)


def test_relative_paths_are_refused_on_a_cluster_and_a_missing_ray_names_the_install(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--out runs/x: a relative path"):
        ComposeConfig(out="runs/x", foregrounds=(str(tmp_path),), backgrounds=(str(tmp_path),), ray="auto")
    with pytest.raises(ValueError, match="--fg data/people:train"):
        ComposeConfig(out=tmp_path, foregrounds=("data/people:train",), backgrounds=(str(tmp_path),), ray="auto")
    ComposeConfig(out="runs/x", ray=cluster.LOCAL)  # one machine: a relative path is the same folder for every worker

    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    photo_dataset(tmp_path / "d", n=1)
    result = CliRunner().invoke(cli, ["foreground", str(tmp_path / "d"), "--no-progress", "--ray"])
    assert result.exit_code == 1 and "pip install -e '.[ray]'" in result.output and "Traceback" not in result.output


def test_ray_option_takes_an_address_or_none():
    for name in ("synth", "import", "compose", "foreground", "refine", "relight"):
        command, arguments = cli.commands[name], {"import": ["folder", "."], "foreground": ["."], "refine": ["."],
                                                  "relight": ["."]}.get(name, [])  # fmt: skip
        for given, expected in (([], None), (["--ray"], "local"), (["--ray", "ray://head:10001"], "ray://head:10001")):
            assert command.make_context(name, [*arguments, *given]).params["ray"] == expected, (name, given)


def test_batches_come_back_in_order_from_tasks_and_actors():
    squares = [x * x for x in range(23)]
    assert list(cluster.ray_map(np.square, list(range(23)), batch_size=4)) == squares
    assert list(cluster.ray_map(np.square, list(range(23)), batch_size=5, actors=True)) == squares


def test_an_error_on_a_worker_comes_back_as_its_own_class_and_one_line():
    """A worker's OutputError is the driver's OutputError: the CLI prints its one line (naming the file)."""

    def fails_on_three(x):  # nested: pickled by value (workers cannot import this test module)
        if x == 3:
            raise OutputError(28, f"/shared/out/train/im/sample-{x}.jpg: no space left on device")
        return x

    with pytest.raises(OutputError) as caught:
        list(cluster.ray_map(fails_on_three, list(range(6)), batch_size=2))
    message = str(caught.value)
    assert message.endswith("/shared/out/train/im/sample-3.jpg: no space left on device") and "\n" not in message
    assert "raised on a Ray worker" in "".join(caught.value.__notes__)


def test_relight_on_ray_actors_equals_the_local_run(tmp_path, monkeypatch):
    """IC-Light (a tiny SD1.5 built in code) on actors that load it once each; the same rows and bytes."""
    import datagen.relight as relight
    from datagen.relight import AlignmentThresholds, RelightConfig, run_relight
    from tests.test_relight import photo
    from tests.tiny_sd15 import tiny_offset, tiny_sd15

    monkeypatch.setattr(relight, "RAY_BATCH", 1)
    base = tiny_sd15(tmp_path / "sd15")
    offset = tiny_offset(base, "fbc", tmp_path / "sd15" / "iclight_sd15_fbc.safetensors", scale=0.01)
    src = tmp_path / "composites"
    for index in range(4):
        image, alpha = photo(index)
        write_sample(src, "train", f"c{index}", image=image, alpha=alpha, metadata={"source": "composite"})
    config = dict(
        src=src, model=str(base), weights=str(offset), steps=2, size_px=64, highres_scale=1.5, device="cpu",
        dtype="fp32", offline=True, thresholds=AlignmentThresholds.accept_all(), progress=False,
    )  # fmt: skip
    with one_torch_thread():
        run_relight(RelightConfig(out=tmp_path / "local", **config))
    result = run_relight(RelightConfig(out=tmp_path / "ray", ray=cluster.LOCAL, **config))
    assert result.new == 4 and result.ray["batches"] == 4
    assert directory_bytes(tmp_path / "ray") == directory_bytes(tmp_path / "local")
    ray_record(tmp_path / "ray")
