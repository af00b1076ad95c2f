"""Plots of the EVs and stations of one run: utilisation and waiting, charging outcome per EV, session Gantt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments.plotting import common as c
from experiments.plotting.common import _Clock, _group_colours, _message, _scenario_name, _table, _time_axis

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from matplotlib.axes import Axes

    from sim.result import RunResult


def _utilisation_panel(ax1: Axes, st: pd.DataFrame | None) -> None:
    """Port utilisation per station, coloured by station group."""
    from matplotlib.patches import Patch

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
        handles = []
        for g, colour in colours.items():
            sel = order["_g"] == g
            mean_u = float(np.nanmean(order.loc[sel, "utilisation"])) * 100 if sel.any() else float("nan")
            handles.append(Patch(color=colour, label=f"{g} (mean {mean_u:.0f} %, {int(sel.sum())} stations)"))
        ax1.legend(handles=handles, fontsize=8, loc="upper right")
        ax1.set_ylabel("port utilisation [%]")
        ax1.set_ylim(0, max(100.0, float(np.nanmax(u)) if np.any(np.isfinite(u)) else 100.0) * 1.15)
        ax1.grid(axis="y", alpha=0.3)
        ax1.set_title("utilisation (plugged time / port time)", fontsize=10)
    else:
        _message(ax1, "no station table")


def _wait_panel(ax2: Axes, result: Any, evs: pd.DataFrame | None, ss: pd.DataFrame | None) -> None:
    """Waiting times before plug-in, or the queue over time when nobody waited."""
    from matplotlib.ticker import MaxNLocator

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
        ax2.set_title(f"waiting time: {len(wait)} of {n_ev} EVs waited ({len(wait) / max(n_ev, 1):.0%})", fontsize=10)
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


def _stations(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    st = _table(result, "stations")
    evs = _table(result, "evs")
    ss = _table(result, "station_step")
    if st is None and evs is None:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    try:
        _utilisation_panel(ax1, st)
        _wait_panel(ax2, result, evs, ss)
        ax2.grid(alpha=0.3)
        fig.suptitle(f"{_scenario_name(result)}: charging stations", fontsize=12)
        return c._save(fig, path)
    finally:
        plt.close(fig)


def _soc_panel(ax1: Axes, sel: pd.DataFrame, groups: pd.Series, colours: dict[str, Any], note: str) -> None:
    """Stacked histogram of the SOC at departure per group, with the target SOC."""
    from matplotlib.ticker import MaxNLocator

    names = list(colours)
    soc = sel["soc_end"].to_numpy(float)
    tgt = c._col(sel, "soc_target", np.nan)
    finite = np.isfinite(soc)
    if finite.any():
        hi = max(1.0, float(np.nanmax(soc)))
        bins = np.linspace(0, hi + 1e-9, 26)
        ax1.hist(
            [soc[(groups == g).to_numpy() & finite] for g in names],
            bins=bins.tolist(),
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


def _fulfilment_panel(ax2: Axes, sel: pd.DataFrame, groups: pd.Series, colours: dict[str, Any]) -> None:
    """Stacked histogram of delivered / needed energy per group."""
    from matplotlib.ticker import MaxNLocator

    names = list(colours)
    if "fulfilment" in sel:
        f = sel["fulfilment"].to_numpy(float)
        fin = np.isfinite(f)
        if fin.any():
            hi = max(1.0, float(np.nanmax(f)))
            bins = np.linspace(0, hi + 1e-9, 21)
            ax2.hist(
                [f[(groups == g).to_numpy() & fin] for g in names],
                bins=bins.tolist(),
                stacked=True,
                color=[colours[g] for g in names],
                label=names,
                alpha=0.8,
            )
            mean = float(np.mean(f[fin]))
            ax2.axvline(mean, color="k", lw=1.3, label=f"mean {mean:.2f}")
            full_share = float(np.mean(f[fin] >= 0.99))
            e_need = float(np.nansum(c._col(sel, "e_need_kwh")))
            e_del = float(np.nansum(np.clip(c._col(sel, "e_delivered_kwh"), 0, None)))
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


def _fulfilment(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    evs = _table(result, "evs")
    if evs is None or "soc_end" not in evs:
        return None
    dep = evs["departs_in_horizon"].astype(bool) if "departs_in_horizon" in evs else pd.Series(True, index=evs.index)
    sel, note = (evs[dep], "EVs departing within the run") if dep.any() else (evs, "all EVs (none departed in run)")
    groups = sel["group"].astype(str) if "group" in sel else pd.Series(["all"] * len(sel), index=sel.index)
    colours = _group_colours(groups)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    try:
        _soc_panel(ax1, sel, groups, colours, note)
        _fulfilment_panel(ax2, sel, groups, colours)
        fig.suptitle(f"{_scenario_name(result)}: charging outcome per EV", fontsize=12)
        return c._save(fig, path)
    finally:
        plt.close(fig)


def _lanes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Port lane of each interval so that intervals of one lane never overlap (greedy, in order of start)."""
    lane = np.zeros(len(start), int)
    free_at: list[float] = []
    for i in np.argsort(start, kind="stable"):
        j = next((k for k, t in enumerate(free_at) if t <= start[i] + 1e-9), len(free_at))
        if j == len(free_at):
            free_at.append(0.0)
        free_at[j] = end[i]
        lane[i] = j
    return lane


