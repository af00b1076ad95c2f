"""Attack campaigns and the `003_…` FDI study: points, impact tables paired against clean days, ROC of the χ² test.

A campaign (``evgrid attack``) is a sweep over attack axes (× detection off/on) plus two reference points that share
every replication seed (common random numbers):

* ``baseline`` — the same scenario without attacks and without detection (the clean day every impact is paired
  against);
* ``uncontrolled`` — no attacks and uncontrolled charging (full rate from plug-in): the reference of the *peak
  reduction* ``PR = 1 − peak / peak_uncontrolled`` [%], so "peak-reduction loss" is ``PR_clean − PR_attacked``
  in percentage points, as in `003_…` (23.4 % → 17.1 %).

Impact columns (per point; mean ± half-width of the 95 % CI over replications, paired per seed):

* tariff deviation [%]: change of the mean step price against the clean day, over the whole day and over the
  evening peak 17:00–21:00 (where a peak-time attack is not diluted by the rest of the day);
* peak change [%], peak-reduction loss [pp], cost change [%] (grid + DG cost), user cost change [%];
* SE |V| RMS error [pu]: root-mean-square over steps and buses of estimated − true |V| (state estimation on), and
  its increase over the clean day;
* Δ voltage-violation [bus·min], Δ line-overload [min], Δ unserved EV energy [kWh]: absolute differences;
* report monitor (``detection.enabled``): detection rate (share of attacked stations flagged), false-alarm rate
  (share of clean stations flagged), time to detect [min];
* χ² test (state estimation on): per-step detection rate on attacked steps, false-alarm rate on clean steps, time
  to detect [min], and the AUC of the χ² statistic over all thresholds (``roc.csv``, ``plots/roc.png``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.engine import Point, Study, factorial, parse_grid
from experiments.stats import mean_ci, paired_change, roc
from experiments.store import KPI_PREFIX, Store, StoreError
from sim.scenario import Scenario

CLEAN = {"attacks": [], "detection.enabled": False}
UNCONTROLLED = {"attacks": [], "detection.enabled": False, "market.mechanism": "uncontrolled"}
HEADLINE = [
    "price_mean_usd_per_mwh",
    "peak_load_kw",
    "total_cost_usd",
    "detection_rate",
    "false_alarm_rate",
    "se_vm_rmse_pu",
    "ev_unserved_kwh",
]


def make_attack_study(scenario: Scenario, axes: list[str], *, n: int, extra: dict[str, Any] | None = None) -> Study:
    """Campaign points: the attack axes (full factorial), then ``baseline`` and ``uncontrolled`` (see module doc).

    With state estimation on, every replication's steps table is stored, for the ROC of the χ² statistic.
    """
    points = factorial([parse_grid(a) for a in axes])
    points.append(Point(len(points), dict(CLEAN), "baseline"))
    points.append(Point(len(points), dict(UNCONTROLLED), "uncontrolled"))
    series = ("steps",) if scenario.detection.state_estimation else ()
    return Study(
        "sweep",
        scenario,
        points,
        n,
        scenario.seed,
        series,
        extra={"paper_table": "attack-impact", "headline_kpis": HEADLINE, "roc": bool(series), **(extra or {})},
    )


def _by_label(manifest: dict[str, Any], label: str) -> int | None:
    return next((int(p["index"]) for p in manifest["points"] if p["label"] == label), None)


def _fmt(m: float, lo: float, hi: float, digits: int = 2) -> str:
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f}" if not np.isfinite(lo) else f"{m:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def _paired(reps: pd.DataFrame, kpi: str, pt: int, base: int, *, relative: bool) -> tuple[float, float, float]:
    if f"{KPI_PREFIX}{kpi}" not in reps.columns:
        return np.nan, np.nan, np.nan
    ch = paired_change(reps, kpi, base, relative=relative)
    row = ch[ch["point"] == pt]
    return (
        (np.nan,) * 3
        if row.empty
        else (float(row.iloc[0]["mean"]), float(row.iloc[0]["ci_low"]), float(row.iloc[0]["ci_high"]))
    )


def _mean(reps: pd.DataFrame, kpi: str, pt: int) -> tuple[float, float, float]:
    col = f"{KPI_PREFIX}{kpi}"
    if col not in reps.columns:
        return np.nan, np.nan, np.nan
    ok = reps[(reps["point"] == pt) & (reps["status"] == "ok")]
    m, _, _, lo, hi = mean_ci(pd.to_numeric(ok[col], errors="coerce").to_numpy())
    return m, lo, hi


def peak_reduction(reps: pd.DataFrame, pt: int, unc: int) -> pd.Series:
    """Per replication (same seed): ``100 · (1 − peak_pt / peak_uncontrolled)`` [%], indexed by rep (empty when
    either point has no successful replication)."""
    ok = reps[reps["status"] == "ok"]
    wide = ok.pivot_table(index="rep", columns="point", values=f"{KPI_PREFIX}peak_load_kw", aggfunc="first")
    if pt not in wide or unc not in wide:
        return pd.Series(dtype=float)
    return (100.0 * (1.0 - wide[pt] / wide[unc])).dropna()


def impact_row(reps: pd.DataFrame, manifest: dict[str, Any], pt: int, aucs: dict[int, float]) -> dict[str, Any]:
    """Every impact and detection column of one point (see module docstring)."""
    base = _by_label(manifest, "baseline")
    unc = _by_label(manifest, "uncontrolled")
    if base is None:
        raise ValueError("manifest.points: impact_row needs a point labelled 'baseline' (the paired reference)")
    row: dict[str, Any] = {}
    for kpi, name in (
        ("price_mean_usd_per_mwh", "tariff deviation [%]"),
        ("price_peak_mean_usd_per_mwh", "tariff deviation 17–21 h [%]"),
        ("peak_load_kw", "peak change [%]"),
        ("total_cost_usd", "cost change [%]"),
        ("user_cost_usd", "user cost change [%]"),
    ):
        row[name] = _fmt(*_paired(reps, kpi, pt, base, relative=True))
    if unc is not None:
        d = (peak_reduction(reps, base, unc) - peak_reduction(reps, pt, unc)).dropna()
        m, _, _, lo, hi = mean_ci(d.to_numpy())
        row["peak-reduction loss [pp]"] = _fmt(m, lo, hi)
    if f"{KPI_PREFIX}se_vm_rmse_pu" in reps.columns:
        row["SE |V| RMS error [pu]"] = _fmt(*_mean(reps, "se_vm_rmse_pu", pt), digits=4)
        row["Δ SE |V| RMS error [pu]"] = _fmt(*_paired(reps, "se_vm_rmse_pu", pt, base, relative=False), digits=4)
    for kpi, name in (
        ("voltage_violation_bus_minutes", "Δ voltage violation [bus·min]"),
        ("line_overload_minutes", "Δ line overload [min]"),
        ("ev_unserved_kwh", "Δ unserved EV energy [kWh]"),
    ):
        row[name] = _fmt(*_paired(reps, kpi, pt, base, relative=False), digits=1)
    for kpi, name in (
        ("detection_rate", "detection rate"),
        ("false_alarm_rate", "false-alarm rate"),
        ("time_to_detect_min", "time to detect [min]"),
        ("se_detection_rate", "χ² detection rate"),
        ("se_false_alarm_rate", "χ² false-alarm rate"),
        ("se_time_to_detect_min", "χ² time to detect [min]"),
    ):
        if f"{KPI_PREFIX}{kpi}" in reps.columns:
            row[name] = _fmt(*_mean(reps, kpi, pt))
    if pt in aucs:
        row["χ² AUC"] = f"{aucs[pt]:.3f}"
    return row


def table_attack_impact(
    reps: pd.DataFrame, manifest: dict[str, Any], aucs: dict[int, float] | None = None
) -> pd.DataFrame:
    """One row per attacked point: impact against the clean day (paired) and detection (see module docstring)."""
    base = _by_label(manifest, "baseline")
    if base is None:
        return pd.DataFrame()
    rows = []
    for p in manifest["points"]:
        if p["label"] in ("baseline", "uncontrolled"):
            continue
        rows.append({"point": p["label"], **impact_row(reps, manifest, int(p["index"]), aucs or {})})
    out = pd.DataFrame(rows)
    kinds = {a.get("kind") for a in (manifest.get("scenario_data") or {}).get("attacks", [])}
    if len(out) and "station-inflation" in kinds:
        out["paper tariff dev. [%]"] = 12.6  # 003: 15 % of stations inflating demand at peak
    return out


# ---------------------------------------------------------------------------------------------------- 003 study
PAPER_003 = {"tariff_deviation_pct": 12.6, "peak_reduction_clean_pct": 23.4, "peak_reduction_elasticity_pct": 17.1}


def table_003_fdi(reps: pd.DataFrame, manifest: dict[str, Any], aucs: dict[int, float] | None = None) -> pd.DataFrame:
    """`003_…` FDI paragraph beside ours: clean peak reduction; tariff deviation for 5/10/15 % of stations
    inflating demand at peak, without and with detection; peak reduction under ±10 % elasticity perturbation."""
    base, unc = _by_label(manifest, "baseline"), _by_label(manifest, "uncontrolled")
    rows: list[dict[str, Any]] = []
    if base is None:
        return pd.DataFrame(rows)

    def pr(pt: int) -> str:
        if unc is None:
            return "n/a"
        m, _, _, lo, hi = mean_ci(peak_reduction(reps, pt, unc).to_numpy())
        return _fmt(m, lo, hi, 1)

    rows.append(
        {
            "case": "clean",
            "metric": "peak reduction vs uncontrolled [%]",
            "paper": PAPER_003["peak_reduction_clean_pct"],
            "ours": pr(base),
        }
    )
    for p in manifest["points"]:
        label, pt = p["label"], int(p["index"])
        if label in ("baseline", "uncontrolled"):
            continue
        if label.startswith("elasticity"):
            rows.append(
                {
                    "case": label,
                    "metric": "peak reduction vs uncontrolled [%]",
                    "paper": PAPER_003["peak_reduction_elasticity_pct"],
                    "ours": pr(pt),
                }
            )
            rows.append(
                {
                    "case": label,
                    "metric": "tariff deviation [%]",
                    "paper": "",
                    "ours": _fmt(*_paired(reps, "price_mean_usd_per_mwh", pt, base, relative=True)),
                }
            )
        else:
            paper = PAPER_003["tariff_deviation_pct"] if label == "inflation 15 %" else ""
            rows.append(
                {
                    "case": label,
                    "metric": "tariff deviation, 17–21 h [%]",
                    "paper": paper,
                    "ours": _fmt(*_paired(reps, "price_peak_mean_usd_per_mwh", pt, base, relative=True)),
                }
            )
            rows.append(
                {
                    "case": label,
                    "metric": "tariff deviation, whole day [%]",
                    "paper": "",
                    "ours": _fmt(*_paired(reps, "price_mean_usd_per_mwh", pt, base, relative=True)),
                }
            )
            rows.append(
                {
                    "case": label,
                    "metric": "peak change [%]",
                    "paper": "",
                    "ours": _fmt(*_paired(reps, "peak_load_kw", pt, base, relative=True)),
                }
            )
            if f"{KPI_PREFIX}detection_rate" in reps.columns and "detection" in label:
                rows.append(
                    {
                        "case": label,
                        "metric": "stations detected [share]",
                        "paper": "",
                        "ours": _fmt(*_mean(reps, "detection_rate", pt)),
                    }
                )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- ROC
def study_roc(study_dir: str | Path, manifest: dict[str, Any], *, plots: bool = True) -> dict[int, float]:
    """ROC of the χ² statistic per attacked point, pooled over replications (stored steps tables).

    Writes ``roc.csv`` (point, label, threshold, tpr, fpr, auc) and ``plots/roc.png``; returns AUC per point.
    Points without attacked or without clean steps are left out (their ROC is undefined).
    """
    try:
        steps = Store(study_dir).load_timeseries("steps")
    except StoreError:
        return {}
    if "se_objective" not in steps.columns:
        return {}
    labels = {int(p["index"]): p["label"] for p in manifest["points"]}
    truth = "measurements_attacked"
    frames, aucs = [], {}
    for pt, g in steps.groupby("point"):
        if labels.get(int(pt)) in ("baseline", "uncontrolled") or truth not in g or g[truth].isna().all():
            continue
        y = g[truth].fillna(False).astype(bool).to_numpy()
        if not y.any() or y.all():
            continue
        curve = roc(g["se_objective"].to_numpy(float), y)
        aucs[int(pt)] = curve.attrs["auc"]
        frames.append(curve.assign(point=int(pt), label=labels.get(int(pt), ""), auc=curve.attrs["auc"]))
    if not frames:
        return aucs
    table = pd.concat(frames, ignore_index=True)
    root = Path(study_dir)
    table.to_csv(root / "roc.csv", index=False)
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 5))
        for (_pt, label), g in table.groupby(["point", "label"]):
            ax.step(g["fpr"], g["tpr"], where="post", label=f"{label} (AUC {g['auc'].iloc[0]:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("false-alarm rate (clean steps)")
        ax.set_ylabel("detection rate (attacked steps)")
        ax.set_title(
            "ROC of the χ² test of the state estimate\n(all thresholds, steps pooled over replications)", fontsize=9
        )
        ax.legend(fontsize=7, loc="lower right")
        (root / "plots").mkdir(exist_ok=True)
        from experiments.plotting.common import formats, save_figure, scenario_formats

        with formats(scenario_formats(manifest.get("scenario_data") or {})):
            save_figure(fig, root / "plots" / "roc.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
    return aucs
