"""What `--ray` costs against the local process pool on one machine: `datagen compose` of N composites.

    python scripts/bench_ray.py [--n 2000] [--size 512] [--workers 2] [--work runs/bench-ray]

Builds procedural pools once (people and backgrounds, as `datagen synth --backend procedural` makes them), then runs,
each in a fresh process and into an empty directory, `datagen compose --workers W` (the local pool; W defaults to
this machine's cores) and `datagen compose --ray` (a local Ray instance started by the command, one worker per
core), --rounds times in alternation, and prints the wall time of each command (Ray's start-up included) and the
seconds the stage recorded in run.json, with the ratio Ray / local of the best of each, and whether both outputs
are the same bytes.

Target (issue 25): Ray within 15% of the local pool here; the gain comes from more machines, this measures the
overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def datagen(*args: str) -> float:
    """Run `datagen ARGS` in a fresh process; its wall time in seconds."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "datagen", *args, "--no-progress"]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    return time.perf_counter() - start


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "run.json" and not p.name.startswith(".lock")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-ray"))
    args = parser.parse_args()
    people, backgrounds = args.work / "people", args.work / "backgrounds"
    if not (people / "run.json").is_file():
        datagen("synth", "--backend", "procedural", "--n", "200", "--size", str(args.size), "-o", str(people))
    if not (backgrounds / "run.json").is_file():
        datagen("synth", "--backend", "procedural", "--kind", "background", "--n", "50", "--size",
                str(args.size * 5 // 4), "-o", str(backgrounds))  # fmt: skip
    base = ["compose", "--fg", str(people), "--bg", str(backgrounds), "--n", str(args.n), "--size", str(args.size)]
    ways = {"local pool": ["--workers", str(args.workers)], "ray": ["--ray"]}
    wall: dict[str, list[float]] = {name: [] for name in ways}
    stage: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, extra in ways.items():
            out = args.work / name.replace(" ", "-")
            shutil.rmtree(out, ignore_errors=True)
            wall[name].append(datagen(*base, "-o", str(out), *extra))
            record = json.loads((out / "run.json").read_text())
            stage[name].append(record["seconds"])
            if name == "ray":
                print(f"  ray ran {record['ray']['batches']} batches on {record['ray']['worker_processes']} processes")
    same = files(args.work / "local-pool") == files(args.work / "ray")
    print(f"compose --n {args.n} --size {args.size}, {args.workers} CPUs ({time.strftime('%Y-%m-%d')}):")
    for name in ways:
        walls, stages = " ".join(f"{s:.1f}" for s in wall[name]), " ".join(f"{s:.1f}" for s in stage[name])
        print(f"  {name:>10}: wall {walls} s; stage {stages} s")
    ratio_wall = min(wall["ray"]) / min(wall["local pool"])
    ratio_stage = min(stage["ray"]) / min(stage["local pool"])
    print(f"  ray / local: wall {ratio_wall:.3f}, stage {ratio_stage:.3f} (target <= 1.15); same bytes: {same}")


if __name__ == "__main__":
    main()
