"""Regenerate the contact sheets of docs/compose.md: one per augmentation family, from procedural inputs.

    python scripts/compose_docs.py            # writes runs/compose-docs/ and docs/img/compose-*.png

Every sheet is made by the exact `datagen compose` and `datagen preview` commands that it prints (and that
docs/compose.md shows), on foreground and background folders drawn procedurally here.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from datagen.io import encode_jpeg, encode_png, write_atomic
from datagen.procedural import draw_background, draw_person

ROOT = Path("runs/compose-docs")
FAMILIES = {
    "geometry": [],  # preset none alone: crop, scale, placement, rotation, flip, the blend
    "background": ["--config", "docs/compose/background.yaml"],
    "lighting": ["--config", "docs/compose/lighting.yaml"],
    "shadow": ["--config", "docs/compose/shadow.yaml"],
    "occlusion": ["--config", "docs/compose/occlusion.yaml"],
    "degradations": ["--config", "docs/compose/degradations.yaml"],
}


def make_inputs() -> None:
    for index in range(8):
        person = draw_person(np.random.default_rng([index]), 512, 384)
        write_atomic(ROOT / "fg" / f"person{index}.png", encode_png(person))
    for index in range(6):
        background = draw_background(np.random.default_rng([index, 1]), 600, 800)
        write_atomic(ROOT / "bg" / f"background{index}.jpg", encode_jpeg(background))


def run(*args: str) -> None:
    print("$ datagen " + shlex.join(args), flush=True)
    subprocess.run([sys.executable, "-m", "datagen", *args], check=True)


def main() -> None:
    make_inputs()
    common = ["--fg", str(ROOT / "fg"), "--bg", str(ROOT / "bg"), "-n", "4", "--size", "384x512", "--seed", "3"]
    sheets = {"default": ["--preset", "default"]} | {
        name: ["--preset", "none", *extra] for name, extra in FAMILIES.items()
    }
    for name, options in sheets.items():
        out = ROOT / name
        run("compose", *common, *options, "-o", str(out), "--overwrite", "--no-progress")
        run("preview", str(out), "-o", f"docs/img/compose-{name}.png", "-n", "4", "--tile-px", "160")


if __name__ == "__main__":
    main()
