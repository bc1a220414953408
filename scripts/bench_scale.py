"""What a run costs before its first sample as a dataset grows: resume state, no-op reruns, training start-up.

    python scripts/bench_scale.py [--rows 10000 100000 1000000] [--work runs/bench-scale]

For each N, a composites directory and a synth directory of N rows are built from hard links to one tiny sample (rows
are what scales, not pixels; about 600 bytes a row, like compose's), then, each in a fresh process, measured:
`records.ResumeState.read` (what synth, compose, import and pull read on a rerun); `datagen compose -n N` and `datagen
synth --backend procedural -n N` into them, and `datagen import folder` of N photos with mattes (`--images 'im/*'
--alphas 'gt/*'`) and of N RGBA cut-outs into what those imports make (built alike), all of which find every sample done
(a no-op resume; each is run once before, unmeasured, so that its card is current, as after a real run); `datagen
foreground` of the imported photos, their fg/ files hard-linked (run once before, unmeasured, so that the rows record
them); `datagen refine` of them as a refine of soft mattes leaves them (mask/, refine_trimap/ hard-linked, the rows'
columns and DIR/refine-soft.jsonl written by `link_refined`); training start-up: `ormbg.train.Trainer` on the composites
with 4 loader workers up to its first batch (the time to the first step), the main process's peak memory and what it
holds then (resident: what it keeps as it trains), and one loader worker's unique memory (USS: what it does not share
with the others); and `datagen inspect` (every file decoded; only at N <= --inspect-max); `datagen push --dry-run` (N <=
--push-max): time, peak memory, and the staging folder's peak size on disk against the shards it ends with, then
`datagen inspect` of those shards (every row decoded, in place; issue 24's inspect target counts for it too). Prints
seconds and peak RSS, and the peak above an idle process with the same imports, per N, measured in one run.

Targets (issue 24, at 10^6 rows): a no-op resume under 30 s and under 300 MB; the first training step within 30 s,
loader-worker memory flat in N; inspect under 1 GB; push's memory flat in N, its disk at most 3 shards beyond
what it uploads.
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


def link(source: Path, target: Path) -> None:
    """A hard link; one left by an interrupted build is kept (the import folders are built again from the start)."""
    try:
        os.link(source, target)
    except FileExistsError:
        pass


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


def build_synth(root: Path, rows: int) -> None:
    """A synth directory of `rows` person rows as `datagen synth --seed 0` names them, files hard-linked."""
    import numpy as np

    from datagen.procedural import draw_person
    from datagen.records import seeded_id, write_sample

    if (root / "train/metadata.jsonl").is_file():
        return
    person = draw_person(np.random.default_rng(0), 32, 32)
    metadata = {"source": "synth", "license": "MIT", "prompt": "x" * 300, "attributes": json.dumps({"hair": "long"})}
    seed = write_sample(root, "train", "seed", foreground=person, alpha=person[..., 3], metadata=metadata)
    (root / "train/metadata.jsonl").unlink()
    with open(root / "train/metadata.jsonl", "w") as file:
        for index in range(rows):
            sample_id = seeded_id("synth", 0, index)
            for folder in ("fg", "gt"):
                source = root / f"train/{folder}/seed-{index // LINKS_PER_FILE}.png"
                if not source.exists():
                    shutil.copyfile(root / f"train/{folder}/seed.png", source)
                os.link(source, root / f"train/{folder}/{sample_id}.png")
            row = {**seed, "id": sample_id}
            row.update(foreground_file_name=f"fg/{sample_id}.png", alpha_file_name=f"gt/{sample_id}.png")
            file.write(json.dumps(row) + "\n")


def build_import(src: Path, out: Path, rows: int, rgba: bool = False) -> None:
    """A folder of `rows` photos and mattes (im/, gt/; hard links) and what `datagen import folder SRC --images 'im/*'
    --alphas 'gt/*' -o OUT` makes of it; with `rgba`, a folder of RGBA cut-outs and what `datagen import folder SRC -o
    OUT` makes of it (fg/, gt/). Ids, splits (the hash hold-out) and rows as the importer's own discovery gives them,
    files hard-linked."""
    import pyarrow.compute as pc

    from datagen.importers import IMPORTERS, ImportConfig, hold_out
    from datagen.importers.layout import PairColumns
    from datagen.records import metadata_path, unique_ids

    if (out / "train/metadata.jsonl").is_file():
        return
    seeds = {name: out.parent / f"import-seed-{name}" for name in ("im.jpg", "gt.png", "cut.png", "fg.png")}
    if not all(path.exists() for path in seeds.values()):
        out.parent.mkdir(parents=True, exist_ok=True)
        import numpy as np

        from datagen.io import encode_jpeg, encode_png
        from datagen.procedural import draw_person

        person = draw_person(np.random.default_rng(0), 32, 32)
        seeds["im.jpg"].write_bytes(encode_jpeg(person[..., :3]))
        seeds["gt.png"].write_bytes(encode_png(person[..., 3]))
        seeds["cut.png"].write_bytes(encode_png(person))
        seeds["fg.png"].write_bytes(encode_png(person))
    sources = (("cut", "cut.png"),) if rgba else (("im", "im.jpg"), ("gt", "gt.png"))
    for index in range(rows):
        for folder, seed in sources:
            suffix = seeds[seed].suffix
            source = src / f"{folder}-seed-{index // LINKS_PER_FILE}{suffix}"
            if not source.exists():
                (src / folder).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(seeds[seed], source)
            link(source, src / folder / f"photo_{index:07d}{suffix}")
    config = ImportConfig(out=out, progress=False, **({} if rgba else {"images": "im/*", "alphas": "gt/*"}))
    pairs = hold_out(PairColumns.of(IMPORTERS["folder"].discover(src, config).pairs), "folder", config.val_fraction)
    ids = unique_ids("folder", pairs.column("key"), pairs.column("name"))
    order = pc.sort_indices(pairs.column("key")).to_numpy()  # run_import's order
    files, written = {}, (("fg", "fg.png"), ("gt", "gt.png")) if rgba else (("im", "im.jpg"), ("gt", "gt.png"))
    for number, (pair, sample_id) in enumerate(zip(pairs.rows(order), ids.take(order).to_pylist())):
        block = number // LINKS_PER_FILE
        if rgba:
            row = {
                "id": sample_id,
                "alpha_file_name": f"gt/{sample_id}.png",
                "foreground_file_name": f"fg/{sample_id}.png",
            }
        else:
            row = {"id": sample_id, "file_name": f"im/{sample_id}.jpg", "alpha_file_name": f"gt/{sample_id}.png"}
        row.update(width=32, height=32, source="folder", license="as stated", original_path=pair.key, subset="")
        row.update(exif_orientation=1, image_copied=not rgba)
        for folder, seed in written:
            suffix = seeds[seed].suffix
            target = out / pair.split / folder / f"{sample_id}{suffix}"
            source = out / pair.split / f"{folder}-seed-{block}{suffix}"
            if not source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(seeds[seed], source)
            link(source, target)
        if pair.split not in files:
            files[pair.split] = open(metadata_path(out, pair.split), "w")
        files[pair.split].write(json.dumps(row) + "\n")
    for file in files.values():
        file.close()


def link_foregrounds(root: Path) -> None:
    """fg/<id>.png for every row of every split of `root`, hard-linked: what `datagen foreground` leaves behind."""
    from datagen.records import file_table, splits

    seed = root.parent / "import-seed-fg.png"
    for split in splits(root):
        (root / split / "fg").mkdir(exist_ok=True)
        for number, sample_id in enumerate(file_table(root, split, ()).column("id").to_pylist()):
            target = root / split / "fg" / f"{sample_id}.png"
            source = root / split / f"fg-seed-{number // LINKS_PER_FILE}.png"
            if not source.exists():
                shutil.copyfile(seed, source)
            if not target.exists():
                os.link(source, target)


def link_refined(root: Path) -> None:
    """What `datagen refine` leaves in a dataset of soft mattes (each kept as it was): mask/ and refine_trimap/ for
    every photo row (hard links), the rows' refine columns, and DIR/refine-soft.jsonl with each alpha's soft share
    (that of the seed, above 5%: kept). A no-op rerun then stats every alpha and writes nothing."""
    from datagen.io import read_alpha
    from datagen.records import file_table, splits, update_rows
    from datagen.refine import SOFT_SHARE, SOFT_SHARES, soft_share

    if (root / SOFT_SHARES).is_file():
        return
    share = soft_share(read_alpha(root.parent / "import-seed-gt.png"))
    assert share > SOFT_SHARE, share
    lines = []
    for split in splits(root):
        table = file_table(root, split, ("alpha_file_name",))
        for folder in ("mask", "refine_trimap"):
            (root / split / folder).mkdir(exist_ok=True)
        for number, (sample_id, alpha) in enumerate(
            zip(*(table.column(c).to_pylist() for c in ("id", "alpha_file_name")))
        ):
            block = number // LINKS_PER_FILE
            for folder in ("mask", "refine_trimap"):
                source = root / split / f"{folder}-seed-{block}.png"
                if not source.exists():
                    shutil.copyfile(root.parent / "import-seed-gt.png", source)
                link(source, root / split / folder / f"{sample_id}.png")
            stat = (root / split / alpha).stat()
            row = {"split": split, "id": sample_id, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            lines.append(json.dumps({**row, "soft_share": share}) + "\n")

        def update(row):
            names = {
                "mask_file_name": f"mask/{row['id']}.png",
                "refine_trimap_file_name": f"refine_trimap/{row['id']}.png",
            }
            return {**names, "alpha_source": "original", "refine_model": "", "refine_band_px": 0}

        update_rows(root, split, update)
    (root / SOFT_SHARES).write_text("".join(lines))


TRAIN_START = """
from ormbg.data import Recipe, Source
from ormbg.train import TrainConfig, Trainer
config = TrainConfig(out={out!r}, recipe=Recipe((Source({root!r}),)), size=32, batch_size=4, max_steps=1, workers=4,
                     width_divisor=16, progress=False, overwrite=True)
