"""Plots of one run (`plot_run`) and of several runs side by side (`plot_comparison`).

Every function writes PNG files (Agg backend, ``DPI`` dots per inch) into ``out_dir`` and returns their paths.
Plots whose tables are missing or empty (``bus``/``line``/``evs`` can be switched off; a run can have no EVs) are
skipped. A plot that fails for any other reason is skipped with a warning unless ``strict=True``, so a plotting
problem never loses the tables of a finished run (`RunResult.write` is all-or-nothing).

Time axes use hours since the start of the run (``time_h``, monotonic even when a day runs noon to noon) and are
labelled with the time of day; runs longer than a day also show the day number.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from sim.result import RunResult

DPI = 120
RUN_FILES = (
    "voltage_heatmap.png",
    "load_profile.png",
    "price_ev_load.png",
    "line_loading.png",
    "stations.png",
    "fulfilment.png",
    "voltage_profile.png",
)
COMPARISON_FILES = ("comparison_load.png", "comparison_voltage.png")


# --------------------------------------------------------------------------------------------------- helpers
def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _table(result: Any, name: str) -> pd.DataFrame | None:
    """The table ``name`` of a result, or None when it is missing or has no rows."""
    df = (getattr(result, "tables", None) or {}).get(name)
    if df is None or not isinstance(df, pd.DataFrame) or df.empty:
        return None
    return df


def _scenario_name(result: Any) -> str:
    return str(getattr(getattr(result, "scenario", None), "name", "") or "run")


def _grid_attr(result: Any, attr: str, default: Any) -> Any:
    v = getattr(getattr(getattr(result, "scenario", None), "grid", None), attr, None)
    return default if v is None else v


def _paper(result: Any) -> bool:
    """Whether the scenario wrote its bus numbers in the papers' 1-based numbering (the plots still show indices)."""
    return _grid_attr(result, "bus_numbering", "pandapower") == "paper"


def _save(fig: Figure, path: Path) -> Path:
    if fig.get_layout_engine() is None:  # figures with a legend below the axes use constrained layout
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


