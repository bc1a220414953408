"""Composites made inside training: a `compose` source of the recipe draws fresh people on fresh backgrounds.

    python -m ormbg.train --compose fg=datasets/synth,fg=datasets/p3m:train,bg=datasets/backgrounds,weight=0.7 \\
        --data datasets/p3m:train:0.3 --val datasets/composites:validation

Sample slot j of (micro-)step s on process r draws its parameters from numpy.random.default_rng([seed, s, r, j])
with `datagen compose`'s own drawing (`datagen.compose.run.draw`) and renders with its own `Renderer` at the
training size; the training augmentation follows as for any source. The same (seed, step) gives the same batch for
any worker count, and `--resume` continues with the batches an uninterrupted run draws. A draw that uses an
unusable pool item is drawn again from (seed, s, r, j, draw). Validation never uses online composites: they are
drawn anew every time (write a fixed set with `datagen compose --val-fraction`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datagen.alpha import EmptyAlphaError
from datagen.compose.config import PRESETS, load_augment
from datagen.compose.pools import PoolItem, list_pool
from datagen.compose.render import EmptyComposite
from datagen.compose.run import MAX_DRAWS, BadItem, Drawn, Pools, Renderer, draw
from datagen.errors import InputError, MissingInputError

FIXED_VALIDATION = (
    "online composites are drawn anew every time, so they cannot select checkpoints: write a fixed validation set "
    "with `datagen compose --fg ... --bg ... --val-fraction 0.05 -o datasets/composites` and pass "
    "--val datasets/composites:validation"
)


@dataclass(frozen=True)
class ComposeSource:
    """A recipe entry: composites drawn in training from foreground and background pools (`DIR[:SPLIT]`, exactly as
    `datagen compose --fg/--bg` take them: every split but test unless one is named)."""

    fg: tuple[str, ...]
    bg: tuple[str, ...]
    occluders: str | None = None  # RGBA pool of occluders; None: procedural ones
    preset: str = "default"  # augmentation ranges of the compositor (none, default, strong)
    config: str | None = None  # YAML of AugmentConfig fields replacing the preset's
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fg", tuple(map(str, self.fg)))
        object.__setattr__(self, "bg", tuple(map(str, self.bg)))
        if not self.fg or not self.bg:
            raise InputError("a compose source needs at least one fg=DIR[:SPLIT] and one bg=DIR[:SPLIT]")
        if self.preset not in PRESETS:
            raise InputError(f"compose preset {self.preset!r}: use one of {', '.join(PRESETS)}")
        if self.config is not None and not Path(self.config).is_file():
            raise MissingInputError(f"compose config {self.config} does not exist")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight <= 0:
            raise InputError(f"compose weight {self.weight!r} must be a number above 0")

    @property
    def name(self) -> str:
        return "compose:" + "+".join(Path(spec.split(":")[0]).name for spec in self.fg)

    @classmethod
    def parse(cls, text: str, option: str = "--compose") -> ComposeSource:
        """`fg=DIR[:SPLIT],bg=DIR[:SPLIT][,fg=...][,bg=...][,occluders=DIR][,weight=W][,preset=P][,config=FILE]`."""
        values: dict[str, Any] = {"fg": [], "bg": []}
        for part in filter(None, text.split(",")):
            key, sep, value = part.partition("=")
            if not sep or key not in ("fg", "bg", "occluders", "weight", "preset", "config"):
                raise InputError(
                    f"{option} {text!r}: {part!r} is not KEY=VALUE with KEY fg, bg, occluders, weight, preset or config"
                )
            if key in ("fg", "bg"):
                values[key].append(value)
            elif key == "weight":
                try:
                    values[key] = float(value)
                except ValueError:
                    raise InputError(f"{option} {text!r}: weight {value!r} is not a number") from None
            else:
                values[key] = value
        try:
            return cls(**values)
        except (ValueError, FileNotFoundError) as error:
            raise InputError(f"{option} {text!r}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """The recipe YAML form: {"compose": {fg, bg, occluders, preset, config}, "weight": W}."""
        inner = {"fg": list(self.fg), "bg": list(self.bg), "occluders": self.occluders}
        inner.update(preset=self.preset, config=self.config)
        return {"compose": inner, "weight": self.weight}

    @classmethod
    def from_dict(cls, item: dict[str, Any], where: str) -> ComposeSource:
        """From the recipe YAML form (see to_dict); unknown keys name `where`."""
        inner, known = item.get("compose"), {"fg", "bg", "occluders", "preset", "config"}
        if set(item) - {"compose", "weight"} or not isinstance(inner, dict) or set(inner) - known:
            raise InputError(
                f"{where}: compose entry {item!r}: use {{compose: {{fg: [...], bg: [...], occluders, preset, "
                "config}, weight: W}"
            )
        fg, bg = inner.get("fg") or [], inner.get("bg") or []
        fg, bg = [fg] if isinstance(fg, str) else fg, [bg] if isinstance(bg, str) else bg
        try:
            return cls(tuple(fg), tuple(bg), **{k: v for k, v in inner.items() if k not in ("fg", "bg")}, **(
                {"weight": item["weight"]} if "weight" in item else {}
            ))  # fmt: skip
        except (ValueError, FileNotFoundError) as error:
            raise InputError(f"{where}: compose entry: {error}") from None


class OnlineComposites:
    """The pools of one ComposeSource and the rendering of its composites, in whichever process samples them (the
    Renderer, with its caches, is made in each DataLoader worker on first use)."""

    def __init__(self, source: ComposeSource, seed: int, cache_mb: float = 512.0):
        self.source, self.seed, self.cache_mb = source, seed, cache_mb
        foregrounds = list_pool(source.fg, "foreground", raw_option=None)  # training has no --raw-foreground
        self.pool = Pools(foregrounds, list_pool(source.bg, "background"))
        self.occluders: Sequence[PoolItem] = list_pool([source.occluders], "occluder") if source.occluders else []
        self.augment = load_augment(source.preset, source.config)
        self.renderer: Renderer | None = None

    def __len__(self) -> int:
        return len(self.pool.foregrounds)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "renderer": None}  # each process decodes into its own caches

    def _renderer(self) -> Renderer:
        if self.renderer is None:
            self.renderer = Renderer(self.cache_mb * 2 / 3, self.cache_mb / 3)  # foregrounds are the larger share
        return self.renderer

    def sample(self, step: int, rank: int, slot: int, size_px: int) -> tuple[np.ndarray, np.ndarray, str, list]:
        """(image HxWx3 uint8, alpha HxW uint8, the drawn parameters as JSON, unusable files met) of one slot."""
        unusable = []
        for attempt in range(MAX_DRAWS):
            key = [self.seed, step, rank, slot] + ([attempt] if attempt else [])
            drawn = draw(np.random.default_rng(key), self.augment, self.pool, self.occluders)
            try:
                image, alpha = self._renderer().render(drawn, (size_px, size_px))
            except BadItem as error:
                unusable.append([error.skip.path, error.skip.reason])
                continue
            except (EmptyComposite, EmptyAlphaError):
                continue
            return image, alpha, json.dumps({**drawn.params, "draw": attempt}, sort_keys=True), unusable
        raise InputError(f"{self.source.name}: no usable composite in {MAX_DRAWS} draws; check its pools")

    def render_params(self, params: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Render recorded parameters (a `datagen compose` row's `params`, ids and all) with this source's pools."""
        items = {item.id: item for item in (*self.pool.foregrounds, *self.pool.backgrounds, *self.occluders)}
        drawn = Drawn(
            params,
            items[params["foreground"]],
            items[params["background"]],
            tuple(items[extra["foreground"]] for extra in params["extra_people"]),
            tuple(None if o["occluder"] == "procedural" else items[o["occluder"]] for o in params["occluders"]),
        )
        return self._renderer().render(drawn, size)
