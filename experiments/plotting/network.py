"""Plots drawn on the network itself: the voltage profile along the feeder and the network map of one run.

Both read the run's network (`sim.model.compiled_grid`, cached per process) for its topology: lines and
transformers in service, the slack bus(es) of ``ext_grid``. Positions on the map are pandapower geodata
(``net.bus.geo``) when every bus has them, else a radial tree layout from the slack (x: hops from the substation,
y: leaves in depth-first order, a parent centred over its children).
"""

from __future__ import annotations

import json
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from experiments.plotting import common as c
from experiments.plotting.common import _pivot, _scenario_name, _table, _voltage_limits, _voltage_summary

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from matplotlib.axes import Axes

    from sim.result import RunResult


@dataclass
class Topology:
    """Buses, branches and a spanning tree from the slack.

    Attributes:
        buses: pandapower indices of the buses in service.
        edges: (kind "line"/"trafo", element index, from bus, to bus) of every branch in service.
        slack: the ext_grid buses.
        parent: bus → its parent on the tree from the slack (slack buses absent).
        dist_km: bus → length of lines on the tree path from the slack [km] (transformers count 0).
        hops: bus → branches on that path.
        n_mesh: branches not on the tree (meshes), drawn on the map but not in the profile.
    """

    buses: list[int]
    edges: list[tuple[str, int, int, int]]
    slack: list[int]
    parent: dict[int, int] = field(default_factory=dict)
    dist_km: dict[int, float] = field(default_factory=dict)
    hops: dict[int, int] = field(default_factory=dict)
    n_mesh: int = 0


def topology(net: Any) -> Topology:
    """The `Topology` of a pandapower network (breadth-first tree from the slack buses)."""
    buses = [int(b) for b in net.bus.index[net.bus.in_service.to_numpy(bool)]]
    edges: list[tuple[str, int, int, int]] = []
    for kind, col_a, col_b in (("line", "from_bus", "to_bus"), ("trafo", "hv_bus", "lv_bus")):
        df = getattr(net, kind)
        df = df[df.in_service.to_numpy(bool)]
        edges += [(kind, int(i), int(x), int(y)) for i, x, y in zip(df.index, df[col_a], df[col_b])]
    lengths = {("line", int(i)): float(v) for i, v in net.line.length_km.items()}
    slack = [int(b) for b in net.ext_grid.bus[net.ext_grid.in_service.to_numpy(bool)]] or buses[:1]
    adj: dict[int, list[tuple[int, float]]] = {b: [] for b in buses}
    for kind, idx, a, b in edges:
        if a in adj and b in adj:
            w = lengths.get((kind, idx), 0.0)
            adj[a].append((b, w))
            adj[b].append((a, w))
    topo = Topology(buses, edges, slack)
    queue = deque(s for s in slack if s in adj)
    topo.dist_km = {s: 0.0 for s in queue}
    topo.hops = {s: 0 for s in queue}
    while queue:
        u = queue.popleft()
        for v, w in adj[u]:
            if v not in topo.dist_km:
                topo.parent[v], topo.dist_km[v], topo.hops[v] = u, topo.dist_km[u] + w, topo.hops[u] + 1
                queue.append(v)
    topo.n_mesh = len(edges) - len(topo.parent)
    return topo


def _network(result: Any) -> Any:
    from sim.model import compiled_grid

    return compiled_grid(result.scenario.grid)[0].net


