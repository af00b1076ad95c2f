"""`evgrid dash`: watch a co-simulation live in the browser (a Solara page).

The page builds a `sim.model.CoSimulation` from the chosen scenario, mechanism, fleet size, seed and attack switch,
and advances it market step by market step (`CoSimulation.advance`) while it draws, after every step:

* the feeder as a radial graph: buses and lines coloured on one scale, the share of their limit in use
  (bus: voltage drop below 1 pu as a share of the allowed drop ``1 − v_min``, or rise above as a share of
  ``v_max − 1``; line: loading as a share of ``max_line_loading_percent``), stations with ports drawn as squares
  sized by their queue;
* price [$/MWh], EV load, non-EV load and losses [kW] over the day; EVs waiting and the mean wait [min];
* with an attack on: the attacked steps shaded, and the detector's statistic (largest CUSUM over stations, and
  the χ² statistic of state estimation when it runs) beside its alarm threshold;
* a KPI panel of the run so far.

Changing a control rebuilds the model at step 0; Step / Run / Pause / Reset drive it. Nothing here needs a D-Wave
token: QUBO mechanisms run on their default (simulated-annealing) sampler unless the scenario configures one.

Mesa's own ``SolaraViz`` is not used: its controller re-instantiates a model as ``type(model)(**params)`` with a Mesa
``Scenario`` object, which does not fit a model built from a validated evgrid `Scenario`, and its module needs
altair. The page uses Solara directly, the same stack SolaraViz is built on.

Started by ``evgrid dash [SCENARIO] [--port N]``, which serves this module with ``solara run``; the scenario and
``--set`` overrides reach the page through the environment variables ``EVGRID_DASH_SCENARIO`` and
``EVGRID_DASH_SET`` (a JSON list of ``key=value`` strings).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")

import numpy as np
import reacton.core
import solara
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from markets.base import available
from sim.scenario import Scenario, apply_overrides, list_scenarios, read_toml, resolve_path, validate

ENV_SCENARIO = "EVGRID_DASH_SCENARIO"
ENV_SET = "EVGRID_DASH_SET"
STRESS_MAX_PERCENT = 120.0  # top of the shared colour scale [% of limit]
RENDER_WAIT_S = 10.0  # longest wait for another thread's render before a frame redraws anyway [s]
FRAME_MIN_S = 0.25  # shortest frame while running [s]: a frame steps the model once, then redraws the page

# The attack the switch adds to a scenario that has none: stations report 100 % more committed EV load than they
# have, at 30 % of the stations, from 4 h to 12 h into the run; the DSO's report monitor (CUSUM) watches for it.
DEFAULT_ATTACK: dict[str, Any] = {
    "label": "dash: station-report inflation",
    "kind": "station-inflation",
    "share": 0.3,
    "magnitude": 1.0,
    "start_h": 4.0,
    "end_h": 12.0,
}


@dataclass(frozen=True)
class DashParams:
    """What the page's controls choose."""

    scenario: str
    mechanism: str
    n_evs: int
    seed: int
    attack: bool


