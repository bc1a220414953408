"""`make demo`: the whole pipeline at small scale on the embedded default (procedural data, CPU, no downloads).

    datagen synth --backend procedural (people, backgrounds) -> datagen import p3m --foreground (a tiny P3M-10k
    layout built in code) -> datagen compose -> datagen inspect / preview -> python -m ormbg.train -> python -m
    ormbg.evaluate -> python -m ormbg.infer on the held-out composites -> contact sheets

Everything lands under --out (default runs/demo). A rerun resumes: finished stages are kept (datagen resumes
by sample id, training from its last.pt); --overwrite starts over. The per-stage time and disk figures are
printed at the end.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from datagen.samples import make_p3m_tree


def disk_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


class Demo:
    """Runs each stage as a user would type it (a subprocess, echoed), timing it and measuring what it wrote."""

    def __init__(self, out: Path):
        self.out, self.report = out, []

    def run(self, title: str, command: str) -> None:
        """`command` as a user types it ("datagen ..." or "python -m ..."); it runs in this interpreter."""
        print(f"$ {command}", flush=True)
        program, *argv = shlex.split(command)
        argv = ["-m", "datagen", *argv] if program == "datagen" else argv
        before, started = disk_mb(self.out), time.time()
        if not argv[:3] == ["-m", "datagen", "preview"]:
            argv.append("--no-progress")  # the demo's log stays readable; every other command takes it
        if subprocess.run([sys.executable, *argv]).returncode != 0:
            raise SystemExit(f"demo: `{command}` failed (see above)")
        self.report.append((title, time.time() - started, disk_mb(self.out) - before))


def write_cutout_sheet(images: Path, cutouts: Path, out: Path, n: int = 6) -> None:
    """Rows of composite | cutout over a checkerboard, for the first n cutouts."""
    from datagen.alpha import over
    from datagen.io import encode_png, read_foreground, read_image, write_atomic
    from datagen.preview import checkerboard, tile_sheet

    rows = []
    for path in sorted(cutouts.glob("*.png"))[:n]:
        cutout = read_foreground(path)
        height, width = cutout.shape[:2]
        rows.append((path.stem, [read_image(images / f"{path.stem}.jpg"), over(cutout, checkerboard(height, width))]))
    write_atomic(out, encode_png(tile_sheet(rows, 192)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where everything is written")
    parser.add_argument("--n", type=int, default=160, help="composites to make")
    parser.add_argument("--people", type=int, default=32, help="procedural people to generate")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--size", type=int, default=128, help="training and evaluation side, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--width-divisor", type=int, default=1, help="narrower ORMBG (1: the published width; the tests use 8)"
    )
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    args = parser.parse_args()

    started, out = time.time(), args.out
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    demo, q = Demo(out), shlex.quote
    data, run, seed = out / "datasets", out / "train", f"--seed {args.seed}"
    synth, backgrounds, composites, p3m = (
        q(str(data / name)) for name in ("synth", "backgrounds", "composites", "p3m")
    )
    people, n_backgrounds = args.people, max(4, args.people // 2)

    demo.run("synth people", f"datagen synth --backend procedural -n {people} --size 256x384 -o {synth} {seed}")
    demo.run(
        "synth backgrounds",
        f"datagen synth --backend procedural --kind background -n {n_backgrounds} --size 640x448 "
        f"-o {backgrounds} {seed}",
    )
    # a tiny P3M-10k layout: its photos get their foreground colour estimated (--foreground) and its train people
    # join the compositor's (:train, so the held-out validation people stay unseen); its test split is a benchmark
    p3m_source = make_p3m_tree(out / "sources" / "P3M-10k", n_train=12, n_test=4, height=256, width=192)
    demo.run("import p3m", f"datagen import p3m {q(str(p3m_source))} --out {p3m} --foreground ml --val-fraction 0.25")
    demo.run(
        "compose",
        f"datagen compose --fg {synth} --fg {p3m}:train --bg {backgrounds} -n {args.n} --size 256x320 "
        f"--val-fraction 0.2 -o {composites} {seed}",
    )
    for name in (synth, backgrounds, composites, p3m):
        demo.run(f"inspect {Path(name).name}", f"datagen inspect {name}")
    demo.run("preview", f"datagen preview {composites} --out {q(str(out / 'composites.png'))} -n 6")

    resume = " --resume" if (run / "last.pt").is_file() else ""
    demo.run(
        "train",
        f"python -m ormbg.train --data {composites}:train:0.8 --data {p3m}:train:0.2 --val {composites}:validation "
        f"--val {p3m}:validation --out {q(str(run))} --size {args.size} --batch-size 4 --max-steps {args.steps} "
        f"--lr 1e-3 --warmup-steps {min(20, args.steps)} --val-every {max(1, args.steps // 6)} "
        f"--log-every {max(1, args.steps // 30)} --workers 1 --width-divisor {args.width_divisor} {seed}{resume}",
    )
    weights = q(str(run / "best.safetensors"))
    demo.run(
        "evaluate",
        f"python -m ormbg.evaluate --checkpoint {weights} --data {composites}:validation --data {p3m}:test "
        f"--size {args.size} --json {q(str(out / 'eval.json'))} --markdown {q(str(out / 'eval.md'))} --worst 4 "
        "--workers 1",
    )
    images = data / "composites" / "validation" / "im"
    cutouts = out / "cutouts"
    demo.run(
        "infer",
        f"python -m ormbg.infer {q(str(images))} -o {q(str(cutouts))} --checkpoint {weights} --size {args.size}",
    )
    write_cutout_sheet(images, cutouts, out / "cutouts.png")

    print(f"\ndemo finished in {time.time() - started:.0f} s. Per stage:")
    print("| stage | seconds | wrote (MB) |\n|---|---:|---:|")
    for title, seconds, megabytes in demo.report:
        print(f"| {title} | {seconds:.1f} | {megabytes:.1f} |")
    print(f"\nResults in {out}:")
    print("  datasets/{synth,backgrounds,composites,p3m}   dataset directories (datasets.load_dataset loads each)")
    print("  composites.png                  contact sheet of the composites: image | alpha | cutout")
    print("  train/curves.png, metrics.jsonl loss and validation curves; best/last .pt and .safetensors")
    print("  eval.md, eval.json, worst-*.png evaluation table and the worst samples: image | truth | matte | error")
    print("  cutouts/, cutouts.png           RGBA cutouts of the held-out composites")
    return 0


if __name__ == "__main__":
    sys.exit(main())
