"""Model weights shared by the model stages (synth's LayerDiffuse, relight's IC-Light, refine's ViTMatte, and
ormbg's --refine): the one error for weights that are not here, and the one merge of a published offset into a UNet.

Light to import: torch is needed only by `merge_offset`'s arguments, never imported here.
"""

from __future__ import annotations

from typing import Any

from datagen.errors import InputError, UserError


class MissingModelError(UserError, FileNotFoundError):
    """Weights (a model folder, a Hub checkpoint, an offset file) that are neither local nor in the Hugging Face
    cache; the message names what is missing and the command that fetches it (`hf download ...`) or the option that
    takes a local copy. Every model loader raises this one; the CLI prints it as one line."""


def merge_offset(unet: Any, offset: dict[str, Any], every_key: bool = False, expected: int | None = None,
                 what: str = "offset") -> int:  # fmt: skip
    """unet[key] += offset[key] for every key of `offset`, loaded strictly; returns how many tensors were patched.

    Every offset key must be in the UNet with the same shape (a port that silently patched nothing is the failure
    this guards against); with `every_key` the offset must also cover every UNet key (IC-Light's full offsets);
    `expected` is the published file's tensor count (LayerDiffuse's 560). A mismatch is a ValueError naming `what`
    and the first key concerned.
    """
    state = unet.state_dict()
    missing = sorted(set(state) - set(offset)) if every_key else []
    extra = sorted(set(offset) - set(state))
    if missing or extra:
        raise InputError(
            f"{what} does not fit the UNet: {len(missing)} keys missing (first {missing[:2]}), {len(extra)} keys "
            f"not in the UNet (first {extra[:2]}): the wrong base model or the wrong file?"
        )
    wrong = [key for key, value in offset.items() if value.shape != state[key].shape]
    if wrong:
        raise InputError(f"{what}: {len(wrong)} tensors differ in shape from the UNet's, first {wrong[0]}: "
                         f"{tuple(offset[wrong[0]].shape)} vs {tuple(state[wrong[0]].shape)}")  # fmt: skip
    if expected is not None and len(offset) != expected:
        raise InputError(f"{what} has {len(offset)} tensors, the published file has {expected}: the wrong file?")
    merged = dict(state)
    for key, value in offset.items():
        merged[key] = state[key] + value.to(state[key].device, state[key].dtype)
    unet.load_state_dict(merged, strict=True)
    return len(offset)