def base_data(scenario: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The scenario's raw mapping with the command line's ``--set`` overrides applied."""
    data = read_toml(resolve_path(scenario))
    return apply_overrides(data, overrides) if overrides else data


def default_params(scenario: str, overrides: list[str] | None = None) -> DashParams:
    """The controls' starting values: the (overridden) scenario's own."""
    sc = validate(base_data(scenario, overrides))
    return DashParams(
        scenario=scenario, mechanism=sc.market.mechanism, n_evs=sc.fleet.n_evs, seed=sc.seed, attack=bool(sc.attacks)
    )


def _default_attack(mechanism: str) -> dict[str, Any]:
    """`DEFAULT_ATTACK`, or for a mechanism that never reads station reports (an attack on them would be refused as
    inert) the same window on the EVs' state-of-charge reports, which every mechanism reads."""
    from markets.base import get

    if "committed_station_kw" in get(mechanism)().needs:
        return dict(DEFAULT_ATTACK)
    return {**DEFAULT_ATTACK, "label": "dash: EV SOC falsification", "kind": "soc-falsification", "magnitude": -0.5}


def build_scenario(p: DashParams, overrides: list[str] | None = None) -> Scenario:
    """The validated scenario the controls describe (raises `ScenarioError` on a bad combination).

    ``attack`` on keeps the scenario's attacks, or adds `DEFAULT_ATTACK` with the report monitor when it has none;
    off removes every attack (detection stays as the scenario has it).
    """
    data = base_data(p.scenario, overrides)
    data.setdefault("market", {})["mechanism"] = p.mechanism
    data.setdefault("fleet", {})["n_evs"] = int(p.n_evs)
    data["seed"] = int(p.seed)
    if not p.attack:
        data["attacks"] = []
    elif not data.get("attacks"):
        data["attacks"] = [_default_attack(p.mechanism)]
        data.setdefault("detection", {})["enabled"] = True
    return validate(data)


def feeder_layout(net: Any) -> tuple[np.ndarray, np.ndarray]:
    """Radial drawing coordinates of every bus: x = hops from the slack bus, y = branch row.

    The tree is the breadth-first tree of in-service lines from the external grid; at each bus the child with the
    deepest subtree continues on the parent's row, so the main feeder is one straight line and laterals hang below.
    Buses not reached (isolated) sit at x = −1.
    """
    n = len(net.bus)
    pos = {b: i for i, b in enumerate(net.bus.index)}
    lines = net.line[net.line["in_service"].astype(bool)]
    adj: list[list[int]] = [[] for _ in range(n)]
    for f, t in zip(lines["from_bus"], lines["to_bus"]):
        adj[pos[f]].append(pos[t])
        adj[pos[t]].append(pos[f])
    for tr in ("trafo",):
        if tr in net and len(net[tr]):
            for f, t in zip(net[tr]["hv_bus"], net[tr]["lv_bus"]):
                adj[pos[f]].append(pos[t])
                adj[pos[t]].append(pos[f])
    root = pos[int(net.ext_grid["bus"].iloc[0])] if len(net.ext_grid) else 0
    parent = np.full(n, -1)
    depth = np.full(n, -1)
    order = [root]
    depth[root] = 0
    for b in order:  # breadth-first
        for c in sorted(adj[b]):
            if depth[c] < 0:
                depth[c], parent[c] = depth[b] + 1, b
                order.append(c)
    children: list[list[int]] = [[] for _ in range(n)]
    for b in order[1:]:
        children[parent[b]].append(b)
    height = np.zeros(n)
    for b in reversed(order):
        height[b] = 1 + max((height[c] for c in children[b]), default=0)
    x = depth.astype(float)
    y = np.zeros(n)
    row = [0.0]

    def place(b: int, r: float) -> None:
        y[b] = r
        kids = sorted(children[b], key=lambda c: -height[c])
        for i, c in enumerate(kids):
            if i == 0:
                place(c, r)
            else:
                row[0] += 1
                place(c, row[0])

    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * n + 100))
    place(root, 0.0)
    return x, -y


