"""Study plots of factors: one-at-a-time tornado and two-parameter heat map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments.plotting.common import _pyplot
from experiments.plotting.study_common import (
    PARAM_PREFIX,
    _as_level,
    _empty,
    _fmt,
    _fmt_value,
    _kpi_label,
    _kpi_name,
    _levels,
    _n_text,
    _name,
    _param_label,
    _pcol,
    _plain,
    _safe,
    _save,
    _summary_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


# ------------------------------------------------------------------------------------------------ tornado
def _tornado_bars(summary: pd.DataFrame, points: pd.DataFrame) -> list[tuple[str, list[tuple], float, int]]:
    """Per parameter: (name, [(value, mean, ci_low, ci_high) at its lowest and highest value], swing, levels)."""
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
    return bars


def _tornado_draw(ax: Axes, bars: list[tuple[str, list[tuple], float, int]], ref: float) -> list[float]:
    """Bars from the reference to the mean at each end, CI whiskers and value labels; returns the x values drawn."""
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
                ax.errorbar(m, y + dy, xerr=[[m - lo], [hi - m]], fmt="none", ecolor="k", elinewidth=0.9, capsize=2.5)
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
    return xs


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
    bars = _tornado_bars(summary, points)
    if not bars:
        return []
    bars.sort(key=lambda b: (b[2], max(abs(e[1] - ref) for e in b[1])))  # smallest first → largest on top

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 1.8 + 0.9 * len(bars)), layout="constrained")
    try:
        xs = _tornado_draw(ax, bars, ref)
        ax.axvline(ref, color="k", lw=1.3, ls="--", label=ref_label)
        if all(np.isfinite(ref_ci)):
            ax.axvspan(*ref_ci, color="0.5", alpha=0.15, lw=0, zorder=0, label=f"{baseline_label} 95 % CI")
            xs += list(ref_ci)
        x0, x1 = min(xs), max(xs)
        span = (x1 - x0) or max(abs(ref) * 0.05, 1e-9)
        ax.set_xlim(x0 - 0.6 * span, x1 + 0.6 * span)  # room for the value labels
        ax.set_ylim(-0.7, len(bars) - 0.3)
        ax.set_yticks(range(len(bars)), [_param_label(b[0]) for b in bars], fontsize=9)
        ax.set_xlabel(f"{_kpi_label(k)}  (KPI {k})")
        ax.grid(axis="x", alpha=0.3)
        _plain(ax)
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
def _heatmap_grid(rows: pd.DataFrame, c1: str, c2: str) -> tuple[list[Any], list[Any], np.ndarray, np.ndarray]:
    """Levels of both parameters and the (p2 × p1) grids of the mean and the CI half-width (mean of repeated
    cells)."""
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

    return l1, l2, mean, half


def _annotate_cells(ax: Axes, mean: np.ndarray, half: np.ndarray, norm: Any) -> None:
    """Each cell's mean and ± CI half-width as text, in a colour readable on the cell."""
    n2, n1 = mean.shape
    l1, l2 = range(n1), range(n2)
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
    l1, l2, mean, half = _heatmap_grid(rows, c1, c2)
    plt = _pyplot()
    w = min(max(6.0, 1.25 * len(l1) + 3.0), 16.0)
    h = min(max(4.5, 0.8 * len(l2) + 2.5), 12.0)
    fig, ax = plt.subplots(figsize=(w, h), layout="constrained")
    try:
        cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
        # colour span: from the lowest CI bound to the highest, so that differences inside the CIs look small
        lo, hi = np.nanmin(mean - np.nan_to_num(half)), np.nanmax(mean + np.nan_to_num(half))
        if not hi > lo:
            lo, hi = lo - max(abs(lo) * 0.01, 1e-9), hi + max(abs(hi) * 0.01, 1e-9)
        im = ax.imshow(
            np.ma.masked_invalid(mean),
            cmap=cmap,
            origin="lower",
            aspect="auto",
            interpolation="nearest",
            vmin=lo,
            vmax=hi,
        )
        norm = im.norm
        _annotate_cells(ax, mean, half, norm)
        ax.set_xticks(
            range(len(l1)),
            [_fmt_value(v) for v in l1],
            rotation=30 if sum(len(_fmt_value(v)) for v in l1) > 6 * len(l1) else 0,
        )
        ax.set_yticks(range(len(l2)), [_fmt_value(v) for v in l2])
        ax.set_xlabel(_param_label(c1))
        ax.set_ylabel(_param_label(c2))
        cb = fig.colorbar(im, ax=ax, pad=0.02)
        _plain(cb.ax)
        cb.set_label(f"mean {_kpi_label(k)}\n(colour span: lowest to highest 95 % CI bound)")
        b_txt = ""
        if not base.empty and np.isfinite(float(base["mean"].iloc[0])):
            bm, blo, bhi = (float(base[c].iloc[0]) for c in ("mean", "ci_low", "ci_high"))
            b_txt = f"; {baseline_label}: {_fmt(bm)}" + (f" ± {_fmt((bhi - blo) / 2, 2)}" if np.isfinite(blo) else "")
            if norm.vmin <= bm <= norm.vmax:
                cb.ax.axhline(bm, color="r", lw=1.5)
        ax.set_title(
            f"{_kpi_label(k)}\nover {_param_label(c1)} × {_param_label(c2)}\nmean per point (small: ± half-width of the "
            f"95 % CI; {_n_text(rows)}){b_txt}",
            fontsize=10,
        )
        return [_save(fig, Path(out_dir) / f"heatmap_{_safe(k)}.png")]
    finally:
        plt.close(fig)
