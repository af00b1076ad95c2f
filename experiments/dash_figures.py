"""The `evgrid dash` page's figures (`experiments.dash`): feeder, price, load, queue and detector panels of a
`experiments.dash.Live` run, drawn after every step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from experiments.dash import Live

STRESS_MAX_PERCENT = 120.0  # top of the shared colour scale [% of limit]


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

    m = live.model
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
    _draw_stations(ax, live, x, y)
    cb = fig.colorbar(sc, ax=ax, shrink=0.85, pad=0.01)
    cb.set_label("share of limit used [%]\nbus: voltage drop / allowed; line: loading / rating", fontsize=8)
    ax.set_xlim(x.min() - 0.8, x.max() + 0.8)
    ax.set_ylim(y.min() - 1.2, y.max() + 0.8)
    ax.set_axis_off()
    ax.set_title(
        f"Feeder · {live.clock()} · squares: public stations (size = queue, green = ports busy)", loc="left", fontsize=9
    )
    return fig


def _draw_stations(ax: Any, live: Live, x: np.ndarray, y: np.ndarray) -> None:
    """Public stations as squares under their bus at ``(x, y)``: size = queue, green = share of ports busy, queue
    length written in red."""
    import matplotlib as mpl

    m, k = live.model, live.steps
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
