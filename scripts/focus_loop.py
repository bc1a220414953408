"""One round of the failure loop on a CPU (docs/focus.md): does data that follows the model's failures help?

    python scripts/focus_loop.py [--work runs/focus-loop] [--steps 300] [--people 300] [--composites 800]

With the procedural backend (people shaped by their hair, framing and clothing attributes):
1. a base model (ORMBG at 1/8 width) trained on uniform composites;
2. evaluated on a held-out composite set (people, backgrounds and seeds of their own, never trained on or used to
   choose a checkpoint), and its errors sliced (`datagen slices`);
3. a uniform set and a focused set of the same size (`datagen synth --focus`, `datagen compose --focus`, new people
   from the same seed), and two models trained from the base's weights for the same steps, one on each;
4. both evaluated on the same held-out set: the overall MAE and the MAE of the base's worst slices.
Every model is taken at its last step (no checkpoint selection). One run each: the differences carry the noise of
one training run; the script says which is lower, not that it is significant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run(*args: str) -> None:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    print(f"  {time.perf_counter() - started:6.1f} s  {' '.join(args[:2])} ... {args[-1] if len(args) > 2 else ''}")


def train_once(*args: str) -> None:
    """ormbg.train unless its --out already holds a finished model (a rerun of this script goes on from there)."""
    out = Path(args[args.index("--out") + 1])
    if (out / "last.safetensors").is_file():
        print(f"  (kept) {out}")
        return
    run("ormbg.train", *args, "--overwrite")


def datagen(*args: str) -> None:
    run("datagen", *args, "--no-progress")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/focus-loop"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--people", type=int, default=300)
    parser.add_argument("--composites", type=int, default=800)
    parser.add_argument("--heldout", type=int, default=400)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--min-n", type=int, default=20)
    args = parser.parse_args()
    w, size = args.work, str(args.size)
    w.mkdir(parents=True, exist_ok=True)
    train = ["--size", size, "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "20", "--max-steps",
             str(args.steps), "--val-every", str(args.steps), "--log-every", "50", "--workers", "1",
             "--width-divisor", "8", "--no-progress"]  # fmt: skip
    evaluate = ["--size", size, "--workers", "1", "--no-progress"]

    print("pools and the held-out set")
    datagen("synth", "--backend", "procedural", "-n", str(args.people), "--size", size, "-o", str(w / "people"))
    datagen("synth", "--backend", "procedural", "--kind", "background", "-n", "60", "--size", str(args.size * 5 // 4),
            "-o", str(w / "backgrounds"))  # fmt: skip
    datagen(
        "synth", "--backend", "procedural", "-n", "200", "--size", size, "--seed", "7", "-o", str(w / "people-heldout")
    )
    datagen("synth", "--backend", "procedural", "--kind", "background", "-n", "30", "--size", str(args.size * 5 // 4),
            "--seed", "7", "-o", str(w / "backgrounds-heldout"))  # fmt: skip
    datagen("compose", "--fg", str(w / "people-heldout"), "--bg", str(w / "backgrounds-heldout"), "-n",
            str(args.heldout), "--size", size, "--seed", "7", "-o", str(w / "heldout"))  # fmt: skip
    datagen("compose", "--fg", str(w / "people"), "--bg", str(w / "backgrounds"), "-n", str(args.composites),
            "--size", size, "--val-fraction", "0.1", "-o", str(w / "base-data"))  # fmt: skip

    print("1-2. the base model, its errors by slice")
    train_once("--data", f"{w / 'base-data'}:train", "--val", f"{w / 'base-data'}:validation", *train,
               "--out", str(w / "base"))  # fmt: skip
    run("ormbg.evaluate", "--checkpoint", str(w / "base" / "last.safetensors"), "--data", f"{w / 'heldout'}:train",
        *evaluate, "--json", str(w / "base-eval.json"))  # fmt: skip
    run("datagen", "slices", str(w / "base-eval.json"), "--min-n", str(args.min_n), "--json", str(w / "slices.json"))

    print("3. a uniform and a focused set of the same size, both models from the base's weights")
    for name, focus in (("uniform", []), ("focused", ["--focus", str(w / "slices.json")])):
        datagen("synth", "--backend", "procedural", "-n", str(args.people), "--size", size, "--seed", "2", *focus,
                "-o", str(w / f"people-{name}"))  # fmt: skip
        datagen("compose", "--fg", str(w / f"people-{name}"), "--bg", str(w / "backgrounds"), "-n",
                str(args.composites), "--size", size, "--seed", "2", "--val-fraction", "0.1", *focus,
                "-o", str(w / f"{name}-data"))  # fmt: skip
        train_once("--data", f"{w / f'{name}-data'}:train", "--val", f"{w / f'{name}-data'}:validation", *train,
                   "--init", str(w / "base" / "last.safetensors"), "--out", str(w / name))  # fmt: skip
        run("ormbg.evaluate", "--checkpoint", str(w / name / "last.safetensors"), "--data", f"{w / 'heldout'}:train",
            *evaluate, "--json", str(w / f"{name}-eval.json"))  # fmt: skip
        run("datagen", "slices", str(w / f"{name}-eval.json"), "--min-n", str(args.min_n), "--json",
            str(w / f"{name}-slices.json"))  # fmt: skip

    print("4. on the same held-out set")
    results = {name: json.loads((w / f"{name}-slices.json").read_text()) for name in ("uniform", "focused")}
    base = json.loads((w / "slices.json").read_text())
    worst = [(s["family"], s["value"]) for s in base["slices"] if s["family"] != "foreground"][:5]

    def mae(result, key):
        for entry in result["slices"] + result["too_few"]:
            if (entry["family"], entry["value"]) == key:
                return entry["mae"]
        return float("nan")

    print(f"{'slice (the base model worst first)':<52} {'base':>7} {'uniform':>8} {'focused':>8}")
    print(f"{'all':<52} {base['overall']['mae']:7.4f} {results['uniform']['overall']['mae']:8.4f} "
          f"{results['focused']['overall']['mae']:8.4f}")  # fmt: skip
    for key in worst:
        label = f"{key[0]}={key[1]}"[:52]
        print(
            f"{label:<52} {mae(base, key):7.4f} {mae(results['uniform'], key):8.4f} {mae(results['focused'], key):8.4f}"
        )
    focus_record = json.loads((w / "people-focused" / "run.json").read_text())["focus"]
    print(f"(focus weights used by synth: {json.dumps(focus_record['weights'])[:300]})")
    print(f"({time.strftime('%Y-%m-%d')}; {args.steps} steps per model; one run each)")


if __name__ == "__main__":
    main()
