"""Choosing a power-flow engine by name."""

from __future__ import annotations

from typing import Any

from pandapower.auxiliary import pandapowerNet

from grids.powerflow.common import ENGINES
from grids.powerflow.fast import FastPowerFlow
from grids.powerflow.reference import PandapowerPowerFlow


def make_engine(net: pandapowerNet, engine: str = "fast", **kw: Any) -> FastPowerFlow | PandapowerPowerFlow:
    """Build a power-flow engine by name.

    Args:
        net: pandapower network.
        engine: ``"fast"`` (:class:`FastPowerFlow`) or ``"pandapower"`` (:class:`PandapowerPowerFlow`).
        **kw: passed to the engine constructor (``tol_mva``, ``max_iter``, ``trafo_loading``).

    Returns:
        The engine.

    Raises:
        ValueError: unknown engine name.
    """
    if engine == "fast":
        return FastPowerFlow(net, **kw)
    if engine == "pandapower":
        return PandapowerPowerFlow(net, **kw)
    raise ValueError(f"unknown power-flow engine {engine!r}; allowed: {', '.join(repr(e) for e in ENGINES)}")
