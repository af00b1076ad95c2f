"""Attack taps, the attacker agent and DSO-side detection of falsified station reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.model import CoSimulation
from sim.result import RunResult
from sim.scenario import ScenarioError, load_scenario

BASE = ["fleet.n_evs=300", "market.params.elasticity-dr.reprice='step'"]
INFLATE = 'attacks=[{kind="station-inflation", share=0.3, magnitude=2.0, start_h=4, end_h=10}]'


def run(ov: list[str], seed: int = 3) -> RunResult:
    return CoSimulation(load_scenario("default", BASE + ov, seed)).run()


IDLE = ", ".join(
    [
        '{kind="station-inflation", share=0.5, magnitude=1.0, start_h=100, end_h=200}',
        '{kind="soc-falsification", share=0.5, magnitude=-0.5, start_h=100, end_h=200}',
        '{kind="price-delay", share=0.5, delay_steps=3, start_h=100, end_h=200}',
        '{kind="replay", channel="station_reports", delay_steps=2, start_h=100, end_h=200}',
    ]
)


def test_attacker_without_an_open_window_changes_nothing() -> None:
    clean = run([])
    idle = run([f"attacks=[{IDLE}]"])
    a = {k: v for k, v in clean.kpis.items() if not k.startswith("time_")}
    b = {k: v for k, v in idle.kpis.items() if not k.startswith("time_") and k != "attack_steps"}
    np.testing.assert_equal(a, b)
    assert idle.kpis["attack_steps"] == 0
    assert not idle.tables["steps"]["attacked"].any()
    for name in clean.tables:
        if name != "lsf":
            assert clean.tables[name].equals(idle.tables[name].drop(columns="attacked", errors="ignore")), name


def test_station_inflation_raises_real_time_prices_and_is_labelled() -> None:
    clean, hit = run([]), run([INFLATE])
    assert hit.kpis["attack_steps"] > 0
    p0 = clean.tables["steps"]["price_usd_per_mwh"]
    p1 = hit.tables["steps"]["price_usd_per_mwh"]
    assert p1.mean() > p0.mean()


def test_detection_flags_inflating_stations_and_mitigation_recovers_prices() -> None:
    clean, hit = run([]), run([INFLATE])
    det = run([INFLATE, "detection.enabled=true"])
    assert det.kpis["detection_rate"] >= 0.5
    assert det.kpis["time_to_detect_min"] >= 0
    clean_mean = clean.tables["steps"]["price_usd_per_mwh"].mean()

    def dev(r: Any) -> float:
        return float(abs(r.tables["steps"]["price_usd_per_mwh"].mean() - clean_mean))

    assert dev(det) < dev(hit)


def test_bad_attack_specs_are_one_line_errors() -> None:
    with pytest.raises(ScenarioError, match="attacks.0.kind"):
        load_scenario("default", ['attacks=[{kind="teleport"}]'])
    with pytest.raises(ScenarioError, match="end_h"):
        load_scenario("default", ['attacks=[{kind="elasticity", start_h=5, end_h=2}]'])
    with pytest.raises(ScenarioError, match="attacks.targets"):
        run(['attacks=[{kind="station-inflation", targets=[999]}]'])


def test_elasticity_attack_reaches_the_market() -> None:
    clean = run([])
    hit = run(['attacks=[{kind="elasticity", magnitude=-0.5}]'])
    assert hit.kpis["attack_steps"] > 0
    assert hit.kpis["dr_shifted_kwh"] < clean.kpis["dr_shifted_kwh"]


@pytest.mark.slow
def test_attack_campaign_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from experiments.cli import app

    out = tmp_path / "att"
    res = CliRunner().invoke(
        app,
        [
            "attack",
            "default",
            "--attack",
            'kind="station-inflation", share=0.3, magnitude=2.0, start_h=4, end_h=10',
            "--set",
            "market.params.elasticity-dr.reprice='step'",
            "--set",
            "fleet.n_evs=100",
            "--set",
            "time.horizon_h=12",
            "-n",
            "2",
            "--workers",
            "1",
            "-q",
            "--no-plots",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    import pandas as pd

    table = pd.read_csv(out / "paper_comparison.csv")
    assert len(table) == 2 and "tariff deviation [%]" in table.columns
    res = CliRunner().invoke(app, ["attack", "default", "--out", str(tmp_path / "none")])
    assert res.exit_code == 2 and "--attack" in res.output


def test_state_estimation_catches_naive_bias_but_not_the_stealthy_attack() -> None:
    se = ["detection.state_estimation=true", "fleet.n_evs=100", "time.horizon_h=12"]
    clean = run(se)
    bias = run([*se, 'attacks=[{kind="measurement-bias", share=0.03, magnitude=20, start_h=3, end_h=9}]'])
    stealth = run([*se, 'attacks=[{kind="measurement-stealth", share=0.2, magnitude=0.01, start_h=3, end_h=9}]'])
    assert clean.kpis["se_false_alarm_rate"] <= 0.05
    assert bias.kpis["se_detection_rate"] == 1.0
    assert stealth.kpis["se_detection_rate"] <= 0.1  # passes the chi-square test like clean data ...
    assert stealth.kpis["se_vm_error_max_pu"] > clean.kpis["se_vm_error_max_pu"] + 0.003  # ... yet moves the estimate
    # the estimator only observes, with noise from its own stream: the simulated grid is the same as without it
    plain = run(["fleet.n_evs=100", "time.horizon_h=12"]).tables["steps"]
    assert clean.tables["steps"][plain.columns].equals(plain)


def test_measurement_attacks_need_state_estimation() -> None:
    with pytest.raises(ScenarioError, match="state_estimation"):
        load_scenario("default", ['attacks=[{kind="measurement-bias"}]'])


def test_roc_of_the_chi_square_detector() -> None:
    from experiments.stats import roc

    se = ["detection.state_estimation=true", "fleet.n_evs=100", "time.horizon_h=12"]
    bias = run([*se, 'attacks=[{kind="measurement-bias", share=0.03, magnitude=8, start_h=3, end_h=9}]'])
    stealth = run([*se, 'attacks=[{kind="measurement-stealth", share=0.2, magnitude=0.01, start_h=3, end_h=9}]'])
    for r in (bias, stealth):
        s = r.tables["steps"]
        assert {"se_objective", "se_flagged", "measurements_attacked"} <= set(s.columns)
        assert s["measurements_attacked"].sum() == r.kpis["attack_steps"]
    auc_bias = roc(bias.tables["steps"]["se_objective"], bias.tables["steps"]["measurements_attacked"]).attrs["auc"]
    auc_stealth = roc(stealth.tables["steps"]["se_objective"], stealth.tables["steps"]["measurements_attacked"]).attrs[
        "auc"
    ]
    assert auc_bias > 0.95  # a naive bias separates attacked from clean steps at almost any threshold
    assert auc_stealth < 0.8  # the stealthy attack looks like clean data to the χ² statistic
    curve = roc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    assert curve["tpr"].iloc[0] == 0 and curve["tpr"].iloc[-1] == 1 and curve.attrs["auc"] == pytest.approx(0.75)
