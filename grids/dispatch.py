"""Dispatch of a network's own generators (``net.gen``) so that generation follows the load.

A network file's generators (PV buses of meshed/transmission cases: case14, case118, ...) come with one set-point
each, chosen for the file's own load snapshot. Left there while the load follows a daily profile they export the
difference through the slack (case118 at full set-points: ≈ 1.3 GW exported and ≈ 4 GWh of losses a day).

**Rule** (``grid.gen_dispatch = "load-following"``, the default): in every power flow each in-service, non-slack
generator produces

    P_g = min(P_set,g · D / D_ref, max(P_max,g, P_set,g))        (D clipped at 0)

where ``D`` is the total net demand the power flow is asked to serve (the sum of the per-bus load arrays: base load
+ EV load − DGs − renewables, i.e. everything the caller supplies), ``D_ref`` the net demand of the file's own
snapshot (``Σ load.p_mw·scaling − Σ sgen.p_mw·scaling``, in service), and ``P_max`` the generator's ``max_p_mw``
where given. So at the file's own demand every generator sits at its set-point, and each generator follows the
demand in proportion (a participation factor equal to its share of the set-points); the slack balances the rest
and the losses. Voltage set-points are untouched. ``"fixed"`` keeps the set-points (the behaviour before this rule).

Mechanics: both power-flow engines fix a generator's P at compile time, so :class:`LoadFollowingGens` wraps an
engine and adds ``P_set − P_g`` as load at each generator's bus before every solve — every consumer of the engine
(DSO, curtailment, forecasts, loss sensitivities) sees the same dispatch.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


class LoadFollowingGens:
    """A power-flow engine whose ``net.gen`` units follow the demand (see module docstring).

    Args:
        engine: a compiled `FastPowerFlow` or `PandapowerPowerFlow` of ``net``.
        net: the pandapower net the engine was compiled from.

    Every attribute other than :meth:`solve`/:meth:`solve_batch` is the wrapped engine's (``inner``).
    """

    def __init__(self, engine: Any, net: Any) -> None:
        self.inner = engine
        gen = net.gen
        live = gen.in_service.astype(bool).to_numpy() if len(gen) else np.zeros(0, bool)
        if len(gen) and "slack" in gen:
            live &= ~gen.slack.fillna(False).astype(bool).to_numpy()
        g = gen[live]
        pos = {b: i for i, b in enumerate(net.bus.index)}
        self.bus = np.array([pos[b] for b in g.bus], int)
        scaling = g.scaling.fillna(1.0).to_numpy(float) if "scaling" in g else np.ones(len(g))
        self.p_set_mw = g.p_mw.to_numpy(float) * scaling
        p_max = g.max_p_mw.to_numpy(float) if "max_p_mw" in g else np.full(len(g), np.inf)
        self.p_max_mw = np.maximum(np.where(np.isfinite(p_max), p_max, np.inf), self.p_set_mw)
        load = net.load[net.load.in_service.astype(bool)]
        sgen = net.sgen[net.sgen.in_service.astype(bool)] if len(net.sgen) else net.sgen
        self.ref_demand_mw = float((load.p_mw * load.scaling).sum()) - (
            float((sgen.p_mw * sgen.scaling).sum()) if len(sgen) else 0.0
        )
        self.active = len(self.bus) > 0 and self.ref_demand_mw > 0
        if len(self.bus) and not self.active:
            warnings.warn(
                f"grid.gen_dispatch: the network's own net demand is {self.ref_demand_mw:g} MW (<= 0), so its "
                f"{len(self.bus)} generators cannot follow it; they stay at their set-points",
                RuntimeWarning,
                stacklevel=2,
            )

    def gen_p_mw(self, p_load_mw: np.ndarray) -> np.ndarray:
        """Active power of each dispatched generator [MW] for a snapshot's per-bus net load [MW]."""
        factor = max(float(np.sum(p_load_mw)), 0.0) / self.ref_demand_mw
        return np.minimum(self.p_set_mw * factor, self.p_max_mw)

    def adjust(self, p_load_mw: np.ndarray) -> np.ndarray:
        """The per-bus load array the engine needs so that its fixed set-points deliver :meth:`gen_p_mw` [MW]."""
        p = np.array(p_load_mw, dtype=np.float64)  # a copy: the caller's array is not changed
        if self.active and p.ndim == 1 and np.all(np.isfinite(p)):  # bad input is the engine's to report
            np.add.at(p, self.bus, self.p_set_mw - self.gen_p_mw(p))
        return p

    def solve(self, p_load_mw: np.ndarray, q_load_mvar: np.ndarray, **kw: Any) -> Any:
        """Solve one snapshot with the generators dispatched (arguments as the wrapped engine's ``solve``)."""
        return self.inner.solve(self.adjust(p_load_mw), q_load_mvar, **kw)

    def solve_batch(self, p_load_mw: np.ndarray, q_load_mvar: np.ndarray) -> Any:
        """Solve snapshots (rows) with the generators dispatched."""
        P = np.asarray(p_load_mw, dtype=np.float64)
        if P.ndim == 2:
            P = np.stack([self.adjust(row) for row in P]) if len(P) else P
        return self.inner.solve_batch(P, q_load_mvar)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def with_gen_dispatch(engine: Any, net: Any, mode: str) -> Any:
    """``engine`` itself (``mode = "fixed"`` or no generators) or wrapped in :class:`LoadFollowingGens`."""
    if mode == "fixed":
        return engine
    if mode != "load-following":
        raise ValueError(f"grid.gen_dispatch: {mode!r}; allowed: load-following, fixed")
    wrapped = LoadFollowingGens(engine, net)
    return wrapped if wrapped.active else engine


def gen_output_kw(engine: Any, net: Any, demand_kw: float) -> float:
    """Total active output of the network's own non-slack generators (``net.gen``) [kW] in a power flow asked to
    serve ``demand_kw`` of net demand (the sum of the per-bus load arrays): the load-following dispatch when
    ``engine`` is a :class:`LoadFollowingGens`, the set-points otherwise. Recorded so the energy balance closes."""
    if isinstance(engine, LoadFollowingGens):
        return float(engine.gen_p_mw(np.array([demand_kw / 1000.0])).sum() * 1000.0)
    gen = net.gen
    if not len(gen):
        return 0.0
    live = gen.in_service.astype(bool)
    if "slack" in gen:
        live &= ~gen.slack.fillna(False).astype(bool)
    g = gen[live]
    scaling = g.scaling.fillna(1.0) if "scaling" in g else 1.0
    return float((g.p_mw * scaling).sum() * 1000.0)
