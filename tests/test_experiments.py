"""Experiments engine: seeds independent of backend, resumable store, failures as data, sweeps with CRN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.cli import app
from experiments.engine import (
    FAULT_ENV,
    Point,
    Study,
    expand_override,
    factorial,
    load_study_file,
    make_sweep,
    one_at_a_time,
    parse_grid,
    run_study,
)
from experiments.report import report
from experiments.stats import mean_ci, paired_change
from experiments.store import Store, StoreError
from sim.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["fleet.n_evs=40", "time.horizon_h=6"]
runner = CliRunner()


def kpis(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in df.columns if c.startswith("kpi.") and not c.startswith("kpi.time_")]
    return df[["point", "rep", *cols]].reset_index(drop=True)


def mc_study(n: int = 4) -> Study:
    sc = load_scenario("default", SMALL, 5)
    return Study("montecarlo", sc, [Point(0, {}, "scenario")], n, sc.seed)


@pytest.mark.slow
def test_replications_identical_on_every_backend(tmp_path: Path) -> None:
    frames = {}
    for name, kw in {
        "one": {"workers": 1},
        "two": {"workers": 2},
        "dask": {"workers": 2, "scheduler": "local"},
    }.items():
        store = Store(tmp_path / name)
        counts = run_study(mc_study(), store, **kw)
        assert counts == {"ok": 4, "failed": 0, "skipped": 0}
        frames[name] = kpis(store.load())
    pd.testing.assert_frame_equal(frames["one"], frames["two"])
    pd.testing.assert_frame_equal(frames["one"], frames["dask"])
    assert frames["one"]["kpi.peak_load_kw"].nunique() > 1  # replications really differ


def test_replication_seed_does_not_depend_on_n(tmp_path: Path) -> None:
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    run_study(mc_study(2), a)
    run_study(mc_study(3), b)
    pd.testing.assert_frame_equal(kpis(a.load()), kpis(b.load()).iloc[:2])


def test_failed_replication_is_recorded_and_the_rest_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_ENV, "1")
    store = Store(tmp_path / "s")
    counts = run_study(mc_study(3), store)
    assert counts["ok"] == 2 and counts["failed"] == 1
    df = store.load()
    bad = df[df["status"] == "failed"].iloc[0]
    assert bad["rep"] == 1 and "fault injected" in bad["error"] and "Traceback" in bad["traceback"]
    out = report(tmp_path / "s", plots=False, print_tables=False)
    assert out["n_failed"] == 1 and "Failed replications" in (tmp_path / "s" / "summary.md").read_text()
    # resume retries the failure once the fault is gone, and touches nothing else
    monkeypatch.delenv(FAULT_ENV)
    before = {p.name: p.stat().st_mtime_ns for p in store.parts_dir.iterdir()}
    counts = run_study(mc_study(3), store, resume=True)
    assert counts == {"ok": 1, "failed": 0, "skipped": 2}
    after = {p.name: p.stat().st_mtime_ns for p in store.parts_dir.iterdir()}
    assert all(after[k] == v for k, v in before.items() if k != "p0000_r000001.parquet")
    assert (store.load()["status"] == "ok").all()


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "experiments.cli",
        "montecarlo",
        "default",
        "-n",
        "60",
        "--workers",
        "1",
        "--seed",
        "5",
        "-q",
        "--no-plots",
        *sum((["--set", s] for s in SMALL), []),
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*args, "--out", str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    parts = killed / "parts"
    deadline = time.time() + 120
    while time.time() < deadline:
        if parts.exists() and len(list(parts.glob("p*.parquet"))) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(parts.glob("p*.parquet")))
    assert 3 <= n_before < 60, "the study should have been killed mid-way"
    res = subprocess.run([*args, "--out", str(killed), "--resume"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"{n_before} already stored" in res.stdout
    full = tmp_path / "full"
    subprocess.run([*args, "--out", str(full)], cwd=ROOT, check=True, capture_output=True)
    a, b = Store(killed).load(), Store(full).load()
    assert len(a) == 60 and not a.duplicated(["point", "rep"]).any()
    pd.testing.assert_frame_equal(kpis(a), kpis(b))
    assert not list(parts.glob(".tmp-*")), "a temporary part survived"


def test_store_refuses_to_mix_studies(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    run_study(mc_study(1), store)
    with pytest.raises(StoreError, match="--resume"):
        run_study(mc_study(1), store)
    other = Study("montecarlo", load_scenario("default", SMALL, 6), [Point(0, {}, "scenario")], 1, 6)
    with pytest.raises(StoreError, match="differs"):
        run_study(other, store, resume=True)


@pytest.mark.slow
def test_sweep_uses_common_random_numbers_and_reports(tmp_path: Path) -> None:
    sc = load_scenario("default", SMALL, 2)
    study = make_sweep(sc, ["dr.dr_max=0.05,0.25"], n=3, baseline=["market.mechanism=uncontrolled"])
    assert [p.label for p in study.points] == ["dr.dr_max=0.05", "dr.dr_max=0.25", "baseline"]
    store = Store(tmp_path / "sw")
    run_study(study, store, workers=1)
    df = store.load()
    # same replication seed at every point: the fleet (and so the number of EVs) is identical
    n_evs = df.pivot(index="rep", columns="point", values="kpi.n_evs")
    assert (n_evs.nunique(axis=1) == 1).all()
    assert df["param.dr.dr_max"].dropna().tolist() == [0.05] * 3 + [0.25] * 3
    ch = paired_change(df, "peak_load_kw", baseline_point=2)
    assert set(ch["point"]) == {0, 1, 2} and ch.set_index("point").loc[2, "mean"] == 0
    out = report(tmp_path / "sw", plots=True, print_tables=False)
    assert (tmp_path / "sw" / "summary.csv").is_file() and out["plots"]
    # the report is rebuilt from the store alone
    (tmp_path / "sw" / "summary.csv").unlink()
    res = runner.invoke(app, ["report", str(tmp_path / "sw"), "--no-plots"])
    assert res.exit_code == 0 and (tmp_path / "sw" / "summary.csv").is_file()


def test_grid_parsing_aliases_and_designs() -> None:
    assert parse_grid("dr.participation=0:0.6:4") == ("dr.participation", [0.0, 0.2, 0.4, 0.6])
    assert parse_grid("ev.elasticity=-0.1,-0.3,-0.5") == ("ev.elasticity", [-0.1, -0.3, -0.5])
    assert parse_grid("market.mechanism=uncontrolled,elasticity-dr")[1] == ["uncontrolled", "elasticity-dr"]
    with pytest.raises(ScenarioError, match="start:stop:count"):
        parse_grid("x=0:1:zero")
    assert expand_override("dr.participation", 0.2, 2) == [
        "fleet.participation=0.2",
        "market.params.elasticity-dr.participation=0.2",
    ]
    assert "fleet.groups.1.elasticity={low = -0.3, high = -0.3}" in expand_override("ev.elasticity", -0.3, 2)
    grids = [("a", [1, 2]), ("b", [3, 4, 5])]
    assert len(factorial(grids)) == 6 and factorial(grids)[5].params == {"a": 2, "b": 5}
    oat = one_at_a_time(grids)
    assert oat[0].label == "baseline" and len(oat) == 6 and oat[3].params == {"b": 3}


def test_bad_grid_fails_before_running(tmp_path: Path) -> None:
    res = runner.invoke(app, ["sweep", "default", "--grid", "dr.dr_max=0.1,7", "-n", "2", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "dr_max" in res.output and not (tmp_path / "x").exists()
    res = runner.invoke(app, ["montecarlo", "default", "-n", "0", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "-n" in res.output and not (tmp_path / "y").exists()


def test_ready_studies_load() -> None:
    for name in ("002-dr-max", "002-participation", "002-penetration", "002-dg-cost", "default-montecarlo"):
        study, label = load_study_file(name, n=2)
        assert label == name and study.n == 2 and study.points
    study, _ = load_study_file("002-dr-max")
    assert [p.label for p in study.points][-1] == "baseline" and study.extra["paper_table"] == "002-table7"


def test_mean_ci_matches_textbook() -> None:
    m, s, se, lo, hi = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert (m, round(s, 6)) == (2.5, round(np.std([1, 2, 3, 4], ddof=1), 6))
    assert hi - m == pytest.approx(3.182446 * se, rel=1e-5)  # t(0.975, 3)


def test_manifest_records_the_study(tmp_path: Path) -> None:
    store = Store(tmp_path / "m")
    run_study(mc_study(1), store)
    man = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert man["kind"] == "montecarlo" and man["root_seed"] == 5 and man["versions"]["pandapower"]
    row = store.load().iloc[0]
    assert row["root_seed"] == 5 and row["scenario_hash"] and json.loads(row["versions"])["numpy"]


def test_timeseries_are_stored_per_replication(tmp_path: Path) -> None:
    sc = load_scenario("default", SMALL, 5)
    store = Store(tmp_path / "ts")
    run_study(Study("montecarlo", sc, [Point(0, {}, "scenario")], 2, sc.seed, ("steps",)), store)
    steps = store.load_timeseries("steps")
    assert set(steps["rep"]) == {0, 1} and len(steps) == 2 * sc.time.n_steps
    with pytest.raises(StoreError, match="--timeseries bus"):
        store.load_timeseries("bus")
