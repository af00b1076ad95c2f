"""Statistics of a study: per-point summaries with 95 % confidence intervals and Monte Carlo standard errors,
and paired (common-random-number) differences against a baseline point.

CI of a mean over n replications: ``mean ± t(0.975, n − 1) · s / √n``; the Monte Carlo standard error is
``s / √n``. With CRN, a sweep point and the baseline share replication seeds, so their difference is computed
per replication first (paired), which removes most of the noise they share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from experiments.store import KPI_PREFIX, PARAM_PREFIX


def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float, float]:
    """(mean, std, mcse, ci_low, ci_high) of finite values; NaN where undefined."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return (np.nan,) * 5
    m = float(x.mean())
    if n == 1:
        return m, np.nan, np.nan, np.nan, np.nan
    s = float(x.std(ddof=1))
    se = s / np.sqrt(n)
    h = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return m, s, se, m - h, m + h


def summarize(reps: pd.DataFrame, labels: dict[int, str] | None = None, kpis: list[str] | None = None) -> pd.DataFrame:
    """One row per (point, KPI): n, n_failed, mean, std, mcse, ci_low, ci_high, with the point's parameters."""
    if reps.empty:
        return pd.DataFrame(
            columns=["point", "label", "kpi", "n", "n_failed", "mean", "std", "mcse", "ci_low", "ci_high"]
        )
    kpi_cols = [c for c in reps.columns if c.startswith(KPI_PREFIX)]
    if kpis is not None:
        kpi_cols = [f"{KPI_PREFIX}{k}" for k in kpis if f"{KPI_PREFIX}{k}" in reps.columns]
    params = [c for c in reps.columns if c.startswith(PARAM_PREFIX)]
    rows = []
    for point, g in reps.groupby("point", sort=True):
        ok = g[g["status"] == "ok"]
        first = g.iloc[0]
        base = {"point": int(point), "label": (labels or {}).get(int(point), "")}
        base.update({p: first[p] for p in params})
        for c in kpi_cols:
            vals = pd.to_numeric(ok[c], errors="coerce").to_numpy() if c in ok else np.zeros(0)
            m, s, se, lo, hi = mean_ci(vals)
            rows.append(
                {
                    **base,
                    "kpi": c[len(KPI_PREFIX) :],
                    "n": int(np.isfinite(vals).sum()),
                    "n_failed": int((g["status"] != "ok").sum()),
                    "mean": m,
                    "std": s,
                    "mcse": se,
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
    return pd.DataFrame(rows)


def paired_change(reps: pd.DataFrame, kpi: str, baseline_point: int, *, relative: bool = True) -> pd.DataFrame:
    """Per point: mean and 95 % CI of the per-replication change of ``kpi`` against the baseline point.

    Args:
        reps: loaded store.
        kpi: KPI name (without prefix).
        baseline_point: the point every other point is compared with (same replication seeds).
        relative: percentage change (100·(x − b)/b) instead of the absolute difference.
    """
    col = f"{KPI_PREFIX}{kpi}"
    ok = reps[reps["status"] == "ok"]
    wide = ok.pivot_table(index="rep", columns="point", values=col, aggfunc="first")
    if baseline_point not in wide:
        return pd.DataFrame(columns=["point", "kpi", "mean", "ci_low", "ci_high", "n"])
    b = wide[baseline_point]
    rows = []
    for point in wide.columns:
        d = wide[point] - b
        if relative:
            d = 100.0 * d / b
        m, _, _, lo, hi = mean_ci(d.to_numpy())
        rows.append(
            {"point": int(point), "kpi": kpi, "mean": m, "ci_low": lo, "ci_high": hi, "n": int(d.notna().sum())}
        )
    return pd.DataFrame(rows)


def roc(score: np.ndarray, attacked: np.ndarray) -> pd.DataFrame:
    """ROC curve of a detector that alarms when ``score > threshold``, over every threshold the data allow.

    Args:
        score: detector statistic per step (e.g. the state estimator's χ² objective ``J``; ``inf`` = always alarm).
        attacked: the step's true label (from the attack taps).

    Returns:
        One row per threshold: ``threshold``, ``tpr`` (detection rate on attacked steps), ``fpr`` (false-alarm rate on
        clean steps), from (0, 0) to (1, 1); ``auc`` of the curve in ``df.attrs["auc"]``.
    """
    score = np.asarray(score, float)
    attacked = np.asarray(attacked, bool)
    keep = ~np.isnan(score)
    score, attacked = score[keep], attacked[keep]
    n_pos, n_neg = attacked.sum(), (~attacked).sum()
    thresholds = np.concatenate([[np.inf], np.sort(np.unique(score))[::-1], [-np.inf]])
    tpr = np.array([(score[attacked] > t).sum() / n_pos if n_pos else np.nan for t in thresholds])
    fpr = np.array([(score[~attacked] > t).sum() / n_neg if n_neg else np.nan for t in thresholds])
    df = pd.DataFrame({"threshold": thresholds, "tpr": tpr, "fpr": fpr})
    ok = np.isfinite(tpr) & np.isfinite(fpr)
    df.attrs["auc"] = float(np.trapezoid(tpr[ok], fpr[ok])) if ok.sum() > 1 else float("nan")
    return df
