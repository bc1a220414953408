"""Metrics against values computed by hand on small arrays, and against PySODMetrics where it installs."""

import numpy as np
import pytest

from ormbg.metrics import (
    Meter,
    adaptive_f,
    binarize,
    connectivity_error,
    f_curve,
    gradient_error,
    image_scores,
    s_measure,
    score_matte,
    weighted_f,
)

PREDICTION = np.array([[1.0, 0.6], [0.2, 0.0]])
ALPHA = np.array([[1.0, 1.0], [0.0, 0.0]])


def f(precision, recall):
    return 1.3 * precision * recall / (0.3 * precision + recall)


def test_f_curve_by_hand():
    """Levels 255, 153, 51, 0: threshold 0 takes all four pixels, 1..51 three, 52..153 two, 154..255 one."""
    curve = f_curve(PREDICTION, binarize(ALPHA))
    expected = np.array([f(0.5, 1)] + [f(2 / 3, 1)] * 51 + [1.0] * 102 + [f(1, 0.5)] * 102)
    np.testing.assert_allclose(curve, expected)
    # adaptive threshold 2 * mean = 0.9: only the 1.0 pixel is foreground
    assert adaptive_f(PREDICTION, binarize(ALPHA)) == pytest.approx(f(1, 0.5))


def test_mae_sad_mse_by_hand():
    scores = image_scores(PREDICTION, ALPHA)
    assert scores["mae"] == pytest.approx(0.15)
    assert scores["sad"] == pytest.approx(0.6 / 1000)
    assert scores["mse"] == pytest.approx((0.4**2 + 0.2**2) / 4)


def test_perfect_prediction():
    """A perfect matte scores MAE 0 and max-F 1 with soft edges too; the matting errors are 0. The adaptive and
    structure measures binarise the prediction, so they reach 1 on a binary matte."""
    alpha = np.zeros((40, 50))
    alpha[10:30, 15:35] = 1.0
    soft = alpha.copy()
    soft[10:30, 14] = 0.5
    meter = Meter()
    scores = meter.add(soft, soft)
    assert scores["mae"] == 0 and scores["sad"] == 0 and scores["mse"] == 0
    assert scores["grad"] == 0 and scores["conn"] == 0
    assert meter.result()["max_f"] == pytest.approx(1.0)
    meter = Meter()
    meter.add(alpha, alpha)
    figures = meter.result()
    assert figures["max_f"] == pytest.approx(1.0)
    assert figures["adaptive_f"] == pytest.approx(1.0)
    assert figures["weighted_f"] == pytest.approx(1.0, abs=1e-6)
    assert figures["s_measure"] == pytest.approx(1.0, abs=1e-3)
    assert figures["max_e"] == pytest.approx(1.0, abs=1e-3)


def test_worse_predictions_score_worse():
    rng = np.random.default_rng(0)
    alpha = np.zeros((64, 64))
    alpha[16:48, 20:44] = 1.0
    good = np.clip(alpha + rng.normal(0, 0.05, alpha.shape), 0, 1)
    bad = np.clip(alpha + rng.normal(0, 0.4, alpha.shape), 0, 1)
    good_scores, bad_scores = image_scores(good, alpha), image_scores(bad, alpha)
    for key in ("adaptive_f", "s_measure", "adaptive_e", "weighted_f"):
        assert good_scores[key] > bad_scores[key], key
    for key in ("mae", "sad", "mse", "grad", "conn"):
        assert good_scores[key] < bad_scores[key], key


def test_s_measure_edge_cases():
    prediction = np.full((4, 4), 0.25)
    assert s_measure(prediction, np.zeros((4, 4), bool)) == pytest.approx(0.75)
    assert s_measure(prediction, np.ones((4, 4), bool)) == pytest.approx(0.25)


def test_weighted_f_of_an_empty_mask_is_zero():
    assert weighted_f(np.zeros((8, 8)), np.zeros((8, 8), bool)) == 0.0