class Live:
    """One model being watched: the `CoSimulation`, and what the page records beside its recorder."""

    def __init__(self, params: DashParams, overrides: list[str] | None = None) -> None:
        from sim.model import CoSimulation

        self.params = params
        self.scenario = build_scenario(params, overrides)
        t0 = time.perf_counter()
        self.model = CoSimulation(self.scenario)
        self.build_s = time.perf_counter() - t0
        self.lock = threading.Lock()
        m = self.model
        self.x, self.y = feeder_layout(m.network.net)
        self.cusum_max = np.full(m.n_steps, np.nan)  # largest CUSUM over stations after each step [-]
        self.step_s = 0.0
        self.closed = False

    @property
    def steps(self) -> int:
        return int(self.model.steps)

    @property
    def done(self) -> bool:
        return self.steps >= self.model.n_steps

    def step(self, n: int = 1) -> int:
        """Advance ``n`` market steps (thread-safe); returns the steps done."""
        with self.lock:
            m = self.model
            if self.closed:
                return self.steps
            t0 = time.perf_counter()
            while self.steps < m.n_steps and n > 0:
                m.advance(1)
                if m.monitor is not None:
                    self.cusum_max[self.steps - 1] = float(m.monitor.cusum.max()) if len(m.monitor.cusum) else 0.0
                n -= 1
            self.step_s += time.perf_counter() - t0
            return self.steps

    def close(self) -> None:
        """Release the model (waits for a step in progress); later `step` calls do nothing."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.model.close()

    # ------------------------------------------------------------------ data so far
    def hours(self) -> np.ndarray:
        """Time axis of every step: hours on the clock from the start's midnight (may pass 24)."""
        m = self.model
        return m.spec.time.start_h + m.t_min / 60.0

    def attacked(self) -> np.ndarray:
        """Steps in which any channel was falsified (so far)."""
        m = self.model
        out = np.zeros(m.n_steps, bool)
        for labels in m.taps.labels.values():
            for k, hit in labels:
                out[k] |= bool(hit)
        return out

    def kpis(self) -> list[tuple[str, str, str]]:
        """(key, label, formatted value) of the run so far."""
        m, k = self.model, self.steps
        c = m.recorder.cols
        dt_h = m.dt_min / 60.0
        out: list[tuple[str, str, str]] = []
        if k == 0:
            return [("steps", "steps done", f"0 / {m.n_steps}")]
        total = c["base_load_kw"][:k] + c["ev_load_kw"][:k]
        f = m.fleet
        arrived = f.arrival_min <= m.env.now
        wait = m.wait_min()[arrived] if len(f) else np.zeros(0)
        out += [
            ("steps", "steps done", f"{k} / {m.n_steps}"),
            ("peak_load_kw", "peak load [kW]", f"{total.max():,.0f}"),
            ("ev_energy_kwh", "EV energy [kWh]", f"{c['ev_load_kw'][:k].sum() * dt_h:,.0f}"),
            ("energy_losses_kwh", "energy losses [kWh]", f"{c['losses_kw'][:k].sum() * dt_h:,.1f}"),
            ("mean_price_usd_per_mwh", "mean price [$/MWh]", f"{c['price_usd_per_mwh'][:k].mean():.2f}"),
            ("vmin_pu", "Vmin [pu]", f"{c['vmin_pu'][:k].min():.4f}"),
            ("max_line_loading_percent", "max line loading [%]", f"{c['max_line_loading_percent'][:k].max():.1f}"),
            ("ev_curtailed_kwh", "EV energy curtailed [kWh]", f"{c['ev_curtailed_kw'][:k].sum() * dt_h:,.1f}"),
            ("ev_cost_usd", "EV users paid [$]", f"{f.cost_usd.sum():,.0f}"),
            (
                "plugged_waiting",
                "EVs plugged / waiting",
                f"{int(c['n_plugged'][k - 1])} / {int(c['n_waiting'][k - 1])}",
            ),
            ("mean_wait_min", "mean wait [min]", f"{np.nanmean(wait):.1f}" if np.isfinite(wait).any() else "–"),
        ]
        if m.attacker is not None or m.monitor is not None:
            out.append(("attack_steps", "attacked steps", f"{int(self.attacked()[:k].sum())}"))
        if m.monitor is not None:
            out.append(
                ("flagged_stations", "stations flagged", f"{int(m.monitor.flagged.sum())} / {len(m.monitor.flagged)}")
            )
        if m.estimator is not None:
            out.append(("se_alarm_steps", "χ² alarms [steps]", f"{int(m.se_flag[:k].sum())}"))
        return out

    def clock(self) -> str:
        """ "step k / N · hh:mm" of the last step done."""
        m, k = self.model, self.steps
        h = (m.spec.time.start_h + max(k - 1, 0) * m.dt_min / 60.0) % 24
        when = f"{int(h):02d}:{int(round((h % 1) * 60)) % 60:02d}" if k else "not started"
        return f"step {k} / {m.n_steps} · {when}"


# ------------------------------------------------------------------ figures
def _hour_axis(ax: Any, live: Live) -> None:
    h = live.hours()
    end = h[-1] + live.model.dt_min / 60.0 if len(h) else 24.0
    ax.set_xlim(h[0] if len(h) else 0.0, end)
    span = end - (h[0] if len(h) else 0.0)
    step = 2 if span <= 24 else (6 if span <= 96 else 24)
    ticks = np.arange(np.ceil((h[0] if len(h) else 0) / step) * step, end + 1e-9, step)
    ax.set_xticks(ticks, [f"{int(t % 24):02d}:00" for t in ticks])
    ax.grid(alpha=0.3)


def _shade_attacks(ax: Any, live: Live) -> None:
    k = live.steps
    att = live.attacked()[:k]
    if not att.any():
        return
    h, dt = live.hours(), live.model.dt_min / 60.0
    first = True
    for i in np.nonzero(att)[0]:
        ax.axvspan(h[i], h[i] + dt, color="tab:red", alpha=0.12, lw=0, label="attacked" if first else None)
        first = False


