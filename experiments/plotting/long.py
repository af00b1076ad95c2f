"""Plots for runs of more than a week, where a time series over every step is a smear: what a day looks like across
the run (daily envelope), which days stand out (calendar of daily peak and voltage minimum) and how often a level is
reached (duration curves). `experiments.plotting.run.plot_run` draws them instead of the step-by-step load, price,
session and SOC plots once a run spans more than `LONG_DAYS` days.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from experiments.plotting import common as c

#: Runs longer than this [days] get the long-horizon plots.
LONG_DAYS = 7.0


def run_days(result: Any) -> float:
    """Length of a run [days] from its steps table (0 when there is none)."""
    steps = c._table(result, "steps")
    if steps is None:
        return 0.0
    clock = c._Clock(steps)
    return (clock.t1 - clock.t0) / 24.0


def _daily(steps: pd.DataFrame) -> tuple[pd.DataFrame, c._Clock]:
    """Steps with their day of the run (0 = the first 24 h), time of day [h] and total demand [kW]."""
    steps = steps.sort_values("step")
    clock = c._Clock(steps)
    out = pd.DataFrame(
        {
            "day": np.floor((clock.t - clock.t0) / 24.0 + 1e-9).astype(int),
            "tod_h": np.round((clock.start_tod + clock.t) % 24.0, 6),
            "total_kw": c._col(steps, "total_load_kw", np.nan)
            if "total_load_kw" in steps
            else c._col(steps, "base_load_kw") + c._col(steps, "ev_load_kw"),
            "ev_kw": c._col(steps, "ev_load_kw"),
            "vmin_pu": c._col(steps, "vmin_pu", np.nan),
            "vmax_pu": c._col(steps, "vmax_pu", np.nan),
        }
    )
    return out, clock


def _days(result: Any) -> pd.DataFrame | None:
    """`_daily` of the result's steps table (None without one)."""
    steps = c._table(result, "steps")
    return None if steps is None else _daily(steps)[0]


def _hhmm(h: float) -> str:
    minutes = int(round(h * 60.0)) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _daily_envelope(plt: ModuleType, result: Any, path: Path) -> Path | None:
    d = _days(result)
    if d is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    try:
        for ax, col, title in zip(axes, ("total_kw", "ev_kw"), ("demand (base + EVs)", "EV load"), strict=True):
            g = d.groupby("tod_h")[col]  # one group per time of day, midnight first
            tod = np.asarray(g.median().index, float)
            x = np.arange(len(tod))
            q = [g.quantile(p).to_numpy() for p in (0.05, 0.5, 0.95)]
            ax.fill_between(x, g.min().to_numpy(), g.max().to_numpy(), color="#1f77b4", alpha=0.15, lw=0,
                            label="min–max over days")  # fmt: skip
            ax.fill_between(x, q[0], q[2], color="#1f77b4", alpha=0.35, lw=0, label="5–95 % of days")
            ax.plot(x, q[1], color="#1f77b4", lw=1.8, label="median day")
            ticks = x[:: max(len(x) // 8, 1)]
            ax.set_xticks(ticks, [_hhmm(tod[i]) for i in ticks])
            ax.set_xlabel("time of day [h]")
            ax.set_ylabel("[kW]")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].legend(loc="upper left", fontsize=8)
        fig.suptitle(f"{c._scenario_name(result)}: the day across {d['day'].nunique()} days (daily envelope)")
        return c._save(fig, path)
    finally:
        plt.close(fig)


def _calendar(plt: ModuleType, result: Any, path: Path) -> Path | None:
    d = _days(result)
    if d is None:
        return None
    daily = d.groupby("day").agg(peak_kw=("total_kw", "max"), vmin_pu=("vmin_pu", "min"))
    n_days = int(daily.index.max()) + 1
    n_weeks = -(-n_days // 7)
    vlo, _ = c._voltage_limits(result)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.22 * n_weeks + 2.5), 5.6), constrained_layout=True)
    try:
        for ax, col, label, cmap in (
            (axes[0], "peak_kw", "daily peak demand [kW]", "viridis"),
            (axes[1], "vmin_pu", "daily minimum voltage [pu]", "magma"),
        ):
            grid = np.full((7, n_weeks), np.nan)  # rows: day of the week of the run, columns: weeks
            for day, v in daily[col].items():
                grid[int(day) % 7, int(day) // 7] = v
            finite = grid[np.isfinite(grid)]
            lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
            im = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-9,
                           interpolation="nearest")  # fmt: skip
            ax.set_yticks(range(7), [f"day {i + 1}" for i in range(7)], fontsize=7)
            ax.set_xlabel("week of the run")
            cb = fig.colorbar(im, ax=ax, fraction=0.04)
            cb.set_label(label)
            if col == "vmin_pu" and len(finite) and lo < vlo:
                ax.set_title(f"{label}: {int((daily[col] < vlo).sum())} day(s) below {vlo:g} pu", fontsize=9)
            else:
                ax.set_title(label, fontsize=9)
        fig.suptitle(f"{c._scenario_name(result)}: {n_days} days (a cell per day)")
        return c._save(fig, path)
    finally:
        plt.close(fig)


def _duration_curves(plt: ModuleType, result: Any, path: Path) -> Path | None:
    d = _days(result)
    if d is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    try:
        for col, label in (("total_kw", "demand (base + EVs)"), ("ev_kw", "EV load")):
            v = np.sort(d[col].to_numpy(float)[np.isfinite(d[col].to_numpy(float))])[::-1]
            axes[0].plot(100.0 * np.arange(1, len(v) + 1) / max(len(v), 1), v, lw=1.6, label=label)
        axes[0].set_xlabel("share of the time at or above [%]")
        axes[0].set_ylabel("[kW]")
        axes[0].set_title("load duration curves")
        axes[0].legend(fontsize=8)
        vlo, vhi = c._voltage_limits(result)
        shares = []
        for col, sign, color, limit, name in (
            ("vmin_pu", 1.0, "#d62728", vlo, "lowest"),
            ("vmax_pu", -1.0, "#9467bd", vhi, "highest"),
        ):
            v = d[col].to_numpy(float)
            v = np.sort(sign * v[np.isfinite(v)]) * sign  # lowest ascending, highest descending
            axes[1].plot(100.0 * np.arange(1, len(v) + 1) / max(len(v), 1), v, lw=1.6, color=color,
                         label=f"{name} bus voltage")  # fmt: skip
            axes[1].axhline(limit, color=color, ls="--", lw=1)
            shares.append(float(np.mean(sign * v < sign * limit)) if len(v) else 0.0)
        axes[1].set_title(f"below {vlo:g} pu {shares[0]:.1%} of the time, above {vhi:g} pu {shares[1]:.1%}")
        axes[1].set_xlabel("share of the time at or beyond [%]")
        axes[1].set_ylabel("[pu]")
        axes[1].legend(fontsize=8)
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.suptitle(f"{c._scenario_name(result)}: duration curves over {d['day'].nunique()} days")
        return c._save(fig, path)
    finally:
        plt.close(fig)


LONG_PLOTS = {
    "daily_envelope.png": _daily_envelope,
    "calendar.png": _calendar,
    "duration_curves.png": _duration_curves,
}
#: Step-by-step plots a long run draws the long-horizon ones instead of.
SHORT_ONLY = ("load_profile.png", "price_ev_load.png", "sessions.png", "soc.png")
