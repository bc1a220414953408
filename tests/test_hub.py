import json
import logging
import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from datagen.card import license_rank
from datagen.cli import cli
from datagen.hub import PushConfig, pull, push
from datagen.inspect import inspect_dataset
from datagen.io import encode_png, read_alpha, read_image
from datagen.records import iter_samples, read_rows
from tests.conftest import write_demo_dataset

TOKEN = "hf_secret_token_for_the_test_0123456789"


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "ds"
    write_demo_dataset(root, n_train=5, n_test=3, trimap=True)
    return root


def test_dry_run_loads_pixel_equal_and_has_a_card(dataset, tmp_path):
    import datasets

    out = tmp_path / "dry"
    result = CliRunner().invoke(
        cli, ["push", str(dataset), "user/demo", "--dry-run", str(out), "--max-shard-size", "8KB"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((out / "data").glob("train-*.parquet"))) > 1, "8KB shards: train must span several"
    assert (out / "preview.png").is_file()
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert {name: part.num_rows for name, part in loaded.items()} == {"train": 5, "test": 3}
    source = {s.id: s for s in iter_samples(dataset)}
    for part in loaded.values():
        for example in part:
            sample = source[example["id"]]
            np.testing.assert_array_equal(np.asarray(example["image"]), read_image(sample.path("image")))
            np.testing.assert_array_equal(np.asarray(example["alpha"]), read_alpha(sample.path("alpha")))
            np.testing.assert_array_equal(np.asarray(example["trimap"]), read_alpha(sample.path("trimap")))
            assert example["source"] == "procedural" and example["width"] == sample.row["width"]
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "apache-2.0" and header["task_categories"] == ["image-segmentation"]
    assert {entry["split"] for entry in header["configs"][0]["data_files"]} == {"train", "test"}
    assert "| procedural | 8 | Apache-2.0 |" in card and "preview.png" in card
    report = inspect_dataset(dataset)  # the card's alpha statistics, counted as the shards pass, are inspect's
    share = report.to_dict()["alpha_share"]
    assert (
        f"Pixels: {share['transparent']:.1%} transparent, {share['opaque']:.1%} opaque, {share['soft']:.1%} soft; "
        f"{len(report.empty_alpha)} empty and {len(report.full_alpha)} full alphas."
    ) in card


def test_pull_of_the_dry_run_gives_back_an_equal_directory(dataset, tmp_path):
    push(PushConfig(dataset, "user/demo", dry_run=tmp_path / "dry"))
    back = tmp_path / "back"
    assert pull(str(tmp_path / "dry"), back).counts == {"train": 5, "test": 3}
    record = json.loads((back / "run.json").read_text())  # provenance, as every stage's: the record and a card
    assert record["command"] == "datagen pull" and record["config"]["repo_id"] == str(tmp_path / "dry")
    assert record["new"] == 8 and record["counts"] == {"train": 5, "test": 3} and record["seconds"] > 0
    assert f"Pulled from the local copy {tmp_path / 'dry'} by `datagen pull`." in (back / "README.md").read_text()
    for split in ("train", "test"):
        original = {row["id"]: row for row in read_rows(dataset, split)}
        pulled = {row["id"]: row for row in read_rows(back, split)}
        assert pulled == original
    for sample in iter_samples(dataset):
        twin = back / sample.split
        assert (twin / sample.row["file_name"]).read_bytes() == sample.path("image").read_bytes()
        np.testing.assert_array_equal(
            read_alpha(twin / sample.row["alpha_file_name"]), read_alpha(sample.path("alpha"))
        )
        np.testing.assert_array_equal(
            read_alpha(twin / sample.row["trimap_file_name"]), read_alpha(sample.path("trimap"))
        )


def test_licence_is_the_most_restrictive():
    assert license_rank("foreground: MIT; background: CC BY-NC-SA 4.0")[1] == "cc-by-nc-sa-4.0"
    assert license_rank("non-commercial research and education only")[1] == "other"
    assert license_rank("foreground: unknown; background: Apache-2.0")[1] == "other"
    assert license_rank("MIT (P3M-10k release agreement)")[1] == "mit"


def test_upload_with_the_http_layer_intercepted(dataset, caplog, capsys):
    staged = []  # shards on local disk at each commit

    def count_staged():
        staged.append(len(list(dataset.parent.glob(".*.push-staging/data/*.parquet"))))

    with FakeHub(on_commit=count_staged) as hub, caplog.at_level(logging.DEBUG):
        files = push(PushConfig(dataset, "user/demo", token=TOKEN, private=True, max_shard_size="4KB", keep_shards=2))
    requests = hub.requests
    create = next(r for r in requests if r[1].endswith("/api/repos/create"))
    created = json.loads(create[2])
    assert created["type"] == "dataset"
    assert created.get("visibility") == "private" or created.get("private") is True  # 2.x or 0.x protocol
    commits = [
        [json.loads(line)["value"]["path"] for line in r[2].decode().splitlines() if json.loads(line)["key"] == "file"]
        for r in requests
        if "/api/datasets/user/demo/commit/main" in r[1]
    ]
    sent = [path for commit in commits for path in commit]
    assert sorted(sent) == files and "README.md" in sent and sum(p.startswith("data/train-") for p in sent) >= 3
    assert len(commits) >= 3 and max(map(len, commits[:-1])) == 2 and max(staged) <= 2, "2 shards at a time"
    assert create[3] == f"Bearer {TOKEN}", "the token goes to the Hub"
    output = capsys.readouterr()
    assert TOKEN not in caplog.text and TOKEN not in output.out + output.err
    assert not (dataset / ".push").exists() and not any("staging" in p.name for p in dataset.parent.iterdir())


def test_bad_repo_id_and_not_a_dataset(tmp_path):
    runner = CliRunner()
    assert "expected user/name" in runner.invoke(cli, ["push", str(tmp_path), "nope", "--dry-run", "x"]).output
    result = runner.invoke(cli, ["push", str(tmp_path), "u/n", "--dry-run", str(tmp_path / "x")])
    assert result.exit_code == 1 and "no split" in result.output


def _hub_layout(root, columns, splits=("train", "val"), rows=3):
    """A local Hub-style Parquet dataset (data/<split>-00000-of-00001.parquet) with the given image columns."""
    import io as bytes_io

    from PIL import Image

    import datasets
    from datagen.procedural import draw_background, draw_person

    for split in splits:
        data = {name: [] for name in columns}
        for index in range(rows):
            person = draw_person(np.random.default_rng([index, len(split)]), 48, 32)
            photo = draw_background(np.random.default_rng([index]), 48, 32)
            for name, kind in columns.items():
                array = {"rgb": photo, "rgba": person, "mask": person[..., 3]}[kind]
                buffer = bytes_io.BytesIO()
                Image.fromarray(array).save(buffer, format="PNG")
                data[name].append({"bytes": buffer.getvalue(), "path": None})
        features = datasets.Features({name: datasets.Image() for name in columns})
        (root / "data").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(data, features=features).to_parquet(
            str(root / f"data/{split}-00000-of-00001.parquet")
        )
    return root


def test_pull_takes_the_mask_column_maps_splits_and_resumes(tmp_path):
    from datagen.inspect import inspect_dataset

    src = _hub_layout(tmp_path / "hub", {"image": "rgb", "mask": "mask"})
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["pull", str(src), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "matte from column `mask`" in result.output and "val -> validation" in result.output
    report = inspect_dataset(out)
    assert report.ok, report.format_text()
    rows = read_rows(out, "validation")
    assert len(rows) == 3 and rows[0]["hub_split"] == "val"
    alpha = read_alpha(out / "validation" / rows[0]["alpha_file_name"])
    assert alpha.min() == 0 and 0 < alpha.mean() < 255, "the mask column is the matte, not an opaque image"
    before = {split: read_rows(out, split) for split in ("train", "validation")}
    again = CliRunner().invoke(cli, ["pull", str(src), "-o", str(out), "--no-progress"])
    assert again.exit_code == 0 and "new 0, already there 6" in again.output
    assert {split: read_rows(out, split) for split in ("train", "validation")} == before, "no row twice"
    mapped = pull(str(src), tmp_path / "mapped", split_map={"val": "train"})
    assert mapped.counts == {"train": 6}


def test_pull_refuses_images_without_a_matte(tmp_path):
    src = _hub_layout(tmp_path / "hub", {"image": "rgb"}, splits=("train",))
    result = CliRunner().invoke(cli, ["pull", str(src), "-o", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 1 and "no matte column" in result.output and "--alpha-column" in result.output
    assert "Traceback" not in result.output
    rgba = _hub_layout(tmp_path / "rgba", {"image": "rgba"}, splits=("test",))
    assert pull(str(rgba), tmp_path / "pool").alpha_column == "image"


@pytest.mark.parametrize("repo_id", ["user/-x", "user/" + "a" * 120, "nope", "a/b/c"])
def test_push_checks_the_repo_id_before_any_work(dataset, tmp_path, repo_id):
    result = CliRunner().invoke(cli, ["push", str(dataset), repo_id])
    assert result.exit_code == 1 and "expected user/name" in result.output
    assert not any(".push" in p.name for p in dataset.parent.iterdir())


class FakeHub:
    """huggingface_hub's HTTP client answering as the Hub for create, preupload (files sent inline) and commit, while
    the `with` lasts. Commit number `fail_commit` (from 1) fails as a dropped network does; `on_commit()` runs at each
    commit. Keeps every request (method, url, body, authorization) and the files committed (path -> content)."""

    def __init__(self, fail_commit: int | None = None, on_commit=None):
        self.fail_commit, self.on_commit = fail_commit, on_commit
        self.requests, self.sent, self.commits = [], {}, 0

    def handler(self, request):
        import httpx2 as httpx

        url, body = str(request.url), request.content
        self.requests.append((request.method, url, body, request.headers.get("authorization")))
        if url.endswith("/api/repos/create"):
            return httpx.Response(200, json={"url": "https://huggingface.co/datasets/user/demo"})
        if url.endswith("/api/validate-yaml"):
            return httpx.Response(200, json={"errors": [], "warnings": []})
        if "/preupload/" in url:
            files = json.loads(body)["files"]
            answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx.Response(200, json={"files": answer})
        if "/commit/" in url:
            self.commits += 1
            if self.on_commit:
                self.on_commit()
            if self.commits == self.fail_commit:
                raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.sent[item["value"]["path"]] = item["value"]["content"]
            commit = {"commitUrl": "https://huggingface.co/datasets/user/demo/commit/a", "commitOid": "a" * 40}
            return httpx.Response(200, json={**commit, "pullRequestUrl": None})
        return httpx.Response(404, json={"error": "not mocked"})

    def __enter__(self):
        import httpx2 as httpx
        from huggingface_hub.utils import _http

        _http.set_client_factory(lambda: httpx.Client(transport=httpx.MockTransport(self.handler)))
        _http.close_session()
        return self

    def __exit__(self, *exc):
        from huggingface_hub.utils import _http

        _http.set_client_factory(_http.default_client_factory)
        _http.close_session()


def test_a_failed_push_is_one_line_keeps_its_staging_and_a_rerun_goes_on(dataset, tmp_path, monkeypatch):
    """The network drops at the second commit: one line, the staging stays (the first commit's shards recorded,
    removed from disk); the rerun encodes only the shards not yet uploaded, and the repository equals a clean
    push's, byte for byte."""
    import datagen.hub

    clean = tmp_path / "clean"
    shutil.copytree(dataset, clean)
    options = ["--token", TOKEN, "--max-shard-size", "4KB", "--keep-shards", "2"]
    with FakeHub() as hub:
        assert CliRunner().invoke(cli, ["push", str(clean), "user/demo", *options]).exit_code == 0
    expected = hub.sent
    encoded = []
    real_write = datagen.hub.write_shard
    monkeypatch.setattr(
        datagen.hub, "write_shard", lambda rows, path, f: encoded.append(path.name) or real_write(rows, path, f)
    )
    with FakeHub(fail_commit=2) as hub:
        result = CliRunner().invoke(cli, ["push", str(dataset), "user/demo", *options])
    sent = hub.sent
    assert result.exit_code == 1, result.output
    assert "push to datasets/user/demo failed" in result.output and "a rerun goes on" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    staging = dataset.parent / ".ds.push-staging"
    record = json.loads((staging / ".datagen-push-staging").read_text())
    assert len(record["done"]) == 2 and not any((staging / name).exists() for name in record["done"])
    first = list(encoded)
    with FakeHub() as hub:
        assert CliRunner().invoke(cli, ["push", str(dataset), "user/demo", *options]).exit_code == 0
    more = hub.sent
    again = encoded[len(first) :]
    assert not set(again) & set(record["done"]), "shards uploaded before are not encoded again"
    assert len(again) == len(expected) - 2 - 2, "the rest only (README.md and preview.png are not shards)"
    assert {**sent, **more} == expected
    assert not staging.exists(), "a finished push removes its staging"


def test_local_and_hub_cards_agree_and_describe_what_is_there(tmp_path, person):
    from datagen.card import SIZE_CATEGORIES, size_category, write_card
    from datagen.records import write_sample

    out = tmp_path / "mixed"
    image = np.zeros((8, 8, 3), np.uint8)
    alpha = np.full((8, 8), 255, np.uint8)
    write_sample(out, "train", "a", image=image, alpha=alpha, metadata={"source": "p3m", "license": "MIT"})
    write_sample(
        out, "train", "b", image=image, alpha=alpha, metadata={"source": "dis5k", "license": "non-commercial research"}
    )
    write_card(out, "mixed", "Two sources.")
    local = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    push(PushConfig(out, "user/mixed", dry_run=tmp_path / "dry"))
    hub = yaml.safe_load((tmp_path / "dry/README.md").read_text().split("---")[1])
    for key in ("license", "license_name", "license_link", "size_categories", "task_categories"):
        assert local[key] == hub[key], key
    assert local["license"] == "other" and local["license_link"] == "LICENSE.md" and "license_details" not in local
    assert "non-commercial research" in (out / "LICENSE.md").read_text() and (tmp_path / "dry/LICENSE.md").is_file()
    pull(str(tmp_path / "dry"), tmp_path / "back")  # the licence statements come back with the data
    assert (tmp_path / "back/LICENSE.md").read_bytes() == (tmp_path / "dry/LICENSE.md").read_bytes()
    assert {"name": "alpha", "dtype": "image"} in local["dataset_info"]["features"]
    assert "configs" in hub and "configs" not in local

    pool = tmp_path / "pool"
    write_sample(
        pool, "train", "p", foreground=person, alpha=person[..., 3], metadata={"source": "s", "license": "MIT"}
    )
    write_card(pool, "pool", "People.")
    text = (pool / "README.md").read_text()
    assert "fg/<id>.png" in text and "im/" not in text

    allowed = {label for _, label in SIZE_CATEGORIES} | {"n>1T"}
    assert size_category(2_000_000) == "1M<n<10M" and all(size_category(10**k) in allowed for k in range(13))


def test_dry_run_never_deletes_a_folder_it_did_not_stage(dataset, tmp_path):
    """--dry-run into a folder with other files, or into the dataset itself, is refused and loses nothing; a
    second dry run into its own earlier staging replaces it."""
    work = tmp_path / "mywork"
    work.mkdir()
    (work / "thesis.txt").write_text("years of work")
    runner = CliRunner()
    for target in (work, dataset, dataset / "train"):
        before = sorted(p for p in target.rglob("*"))
        result = runner.invoke(cli, ["push", str(dataset), "user/demo", "--dry-run", str(target)])
        assert result.exit_code == 1 and f"--dry-run {target}" in result.output, result.output
        assert sorted(p for p in target.rglob("*")) == before
    assert (work / "thesis.txt").read_text() == "years of work"
    staged = tmp_path / "staged"
    first = push(PushConfig(dataset, "user/demo", dry_run=staged))
    assert ".datagen-push-staging" not in first and (staged / ".datagen-push-staging").is_file()
    assert push(PushConfig(dataset, "user/demo", dry_run=staged)) == first


def test_pull_checks_what_it_writes_and_skips_bad_rows_with_reasons(tmp_path):
    """Image/matte size mismatch, truncated or non-image bytes, a duplicate id and an invalid id are skipped with their
    reasons; the pulled dataset passes inspect."""
    import datasets
    from datagen.inspect import inspect_dataset
    from datagen.io import encode_jpeg, encode_png
    from datagen.procedural import draw_background

    image = encode_jpeg(draw_background(np.random.default_rng(0), 40, 30))
    alpha = encode_png(np.full((40, 30), 200, np.uint8))
    rows = [
        ("good", image, alpha),
        ("small-matte", image, encode_png(np.full((20, 30), 200, np.uint8))),
        ("truncated", image[: len(image) // 2], alpha),
        ("not-an-image", b"hello world, not an image", alpha),
        ("good", image, alpha),
        ("bad id!", image, alpha),
    ]
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(), "alpha": datasets.Image()})
    data = {"id": [r[0] for r in rows], "image": [{"bytes": r[1], "path": None} for r in rows]}
    data["alpha"] = [{"bytes": r[2], "path": None} for r in rows]
    folder = tmp_path / "hub"
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(folder / "data/train-00000-of-00001.parquet"))
    result = pull(str(folder), tmp_path / "pulled")
    assert result.new == 1 and result.existing == 0 and result.counts == {"train": 1}
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "pulled/skipped.jsonl").read_text().splitlines()]
    assert len(reasons) == 5, reasons
    assert any("sizes differ" in r for r in reasons) and sum("unreadable image" in r for r in reasons) == 2
    assert any("duplicate id 'good'" in r for r in reasons) and any("invalid id 'bad id!'" in r for r in reasons)
    assert inspect_dataset(tmp_path / "pulled").ok


def test_pull_of_a_dataset_directory_or_without_network_is_one_line(dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["pull", str(dataset), "-o", str(tmp_path / "p")])
    assert result.exit_code == 1 and "is a dataset directory already" in result.output, result.output
    result = runner.invoke(cli, ["pull", "someone/not-reachable", "-o", str(tmp_path / "q")])  # offline in tests
    assert result.exit_code == 1 and "pull of someone/not-reachable" in result.output, result.output
    assert "Traceback" not in result.output and "Check the network" in result.output
    result = runner.invoke(cli, ["pull", str(tmp_path / "nope"), "-o", str(tmp_path / "q")])
    assert result.exit_code == 1 and str(tmp_path / "nope") in result.output and "Traceback" not in result.output


def test_a_pull_rerun_brings_back_the_files_its_rows_brought_and_leaves_those_added_here(tmp_path, person):
    """mask/, refine_trimap/ and a marked fg/ are files an in-place stage adds, which import's and compose's resume
    check leaves out. Pulled from a refined dataset they are pull's own: one gone, the rerun pulls the row again.
    Added here (refine over a pulled dataset), one gone does not have pull put the Hub's alpha back under the row."""
    from datagen.records import update_rows, write_sample

    source = tmp_path / "src"
    alpha = person[..., 3]
    for index in range(2):
        write_sample(
            source,
            "train",
            f"refined-{index}",
            image=np.ascontiguousarray(person[..., :3]),
            alpha=alpha,
            mask=np.where(alpha > 127, 255, 0).astype(np.uint8),
            refine_trimap=np.where(alpha == 0, 0, np.where(alpha == 255, 255, 128)).astype(np.uint8),
            foreground=person,
            metadata={"source": "procedural", "license": "Apache-2.0", "alpha_source": "vitmatte",
                      "foreground_method": "blur_fusion"},
        )  # fmt: skip
    push(PushConfig(source, "user/refined", dry_run=tmp_path / "dry"))
    back = tmp_path / "back"
    assert pull(str(tmp_path / "dry"), back).new == 2
    row = read_rows(back, "train")[0]
    columns = ("mask_file_name", "refine_trimap_file_name", "foreground_file_name")
    kept = {column: (back / "train" / row[column]).read_bytes() for column in columns}
    for column in columns:
        (back / "train" / row[column]).unlink()
    again = pull(str(tmp_path / "dry"), back)
    assert (again.new, again.existing) == (1, 1), "the row with files gone is pulled again (its row kept)"
    assert {column: (back / "train" / row[column]).read_bytes() for column in columns} == kept
    assert read_rows(back, "train") == read_rows(source, "train")

    plain = tmp_path / "plain"  # a dataset without those files, refined here after the pull
    write_sample(plain, "train", "p-0", image=np.ascontiguousarray(person[..., :3]), alpha=alpha,
                 metadata={"source": "procedural", "license": "Apache-2.0"})  # fmt: skip
    push(PushConfig(plain, "user/plain", dry_run=tmp_path / "dry-plain"))
    here = tmp_path / "here"
    pull(str(tmp_path / "dry-plain"), here)
    refined = np.full_like(alpha, 7)
    (here / "train/gt/p-0.png").write_bytes(encode_png(refined))
    update_rows(here, "train", lambda row: {"mask_file_name": "mask/p-0.png", "alpha_source": "vitmatte"})
    assert pull(str(tmp_path / "dry-plain"), here).existing == 1, "mask/p-0.png is not there, and not pull's"
    np.testing.assert_array_equal(read_alpha(here / "train/gt/p-0.png"), refined)


def test_a_pull_rerun_streams_only_the_shards_it_has_not_pulled(tmp_path, monkeypatch):
    """A pull stopped before the last shard, rerun: the shards it has are read by their `id` column alone (no image
    streamed again), the rest pulled; the directory equals a pull in one go."""
    import pyarrow.parquet as pq

    import datagen.hub as hub
    from tests.conftest import directory_bytes

    data = tmp_path / "ds"
    write_demo_dataset(data, n_train=12, n_test=2, size=(40, 32))
    staged = tmp_path / "staged"
    push(PushConfig(data, "user/d", dry_run=staged, max_shard_size="6KB"))
    shards = sorted((staged / "data").glob("train-*.parquet"))
    assert len(shards) >= 3
    last = pq.read_table(shards[-1], columns=["id"]).column("id").to_pylist()
    shards[-1].rename(tmp_path / "aside.parquet")  # the pull stops before it
    back = tmp_path / "back"
    assert pull(str(staged), back).new == 14 - len(last)
    (tmp_path / "aside.parquet").rename(shards[-1])
    pulled, checked = [], []
    pull_row, brought_and_lost = hub._pull_row, hub._brought_and_lost
    monkeypatch.setattr(hub, "_pull_row", lambda example, *a: pulled.append(example["id"]) or pull_row(example, *a))
    monkeypatch.setattr(hub, "_brought_and_lost", lambda o, s, *a: checked.append(s) or brought_and_lost(o, s, *a))
    result = pull(str(staged), back)
    assert (result.new, result.existing) == (len(last), 14 - len(last))
    assert pulled == last and set(checked) == {"test"}, "no done train row streamed again"
    monkeypatch.undo()
    once = tmp_path / "once"
    pull(str(staged), once)
    assert directory_bytes(back) == directory_bytes(once)