def price_figure(live: Live) -> Figure:
    """Step price [$/MWh] so far (mean DLMP too when the DSO prices the grid), attacked steps shaded."""
    m, k = live.model, live.steps
    fig = Figure(figsize=(6.4, 2.5), layout="constrained")
    ax = fig.add_subplot()
    h = live.hours()
    ax.step(
        h[:k],
        m.recorder.cols["price_usd_per_mwh"][:k],
        where="post",
        color="tab:purple",
        lw=1.8,
        label=f"step price ({m.spec.market.mechanism})",
    )
    mo = m.market_operator
    if mo.dlmp_p is not None and k:
        ax.step(h[:k], mo.dlmp_p[:k].mean(axis=1), where="post", color="tab:olive", lw=1.2, label="mean DLMP")
    _shade_attacks(ax, live)
    _hour_axis(ax, live)
    ax.set_ylabel("price [$/MWh]")
    ax.set_title("Price", loc="left", fontsize=10)
    if k:
        ax.legend(loc="upper right", fontsize=8)
    return fig


def load_figure(live: Live) -> Figure:
    """Non-EV load, EV load (stacked) and losses [kW] so far."""
    m, k = live.model, live.steps
    c = m.recorder.cols
    fig = Figure(figsize=(6.4, 2.5), layout="constrained")
    ax = fig.add_subplot()
    h = live.hours()[:k]
    base, ev = c["base_load_kw"][:k], c["ev_load_kw"][:k]
    ax.fill_between(h, 0, base, step="post", color="tab:gray", alpha=0.45, lw=0, label="non-EV load")
    ax.fill_between(h, base, base + ev, step="post", color="tab:blue", alpha=0.6, lw=0, label="EV load")
    ax2 = ax.twinx()
    ax2.step(h, c["losses_kw"][:k], where="post", color="tab:orange", lw=1.5, label="losses (right)")
    ax2.set_ylabel("losses [kW]", color="tab:orange")
    ax2.set_ylim(bottom=0)
    _hour_axis(ax, live)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("load [kW]")
    ax.set_title("Load", loc="left", fontsize=10)
    if k:
        hs, ls = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(hs + h2, ls + l2, loc="upper left", fontsize=8)
    return fig


def queue_figure(live: Live) -> Figure:
    """EVs waiting for a port at each step, and the mean wait of the EVs that arrived so far."""
    m, k = live.model, live.steps
    fig = Figure(figsize=(6.4, 2.5), layout="constrained")
    ax = fig.add_subplot()
    h = live.hours()[:k]
    q = m.recorder.st_queue[:k]
    ax.step(h, q.sum(axis=1), where="post", color="tab:red", lw=1.6, label="EVs waiting (all stations)")
    ax.step(
        h,
        q.max(axis=1) if q.shape[1] else np.zeros(k),
        where="post",
        color="tab:red",
        lw=1.0,
        ls="--",
        label="longest queue",
    )
    ax2 = ax.twinx()
    ax2.step(h, m.recorder.cols["n_plugged"][:k], where="post", color="tab:green", lw=1.2, label="EVs plugged (right)")
    ax2.set_ylabel("EVs plugged", color="tab:green")
    ax2.set_ylim(bottom=0)
    _hour_axis(ax, live)
    ax.set_ylim(bottom=0, top=max(float(q.sum(axis=1).max()) if k else 0.0, 1.0) * 1.15)
    ax.set_ylabel("EVs waiting")
    f = m.fleet
    arrived = f.arrival_min <= m.env.now
    w = m.wait_min()[arrived] if len(f) else np.zeros(0)
    note = f"mean wait {np.nanmean(w):.1f} min" if np.isfinite(w).any() else "no arrivals yet"
    ax.set_title(f"Station queues · {note}", loc="left", fontsize=10)
    if k:
        hs, ls = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(hs + h2, ls + l2, loc="upper left", fontsize=8)
    return fig


