"""Does training on composites made inside the loop help? One run on written composites, one on the online source.

The learning test's setup (procedural people and backgrounds, 300 CPU steps of batch 4 at 128 px, lr 1e-3 with
20 warm-up steps, the published ORMBG width): the pools are split into train people/backgrounds and held-out ones;
a fixed validation set is composited from the held-out ones only. Then the same `python -m ormbg.train` runs twice
with the same seed: on 255 composites written by `datagen compose` from the train pools (`--data`), and on the
online source over the same pools (`--compose`). Prints the commands and both validation MAE curves.

    python scripts/compare_online.py [--steps 300] [--out runs/compare-online]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from datagen.procedural import draw_background, draw_person
from datagen.records import read_rows, write_sample


def run(command: str) -> None:
    print("$", command, flush=True)
    subprocess.run(shlex.split(command), check=True)


def make_pools(root: Path) -> None:
    """64 people (10 held out) and 32 backgrounds (5 held out), in train / validation splits of two pools."""
    if read_rows(root / "fg", "train"):
        return
    for index in range(64):
        person = draw_person(np.random.default_rng([index]), 192, 128)
        split = "validation" if index % 6 == 5 else "train"
        write_sample(root / "fg", split, f"p{index}", foreground=person, alpha=person[..., 3], metadata={"source": "p"})
        if index < 32:
            background = draw_background(np.random.default_rng([index, 1]), 160, 160)
            split = "validation" if index % 6 == 5 else "train"
            write_sample(root / "bg", split, f"b{index}", image=background, alpha=None, metadata={"source": "b"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("runs/compare-online"))
    args = parser.parse_args()
    out = args.out
    make_pools(out)
    fg, bg = out / "fg", out / "bg"
    common = "--size 128x128 --preset default --no-progress"
    run(f"datagen compose --fg {fg}:validation --bg {bg}:validation -n 45 --seed 1 {common} -o {out / 'valset'}")
    run(f"datagen compose --fg {fg}:train --bg {bg}:train -n 255 {common} -o {out / 'written'}")
    train = f"python -m ormbg.train --val {out / 'valset'}:train --size 128 --batch-size 4 --max-steps {args.steps} "
    train += (
        f"--lr 1e-3 --warmup-steps 20 --val-every {max(1, args.steps // 6)} --log-every 25 --workers 1 --no-progress"
    )
    curves = {}
    for name, source in (
        ("written", f"--data {out / 'written'}:train"),
        ("online", f"--compose fg={fg}:train,bg={bg}:train"),
    ):
        run_dir = out / f"run-{name}"
        if not (run_dir / "metrics.jsonl").is_file() or "--resume" in sys.argv:
            run(f"{train} {source} --out {run_dir} --overwrite")
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        curves[name] = [(row["step"], next(iter(row["val"].values()))["mae"]) for row in rows if "val" in row]
    for name, curve in curves.items():
        print(f"{name:<8} validation MAE by step: " + ", ".join(f"{step}: {mae:.4f}" for step, mae in curve))
    print(f"final: written {curves['written'][-1][1]:.4f}, online {curves['online'][-1][1]:.4f}")


if __name__ == "__main__":
    main()
