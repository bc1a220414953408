"""Procedural person-like foregrounds and backgrounds: exact mattes without any model or download.

They feed the tests, the CPU demo and `datagen synth --backend procedural`. A person is a head, neck,
torso and arms drawn anti-aliased at 4x and downsampled (soft edges), plus semi-transparent hair strands
(alpha well between 0 and 1), so the soft-value paths of every stage get exercised.
"""

from __future__ import annotations

import cv2
import numpy as np

_SUPERSAMPLE = 4


def _downsample(layer: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(layer, (width, height), interpolation=cv2.INTER_AREA)


def _color(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


# How a few drawn prompt attributes (datagen.prompts.PERSON_ATTRIBUTES) shape a procedural person, so that the
# failure loop (`datagen slices` -> `synth --focus`) can run and be tested on a CPU. Hair: (strand count range,
# strand length range in head radii, bend); framing: the head's radius as a share of the frame; clothing: the range
# of the body colour's channels (dark or light against the skin and backgrounds).
HAIR_SHAPES = {
    "bald head": ((0, 1), (0.0, 0.1), 0.0),
    "a buzz cut": ((8, 20), (0.2, 0.4), 0.2),
    "short hair": ((15, 35), (0.3, 0.8), 0.3),
    "voluminous afro": ((90, 140), (1.2, 2.4), 1.2),
    "frizzy hair": ((80, 130), (0.8, 2.2), 1.4),
    "flyaway messy hair": ((70, 120), (1.0, 3.0), 1.2),
    "wind-blown hair": ((60, 100), (1.5, 3.2), 0.9),
    "long curly hair": ((60, 100), (1.8, 3.2), 1.0),
    "long straight hair": ((50, 90), (2.0, 3.4), 0.2),
}
DEFAULT_HAIR = ((25, 60), (0.6, 2.2), 0.6)
FRAMING_HEAD = {"portrait": (0.16, 0.2), "half body shot": (0.11, 0.14), "full body shot": (0.06, 0.08)}
DEFAULT_HEAD = (0.09, 0.13)
DARK_CLOTHES = ("a business suit", "a leather jacket", "a hoodie")
LIGHT_CLOTHES = ("a sheer blouse", "a summer dress", "a knitted cardigan")


def draw_person(
    rng: np.random.Generator, height: int, width: int, attributes: dict[str, str] | None = None
) -> np.ndarray:
    """A person-like RGBA foreground, HxWx4 uint8 with straight alpha; the figure stands in the frame.

    Soft edges come from supersampled drawing; hair strands have alpha between about 0.2 and 0.8. `attributes`
    (prompt attributes, as `datagen synth` draws them) shape the hair, the person's size and the clothing colour;
    without them the person is drawn as it always was from `rng`.
    """
    attributes = attributes or {}
    (strands_low, strands_high), (length_low, length_high), spread = HAIR_SHAPES.get(
        attributes.get("hair", ""), DEFAULT_HAIR
    )
    s = _SUPERSAMPLE
    big_h, big_w = height * s, width * s
    body = np.zeros((big_h, big_w), np.uint8)
    hair = np.zeros((big_h, big_w), np.uint8)
    cx = int(big_w * rng.uniform(0.4, 0.6))
    head_r = int(min(big_h, big_w) * rng.uniform(*FRAMING_HEAD.get(attributes.get("framing", ""), DEFAULT_HEAD)))
    head_cy = int(big_h * 0.12) + head_r
    shoulder_y = head_cy + int(head_r * 1.6)
    torso_w = int(head_r * rng.uniform(1.6, 2.2))

    cv2.circle(body, (cx, head_cy), head_r, 255, -1, cv2.LINE_AA)
    cv2.rectangle(body, (cx - head_r // 3, head_cy), (cx + head_r // 3, shoulder_y + 4 * s), 255, -1)
    cv2.ellipse(body, (cx, big_h), (torso_w, big_h - shoulder_y), 0, 180, 360, 255, -1, cv2.LINE_AA)
    for side in (-1, 1):
        start = (cx + side * int(torso_w * 0.8), shoulder_y + head_r // 2)
        end = (cx + side * int(torso_w * rng.uniform(1.1, 1.6)), big_h - int(big_h * rng.uniform(0.05, 0.3)))
        cv2.line(body, start, end, 255, max(2, head_r // 2), cv2.LINE_AA)

    # Hair: thin curved strands from the crown, each drawn at a partial opacity and accumulated (max).
    strand = np.zeros_like(hair)
    for _ in range(int(rng.integers(strands_low, strands_high))):
        angle = rng.uniform(np.pi * 0.9, np.pi * 2.1)
        length = head_r * rng.uniform(length_low, length_high)
        t = np.linspace(0.0, 1.0, 12)
        bend = rng.uniform(-spread, spread)
        xs = cx + np.cos(angle + bend * t) * (head_r * 0.8 + length * t)
        ys = head_cy + np.sin(angle + bend * t) * (head_r * 0.8 + length * t) * 0.8 + length * t * 0.5
        points = np.stack([xs, ys], axis=1).astype(np.int32).reshape(-1, 1, 2)
        strand[:] = 0
        cv2.polylines(strand, [points], False, int(rng.integers(60, 200)), max(1, s // 2), cv2.LINE_AA)
        np.maximum(hair, strand, out=hair)

    body_alpha = _downsample(body, height, width).astype(np.float32) / 255
    hair_alpha = _downsample(hair, height, width).astype(np.float32) / 255
    alpha = 1 - (1 - body_alpha) * (1 - hair_alpha)

    rgb = np.empty((height, width, 3), np.float32)
    clothing = attributes.get("clothing", "")
    rgb[:] = _color(
        rng, *((10, 60) if clothing in DARK_CLOTHES else (190, 250) if clothing in LIGHT_CLOTHES else (20, 235))
    )
    skin = np.array(_color(rng, 90, 230), np.float32)
    head_rows = slice(0, min(height, shoulder_y // s))
    rgb[head_rows] = skin
    hair_color = np.array(_color(rng, 10, 200), np.float32)
    rgb = rgb * (1 - hair_alpha[..., None]) + hair_color * hair_alpha[..., None]
    shading = np.linspace(1.1, 0.8, width, dtype=np.float32)[None, :, None]
    texture = rng.normal(0, 6, size=(height, width, 1)).astype(np.float32)
    rgb = np.clip(rgb * shading + texture, 0, 255)
    return np.dstack([rgb.astype(np.uint8), np.rint(alpha * 255).astype(np.uint8)])


def draw_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A people-free background, HxWx3 uint8 RGB: a colour gradient with soft shapes and texture."""
    top, bottom = np.array(_color(rng), np.float32), np.array(_color(rng), np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).copy()
    for _ in range(int(rng.integers(3, 9))):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (
            int(rng.integers(width // 20 + 1, width // 3 + 2)),
            int(rng.integers(height // 20 + 1, height // 3 + 2)),
        )
        cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, _color(rng), -1, cv2.LINE_AA)
    sigma = max(0.5, min(height, width) / 200)
    image = cv2.GaussianBlur(image, (0, 0), sigma)
    image += rng.normal(0, 4, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_occluder(rng: np.random.Generator, height: int) -> np.ndarray:
    """A procedural occluder about `height` px tall, HxWx4 uint8 straight RGBA with anti-aliased edges:
    a leafy blob or a pole, in a random colour with some texture."""
    s = _SUPERSAMPLE
    if rng.random() < 0.5:  # blob: a star-convex polygon with a wobbly outline
        width = height
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(7, 16))))
        radii = rng.uniform(0.3, 0.5, angles.size) * height * s
        centre = height * s / 2
        points = np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], axis=1)
    else:  # pole: a long thin quadrilateral
        width = max(4, int(height * rng.uniform(0.08, 0.2)))
        points = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64) * s
    mask = np.zeros((height * s, width * s), np.uint8)
    cv2.fillPoly(mask, [points.astype(np.int32).reshape(-1, 1, 2)], 255, cv2.LINE_AA)
    alpha = _downsample(mask, height, width)
    rgb = np.empty((height, width, 3), np.float32)
    rgb[:] = _color(rng, 10, 200)
    rgb += rng.normal(0, 10, size=(height, width, 1)).astype(np.float32)
    return np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), alpha])