def detector_figure(live: Live) -> Figure | None:
    """The detectors' statistics beside their alarm thresholds, attacked steps shaded; None without detection."""
    m, k = live.model, live.steps
    if m.monitor is None and m.estimator is None:
        return None
    fig = Figure(figsize=(6.4, 2.5), layout="constrained")
    ax = fig.add_subplot()
    h = live.hours()[:k]
    if m.monitor is not None:
        ax.step(h, live.cusum_max[:k], where="post", color="tab:brown", lw=1.6, label="max CUSUM over stations")
        ax.axhline(m.spec.detection.cusum_h, color="tab:brown", ls="--", lw=1.0, label="CUSUM threshold h")
        ax.set_ylabel("CUSUM [-]")
    if m.estimator is not None:
        ax2 = ax.twinx() if m.monitor is not None else ax
        ax2.step(h, m.se_objective[:k], where="post", color="tab:cyan", lw=1.2, label="χ² statistic J")
        ax2.axhline(
            m.estimator.chi2_threshold(m.spec.detection.alpha), color="tab:cyan", ls=":", lw=1.0, label="χ² threshold"
        )
        ax2.set_ylabel("J [-]")
    _shade_attacks(ax, live)
    _hour_axis(ax, live)
    ax.set_title("Detector", loc="left", fontsize=10)
    handles, labels = [], []
    for a in fig.axes:
        hs, ls = a.get_legend_handles_labels()
        handles += hs
        labels += ls
    if handles:
        ax.legend(handles, labels, loc="upper left", fontsize=8)
    return fig


def stress_percent(live: Live) -> tuple[np.ndarray, np.ndarray]:
    """Share of its limit each bus (voltage) and line (loading) uses at the last step done [%]."""
    m, k = live.model, live.steps
    net = m.network
    g = m.spec.grid
    if k == 0:
        return np.full(net.n_bus, np.nan), np.full(net.n_line, np.nan)
    vm = m.recorder.vm[k - 1]
    drop = np.where(vm < 1.0, (1.0 - vm) / (1.0 - g.v_min_pu), (vm - 1.0) / (g.v_max_pu - 1.0))
    return 100.0 * drop, 100.0 * m.recorder.line_loading[k - 1] / g.max_line_loading_percent


def feeder_figure(live: Live) -> Figure:
    """The feeder at the last step done: buses and lines on one colour scale, stations sized by queue."""
    import matplotlib as mpl

    m, k = live.model, live.steps
    net = m.network.net
    x, y = live.x, live.y
    bus_pct, line_pct = stress_percent(live)
    cmap = mpl.colormaps["plasma_r"].copy()
    cmap.set_bad("#bbbbbb")
    norm = Normalize(0.0, STRESS_MAX_PERCENT)
    fig = Figure(figsize=(7.6, 4.4), layout="constrained")
    ax = fig.add_subplot()
    pos = {b: i for i, b in enumerate(net.bus.index)}
    live_lines = np.nonzero(net.line["in_service"].to_numpy(bool))[0]
    segs = [
        [
            (x[pos[net.line.from_bus.iat[i]]], y[pos[net.line.from_bus.iat[i]]]),
            (x[pos[net.line.to_bus.iat[i]]], y[pos[net.line.to_bus.iat[i]]]),
        ]
        for i in live_lines
    ]
    lc = LineCollection(segs, cmap=cmap, norm=norm, linewidths=4.0, zorder=1)
    lc.set_array(np.ma.masked_invalid(line_pct[live_lines]))
    ax.add_collection(lc)
    sc = ax.scatter(
        x,
        y,
        c=np.ma.masked_invalid(bus_pct),
        cmap=cmap,
        norm=norm,
        s=70,
        edgecolors="k",
        linewidths=0.6,
        zorder=3,
        plotnonfinite=True,
    )
    slack = [pos[int(b)] for b in net.ext_grid["bus"]]
    ax.scatter(x[slack], y[slack], marker="s", s=160, c="k", zorder=4)
    if len(x) <= 60:
        for i in range(len(x)):
            ax.annotate(
                str(i + 1),
                (x[i], y[i]),
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                fontsize=6.5,
                color="#333333",
            )
    # stations with ports (public chargers queue; home chargers never do): squares under their bus
    st = m.station_table
    queued = st.ports > 0
    if queued.any():
        q = m.recorder.st_queue[k - 1] if k else np.zeros(len(st))
        occ = m.recorder.st_occ[k - 1] if k else np.zeros(len(st))
        rows = np.nonzero(queued)[0]
        bx, by = x[st.bus[rows]], y[st.bus[rows]] - 0.45
        ax.scatter(
            bx,
            by,
            marker="s",
            s=25 + 45 * q[rows],
            facecolor=mpl.colormaps["Greens"](0.25 + 0.75 * np.clip(occ[rows] / np.maximum(st.ports[rows], 1), 0, 1)),
            edgecolors="tab:green",
            linewidths=0.8,
            zorder=2,
        )
        for r, xx, yy in zip(rows, bx, by):
            if q[r] > 0:
                ax.annotate(
                    f"{int(q[r])}",
                    (xx, yy),
                    xytext=(0, -11),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                    color="tab:red",
                    weight="bold",
                )
    cb = fig.colorbar(sc, ax=ax, shrink=0.85, pad=0.01)
    cb.set_label("share of limit used [%]\nbus: voltage drop / allowed; line: loading / rating", fontsize=8)
    ax.set_xlim(x.min() - 0.8, x.max() + 0.8)
    ax.set_ylim(y.min() - 1.2, y.max() + 0.8)
    ax.set_axis_off()
    ax.set_title(
        f"Feeder · {live.clock()} · squares: public stations (size = queue, green = ports busy)", loc="left", fontsize=9
    )
    return fig


