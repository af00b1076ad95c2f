"""Plots of a stored study: Monte Carlo convergence, sweep responses, one-at-a-time tornados, two-parameter heatmaps.

Inputs are the frames of a study store (see `experiments.store` and `experiments.stats.summarize`):

* ``reps``: one row per replication with ``point``, ``rep``, ``status`` ("ok"/"failed"), ``param.<key>`` and
  ``kpi.<name>`` columns. Only rows with status "ok" are used.
* ``summary``: one row per (point, KPI) with ``point``, ``label``, the ``param.<key>`` columns, ``kpi`` (name without
  prefix), ``n``, ``n_failed``, ``mean``, ``std``, ``mcse``, ``ci_low``, ``ci_high`` (95 % CI of the mean).

Every function writes PNG files (Agg backend, ``DPI`` dots per inch) into ``out_dir``, closes its figures and returns
the written paths; empty or unusable inputs give ``[]``. Parameter and KPI names may be given with or without their
``param.`` / ``kpi.`` prefix; the displayed names drop it. File names are filesystem-safe and use the last two dotted
parts of a parameter name (``param.market.params.elasticity-dr.dr_max`` → ``response_elasticity-dr.dr_max.png``).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments.plots import DPI, _pyplot

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
    for suffix, unit in _UNITS:
        if k.endswith(suffix) and len(k) > len(suffix):
            return f"{k[: -len(suffix)].replace('_', ' ')} [{unit}]"
    return f"{k.replace('_', ' ')} [-]"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


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


# ------------------------------------------------------------------------------------------------ convergence
def plot_convergence(reps: pd.DataFrame, kpis: list[str], out_dir: str | Path, *, point: int = 0) -> list[Path]:
    """Running mean and running 95 % t-confidence band of KPIs over the replications of one point.

    Writes ``convergence.png``: one panel per KPI (at most 6), x = number of replications (in ``rep`` order),
    the running mean, the band mean ± t(0.975, n − 1)·s/√n for n ≥ 2 and the final mean ± half-width annotated,
    so one can judge whether the number of replications was enough.

    Args:
        reps: replications of the study store (rows with status other than "ok" are ignored).
        kpis: KPI names (with or without ``kpi.``); missing or all-NaN KPIs are skipped.
        out_dir: created if needed.
        point: the design point to plot (ignored when ``reps`` has no ``point`` column).
    """
    from scipy import stats

    if _empty(reps):
        return []
    df = reps
    if "status" in df:
        df = df[df["status"] == "ok"]
    n_failed = 0
    if "point" in df:
        n_failed = int(((reps["point"] == point) & (reps["status"] != "ok")).sum()) if "status" in reps else 0
        df = df[df["point"] == point]
    if "rep" in df:
        df = df.sort_values("rep", kind="stable")
    cols = []
    for k in kpis or []:
        c = f"{KPI_PREFIX}{_kpi_name(k)}"
        if c in df and np.isfinite(pd.to_numeric(df[c], errors="coerce").to_numpy(float)).any():
            cols.append(c)
    cols = _cap(cols, "convergence")
    if df.empty or not cols:
        return []

    plt = _pyplot()
    fig, axes = _panels(plt, len(cols))
    try:
        n_max = 0
        for ax, c in zip(axes, cols):
            x = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
            x = x[np.isfinite(x)]
            n = np.arange(1, len(x) + 1)
            n_max = max(n_max, len(x))
            mean = np.cumsum(x) / n
            sd = pd.Series(x).expanding().std(ddof=1).to_numpy(float)  # NaN at n = 1
            t = stats.t.ppf(0.975, np.maximum(n - 1, 1))
            half = np.where(n >= 2, t * sd / np.sqrt(n), np.nan)
            lo, hi = mean - half, mean + half
            ax.fill_between(n, lo, hi, where=n >= 2, color="C0", alpha=0.22, lw=0, label="95 % t-CI of the mean")
            ax.plot(n, mean, color="C0", lw=1.8, label="running mean")
            ax.axhline(mean[-1], color="k", ls=":", lw=1.0, label="final mean")
            # y range: the band from a few replications on (the first bands with t(0.975, 1) = 12.7 are huge)
            k0 = min(4, len(x) - 1)
            ys = np.concatenate([mean, lo[k0:], hi[k0:]])
            ys = ys[np.isfinite(ys)]
            y0, y1 = float(ys.min()), float(ys.max())
            pad = 0.08 * (y1 - y0) if y1 > y0 else max(0.05 * abs(y0), 1e-9)
            ax.set_ylim(y0 - pad, y1 + pad)
            ax.set_xlim(1, max(len(x), 2))
            h = half[-1]
            if np.isfinite(h):
                rel = f" ({100 * h / abs(mean[-1]):.1f} % of mean)" if mean[-1] != 0 else ""
                text = f"n = {len(x)}: {_fmt(mean[-1])} ± {_fmt(h, 2)}{rel}"
            else:
                text = f"n = {len(x)}: {_fmt(mean[-1])} (no CI with n < 2)"
            ax.text(
                0.98,
                0.96,
                text,
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=8,
                bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="0.7", alpha=0.9),
            )
            ax.set_title(_kpi_label(c), fontsize=10)
            ax.set_xlabel("number of replications")
            ax.set_ylabel(_kpi_label(c))
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, loc="lower right")
        failed = f"; {n_failed} failed replication(s) excluded" if n_failed else ""
        fig.suptitle(
            f"Monte Carlo convergence (point {point}, {n_max} replications{failed})\n"
            "running mean with running 95 % t-confidence band of the mean; final mean ± half-width",
            fontsize=11,
        )
        return [_save(fig, Path(out_dir) / "convergence.png")]
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ response
def plot_response(
    summary: pd.DataFrame,
    param: str,
    kpis: list[str],
    out_dir: str | Path,
    *,
    by: str | None = None,
    where: dict[str, Any] | None = None,
    baseline_label: str = "baseline",
) -> list[Path]:
    """KPI means (with 95 % CI band) against one parameter of a sweep.

    Writes ``response_<short param>.png``: one panel per KPI (at most 6), x = parameter value (categorical
    positions when the values are strings). Only points where the parameter is set are drawn; the point labelled
    ``baseline_label`` is drawn as a horizontal dashed line with its CI band.

    Args:
        summary: per-(point, KPI) summary of the study.
        param: the parameter on the x axis (with or without ``param.``).
        kpis: KPI names (with or without ``kpi.``).
        out_dir: created if needed.
        by: another parameter: one line per value of it (for a factorial over two parameters).
        where: keep only points whose other parameters have these values (``{param: value}``), e.g. the first
            value of each of the other parameters of a ≥3-parameter sweep; stated in the title.
        baseline_label: label of the baseline point.
    """
    if _empty(summary) or "kpi" not in summary or "mean" not in summary:
        return []
    pc = _pcol(summary, param)
    if pc is None:
        return []
    points, base = _summary_rows(summary, baseline_label)
    rows = points[points[pc].notna()]
    for k, v in (where or {}).items():
        c = _pcol(rows, k)
        if c is not None:
            rows = rows[_as_level(rows[c]).eq(v) if rows[c].notna().all() else rows[c].astype(str).eq(str(v))]
    bc = _pcol(rows, by) if by else None
    if bc == pc:
        bc = None
    if bc is not None:
        rows = rows[rows[bc].notna()]
    names = [_kpi_name(k) for k in kpis or []]
    names = _cap(
        [
            k
            for k in names
            if (rows["kpi"] == k).any()
            and np.isfinite(pd.to_numeric(rows.loc[rows["kpi"] == k, "mean"], errors="coerce")).any()
        ],
        "response",
    )
    if rows.empty or not names:
        return []

    levels = _levels(rows[pc])
    numeric = _numeric(rows[pc])
    pos = {lv: (float(lv) if numeric else float(i)) for i, lv in enumerate(levels)}
    groups: list[tuple[str | None, pd.DataFrame]]
    if bc is None:
        groups = [(None, rows)]
    else:
        groups = [(f"{_name(bc)} = {_fmt_value(b)}", rows[_as_level(rows[bc]) == b]) for b in _levels(rows[bc])]
    cmap_n = len(groups)

    plt = _pyplot()
    fig, axes = _panels(plt, len(names), extra_h=1.3 if bc else 0.9)
    try:
        for ax, k in zip(axes, names):
            for gi, (glabel, g) in enumerate(groups):
                r = g[g["kpi"] == k].copy()
                if r.empty:
                    continue
                dodge = 0.0 if numeric or cmap_n == 1 else 0.25 * (gi - (cmap_n - 1) / 2) / max(cmap_n - 1, 1)
                r["_x"] = _as_level(r[pc]).map(pos) + dodge
                r = r.groupby("_x", sort=True)[["mean", "ci_low", "ci_high"]].mean(numeric_only=True).reset_index()
                colour = f"C{gi % 10}" if cmap_n > 1 else "C0"
                x, m = r["_x"].to_numpy(float), r["mean"].to_numpy(float)
                lo, hi = r["ci_low"].to_numpy(float), r["ci_high"].to_numpy(float)
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any() and numeric:
                    ax.fill_between(
                        x,
                        np.where(ok, lo, m),
                        np.where(ok, hi, m),
                        color=colour,
                        alpha=0.18 if cmap_n == 1 else 0.12,
                        lw=0,
                    )
                if ok.any():
                    ax.errorbar(
                        x[ok],
                        m[ok],
                        yerr=[m[ok] - lo[ok], hi[ok] - m[ok]],
                        fmt="none",
                        ecolor=colour,
                        elinewidth=1,
                        capsize=3,
                        alpha=0.8,
                    )
                ax.plot(
                    x,
                    m,
                    marker="o",
                    ms=4.5 if numeric else 6,
                    lw=1.7,
                    ls="-" if numeric else "none",
                    color=colour,
                    label=glabel if glabel else "mean ± 95 % CI",
                )
            b = base[base["kpi"] == k] if not base.empty else base
            if not b.empty and np.isfinite(float(b["mean"].iloc[0])):
                bm, blo, bhi = (float(b[c].iloc[0]) for c in ("mean", "ci_low", "ci_high"))
                ax.axhline(bm, color="k", ls="--", lw=1.2, label=f"{baseline_label} {_fmt(bm)}")
                if np.isfinite(blo) and np.isfinite(bhi):
                    ax.axhspan(blo, bhi, color="0.5", alpha=0.15, lw=0)
            if not numeric:
                ax.set_xticks(
                    list(pos.values()),
                    [_fmt_value(lv) for lv in levels],
                    rotation=30 if sum(len(str(lv)) for lv in levels) > 40 else 0,
                    ha="right" if sum(len(str(lv)) for lv in levels) > 40 else "center",
                )
                ax.set_xlim(-0.5, len(levels) - 0.5)
            elif len(levels) <= 8:
                ax.set_xticks(levels, [_fmt_value(lv) for lv in levels])
            ax.set_title(_kpi_label(k), fontsize=10)
            ax.set_xlabel(_name(pc))
            ax.set_ylabel(_kpi_label(k))
            ax.grid(alpha=0.3)
            if bc is None:
                ax.legend(fontsize=7, loc="best")
        if bc is not None:
            handles, labels = axes[0].get_legend_handles_labels()
            for ax in axes[1:]:  # the baseline label differs per KPI; keep the lines per value once
                for h, lab in zip(*ax.get_legend_handles_labels()):
                    if lab.startswith(baseline_label) and not any(x.startswith(baseline_label) for x in labels):
                        handles.append(h)
                        labels.append(baseline_label)
            labels = [baseline_label if x.startswith(baseline_label) else x for x in labels]
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
        fixed = ""
        if where:
            fixed = (
                "\nonly points with "
                + ", ".join(f"{_name(k)} = {_fmt_value(v)}" for k, v in where.items())
                + " (first value of each other parameter)"
            )
        per = f", one {'line' if numeric else 'series'} per value of {_name(bc)}" if bc else ""
        base_txt = f"; dashed: {baseline_label} (grey band: its 95 % CI)" if not base.empty else ""
        fig.suptitle(
            f"response to {_name(pc)}{per}\nmean and 95 % CI of the mean ({_n_text(rows)}){base_txt}{fixed}",
            fontsize=11,
        )
        return [_save(fig, Path(out_dir) / f"response_{_short(pc)}.png")]
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ tornado
def plot_tornado(
    summary: pd.DataFrame, kpi: str, out_dir: str | Path, *, baseline_label: str = "baseline"
) -> list[Path]:
    """One-at-a-time sensitivity of one KPI: mean at the lowest and highest value of each parameter vs the baseline.

    Writes ``tornado_<kpi>.png``: per parameter (each ``param.*`` column) two horizontal bars from the baseline mean
    to the KPI mean at the parameter's lowest and highest value (first and last value in design order for string
    parameters), with the 95 % CI of those means as whiskers, sorted by swing |high − low| (largest on top), a
    vertical baseline line and value labels (mean and % change). Without a baseline point the mean over all points
    is the reference, and the title says so.

    Args:
        summary: per-(point, KPI) summary of an OAT study.
        kpi: KPI name (with or without ``kpi.``).
        out_dir: created if needed.
        baseline_label: label of the baseline point.
    """
    if _empty(summary) or "kpi" not in summary or "mean" not in summary:
        return []
    k = _kpi_name(kpi)
    rows = summary[summary["kpi"] == k]
    if rows.empty:
        return []
    points, base = _summary_rows(rows, baseline_label)
    if not base.empty and np.isfinite(float(base["mean"].iloc[0])):
        ref, ref_label = float(base["mean"].iloc[0]), f"{baseline_label} {_fmt(float(base['mean'].iloc[0]))}"
        ref_ci = (float(base["ci_low"].iloc[0]), float(base["ci_high"].iloc[0]))
    else:
        ref = float(pd.to_numeric(points["mean"], errors="coerce").mean())
        ref_label, ref_ci = f"mean of all points {_fmt(ref)} (no {baseline_label} point)", (np.nan, np.nan)
    if not np.isfinite(ref):
        return []
    bars = []
    for pc in [c for c in summary.columns if c.startswith(PARAM_PREFIX)]:
        r = points[points[pc].notna()]
        r = r[np.isfinite(pd.to_numeric(r["mean"], errors="coerce"))]
        if r.empty:
            continue
        levels = _levels(r[pc])
        lv = _as_level(r[pc])
        ends = []
        for v in (levels[0], levels[-1]):
            s = r[lv == v]
            ends.append((v, float(s["mean"].mean()), float(s["ci_low"].mean()), float(s["ci_high"].mean())))
        bars.append((_name(pc), ends, abs(ends[1][1] - ends[0][1]), len(levels)))
    if not bars:
        return []
    bars.sort(key=lambda b: (b[2], max(abs(e[1] - ref) for e in b[1])))  # smallest first → largest on top

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 1.8 + 0.9 * len(bars)), layout="constrained")
    try:
        xs = [ref]
        has_text = any(isinstance(b[1][0][0], str) for b in bars)
        text_note = {"lowest value": " (first for text parameters)", "highest value": " (last for text parameters)"}
        for y, (name, ends, _swing, n_lv) in enumerate(bars):
            for (v, m, lo, hi), dy, colour, which in (
                (ends[0], 0.2, "#1f77b4", "lowest value"),
                (ends[1], -0.2, "#ff7f0e", "highest value"),
            ):
                if n_lv == 1 and dy < 0:
                    continue
                ax.barh(
                    y + dy,
                    m - ref,
                    left=ref,
                    height=0.38,
                    color=colour,
                    alpha=0.85,
                    zorder=2,
                    label=which + (text_note[which] if has_text else ""),
                )
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.errorbar(
                        m, y + dy, xerr=[[m - lo], [hi - m]], fmt="none", ecolor="k", elinewidth=0.9, capsize=2.5
                    )
                    xs += [lo, hi]
                xs.append(m)
                rel = f", {100 * (m - ref) / abs(ref):+.1f} %" if ref != 0 else ""
                right = m >= ref
                edge = max(m, hi) if right and np.isfinite(hi) else min(m, lo) if np.isfinite(lo) else m
                ax.annotate(
                    f"{_name(name).split('.')[-1]} = {_fmt_value(v)}: {_fmt(m)}{rel}",
                    (edge, y + dy),
                    xytext=(4 if right else -4, 0),
                    textcoords="offset points",
                    va="center",
                    ha="left" if right else "right",
                    fontsize=8,
                )
        ax.axvline(ref, color="k", lw=1.3, ls="--", label=ref_label)
        if all(np.isfinite(ref_ci)):
            ax.axvspan(*ref_ci, color="0.5", alpha=0.15, lw=0, zorder=0, label=f"{baseline_label} 95 % CI")
            xs += list(ref_ci)
        x0, x1 = min(xs), max(xs)
        span = (x1 - x0) or max(abs(ref) * 0.05, 1e-9)
        ax.set_xlim(x0 - 0.6 * span, x1 + 0.6 * span)  # room for the value labels
        ax.set_ylim(-0.7, len(bars) - 0.3)
        ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=9)
        ax.set_xlabel(f"{_kpi_label(k)}  (KPI {k})")
        ax.grid(axis="x", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        order = ("lowest", "highest", baseline_label, "mean of all")
        uniq = dict(
            sorted(
                zip(labels, handles),
                key=lambda lh: next((i for i, o in enumerate(order) if lh[0].startswith(o)), len(order)),
            )
        )
        fig.legend(uniq.values(), uniq.keys(), fontsize=8, loc="outside lower center", ncol=len(uniq), frameon=False)
        ax.set_title(
            f"one-at-a-time sensitivity of {_kpi_label(k)}\nmean at the lowest/highest value of each "
            f"parameter (whiskers: 95 % CI) vs {ref_label.split(' (')[0] if base.empty else baseline_label}; "
            f"sorted by swing",
            fontsize=11,
        )
        return [_save(fig, Path(out_dir) / f"tornado_{_safe(k)}.png")]
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ heatmap
def plot_heatmap(
    summary: pd.DataFrame, p1: str, p2: str, kpi: str, out_dir: str | Path, *, baseline_label: str = "baseline"
) -> list[Path]:
    """Mean of one KPI over a two-parameter full factorial.

    Writes ``heatmap_<kpi>.png``: cells at (value of ``p1`` on x, value of ``p2`` on y) coloured by the mean and
    annotated with it and ± the half-width of its 95 % CI; ticks at the parameter values; colour bar with the KPI
    and unit. Points without both parameters (e.g. a baseline) are left out.

    Args:
        summary: per-(point, KPI) summary of the study.
        p1, p2: the parameters on the x and y axes (with or without ``param.``).
        kpi: KPI name (with or without ``kpi.``).
        out_dir: created if needed.
        baseline_label: label of the baseline point (left out of the grid, its mean quoted in the title).
    """
    if _empty(summary) or "kpi" not in summary or "mean" not in summary:
        return []
    c1, c2 = _pcol(summary, p1), _pcol(summary, p2)
    k = _kpi_name(kpi)
    if c1 is None or c2 is None or c1 == c2:
        return []
    points, base = _summary_rows(summary[summary["kpi"] == k], baseline_label)
    rows = points[points[c1].notna() & points[c2].notna()]
    rows = rows[np.isfinite(pd.to_numeric(rows["mean"], errors="coerce"))]
    if rows.empty:
        return []
    l1, l2 = _levels(rows[c1]), _levels(rows[c2])
    i1 = _as_level(rows[c1]).map({v: i for i, v in enumerate(l1)}).to_numpy(int)
    i2 = _as_level(rows[c2]).map({v: i for i, v in enumerate(l2)}).to_numpy(int)
    mean = np.full((len(l2), len(l1)), np.nan)
    half = np.full_like(mean, np.nan)
    cnt = np.zeros_like(mean)
    for a, b, m, lo, hi in zip(
        i1, i2, rows["mean"].to_numpy(float), rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    ):
        mean[b, a] = m if cnt[b, a] == 0 else (mean[b, a] * cnt[b, a] + m) / (cnt[b, a] + 1)
        half[b, a] = (hi - lo) / 2
        cnt[b, a] += 1

    plt = _pyplot()
    w = min(max(6.0, 1.25 * len(l1) + 3.0), 16.0)
    h = min(max(4.5, 0.8 * len(l2) + 2.5), 12.0)
    fig, ax = plt.subplots(figsize=(w, h), layout="constrained")
    try:
        cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
        im = ax.imshow(np.ma.masked_invalid(mean), cmap=cmap, origin="lower", aspect="auto", interpolation="nearest")
        norm = im.norm
        small = len(l1) * len(l2) > 60
        for b in range(len(l2)):
            for a in range(len(l1)):
                m = mean[b, a]
                if not np.isfinite(m):
                    ax.text(a, b, "n/a", ha="center", va="center", fontsize=8, color="0.3")
                    continue
                colour = "white" if norm(m) < 0.55 else "black"
                hw = np.isfinite(half[b, a])
                ax.text(
                    a,
                    b + (0.08 if hw else 0),
                    _fmt(m),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=7 if small else 9,
                    fontweight="bold",
                )
                if hw:
                    ax.text(
                        a,
                        b - 0.2,
                        f"± {_fmt(half[b, a], 2)}",
                        ha="center",
                        va="center",
                        color=colour,
                        fontsize=6 if small else 7,
                    )
        ax.set_xticks(
            range(len(l1)),
            [_fmt_value(v) for v in l1],
            rotation=30 if sum(len(_fmt_value(v)) for v in l1) > 6 * len(l1) else 0,
        )
        ax.set_yticks(range(len(l2)), [_fmt_value(v) for v in l2])
        ax.set_xlabel(_name(c1))
        ax.set_ylabel(_name(c2))
        cb = fig.colorbar(im, ax=ax, pad=0.02)
        cb.set_label(f"mean {_kpi_label(k)}")
        b_txt = ""
        if not base.empty and np.isfinite(float(base["mean"].iloc[0])):
            bm, blo, bhi = (float(base[c].iloc[0]) for c in ("mean", "ci_low", "ci_high"))
            b_txt = f"; {baseline_label}: {_fmt(bm)}" + (f" ± {_fmt((bhi - blo) / 2, 2)}" if np.isfinite(blo) else "")
            if norm.vmin <= bm <= norm.vmax:
                cb.ax.axhline(bm, color="r", lw=1.5)
        ax.set_title(
            f"{_kpi_label(k)} over {_name(c1)} × {_name(c2)}\nmean per point (small: ± half-width of the "
            f"95 % CI; {_n_text(rows)}){b_txt}",
            fontsize=10,
        )
        return [_save(fig, Path(out_dir) / f"heatmap_{_safe(k)}.png")]
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------ study
def _design_params(summary: pd.DataFrame, baseline_label: str) -> list[str]:
    """``param.*`` columns set on a design point (the baseline's own parameters excluded), varying ones first."""
    if _empty(summary):
        return []
    points, _ = _summary_rows(summary, baseline_label)
    cols = [c for c in summary.columns if c.startswith(PARAM_PREFIX) and points[c].notna().any()]
    varying = [c for c in cols if len(_levels(points[c])) > 1]
    return varying or cols


def plot_study(
    reps: pd.DataFrame, summary: pd.DataFrame, manifest: dict[str, Any], out_dir: str | Path, *, strict: bool = False
) -> list[Path]:
    """All plots of a study, chosen by ``manifest["kind"]``, for ``manifest["headline_kpis"]``.

    * ``montecarlo``: ``convergence.png``.
    * ``sweep`` over one parameter: ``response_<param>.png``; over two: a response per parameter with one line per
      value of the other, and ``heatmap_<kpi>.png`` per headline KPI; over three or more: a response per parameter
      using only points where the other parameters are at their first value (stated in the title).
    * ``oat``: ``tornado_<kpi>.png`` per headline KPI and a response per parameter.

    Headline KPIs default to peak_load_kw, energy_losses_kwh, vdi_pu, vri_pu, total_cost_usd, energy_fulfilment
    (those present). A plot that fails is skipped with a warning unless ``strict=True``, so a plotting problem
    never loses a report.

    Args:
        reps: replications of the store.
        summary: per-(point, KPI) summary.
        manifest: the study manifest (``kind``, optional ``headline_kpis``, ``points``).
        out_dir: created if needed.
        strict: re-raise an exception from a plot instead of warning and skipping it.
    """
    kind = (manifest or {}).get("kind")
    present: set[str] = set()
    if not _empty(summary) and "kpi" in summary:
        present |= set(summary["kpi"].astype(str))
    if not _empty(reps):
        present |= {_name(c) for c in reps.columns if c.startswith(KPI_PREFIX)}
    headline = [_kpi_name(k) for k in ((manifest or {}).get("headline_kpis") or DEFAULT_HEADLINE)]
    headline = [k for k in dict.fromkeys(headline) if k in present]
    if not headline:
        return []
    out = Path(out_dir)
    jobs: list[tuple[str, Callable[[], list[Path]]]] = []
    if kind == "montecarlo":
        if not _empty(reps):
            ok = reps[reps["status"] == "ok"] if "status" in reps else reps
            pts = sorted(ok["point"].unique()) if "point" in ok and len(ok) else [0]
            point = int(pts[0]) if pts else 0
            jobs.append(("convergence", lambda: plot_convergence(reps, headline, out, point=point)))
    elif kind in ("sweep", "oat"):
        params = _design_params(summary, "baseline")
        if kind == "oat":
            jobs += [(f"tornado {k}", partial(plot_tornado, summary, k, out)) for k in headline]
            jobs += [(f"response {p}", partial(plot_response, summary, p, headline, out)) for p in params]
        elif len(params) == 1:
            jobs.append((f"response {params[0]}", lambda: plot_response(summary, params[0], headline, out)))
        elif len(params) == 2:
            p1, p2 = params
            jobs += [
                (f"response {p1}", lambda: plot_response(summary, p1, headline, out, by=p2)),
                (f"response {p2}", lambda: plot_response(summary, p2, headline, out, by=p1)),
            ]
            jobs += [(f"heatmap {k}", partial(plot_heatmap, summary, p1, p2, k, out)) for k in headline]
        elif len(params) >= 3:
            points, _ = _summary_rows(summary, "baseline")
            first = {p: _levels(points[p])[0] for p in params}
            for p in params:
                where = {q: v for q, v in first.items() if q != p}
                jobs.append((f"response {p}", partial(plot_response, summary, p, headline, out, where=where)))
    else:
        warnings.warn(
            f"plot_study: unknown study kind {kind!r}; allowed: montecarlo, sweep, oat", RuntimeWarning, stacklevel=2
        )
        return []
    written: list[Path] = []
    for what, job in jobs:
        try:
            written += job()
        except Exception as exc:  # a plot must not lose a report
            if strict:
                raise
            warnings.warn(f"study plot {what} skipped: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
            _pyplot().close("all")
    return written