def _session_rows(evs: pd.DataFrame, t_end_h: float) -> tuple[pd.DataFrame, list[tuple[float, int]]]:
    """One row per EV that reached a station: plug-in and unplug [h since start] (unplug = end of run while still
    plugged), arrival [h], station, group and its y position (station band + port lane); and the (y, station) of
    each station band's label."""
    ev = evs[np.isfinite(evs["arrival_min"].to_numpy(float)) & (evs["arrival_min"] / 60.0 < t_end_h)].copy()
    ev["t_arr"] = ev["arrival_min"].to_numpy(float) / 60.0
    ev["t_in"] = ev["plugin_min"].to_numpy(float) / 60.0
    out = ev["unplug_min"].to_numpy(float) / 60.0
    ev["t_out"] = np.where(np.isfinite(out), np.minimum(out, t_end_h), t_end_h)
    left = np.minimum(ev["departure_min"].to_numpy(float) / 60.0, t_end_h)  # a never-plugged EV waits until it leaves
    ev["t_wait_end"] = np.where(np.isfinite(ev["t_in"]), ev["t_in"], left)
    ev["group"] = ev["group"].astype(str) if "group" in ev else "all"
    ev["y"] = 0.0
    base = 0.0
    ticks = []
    for s, g in ev.groupby("station", sort=True):
        plugged = np.isfinite(g["t_in"].to_numpy(float))
        lane = np.zeros(len(g), int)
        lane[plugged] = _lanes(g["t_in"].to_numpy(float)[plugged], g["t_out"].to_numpy(float)[plugged])
        ev.loc[g.index, "y"] = base + lane
        ticks.append((base + (max(lane.max(initial=0), 0)) / 2, int(s)))
        base += lane.max(initial=0) + 1.6  # a gap between stations
    return ev, ticks


def _sessions(plt: ModuleType, result: RunResult, path: Path) -> Path | None:
    """Gantt chart of the charging sessions: one bar per plugged-in EV (plug-in → unplug), one lane per port in use,
    grouped by station, coloured by fleet group; waiting before plug-in drawn as a thin grey bar."""
    evs, steps = _table(result, "evs"), _table(result, "steps")
    if evs is None or steps is None or "plugin_min" not in evs:
        return None
    clock = _Clock(steps)
    ev, ticks = _session_rows(evs, clock.t1)
    if ev.empty:
        return None
    plugged = ev[np.isfinite(ev["t_in"].to_numpy(float))]
    waited = ev[ev["t_wait_end"] - ev["t_arr"] > 1e-9]
    colours = _group_colours(ev["group"])
    names = c._station_names(result)
    fig, ax = plt.subplots(figsize=(12, min(3.0 + 0.22 * (ev["y"].max() + 1), 18.0)), layout="constrained")
    try:
        ax.barh(
            waited["y"],
            waited["t_wait_end"] - waited["t_arr"],
            left=waited["t_arr"],
            height=0.25,
            color="0.55",
            label=f"waiting for a port ({len(waited)} EVs)",
        )
        ax.barh(
            plugged["y"],
            plugged["t_out"] - plugged["t_in"],
            left=plugged["t_in"],
            height=0.75,
            color=[colours[g] for g in plugged["group"]],
            edgecolor="k",
            linewidth=0.3,
            label=f"plugged in ({len(plugged)} sessions)",
        )
        from matplotlib.patches import Patch

        handles = [Patch(color=col, label=f"plugged in: {g}") for g, col in colours.items()]
        if len(waited):
            handles.insert(0, Patch(color="0.55", label=f"waiting for a port ({len(waited)} EVs)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
        every = max(1, len(ticks) // 40 + 1)
        ax.set_yticks(
            [t for t, _ in ticks[::every]],
            [names.get(s, str(s)) for _, s in ticks[::every]],
            fontsize=7 if len(ticks) > 15 else 9,
        )
        ax.set_ylim(ev["y"].max() + 1, -1)
        ax.set_ylabel("station (one lane per port in use)")
        _time_axis(ax, clock)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(
            f"{_scenario_name(result)}: charging sessions per station\n{len(plugged)} sessions at {len(ticks)} "
            f"stations; {len(waited)} of {len(ev)} EVs waited before plug-in",
            fontsize=11,
        )
        return c._save(fig, path)
    finally:
        plt.close(fig)
