"""Reports of a stored study: summary tables, plots and paper comparisons, regenerated from the store alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.stats import mean_ci, paired_change, summarize
from experiments.store import KPI_PREFIX, Store, StoreError, atomic_write_bytes

# what a report writes into a study directory (plots/ holds further files, written by experiments.study_plots)
OUTPUTS = ("summary.csv", "summary.md", "paper_comparison.csv", "roc.csv")

DEFAULT_HEADLINE = ["peak_load_kw", "energy_losses_kwh", "vdi_pu", "vri_pu", "total_cost_usd", "energy_fulfilment"]


def _point_of(manifest: dict[str, Any], **params: Any) -> int | None:
    for p in manifest["points"]:
        if all(p["params"].get(k) == v for k, v in params.items()) and len(p["params"]) == len(params):
            return int(p["index"])
    return None


def _baseline(manifest: dict[str, Any]) -> int | None:
    """The point labelled "baseline" (same replication seeds as every other point)."""
    return next((int(p["index"]) for p in manifest["points"] if p["label"] == "baseline"), None)


def _label_of(manifest: dict[str, Any]) -> dict[int, str]:
    return {int(p["index"]): p["label"] for p in manifest["points"]}


def _fmt_ci(m: float, lo: float, hi: float, digits: int = 3) -> str:
    if not np.isfinite(m):
        return "n/a"
    if not np.isfinite(lo):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def _kpi_ci(reps: pd.DataFrame, point: int, kpi: str) -> tuple[float, float, float]:
    ok = reps[(reps["point"] == point) & (reps["status"] == "ok")]
    m, _, _, lo, hi = mean_ci(ok[f"{KPI_PREFIX}{kpi}"].to_numpy() if len(ok) else np.zeros(0))
    return m, lo, hi


def _change(reps: pd.DataFrame, kpi: str, point: int, base: int, sign: float = 1.0) -> tuple[float, float, float]:
    ch = paired_change(reps, kpi, base)
    row = ch[ch["point"] == point]
    if row.empty:
        return np.nan, np.nan, np.nan
    r = row.iloc[0]
    lo, hi = sorted((sign * r["ci_low"], sign * r["ci_high"]))
    return sign * r["mean"], lo, hi


def table_002_dr_max(reps: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    """`002_…` Table 7: sensitivity to DR_max (baseline point = no DR, uncontrolled EVs, same seeds)."""
    paper = {
        0.10: {"peak": 6.4, "loss": 412.8, "dloss": -5.1, "vavg": 0.972, "trafo": 91.3},
        0.15: {"peak": 8.9, "loss": 383.6, "dloss": -10.1, "vavg": 0.978, "trafo": 87.5},
        0.20: {"peak": 11.2, "loss": 365.9, "dloss": -13.4, "vavg": 0.982, "trafo": 84.1},
    }
    base = _baseline(manifest)
    rows = []
    for dr, ref in paper.items():
        pt = _point_of(manifest, **{"dr.dr_max": dr})
        if pt is None or base is None:
            continue
        metrics = [
            ("peak load reduction vs no DR [%]", ref["peak"], _change(reps, "peak_load_kw", pt, base, -1.0)),
            ("total energy losses [kWh]", ref["loss"], _kpi_ci(reps, pt, "energy_losses_kwh")),
            ("change in losses vs no DR [%]", ref["dloss"], _change(reps, "energy_losses_kwh", pt, base)),
            ("average bus voltage [pu]", ref["vavg"], _kpi_ci(reps, pt, "vavg_pu")),
            ("max transformer loading [%]", ref["trafo"], _kpi_ci(reps, pt, "max_substation_loading_percent")),
        ]
        rows += [{"DR_max": dr, "metric": name, "paper": p, "ours": _fmt_ci(*ours)} for name, p, ours in metrics]
    return pd.DataFrame(rows)


def table_002_participation(reps: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    """`002_…` Table 8: DR participation 0–60 % (VDI change vs participation 0; ΔLoss vs the no-EV baseline)."""
    paper = {
        0.0: (0.067, 0.0, 3.0, 1.5),
        0.2: (0.062, -4.5, 0.5, 1.4),
        0.4: (0.057, -8.5, -3.2, 1.3),
        0.6: (0.053, -11.3, -6.1, 1.2),
    }
    base = _baseline(manifest)
    zero = _point_of(manifest, **{"dr.participation": 0.0})
    rows = []
    for part, (vri, dvdi, dloss, cost_dev) in paper.items():
        pt = _point_of(manifest, **{"dr.participation": part})
        if pt is None or base is None or zero is None:
            continue
        metrics = [
            ("VRI [pu]", vri, _kpi_ci(reps, pt, "vri_pu")),
            ("VDI change vs participation 0 [%]", dvdi, _change(reps, "vdi_pu", pt, zero)),
            ("ΔLoss vs no EVs [%]", dloss, _change(reps, "energy_losses_kwh", pt, base)),
            ("cost deviation [%] (forecast vs optimised; not modelled)", cost_dev, (np.nan, np.nan, np.nan)),
        ]
        rows += [{"participation": part, "metric": n, "paper": p, "ours": _fmt_ci(*o)} for n, p, o in metrics]
    return pd.DataFrame(rows)


def table_002_penetration(reps: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    """`002_…` §3.2: peak-load increase from 10 % to 30 % EV penetration, uncontrolled vs coordinated."""
    rows = []
    ns = sorted({p["params"].get("ev.n") for p in manifest["points"] if "ev.n" in p["params"]})
    for mech, paper in (("uncontrolled", 52.0), ("elasticity-dr", 18.0)):
        lo = _point_of(manifest, **{"ev.n": ns[0], "market.mechanism": mech}) if ns else None
        hi = _point_of(manifest, **{"ev.n": ns[-1], "market.mechanism": mech}) if ns else None
        if lo is None or hi is None:
            continue
        ours = _change(reps, "peak_load_kw", hi, lo)
        rows.append(
            {
                "mechanism": mech,
                "metric": f"peak load increase, {ns[0]} → {ns[-1]} EVs [%]",
                "paper": paper,
                "ours": _fmt_ci(*ours),
            }
        )
    return pd.DataFrame(rows)


def table_002_dg_cost(reps: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    """`002_…` §3.2: total operating cost change under ±10 % DG cost coefficients (paper: ≈2.7 % on average)."""
    base = _point_of(manifest, **{"dg.cost_scale": 1.0})
    rows = []
    for scale in (0.9, 1.1):
        pt = _point_of(manifest, **{"dg.cost_scale": scale})
        if pt is None or base is None:
            continue
        rows.append(
            {
                "dg_cost_scale": scale,
                "metric": "total cost change [%]",
                "paper": 2.7 if scale > 1 else -2.7,
                "ours": _fmt_ci(*_change(reps, "total_cost_usd", pt, base)),
            }
        )
    return pd.DataFrame(rows)


def table_attack_impact(
    reps: pd.DataFrame, manifest: dict[str, Any], aucs: dict[int, float] | None = None
) -> pd.DataFrame:
    """Attack campaign impact and detection per point (see `experiments.attack_study`)."""
    from experiments.attack_study import table_attack_impact as impact

    return impact(reps, manifest, aucs)


def table_003_fdi(reps: pd.DataFrame, manifest: dict[str, Any], aucs: dict[int, float] | None = None) -> pd.DataFrame:
    """`003_…` FDI numbers beside ours (see `experiments.attack_study`)."""
    from experiments.attack_study import table_003_fdi as fdi

    return fdi(reps, manifest, aucs)


# paper tables from a study's replications and manifest; the attack tables also take the χ² AUC per point
ATTACK_TABLES: dict[str, Callable[[pd.DataFrame, dict[str, Any], dict[int, float] | None], pd.DataFrame]] = {
    "attack-impact": table_attack_impact,
    "003-fdi": table_003_fdi,
}
PAPER_TABLES: dict[str, Callable[[pd.DataFrame, dict[str, Any]], pd.DataFrame]] = {
    "002-table7": table_002_dr_max,
    "002-table8": table_002_participation,
    "002-penetration": table_002_penetration,
    "002-dg-cost": table_002_dg_cost,
}


def _refuse_links(root: Path) -> None:
    """A report never writes through a symbolic link: refuse if any output (or plots/ or a file in it) is one."""
    plots = root / "plots"
    paths = [root / name for name in OUTPUTS] + [plots]
    if plots.is_dir() and not plots.is_symlink():
        paths += sorted(plots.iterdir())
    for path in paths:
        if path.is_symlink():
            raise StoreError(f"{path}: is a symbolic link; the report does not write through links (remove it)")


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` by a new file holding ``text`` (a link at ``path`` is replaced, never followed)."""
    atomic_write_bytes(path, text.encode(), durable=False)