class _Clock:
    """Time axis of a run: step → hours since start, and the time of day of the start."""

    def __init__(self, steps: pd.DataFrame) -> None:
        steps = steps.sort_values("step")
        self.step = steps["step"].to_numpy()
        if "time_h" in steps:
            self.t = steps["time_h"].to_numpy(float)
        elif "t_min" in steps:
            self.t = steps["t_min"].to_numpy(float) / 60.0
        else:
            self.t = self.step.astype(float)
        d = np.diff(self.t)
        self.dt = float(np.median(d)) if len(d) and np.median(d) > 0 else 1.0
        self.start_tod = float((steps["tod_h"].iloc[0] - self.t[0]) % 24.0) if "tod_h" in steps else 0.0
        self.t0 = float(self.t[0]) if len(self.t) else 0.0
        self.t1 = float(self.t[-1] + self.dt) if len(self.t) else 1.0

    def time_of(self, step: Any) -> np.ndarray:
        """Hours since start of the given step numbers."""
        return (
            np.interp(np.asarray(step, float), self.step.astype(float), self.t)
            if len(self.t) > 1
            else np.asarray(step, float) * self.dt + self.t0
        )

    def tod_label(self, t_h: float) -> str:
        a = self.start_tod + t_h
        day, tod = int(a // 24), a % 24
        hh, mm = int(tod), int(round((tod - int(tod)) * 60))
        if mm == 60:
            hh, mm = hh + 1, 0
        s = f"{hh % 24:02d}:{mm:02d}"
        return f"day {day + 1} {s}" if self.t1 - self.t0 > 24 + 1e-9 else s

    def post(self, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """x, y for a step-post drawing that covers the last step too."""
        y = np.asarray(y, float)
        return np.append(self.t, self.t1), np.append(y, y[-1] if len(y) else np.nan)


def _time_axis(ax: Axes, clock: _Clock, t0: float | None = None, t1: float | None = None, max_ticks: int = 9) -> None:
    """Ticks every 3 h (coarser for long runs or narrow axes) labelled with time of day; the day on multi-day runs."""
    t0 = clock.t0 if t0 is None else t0
    t1 = clock.t1 if t1 is None else t1
    span = max(t1 - t0, 1e-9)
    multi = span > 24 + 1e-9
    step = 3.0
    for s in (3, 6, 12, 24, 48, 72, 168, 336, 720, 1440, 2160, 4320):
        step = float(s)
        if span / s <= max_ticks:
            break
    a0, a1 = clock.start_tod + t0, clock.start_tod + t1
    ticks_abs = np.arange(math.ceil(a0 / step - 1e-9) * step, a1 + 1e-9, step)
    ticks = ticks_abs - clock.start_tod
    labels = []
    for a in ticks_abs:
        day, tod = int(a // 24), int(round(a % 24)) % 24
        if not multi:
            labels.append(f"{tod:02d}:00")
        elif step >= 24:
            labels.append(f"day {day + 1}")
        else:
            labels.append(f"{tod:02d}:00\nday {day + 1}" if tod == 0 else f"{tod:02d}:00")
    ax.set_xticks(ticks, labels)
    ax.set_xlim(t0, t1)
    ax.set_xlabel("time of day [h]" if not multi else "day of run" if step >= 24 else "time of day [h] / day of run")


def _bus_ticks(ax: Axes, ids: np.ndarray, axis: str = "y", max_labels: int = 35) -> None:
    """Label positions 0..n-1 with the buses' pandapower indices ``ids``, thinned to at most ``max_labels``."""
    n = len(ids)
    every = max(1, math.ceil(n / max_labels))
    pos = np.arange(0, n, every)
    labels = [str(int(ids[i])) for i in pos]
    (ax.set_yticks if axis == "y" else ax.set_xticks)(pos, labels, fontsize=7 if n > 20 else 9)


def _bus_label(paper: bool, what: str = "bus") -> str:
    """Axis label: every plot speaks pandapower indices; a paper-numbered scenario is reminded of the offset."""
    return f"{what} (pandapower index; paper number = index + 1)" if paper else f"{what} (pandapower index)"


def _group_colours(groups: Any) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    uniq = sorted({str(g) for g in groups})  # same colour for a group in every plot
    return {g: cmap(i % 10) for i, g in enumerate(uniq)}


def _col(df: pd.DataFrame, name: str, default: float = 0.0) -> np.ndarray:
    return df[name].to_numpy(float) if name in df else np.full(len(df), default)


def _pivot(df: pd.DataFrame, index: str, value: str) -> pd.DataFrame:
    """step × ``index`` matrix of ``value`` (rows sorted by step, columns by index)."""
    return (
        df.pivot_table(index="step", columns=index, values=value, aggfunc="mean", dropna=False)
        .sort_index()
        .sort_index(axis=1)
    )


def _message(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------------------ run plots
def _mark_failed(ax: Axes, steps: pd.DataFrame, clock: _Clock) -> int:
    """Shade the steps whose power flow failed (no physical solution; left out of every grid KPI).

    Returns:
        The number of failed steps (0: nothing drawn).
    """
    if "converged" not in steps:
        return 0
    steps = steps.sort_values("step")
    failed = ~steps["converged"].to_numpy(bool)
    n = int(failed.sum())
    if not n:
        return 0
    t = clock.time_of(steps["step"].to_numpy()[failed])
    # merge consecutive failed steps into one span each
    starts = np.r_[0, np.flatnonzero(np.diff(t) > clock.dt * 1.5) + 1]
    ends = np.r_[starts[1:], len(t)]
    for j, (a, b) in enumerate(zip(starts, ends)):
        ax.axvspan(
            t[a],
            t[b - 1] + clock.dt,
            facecolor="0.6",
            alpha=0.35,
            hatch="//",
            lw=0,
            zorder=0,
            label=f"power flow failed ({n} steps, not in the KPIs)" if j == 0 else None,
        )
    return n


def _voltage_heatmap(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    bus, steps = _table(result, "bus"), _table(result, "steps")
    if bus is None or steps is None:
        return None
    clock = _Clock(steps)
    m = _pivot(bus, "bus", "vm_pu")
    ids = m.columns.to_numpy()
    t = clock.time_of(m.index.to_numpy())
    vm = np.ma.masked_invalid(m.to_numpy(float).T)  # bus × step
    if vm.count() == 0:
        return None
    vlo, vhi = float(_grid_attr(result, "v_min_pu", 0.95)), float(_grid_attr(result, "v_max_pu", 1.05))
    dmin, dmax = float(vm.min()), float(vm.max())
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(dmin, vlo, 0.999) - 0.002, vmax=max(dmax, vhi, 1.001) + 0.002)
    cmap = plt.get_cmap("RdBu").with_extremes(bad="0.8")
    paper = _paper(result)

    fig, ax = plt.subplots(figsize=(11, 6), layout="constrained")
    try:
        x_edges = (t[0], t[-1] + clock.dt)
        im = ax.imshow(
            vm,
            aspect="auto",
            cmap=cmap,
            norm=norm,
            interpolation="nearest",
            origin="upper",
            extent=(x_edges[0], x_edges[1], len(ids) - 0.5, -0.5),
        )
        handles: list[Any] = []
        xc = t + clock.dt / 2
        for lim, style in ((vlo, "--"), (vhi, ":")):
            if dmin < lim < dmax and vm.shape[1] > 1 and vm.shape[0] > 1:
                ax.contour(xc, np.arange(len(ids)), vm, levels=[lim], colors="k", linewidths=1.2, linestyles=style)
                handles.append(Line2D([], [], color="k", ls=style, label=f"V = {lim:.3f} pu limit"))
        b, k = np.unravel_index(int(np.ma.argmin(vm)), vm.shape)
        ax.plot(xc[k], b, marker="x", color="k", ms=9, mew=2, ls="none")
        bus_str = f"{int(ids[b])}"
        handles.append(
            Line2D(
                [],
                [],
                marker="x",
                color="k",
                ls="none",
                mew=2,
                label=f"min {dmin:.3f} pu (bus {bus_str}, {clock.tod_label(t[k])})",
            )
        )
        n_failed = int((~steps["converged"].to_numpy(bool)).sum()) if "converged" in steps else 0
        if n_failed:  # their voltages are NaN: drawn in the colour map's "bad" grey
            handles.append(Patch(facecolor="0.8", label=f"power flow failed ({n_failed} steps, not in the KPIs)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
        cb = fig.colorbar(im, ax=ax, pad=0.02)
        cb.set_label("voltage magnitude [pu]")
        for lim in (vlo, vhi):
            cb.ax.axhline(lim, color="k", ls="--", lw=1)
        _time_axis(ax, clock, x_edges[0], x_edges[1])
        _bus_ticks(ax, ids, "y")
        ax.set_ylabel(_bus_label(paper))
        below = int((vm < vlo - 1e-9).sum())
        status = f"{below} bus-steps below {vlo:.2f} pu" if below else f"all buses ≥ {vlo:.2f} pu"
        ax.set_title(
            f"{_scenario_name(result)}: bus voltage [pu]\nmin {dmin:.3f} pu at bus {bus_str}, "
            f"{clock.tod_label(t[k])}; {status}",
            fontsize=11,
        )
        return _save(fig, path)
    finally:
        plt.close(fig)


def _load_profile(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    steps = _table(result, "steps")
    if steps is None:
        return None
    steps = steps.sort_values("step")
    clock = _Clock(steps)
    grid = _col(steps, "grid_p_kw")
    sources = [
        ("substation import", np.clip(grid, 0, None), "#7f7f7f"),
        ("DG", _col(steps, "dg_kw"), "#d62728"),
        ("PV", _col(steps, "pv_kw"), "#ffbf00"),
        ("wind", _col(steps, "wind_kw"), "#2ca02c"),
        ("other generation", _col(steps, "other_gen_kw"), "#8c564b"),
        ("network generators", _col(steps, "gen_kw"), "#9467bd"),
    ]
    sources = [s for s in sources if np.nanmax(np.abs(np.nan_to_num(s[1]))) > 1e-9 or s[0] == "substation import"]
    total = _col(steps, "total_load_kw", np.nan)
    if "total_load_kw" not in steps:
        total = _col(steps, "base_load_kw") + _col(steps, "ev_load_kw")
    base = _col(steps, "base_load_kw", np.nan)
    ev = _col(steps, "ev_load_kw")
    dt_h = clock.dt
    e_total = float(np.nansum(total) * dt_h)
    e_ev = float(np.nansum(ev) * dt_h)
    share = e_ev / e_total if e_total > 0 else 0.0

    fig, ax = plt.subplots(figsize=(11, 5.5))
    try:
        bottom = np.zeros(len(steps))
        for label, y, colour in sources:
            y = np.nan_to_num(y)
            x, lo = clock.post(bottom)
            _, hi = clock.post(bottom + y)
            ax.fill_between(
                x, lo, hi, step="post", color=colour, alpha=0.55, lw=0, label=f"{label} ({np.sum(y) * dt_h:,.0f} kWh)"
            )
            bottom = bottom + y
        export = np.clip(grid, None, 0)
        if np.any(export < -1e-9):
            x, y = clock.post(export)
            ax.fill_between(
                x,
                0,
                y,
                step="post",
                color="#9467bd",
                alpha=0.5,
                lw=0,
                label=f"substation export ({-np.sum(export) * dt_h:,.0f} kWh)",
            )
            ax.axhline(0, color="k", lw=0.6)
        if np.nanmax(np.abs(ev)) > 1e-9 and np.all(np.isfinite(base)):
            x, lo = clock.post(base)
            _, hi = clock.post(base + ev)
            ax.fill_between(
                x,
                lo,
                hi,
                step="post",
                facecolor="none",
                edgecolor="#1f77b4",
                hatch="///",
                lw=0,
                label=f"EV load ({e_ev:,.0f} kWh, {share:.1%} of demand)",
            )
        ax.step(*clock.post(total), where="post", color="k", lw=1.8, label=f"total demand ({e_total:,.0f} kWh)")
        if "base_load_orig_kw" in steps:
            orig = _col(steps, "base_load_orig_kw")
            ax.step(*clock.post(orig), where="post", color="0.25", lw=1.2, ls="--", label="non-EV load before DR")
            if np.all(np.isfinite(base)) and np.nanmax(np.abs(orig - base)) > 1e-6:
                ax.step(*clock.post(base), where="post", color="0.25", lw=1.0, ls=":", label="non-EV load after DR")
        _mark_failed(ax, steps, clock)
        _time_axis(ax, clock)
        ax.set_ylabel("power [kW]")
        ax.set_ylim(bottom=min(0.0, float(np.nanmin(np.append(export, 0))) * 1.1))
        ax.grid(alpha=0.3)
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            title="supply (stacked) / demand",
            title_fontsize=8,
        )
        peak = float(np.nanmax(total)) if np.any(np.isfinite(total)) else float("nan")
        ax.set_title(
            f"{_scenario_name(result)}: load by source\npeak demand {peak:,.0f} kW, EV share of energy "
            f"{share:.1%} (supply above demand = losses)",
            fontsize=11,
        )
        return _save(fig, path)
    finally:
        plt.close(fig)


def _price_ev_load(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    steps = _table(result, "steps")
    if steps is None:
        return None
    steps = steps.sort_values("step")
    clock = _Clock(steps)
    price = _col(steps, "price_usd_per_mwh", np.nan)
    ev = _col(steps, "ev_load_kw")
    req = _col(steps, "ev_requested_kw", np.nan)
    curt = _col(steps, "ev_curtailed_kw")
    curtailed_any = np.nansum(curt) > 1e-9  # DSO curtailment only; station caps and full batteries are not

    fig, ax = plt.subplots(figsize=(11, 5.5), layout="constrained")
    try:
        ax2 = ax.twinx()
        ax.set_zorder(ax2.get_zorder() + 1)  # price line on top of the EV area
        ax.patch.set_visible(False)
        ax2.fill_between(
            *clock.post(ev),
            step="post",
            color="#1f77b4",
            alpha=0.35,
            lw=0,
            label=f"EV load delivered ({np.nansum(ev) * clock.dt:,.0f} kWh)",
        )
        if curtailed_any and np.all(np.isfinite(req)):
            x, r = clock.post(req)
            _, e = clock.post(ev)
            ax2.step(x, r, where="post", color="#1f77b4", ls="--", lw=1.2, label="EV load requested")
            ax2.fill_between(
                x,
                e,
                r,
                where=r > e + 1e-9,
                step="post",
                facecolor="none",
                edgecolor="#d62728",
                hatch="xx",
                lw=0,
                label=f"scheduled, not delivered (DSO curtailed {np.nansum(curt) * clock.dt:,.1f} kWh)",
            )
        if "curtailed" in steps and steps["curtailed"].astype(bool).any():
            x, c = clock.post(steps["curtailed"].astype(bool).to_numpy(float))
            ax2.fill_between(
                x,
                0,
                1,
                where=c > 0.5,
                step="post",
                transform=ax2.get_xaxis_transform(),
                color="#d62728",
                alpha=0.08,
                lw=0,
                label="steps with DSO curtailment",
            )
        ax.step(*clock.post(price), where="post", color="#d62728", lw=2, label="price")
        ax.set_ylabel("price [$/MWh]", color="#d62728")
        ax.tick_params(axis="y", colors="#d62728")
        ax2.set_ylabel("EV load [kW]", color="#1f77b4")
        ax2.tick_params(axis="y", colors="#1f77b4")
        ax2.set_ylim(bottom=0)
        if np.any(np.isfinite(price)):
            lo, hi = np.nanmin(price), np.nanmax(price)
            pad = max(0.08 * (hi - lo), 0.05 * abs(hi), 1.0)
            ax.set_ylim(min(0.0, lo - pad) if lo < 0 else max(0.0, lo - pad), hi + pad)
        _mark_failed(ax, steps, clock)
        _time_axis(ax, clock)
        ax.grid(alpha=0.3)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        fig.legend(h1 + h2, l1 + l2, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
        ev_peak = float(np.nanmax(ev)) if len(ev) else 0.0
        ax.set_title(
            f"{_scenario_name(result)}: price and EV charging load\nEV peak {ev_peak:,.0f} kW"
            + (f", DSO curtailed {np.nansum(curt) * clock.dt:,.1f} kWh" if curtailed_any else ""),
            fontsize=11,
        )
        return _save(fig, path)
    finally:
        plt.close(fig)


def _line_loading(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    line = _table(result, "line")
    if line is None:
        return None
    m = _pivot(line, "line", "loading_percent")
    ids = m.columns.to_numpy()
    data = [c[np.isfinite(c)] for c in m.to_numpy(float).T]
    if not any(len(d) for d in data):
        return None
    limit = float(_grid_attr(result, "max_line_loading_percent", 100.0))
    maxes = np.array([d.max() if len(d) else np.nan for d in data])
    worst = int(np.nanargmax(maxes))

    fig, (ax, axh) = plt.subplots(1, 2, figsize=(12, 5), sharey=True, gridspec_kw={"width_ratios": [5, 1]})
    try:
        pos = np.arange(len(ids))
        keep = [i for i, d in enumerate(data) if len(d)]
        bp = ax.boxplot(
            [data[i] for i in keep],
            positions=pos[keep],
            whis=(0, 100),
            showfliers=False,
            patch_artist=True,
            widths=0.6,
            medianprops={"color": "k", "lw": 1},
        )
        for i, patch in zip(keep, bp["boxes"]):
            patch.set_facecolor("#d62728" if maxes[i] > limit else "#1f77b4")
            patch.set_alpha(0.6)
        ax.axhline(limit, color="#d62728", ls="--", lw=1.3, label=f"limit {limit:.0f} %")
        ax.set_xlim(-0.7, len(ids) - 0.3)
        every = max(1, math.ceil(len(ids) / 40))
        ax.set_xticks(
            pos[::every],
            [str(int(i)) for i in ids[::every]],
            fontsize=7 if len(ids) > 20 else 9,
            rotation=90 if len(ids) > 40 else 0,
        )
        ax.set_xlabel(_bus_label(False, "line"))
        ax.set_ylabel("line loading [%]")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, title="box: quartiles, whiskers: min–max", title_fontsize=8)
        allv = np.concatenate([d for d in data if len(d)])
        axh.hist(allv, bins=min(40, max(10, int(np.sqrt(len(allv))))), orientation="horizontal", color="0.5")
        axh.axhline(limit, color="#d62728", ls="--", lw=1.3)
        axh.set_xlabel("line-steps")
        axh.set_title("all lines", fontsize=9)
        ax.set_ylim(bottom=0, top=max(limit, float(np.nanmax(maxes))) * 1.08)
        n_over = int((maxes > limit).sum())
        lab = int(ids[worst])
        ax.set_title(
            f"{_scenario_name(result)}: line loading over the run\nmax {maxes[worst]:.1f} % on line {lab}; "
            f"{n_over} line(s) above {limit:.0f} %",
            fontsize=11,
        )
        return _save(fig, path)
    finally:
        plt.close(fig)


def _stations(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    from matplotlib.ticker import MaxNLocator

    st = _table(result, "stations")
    evs = _table(result, "evs")
    ss = _table(result, "station_step")
    if st is None and evs is None:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    try:
        if st is not None and "utilisation" in st:
            groups = st["group"].astype(str) if "group" in st else pd.Series(["all"] * len(st), index=st.index)
            colours = _group_colours(groups)
            order = st.assign(_g=groups).sort_values(["_g", "station"] if "station" in st else ["_g"])
            u = order["utilisation"].to_numpy(float) * 100
            x = np.arange(len(order))
            ax1.bar(x, np.nan_to_num(u), color=[colours[g] for g in order["_g"]], width=0.8)
            if len(order) <= 40:
                names = order["name"].astype(str) if "name" in order else order["station"].astype(str)
                ax1.set_xticks(x, names, rotation=90, fontsize=7 if len(order) > 15 else 9)
                ax1.set_xlabel("station")
            else:
                ax1.set_xticks([])
                ax1.set_xlabel(f"{len(order)} stations, grouped")
            from matplotlib.patches import Patch

            handles = []
            for g, c in colours.items():
                sel = order["_g"] == g
                mean_u = float(np.nanmean(order.loc[sel, "utilisation"])) * 100 if sel.any() else float("nan")
                handles.append(Patch(color=c, label=f"{g} (mean {mean_u:.0f} %, {int(sel.sum())} stations)"))
            ax1.legend(handles=handles, fontsize=8, loc="upper right")
            ax1.set_ylabel("port utilisation [%]")
            ax1.set_ylim(0, max(100.0, float(np.nanmax(u)) if np.any(np.isfinite(u)) else 100.0) * 1.15)
            ax1.grid(axis="y", alpha=0.3)
            ax1.set_title("utilisation (plugged time / port time)", fontsize=10)
        else:
            _message(ax1, "no station table")

        wait = np.array([])
        n_ev = 0
        if evs is not None and "wait_min" in evs:
            w = evs["wait_min"].to_numpy(float)
            n_ev = int(np.isfinite(w).sum())
            wait = w[np.isfinite(w) & (w > 1e-9)]
        if len(wait):
            ax2.hist(wait, bins=min(40, max(8, int(np.sqrt(len(wait))) + 1)), color="#ff7f0e", alpha=0.75)
            mean, p95 = float(np.mean(wait)), float(np.percentile(wait, 95))
            ax2.axvline(mean, color="k", ls="-", lw=1.3, label=f"mean {mean:.1f} min")
            ax2.axvline(p95, color="k", ls="--", lw=1.3, label=f"95th pct. {p95:.1f} min")
            ax2.legend(fontsize=8)
            ax2.set_xlabel("waiting time before plug-in [min]")
            ax2.set_ylabel("EVs")
            ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax2.set_title(
                f"waiting time: {len(wait)} of {n_ev} EVs waited ({len(wait) / max(n_ev, 1):.0%})", fontsize=10
            )
        elif ss is not None and "queue" in ss and _table(result, "steps") is not None:
            clock = _Clock(_table(result, "steps"))
            q = ss.groupby("step")["queue"].sum().sort_index()
            full = pd.Series(0.0, index=clock.step).add(q, fill_value=0).reindex(clock.step).fillna(0)
            ax2.step(*clock.post(full.to_numpy(float)), where="post", color="#ff7f0e")
            _time_axis(ax2, clock, max_ticks=5)
            ax2.set_ylabel("EVs queueing (all stations)")
            ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax2.set_ylim(bottom=0, top=max(1.0, float(full.max()) * 1.15))
            ax2.set_title(
                "queue length over time — no EV waited" if full.max() == 0 else "queue length over time", fontsize=10
            )
        else:
            _message(ax2, "no EV waited" if evs is not None else "no EV table")
        ax2.grid(alpha=0.3)
        fig.suptitle(f"{_scenario_name(result)}: charging stations", fontsize=12)
        return _save(fig, path)
    finally:
        plt.close(fig)


def _fulfilment(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    from matplotlib.ticker import MaxNLocator

    evs = _table(result, "evs")
    if evs is None or "soc_end" not in evs:
        return None
    dep = evs["departs_in_horizon"].astype(bool) if "departs_in_horizon" in evs else pd.Series(True, index=evs.index)
    sel, note = (evs[dep], "EVs departing within the run") if dep.any() else (evs, "all EVs (none departed in run)")
    groups = sel["group"].astype(str) if "group" in sel else pd.Series(["all"] * len(sel), index=sel.index)
    colours = _group_colours(groups)
    names = list(colours)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    try:
        soc = sel["soc_end"].to_numpy(float)
        tgt = _col(sel, "soc_target", np.nan)
        finite = np.isfinite(soc)
        if finite.any():
            hi = max(1.0, float(np.nanmax(soc)))
            bins = np.linspace(0, hi + 1e-9, 26)
            ax1.hist(
                [soc[(groups == g).to_numpy() & finite] for g in names],
                bins=bins,
                stacked=True,
                color=[colours[g] for g in names],
                label=names,
                alpha=0.8,
            )
            targets = np.unique(np.round(tgt[np.isfinite(tgt)], 3))
            if 0 < len(targets) <= 3:
                for i, v in enumerate(targets):
                    ax1.axvline(v, color="k", ls="--", lw=1.3, label="target SOC" if i == 0 else None)
            elif len(targets):
                ax1.axvline(float(np.nanmean(tgt)), color="k", ls="--", lw=1.3, label="mean target SOC")
            ok = np.isfinite(tgt) & finite
            met = float(np.mean(soc[ok] >= tgt[ok] - 1e-3)) if ok.any() else float("nan")
            ax1.set_title(f"SOC at departure: {met:.0%} reached target ({int(finite.sum())} {note})", fontsize=10)
            ax1.legend(fontsize=8, loc="upper left")
        else:
            _message(ax1, "no SOC data")
        ax1.set_xlabel("state of charge at departure [–]")
        ax1.set_ylabel("EVs")
        ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax1.grid(alpha=0.3)

        if "fulfilment" in sel:
            f = sel["fulfilment"].to_numpy(float)
            fin = np.isfinite(f)
            if fin.any():
                hi = max(1.0, float(np.nanmax(f)))
                bins = np.linspace(0, hi + 1e-9, 21)
                ax2.hist(
                    [f[(groups == g).to_numpy() & fin] for g in names],
                    bins=bins,
                    stacked=True,
                    color=[colours[g] for g in names],
                    label=names,
                    alpha=0.8,
                )
                mean = float(np.mean(f[fin]))
                ax2.axvline(mean, color="k", lw=1.3, label=f"mean {mean:.2f}")
                full_share = float(np.mean(f[fin] >= 0.99))
                e_need = float(np.nansum(_col(sel, "e_need_kwh")))
                e_del = float(np.nansum(np.clip(_col(sel, "e_delivered_kwh"), 0, None)))
                ax2.set_title(
                    f"energy fulfilment: {full_share:.0%} of EVs ≥ 99 %; {e_del:,.0f} of {e_need:,.0f} kWh needed",
                    fontsize=10,
                )
                ax2.legend(fontsize=8, loc="upper left")
            else:
                _message(ax2, "no fulfilment data")
        else:
            _message(ax2, "no fulfilment column")
        ax2.set_xlabel("delivered / needed energy [–]")
        ax2.set_ylabel("EVs")
        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.grid(alpha=0.3)
        fig.suptitle(f"{_scenario_name(result)}: charging outcome per EV", fontsize=12)
        return _save(fig, path)
    finally:
        plt.close(fig)


def _voltage_profile(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    bus = _table(result, "bus")
    if bus is None:
        return None
    m = _pivot(bus, "bus", "vm_pu")
    v = m.to_numpy(float)
    if not np.isfinite(v).any():
        return None
    ids = m.columns.to_numpy()
    paper = _paper(result)
    vlo, vhi = float(_grid_attr(result, "v_min_pu", 0.95)), float(_grid_attr(result, "v_max_pu", 1.05))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vmin, vmean, vmax = np.nanmin(v, axis=0), np.nanmean(v, axis=0), np.nanmax(v, axis=0)
        k = int(np.nanargmin(np.nanmin(v, axis=1)))
    steps = _table(result, "steps")
    when = f"step {int(m.index[k])}"
    if steps is not None:
        clock = _Clock(steps)
        when = clock.tod_label(float(clock.time_of([m.index[k]])[0]))

    fig, ax = plt.subplots(figsize=(11, 5))
    try:
        x = np.arange(len(ids))
        ax.fill_between(x, vmin, vmax, color="#1f77b4", alpha=0.25, label="min–max over the run")
        ax.plot(x, vmean, color="#1f77b4", lw=1.8, marker="o", ms=3, label="mean")
        ax.plot(x, v[k], color="#d62728", lw=1.2, label=f"worst step ({when})")
        ax.axhline(vlo, color="k", ls="--", lw=1.1, label=f"limits {vlo:.2f} / {vhi:.2f} pu")
        ax.axhline(vhi, color="k", ls="--", lw=1.1)
        ax.axhline(1.0, color="0.6", lw=0.6)
        _bus_ticks(ax, ids, "x", max_labels=40)
        ax.set_xlim(-0.5, len(ids) - 0.5)
        ax.set_xlabel(_bus_label(paper))
        ax.set_ylabel("voltage magnitude [pu]")
        lo = min(float(np.nanmin(vmin)), vlo)
        hi = max(float(np.nanmax(vmax)), vhi)
        pad = 0.1 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left", ncol=2)
        b = int(np.nanargmin(vmin))
        n_bad = int(((vmin < vlo - 1e-9) | (vmax > vhi + 1e-9)).sum())
        ax.set_title(
            f"{_scenario_name(result)}: voltage envelope per bus\nmin {vmin[b]:.3f} pu at bus "
            f"{int(ids[b])}; {n_bad} bus(es) outside limits at some step",
            fontsize=11,
        )
        return _save(fig, path)
    finally:
        plt.close(fig)


RUN_PLOTS: dict[str, Callable[..., Path | None]] = {
    "voltage_heatmap.png": _voltage_heatmap,
    "load_profile.png": _load_profile,
    "price_ev_load.png": _price_ev_load,
    "line_loading.png": _line_loading,
    "stations.png": _stations,
    "fulfilment.png": _fulfilment,
    "voltage_profile.png": _voltage_profile,
}


def _run_all(plots: dict[str, Callable[..., Path | None]], args: tuple, out: Path, strict: bool) -> list[Path]:
    plt = _pyplot()
    written = []
    for fname, fn in plots.items():
        try:
            p = fn(plt, *args, out / fname)
        except Exception as exc:  # a plot must not lose a finished run
            if strict:
                raise
            warnings.warn(f"plot {fname} skipped: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=3)
            plt.close("all")
            continue
        if p is not None:
            written.append(p)
    return written


def plot_run(result: RunResult, out_dir: Path, *, strict: bool = False) -> list[Path]:
    """Write the standard plots of one run into ``out_dir`` and return their paths.

    Files (each skipped when its tables are missing or empty): ``voltage_heatmap.png`` (bus × time),
    ``load_profile.png`` (supply by source, demand, EV share), ``price_ev_load.png`` (price vs EV load, curtailment),
    ``line_loading.png`` (per-line distribution vs limit), ``stations.png`` (utilisation, waiting),
    ``fulfilment.png`` (SOC at departure, energy fulfilment), ``voltage_profile.png`` (per-bus envelope).

    Args:
        result: a `RunResult` (or anything with ``tables``, ``kpis`` and ``scenario``).
        out_dir: created if needed.
        strict: re-raise an exception from a plot instead of warning and skipping it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _run_all(RUN_PLOTS, (result,), out, strict)


# ------------------------------------------------------------------------------------------------ comparison
def _common_name(frames: dict[str, Any]) -> str:
    names = [_scenario_name(r) for r in frames.values()]
    prefix = os.path.commonprefix(names).rstrip("-_ ") if names else ""
    return prefix or "runs"


def _total_load(s: pd.DataFrame) -> np.ndarray | None:
    if "total_load_kw" in s:
        return s["total_load_kw"].to_numpy(float)
    if "base_load_kw" in s:
        return s["base_load_kw"].to_numpy(float) + _col(s, "ev_load_kw")
    return None


def _vmin(s: pd.DataFrame) -> np.ndarray | None:
    return s["vmin_pu"].to_numpy(float) if "vmin_pu" in s else None


def _comparison_series(
    plt: ModuleType,
    frames: dict[str, Any],
    path: Path,
    values: Callable[[pd.DataFrame], np.ndarray | None],
    ylabel: str,
    title: str,
    legend: Callable[[np.ndarray], str],
    limits: Callable[[Any], list[tuple[float, str]]],
) -> Path | None:
    runs = []
    for name, r in frames.items():
        s = _table(r, "steps")
        if s is None:
            continue
        s = s.sort_values("step")
        y = values(s)
        if y is not None:
            runs.append((name, r, _Clock(s), y))
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(11, 5))
    try:
        for i, (name, _, clock, y) in enumerate(runs):
            ax.step(*clock.post(y), where="post", lw=1.6, color=f"C{i % 10}", label=f"{name} ({legend(y)})")
        seen = set()
        for _, r, _, _ in runs:
            for lim, lab in limits(r):
                if lim not in seen:
                    ax.axhline(lim, color="k", ls="--", lw=1.1, label=lab)
                    seen.add(lim)
        clocks = [c for _, _, c, _ in runs]
        _time_axis(ax, clocks[0], min(c.t0 for c in clocks), max(c.t1 for c in clocks))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title(f"{_common_name(frames)}: {title}", fontsize=11)
        return _save(fig, path)
    finally:
        plt.close(fig)


def _comparison_load(plt: ModuleType, frames: dict[str, RunResult], path: Path) -> Path | None:
    return _comparison_series(
        plt,
        frames,
        path,
        _total_load,
        "total demand [kW]",
        "total load per run",
        lambda y: f"peak {np.nanmax(y):,.0f} kW" if np.isfinite(y).any() else "no data",
        lambda r: [],
    )


def _comparison_voltage(plt: ModuleType, frames: dict[str, RunResult], path: Path) -> Path | None:
    def limits(r: Any) -> list[tuple[float, str]]:
        v = float(_grid_attr(r, "v_min_pu", 0.95))
        return [(v, f"v_min limit {v:.2f} pu")]

    return _comparison_series(
        plt,
        frames,
        path,
        _vmin,
        "lowest bus voltage [pu]",
        "lowest bus voltage per step",
        lambda y: f"min {np.nanmin(y):.3f} pu" if np.isfinite(y).any() else "no data",
        limits,
    )


def plot_comparison(frames: dict[str, RunResult], out_dir: Path, *, strict: bool = False) -> list[Path]:
    """Overlay several runs: ``comparison_load.png`` (total load) and ``comparison_voltage.png`` (Vmin per step).

    Args:
        frames: run label → `RunResult` (e.g. ``{"no EVs": ..., "uncontrolled": ..., "elasticity-dr": ...}``).
        out_dir: created if needed.
        strict: re-raise an exception from a plot instead of warning and skipping it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not frames:
        return []
    plots = {"comparison_load.png": _comparison_load, "comparison_voltage.png": _comparison_voltage}
    return _run_all(plots, (dict(frames),), out, strict)
