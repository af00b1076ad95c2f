"""Attack kinds beyond report inflation: load redistribution, replay, SOC falsification, price delay."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agents.attacker import redistribute
from sim.model import CoSimulation
from sim.result import RunResult
from sim.scenario import ScenarioError, load_scenario

BASE = ["fleet.n_evs=150", "time.horizon_h=12"]
SE = ["detection.state_estimation=true"]


@functools.cache
def run(*ov: str, seed: int = 3) -> RunResult:
    return CoSimulation(load_scenario("default", [*BASE, *ov], seed)).run()


def model(*ov: str, seed: int = 3) -> CoSimulation:
    m = CoSimulation(load_scenario("default", [*BASE, *ov], seed))
    m.run()
    return m


@settings(max_examples=200, deadline=None)
@given(arrays(float, st.integers(2, 40), elements=st.floats(0, 500)), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_redistribution_keeps_total_load_and_the_per_bus_bound(load, bound, seed) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    side = rng.integers(0, 3, len(load))  # 0 untouched, 1 gains, 2 loses
    d = redistribute(load, side == 1, side == 2, bound)
    assert abs(d.sum()) <= 1e-9 * max(load.sum(), 1.0)
    assert np.all(np.abs(d) <= bound * load + 1e-9)
    assert np.all(d[side == 0] == 0) and np.all(d[side == 1] >= 0) and np.all(d[side == 2] <= 0)


@pytest.mark.slow
def test_load_redistribution_stealthy_passes_chi_square_naive_is_caught() -> None:
    """200 noisy snapshots of one operating point: χ² alarm rate of clean, stealthy and naive measurements."""
    spec = '{kind="load-redistribution", share=0.5, magnitude=0.5, stealth=%s}'
    rates = {}
    for name in ("clean", "true", "false"):
        ov = [*SE, "time.horizon_h=1"] + ([] if name == "clean" else [f"attacks=[{spec % name}]"])
        m = model(*ov)
        est, pf = m.estimator, m.last_pf
        tf = m.taps._transforms["dso_measurements"][0] if name != "clean" else (lambda z, k: (z, False))
        rng = np.random.default_rng(11)
        flags, moved = [], []
        for _ in range(200):
            z0 = est.measure(pf, rng)
            z, hit = tf(z0, 0)
            assert hit == (name != "clean")
            flags.append(est.detect(z, alpha=0.01).flagged)
            moved.append(np.abs(z - z0).max())
        rates[name] = np.mean(flags)
        if name != "clean":  # total P load seen in the injections is unchanged (up to the slack's loss change)
            ms = est.ms
            rows = len(ms.v_buses) + np.arange(1, len(ms.inj_buses))
            assert abs((z - z0)[rows].sum()) < 2e-4  # MW
            assert np.max(moved) > 0.005
    assert abs(rates["true"] - rates["clean"]) <= 0.03  # stealthy: at the clean rate (α = 1 %)
    assert rates["false"] >= 0.95  # naive: the injections disagree with flows and voltages


def test_load_redistribution_in_a_run_is_labelled_and_moves_only_the_estimate() -> None:
    clean = run(*SE)
    lr = run(*SE, 'attacks=[{kind="load-redistribution", share=0.4, magnitude=0.3, start_h=3, end_h=9, stealth=true}]')
    s = lr.tables["steps"]
    assert s["measurements_attacked"].sum() == s["attacked"].sum() == lr.kpis["attack_steps"] == 24
    assert lr.kpis["se_detection_rate"] <= 0.1
    assert lr.kpis["se_vm_rmse_pu"] > clean.kpis["se_vm_rmse_pu"]
    assert lr.tables["steps"]["total_load_kw"].equals(clean.tables["steps"]["total_load_kw"])  # grid untouched


def test_replay_reproduces_the_values_of_delay_steps_earlier() -> None:
    m = CoSimulation(
        load_scenario(
            "default",
            [*BASE, 'attacks=[{kind="replay", channel="station_reports", delay_steps=3, start_h=2, end_h=4}]'],
        )
    )
    tf = m.taps._transforms["station_reports"][0]
    sent = {k: np.full((2, 10 - k), float(k)) for k in range(10)}
    got = {k: tf(sent[k], k) for k in range(10)}
    for k in range(10):  # 15-min steps: the window [2 h, 4 h) is steps 8 and 9
        out, hit = got[k]
        if k < 8:
            assert out is sent[k] and not hit
        else:
            assert hit and np.all(out == k - 3) and out.shape == sent[k].shape
    frz = CoSimulation(
        load_scenario(
            "default", [*BASE, 'attacks=[{kind="replay", channel="station_reports", freeze=true, start_h=2, end_h=4}]']
        )
    )
    tf = frz.taps._transforms["station_reports"][0]
    outs = [tf(sent[k], k)[0] for k in range(10)]
    assert np.all(outs[8] == 7) and np.all(outs[9] == 7)


def test_replayed_measurements_pass_chi_square_but_spoil_the_estimate() -> None:
    clean = run(*SE)
    rep = run(*SE, 'attacks=[{kind="replay", channel="dso_measurements", delay_steps=8, start_h=3, end_h=9}]')
    assert rep.kpis["attack_steps"] == 24
    assert rep.kpis["se_detection_rate"] <= 0.1  # old data are self-consistent
    assert rep.kpis["se_vm_rmse_pu"] > 1.5 * clean.kpis["se_vm_rmse_pu"]


def test_soc_falsification_under_reporting_leaves_energy_unserved() -> None:
    clean = run()
    soc = run('attacks=[{kind="soc-falsification", share=0.5, magnitude=-0.5}]')
    assert soc.kpis["attack_steps"] > 0 and soc.tables["steps"]["attacked"].any()
    assert soc.kpis["ev_unserved_kwh"] > clean.kpis["ev_unserved_kwh"] + 10


def test_price_delay_keeps_targeted_evs_on_their_stale_schedule() -> None:
    m = model('attacks=[{kind="price-delay", share=1.0, delay_steps=4}]')
    clean = run()
    hit = m.recorder.model.taps.labels["price_signal"]
    assert any(h for _, h in hit)
    res = m.recorder.result(wall_s=0, cpu_s=0)
    assert res.kpis["ev_unserved_kwh"] > clean.kpis["ev_unserved_kwh"]
    assert (
        res.kpis["peak_load_kw"] != clean.kpis["peak_load_kw"]
        or res.kpis["ev_energy_kwh"] < clean.kpis["ev_energy_kwh"]
    )


def test_idle_measurement_attacks_change_nothing() -> None:
    clean = run(*SE)
    idle = run(
        *SE,
        'attacks=[{kind="load-redistribution", stealth=true, start_h=100, end_h=200}, '
        '{kind="replay", channel="dso_measurements", start_h=100, end_h=200}]',
    )
    assert idle.kpis["attack_steps"] == 0
    for name in clean.tables:
        if name != "lsf":
            assert clean.tables[name].equals(idle.tables[name].drop(columns="attacked", errors="ignore")), name


def test_new_kinds_are_validated() -> None:
    with pytest.raises(ScenarioError, match=r"attacks\.0: .*magnitude.*\[0, 1\]"):
        load_scenario("default", [*SE, 'attacks=[{kind="load-redistribution", magnitude=1.5}]'])
    with pytest.raises(ScenarioError, match="state_estimation"):
        load_scenario("default", ['attacks=[{kind="replay"}]'])
    with pytest.raises(ScenarioError, match="attacks.0.channel"):
        load_scenario("default", ['attacks=[{kind="replay", channel="bids"}]'])
    with pytest.raises(ScenarioError, match="attacks.0.delay_steps"):
        load_scenario("default", ['attacks=[{kind="price-delay", delay_steps=0}]'])
    with pytest.raises(ScenarioError, match="EV 100000"):
        CoSimulation(load_scenario("default", [*BASE, 'attacks=[{kind="soc-falsification", targets=[100000]}]']))


@pytest.mark.slow
def test_the_003_fdi_study_loads_and_a_tiny_version_runs(tmp_path: Path) -> None:
    import pandas as pd

    from experiments.engine import Study, load_study_file, run_study
    from experiments.report import report
    from experiments.store import Store

    st, label = load_study_file("003-fdi")
    assert label == "003-fdi" and st.n == 20 and st.extra["paper_table"] == "003-fdi"
    labels = [p.label for p in st.points]
    assert {"baseline", "uncontrolled", "inflation 15 %", "inflation 15 % + detection", "elasticity -10 %"} <= set(
        labels
    )
    tiny = load_scenario(
        "default", ["fleet.n_evs=60", "time.horizon_h=12", "market.params.elasticity-dr.reprice='step'"]
    )
    small = Study("points", tiny, st.points, 1, tiny.seed, extra=st.extra)
    counts = run_study(small, Store(tmp_path), workers=1)
    assert counts["ok"] == len(labels)
    out = report(tmp_path, plots=False, print_tables=False)
    table = pd.read_csv(tmp_path / "paper_comparison.csv")
    assert len(out["paper"]) == len(table) > 0
    clean = table[table["case"] == "clean"].iloc[0]
    assert clean["paper"] == 23.4 and clean["ours"] != "n/a"
    assert (table["case"] == "inflation 15 %").any()


def test_attack_kinds_are_declared_once_and_the_schema_and_attacker_derive_from_them() -> None:
    """`sim.attack_kinds.KINDS` is the one list: the scenario schema accepts exactly its kinds, the attacker has a
    transform builder for each, and whether an attack needs state estimation follows from its channel."""
    from typing import get_args

    from agents.attacker import Attacker, transform_builder
    from sim.attack_kinds import KINDS
    from sim.scenario import AttackSpec
    from sim.taps import CHANNELS

    assert set(get_args(AttackSpec.model_fields["kind"].annotation)) == set(KINDS)
    for name, kind in KINDS.items():
        assert callable(getattr(Attacker, transform_builder(name), None)), f"no transform builder for {name}"
        assert kind.channel_of("station_reports") in CHANNELS
    on_meas = {name for name in KINDS if AttackSpec(kind=name).on_measurements}
    assert on_meas == {"measurement-bias", "measurement-stealth", "load-redistribution", "replay"}
    assert not AttackSpec(kind="replay", channel="station_reports").on_measurements
    with pytest.raises(ScenarioError, match="attacks.0.kind: Input should be 'station-inflation'"):
        load_scenario("default", ['attacks=[{kind="nope"}]'], 1)


def test_bids_tap_sees_every_real_time_request_and_only_those() -> None:
    """The ``bids`` tap is applied where requests are built (`sim.interface`): each real-time request passes it
    once, on its way to the mechanism; day-ahead requests do not."""
    m = CoSimulation(load_scenario("default", [*BASE, "time.horizon_h=2"], 3))
    seen: list[bool] = []

    def spy(req, k):  # type: ignore[no-untyped-def]
        seen.append(req.day_ahead)
        return req, False

    m.taps.register("bids", spy)
    m.run()
    assert seen and not any(seen)
    assert len(seen) == len(m.taps.labels["bids"])


@pytest.mark.parametrize(
    ("mechanism", "attack", "refused"),
    [
        ("uncontrolled", "{kind='station-inflation', share=0.3, magnitude=0.5}", True),
        ("elasticity-dr", "{kind='station-inflation', share=0.3, magnitude=0.5}", False),
        ("milp", "{kind='elasticity', magnitude=0.1}", True),
        ("elasticity-dr", "{kind='elasticity', magnitude=0.1}", False),
        ("uncontrolled", "{kind='soc-falsification', share=0.3, magnitude=-0.5}", False),
    ],
)
def test_an_attack_on_a_message_the_mechanism_never_reads_is_refused(
    mechanism: str, attack: str, refused: bool
) -> None:
    """It would change nothing and a campaign would report 'no effect' as a finding: one line at validation."""
    from markets.base import MarketConfigError
    from sim.interface import check_fit
    from sim.scenario import load_scenario

    sc = load_scenario("default", [f"market.mechanism='{mechanism}'", f"attacks=[{attack}]"])
    if refused:
        with pytest.raises(MarketConfigError, match=rf"attacks\.0\.kind: .* '{mechanism}' does not read"):
            check_fit(sc, sc.market.build())
    else:
        check_fit(sc, sc.market.build())
