"""Everything shipped runs (issue 20 item 4), through the command line a user types.

Every scenario in ``experiments/scenarios/`` goes through ``evgrid run NAME --out DIR`` and every study in
``experiments/studies/`` through ``evgrid study NAME --out DIR``, each in a fresh working folder. The lists are
globbed at collection, so a newly shipped file is tested without touching this file, and one that fails turns the
suite red. To keep the file within a few CPU minutes, scenarios run a short horizon (``--set time.horizon_h=…``,
about `SHORT_H` hours, whole steps) and studies two replications per point on one worker (``-n 2 --workers 1``);
everything else is the shipped file as it is.

Checked: exit 0, the files a user is told about (KPIs, tables, plots, provenance; paper comparisons; study
summaries), finite headline KPIs in every run written, and no staging folder left behind.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.engine import STUDY_DIR
from sim.scenario import SCENARIO_DIR, TimeSpec, read_toml

ROOT = Path(__file__).resolve().parents[1]
EVGRID = Path(sys.executable).parent / "evgrid"
SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
STUDIES = sorted(p.stem for p in STUDY_DIR.glob("*.toml"))
SHORT_H = 6.0  # horizon of a scenario's smoke run [h] (at least two market steps)
STUDY_REPS = 2  # replications per study point (two, so that confidence intervals exist)
TIMEOUT_S = 900  # one command, on two busy cores [s]
# KPIs every co-simulation run defines (0 where nothing happens, never NaN)
HEADLINE_KPIS = ("peak_load_kw", "energy_losses_kwh", "vmin_pu", "ev_energy_kwh", "total_cost_usd", "n_steps")
# outcomes of a market study (`evgrid qubo-rtp`) that every run defines (the spread over runs needs two runs)
RTP_OUTCOMES = (
    "peak_reduction_system_percent",
    "renewable_utilisation_rtp",
    "user_cost_change_percent",
    "objective_usd",
)

# Shipped items known to fail, with the reason; strict: once fixed, the XPASS fails and the entry must go
KNOWN_FAILING: dict[str, str] = {}  # scenarios
KNOWN_FAILING_STUDIES: dict[str, str] = {}


def _params(names: list[str], known: dict[str, str]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=known[n])) if n in known else n for n in names]


def short_horizon(name: str) -> list[str]:
    """``--set time.horizon_h=H``: about `SHORT_H` hours in whole market steps (none if the run is shorter)."""
    t = read_toml(SCENARIO_DIR / f"{name}.toml").get("time", {})
    default = TimeSpec()
    dt_min = float(t.get("dt_min", default.dt_min))
    horizon_h = float(t.get("horizon_h", default.horizon_h))
    h = max(math.ceil(SHORT_H * 60 / dt_min), 2) * dt_min / 60
    return ["--set", f"time.horizon_h={h:g}"] if h < horizon_h else []


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # this tree's packages first: the venv's editable install may point at another checkout (a shared venv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [str(EVGRID), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"evgrid {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}"
    )
    return proc


def _no_staging_left(folder: Path) -> None:
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert not hidden, f"staging folders left behind: {hidden}"


def _finite_kpis(path: Path) -> None:
    kpis = json.loads(path.read_text())
    bad = {
        k: kpis.get(k) for k in HEADLINE_KPIS if not isinstance(kpis.get(k), (int, float)) or not math.isfinite(kpis[k])
    }
    assert not bad, f"{path}: headline KPIs not finite: {bad}"


def _finite_column(path: Path, column: str, n_a: str | None = None) -> None:
    """Every entry of ``column`` that reads as a number is finite (text entries, e.g. ranges, are left alone);
    rows whose ``metric`` contains ``n_a`` may be NaN (a KPI that does not apply to this short run)."""
    df = pd.read_csv(path)
    if n_a is not None and "metric" in df:
        df = df[~df["metric"].astype(str).str.contains(n_a)]
    values = pd.to_numeric(df[column].astype(str).str.strip(), errors="coerce")
    numeric = df[column].astype(str).str.strip().str.lower().isin(["nan", "inf", "-inf"]) | values.notna()
    assert numeric.any(), f"{path}: no number in column {column!r}"
    assert values[numeric].map(math.isfinite).all(), (
        f"{path}: non-finite {column}:\n{df[numeric & ~values.map(math.isfinite)]}"
    )


def test_lists_match_the_shipped_files(tmp_path: Path) -> None:
    """`evgrid scenarios` / `evgrid studies` list exactly the shipped files this module runs."""
    listed = [line.split()[0] for line in _cli(tmp_path, "scenarios").stdout.splitlines() if line.strip()]
    assert listed == SCENARIOS
    listed = [line.split()[0] for line in _cli(tmp_path, "studies").stdout.splitlines() if line.strip()]
    assert listed == STUDIES
    assert "default" in SCENARIOS and STUDIES


@pytest.mark.slow
@pytest.mark.parametrize("name", _params(SCENARIOS, KNOWN_FAILING))
def test_shipped_scenario_runs(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli(tmp_path, "run", name, "--out", str(out), "--quiet", *short_horizon(name))
    assert "results written to" in proc.stdout
    assert (out / "provenance.json").is_file()
    _no_staging_left(tmp_path)
    data = read_toml(SCENARIO_DIR / f"{name}.toml")
    if (out / "kpis.json").is_file():  # one co-simulation run
        for f in ("scenario.toml", "tables/steps.parquet", "tables/stations.parquet"):
            assert (out / f).is_file(), f"{name}: {f} missing"
        if data.get("outputs", {}).get("plots", True):
            assert list((out / "plots").glob("*.png")), f"{name}: no plots"
    else:  # a paper comparison: its variants' runs and the table beside the paper's
        assert (out / "paper_comparison.csv").is_file() and (out / "paper_comparison.md").is_file()
        if (out / "outcomes.csv").is_file():  # a market study (qubo-rtp): its outcomes
            outcomes = pd.read_csv(out / "outcomes.csv", index_col=0)["value"]
            bad = {k: outcomes.get(k) for k in RTP_OUTCOMES if not math.isfinite(float(outcomes.get(k, math.nan)))}
            assert not bad, f"{name}: outcomes not finite: {bad}"
        else:
            # on the short horizon no EV may leave yet: energy fulfilment is then n/a, not a number
            gone = [json.loads(p.read_text()).get("n_evs_departed_in_horizon", 1) for p in out.glob("*/kpis.json")]
            _finite_column(out / "paper_comparison.csv", "ours", "fulfilment" if gone and max(gone) == 0 else None)
    runs = sorted(out.rglob("kpis.json"))
    assert runs or (out / "outcomes.csv").is_file(), f"{name}: no run written"
    for path in runs:
        _finite_kpis(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", _params(STUDIES, KNOWN_FAILING_STUDIES))
def test_shipped_study_runs(name: str, tmp_path: Path) -> None:
    out = tmp_path / "study"
    args = ["study", name, "-n", str(STUDY_REPS), "--workers", "1", "--out", str(out), "--quiet"]
    proc = _cli(tmp_path, *args)
    assert " 0 failed" in proc.stdout, proc.stdout[-2000:]
    assert "study stored in" in proc.stdout
    assert "warning" not in proc.stderr.lower(), proc.stderr[-2000:]
    for f in ("summary.csv", "summary.md"):
        assert (out / f).is_file(), f"{name}: {f} missing"
    assert list(out.rglob("*.png")), f"{name}: no plots"
    _no_staging_left(tmp_path)
    summary = pd.read_csv(out / "summary.csv")  # one row per point and KPI
    spec = read_toml(STUDY_DIR / f"{name}.toml")
    points = summary["point"].nunique()
    for kpi in spec.get("headline_kpis", []):
        rows = summary[summary["kpi"] == kpi]
        assert len(rows) == points, f"{name}: headline KPI {kpi} has {len(rows)} rows for {points} points"
        finite = rows["mean"].map(lambda v: isinstance(v, (int, float)) and math.isfinite(v))
        # n = 0: the KPI does not apply at that point (e.g. a detection rate without detection or attack), n/a
        bad = rows[~finite & (rows["n"] > 0)]
        assert bad.empty, f"{name}: {kpi} not finite:\n{bad[['label', 'kpi', 'n', 'n_failed', 'mean']]}"
        assert finite.any(), f"{name}: {kpi} applies at no point"