def test_connectivity_error_by_hand():
    """An isolated 0.5 pixel where the truth is 0: no connected region survives any threshold, so the level
    map is 0, phi(prediction) is 1 - 0.5 there and 1 elsewhere, phi(alpha) is 1: error 0.5 / 1000."""
    alpha = np.zeros((9, 9))
    prediction = alpha.copy()
    prediction[4, 4] = 0.5
    region = np.ones_like(alpha, bool)
    assert connectivity_error(prediction, alpha, region) == pytest.approx(0.5 / 1000)
    assert connectivity_error(alpha, alpha, region) == 0


def test_gradient_error_sees_edges_only():
    alpha = np.zeros((32, 32))
    alpha[:, 16:] = 1.0
    region = np.ones_like(alpha, bool)
    assert gradient_error(np.full_like(alpha, 0.3), np.full_like(alpha, 0.7), region) == pytest.approx(0)
    blurred = alpha.copy()
    blurred[:, 14:18] = [0.25, 0.5, 0.75, 1.0]
    assert gradient_error(blurred, alpha, region) > 0
    assert gradient_error(blurred, alpha, np.zeros_like(region)) == 0


def test_unknown_band_from_trimap():
    alpha = np.zeros((10, 10))
    alpha[:, 5:] = 1.0
    prediction = alpha.copy()
    prediction[0, 0] = 1.0  # an error in the known background: outside the band
    prediction[0, 4] = 0.5  # an error in the band
    trimap = np.where(alpha > 0, 255, 0).astype(np.uint8)
    trimap[:, 4:6] = 128
    scores = image_scores(prediction, alpha, trimap)
    assert scores["sad"] == pytest.approx(1.5 / 1000)
    assert scores["unknown"]["sad"] == pytest.approx(0.5 / 1000)
    assert scores["unknown"]["mse"] == pytest.approx(0.25 / 20)


def test_meter_means_images_and_curves():
    meter = Meter()
    meter.add(PREDICTION, ALPHA)
    meter.add(ALPHA, ALPHA)
    result = meter.result()
    assert result["n"] == 2
    assert result["mae"] == pytest.approx(0.075)
    curve = (f_curve(PREDICTION, binarize(ALPHA)) + f_curve(ALPHA, binarize(ALPHA))) / 2
    assert result["max_f"] == pytest.approx(curve.max())
    assert result["mean_f"] == pytest.approx(curve.mean())
    assert "unknown" not in result


def test_training_meter_keeps_mae_and_the_f_curve():
    meter = Meter(full=False)
    for prediction in (PREDICTION, ALPHA):
        meter.record(score_matte(prediction, (ALPHA * 255).astype(np.uint8), matting=False))
    result = meter.result()
    assert set(result) == {"n", "mae", "max_f", "mean_f"}
    assert result["mae"] == pytest.approx(0.075)


@pytest.mark.filterwarnings("ignore:This class will be removed")
def test_against_pysodmetrics():
    """Optional: PySODMetrics pins numpy < 2.3.5, so it installs only beside an older numpy."""
    sod = pytest.importorskip("py_sod_metrics")
    rng = np.random.default_rng(1)
    measures = {
        "fm": sod.Fmeasure(),
        "sm": sod.Smeasure(),
        "em": sod.Emeasure(),
        "wfm": sod.WeightedFmeasure(),
        "mae": sod.MAE(),
    }
    meter = Meter()
    for index in range(4):
        alpha = np.zeros((48, 64))
        alpha[8 + index : 40, 10 : 30 + 5 * index] = 1.0
        prediction = np.clip(alpha * 0.8 + rng.uniform(0, 0.3, alpha.shape), 0, 1)
        meter.add(prediction, alpha)
        for measure in measures.values():
            measure.step(prediction, binarize(alpha), normalize=False)
    ours = meter.result()
    fm, em = measures["fm"].get_results()["fm"], measures["em"].get_results()["em"]
    assert ours["max_f"] == pytest.approx(fm["curve"].max())
    assert ours["mean_f"] == pytest.approx(fm["curve"].mean())
    assert ours["adaptive_f"] == pytest.approx(fm["adp"])
    assert ours["s_measure"] == pytest.approx(measures["sm"].get_results()["sm"])
    assert ours["e_measure"] == pytest.approx(em["curve"].mean())
    assert ours["adaptive_e"] == pytest.approx(em["adp"])
    assert ours["weighted_f"] == pytest.approx(measures["wfm"].get_results()["wfm"])
