"""Helpers of the study plots: names and labels of parameters and KPIs, number formats, panel grids, levels.

Inputs are the frames of a study store (see `experiments.store` and `experiments.stats.summarize`):

* ``reps``: one row per replication with ``point``, ``rep``, ``status`` ("ok"/"failed"), ``param.<key>`` and
  ``kpi.<name>`` columns. Only rows with status "ok" are used.
* ``summary``: one row per (point, KPI) with ``point``, ``label``, the ``param.<key>`` columns, ``kpi`` (name without
  prefix), ``n``, ``n_failed``, ``mean``, ``std``, ``mcse``, ``ci_low``, ``ci_high`` (95 % CI of the mean).
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments.plotting import common

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PARAM_PREFIX = "param."
KPI_PREFIX = "kpi."
DEFAULT_HEADLINE = ["peak_load_kw", "energy_losses_kwh", "vdi_pu", "vri_pu", "total_cost_usd", "energy_fulfilment"]
MAX_PANELS = 6

# KPI name suffix → unit (longest suffixes first)
_UNITS = (
    ("_usd_per_kwh", "$/kWh"),
    ("_usd_per_mwh", "$/MWh"),
    ("_usd_per_h", "$/h"),
    ("_bus_minutes", "bus·min"),
    ("_kwh", "kWh"),
    ("_kw2", "kW²"),
    ("_kvar", "kvar"),
    ("_kw", "kW"),
    ("_pu", "pu"),
    ("_usd", "$"),
    ("_percent", "%"),
    ("_pct", "%"),
    ("_minutes", "min"),
    ("_min", "min"),
    ("_h", "h"),
    ("_s", "s"),
)


# KPIs and parameters whose names alone do not read well: name → label with unit
_KPI_LABELS = {
    "vdi_pu": "voltage deviation index VDI [pu]",
    "vri_pu": "voltage range index VRI [pu]",
    "vmin_pu": "lowest bus voltage [pu]",
    "vmax_pu": "highest bus voltage [pu]",
    "energy_fulfilment": "energy fulfilment [-]",
    "detection_rate": "detection rate [-]",
    "false_alarm_rate": "false-alarm rate [-]",
    "se_detection_rate": "χ² detection rate [-]",
    "se_false_alarm_rate": "χ² false-alarm rate [-]",
    "load_factor": "load factor [-]",
}
_PARAM_LABELS = {
    "dg.cost_scale": "DG cost scale [× base cost]",
    "dr.dr_max": "largest DR share of a load [-]",
    "dr.participation": "share of customers in DR [-]",
    "ev.n": "number of EVs [-]",
    "fleet.n_evs": "number of EVs [-]",
    "market.mechanism": "market mechanism",
    "market.params.elasticity-dr.dr_max": "largest DR share of a load [-]",
    "market.params.elasticity-dr.participation": "share of customers in DR [-]",
}


# --------------------------------------------------------------------------------------------------- helpers
def _safe(text: str) -> str:
    """A filesystem-safe file name part: only letters, digits, '.', '_' and '-'."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return s or "x"


def _name(col: str) -> str:
    """Displayed name of a ``param.``/``kpi.`` column (prefix dropped)."""
    for prefix in (PARAM_PREFIX, KPI_PREFIX):
        if col.startswith(prefix):
            return col[len(prefix) :]
    return col


def _short(param: str) -> str:
    """File-name form of a parameter: its last two dotted parts, filesystem-safe."""
    return _safe(".".join(_name(param).split(".")[-2:]))


def _kpi_name(kpi: str) -> str:
    return kpi[len(KPI_PREFIX) :] if kpi.startswith(KPI_PREFIX) else kpi


def _kpi_label(kpi: str) -> str:
    """Readable KPI label with its unit, e.g. ``peak_load_kw`` → ``peak load [kW]``; ``[-]`` when dimensionless."""
    k = _kpi_name(kpi)
    if k in _KPI_LABELS:
        return _KPI_LABELS[k]
    for suffix, unit in _UNITS:
        if k.endswith(suffix) and len(k) > len(suffix):
            return f"{k[: -len(suffix)].replace('_', ' ')} [{unit}]"
    return f"{k.replace('_', ' ')} [-]"


def _param_label(param: str) -> str:
    """Readable parameter label with its unit (``dr.dr_max`` → ``largest DR share of a load [-]``); unknown
    parameters read as their last dotted part with the unit of its suffix."""
    p = _name(param)
    if p in _PARAM_LABELS:
        return _PARAM_LABELS[p]
    last = p.split(".")[-1]
    for suffix, unit in _UNITS:
        if last.endswith(suffix) and len(last) > len(suffix):
            return f"{last[: -len(suffix)].replace('_', ' ')} [{unit}] ({p})"
    return f"{last.replace('_', ' ')} ({p})"


