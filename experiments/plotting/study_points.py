"""Studies of named points (``kind = "points"``, e.g. ``003-fdi``): each headline KPI per point, mean with its
95 % confidence interval, so that point-to-point differences are read against the replication noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.plotting.common import _pyplot
from experiments.plotting.study_common import _cap, _empty, _kpi_label, _kpi_name, _n_text, _panels, _plain, _save


def plot_points(summary: pd.DataFrame, kpis: list[str], out_dir: str | Path) -> list[Path]:
    """``points.png``: one panel per KPI, one horizontal bar per point (mean) with its 95 % CI as an error bar.

    Args:
        summary: per-(point, KPI) summary with ``point``, ``label``, ``kpi``, ``mean``, ``ci_low``, ``ci_high``.
        kpis: KPIs to draw (with or without the ``kpi.`` prefix); those absent from the summary are left out.
        out_dir: created if needed.
    """
    if _empty(summary) or "kpi" not in summary:
        return []
    names = [k for k in (_kpi_name(k) for k in kpis) if k in set(summary["kpi"].astype(str))]
    names = _cap(names, "points")
    if not names:
        return []
    plt = _pyplot()
    fig, axes = _panels(plt, len(names), w=5.6, h=0.32 * summary["point"].nunique() + 1.6)
    for ax, kpi in zip(axes, names, strict=True):
        rows = summary[summary["kpi"].astype(str) == kpi].sort_values("point")
        labels = [
            str(lab) if isinstance(lab, str) and lab else f"point {p}"
            for p, lab in zip(rows["point"], rows.get("label", rows["point"]), strict=True)
        ]
        mean = rows["mean"].to_numpy(float)
        lo = np.clip(mean - rows["ci_low"].to_numpy(float), 0, None)
        hi = np.clip(rows["ci_high"].to_numpy(float) - mean, 0, None)
        y = np.arange(len(rows))
        ax.barh(y, mean, xerr=np.vstack([np.nan_to_num(lo), np.nan_to_num(hi)]), color="#7fa7c9", capsize=3)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()  # the study's order, top to bottom
        ax.set_xlabel(_kpi_label(kpi))
        _plain(ax)
    fig.suptitle(f"Mean and 95 % CI per point; {_n_text(summary)}", fontsize=10)
    path = _save(fig, Path(out_dir) / "points.png")
    plt.close(fig)
    return [path]