# ------------------------------------------------------------------ the page
def _env_params() -> tuple[DashParams, list[str]]:
    scenario = os.environ.get(ENV_SCENARIO, "default")
    overrides = list(json.loads(os.environ.get(ENV_SET, "[]")))
    return default_params(scenario, overrides), overrides


def _wait_for_other_render(rc: Any) -> None:
    """Wait (bounded) until a render running in another thread, e.g. a click handler's, has finished.

    A state change made while another thread renders is left to that thread, which then renders again; a run
    that kept changing state during those renders would keep a click handler's thread rendering (and its
    updates and the next clicks waiting) until the run ends. Reacton has no public call for this; its render
    context's ``thread_lock`` is the lock a render holds, so a short acquire/release waits for it.
    """
    lock = getattr(rc, "thread_lock", None)
    if lock is not None and lock.acquire(timeout=RENDER_WAIT_S):
        lock.release()


def _kpi_html(live: Live | None) -> str:
    if live is None:
        return ""
    rows = "".join(
        f'<tr data-kpi="{key}"><td style="padding:1px 8px 1px 0;color:#555">{label}</td>'
        f'<td class="kpi-value" style="text-align:right;font-variant-numeric:tabular-nums"><b>{value}</b></td></tr>'
        for key, label, value in live.kpis()
    )
    return f'<table style="font-size:13px;border-collapse:collapse">{rows}</table>'


