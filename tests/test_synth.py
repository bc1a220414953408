import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from datagen.cli import cli
from datagen.inspect import inspect_dataset
from datagen.io import read_foreground
from datagen.layerdiffuse import (
    VIEWS,
    Generator,
    MissingModelError,
    TransparentDecoder,
    decode_transparent,
    fetch,
    merge_layerdiffuse_offset,
    unview,
    view,
)
from datagen.prompts import PERSON_ATTRIBUTES, load_prompts, sample_prompt
from datagen.records import read_rows
from datagen.synth import (
    QualityThresholds,
    SynthConfig,
    layerdiffuse_renderer,
    procedural_renderer,
    quality_scores,
    rejection,
    run_synth,
)
from tests.tiny_sdxl import tiny_decoder, tiny_pipeline

DATA = Path(__file__).parent / "data"
CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_full_size_decoder_has_exactly_the_published_keys_and_loads_strictly():
    published = json.loads((DATA / "layerdiffuse_decoder_keys.json").read_text())
    decoder = TransparentDecoder()
    shapes = {key: list(value.shape) for key, value in decoder.state_dict().items()}
    assert shapes == published
    assert len(published) == 538 and sum(p.numel() for p in decoder.parameters()) == 104_104_804
    decoder.load_state_dict({key: torch.zeros(shape) for key, shape in published.items()}, strict=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("size", [(64, 64), (64, 128)])
def test_batched_tta_equals_the_median_of_eight_single_passes(size, device, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 convolutions differ by batch size
    decoder = tiny_decoder().to(device)
    height, width = size
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, height, width, generator=generator).to(device)
    latent = torch.randn(2, 4, height // 8, width // 8, generator=generator).to(device)
    batched = decode_transparent(decoder, pixels, latent)
    with torch.no_grad():
        singles = [unview(decoder(view(pixels, *v), view(latent, *v)).clamp(0, 1), *v) for v in VIEWS]
    expected = torch.median(torch.stack(singles), dim=0).values  # torch's median: the lower middle value
    assert batched.shape == (2, 4, height, width)
    torch.testing.assert_close(batched, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(singles[0], singles[5]), "the views must differ for the test to mean something"


def test_offset_merge_changes_exactly_the_named_tensors():
    unet = tiny_pipeline(Path("/tmp/ormbg-tiny-merge")).unet
    before = {key: value.clone() for key, value in unet.state_dict().items()}
    names = [key for key in before if "attn1.to_q" in key or "attn2.to_k" in key]
    offset = {key: torch.full_like(before[key], 0.5) for key in names}
    assert merge_layerdiffuse_offset(unet, offset, expected=len(names)) == len(names)
    after = unet.state_dict()
    for key, value in after.items():
        if key in offset:
            torch.testing.assert_close(value, before[key] + 0.5)
        else:
            assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="keys not in the UNet"):
        merge_layerdiffuse_offset(unet, {"nope.weight": torch.zeros(1)}, expected=None)
    with pytest.raises(ValueError, match="differ in shape"):
        merge_layerdiffuse_offset(unet, {names[0]: torch.zeros(3)}, expected=None)
    with pytest.raises(ValueError, match="published file has 560"):
        merge_layerdiffuse_offset(unet, offset)


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(MissingModelError, match="hf download lllyasviel/LayerDiffuse_Diffusers"):
        fetch("lllyasviel/LayerDiffuse_Diffusers", "ld_diffusers_sdxl_attn.safetensors", offline=True)
    with pytest.raises(MissingModelError, match="copy ld_diffusers_sdxl_attn.safetensors"):
        fetch(str(tmp_path), "ld_diffusers_sdxl_attn.safetensors", offline=True)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "ld_diffusers_sdxl_attn.safetensors"))
    assert fetch(str(tmp_path), "ld_diffusers_sdxl_attn.safetensors", offline=True).is_file()


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    return Generator(tiny_pipeline(tmp_path_factory.mktemp("tiny")), tiny_decoder())


def tiny_config(out, **changes) -> SynthConfig:
    """Settings for the tiny pipeline; random weights give random alphas, so every quality threshold is open."""
    values = dict(n=4, size=(64, 64), steps=2, batch_size=3, device="cpu", dtype="fp32", progress=False)
    return SynthConfig(out=out, quality=QualityThresholds.accept_all(), **{**values, **changes})