def _tree_layout(topo: Topology) -> dict[int, tuple[float, float]]:
    """x = hops from the slack, y = leaf order (depth first), parents centred over their children."""
    children: dict[int, list[int]] = {}
    for b, p in topo.parent.items():
        children.setdefault(p, []).append(b)
    pos: dict[int, tuple[float, float]] = {}
    next_y = [0.0]

    def place(b: int) -> float:
        stack = [(b, False)]
        while stack:  # iterative post-order: deep feeders exceed Python's recursion limit
            node, done = stack.pop()
            kids = sorted(children.get(node, []))
            if not kids:
                pos[node] = (float(topo.hops.get(node, 0)), next_y[0])
                next_y[0] += 1.0
            elif done:
                pos[node] = (float(topo.hops.get(node, 0)), float(np.mean([pos[k][1] for k in kids])))
            else:
                stack.append((node, True))
                stack += [(k, False) for k in reversed(kids)]
        return pos[b][1]

    for s in topo.slack:
        if s in topo.dist_km:
            place(s)
            next_y[0] += 1.0
    for b in topo.buses:  # islanded buses: a column of their own
        pos.setdefault(b, (-1.0, next_y[0]))
        next_y[0] += 1.0 if b not in topo.dist_km else 0.0
    return pos


def _geo_layout(net: Any, buses: list[int]) -> dict[int, tuple[float, float]] | None:
    """Bus positions from pandapower geodata, or None when a bus lacks them or they are all the same point."""
    if "geo" not in net.bus:
        return None
    pos = {}
    for b in buses:
        g = net.bus.at[b, "geo"]
        try:
            xy = json.loads(g)["coordinates"] if isinstance(g, str) else None
        except (ValueError, KeyError, TypeError):
            xy = None
        if not xy or len(xy) < 2:
            return None
        pos[b] = (float(xy[0]), float(xy[1]))
    pts = np.array(list(pos.values()))
    return pos if len(pts) and np.ptp(pts, axis=0).max() > 0 else None


def layout(net: Any, topo: Topology) -> tuple[dict[int, tuple[float, float]], str]:
    """Bus positions and where they come from ("geodata" or "radial layout from the slack")."""
    geo = _geo_layout(net, topo.buses)
    return (geo, "geodata") if geo is not None else (_tree_layout(topo), "radial layout from the slack")


def _bus_voltages(result: Any) -> tuple[np.ndarray, np.ndarray, Any] | None:
    """(bus ids, step × bus voltages [pu], step index) of the bus table, or None without voltages."""
    bus = _table(result, "bus")
    if bus is None:
        return None
    m = _pivot(bus, "bus", "vm_pu")
    v = m.to_numpy(float)
    if not np.isfinite(v).any():
        return None
    return m.columns.to_numpy(), v, m.index


def _tree_segments(topo: Topology, x: dict[int, float], y: dict[int, float]) -> list[list[tuple[float, float]]]:
    """One segment per tree branch (parent → child) where both ends have a value."""
    return [
        [(x[p], y[p]), (x[b], y[b])]
        for b, p in topo.parent.items()
        if b in y and p in y and np.isfinite(y[b]) and np.isfinite(y[p])
    ]


