"""Study plots over replications and sweeps: Monte Carlo convergence, responses to a parameter, and `plot_study`.

Every function writes its figure (Agg backend) in the current formats (`experiments.plotting.common.formats`,
``outputs.format`` of the study's scenario) into ``out_dir``, closes it and returns the written paths; empty or
unusable inputs give ``[]``. Parameter and KPI names may be given with or without their ``param.`` / ``kpi.``
prefix; axes show readable labels with units. File names are filesystem-safe and use the last two dotted parts of
a parameter name (``param.market.params.elasticity-dr.dr_max`` → ``response_elasticity-dr.dr_max.png``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from experiments.plotting import common
from experiments.plotting.common import _pyplot
from experiments.plotting.study_common import (
    DEFAULT_HEADLINE,
    KPI_PREFIX,
    PARAM_PREFIX,
    _as_level,
    _cap,
    _empty,
    _fmt,
    _fmt_value,
    _kpi_label,
    _kpi_name,
    _levels,
    _n_text,
    _name,
    _numeric,
    _panels,
    _param_label,
    _pcol,
    _plain,
    _save,
    _short,
    _summary_rows,
)
from experiments.plotting.study_factors import plot_heatmap, plot_tornado

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


def _convergence_panel(ax: Axes, x: np.ndarray, kpi: str) -> None:
    """Running mean and running 95 % t-band of one KPI over its replications ``x`` (finite values, in order)."""
    from scipy import stats

    n = np.arange(1, len(x) + 1)
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
    ax.set_title(_kpi_label(kpi), fontsize=10)
    ax.set_xlabel("number of replications")
    ax.set_ylabel(_kpi_label(kpi))
    ax.grid(alpha=0.3)
    _plain(ax)


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
        for ax, col in zip(axes, cols):
            x = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
            x = x[np.isfinite(x)]
            n_max = max(n_max, len(x))
            _convergence_panel(ax, x, col)
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
    sel = _response_rows(summary, param, kpis, by, where, baseline_label)
    if sel is None:
        return []
    pc, bc, rows, base, names = sel
    levels = _levels(rows[pc])
    numeric = _numeric(rows[pc])
    pos = {lv: (float(lv) if numeric else float(i)) for i, lv in enumerate(levels)}
    groups: list[tuple[str | None, pd.DataFrame]]
    if bc is None:
        groups = [(None, rows)]
    else:
        groups = [(f"{_param_label(bc)} = {_fmt_value(b)}", rows[_as_level(rows[bc]) == b]) for b in _levels(rows[bc])]

    plt = _pyplot()
    fig, axes = _panels(plt, len(names), extra_h=1.3 if bc else 0.9)
    try:
        for ax, k in zip(axes, names):
            for gi, (glabel, g) in enumerate(groups):
                _response_series(ax, g[g["kpi"] == k], gi, len(groups), glabel, pc, pos, numeric)
            _response_axes(ax, k, pc, base, baseline_label, levels, pos, numeric)
            if bc is None:
                ax.legend(fontsize=7, loc="best")
        if bc is not None:
            _shared_legend(fig, axes, baseline_label)
        fixed = ""
        if where:
            fixed = (
                "\nonly points with "
                + ", ".join(f"{_param_label(k)} = {_fmt_value(v)}" for k, v in where.items())
                + " (first value of each other parameter)"
            )
        per = f", one {'line' if numeric else 'series'} per value of {_param_label(bc)}" if bc else ""
        base_txt = f"; dashed: {baseline_label} (grey band: its 95 % CI)" if not base.empty else ""
        fig.suptitle(
            f"response to {_param_label(pc)}{per}\nmean and 95 % CI of the mean ({_n_text(rows)}){base_txt}{fixed}",
            fontsize=11,
        )
        return [_save(fig, Path(out_dir) / f"response_{_short(pc)}.png")]
    finally:
        plt.close(fig)


def _response_rows(
    summary: pd.DataFrame,
    param: str,
    kpis: list[str],
    by: str | None,
    where: dict[str, Any] | None,
    baseline_label: str,
) -> tuple[str, str | None, pd.DataFrame, pd.DataFrame, list[str]] | None:
    """(parameter column, by-column, design rows, baseline rows, KPIs to draw) of a response plot, or None."""
    if _empty(summary) or "kpi" not in summary or "mean" not in summary:
        return None
    pc = _pcol(summary, param)
    if pc is None:
        return None
    points, base = _summary_rows(summary, baseline_label)
    rows = points[points[pc].notna()]
    for k, v in (where or {}).items():
        col = _pcol(rows, k)
        if col is not None:
            rows = rows[_as_level(rows[col]).eq(v) if rows[col].notna().all() else rows[col].astype(str).eq(str(v))]
    bc = _pcol(rows, by) if by else None
    if bc == pc:
        bc = None
    if bc is not None:
        rows = rows[rows[bc].notna()]
    finite = [
        k
        for k in (_kpi_name(k) for k in kpis or [])
        if (rows["kpi"] == k).any()
        and np.isfinite(pd.to_numeric(rows.loc[rows["kpi"] == k, "mean"], errors="coerce")).any()
    ]
    names = _cap(finite, "response")
    if rows.empty or not names:
        return None
    return pc, bc, rows, base, names


def _response_series(
    ax: Axes,
    r: pd.DataFrame,
    gi: int,
    n_groups: int,
    glabel: str | None,
    pc: str,
    pos: dict[Any, float],
    numeric: bool,
) -> None:
    """Mean and 95 % CI of one KPI over the parameter, for one group of points."""
    if r.empty:
        return
    r = r.copy()
    dodge = 0.0 if numeric or n_groups == 1 else 0.25 * (gi - (n_groups - 1) / 2) / max(n_groups - 1, 1)
    r["_x"] = _as_level(r[pc]).map(pos) + dodge
    r = r.groupby("_x", sort=True)[["mean", "ci_low", "ci_high"]].mean(numeric_only=True).reset_index()
    colour = f"C{gi % 10}" if n_groups > 1 else "C0"
    x, m = r["_x"].to_numpy(float), r["mean"].to_numpy(float)
    lo, hi = r["ci_low"].to_numpy(float), r["ci_high"].to_numpy(float)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any() and numeric:
        alpha = 0.18 if n_groups == 1 else 0.12
        ax.fill_between(x, np.where(ok, lo, m), np.where(ok, hi, m), color=colour, alpha=alpha, lw=0)
    if ok.any():
        yerr = [m[ok] - lo[ok], hi[ok] - m[ok]]
        ax.errorbar(x[ok], m[ok], yerr=yerr, fmt="none", ecolor=colour, elinewidth=1, capsize=3, alpha=0.8)
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


def _response_axes(
    ax: Axes,
    k: str,
    pc: str,
    base: pd.DataFrame,
    baseline_label: str,
    levels: list[Any],
    pos: dict[Any, float],
    numeric: bool,
) -> None:
    """Baseline line and band, ticks at the parameter values, readable labels with units, no tick offset."""
    b = base[base["kpi"] == k] if not base.empty else base
    if not b.empty and np.isfinite(float(b["mean"].iloc[0])):
        bm, blo, bhi = (float(b[col].iloc[0]) for col in ("mean", "ci_low", "ci_high"))
        ax.axhline(bm, color="k", ls="--", lw=1.2, label=f"{baseline_label} {_fmt(bm)}")
        if np.isfinite(blo) and np.isfinite(bhi):
            ax.axhspan(blo, bhi, color="0.5", alpha=0.15, lw=0)
    if not numeric:
        long = sum(len(str(lv)) for lv in levels) > 40
        ax.set_xticks(
            list(pos.values()),
            [_fmt_value(lv) for lv in levels],
            rotation=30 if long else 0,
            ha="right" if long else "center",
        )
        ax.set_xlim(-0.5, len(levels) - 0.5)
    elif len(levels) <= 8:
        ax.set_xticks(levels, [_fmt_value(lv) for lv in levels])
    ax.set_title(_kpi_label(k), fontsize=10)
    ax.set_xlabel(_param_label(pc))
    ax.set_ylabel(_kpi_label(k))
    ax.grid(alpha=0.3)
    _plain(ax)


def _shared_legend(fig: Any, axes: list[Axes], baseline_label: str) -> None:
    """One legend below the panels: a line per value of the by-parameter, and the baseline once."""
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # the baseline label differs per KPI; keep the lines per value once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab.startswith(baseline_label) and not any(x.startswith(baseline_label) for x in labels):
                handles.append(h)
                labels.append(baseline_label)
    labels = [baseline_label if x.startswith(baseline_label) else x for x in labels]
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)


# ------------------------------------------------------------------------------------------------ study
def _design_params(summary: pd.DataFrame, baseline_label: str) -> list[str]:
    """``param.*`` columns set on a design point (the baseline's own parameters excluded), varying ones first."""
    if _empty(summary):
        return []
    points, _ = _summary_rows(summary, baseline_label)
    cols = [c for c in summary.columns if c.startswith(PARAM_PREFIX) and points[c].notna().any()]
    varying = [c for c in cols if len(_levels(points[c])) > 1]
    return varying or cols


def _study_jobs(
    kind: Any, reps: pd.DataFrame, summary: pd.DataFrame, headline: list[str], out: Path
) -> list[tuple[str, Callable[[], list[Path]]]] | None:
    """The plots of a study of ``kind`` as (what, job); None for an unknown kind."""
    jobs: list[tuple[str, Callable[[], list[Path]]]] = []
    if kind == "montecarlo":
        if not _empty(reps):
            ok = reps[reps["status"] == "ok"] if "status" in reps else reps
            pts = sorted(ok["point"].unique()) if "point" in ok and len(ok) else [0]
            point = int(pts[0]) if pts else 0
            jobs.append(("convergence", lambda: plot_convergence(reps, headline, out, point=point)))
    elif kind == "points":
        from experiments.plotting.study_points import plot_points

        jobs.append(("points", lambda: plot_points(summary, headline, out)))
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
        return None
    return jobs


def plot_study(
    reps: pd.DataFrame,
    summary: pd.DataFrame,
    manifest: dict[str, Any],
    out_dir: str | Path,
    *,
    strict: bool = False,
    formats: Sequence[str] | None = None,
) -> list[Path]:
    """All plots of a study, chosen by ``manifest["kind"]``, for ``manifest["headline_kpis"]``.

    * ``montecarlo``: ``convergence.png``.
    * ``sweep`` over one parameter: ``response_<param>.png``; over two: a response per parameter with one line per
      value of the other, and ``heatmap_<kpi>.png`` per headline KPI; over three or more: a response per parameter
      using only points where the other parameters are at their first value (stated in the title).
    * ``oat``: ``tornado_<kpi>.png`` per headline KPI and a response per parameter.
    * ``points`` (named points, e.g. an attack study): ``points.png``, each headline KPI per point with its CI.

    Headline KPIs default to peak_load_kw, energy_losses_kwh, vdi_pu, vri_pu, total_cost_usd, energy_fulfilment
    (those present). A plot that fails is skipped with a warning unless ``strict=True``, so a plotting problem
    never loses a report.

    Args:
        reps: replications of the store.
        summary: per-(point, KPI) summary.
        manifest: the study manifest (``kind``, optional ``headline_kpis``, ``points``).
        out_dir: created if needed.
        strict: re-raise an exception from a plot instead of warning and skipping it.
        formats: file formats (png, svg, pdf); default ``outputs.format`` of the manifest's ``scenario_data``.
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
    jobs = _study_jobs(kind, reps, summary, headline, Path(out_dir))
    if jobs is None:
        warnings.warn(
            f"plot_study: unknown study kind {kind!r}; allowed: montecarlo, sweep, oat, points",
            RuntimeWarning,
            stacklevel=2,
        )
        return []
    written: list[Path] = []
    fmts = formats or common.scenario_formats((manifest or {}).get("scenario_data") or {})
    for what, job in jobs:
        try:
            with common.formats(fmts):
                written += [f for p in job() for f in common._files(p)]
        except Exception as exc:  # a plot must not lose a report
            if strict:
                raise
            warnings.warn(f"study plot {what} skipped: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
            _pyplot().close("all")
    return written