def _plain(ax: Axes) -> None:
    """No offset (``+1.01``) or scientific multiplier on the axes: tick labels show the values themselves."""
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        fmt = axis.get_major_formatter()
        if isinstance(fmt, ScalarFormatter):
            fmt.set_useOffset(False)
            fmt.set_scientific(False)


def _pcol(df: pd.DataFrame, param: str) -> str | None:
    """The column of ``param`` (given with or without the ``param.`` prefix), or None."""
    for c in (param, f"{PARAM_PREFIX}{param}"):
        if c in df.columns and c.startswith(PARAM_PREFIX):
            return c
    return None


def _fmt(v: Any, digits: int = 4) -> str:
    """A number with about ``digits`` significant digits (whole numbers from 1000 on, thousands separated)."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return "n/a"
    a = abs(v)
    if a == 0:
        return "0"
    if a < 1e-6:
        return f"{v:.{digits - 1}e}"
    if a >= 10**digits:
        return f"{v:,.0f}"
    v = float(f"{v:.{digits}g}")  # round first: 0.000999 at 2 digits → 0.0010, not 0.00100
    a = abs(v)
    decimals = max(0, digits - 1 - math.floor(math.log10(a)))
    return f"{v:,.{decimals}f}"


def _fmt_value(v: Any) -> str:
    """A parameter value for ticks and legends."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (float, int, np.number)):
        return f"{float(v):g}"
    return str(v)


def _numeric(values: pd.Series) -> bool:
    """True when every non-missing value is a number (not a bool)."""
    v = values.dropna()
    if v.empty or v.map(lambda x: isinstance(x, (bool, np.bool_))).any():
        return False
    return bool(pd.to_numeric(v, errors="coerce").notna().all())


def _levels(values: pd.Series) -> list[Any]:
    """Distinct non-missing values: sorted when numeric, else in order of first appearance (design order)."""
    v = values.dropna()
    if _numeric(v):
        return sorted(set(pd.to_numeric(v).astype(float)))
    return list(dict.fromkeys(v.astype(str)))


def _as_level(values: pd.Series) -> pd.Series:
    """Values comparable with `_levels` (floats when numeric, else str)."""
    return pd.to_numeric(values).astype(float) if _numeric(values) else values.astype(str)


def _empty(df: Any) -> bool:
    return df is None or not isinstance(df, pd.DataFrame) or df.empty


def _grid(n: int) -> tuple[int, int]:
    ncols = 1 if n == 1 else 2 if n in (2, 4) else 3
    return math.ceil(n / ncols), ncols


def _panels(plt: ModuleType, n: int, w: float = 4.8, h: float = 3.7, extra_h: float = 0.9) -> tuple[Figure, list[Axes]]:
    nrows, ncols = _grid(n)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(w * ncols + 0.4, h * nrows + extra_h), layout="constrained", squeeze=False
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _cap(items: list[str], what: str) -> list[str]:
    if len(items) > MAX_PANELS:
        warnings.warn(
            f"{what}: only the first {MAX_PANELS} of {len(items)} KPIs are plotted", RuntimeWarning, stacklevel=3
        )
    return items[:MAX_PANELS]


def _save(fig: Figure, path: Path) -> Path:
    """Save in the current formats (`experiments.plotting.common.formats`); returns the first file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files = common._files(path)
    for f in files:
        fig.savefig(f, dpi=common.DPI)
    return files[0]


def _summary_rows(summary: pd.DataFrame, baseline_label: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(design points, baseline points) of a summary."""
    lab = summary["label"].astype(str) if "label" in summary else pd.Series("", index=summary.index)
    return summary[lab != baseline_label], summary[lab == baseline_label]


def _n_text(rows: pd.DataFrame) -> str:
    """'n = 20 replications per point' (or a range), plus failed replications when any."""
    if "n" not in rows or rows.empty:
        return ""
    n = pd.to_numeric(rows["n"], errors="coerce").dropna()
    if n.empty:
        return ""
    lo, hi = int(n.min()), int(n.max())
    s = f"n = {lo} replications per point" if lo == hi else f"n = {lo}–{hi} replications per point"
    if "n_failed" in rows and "point" in rows:
        failed = int(pd.to_numeric(rows.drop_duplicates("point")["n_failed"], errors="coerce").fillna(0).sum())
        if failed:
            s += f", {failed} failed excluded"
    return s
