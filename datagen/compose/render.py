"""The compositor: `(foreground, background, params) -> (image, alpha)`, pure pixel work.

Order: background (crop, scale with defocus, colour) -> shadow on the background -> extra people (behind) -> the
person -> occluders (in front) -> camera degradations. The ground truth is the union of the people's
alphas, minus what occluders cover: (1 - (1 - a1)(1 - a2)) * (1 - a_occ), on exactly the grid of the image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from datagen.compose.effects import blur_layer, darken_with_shadow, degrade, motion_kernel
from datagen.compose.geometry import Layer, occlude_alpha, over, place_background, place_foreground, union_alpha
from datagen.compose.photometric import adjust_background, is_neutral, lab_statistics, relight
from datagen.procedural import draw_occluder

STATS_PX = 64  # background colour statistics are taken on a thumbnail of this side


class EmptyComposite(ValueError):
    """The person landed entirely outside the frame."""


@dataclass
class Inputs:
    """Decoded inputs of one composite. Foregrounds are straight RGBA cropped to their alpha bbox."""

    foreground: np.ndarray
    background: np.ndarray
    extra_people: list[np.ndarray] = field(default_factory=list)
    occluders: list[np.ndarray | None] = field(default_factory=list)  # None: procedural, from shape_seed


def _occluder_layer(occluder: np.ndarray | None, params: dict[str, Any], person: Layer, size) -> Layer | None:
    """Place an occluder over the person's box: its centre is offset from the box centre in box units."""
    width, height = size
    box_h, box_w = person.alpha.shape
    occ_h = max(4, int(round(params["height"] * height)))
    if occluder is None:
        occluder = draw_occluder(np.random.default_rng(params["shape_seed"]), occ_h)
    centre_x = person.left + box_w * (0.5 + params["center_x"])
    centre_y = person.top + box_h * (0.5 + params["center_y"])
    placement = {
        "height": occ_h / height,
        "top": (centre_y - occ_h / 2) / height,
        "center_x": centre_x / width,
        "rotation_deg": params["rotation_deg"],
        "flip": False,
    }
    return place_foreground(occluder, placement, size)


def render(inputs: Inputs, params: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One composite at `size` (W, H): image HxWx3 uint8 and its exact alpha HxW uint8."""
    width, height = size
    background = adjust_background(place_background(inputs.background, params["bg"], size), params["bg"])
    lighting = params["lighting"]
    recolor = None
    if not is_neutral(lighting):  # the background's colour statistics are needed only to relight
        stats = lab_statistics(cv2.resize(background, (STATS_PX, STATS_PX), interpolation=cv2.INTER_AREA))
        recolor = functools.partial(relight, lighting=lighting, background_stats=stats)
    person = place_foreground(inputs.foreground, params["placement"], size, recolor)
    if person is None:
        raise EmptyComposite("the person lands outside the frame")
    extras = []
    for extra, extra_params in zip(inputs.extra_people, params["extra_people"]):
        layer = place_foreground(extra, extra_params["placement"], size, recolor)
        if layer is not None:
            extras.append(layer)

    canvas = background.astype(np.float32)
    if params["shadow"]:
        darken_with_shadow(canvas, person, params["shadow"])
    degradations = params["degradations"]
    length = degradations["motion_length"] * height
    if length >= 1 and degradations["motion_subject"]:
        person = blur_layer(person, motion_kernel(length, degradations["motion_angle_deg"]), size)

    layers = [*extras, person]
    alpha = np.zeros((height, width), np.float32)
    alpha[layers[0].box] = layers[0].alpha  # the union with nothing, 1 - (1 - 0)(1 - a) = a exactly: a copy
    for index, layer in enumerate(layers):
        over(canvas, layer)
        if index:
            union_alpha(alpha, layer)
    for occluder, occluder_params in zip(inputs.occluders, params["occluders"]):
        layer = _occluder_layer(occluder, occluder_params, person, size)
        if layer is not None:
            over(canvas, layer)
            occlude_alpha(alpha, layer)
    image, alpha = degrade(canvas, alpha, degradations)
    # round(255 a) saturated to 0..255 in one pass (the alpha is never below 0: products and a positive kernel)
    return image, cv2.convertScaleAbs(alpha, alpha=255.0)
