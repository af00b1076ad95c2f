"""Shared pieces of every plot: the Agg backend, output formats, the run's time axis, tables and bus labels.

Every figure is saved through `_save`, which writes one file per format of the current plotting call
(``outputs.format`` of the scenario: png, svg and/or pdf; `formats` sets them for a block of code). Functions take
the ``.png`` path of a plot and the other formats are written beside it with their own suffix.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
FORMATS = ("png", "svg", "pdf")
_FORMATS: ContextVar[tuple[str, ...]] = ContextVar("plot_formats", default=("png",))


@contextmanager
def formats(fmts: Sequence[str] | None) -> Iterator[tuple[str, ...]]:
    """Write every figure saved inside the block in the given formats (None or empty: png only).

    Raises:
        ValueError: a format other than png, svg or pdf (one line naming it and the allowed ones).
    """
    chosen = tuple(dict.fromkeys(fmts or ("png",)))
    bad = [f for f in chosen if f not in FORMATS]
    if bad:
        raise ValueError(f"outputs.format: unknown {bad}; allowed: {', '.join(FORMATS)}")
    token = _FORMATS.set(chosen)
    try:
        yield chosen
    finally:
        _FORMATS.reset(token)


def scenario_formats(scenario: Any) -> tuple[str, ...]:
    """``outputs.format`` of a scenario (or of its JSON dump), png when it has none."""
    out = scenario.get("outputs", {}) if isinstance(scenario, dict) else getattr(scenario, "outputs", None)
    fmts = out.get("format") if isinstance(out, dict) else getattr(out, "format", None)
    return tuple(fmts or ("png",))


def _files(path: Path) -> list[Path]:
    """The files a plot saved as ``path`` (a .png name) is written to, one per current format."""
    return [Path(path).with_suffix(f".{f}") for f in _FORMATS.get()]


def save_figure(fig: Any, path: Path, **savefig_kw: Any) -> list[Path]:
    """Save ``fig`` (``path`` named .png) in every current format (`formats`); returns the files written."""
    files = _files(path)
    for f in files:
        fig.savefig(f, **savefig_kw)
    return files


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
    """Save ``fig`` in every current format (``path`` names the png; others get their suffix); returns the first."""
    if fig.get_layout_engine() is None:  # figures with a legend below the axes use constrained layout
        fig.tight_layout()
    files = _files(path)
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(f, dpi=DPI)
    return files[0]


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


def _run_all(plots: dict[str, Callable[..., Path | None]], args: tuple, out: Path, strict: bool) -> list[Path]:
    """Draw each plot (file name → function); a failing plot is skipped with a warning unless ``strict``.

    Returns:
        Every written file, all formats.
    """
    plt = _pyplot()
    written: list[Path] = []
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
            written += _files(p)
    return written


def _voltage_limits(result: Any) -> tuple[float, float]:
    """The scenario's voltage band (v_min_pu, v_max_pu)."""
    return float(_grid_attr(result, "v_min_pu", 0.95)), float(_grid_attr(result, "v_max_pu", 1.05))


def _voltage_summary(vm: Any, ids: np.ndarray, vlo: float, vhi: float, dt_min: float) -> str:
    """'Vmin 0.913 pu (bus 17), Vmax 1.077 pu (bus 0); 4,020 bus·min above 1.05 pu, none below 0.95 pu'.

    Args:
        vm: bus × step voltages [pu] (NaN for steps without a power flow).
        ids: pandapower indices of the rows.
        dt_min: step length [min]; the counts use the KPIs' 1e-6 pu tolerance.
    """
    v = np.ma.masked_invalid(np.asarray(vm, float))
    if v.count() == 0:
        return "no voltages"
    b_lo = int(np.unravel_index(int(np.ma.argmin(v)), v.shape)[0])
    b_hi = int(np.unravel_index(int(np.ma.argmax(v)), v.shape)[0])
    data = np.ma.filled(v, np.nan)
    under = float(np.sum(data < vlo - 1e-6) * dt_min)
    over = float(np.sum(data > vhi + 1e-6) * dt_min)

    def part(x: float, side: str, lim: float) -> str:
        return f"{x:,.0f} bus·min {side} {lim:.2f} pu" if x else f"none {side} {lim:.2f} pu"

    return (
        f"Vmin {float(v.min()):.3f} pu (bus {int(ids[b_lo])}), Vmax {float(v.max()):.3f} pu (bus {int(ids[b_hi])}); "
        f"{part(over, 'above', vhi)}, {part(under, 'below', vlo)}"
    )


def _station_names(result: Any) -> dict[int, str]:
    """Station number → its name (the number as text when the stations table is missing)."""
    st = _table(result, "stations")
    if st is None or "station" not in st:
        return {}
    names = st["name"] if "name" in st else st["station"]
    return {int(s): str(n) for s, n in zip(st["station"], names)}
