"""Metrics on alpha mattes in [0, 1], per image, and their dataset means.

Segmentation measures (definitions of PySODMetrics, which follow the authors' MATLAB code): MAE; max, mean
and adaptive F-measure (beta^2 = 0.3); S-measure (alpha 0.5); E-measure (mean and adaptive); weighted
F-measure (beta^2 = 1). The ground truth is binarised as `alpha * 255 > 128`; the thresholds are the 256
levels of `uint8(prediction * 255)`. Unlike PySODMetrics, the prediction is *not* min-max stretched per image:
a matte's values mean something, and stretching invents a subject in an image without one.

Matting measures (Deep Image Matting's MATLAB code, as P3M reports them) on the soft alpha: SAD / 1000, MSE,
gradient error / 1000 (Gaussian derivatives, sigma 1.4), connectivity error / 1000 (thresholds in steps of 0.1,
4-connected largest component), over the whole image and, where a trimap exists, over its unknown band
(trimap == 128; MSE and MAE there are means over the band).

Dataset figures are means of the per-image figures, except max and mean F and E, which are the max and mean
over thresholds of the per-threshold means.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

BETA2 = 0.3  # F-measure
EPS = np.spacing(1)  # MATLAB's eps, which the reference code adds to denominators
LEVELS = 256


def binarize(alpha: np.ndarray) -> np.ndarray:
    """Ground-truth mask: alpha above 128/255 (PySODMetrics' `gt > 128` on the uint8 matte)."""
    return alpha * 255 > 128


def _level_counts(prediction: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold t = 0..255: predicted-foreground pixels (level >= t) inside and outside the mask."""
    levels = (prediction * 255).astype(np.uint8)  # truncation, as the reference code does
    inside = np.bincount(levels[mask], minlength=LEVELS)
    outside = np.bincount(levels[~mask], minlength=LEVELS)
    return np.cumsum(inside[::-1])[::-1], np.cumsum(outside[::-1])[::-1]


def _f_measure(precision, recall, beta2: float = BETA2):
    numerator = (1 + beta2) * precision * recall
    return numerator / np.where(numerator == 0, 1, beta2 * precision + recall)


def adaptive_binary(prediction: np.ndarray) -> np.ndarray:
    """The prediction binarised at the adaptive threshold min(2 * mean(prediction), 1)."""
    return prediction >= min(2 * prediction.mean(), 1)


def f_curve(prediction: np.ndarray, mask: np.ndarray, counts: tuple | None = None) -> np.ndarray:
    """F-measure (beta^2 = 0.3) at the 256 thresholds; prediction HxW in [0, 1], mask HxW bool; `counts`: the
    `_level_counts` of the pair when the caller has them already."""
    true_positive, false_positive = counts if counts is not None else _level_counts(prediction, mask)
    precision = true_positive / np.maximum(true_positive + false_positive, 1)
    recall = true_positive / max(int(mask.sum()), 1)
    return _f_measure(precision, recall)


def adaptive_f(prediction: np.ndarray, mask: np.ndarray, binary: np.ndarray | None = None) -> float:
    """F-measure at the threshold min(2 * mean(prediction), 1)."""
    binary = adaptive_binary(prediction) if binary is None else binary
    hits = int((binary & mask).sum())
    if hits == 0:
        return 0.0
    return float(_f_measure(hits / int(binary.sum()), hits / int(mask.sum())))


def _object_score(values: np.ndarray) -> float:
    mean = values.mean()
    spread = values.std(ddof=1) if values.size > 1 else 0.0
    return 2 * mean / (mean**2 + 1 + spread + EPS)


def _ssim(prediction: np.ndarray, mask: np.ndarray) -> float:
    """The S-measure's region similarity of one quadrant (global statistics, not windowed)."""
    n = prediction.size
    truth = mask.astype(np.float64)
    mean_p, mean_t = prediction.mean(), truth.mean()
    var_p = ((prediction - mean_p) ** 2).sum() / (n - 1 + EPS)
    var_t = ((truth - mean_t) ** 2).sum() / (n - 1 + EPS)
    cov = ((prediction - mean_p) * (truth - mean_t)).sum() / (n - 1 + EPS)
    numerator = 4 * mean_p * mean_t * cov
    denominator = (mean_p**2 + mean_t**2) * (var_p + var_t)
    if numerator != 0:
        return numerator / (denominator + EPS)
    return 1.0 if denominator == 0 else 0.0


def s_measure(prediction: np.ndarray, mask: np.ndarray, weight: float = 0.5) -> float:
    """Structure measure (Fan et al. 2017): weight * object score + (1 - weight) * region score."""
    share = mask.mean()
    if share == 0:
        return float(1 - prediction.mean())
    if share == 1:
        return float(prediction.mean())
    objects = share * _object_score(prediction[mask]) + (1 - share) * _object_score(1 - prediction[~mask])
    height, width = mask.shape
    cy, cx = (int(v) + 1 for v in np.argwhere(mask).mean(axis=0).round())  # +1: MATLAB's 1:X ranges
    quadrants = [
        (rows, cols) for rows in (slice(0, cy), slice(cy, height)) for cols in (slice(0, cx), slice(cx, width))
    ]
    regions = 0.0
    for rows, cols in quadrants:
        area = (rows.stop - rows.start) * (cols.stop - cols.start)
        if area:  # a centroid on the last row or column leaves two quadrants empty
            regions += _ssim(prediction[rows, cols], mask[rows, cols]) * area / (height * width)
    return float(max(0.0, weight * objects + (1 - weight) * regions))


def _enhanced_alignment(fg_in, fg_out, n_mask: int, n: int):
    """Sum of the enhanced alignment matrix from the four pixel counts (vectorised over thresholds)."""
    predicted = fg_in + fg_out
    if n_mask == 0:
        return n - predicted
    if n_mask == n:
        return predicted
    mean_p, mean_t = predicted / n, n_mask / n
    bg_in = n_mask - fg_in
    bg_out = n - predicted - bg_in
    total = 0.0
    for count, p, t in (
        (fg_in, 1 - mean_p, 1 - mean_t),
        (fg_out, 1 - mean_p, -mean_t),
        (bg_in, -mean_p, 1 - mean_t),
        (bg_out, -mean_p, -mean_t),
    ):
        align = 2 * p * t / (p**2 + t**2 + EPS)
        total = total + (align + 1) ** 2 / 4 * count
    return total


def e_curve(prediction: np.ndarray, mask: np.ndarray, counts: tuple | None = None) -> np.ndarray:
    """E-measure (Fan et al. 2018) at the 256 thresholds."""
    fg_in, fg_out = counts if counts is not None else _level_counts(prediction, mask)
    return _enhanced_alignment(fg_in, fg_out, int(mask.sum()), mask.size) / (mask.size - 1 + EPS)


def adaptive_e(prediction: np.ndarray, mask: np.ndarray, binary: np.ndarray | None = None) -> float:
    """E-measure at the threshold min(2 * mean(prediction), 1)."""
    binary = adaptive_binary(prediction) if binary is None else binary
    fg_in, fg_out = int((binary & mask).sum()), int((binary & ~mask).sum())
    return float(_enhanced_alignment(fg_in, fg_out, int(mask.sum()), mask.size) / (mask.size - 1 + EPS))


def _matlab_gaussian(size: int, sigma: float) -> np.ndarray:
    """fspecial('gaussian', size, sigma)."""
    half = (size - 1) / 2
    y, x = np.ogrid[-half : half + 1, -half : half + 1]
    kernel = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    kernel[kernel < np.finfo(kernel.dtype).eps * kernel.max()] = 0
    return kernel / kernel.sum()


def weighted_f(prediction: np.ndarray, mask: np.ndarray, beta2: float = 1.0) -> float:
    """Weighted F-measure (Margolin et al. 2014); 0 when the mask is empty."""
    from scipy.ndimage import distance_transform_edt

    if not mask.any():
        return 0.0
    distance, (rows, cols) = distance_transform_edt(~mask, return_indices=True)  # to the nearest mask pixel
    error = np.abs(prediction - mask)
    spread = error[rows, cols]  # outside the mask: the error at the nearest mask pixel (pixel dependency)
    smoothed = cv2.filter2D(spread, -1, _matlab_gaussian(7, 5), borderType=cv2.BORDER_CONSTANT)
    error = np.where(mask & (smoothed < error), smoothed, error)
    weighted = error * np.where(mask, 1.0, 2 - np.exp(np.log(0.5) / 5 * distance))  # pixel importance
    true_positive = mask.sum() - weighted[mask].sum()
    recall = 1 - weighted[mask].mean()
    precision = true_positive / (true_positive + weighted[~mask].sum() + EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))


def _gaussian_derivative_kernels(sigma: float = 1.4) -> tuple[np.ndarray, np.ndarray]:
    """Deep Image Matting's `gaussgradient` kernel, hx(i, j) = gauss(i) * dgauss(j) scaled to unit L2 norm, as
    its two separable factors (gauss along y, dgauss along x), each scaled by the square root of that norm."""
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 1e-2))))
    u = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    derivative = -u * gauss / sigma**2
    norm = np.sqrt((gauss**2).sum() * (derivative**2).sum())
    return gauss / np.sqrt(norm), derivative / np.sqrt(norm)


