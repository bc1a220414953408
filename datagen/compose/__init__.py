"""Compositing foregrounds onto backgrounds with an exact ground-truth alpha."""

from datagen.compose.blend import over

__all__ = ["over"]
