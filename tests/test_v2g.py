"""V2G in the mechanisms (issue 21): `elasticity-dr` levels the load with discharge, `milp` discharges when it pays,
`v2g_share` changes the results of every mechanism that accepts it, and the documented figures match the code."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.base import EVFlex, MarketConfigError, MarketRequest
from markets.elasticity_dr import ElasticityDR
from markets.v2g import level_with_v2g
from sim.model import CoSimulation
from sim.scenario import load_scenario

PEAKY = np.array([100.0, 100.0, 100.0, 180.0, 200.0, 180.0, 100.0, 60.0, 40.0, 40.0, 60.0, 100.0])


def one_ev(**kw: object) -> EVFlex:
    base: dict[str, object] = {
        "ev_id": [0],
        "bus": [0],
        "station": [0],
        "start_slot": [0],
        "end_slot": [12],
        "end_frac": [1.0],
        "e_need_kwh": [10.0],
        "p_max_kw": [7.0],
        "p_min_kw": [-5.0],
        "eta_ch": [0.92],
        "participates": [True],
        "elasticity": [-0.3],
        "eta_dis": [0.9],
        "e_kwh": [20.0],
        "e_cap_kwh": [40.0],
        "e_floor_kwh": [8.0],
    }
    base.update(kw)
    return EVFlex(**{k: np.asarray(v) for k, v in base.items()})  # type: ignore[arg-type]


def battery_kwh(evs: EVFlex, p: np.ndarray, dt_h: float) -> np.ndarray:
    return (np.where(p > 0, p * evs.eta_ch[:, None], p / evs.eta_dis[:, None]) * dt_h).sum(axis=1)


def test_levelling_discharges_into_the_peak_and_keeps_the_energy() -> None:
    evs = one_ev()
    dt = 1.0
    charge_only = np.zeros((1, 12))
    charge_only[0, 8:10] = 10.0 / 0.92 / 2  # the valley fill's answer: the two lowest slots
    load = PEAKY + charge_only[0]
    p = level_with_v2g(evs, charge_only, np.array([0]), load, dt)
    assert p[0, 4] == pytest.approx(-5.0)  # the top of the peak, at the discharge limit
    assert (p[0, :7] <= 1e-9).all() and (p[0, 7:] >= -1e-9).all()  # discharge in the peak, recharge in the valley
    assert battery_kwh(evs, p, dt)[0] == pytest.approx(battery_kwh(evs, charge_only, dt)[0], abs=1e-6)
    assert (PEAKY + p[0]).max() < load.max() - 4.9
    path = evs.e_kwh[0] + np.cumsum(np.where(p[0] > 0, p[0] * 0.92, p[0] / 0.9)) * dt
    assert path.min() >= evs.e_floor_kwh[0] - 1e-9 and path.max() <= evs.e_cap_kwh[0] + 1e-9


def test_levelling_keeps_the_floor_the_cap_and_the_charge_only_plan_when_it_cannot_discharge() -> None:
    dt = 1.0
    charge_only = np.zeros((1, 12))
    charge_only[0, 8:10] = 10.0 / 0.92 / 2
    load = PEAKY + charge_only[0]
    at_floor = one_ev(e_kwh=[8.0], e_floor_kwh=[8.0])  # arrives at its floor and the peak comes first
    assert np.array_equal(level_with_v2g(at_floor, charge_only, np.array([0]), load, dt), charge_only)
    # a station cap of 0 leaves no room to recharge: the plan that discharges is refused
    capped = level_with_v2g(one_ev(), charge_only, np.array([0]), load, dt, np.array([0.0]), np.zeros((1, 12)))
    assert (capped >= -1e-12).all()


@settings(max_examples=40, deadline=None)
@given(
    e0=st.floats(8.0, 35.0),
    need=st.floats(0.5, 5.0),
    p_dis=st.floats(0.5, 7.0),
    shift=st.integers(0, 11),
)
def test_levelling_never_leaves_the_battery_limits_or_lowers_the_energy(
    e0: float, need: float, p_dis: float, shift: int
) -> None:
    evs = one_ev(e_kwh=[e0], e_need_kwh=[need], p_min_kw=[-p_dis])
    base = np.roll(PEAKY, shift)
    req = MarketRequest(t0_min=0.0, dt_min=60.0, n_slots=12, evs=evs, base_load_kw=base)
    res = ElasticityDR().clear(req)
    p = res.p_kw
    assert (p >= -p_dis - 1e-9).all() and (p <= 7.0 + 1e-9).all()
    path = e0 + np.cumsum(np.where(p[0] > 0, p[0] * 0.92, p[0] / 0.9))
    assert path.min() >= 8.0 - 1e-9 and path.max() <= 40.0 + 1e-9
    charge_only = ElasticityDR(v2g=False).clear(req).p_kw
    assert battery_kwh(evs, p, 1.0)[0] == pytest.approx(battery_kwh(evs, charge_only, 1.0)[0], abs=1e-6)
    assert (base + p[0]).max() <= (base + charge_only[0]).max() + 1e-9  # levelling never raises the peak


def test_v2g_false_makes_elasticity_dr_charge_only_and_validation_say_so() -> None:
    assert ElasticityDR().discharges and not ElasticityDR(v2g=False).discharges
    with pytest.raises(MarketConfigError, match="market.params.v2g"):
        ElasticityDR(v2g="yes")
    sc = load_scenario("default", ["fleet.groups.0.v2g_share=0.3", "market.params.elasticity-dr.v2g=false"])
    from sim.interface import check_fit

    with pytest.raises(MarketConfigError, match="never discharges"):
        check_fit(sc, sc.market.build())


@pytest.mark.parametrize("mechanism", ["milp", "elasticity-dr"])
def test_v2g_share_changes_the_results_of_every_mechanism_that_accepts_it(mechanism: str) -> None:
    small = ["fleet.n_evs=200", f"market.mechanism={mechanism}"]
    if mechanism == "milp":
        small.append("market.params.milp.objective='peak'")
    runs = {}
    for share in ("0.0", "0.5"):
        m = CoSimulation(load_scenario("default", [*small, f"fleet.groups.0.v2g_share={share}"]))
        runs[share] = (m.run().kpis, float(m.fleet.discharged_kwh.sum()), float(m.fleet.degradation_usd.sum()))
    (k0, d0, w0), (k1, d1, w1) = runs["0.0"], runs["0.5"]
    assert d0 == 0 and w0 == 0 and d1 > 1.0 and w1 > 0
    assert k1["peak_load_kw"] < k0["peak_load_kw"]


@pytest.mark.slow
def test_documented_battery_and_v2g_figures_match_the_code() -> None:
    from experiments import battery_tables

    assert battery_tables.main(["--check"]) == 0, "run 'python -m experiments.battery_tables' and commit docs/v2g.md"
