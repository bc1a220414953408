"""What a rerun costs as a dataset grows: the resume state every writing stage reads, and a no-op `datagen compose`.

    python scripts/bench_scale.py [--rows 10000 100000] [--work runs/bench-scale]

For each N, a composites directory of N rows is built from hard links to one tiny sample (rows are what scales, not
pixels; about 500 bytes a row, like compose's), then, each in a fresh process, measured: `records.ResumeState.read`
(what synth, compose, import and pull read on a rerun) and `datagen compose -n N` into it, which finds every sample
done (a no-op resume; it also plans every index and rewrites the card). Prints seconds and peak RSS of the process,
and the peak above an idle process with the same imports, per N, measured in one run.

Targets (issue 24, at 10^6 rows): a no-op resume under 30 s and under 300 MB.
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

# The peak RSS of this process image: VmHWM starts anew at exec (ru_maxrss would keep the forking parent's peak).
MEASURE = """
import time
{imports}
start = time.perf_counter()
{work}
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(time.perf_counter() - start, int(peak.split()[1]) / 1024)
"""


def measure(imports: str, work: str) -> tuple[float, float]:
    """(seconds, peak RSS MB) of `work` in a fresh Python process that first ran `imports`."""
    code = MEASURE.format(imports=imports, work=work)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    seconds, peak = out.split()[-2:]
    return float(seconds), float(peak)


LINKS_PER_FILE = 60_000  # ext4 allows 65,000 hard links to one file


def build(root: Path, rows: int, pools: Path) -> None:
    """A composites directory of `rows` rows: ids as `datagen compose --seed 0` names them, files hard-linked."""
    import numpy as np

    from datagen.alpha import over
    from datagen.procedural import draw_background, draw_person
    from datagen.records import seeded_id, write_sample

    if (root / "train/metadata.jsonl").is_file():
        return
    person = draw_person(np.random.default_rng(0), 32, 32)
    background = draw_background(np.random.default_rng(1), 32, 32)
    write_sample(pools / "fg", "train", "p0", foreground=person, alpha=person[..., 3])
    write_sample(pools / "bg", "train", "b0", image=background, alpha=None)
    params = json.dumps({"scale": 0.5, "position": [0.1, 0.2], "augment": list(range(30))})
    metadata = {"source": "composite", "license": "MIT", "params": params, "prompt": "x" * 200}
    seed = write_sample(root, "train", "seed", image=over(person, background), alpha=person[..., 3], metadata=metadata)
    (root / "train/metadata.jsonl").unlink()
    lines = []
    for index in range(rows):
        sample_id = seeded_id("composite", 0, index)
        block = index // LINKS_PER_FILE
        for folder, suffix in (("im", "jpg"), ("gt", "png")):
            source = root / f"train/{folder}/seed-{block}.{suffix}"
            if not source.exists():
                shutil.copyfile(root / f"train/{folder}/seed.{suffix}", source)
            os.link(source, root / f"train/{folder}/{sample_id}.{suffix}")
        row = {**seed, "id": sample_id, "file_name": f"im/{sample_id}.jpg", "alpha_file_name": f"gt/{sample_id}.png"}
        lines.append(json.dumps(row) + "\n")
    (root / "train/metadata.jsonl").write_text("".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-scale"))
    args = parser.parse_args()
    imports = "from datagen.records import ResumeState; from datagen.compose.run import run_compose, ComposeConfig"
    _, idle = measure(imports, "pass")
    print(f"an idle process with the imports: {idle:.0f} MB")
    header = ("rows", "build s", "ResumeState.read s", "MB (+idle)", "compose no-op s", "MB (+idle)")
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, (9, 8, 19, 11, 16, 11))))
    for rows in args.rows:
        root, pools = args.work / f"composites-{rows}", args.work / f"pools-{rows}"
        start = time.perf_counter()
        build(root, rows, pools)
        built = time.perf_counter() - start
        read_s, read_mb = measure(imports, f"ResumeState.read({str(root)!r})")
        config = (
            f"ComposeConfig(out={str(root)!r}, foregrounds=({str(pools / 'fg')!r},), "
            f"backgrounds=({str(pools / 'bg')!r},), n={rows}, size=(32, 32), val_fraction=0.0, progress=False)"
        )
        compose_s, compose_mb = measure(imports, f"result = run_compose({config}); assert result.new == 0, result")
        print(f"{rows:>9} {built:>8.1f} {read_s:>19.2f} {read_mb:>5.0f} (+{read_mb - idle:.0f}) "
              f"{compose_s:>16.2f} {compose_mb:>5.0f} (+{compose_mb - idle:.0f})")  # fmt: skip


if __name__ == "__main__":
    main()
