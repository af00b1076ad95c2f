"""Time-series plots of one run (voltage heat map, load by source, price and EV load, line loading) and `plot_run`.

Every function writes its figure (Agg backend, ``DPI`` dots per inch) in the formats of ``outputs.format`` into
``out_dir`` and returns the paths. Plots whose tables are missing or empty (``bus``/``line``/``evs`` can be switched
off; a run can have no EVs) are skipped. A plot that fails for any other reason is skipped with a warning unless
``strict=True``, so a plotting problem never loses the tables of a finished run (`RunResult.write` is all-or-nothing).

Time axes use hours since the start of the run (``time_h``, monotonic even when a day runs noon to noon) and are
labelled with the time of day; runs longer than a day also show the day number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from experiments.plotting import common as c
from experiments.plotting.battery import V2G_PLOTS, _soc
from experiments.plotting.common import (
    _bus_label,
    _bus_ticks,
    _Clock,
    _grid_attr,
    _mark_failed,
    _paper,
    _pivot,
    _scenario_name,
    _table,
    _time_axis,
    _voltage_limits,
    _voltage_summary,
)
from experiments.plotting.evs import _fulfilment, _sessions, _stations
from experiments.plotting.network import _network_map, _voltage_profile

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize

    from sim.result import RunResult


# ------------------------------------------------------------------------------------------------ voltage heat map
def _heatmap_norm(dmin: float, dmax: float) -> tuple[Normalize, str]:
    """Colour limits from the data: diverging around 1 pu when the voltages straddle it, else sequential.

    Returns:
        The norm and the colour bar's label (stating the centre when there is one).
    """
    from matplotlib.colors import Normalize, TwoSlopeNorm

    pad = max(0.02 * (dmax - dmin), 1e-4)
    if dmin < 1.0 < dmax:
        return TwoSlopeNorm(vcenter=1.0, vmin=dmin - pad, vmax=dmax + pad), "voltage magnitude [pu] (white: 1.0 pu)"
    return Normalize(vmin=dmin - pad, vmax=dmax + pad), "voltage magnitude [pu] (colour span: the data)"


def _heatmap_marks(
    ax: Axes, vm: Any, xc: np.ndarray, ids: np.ndarray, limits: tuple[float, float], clock: _Clock
) -> list:
    """Limit contours and the lowest / highest bus-step marked; returns the legend handles."""
    from matplotlib.lines import Line2D

    handles: list[Any] = []
    dmin, dmax = float(vm.min()), float(vm.max())
    for lim, style in zip(limits, ("--", ":")):
        if dmin < lim < dmax and vm.shape[1] > 1 and vm.shape[0] > 1:
            ax.contour(xc, np.arange(len(ids)), vm, levels=[lim], colors="k", linewidths=1.2, linestyles=style)
            handles.append(Line2D([], [], color="k", ls=style, label=f"V = {lim:.3f} pu limit"))
    for arg, marker, word in ((np.ma.argmin, "x", "min"), (np.ma.argmax, "+", "max")):
        b, k = np.unravel_index(int(arg(vm)), vm.shape)
        ax.plot(xc[k], b, marker=marker, color="k", ms=10, mew=2, ls="none")
        value = float(vm[b, k])
        handles.append(
            Line2D(
                [],
                [],
                marker=marker,
                color="k",
                ls="none",
                mew=2,
                label=f"{word} {value:.3f} pu (bus {int(ids[b])}, {clock.tod_label(float(xc[k] - clock.dt / 2))})",
            )
        )
    return handles


def _voltage_heatmap(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
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
    vlo, vhi = _voltage_limits(result)
    norm, cb_label = _heatmap_norm(float(vm.min()), float(vm.max()))
    fig, ax = plt.subplots(figsize=(11, 6), layout="constrained")
    try:
        x0, x1 = t[0], t[-1] + clock.dt
        im = ax.imshow(
            vm,
            aspect="auto",
            cmap=plt.get_cmap("RdBu").with_extremes(bad="0.8"),
            norm=norm,
            interpolation="nearest",
            origin="upper",
            extent=(x0, x1, len(ids) - 0.5, -0.5),
        )
        handles = _heatmap_marks(ax, vm, t + clock.dt / 2, ids, (vlo, vhi), clock)
        n_failed = int((~steps["converged"].to_numpy(bool)).sum()) if "converged" in steps else 0
        if n_failed:  # their voltages are NaN: drawn in the colour map's "bad" grey
            handles.append(Patch(facecolor="0.8", label=f"power flow failed ({n_failed} steps, not in the KPIs)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
        cb = fig.colorbar(im, ax=ax, pad=0.02)
        cb.set_label(cb_label)
        cb.formatter.set_useOffset(False)
        for lim in (vlo, vhi):
            if (
                float(norm.vmin or 0.0) <= lim <= float(norm.vmax or 0.0)
            ):  # a limit outside the data's span would stretch the colours
                cb.ax.axhline(lim, color="k", ls="--", lw=1)
        _time_axis(ax, clock, x0, x1)
        _bus_ticks(ax, ids, "y")
        ax.set_ylabel(_bus_label(_paper(result)))
        summary = _voltage_summary(vm, ids, vlo, vhi, clock.dt * 60.0)
        ax.set_title(f"{_scenario_name(result)}: bus voltage [pu]\n{summary}", fontsize=10)
        return c._save(fig, path)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ load and price
def _supply(steps: Any) -> list[tuple[str, np.ndarray, str]]:
    """Supply by source [kW] per step (label, values, colour); sources that never deliver are left out."""
    sources = [
        ("substation import", np.clip(c._col(steps, "grid_p_kw"), 0, None), "#7f7f7f"),
        ("DG", c._col(steps, "dg_kw"), "#d62728"),
        ("PV", c._col(steps, "pv_kw"), "#ffbf00"),
        ("wind", c._col(steps, "wind_kw"), "#2ca02c"),
        ("other generation", c._col(steps, "other_gen_kw"), "#8c564b"),
        ("network generators", c._col(steps, "gen_kw"), "#9467bd"),
    ]
    return [s for s in sources if np.nanmax(np.abs(np.nan_to_num(s[1]))) > 1e-9 or s[0] == "substation import"]


def _stack_supply(ax: Axes, steps: Any, clock: _Clock) -> np.ndarray:
    """Stacked supply areas and the substation export below zero; returns the export [kW] per step (≤ 0)."""
    dt_h = clock.dt
    bottom = np.zeros(len(steps))
    for label, y, colour in _supply(steps):
        y = np.nan_to_num(y)
        x, lo = clock.post(bottom)
        _, hi = clock.post(bottom + y)
        ax.fill_between(
            x, lo, hi, step="post", color=colour, alpha=0.55, lw=0, label=f"{label} ({np.sum(y) * dt_h:,.0f} kWh)"
        )
        bottom = bottom + y
    export = np.clip(c._col(steps, "grid_p_kw"), None, 0)
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
    return export


def _load_profile(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    steps = _table(result, "steps")
    if steps is None:
        return None
    steps = steps.sort_values("step")
    clock = _Clock(steps)
    total = c._col(steps, "total_load_kw", np.nan)
    if "total_load_kw" not in steps:
        total = c._col(steps, "base_load_kw") + c._col(steps, "ev_load_kw")
    base = c._col(steps, "base_load_kw", np.nan)
    ev = c._col(steps, "ev_load_kw")
    e_total = float(np.nansum(total) * clock.dt)
    e_ev = float(np.nansum(ev) * clock.dt)
    share = e_ev / e_total if e_total > 0 else 0.0

    fig, ax = plt.subplots(figsize=(11, 5.5))
    try:
        export = _stack_supply(ax, steps, clock)
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
            orig = c._col(steps, "base_load_orig_kw")
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
        return c._save(fig, path)
    finally:
        plt.close(fig)


def _ev_areas(ax2: Axes, steps: Any, clock: _Clock) -> float:
    """EV load delivered, requested and DSO-curtailed on the right axis; returns the curtailed energy [kWh]."""
    ev = c._col(steps, "ev_load_kw")
    req = c._col(steps, "ev_requested_kw", np.nan)
    curt = c._col(steps, "ev_curtailed_kw")
    e_curt = float(np.nansum(curt) * clock.dt)  # DSO curtailment only; station caps and full batteries are not
    ax2.fill_between(
        *clock.post(ev),
        step="post",
        color="#1f77b4",
        alpha=0.35,
        lw=0,
        label=f"EV load delivered ({np.nansum(ev) * clock.dt:,.0f} kWh)",
    )
    if e_curt > 1e-9 * clock.dt and np.all(np.isfinite(req)):
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
            label=f"scheduled, not delivered (DSO curtailed {e_curt:,.1f} kWh)",
        )
    if "curtailed" in steps and steps["curtailed"].astype(bool).any():
        x, flag = clock.post(steps["curtailed"].astype(bool).to_numpy(float))
        ax2.fill_between(
            x,
            0,
            1,
            where=flag > 0.5,
            step="post",
            transform=ax2.get_xaxis_transform(),
            color="#d62728",
            alpha=0.08,
            lw=0,
            label="steps with DSO curtailment",
        )
    return e_curt if e_curt > 1e-9 * clock.dt else 0.0


def _price_ev_load(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    steps = _table(result, "steps")
    if steps is None:
        return None
    steps = steps.sort_values("step")
    clock = _Clock(steps)
    price = c._col(steps, "price_usd_per_mwh", np.nan)
    ev = c._col(steps, "ev_load_kw")

    fig, ax = plt.subplots(figsize=(11, 5.5), layout="constrained")
    try:
        ax2 = ax.twinx()
        ax.set_zorder(ax2.get_zorder() + 1)  # price line on top of the EV area
        ax.patch.set_visible(False)
        e_curt = _ev_areas(ax2, steps, clock)
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
            + (f", DSO curtailed {e_curt:,.1f} kWh" if e_curt else ""),
            fontsize=11,
        )
        return c._save(fig, path)
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
        return c._save(fig, path)
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
    "network_map.png": _network_map,
    "sessions.png": _sessions,
    "soc.png": _soc,
}
RUN_FILES = tuple(RUN_PLOTS)


def plot_run(
    result: RunResult, out_dir: Path, *, strict: bool = False, formats: Sequence[str] | None = None
) -> list[Path]:
    """Write the standard plots of one run into ``out_dir`` and return their paths (every format).

    Files (each skipped when its tables are missing or empty): ``voltage_heatmap`` (bus × time),
    ``load_profile`` (supply by source, demand, EV share), ``price_ev_load`` (price vs EV load, curtailment),
    ``line_loading`` (per-line distribution vs limit), ``stations`` (utilisation, waiting), ``fulfilment`` (SOC at
    departure, energy fulfilment), ``voltage_profile`` (voltage along the feeder, per branch), ``network_map``
    (buses by worst voltage, lines by peak loading, stations), ``sessions`` (Gantt of the charging sessions),
    ``soc`` (a few EVs' SOC trajectories with target and V2G floor, the fleet's SOC percentiles over time). A run
    of more than `experiments.plotting.long.LONG_DAYS` days draws ``daily_envelope``, ``calendar`` and
    ``duration_curves`` instead of ``load_profile``, ``price_ev_load``, ``sessions`` and ``soc``. A run with V2G EVs
    also draws ``v2g_value`` (revenue vs battery wear per V2G EV; not in `RUN_FILES`, which a run without V2G
    writes).

    Args:
        result: a `RunResult` (or anything with ``tables``, ``kpis`` and ``scenario``).
        out_dir: created if needed.
        strict: re-raise an exception from a plot instead of warning and skipping it.
        formats: file formats (png, svg, pdf); default the scenario's ``outputs.format``.
    """
    from experiments.plotting.long import LONG_DAYS, LONG_PLOTS, SHORT_ONLY, run_days

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = RUN_PLOTS
    if run_days(result) > LONG_DAYS:  # a step-by-step series over weeks is a smear: the day, the days, durations
        plots = {k: f for k, f in RUN_PLOTS.items() if k not in SHORT_ONLY} | LONG_PLOTS
    plots = plots | V2G_PLOTS  # each draws only on a run it applies to
    with c.formats(formats or c.scenario_formats(getattr(result, "scenario", None))):
        return c._run_all(plots, (result,), out, strict)
