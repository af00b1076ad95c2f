"""Plots of the EVs' batteries in one run: SOC over time (a few EVs and the fleet's distribution) and, when the run has
V2G EVs, what each V2G EV earned by discharging against the battery wear it cost.

The SOC plot reads the recorder's ``soc_evs`` and ``soc_fleet`` tables (SOC at the end of each step, `sim.recorder`);
the V2G plot reads the ``evs`` table (``discharged_kwh``, ``v2g_revenue_usd``, ``degradation_usd``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments.plotting import common as c

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from matplotlib.axes import Axes


def _trajectories(ax: Axes, traj: pd.DataFrame, evs: pd.DataFrame | None, clock: c._Clock) -> None:
    """Each followed EV's SOC while plugged in (from its SOC at plug-in), its target (dashed) and V2G floor (dotted)."""
    from matplotlib.lines import Line2D

    colours = c._group_colours([str(e) for e in traj["ev"].unique()])
    info = evs.set_index("ev") if evs is not None and "ev" in evs else None
    for ev, g in traj.groupby("ev", sort=False):
        g = g.sort_values("step")
        ok = np.isfinite(g["soc"].to_numpy(float))
        t = clock.time_of(g["step"].to_numpy()[ok]) + clock.dt  # SOC at the end of the step
        soc = g["soc"].to_numpy(float)[ok]
        if not len(t):
            continue
        if info is not None and {"plugin_min", "soc_arrival"} <= set(info.columns) and ev in info.index:
            t0 = float(info.at[ev, "plugin_min"]) / 60.0  # the SOC it plugged in with
            if np.isfinite(t0) and t0 < t[0]:
                t, soc = np.r_[t0, t], np.r_[float(info.at[ev, "soc_arrival"]), soc]
        v2g = bool(g["v2g"].iloc[0])
        colour = colours[str(ev)]
        ax.plot(t, soc, color=colour, lw=1.6, marker=".", ms=3, label=f"EV {ev}" + (" (V2G)" if v2g else ""))
        ax.hlines(float(g["soc_target"].iloc[0]), t[0], t[-1], colors=[colour], linestyles="--", lw=1)
        if v2g:
            ax.hlines(float(g["soc_floor"].iloc[0]), t[0], t[-1], colors=[colour], linestyles=":", lw=1.2)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.3", ls="--", lw=1, label="target SOC"),
        Line2D([], [], color="0.3", ls=":", lw=1.2, label="V2G floor"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_ylabel("state of charge [–]")
    ax.set_title("a few EVs (V2G-capable first, then the largest energy need), while plugged in", fontsize=10)


def _bands(ax: Axes, fleet: pd.DataFrame, steps: pd.DataFrame, clock: c._Clock) -> None:
    """Percentile bands of the plugged EVs' SOC per step, and how many EVs are plugged (right axis)."""
    fleet = fleet.sort_values("step")
    t = clock.time_of(fleet["step"].to_numpy()) + clock.dt
    p = {q: c._col(fleet, f"soc_p{q}", np.nan) for q in (5, 25, 50, 75, 95)}
    ax.fill_between(t, p[5], p[95], color="#1f77b4", alpha=0.18, lw=0, label="5–95 %")
    ax.fill_between(t, p[25], p[75], color="#1f77b4", alpha=0.4, lw=0, label="25–75 %")
    ax.plot(t, p[50], color="#1f77b4", lw=1.8, label="median")
    ax.set_ylabel("state of charge [–]")
    if "n_plugged" in steps:
        ax2 = ax.twinx()
        ax2.step(
            *clock.post(c._col(steps, "n_plugged")), where="post", color="0.5", lw=0.8, label="EVs plugged (right)"
        )
        ax2.set_ylabel("EVs plugged in", color="0.4")
        ax2.set_ylim(bottom=0)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=8)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.06, 1.0), fontsize=8)
    ax.set_title("SOC of the EVs plugged in, per step (percentiles over the fleet)", fontsize=10)