def _voltage_profile(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    """Voltage along the feeder: x = line length from the substation, one segment per branch of the tree (no line
    jumps from the end of one lateral to the next bus number), the min–max envelope per bus as a vertical bar."""
    from matplotlib.collections import LineCollection

    data = _bus_voltages(result)
    if data is None:
        return None
    ids, v, index = data
    topo = topology(_network(result))
    vlo, vhi = _voltage_limits(result)
    with warnings.catch_warnings():  # all-NaN rows: steps without a power flow
        warnings.simplefilter("ignore", RuntimeWarning)
        vmin, vmean, vmax = np.nanmin(v, axis=0), np.nanmean(v, axis=0), np.nanmax(v, axis=0)
        k = int(np.nanargmin(np.nanmin(v, axis=1)))
    use_km = any(d > 0 for d in topo.dist_km.values())
    x = {b: (topo.dist_km if use_km else topo.hops).get(b, np.nan) for b in topo.buses}
    xs = np.array([x.get(int(b), np.nan) for b in ids], float)
    fig, ax = plt.subplots(figsize=(11, 5.5), layout="constrained")
    try:
        ax.vlines(xs, vmin, vmax, color="#1f77b4", alpha=0.35, lw=3, label="min–max over the run")
        for values, colour, lw, label in (
            (vmean, "#1f77b4", 1.6, "mean"),
            (v[k], "#d62728", 1.1, f"worst step ({_when(result, index[k])})"),
        ):
            segs = _tree_segments(topo, x, {int(b): float(val) for b, val in zip(ids, values)})
            ax.add_collection(LineCollection(segs, colors=colour, lw=lw, label=label))
        ax.plot(xs, vmean, "o", color="#1f77b4", ms=3)
        b_lo, b_hi = int(np.nanargmin(vmin)), int(np.nanargmax(vmax))
        for b, val in ((b_lo, vmin[b_lo]), (b_hi, vmax[b_hi])):
            ax.annotate(f"bus {int(ids[b])}", (xs[b], val), xytext=(4, 4), textcoords="offset points", fontsize=8)
        ax.axhline(vlo, color="k", ls="--", lw=1.1, label=f"limits {vlo:.2f} / {vhi:.2f} pu")
        ax.axhline(vhi, color="k", ls="--", lw=1.1)
        ax.axhline(1.0, color="0.6", lw=0.6)
        lo, hi = min(float(np.nanmin(vmin)), vlo), max(float(np.nanmax(vmax)), vhi)
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
        ax.set_xlim(np.nanmin(xs) - 0.02 * np.ptp(xs[np.isfinite(xs)]) - 0.1, np.nanmax(xs) * 1.03 + 0.1)
        ax.set_xlabel("line length from the substation [km]" if use_km else "branches from the substation")
        ax.set_ylabel("voltage magnitude [pu]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best", ncol=2)
        mesh = f"; {topo.n_mesh} mesh branch(es) not drawn" if topo.n_mesh else ""
        summary = _voltage_summary(v.T, ids, vlo, vhi, _dt_min(result))
        ax.set_title(
            f"{_scenario_name(result)}: voltage along the feeder (one segment per branch{mesh})\n{summary}",
            fontsize=10,
        )
        return c._save(fig, path)
    finally:
        plt.close(fig)


def _dt_min(result: Any) -> float:
    return float(getattr(getattr(getattr(result, "scenario", None), "time", None), "dt_min", 1.0) or 1.0)


def _when(result: Any, step: Any) -> str:
    steps = _table(result, "steps")
    if steps is None:
        return f"step {int(step)}"
    clock = c._Clock(steps)
    return clock.tod_label(float(clock.time_of([step])[0]))


def _worst_voltage(v: np.ndarray) -> np.ndarray:
    """Per bus, the voltage farthest from 1 pu over the run (the lowest or the highest) [pu]."""
    with warnings.catch_warnings():  # a bus without any voltage (every step failed) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        vmin, vmax = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
    return np.where(np.abs(vmax - 1.0) > np.abs(vmin - 1.0), vmax, vmin)


def _draw_branches(ax: Axes, result: Any, topo: Topology, pos: dict[int, tuple[float, float]]) -> Any:
    """Lines coloured by their peak loading (transformers dashed grey); returns the line collection."""
    from matplotlib.collections import LineCollection

    line = _table(result, "line")
    peak = line.groupby("line")["loading_percent"].max() if line is not None else None
    segs, vals, trafo = [], [], []
    for kind, idx, a, b in topo.edges:
        if a not in pos or b not in pos:
            continue
        if kind == "trafo":
            trafo.append([pos[a], pos[b]])
        else:
            segs.append([pos[a], pos[b]])
            vals.append(float(peak.get(idx, np.nan)) if peak is not None else np.nan)
    if trafo:
        ax.add_collection(LineCollection(trafo, colors="0.4", lw=1.5, linestyles="--", label="transformer"))
    arr = np.array(vals, float)
    lc = LineCollection(segs, cmap="plasma_r", lw=2.6, zorder=1, label="line (colour: peak loading)")
    lc.set_array(np.ma.masked_invalid(arr))
    if np.isfinite(arr).any():
        lc.set_clim(0.0, max(float(np.nanmax(arr)), 1e-6))
    ax.add_collection(lc)
    return lc


def _mark_stations(ax: Axes, result: Any, pos: dict[int, tuple[float, float]]) -> int:
    """Charging stations as triangles at their buses (size by ports, several at a bus stacked); returns their count."""
    st = _table(result, "stations")
    if st is None or "bus" not in st:
        return 0
    ports = st.groupby("bus")["ports"].sum() if "ports" in st else st.groupby("bus").size()
    at = [(pos[int(b)], float(n)) for b, n in ports.items() if int(b) in pos]
    if not at:
        return 0
    xy = np.array([p for p, _ in at])
    size = np.array([n for _, n in at])
    ax.scatter(
        xy[:, 0],
        xy[:, 1],
        s=40 + 120 * size / size.max(),
        marker="^",
        facecolors="none",
        edgecolors="k",
        lw=1.2,
        zorder=4,
        label=f"charging stations ({len(st)}; size: ports)",
    )
    return len(st)


def _network_map(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    """Map of the network: buses coloured by their worst voltage over the run (farthest from 1 pu), lines by their
    peak loading, the slack as a square, charging stations as triangles, the worst bus named."""
    data = _bus_voltages(result)
    if data is None:
        return None
    ids, v, _ = data
    net = _network(result)
    topo = topology(net)
    pos, where = layout(net, topo)
    worst = _worst_voltage(v)
    keep = np.array([int(b) in pos for b in ids]) & np.isfinite(worst)
    xy = np.array([pos[int(b)] for b in ids[keep]])
    vals = worst[keep]
    norm, cb_label = _voltage_norm(vals)
    fig, ax = plt.subplots(figsize=(11, 7.5), layout="constrained")
    try:
        lc = _draw_branches(ax, result, topo, pos)
        sc = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            c=vals,
            cmap="RdBu",
            norm=norm,
            s=42,
            edgecolors="k",
            lw=0.5,
            zorder=3,
            label="buses (colour: worst voltage)",
        )
        slack = np.array([pos[s] for s in topo.slack if s in pos])
        if len(slack):
            ax.scatter(
                slack[:, 0],
                slack[:, 1],
                marker="s",
                s=120,
                facecolors="none",
                edgecolors="k",
                lw=1.5,
                zorder=5,
                label="substation (slack)",
            )
        _mark_stations(ax, result, pos)
        b = int(np.argmax(np.abs(vals - 1.0)))
        ax.annotate(
            f"bus {int(ids[keep][b])}: {vals[b]:.3f} pu",
            xy[b],
            xytext=(8, 8),
            textcoords="offset points",
            fontsize=9,
            fontweight="bold",
            arrowprops={"arrowstyle": "-", "lw": 0.8},
        )
        fig.colorbar(sc, ax=ax, pad=0.01, shrink=0.8).set_label(cb_label)
        if lc.get_array() is not None and np.ma.count(lc.get_array()):
            fig.colorbar(lc, ax=ax, pad=0.01, shrink=0.8).set_label("peak line loading [%]")
        ax.autoscale_view()
        ax.set_aspect("equal" if where == "geodata" else "auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8, loc="best")
        vlo, vhi = _voltage_limits(result)
        ax.set_title(
            f"{_scenario_name(result)}: network map ({where})\nbuses: worst voltage over the run (farthest from "
            f"1 pu); lines: peak loading\n{_voltage_summary(v.T, ids, vlo, vhi, _dt_min(result))}",
            fontsize=10,
        )
        return c._save(fig, path)
    finally:
        plt.close(fig)


def _voltage_norm(vals: np.ndarray) -> tuple[Any, str]:
    """Colour limits from the data; centred (white) at 1 pu when the voltages straddle it."""
    from matplotlib.colors import Normalize, TwoSlopeNorm

    lo, hi = float(np.min(vals)), float(np.max(vals))
    pad = max(0.02 * (hi - lo), 1e-4)
    if lo < 1.0 < hi:
        return TwoSlopeNorm(1.0, lo - pad, hi + pad), "worst voltage [pu] (white: 1.0 pu)"
    return Normalize(lo - pad, hi + pad), "worst voltage [pu] (colour span: the data)"
