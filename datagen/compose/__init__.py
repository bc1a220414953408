"""Compositing foregrounds onto backgrounds with an exact ground-truth alpha (`datagen compose`).

geometry, photometric, effects   pixel steps;  params   parameter drawing;  render   the compositor
pools, run         inputs and the batch job (`run_compose`)

The blend itself (`over`) and the other alpha primitives are in datagen/alpha.py.
"""