def test_synth_with_a_tiny_layerdiffuse_pipeline_writes_a_valid_pool(tmp_path, tiny_generator):
    config = tiny_config(tmp_path / "synth")
    render = layerdiffuse_renderer(config, tiny_generator)
    result = run_synth(config, render)
    assert (result.new, result.count) == (4, 4)
    report = inspect_dataset(config.out)
    assert report.ok and report.counts == {"train": 4}, report.format_text()
    rows = read_rows(config.out, "train")
    assert all(row["backend"] == "layerdiffuse" and row["prompt"].startswith("photo of") for row in rows)
    assert {"coverage", "soft_share", "components", "haze", "edges", "torch_seed"} <= rows[0].keys()

    # Resume: delete two samples' rows; only those are generated again, with the same bytes.
    path = config.out / "train/metadata.jsonl"
    lines = path.read_text().splitlines()
    before = read_foreground(config.out / "train/fg/synth-s0-0000003.png").astype(int)
    path.write_text("\n".join(lines[:2]) + "\n")
    calls = []
    result = run_synth(config, lambda jobs: calls.extend(j.index for j in jobs) or render(jobs))
    assert sorted(calls) == [2, 3] and (result.new, result.existing) == (2, 2)
    # Same seed, same prompt: the same image up to float rounding (a batch of 2 instead of 3+1 changes the
    # order of some floating-point sums, so a few values may move by one level).
    after = read_foreground(config.out / "train/fg/synth-s0-0000003.png").astype(int)
    assert np.abs(after - before).max() <= 2 and np.abs(after - before).mean() < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_synth_on_cuda_in_half_precision(tmp_path, dtype):
    """The tiny pipeline in half precision on a GPU: finite mattes in [0, 1], a valid pool, seeds on the GPU."""
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    generator = Generator(
        tiny_pipeline(tmp_path / "tokenizers").to("cuda", torch_dtype), tiny_decoder().to("cuda", torch_dtype)
    )
    seeds = [torch.Generator("cuda").manual_seed(i) for i in range(3)]
    result = generator.generate(["a person"] * 3, [""] * 3, seeds, 64, 128, 2, 7.0)
    assert result.shape == (3, 4, 64, 128) and result.dtype == torch.float32 and result.device.type == "cpu"
    assert torch.isfinite(result).all() and 0 <= result.min() and result.max() <= 1
    config = tiny_config(tmp_path / "synth", n=5, size=(128, 64), batch_size=4, device="cuda", dtype=dtype)
    assert run_synth(config, layerdiffuse_renderer(config, generator)).new == 5
    report = inspect_dataset(config.out)
    assert report.ok and report.counts == {"train": 5}, report.format_text()


def test_size_must_be_a_multiple_of_64():
    with pytest.raises(ValueError, match="multiples of 64"):
        SynthConfig(out=Path("x"), size=(1000, 1024))
    result = CliRunner().invoke(cli, ["synth", "--size", "100x128", "-o", "x"])
    assert result.exit_code == 1 and "multiples of 64" in result.output
    assert SynthConfig(out=Path("x"), backend="procedural", size=(100, 130)).size == (100, 130)  # no SDXL rule there


def procedural_config(out, **changes) -> SynthConfig:
    values = dict(backend="procedural", n=10, batch_size=3, size=(64, 128), progress=False)
    return SynthConfig(out=out, **{**values, **changes})


def contents(out):
    """Rows sorted by id (the metadata files' names and row order differ between shards) and every PNG's bytes."""
    rows = sorted(read_rows(out, "train"), key=lambda row: row["id"])
    files = {path.relative_to(out): path.read_bytes() for path in sorted((out / "train").rglob("*.png"))}
    return rows, files


def test_an_interrupted_run_keeps_every_finished_batch_and_resumes_to_the_same_pool(tmp_path):
    """Batch k is written in a thread while batch k+1 renders: an interrupt in the third render still leaves the
    first two batches on disk, and the rerun ends with the bytes and rows of an uninterrupted run."""

    straight = procedural_config(tmp_path / "straight")
    run_synth(straight)
    config = procedural_config(tmp_path / "interrupted")
    render, calls = procedural_renderer(config), []

    def interrupted(jobs):
        calls.append(len(jobs))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return render(jobs)

    with pytest.raises(KeyboardInterrupt):
        run_synth(config, interrupted)
    assert len(read_rows(config.out, "train")) == 6
    assert run_synth(config).new == 4
    assert contents(config.out) == contents(straight.out)


def test_prompts_are_drawn_as_batches_are_taken_and_retries_follow_every_first_attempt(tmp_path, monkeypatch):
    """A fresh run of 10^6 must not draw 10^6 prompts before its first image (31 s, 1.07 GB): at the first render
    only that batch's are drawn. A rejected person is generated again after every first attempt, its retry joining
    the queue once its batch is written (while the next one renders)."""
    import datagen.synth as synth

    real_prompt, drawn = synth._prompt, []
    monkeypatch.setattr(synth, "_prompt", lambda *args: drawn.append(args[1]) or real_prompt(*args))
    config = procedural_config(tmp_path / "pool", n=7)
    render, batches, drawn_then = procedural_renderer(config), [], []

    def rejecting(jobs):  # the first attempts of samples 1 and 4 come out empty: rejected, and tried again
        batches.append([(job.index, job.attempt) for job in jobs])
        drawn_then.append(len(drawn))
        images = render(jobs)
        for job, image in zip(jobs, images):
            if job.attempt == 0 and job.index in (1, 4):
                image[..., 3] = 0
        return images

    result = run_synth(config, rejecting)
    assert result.new == 7 and result.rejected and sorted(drawn) == list(range(7))
    assert batches == [[(0, 0), (1, 0), (2, 0)], [(3, 0), (4, 0), (5, 0)], [(6, 0), (1, 1)], [(4, 1)]]
    assert drawn_then[0] == 3, drawn_then


