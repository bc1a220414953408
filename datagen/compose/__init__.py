"""Compositing foregrounds onto backgrounds with an exact ground-truth alpha (`datagen compose`).

blend.over         the straight-alpha blend
geometry, photometric, effects   pixel steps;  params   parameter drawing;  render   the compositor
pools, run         inputs and the batch job (`run_compose`)
"""

from datagen.compose.blend import over

__all__ = ["over"]
