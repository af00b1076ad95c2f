"""The compiled radial model LinDistFlow works on: tree order, parents, impedances, limits (see :mod:`grids.dlmp`)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from grids.dlmp.common import NotRadialError
from grids.network import Network

__all__ = ["RadialModel", "radial_model"]


class RadialModel:
    """Topology and impedances of a radial network, compiled once (cached on the Network object).

    Model buses are numbered in breadth-first order from the slack (bus 0); branch ``m`` is the branch into bus
    ``m`` from ``parent[m]``. Impedances are in "1 MVA base" units (P, Q in MW/MVAr and v in pu² combine directly),
    ``s_max`` is the branch rating [MVA] (inf = unlimited).

    Raises:
        NotRadialError: voltage-controlled generators, not exactly one slack, off-nominal taps or phase shifts,
            a meshed or split network, or buses unreachable from the slack.
    """

    def __init__(self, network: Network) -> None:
        from pandapower.pypower.idx_brch import BR_R, BR_X, RATE_A

        from grids.powerflow import FastPowerFlow

        src = network.net
        name = network.name
        eg = _single_slack(network)
        net = _solved_copy(network)
        ppc = net._ppc
        base = float(ppc["baseMVA"])
        br = ppc["branch"]
        n_ppc = ppc["bus"].shape[0]
        on, fb, tb, active = _in_service_branches(ppc, name)
        lookup = np.asarray(net._pd2ppc_lookups["bus"], dtype=np.int64)
        pd_idx = net.bus.index.to_numpy()
        ppc_of_pd = lookup[pd_idx]
        root_ppc = int(lookup[int(eg.bus.iloc[0])])
        order, parent_ppc, edge_of = _tree_order(n_ppc, fb, tb, root_ppc, int(active.sum()), name)
        m_of_ppc = np.full(n_ppc, -1, dtype=np.int64)
        m_of_ppc[np.array(order)] = np.arange(len(order))
        n = len(order)
        parent = np.full(n, -1, dtype=np.int64)
        r = np.zeros(n)
        x = np.zeros(n)
        s_max = np.full(n, np.inf)
        on_rows = np.nonzero(on)[0]
        for m in range(1, n):
            p = order[m]
            e = edge_of[p]
            parent[m] = m_of_ppc[parent_ppc[p]]
            row = on_rows[e]
            # series impedance in "1 MVA base" units, so that P, Q in MW/MVAr and v in pu² combine directly
            r[m] = float(np.real(br[row, BR_R])) / base
            x[m] = float(np.real(br[row, BR_X])) / base
            rate = float(np.real(br[row, RATE_A]))
            s_max[m] = rate if 0 < rate < 1e9 else np.inf
        self.n = n
        self.parent = parent
        self.r, self.x, self.s_max = r, x, s_max
        self.children: list[list[int]] = [[] for _ in range(n)]
        for m in range(1, n):
            self.children[parent[m]].append(m)
        self.m_of_pd = np.where(ppc_of_pd >= 0, m_of_ppc[np.clip(ppc_of_pd, 0, n_ppc - 1)], -1)
        self.m_of_pd[(ppc_of_pd < 0) | ~active[np.clip(ppc_of_pd, 0, n_ppc - 1)]] = -1
        self.v_ref = float(eg.vm_pu.iloc[0])
        self.pf = FastPowerFlow(src)
        # one pandapower bus per model bus, to read voltages from the power-flow result
        self.pd_of_m = np.zeros(n, dtype=np.int64)
        for i, m in enumerate(self.m_of_pd):
            if m >= 0:
                self.pd_of_m[m] = i


def _single_slack(network: Network) -> Any:
    """The one in-service ext_grid row; NotRadialError with PV generators or not exactly one slack."""
    src = network.net
    name = network.name
    if "gen" in src and len(src.gen) and src.gen["in_service"].astype(bool).any():
        raise NotRadialError(
            f"LinDistFlow DLMPs: network {name!r} has voltage-controlled generators "
            "(net.gen); LinDistFlow models a radial feeder with one slack — use dlmp_acopf"
        )
    eg = src.ext_grid[src.ext_grid["in_service"].astype(bool)]
    if len(eg) != 1:
        raise NotRadialError(
            f"LinDistFlow DLMPs: network {name!r} needs exactly one in-service ext_grid, has {len(eg)} — use dlmp_acopf"
        )
    return eg


def _solved_copy(network: Network) -> Any:
    """A copy of the net without loads and DERs, with the line limit applied, after one pandapower power flow."""
    import pandapower as pp

    net = copy.deepcopy(network.net)
    for element in ("load", "sgen", "storage"):
        if element in net and len(net[element]):
            net[element]["in_service"] = False
    if len(net.line):
        net.line["max_loading_percent"] = float(network.max_line_loading_percent)
    if len(net.trafo):
        net.trafo["max_loading_percent"] = float(network.max_line_loading_percent)
    pp.runpp(net)
    return net


def _in_service_branches(ppc: dict[str, Any], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """In-service branch mask, their end buses (ppc) and the active-bus mask; NotRadialError on taps/shifts."""
    from pandapower.pypower.idx_brch import BR_STATUS, F_BUS, SHIFT, T_BUS, TAP
    from pandapower.pypower.idx_bus import BUS_TYPE, NONE

    bus = ppc["bus"]
    br = ppc["branch"]
    active = bus[:, BUS_TYPE] != NONE
    on = np.real(br[:, BR_STATUS]) > 0
    fb = np.real(br[:, F_BUS]).astype(int)
    tb = np.real(br[:, T_BUS]).astype(int)
    on &= active[fb] & active[tb]
    fb, tb = fb[on], tb[on]
    tap = np.real(br[on, TAP])
    shift = np.real(br[on, SHIFT])
    if (np.abs(np.where(tap == 0, 1.0, tap) - 1.0) > 1e-9).any() or (np.abs(shift) > 1e-9).any():
        raise NotRadialError(
            f"LinDistFlow DLMPs: network {name!r} has off-nominal transformer ratios or "
            "phase shifts, which LinDistFlow does not model — use dlmp_acopf"
        )
    return on, fb, tb, active


def _tree_order(
    n_ppc: int, fb: np.ndarray, tb: np.ndarray, root_ppc: int, n_act: int, name: str
) -> tuple[list[int], dict[int, int], dict[int, int]]:
    """Breadth-first order of the buses from the slack, parent and branch (edge) of each; NotRadialError if the
    in-service branches do not form a spanning tree of the active buses."""
    if len(fb) != n_act - 1:
        raise NotRadialError(
            f"LinDistFlow DLMPs need a radial network: {name!r} has {len(fb)} in-service branches for "
            f"{n_act} buses (a tree has {n_act - 1}); it is meshed or split. LinDistFlow does not apply to "
            "meshed networks — use dlmp_acopf"
        )
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n_ppc)]
    for e, (a, b) in enumerate(zip(fb, tb, strict=True)):
        adj[a].append((b, e))
        adj[b].append((a, e))
    order = [root_ppc]
    parent_ppc = {root_ppc: -1}
    edge_of: dict[int, int] = {}
    head = 0
    while head < len(order):
        a = order[head]
        head += 1
        for b, e in adj[a]:
            if b not in parent_ppc:
                parent_ppc[b] = a
                edge_of[b] = e
                order.append(b)
    if len(order) != n_act:
        raise NotRadialError(
            f"LinDistFlow DLMPs: {name!r} is not connected to its slack "
            f"({n_act - len(order)} buses unreachable) — use dlmp_acopf"
        )
    return order, parent_ppc, edge_of


def radial_model(network: Network) -> RadialModel:
    """The compiled radial model of a network, cached on it (rebuilt if the net object or the line limit changes;
    like the power-flow engine, it does not notice in-place edits of the net's tables)."""
    key = (id(network.net), float(network.max_line_loading_percent))
    model = getattr(network, "_dlmp_radial_model", None)
    if model is None or getattr(model, "_key", None) != key:
        model = RadialModel(network)
        model._key = key  # type: ignore[attr-defined]
        network._dlmp_radial_model = model  # type: ignore[attr-defined]
    return model