def test_a_lost_file_is_made_again_without_a_second_row_and_a_busy_output_is_refused(tmp_path):
    from datagen.records import BusyError, dataset_lock

    config = procedural_config(tmp_path / "pool")
    run_synth(config)
    reference = contents(config.out)
    lost = read_rows(config.out, "train")[3]
    (config.out / "train" / lost["foreground_file_name"]).unlink()
    assert run_synth(config).new == 1
    assert contents(config.out) == reference
    with dataset_lock(config.out), pytest.raises(BusyError, match="another run"):
        run_synth(config)


def test_shards_make_the_samples_of_one_process(tmp_path):
    straight = procedural_config(tmp_path / "straight")
    run_synth(straight)
    for index in range(3):
        run_synth(procedural_config(tmp_path / "shards", shard=(index, 3)))
    assert contents(tmp_path / "shards") == contents(straight.out)
    assert inspect_dataset(tmp_path / "shards").ok


def test_processes_launched_like_accelerate_fill_one_valid_dataset(tmp_path):
    """`accelerate launch -m datagen synth` sets RANK and WORLD_SIZE: two such processes at the same time, one
    directory, the samples of a single process."""
    straight = procedural_config(tmp_path / "straight")
    run_synth(straight)
    out = tmp_path / "launched"
    command = [sys.executable, "-m", "datagen", "synth", "--backend", "procedural", "-n", "10", "-b", "3"]
    command += ["--size", "64x128", "-o", str(out), "--no-progress"]  # width x height, as procedural_config
    processes = [
        subprocess.Popen(command, env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"}, stderr=subprocess.PIPE)
        for rank in range(2)
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read().decode()
    assert contents(out) == contents(straight.out)
    report = inspect_dataset(out)
    assert report.ok and report.counts == {"train": 10}, report.format_text()


def test_procedural_backend_people_and_backgrounds(tmp_path):
    people, backgrounds = tmp_path / "people", tmp_path / "backgrounds"
    runner = CliRunner()
    result = runner.invoke(
        cli, ["synth", "--backend", "procedural", "-n", "5", "--size", "128x192", "-o", str(people), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        [
            "synth",
            "--backend",
            "procedural",
            "--kind",
            "background",
            "-n",
            "3",
            "--size",
            "192x128",
            "-o",
            str(backgrounds),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert inspect_dataset(people).ok and inspect_dataset(backgrounds).ok
    rows = read_rows(people, "train")
    assert len(rows) == 5 and all(
        row["backend"] == "procedural" and "fg/" in row["foreground_file_name"] for row in rows
    )
    assert "procedural CPU backend" in (people / "README.md").read_text()
    assert all("alpha_file_name" not in row for row in read_rows(backgrounds, "train"))


def test_quality_rejections_retry_with_the_next_seed(tmp_path):
    strict = QualityThresholds(min_coverage=0.99)
    config = SynthConfig(
        out=tmp_path / "s", n=2, backend="procedural", size=(64, 64), max_attempts=3, quality=strict, progress=False
    )
    result = run_synth(config)
    assert result.new == 0 and result.failed == 2 and result.rejected == {"coverage too small": 6}
    record = json.loads((tmp_path / "s/run.json").read_text())
    assert record["rejected"] == {"coverage too small": 6}


def test_quality_scores_on_known_alphas():
    alpha = np.zeros((100, 100), np.uint8)
    alpha[40:90, 30:70] = 255
    alpha[5:8, 5:8] = 10  # faint haze
    scores = quality_scores(alpha)
    assert scores["components"] == 1 and scores["edges"] == ""
    assert abs(scores["coverage"] - (50 * 40 + 9) / 10_000) < 1e-9
    alpha[0:10, 50:60] = 255  # a second blob touching the top edge
    scores = quality_scores(alpha)
    assert scores["components"] == 2 and scores["edges"] == "top"
    assert rejection(scores, QualityThresholds()) == "touches the top edge"


def test_prompts_are_seeded_balanced_and_overridable(tmp_path):
    first = [sample_prompt(np.random.default_rng([0, i]), "person") for i in range(400)]
    again = [sample_prompt(np.random.default_rng([0, i]), "person") for i in range(400)]
    assert first == again
    hair = {p["attributes"]["hair"] for p in first}
    assert hair == set(PERSON_ATTRIBUTES["hair"]), "400 draws cover every hair style"
    scene = sample_prompt(np.random.default_rng(1), "background")
    assert "people" in scene["negative_prompt"] and "no people" in scene["prompt"]
    (tmp_path / "p.txt").write_text("# mine\na dancer\n\na chef\n")
    assert [p["prompt"] for p in load_prompts(tmp_path / "p.txt")] == ["a dancer", "a chef"]


def test_the_library_takes_its_shard_and_device_from_the_launcher(tmp_path, monkeypatch):
    import torch

    from datagen.parallel import pick_device

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert SynthConfig(out=tmp_path, backend="procedural").shard == (1, 3)
    assert SynthConfig(out=tmp_path, backend="procedural", shard=(0, 2)).shard == (0, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert str(pick_device()) == "cuda:1" and str(pick_device("cpu")) == "cpu"
