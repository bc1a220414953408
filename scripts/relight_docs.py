"""The picture of docs/relight.md: the alignment check at work on a real person.

    python scripts/relight_docs.py [--rgba ../shared/fixtures/real/layerdiffuse-sdxl-man.png]

The real LayerDiffuse man is composited on a grey-blue backdrop (the "photo" with its exact alpha). Three candidate
"relights" are scored by `datagen.relight.alignment_scores` against that alpha with the default thresholds: the
photo itself (an identity relight), the photo with warmer, darker light (the shapes unchanged), and the person
moved 6 px down and right (what a regenerating model can do). The sheet shows each with its scores and verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from datagen.alpha import over
from datagen.io import encode_png, read_foreground, write_atomic
from datagen.preview import tile_sheet
from datagen.relight import AlignmentThresholds, alignment_scores, condition_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rgba", type=Path, default=Path("../shared/fixtures/real/layerdiffuse-sdxl-man.png"))
    parser.add_argument("--out", type=Path, default=Path("docs/img/relight-check.png"))
    args = parser.parse_args()
    person = read_foreground(args.rgba)
    alpha = person[..., 3]
    image = over(person, np.full(person.shape[:2] + (3,), (110, 125, 150), np.uint8))
    _, background = condition_inputs(image, alpha)
    warm = np.clip(image.astype(np.float32) * np.array([1.0, 0.85, 0.65]) * 0.85, 0, 255).astype(np.uint8)
    shifted = np.zeros_like(person)
    shifted[6:, 6:] = person[:-6, :-6]  # the person moved 6 px down and right, its alpha not
    moved = over(shifted, background)
    thresholds, tiles, labels = AlignmentThresholds(), [], []
    for name, candidate in (("identity", image), ("warmer light", warm), ("person moved 6 px", moved)):
        scores = alignment_scores(image, candidate, alpha)
        verdict = thresholds.rejection(scores) or "accepted"
        print(
            f"{name}: edge ratio {scores['relight_edge_ratio']:.2f}, spill {scores['relight_spill']:.2f} -> {verdict}"
        )
        tiles.append(candidate)
        labels.append(f"{name}: {scores['relight_edge_ratio']:.2f} {'ok' if verdict == 'accepted' else 'REJECTED'}")
    write_atomic(args.out, encode_png(tile_sheet([(" | ".join(labels), tiles)], 320)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
