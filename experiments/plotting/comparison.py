"""Several runs side by side: total load and the lowest and highest bus voltage per step (`plot_comparison`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments.plotting import common as c
from experiments.plotting.common import _Clock, _grid_attr, _scenario_name, _table, _time_axis

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from sim.result import RunResult

COMPARISON_FILES = ("comparison_load.png", "comparison_voltage.png")


def _common_name(frames: dict[str, Any]) -> str:
    names = [_scenario_name(r) for r in frames.values()]
    prefix = os.path.commonprefix(names).rstrip("-_ ") if names else ""
    return prefix or "runs"


def _total_load(s: pd.DataFrame) -> np.ndarray | None:
    if "total_load_kw" in s:
        return s["total_load_kw"].to_numpy(float)
    if "base_load_kw" in s:
        return s["base_load_kw"].to_numpy(float) + c._col(s, "ev_load_kw")
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
    legend: Callable[[np.ndarray, np.ndarray | None], str],
    limits: Callable[[Any], list[tuple[float, str]]],
    second: Callable[[pd.DataFrame], np.ndarray | None] | None = None,
    second_label: str = "",
) -> Path | None:
    """One step line per run of ``values`` (and dotted ``second`` values), with horizontal limit lines."""
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
        for i, (name, r, clock, y) in enumerate(runs):
            y2 = second(r.tables["steps"].sort_values("step")) if second is not None else None
            ax.step(*clock.post(y), where="post", lw=1.6, color=f"C{i % 10}", label=f"{name} ({legend(y, y2)})")
        seen = set()
        for _, r, _, _ in runs:
            for lim, lab in limits(r):
                if lim not in seen:
                    ax.axhline(lim, color="k", ls="--", lw=1.1, label=lab)
                    seen.add(lim)
        if second is not None:  # the upper envelope, dotted in the run's colour
            for i, (name, r, clock, _) in enumerate(runs):
                y2 = second(r.tables["steps"].sort_values("step"))
                if y2 is not None:
                    ax.step(*clock.post(y2), where="post", lw=1.2, ls=":", color=f"C{i % 10}", label=f"_{name}")
            ax.plot([], [], ls=":", color="k", label=second_label)
        clocks = [k for _, _, k, _ in runs]
        _time_axis(ax, clocks[0], min(k.t0 for k in clocks), max(k.t1 for k in clocks))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title(f"{_common_name(frames)}: {title}", fontsize=11)
        return c._save(fig, path)
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
        lambda y, _: f"peak {np.nanmax(y):,.0f} kW" if np.isfinite(y).any() else "no data",
        lambda r: [],
    )


def _vmax(s: pd.DataFrame) -> np.ndarray | None:
    return s["vmax_pu"].to_numpy(float) if "vmax_pu" in s else None


def _comparison_voltage(plt: ModuleType, frames: dict[str, RunResult], path: Path) -> Path | None:
    def limits(r: Any) -> list[tuple[float, str]]:
        lo, hi = float(_grid_attr(r, "v_min_pu", 0.95)), float(_grid_attr(r, "v_max_pu", 1.05))
        return [(lo, f"v_min limit {lo:.2f} pu"), (hi, f"v_max limit {hi:.2f} pu")]

    def legend(y: np.ndarray, y2: np.ndarray | None) -> str:
        if not np.isfinite(y).any():
            return "no data"
        top = f", max {np.nanmax(y2):.3f} pu" if y2 is not None and np.isfinite(y2).any() else ""
        return f"min {np.nanmin(y):.3f} pu{top}"

    return _comparison_series(
        plt,
        frames,
        path,
        _vmin,
        "bus voltage [pu]",
        "lowest (solid) and highest (dotted) bus voltage per step",
        legend,
        limits,
        second=_vmax,
        second_label="highest bus voltage (dotted)",
    )


def plot_comparison(
    frames: dict[str, RunResult], out_dir: Path, *, strict: bool = False, formats: Sequence[str] | None = None
) -> list[Path]:
    """Overlay several runs: ``comparison_load`` (total load) and ``comparison_voltage`` (Vmin and Vmax per step).

    Args:
        frames: run label → `RunResult` (e.g. ``{"no EVs": ..., "uncontrolled": ..., "elasticity-dr": ...}``).
        out_dir: created if needed.
        strict: re-raise an exception from a plot instead of warning and skipping it.
        formats: file formats (png, svg, pdf); default the first run's ``outputs.format``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not frames:
        return []
    plots = {"comparison_load.png": _comparison_load, "comparison_voltage.png": _comparison_voltage}
    first = next(iter(frames.values()))
    with c.formats(formats or c.scenario_formats(getattr(first, "scenario", None))):
        return c._run_all(plots, (dict(frames),), out, strict)