@solara.component
def Page() -> None:
    start, overrides = solara.use_memo(_env_params, [])
    params = solara.use_reactive(start)
    live: solara.Reactive[Live | None] = solara.use_reactive(cast(Live | None, None))
    error = solara.use_reactive("")
    tick = solara.use_reactive(0)
    playing = solara.use_reactive(False)
    runner = solara.use_ref(cast(threading.Event | None, None))  # the running frame loop's stop signal
    rc = reacton.core.get_render_context(required=False)

    def build() -> None:
        stop = runner.current
        runner.current = None
        if stop is not None:
            stop.set()
        playing.set(False)
        try:
            new = Live(params.value, overrides)
        except Exception as err:  # bad combination of controls: say so on the page, keep the old model
            error.set(f"{type(err).__name__}: {err}".replace("\n", "; "))
            return
        old = live.value
        if old is not None:
            old.close()
        error.set("")
        live.set(new)
        tick.set(tick.value + 1)

    solara.use_effect(build, [params.value])

    def set_param(**kw: Any) -> None:
        params.set(replace(params.value, **kw))

    def step() -> None:
        if live.value is not None:
            live.value.step(1)
            tick.set(tick.value + 1)

    def stop_play() -> None:
        """Pause: the runner stops before its next step (at most one step and one redraw away)."""
        stop = runner.current
        runner.current = None
        if stop is not None:
            stop.set()
        playing.set(False)

    def start_play() -> None:
        lv = live.value
        if lv is None or lv.done or runner.current is not None:
            return
        stop = threading.Event()
        runner.current = stop
        # started from the click handler, not from a render: the handler returns at once, and every redraw of
        # the run happens in the runner thread (see `play`); Solara's patched Thread carries the session along
        threading.Thread(target=play, args=(lv, stop), daemon=True, name="evgrid-dash-run").start()

    def play(lv: Live, stop: threading.Event) -> None:
        """Advance the model and redraw, frame by frame, until the end, Pause, Reset or a control change.

        A frame advances one market step and bumps ``tick``, and lasts at least `FRAME_MIN_S`. The state change renders the page synchronously in this thread, so the next frame starts only
        after the page has been redrawn: the frame rate is bounded by the drawing, and no other thread is left
        re-rendering a stream of changes (which, in the click handler's thread, holds back both the page's
        updates and the Pause click until the run ends).
        """
        try:
            playing.set(True)
            while not stop.is_set() and not lv.done and not lv.closed:
                t0 = time.perf_counter()
                lv.step(1)
                _wait_for_other_render(rc)
                tick.set(tick.value + 1)
                stop.wait(max(FRAME_MIN_S - (time.perf_counter() - t0), 0.0))
        finally:
            if runner.current is stop:
                runner.current = None
                playing.set(False)

    def cleanup_play() -> Callable[[], None]:
        def stop_on_unmount() -> None:
            if runner.current is not None:
                runner.current.set()

        return stop_on_unmount

    solara.use_effect(cleanup_play, [])

    lv = live.value
    p = params.value
    scen = list_scenarios()
    if p.scenario not in scen:
        scen = [p.scenario, *scen]
    solara.Title("evgrid dash")
    with solara.Sidebar():
        with solara.Card("Run"):
            solara.Select(label="scenario", values=scen, value=p.scenario, on_value=lambda v: set_param(scenario=v))
            solara.Text("mechanism")
            solara.ToggleButtonsSingle(
                value=p.mechanism,
                values=available(),
                on_value=lambda v: set_param(mechanism=v),
                dense=True,
                classes=["evgrid-mechanism"],
                style={"flex-wrap": "wrap"},
            )
            solara.InputInt("fleet size [EVs]", value=p.n_evs, on_value=lambda v: set_param(n_evs=max(int(v or 0), 0)))
            solara.InputInt("seed", value=p.seed, on_value=lambda v: set_param(seed=max(int(v or 0), 0)))
            solara.Checkbox(label="attack on", value=p.attack, on_value=lambda v: set_param(attack=bool(v)))
            with solara.Row():
                solara.Button("Step", on_click=step, color="primary", disabled=lv is None or lv.done or playing.value)
                solara.Button(
                    "Pause" if playing.value else "Run",
                    color="primary",
                    on_click=stop_play if playing.value else start_play,
                    disabled=lv is None or lv.done,
                )
                solara.Button("Reset", on_click=build)
        with solara.Card("KPIs so far"):
            solara.HTML(tag="div", unsafe_innerHTML=_kpi_html(lv), classes=["evgrid-kpis"])
    if error.value:
        solara.Error(error.value)
    if lv is None:
        solara.Info("building the model …")
        return
    solara.HTML(
        tag="div",
        classes=["evgrid-clock"],
        attributes={"data-step": str(lv.steps)},
        unsafe_innerHTML=f"<b>{lv.scenario.name}</b> · {lv.scenario.market.mechanism} · "
        f"{lv.scenario.fleet.n_evs} EVs · seed {lv.scenario.seed}"
        f"{' · attack on' if lv.model.attacker is not None else ''} · "
        f"<span class='evgrid-step'>{lv.clock()}</span>",
    )
    deps = [tick.value, lv]
    with solara.Columns([1, 1]):
        with solara.Column():
            with solara.Div(classes=["evgrid-feeder"]):
                solara.FigureMatplotlib(feeder_figure(lv), dependencies=deps, format="png", dpi=110)
            with solara.Div(classes=["evgrid-queues"]):
                solara.FigureMatplotlib(queue_figure(lv), dependencies=deps, format="png", dpi=100)
        with solara.Column():
            with solara.Div(classes=["evgrid-price"]):
                solara.FigureMatplotlib(price_figure(lv), dependencies=deps, format="png", dpi=100)
            with solara.Div(classes=["evgrid-load"]):
                solara.FigureMatplotlib(load_figure(lv), dependencies=deps, format="png", dpi=100)
            det = detector_figure(lv)
            if det is not None:
                with solara.Div(classes=["evgrid-detector"]):
                    solara.FigureMatplotlib(det, dependencies=deps, format="png", dpi=100)