def _soc(plt: ModuleType, result: Any, path: Path) -> Path | None:
    """SOC trajectories of the followed EVs (top) and the fleet's SOC percentiles over time (bottom)."""
    steps, traj, fleet = (c._table(result, n) for n in ("steps", "soc_evs", "soc_fleet"))
    if steps is None or traj is None and fleet is None:
        return None
    has_traj = traj is not None and bool(np.isfinite(traj["soc"].to_numpy(float)).any())
    pct = [c._col(fleet, f"soc_p{q}", np.nan) for q in (5, 95)] if fleet is not None else []
    has_fleet = bool(pct) and bool(np.isfinite(pct[0]).any())
    if not has_traj and not has_fleet:  # no EV was ever plugged in
        return None
    clock = c._Clock(steps)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    try:
        if has_traj and traj is not None:
            _trajectories(ax1, traj, c._table(result, "evs"), clock)
        else:
            c._message(ax1, "no EV trajectory recorded")
        if has_fleet and fleet is not None:
            _bands(ax2, fleet, steps.sort_values("step"), clock)
        else:
            c._message(ax2, "no SOC distribution recorded")
        for ax in (ax1, ax2):
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        c._time_axis(ax2, clock)
        fig.suptitle(f"{c._scenario_name(result)}: state of charge at the end of each step", fontsize=12)
        return c._save(fig, path)
    finally:
        plt.close(fig)


def v2g_evs(evs: pd.DataFrame | None) -> pd.DataFrame | None:
    """The V2G-capable EVs that plugged in (those `sim.kpis` averages over), or None when there are none."""
    need = {"v2g", "plugin_min", "v2g_revenue_usd", "degradation_usd", "discharged_kwh"}
    if evs is None or not need <= set(evs.columns):
        return None
    sel = evs[evs["v2g"].astype(bool) & np.isfinite(evs["plugin_min"].to_numpy(float))]
    return sel if len(sel) else None


def _v2g_value(plt: ModuleType, result: Any, path: Path) -> Path | None:
    """Per V2G EV, sorted by net gain: discharge revenue above zero, battery wear below, the net as a line; and
    revenue and wear against the energy discharged."""
    sel = v2g_evs(c._table(result, "evs"))
    if sel is None:
        return None
    rev, wear = sel["v2g_revenue_usd"].to_numpy(float), sel["degradation_usd"].to_numpy(float)
    kwh = sel["discharged_kwh"].to_numpy(float)
    order = np.argsort(rev - wear, kind="stable")[::-1]
    x = np.arange(1, len(sel) + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    try:
        # filled steps, not one bar per EV: a year-long run has tens of thousands of V2G EVs
        ax1.fill_between(x, 0, rev[order], step="mid", color="#2ca02c", alpha=0.6, lw=0,
                         label=f"discharge revenue ({rev.sum():,.2f} \\$)")  # fmt: skip
        ax1.fill_between(x, 0, -wear[order], step="mid", color="#d62728", alpha=0.6, lw=0,
                         label=f"battery wear ({wear.sum():,.2f} \\$)")  # fmt: skip
        ax1.step(x, (rev - wear)[order], where="mid", color="k", lw=1.2, label="net (revenue − wear)")
        ax1.axhline(0, color="k", lw=0.6)
        ax1.set_xlim(0.5, len(sel) + 0.5)
        ax1.set_xlabel("V2G-capable EVs that plugged in, by net gain")
        ax1.set_ylabel("per EV [\\$]")
        ax1.legend(fontsize=8, loc="upper right")
        ax1.grid(alpha=0.3)
        ax1.set_title(f"{int((kwh > 1e-9).sum())} of {len(sel)} discharged", fontsize=10)
        ax2.scatter(kwh, rev, s=10, color="#2ca02c", alpha=0.7, label="revenue")
        ax2.scatter(kwh, wear, s=10, color="#d62728", alpha=0.7, label="wear")
        ax2.set_xlabel("energy discharged, grid side [kWh]")
        ax2.set_ylabel("per EV [\\$]")
        ax2.legend(fontsize=8, loc="upper left")
        ax2.grid(alpha=0.3)
        ax2.set_title("revenue and wear against energy discharged", fontsize=10)
        fig.suptitle(
            f"{c._scenario_name(result)}: V2G per EV — {kwh.sum():,.1f} kWh fed back by {len(sel)} EVs, "
            f"revenue {rev.sum():,.2f} \\$, wear {wear.sum():,.2f} \\$",  # escaped: text between two $ signs is mathtext
            fontsize=12,
        )
        return c._save(fig, path)
    finally:
        plt.close(fig)


#: Drawn beside the standard run plots; each returns None (no file) on a run it does not apply to.
V2G_PLOTS: dict[str, Callable[..., Path | None]] = {"v2g_value.png": _v2g_value}