def _gradient_magnitude(alpha: np.ndarray) -> np.ndarray:
    smooth, derivative = _gaussian_derivative_kernels()
    # MATLAB's imfilter(..., 'conv') flips the kernel; cv2 correlates: the derivative factor changes sign, which
    # the magnitude does not see
    gx = cv2.sepFilter2D(alpha, cv2.CV_64F, derivative[::-1], smooth, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(alpha, cv2.CV_64F, smooth, derivative[::-1], borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx**2 + gy**2)


def gradient_error_map(prediction: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per pixel: the squared difference of the Gaussian gradient magnitudes (sigma 1.4)."""
    return (_gradient_magnitude(prediction) - _gradient_magnitude(alpha)) ** 2


def gradient_error(prediction: np.ndarray, alpha: np.ndarray, region: np.ndarray) -> float:
    """Sum over `region` of the squared difference of Gaussian gradient magnitudes, / 1000."""
    return float(gradient_error_map(prediction, alpha)[region].sum() / 1000)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros_like(mask)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def connectivity_error_map(prediction: np.ndarray, alpha: np.ndarray, step: float = 0.1) -> np.ndarray:
    """Per pixel: |phi(prediction) - phi(alpha)| of Deep Image Matting's connectivity error."""
    thresholds = [round(i * step, 10) for i in range(int(round(1 / step)) + 1)]
    level = np.full(alpha.shape, -1.0)
    for previous, threshold in zip(thresholds, thresholds[1:]):
        connected = _largest_component((prediction >= threshold) & (alpha >= threshold))
        level[(level == -1) & ~connected] = previous
    level[level == -1] = 1.0

    def phi(values: np.ndarray) -> np.ndarray:
        d = values - level
        return 1 - d * (d >= 0.15)

    return np.abs(phi(prediction) - phi(alpha))


def connectivity_error(prediction: np.ndarray, alpha: np.ndarray, region: np.ndarray, step: float = 0.1) -> float:
    """Deep Image Matting's connectivity error over `region`, / 1000."""
    return float(connectivity_error_map(prediction, alpha, step)[region].sum() / 1000)


def matting_scores(
    prediction: np.ndarray, alpha: np.ndarray, regions: dict[str, np.ndarray | None]
) -> dict[str, dict[str, float]]:
    """SAD / 1000, MSE, gradient / 1000, connectivity / 1000 (and MAE) over each named region (None: every
    pixel). The per-pixel error maps are computed once and summed per region."""
    difference = prediction - alpha
    maps = {"grad": gradient_error_map(prediction, alpha), "conn": connectivity_error_map(prediction, alpha)}
    scores = {}
    for name, region in regions.items():
        region = np.ones(alpha.shape, bool) if region is None else region
        count, inside = max(int(region.sum()), 1), difference[region]
        scores[name] = {
            "mae": float(np.abs(inside).sum() / count),
            "sad": float(np.abs(inside).sum() / 1000),
            "mse": float((inside**2).sum() / count),
            **{key: float(error[region].sum() / 1000) for key, error in maps.items()},
        }
    return scores


def image_scores(
    prediction: np.ndarray, alpha: np.ndarray, trimap: np.ndarray | None = None, matting: bool = True
) -> dict[str, Any]:
    """All measures of one image. prediction, alpha: HxW float in [0, 1] (the same size); trimap: HxW uint8
    with 128 in the unknown band, or None. Curves ("f_curve", "e_curve") are 256-vectors."""
    prediction, alpha = np.asarray(prediction, np.float64), np.asarray(alpha, np.float64)
    if prediction.shape != alpha.shape:
        raise ValueError(f"prediction {prediction.shape} and alpha {alpha.shape} differ in size")
    mask = binarize(alpha)
    counts = _level_counts(prediction, mask)  # shared by the F and E curves
    scores: dict[str, Any] = {
        "mae": float(np.abs(prediction - alpha).mean()),
        "f_curve": f_curve(prediction, mask, counts),
    }
    if not matting:
        return scores
    binary = adaptive_binary(prediction)
    scores.update(
        adaptive_f=adaptive_f(prediction, mask, binary),
        s_measure=s_measure(prediction, mask),
        e_curve=e_curve(prediction, mask, counts),
        adaptive_e=adaptive_e(prediction, mask, binary),
        weighted_f=weighted_f(prediction, mask),
    )
    regions = {"image": None} if trimap is None else {"image": None, "unknown": trimap == 128}
    errors = matting_scores(prediction, alpha, regions)
    scores.update({key: value for key, value in errors["image"].items() if key != "mae"})
    if trimap is not None:
        scores["unknown"] = errors["unknown"]
    return scores


def score_matte(
    prediction: np.ndarray, alpha: np.ndarray, trimap: np.ndarray | None = None, matting: bool = True
) -> dict[str, Any]:
    """`image_scores` of a prediction against a uint8 ground truth. prediction: float in [0, 1], or a uint8 matte
    read from a file (then resized, linear, to the truth's size). `matting=False`: MAE and the F curve only
    (training's validation). Light to import: evaluate's worker processes run it."""
    if prediction.dtype == np.uint8:
        prediction = prediction.astype(np.float64) / 255
        if prediction.shape != alpha.shape:
            prediction = cv2.resize(prediction, alpha.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return image_scores(prediction, alpha.astype(np.float64) / 255, trimap, matting=matting)


class Meter:
    """Accumulates `image_scores` over a data set. `full=False` keeps only MAE and the F curve (training's
    validation); `result()` gives the dataset figures."""

    def __init__(self, full: bool = True):
        self.full = full
        self.images: list[dict[str, Any]] = []

    def add(self, prediction: np.ndarray, alpha: np.ndarray, trimap: np.ndarray | None = None) -> dict[str, Any]:
        return self.record(image_scores(prediction, alpha, trimap, matting=self.full))

    def record(self, scores: dict[str, Any]) -> dict[str, Any]:
        """Scores of one image computed elsewhere (`image_scores`, e.g. in a worker process)."""
        self.images.append(scores)
        return scores

    def result(self) -> dict[str, Any]:
        if not self.images:
            return {"n": 0}
        result: dict[str, Any] = {"n": len(self.images)}
        for key in self.images[0]:
            if key in ("f_curve", "e_curve"):
                curve = np.mean([image[key] for image in self.images], axis=0)
                prefix = key[0]
                result[f"max_{prefix}"], result[f"mean_{prefix}"] = float(curve.max()), float(curve.mean())
            elif key != "unknown":
                result[key] = float(np.mean([image[key] for image in self.images]))
        if "mean_e" in result:
            result["e_measure"] = result.pop("mean_e")  # the mean E-measure, as DIS and IS-Net report it
        unknown = [image["unknown"] for image in self.images if "unknown" in image]
        if unknown:
            result["unknown"] = {"n": len(unknown), **{k: float(np.mean([u[k] for u in unknown])) for k in unknown[0]}}
        return result