trainer = Trainer(config)
batches = trainer.train_batches(0)
next(batches)
uss = []
for worker in batches._workers:
    fields = dict(line.split(":", 1) for line in open(f"/proc/{{worker.pid}}/smaps_rollup") if ":" in line)
    uss.append((int(fields["Private_Clean"].split()[0]) + int(fields["Private_Dirty"].split()[0])) / 1024)
held = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
print(held, max(uss))
"""


def train_start(root: Path, out: Path) -> tuple[float, float, float, float]:
    """(seconds to the first batch, main process peak MB, its resident MB at the first batch (what it holds as it
    trains), largest loader-worker USS MB)."""
    code = MEASURE.format(imports="import os", work=TRAIN_START.format(out=str(out), root=str(root)))
    lines = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(lines[-2]), float(lines[-1]), float(lines[-4]), float(lines[-3])


PUSH = """
import threading
from pathlib import Path
from datagen.hub import PushConfig, push
out, peak = Path({out!r}), [0]
def watch():
    while not done.is_set():
        peak[0] = max(peak[0], sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.exists() else 0)
        done.wait(0.2)
done = threading.Event()
thread = threading.Thread(target=watch)
thread.start()
push(PushConfig(Path({root!r}), "user/bench", dry_run=out, max_shard_size="20MB"))
done.set()
thread.join()
shards = sum(p.stat().st_size for p in out.rglob("*.parquet"))
print(peak[0] / 1e6, shards / 1e6, len(list(out.rglob("*.parquet"))))
"""


def push_dry_run(root: Path, out: Path) -> tuple[float, float, float, float, int]:
    """(seconds, peak RSS MB, peak MB on disk in the staging, MB of shards written, shard count) of push --dry-run."""
    shutil.rmtree(out, ignore_errors=True)
    code = MEASURE.format(imports="", work=PUSH.format(out=str(out), root=str(root)))
    words = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return float(words[-2]), float(words[-1]), float(words[-5]), float(words[-4]), int(words[-3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--work", type=Path, default=Path("runs/bench-scale"))
    parser.add_argument("--inspect-max", type=int, default=100_000, help="largest N to run inspect on")
    parser.add_argument("--push-max", type=int, default=100_000, help="largest N to run push --dry-run on")
    args = parser.parse_args()
    imports = (
        "from datagen.records import ResumeState; from datagen.compose.run import run_compose, ComposeConfig; "
        "from datagen.synth import run_synth, SynthConfig; from datagen.inspect import inspect_dataset; "
        "from datagen.importers import run_import, ImportConfig; from datagen.foreground import run_foreground, "
        "ForegroundConfig; from datagen.refine import run_refine, RefineConfig"
    )
    _, idle = measure(imports, "pass")
    _, idle_train = measure("import ormbg.train", "pass")
    print(f"an idle process with the imports: {idle:.0f} MB (training's: {idle_train:.0f} MB)")
    header = ("rows", "ResumeState.read", "compose no-op", "synth no-op", "import no-op", "import RGBA no-op")
    header += ("foreground no-op", "refine no-op", "train: first batch")
    header += ("worker USS", "inspect")
    header += ("push --dry-run", "inspect of its shards")
    print(" | ".join(header))
    for rows in args.rows:
        root, pools, synth = args.work / f"composites-{rows}", args.work / f"pools-{rows}", args.work / f"synth-{rows}"
        start = time.perf_counter()
        build(root, rows, pools)
        build_synth(synth, rows)
        build_import(args.work / f"photos-{rows}", args.work / f"imported-{rows}", rows)
        build_import(args.work / f"cutouts-{rows}", args.work / f"imported-rgba-{rows}", rows, rgba=True)
        print(f"({rows} rows built in {time.perf_counter() - start:.0f} s)", flush=True)
        read_s, read_mb = measure(imports, f"ResumeState.read({str(root)!r})")
        config = (
            f"ComposeConfig(out={str(root)!r}, foregrounds=({str(pools / 'fg')!r},), "
            f"backgrounds=({str(pools / 'bg')!r},), n={rows}, size=(32, 32), val_fraction=0.0, progress=False)"
        )
        work = f"result = run_compose({config}); assert result.new == 0, result"
        measure(imports, work)  # the first rerun writes the card that a real run would have left
        compose_s, compose_mb = measure(imports, work)
        config = f"SynthConfig(out={str(synth)!r}, backend='procedural', n={rows}, size=(64, 64), progress=False)"
        work = f"result = run_synth({config}); assert result.new == 0, result"
        measure(imports, work)
        synth_s, synth_mb = measure(imports, work)
        config = (
            f"ImportConfig(out={str(args.work / f'imported-{rows}')!r}, images='im/*', alphas='gt/*', progress=False)"
        )
        work = f"result = run_import('folder', {str(args.work / f'photos-{rows}')!r}, {config}); assert not result.new"
        measure(imports, work)
        import_s, import_mb = measure(imports, work)
        config = f"ImportConfig(out={str(args.work / f'imported-rgba-{rows}')!r}, progress=False)"
        work = f"result = run_import('folder', {str(args.work / f'cutouts-{rows}')!r}, {config}); assert not result.new"
        measure(imports, work)
        rgba_s, rgba_mb = measure(imports, work)
        imported = str(args.work / f"imported-{rows}")
        link_foregrounds(Path(imported))
        work = f"result = run_foreground(ForegroundConfig({imported!r}, progress=False)); assert not result.new, result"
        measure(imports, work)  # the first run records the fg/ files in the rows, as a finished run would have
        foreground_s, foreground_mb = measure(imports, work)
        link_refined(Path(imported))
        work = f"result = run_refine(RefineConfig({imported!r}, progress=False)); assert not result.new, result"
        refine_s, refine_mb = measure(imports, work)
        first_s, main_mb, held_mb, worker_mb = train_start(root, args.work / f"run-{rows}")
        inspect = "-"
        if rows <= args.inspect_max:
            inspect_s, inspect_mb = measure(imports, f"inspect_dataset({str(root)!r})")
            inspect = f"{inspect_s:.1f} s, {inspect_mb:.0f} MB"
        pushed = shards = "-"
        if rows <= args.push_max:
            push_s, push_mb, disk_mb, shards_mb, count = push_dry_run(root, args.work / f"push-{rows}")
            pushed = (
                f"{push_s:.1f} s, {push_mb:.0f} MB; disk peak {disk_mb:.0f} MB for {shards_mb:.0f} MB in {count} shards"
            )
            inspect_s, inspect_mb = measure(imports, f"inspect_dataset({str(args.work / f'push-{rows}')!r})")
            shards = f"{inspect_s:.1f} s, {inspect_mb:.0f} MB"
        cells = [
            f"{read_s:.2f} s, {read_mb:.0f} MB (+{read_mb - idle:.0f})",
            f"{compose_s:.2f} s, {compose_mb:.0f} MB (+{compose_mb - idle:.0f})",
            f"{synth_s:.2f} s, {synth_mb:.0f} MB (+{synth_mb - idle:.0f})",
            f"{import_s:.2f} s, {import_mb:.0f} MB (+{import_mb - idle:.0f})",
            f"{rgba_s:.2f} s, {rgba_mb:.0f} MB (+{rgba_mb - idle:.0f})",
            f"{foreground_s:.2f} s, {foreground_mb:.0f} MB (+{foreground_mb - idle:.0f})",
            f"{refine_s:.2f} s, {refine_mb:.0f} MB (+{refine_mb - idle:.0f})",
            f"{first_s:.1f} s, main {main_mb:.0f} MB (+{main_mb - idle_train:.0f}), holds {held_mb:.0f}",
            f"{worker_mb:.0f} MB",
            inspect,
            pushed,
            shards,
        ]
        print(
            " | ".join([str(rows), *cells]),
            flush=True,
        )


if __name__ == "__main__":
    main()
