"""`make demo`: run what exists of the pipeline on the embedded default (procedural data, CPU, no downloads).

Today that is: a procedural dataset written through the contract library, and `datagen import p3m` of a
tiny P3M-10k layout built in code -> `datagen inspect` -> `datagen preview` on each. The stages that have
not landed yet are listed at the end with their issue numbers; as they land, this script runs them too
(issue #9 tracks the whole flow).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from datagen import __version__
from datagen.card import write_card
from datagen.compose import over
from datagen.importers.samples import make_p3m_tree
from datagen.io import write_run_json
from datagen.procedural import draw_background, draw_person
from datagen.records import done_ids, reset_dataset, seeded_id, write_sample

MISSING = [
    ("datagen synth (LayerDiffuse + procedural backend)", 5),
    ("datagen compose (placement, lighting, shadow, occlusion, degradations)", 4),
    ("python -m ormbg.train", 6),
    ("python -m ormbg.evaluate / infer / export", 7),
    ("datagen push / pull", 8),
]


def write_procedural_dataset(root: Path, n: int, seed: int, height: int, width: int) -> int:
    """n procedural persons over procedural backgrounds (last quarter in `test`); resumes; returns new samples."""
    started, written = time.time(), 0
    n_test = max(1, n // 4)
    finished = done_ids(root, "train") | done_ids(root, "test")
    for index in range(n):
        split = "test" if index >= n - n_test else "train"
        sample_id = seeded_id("procedural", seed, index)
        if sample_id in finished:
            continue
        rng = np.random.default_rng([seed, index])
        foreground = draw_person(rng, height, width)
        image = over(foreground, draw_background(rng, height, width))
        write_sample(
            root,
            split,
            sample_id,
            image=image,
            alpha=foreground[..., 3],
            metadata={"source": "procedural", "license": "Apache-2.0", "seed": seed, "index": index},
        )
        written += 1
    config = {"n": n, "seed": seed, "height": height, "width": width}
    write_run_json(
        root,
        {
            "command": "scripts/demo.py",
            "tool": f"datagen {__version__}",
            "config": config,
            "new_samples": written,
            "seconds": round(time.time() - started, 2),
        },
    )
    write_card(
        root,
        "ormbg demo: procedural persons",
        "Procedural person-like foregrounds (soft edges, semi-transparent hair strands) blended with "
        "straight alpha over procedural backgrounds. Made by `make demo`; for checking the pipeline.",
    )
    return written


def datagen(*args: str) -> int:
    """Run a `datagen` command as a user would, echoing it."""
    print("$ datagen " + " ".join(args), flush=True)
    return subprocess.run([sys.executable, "-m", "datagen", *args]).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="where everything is written")
    parser.add_argument("--n", type=int, default=24, help="procedural samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    args = parser.parse_args()

    started = time.time()
    data = args.out / "datasets" / "procedural"
    if args.overwrite:
        reset_dataset(data)
    written = write_procedural_dataset(data, args.n, args.seed, height=256, width=192)
    print(f"wrote {written} new samples to {data} (others resumed)")
    p3m_src = make_p3m_tree(args.out / "sources" / "P3M-10k", n_train=8, n_test=2, height=256, width=192)
    p3m = args.out / "datasets" / "p3m"
    steps = [
        ("import", "p3m", str(p3m_src), "--out", str(p3m), "--no-progress", *(["--overwrite"] * args.overwrite)),
        ("inspect", str(data), "--no-progress"),
        ("inspect", str(p3m), "--no-progress"),
        ("preview", str(data), "--out", str(args.out / "preview.png"), "-n", "6", "--tile-px", "192"),
        ("preview", str(p3m), "--out", str(args.out / "preview-p3m.png"), "-n", "4", "--split", "test"),
    ]
    for step in steps:
        if datagen(*step) != 0:
            print(f"demo: `datagen {step[0]}` failed (see above)", file=sys.stderr)
            return 1

    print(f"\ndemo finished in {time.time() - started:.0f} s. Results:")
    print(f"  {data}/            dataset directory (load it with datasets.load_dataset)")
    print(f"  {p3m}/                   the tiny P3M-10k layout, imported")
    print(f"  {args.out / 'preview.png'}, {args.out / 'preview-p3m.png'}   contact sheets: image | alpha | cutout")
    print("\nNot built yet, so not part of the demo (see `issues`):")
    for what, issue in MISSING:
        print(f"  - {what}: issue #{issue}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