def report(study_dir: str | Path, *, plots: bool = True, print_tables: bool = True) -> dict[str, Any]:
    """(Re)write ``summary.csv``, ``summary.md``, plots and any paper table of a stored study.

    Only verified parts count (see `experiments.store`); parts that are not counted are named in summary.md.
    Raises `StoreError` if an output path is a symbolic link.
    """
    store = Store(study_dir)
    manifest = store.manifest()
    root = Path(study_dir)
    _refuse_links(root)
    reps = store.load()
    labels = _label_of(manifest)
    summary = summarize(reps, labels)
    _write_text(root / "summary.csv", summary.to_csv(index=False))
    headline = [k for k in manifest.get("headline_kpis") or DEFAULT_HEADLINE if f"{KPI_PREFIX}{k}" in reps.columns]
    n_ok = int((reps["status"] == "ok").sum()) if len(reps) else 0
    failed = reps[reps["status"] != "ok"] if len(reps) else reps
    expected = manifest["n"] * len(manifest["points"])
    lines = [
        f"# {manifest['kind']} of {manifest['scenario']} (root seed {manifest['root_seed']})",
        "",
        f"{n_ok} of {expected} replications ok, {len(failed)} failed, {expected - n_ok - len(failed)} missing.",
        "",
    ]
    head = summary[summary["kpi"].isin(headline)] if "kpi" in summary.columns else summary  # none ok: empty
    if len(head):
        lines += ["| point | KPI | n | mean | 95 % CI | MCSE |", "|---|---|---:|---:|---|---:|"]
        for r in head.itertuples():
            lines.append(
                f"| {r.label or r.point} | {r.kpi} | {r.n} | {r.mean:.4g} | [{r.ci_low:.4g}, {r.ci_high:.4g}] "
                f"| {r.mcse:.3g} |"
            )
    if len(failed):
        lines += ["", "## Failed replications", ""]
        lines += [f"- point {r.point}, rep {r.rep}: {r.error}" for r in failed.itertuples()]
    if store.rejected:
        lines += ["", "## Parts not counted (they do not belong to this study; `--resume` runs them again)", ""]
        lines += [f"- {why}" for why in store.rejected]
    out: dict[str, Any] = {
        "summary": summary,
        "n_ok": n_ok,
        "n_failed": len(failed),
        "expected": expected,
        "rejected": list(store.rejected),
    }
    aucs: dict[int, float] = {}
    if manifest.get("roc") and n_ok:
        from experiments.attack_study import study_roc

        aucs = study_roc(root, manifest, plots=plots)
        out["auc"] = aucs
    table_name = manifest.get("paper_table")
    table: pd.DataFrame | None = None
    if table_name in ATTACK_TABLES:
        table = ATTACK_TABLES[table_name](reps, manifest, aucs)
    elif table_name in PAPER_TABLES:
        table = PAPER_TABLES[table_name](reps, manifest)
    if table is not None:
        _write_text(root / "paper_comparison.csv", table.to_csv(index=False))
        lines += [
            "",
            f"## Paper vs ours ({table_name}; ours: mean ± half-width of the 95 % CI)",
            "",
            table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False),
        ]
        out["paper"] = table
    _write_text(root / "summary.md", "\n".join(lines) + "\n")
    if plots and n_ok:
        from experiments.study_plots import plot_study

        ok_reps = reps[reps["status"] == "ok"]
        out["plots"] = plot_study(ok_reps, summary, {**manifest, "headline_kpis": headline}, root / "plots")
    if print_tables:
        _print(manifest, head, out, failed)
    return out


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _print(manifest: dict[str, Any], head: pd.DataFrame, out: dict[str, Any], failed: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.markup import escape

    from experiments.console import fmt_number, make_table

    con = Console()
    cols = ("point", "KPI", "n", "mean", "95 % CI", "MCSE")
    # cells fold instead of ending in '…', so long point labels wrap inside the terminal width
    t = make_table(
        f"{manifest['kind']}: {manifest['scenario']} — {out['n_ok']}/{out['expected']} ok",
        [(c, "left" if c in ("point", "KPI") else "right") for c in cols],
    )
    for r in head.itertuples():
        t.add_row(
            escape(str(r.label or r.point)),
            escape(str(r.kpi)),
            str(r.n),
            fmt_number(r.mean),
            f"[{fmt_number(r.ci_low)}, {fmt_number(r.ci_high)}]",
            fmt_number(r.mcse, 3),
        )
    con.print(t)
    if "paper" in out and len(out["paper"]):
        paper = out["paper"]
        if len(paper.columns) > 8:  # wide impact tables read better one metric per row
            paper = paper.set_index(paper.columns[0]).T.reset_index(names="metric")
        p = make_table("paper vs ours", [(str(c), "left") for c in paper.columns])
        for row in paper.itertuples(index=False):
            p.add_row(*(escape(str(v)) for v in row))
        con.print(p)
    if len(failed):
        con.print(f"[red]{len(failed)} replication(s) failed[/red]; see summary.md for errors")


def load_study(study_dir: str | Path) -> pd.DataFrame:
    """All replications of a stored study as one DataFrame (one row per replication)."""
    return Store(study_dir).load()
