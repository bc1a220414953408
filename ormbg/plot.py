"""The training curves as a PNG (OpenCV drawing, no plotting library): loss, and validation MAE per set."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from datagen.io import encode_png, write_atomic

WIDTH, HEIGHT, MARGIN = 900, 360, 50
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def _panel(series: dict[str, list[tuple[float, float]]], title: str) -> np.ndarray:
    panel = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    points = [p for values in series.values() for p in values]
    cv2.putText(panel, title, (MARGIN, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    if not points:
        return panel
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    x0, x1 = xs.min(), max(xs.max(), xs.min() + 1)
    y0, y1 = ys.min(), max(ys.max(), ys.min() + 1e-6)
    cv2.rectangle(panel, (MARGIN, MARGIN), (WIDTH - 20, HEIGHT - MARGIN), (180, 180, 180), 1)
    for value, y in ((y1, MARGIN), (y0, HEIGHT - MARGIN)):
        cv2.putText(panel, f"{value:.4g}", (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(panel, f"step {int(x1)}", (WIDTH - 110, HEIGHT - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        px = MARGIN + (x - x0) / (x1 - x0) * (WIDTH - 20 - MARGIN)
        py = HEIGHT - MARGIN - (y - y0) / (y1 - y0) * (HEIGHT - 2 * MARGIN)
        return int(round(px)), int(round(py))

    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)][::-1]
        line = np.array([to_pixel(x, y) for x, y in values], np.int32).reshape(-1, 1, 2)
        cv2.polylines(panel, [line], False, colour, 2, cv2.LINE_AA)
        for point in line[:, 0]:
            cv2.circle(panel, tuple(int(v) for v in point), 2, colour, -1)
        cv2.putText(panel, name, (MARGIN + 10 + 200 * index, MARGIN + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
    return panel


def plot_curves(metrics: Path, out: Path) -> None:
    """Read metrics.jsonl and write a two-panel PNG: training loss, and validation MAE of every set."""
    loss, mae = {"loss": []}, {}
    for line in Path(metrics).read_text().splitlines():
        entry = json.loads(line)
        if "loss" in entry:
            loss["loss"].append((entry["step"], entry["loss"]))
        for name, scores in entry.get("val", {}).items():
            mae.setdefault(name, []).append((entry["step"], scores["mae"]))
    image = np.vstack([_panel(loss, "training loss"), _panel(mae, "validation MAE")])
    write_atomic(out, encode_png(image))
