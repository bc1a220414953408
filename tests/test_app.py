"""The app: its server side called directly, and the page driven in a real browser (headless Chromium)."""

import io
import json
import os
import shutil
import socket
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datagen.procedural import draw_background
from datagen.records import rejected_ids
from ormbg.app import Models, build_app, reject, remove_background, remove_batch, review_page, sample_details

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def photo(tmp_path):
    """A 97x131 photo stored rotated with EXIF orientation 6: shown upright it is 131 wide, 97 high... swapped."""
    array = draw_background(np.random.default_rng(4), 97, 131)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=95)
    return path


def test_remove_background_outputs_and_batch(tmp_path, checkpoint, photo):
    models = Models({"ormbg.pth": checkpoint}, size_px=64)
    cutout, matte, composite, info = remove_background(models, str(photo), "ormbg.pth", "#00ff00")
    with Image.open(cutout) as rgba:
        assert rgba.mode == "RGBA" and rgba.size == (97, 131), "upright: the EXIF rotation is applied"
        alpha = np.asarray(rgba)[..., 3]
    np.testing.assert_array_equal(np.asarray(Image.open(matte)), alpha)  # the alpha written into the PNG
    assert Image.open(composite).size == (97, 131) and "97x131 px in" in info and "64x64" in info
    other = tmp_path / "b.png"
    Image.fromarray(draw_background(np.random.default_rng(5), 40, 30)).save(other)
    with zipfile.ZipFile(remove_batch(models, [str(photo), str(other)], "ormbg.pth")) as zipped:
        assert sorted(zipped.namelist()) == ["b.png", "photo.png"]
        assert Image.open(io.BytesIO(zipped.read("b.png"))).mode == "RGBA"
    with pytest.raises(ValueError, match="unknown model"):
        remove_background(models, str(photo), "nope")


def test_the_cutout_is_decontaminated_unless_the_checkbox_is_off(checkpoint, photo):
    """By default the cut-out and composite carry the estimated foreground colour (infer's `ml`) in soft pixels; the
    checkbox off gives the photo's own colours; the matte and the opaque pixels are the same either way."""
    from datagen.io import read_image

    models = Models({"ormbg.pth": checkpoint}, size_px=64)
    source = read_image(photo)
    made = {}
    for decontaminate in (True, False):
        paths = remove_background(models, str(photo), "ormbg.pth", "#0000ff", decontaminate=decontaminate)[:3]
        made[decontaminate] = [np.asarray(Image.open(path)) for path in paths]
    (cutout, matte, composite), (plain, plain_matte, plain_composite) = made[True], made[False]
    np.testing.assert_array_equal(matte, plain_matte)
    soft, opaque = (matte > 0) & (matte < 255), matte == 255
    assert soft.any()
    np.testing.assert_array_equal(plain[..., :3], source)  # off: the photo's colours, byte for byte
    np.testing.assert_array_equal(cutout[opaque][:, :3], source[opaque])
    assert (cutout[soft][:, :3] != source[soft]).any() and (composite[soft] != plain_composite[soft]).any()


def test_review_filters_sorts_rejects_and_undoes(tmp_path, dataset_dir):
    spec = str(dataset_dir)
    items, ids, pages = review_page(spec, "train")
    assert len(items) == len(ids) == 3 and pages == 1 and all(Path(tile).is_file() for tile, _ in items)
    items, ids, _ = review_page(spec, "train", "id=demo-train-1")
    assert ids == ["demo-train-1"]
    report = tmp_path / "eval.json"
    per_sample = [{"id": "demo-train-2", "mae": 0.4}, {"id": "demo-train-0", "mae": 0.1}]
    report.write_text(json.dumps({"datasets": {f"{dataset_dir}:train": {"per_sample": per_sample}}}))
    _, ids, _ = review_page(spec, "train", "", "eval error", 1, str(report))
    assert ids[:2] == ["demo-train-2", "demo-train-0"], "the evaluation's worst first"
    tile, text = sample_details(spec, "train", "demo-train-1")
    assert Path(tile).is_file() and json.loads(text)["id"] == "demo-train-1"
    assert reject(spec, "demo-train-1", "wrong matte") == "rejected demo-train-1 (wrong matte)"
    assert rejected_ids(dataset_dir) == {"demo-train-1": "wrong matte"}
    items, _, _ = review_page(spec, "train")
    assert any("REJECTED (wrong matte)" in caption for _, caption in items), "shown, to be undone here"
    assert reject(spec, "demo-train-1", "", undo=True).startswith("undid") and rejected_ids(dataset_dir) == {}
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        review_page(spec, "train", "source")


def test_a_missing_gradio_says_how_to_install_it(monkeypatch, dataset_dir):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(ValueError, match=r"pip install -e \.\[app\]"):
        build_app(None, [str(dataset_dir)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.browser
def test_the_page_in_a_real_browser(tmp_path, checkpoint, dataset_dir, photo):
    """Upload an image, read the cut-out back (size, alpha); reject a sample in the review tab; a screenshot of each
    tab (to ORMBG_SCREENSHOTS, e.g. docs/img, when set)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("no Chromium here: apt-get install -y chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("ORMBG_SCREENSHOTS", tmp_path))
    app = build_app(Models({"ormbg.pth": checkpoint}, size_px=64), [f"{dataset_dir}:train"])
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1700",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        upload = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
        upload.send_keys(str(photo))
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        result = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#cutout img")))
        wait.until(lambda d: "px in" in d.find_element(By.CSS_SELECTOR, "#info").text)
        with urllib.request.urlopen(result.get_attribute("src")) as response:
            cutout = Image.open(io.BytesIO(response.read()))
        assert cutout.mode == "RGBA" and cutout.size == (97, 131)
        assert np.asarray(cutout)[..., 3].std() > 0, "the matte is in the PNG's alpha"
        driver.save_screenshot(str(shots / "app-remove.png"))

        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Review a dataset')]").click()
        wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#show"))).click()
        thumbnail = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#gallery button img, #gallery img")))
        thumbnail.click()
        wait.until(lambda d: "selected demo-train-" in d.find_element(By.CSS_SELECTOR, "#status").text)
        chosen = driver.find_element(By.CSS_SELECTOR, "#status").text.split()[-1]
        driver.find_element(By.CSS_SELECTOR, "#reject").click()
        wait.until(lambda d: "rejected" in d.find_element(By.CSS_SELECTOR, "#status").text)
        deadline = time.time() + 10
        while chosen not in rejected_ids(dataset_dir) and time.time() < deadline:
            time.sleep(0.2)
        assert chosen in rejected_ids(dataset_dir)
        driver.save_screenshot(str(shots / "app-review.png"))
    finally:
        driver.quit()
        app.close()
