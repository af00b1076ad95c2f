"""The figures of the `eho-bilevel-10stations` run (convergence, load profiles, Pareto front of Table 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.eho_paper.tables import TABLE7
from experiments.plotting.common import save_figure


# ----------------------------------------------------------------------------------------------- plots
def _plots(out: Path, ctx: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    hours = ctx["tod_h"]
    x = np.arange(len(hours))
    labels = [f"{int(h):02d}" for h in hours]
    _profile_plots(out, ctx, x, labels, plt)
    _search_plots(out, ctx, plt)
    # 6. weight study Pareto
    ws = ctx.get("weights")
    if ws is not None and len(ws):
        _weight_pareto(plt, out, ws)


def _profile_plots(out: Path, ctx: dict[str, Any], x: np.ndarray, labels: list[str], plt: Any) -> None:
    """DR price profile, load profile before/after, wait-time distribution."""
    # 1. DR price profile
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xe = np.r_[x, x[-1] + 1]
    ax.step(xe, np.r_[ctx["base_price"], ctx["base_price"][-1]] * 1000, where="post", label="base price BP", color="k")
    for name, pr in ctx["prices"].items():
        ax.step(xe, np.r_[pr, pr[-1]] * 1000, where="post", label=f"DR price, {name}")
    ax.set(xlabel="hour of day", ylabel="price [$/MWh]", title="DR price profile (upper-level decision)")
    ax.set_xticks(x[::2], labels[::2])
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "dr_price_profile.png", dpi=120)
    plt.close(fig)
    # 2. load profile before/after
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(x, ctx["base_kw"], "k:", label="non-EV load")
    for name, tot in ctx["loads"].items():
        ax.plot(x, tot, label=name)
    ax.set(xlabel="hour of day", ylabel="total load [kW]", title="Load profile: uncontrolled vs optimised")
    ax.set_xticks(x[::2], labels[::2])
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "load_profile.png", dpi=120)
    plt.close(fig)
    # 3. wait distribution
    fig, ax = plt.subplots(figsize=(6, 3.5))
    waits = ctx["waits"]
    bins = np.arange(0, max(max((w.max() for w in waits.values()), default=1.0), 1.0) + 1.0, 1.0)
    ax.hist(list(waits.values()), bins=bins.tolist(), label=list(waits), rwidth=0.9)
    ax.set(xlabel="queue wait [h]", ylabel="EVs", title="Wait-time distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "wait_distribution.png", dpi=120)
    plt.close(fig)


def _search_plots(out: Path, ctx: dict[str, Any], plt: Any) -> None:
    """Convergence of the searches at equal budgets, and station utilisation beside the paper's Table 7."""
    # 4. convergence
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method, (evals, curves) in ctx["convergence"].items():
        for i, (e, c) in enumerate(zip(evals, curves)):
            ax.plot(
                e,
                c,
                color={"eho": "C0", "de": "C1", "random": "C2"}[method],
                alpha=0.7,
                label=method if i == 0 else None,
            )
    ax.set(xlabel="objective evaluations", ylabel="best J (to maximise)", title="Convergence at equal budgets")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "convergence.png", dpi=120)
    plt.close(fig)
    # 5. station utilisation
    fig, ax = plt.subplots(figsize=(7, 3.5))
    util = ctx["util"]
    w = 0.8 / max(len(util), 1)
    for i, (name, u) in enumerate(util.items()):
        ax.bar(np.arange(len(u)) + 1 + (i - (len(util) - 1) / 2) * w, 100 * u, width=w, label=name)
    ax.plot(np.arange(len(TABLE7)) + 1, TABLE7, "k_", markersize=14, label="paper (optimised)")
    ax.set(xlabel="station", ylabel="port utilisation [%]", title="Station utilisation (share of port-hours)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "station_utilisation.png", dpi=120)
    plt.close(fig)


def _pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (more revenue ``x`` and less ``y``), in order of ``x``."""
    pts = np.column_stack([x, y])
    front = [
        i
        for i, (rv, yv) in enumerate(pts)
        if not np.any((pts[:, 0] >= rv) & (pts[:, 1] <= yv) & ((pts[:, 0] > rv) | (pts[:, 1] < yv)))
    ]
    return np.array(sorted(front, key=lambda i: pts[i, 0]), int)


def _weight_pareto(plt: Any, out: Path, ws: pd.DataFrame) -> None:
    """``weight_pareto.png``: DR revenue against grid stress and against mean wait, per weight set and method.

    One colour scale (our mean wait [h], shared by both panels and both methods) with its colour bar in its own
    space; weight labels only on our Pareto-front points, staggered so that they do not overlap.
    """
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    norm = Normalize(float(ws["wait_mean_h"].min()), float(ws["wait_mean_h"].max()) or 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    panels = [
        (
            "load_variance_kw2",
            "paper_grid_stress_kw2",
            "grid stress (load variance) [kW²]",
            "DR revenue vs grid stress",
        ),
        ("wait_mean_h", "paper_wait_h", "mean queue wait [h]", "DR revenue vs mean wait"),
    ]
    sc = None
    for ax, (ours_y, py, ylabel, title) in zip(axes, panels):
        for method, mk in (("eho", "o"), ("de", "s")):
            d = ws[ws.method == method]
            sc = ax.scatter(
                d["dr_revenue_usd"],
                d[ours_y],
                c=d["wait_mean_h"],
                cmap="viridis",
                norm=norm,
                marker=mk,
                edgecolors="k",
                linewidths=0.4,
                zorder=3,
            )
        front = _pareto_front(ws["dr_revenue_usd"].to_numpy(float), ws[ours_y].to_numpy(float))
        f = ws.iloc[front]
        ax.plot(f["dr_revenue_usd"], f[ours_y], "k--", lw=0.8, zorder=2)
        for j, r in enumerate(f.itertuples()):  # staggered above/below the front
            ax.annotate(
                str(r.weights),
                (r.dr_revenue_usd, getattr(r, ours_y)),
                fontsize=7,
                xytext=(4, 8 if j % 2 == 0 else -12),
                textcoords="offset points",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
            )
        d = ws[ws.method == "eho"]
        ax.scatter(d["paper_dr_benefit_usd"], d[py], marker="x", color="r", zorder=4)
        ax.set(xlabel="DR revenue [$/day]", ylabel=ylabel, title=title)
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.grid(alpha=0.3)
    fig.legend(
        handles=[
            Line2D([], [], marker="o", ls="", mfc="w", mec="k", label="ours, EHO"),
            Line2D([], [], marker="s", ls="", mfc="w", mec="k", label="ours, DE (same budget)"),
            Line2D([], [], marker="x", ls="", color="r", label="paper (Table 9)"),
            Line2D([], [], ls="--", color="k", lw=0.8, label="our Pareto front (labels: weights)"),
        ],
        loc="outside lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    fig.colorbar(sc, ax=list(axes), label="our mean wait [h] (both panels)", pad=0.01)
    save_figure(fig, out / "weight_pareto.png", dpi=120)
    plt.close(fig)
