"""Seeded prompt sampling: the people a background remover meets, and people-free scenes.

Each attribute is drawn uniformly from its list with the sample's own generator, so the mix is balanced over
many samples and every choice is recorded in the sample's metadata. Hair gets many entries on purpose: hair is
where mattes fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from datagen.errors import InputError

PERSON_ATTRIBUTES: dict[str, list[str]] = {
    "age": ["a child", "a teenager", "a young adult", "an adult", "a middle-aged", "an elderly"],
    "gender": ["woman", "man", "person"],
    "skin": ["dark skin", "brown skin", "olive skin", "light skin", "pale skin", "freckled skin"],
    "body": ["slim", "average build", "athletic", "plus-size", "broad-shouldered"],
    "hair": [
        "long straight hair",
        "long curly hair",
        "frizzy hair",
        "voluminous afro",
        "braided hair",
        "box braids",
        "flyaway messy hair",
        "wavy shoulder-length hair",
        "a ponytail",
        "a bun with loose strands",
        "short hair",
        "a buzz cut",
        "bald head",
        "dreadlocks",
        "wind-blown hair",
    ],
    "clothing": [
        "a t-shirt and jeans",
        "a business suit",
        "a loose oversized sweater",
        "a sheer blouse",
        "a fur coat",
        "a summer dress",
        "a hoodie",
        "sportswear",
        "a knitted cardigan",
        "a flowing skirt",
        "a leather jacket",
    ],
    "accessory": [
        "no accessories",
        "glasses",
        "sunglasses",
        "a wide-brimmed hat",
        "a beanie",
        "a shoulder bag",
        "holding a coffee cup",
        "holding a phone",
        "headphones",
        "a scarf",
        "earrings",
    ],
    "pose": [
        "standing",
        "walking",
        "sitting on a stool",
        "waving",
        "arms crossed",
        "hands in pockets",
        "laughing",
        "looking over the shoulder",
        "jumping",
        "dancing",
    ],
    "framing": ["portrait", "half body shot", "full body shot"],
    "angle": ["eye level", "slightly from above", "slightly from below", "three-quarter view", "side view"],
    "lighting": ["soft daylight", "studio lighting", "golden hour light", "overcast light", "dramatic side light"],
}
PERSON_TEMPLATE = (
    "photo of {age} {gender}, {skin}, {body}, {hair}, wearing {clothing}, {accessory}, {pose}, {framing}, "
    "{angle}, {lighting}, detailed hair"
)
PERSON_NEGATIVE = "blurry, lowres, deformed, extra limbs, bad anatomy, watermark, text, cropped head"

SCENE_ATTRIBUTES: dict[str, list[str]] = {
    "place": [
        "a living room",
        "a kitchen",
        "an office",
        "a cafe",
        "a city street",
        "a subway station",
        "a park",
        "a forest path",
        "a beach",
        "a mountain meadow",
        "a photo studio with a seamless backdrop",
        "a plain painted wall",
        "a textured brick wall",
        "a concrete wall",
        "a library",
        "a gym",
    ],
    "time": ["daytime", "evening", "night with street lights", "golden hour", "overcast day"],
    "style": ["photo", "DSLR photo, shallow depth of field", "smartphone photo", "wide angle photo"],
}
SCENE_TEMPLATE = "{style} of {place}, {time}, empty, no people, high quality"
SCENE_NEGATIVE = "people, person, man, woman, child, crowd, human, face, body, hands, text, watermark"


def sample_prompt(rng: np.random.Generator, kind: str, focus: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """{"prompt", "negative_prompt", "attributes"} for kind 'person' or 'background'. Each attribute value is drawn
    uniformly, or with `focus` (attribute -> one weight per value, `datagen.slices.focus_weights`) in proportion to
    its weight; an attribute `focus` does not name stays uniform (and draws as it would without focus)."""
    attributes, template, negative = {
        "person": (PERSON_ATTRIBUTES, PERSON_TEMPLATE, PERSON_NEGATIVE),
        "background": (SCENE_ATTRIBUTES, SCENE_TEMPLATE, SCENE_NEGATIVE),
    }[kind]
    focus = focus or {}
    chosen = {}
    for name, values in attributes.items():
        if name in focus:
            weights = np.asarray(focus[name], np.float64)
            chosen[name] = values[int(rng.choice(len(values), p=weights / weights.sum()))]
        else:
            chosen[name] = values[int(rng.integers(len(values)))]
    return {"prompt": template.format(**chosen), "negative_prompt": negative, "attributes": chosen}


def load_prompts(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Prompts from a file that replaces the sampler: one prompt per line (.txt) or JSON lines with `prompt`
    (and optionally `negative_prompt`). Sample i uses prompt i modulo their number."""
    text = Path(path).read_text(encoding="utf-8")
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        if Path(path).suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not a JSON line ({error})") from None
            if "prompt" not in row:
                raise InputError(f"{path}:{number}: a JSON line needs a 'prompt'")
            prompts.append(
                {"prompt": row["prompt"], "negative_prompt": row.get("negative_prompt", ""), "attributes": {}}
            )
        else:
            prompts.append({"prompt": line.strip(), "negative_prompt": "", "attributes": {}})
    if not prompts:
        raise InputError(f"{path}: no prompts in it")
    return prompts
