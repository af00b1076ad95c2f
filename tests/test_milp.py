"""`milp`: HiGHS's proven optimum, feasible schedules, and the ordering LP ≤ discretised MILP ≤ feasible heuristics."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import markets.base as mb
from markets.base import EVFlex, MarketConfigError, MarketRequest
from markets.milp import MILP, check_schedule, evaluate_cost, project, reference, score

TOL = 1e-6


@st.composite
def small_requests(draw: st.DrawFn, max_evs: int = 6, max_slots: int = 10, dlmp: bool = True) -> MarketRequest:
    """Random small requests: windows with partial last slots, station caps (some tight), tariff or DLMP."""
    n_slots = draw(st.integers(2, max_slots))
    n = draw(st.integers(1, max_evs))
    ints = lambda lo, hi: np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)))  # noqa: E731
    flts = lambda lo, hi, k=n: np.array(draw(st.lists(st.floats(lo, hi), min_size=k, max_size=k)))  # noqa: E731
    start = ints(0, n_slots - 1)
    end = np.minimum(start + ints(1, n_slots), n_slots)
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=ints(0, 2),
        station=ints(0, 2),
        start_slot=start,
        end_slot=end,
        end_frac=flts(0.1, 1.0),
        e_need_kwh=flts(0.0, 40.0),
        p_max_kw=np.array(draw(st.lists(st.sampled_from([3.6, 7.2, 11.0]), min_size=n, max_size=n))),
        p_min_kw=np.zeros(n),
        eta_ch=flts(0.8, 1.0),
        participates=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        elasticity=np.full(n, -0.3),
    )
    base = flts(10.0, 500.0, n_slots)
    caps = draw(st.one_of(st.none(), st.just(np.array([8.0, 15.0, np.inf])), st.just(np.array([30.0, 30.0, 30.0]))))
    kw = {}
    if caps is not None and draw(st.booleans()):
        kw["committed_station_kw"] = np.array(
            draw(st.lists(st.floats(0.0, 20.0), min_size=3 * n_slots, max_size=3 * n_slots))
        ).reshape(3, n_slots)
    if dlmp and draw(st.booleans()):
        kw["dlmp_p_usd_per_mwh"] = np.array(
            draw(st.lists(st.floats(20.0, 200.0), min_size=3 * n_slots, max_size=3 * n_slots))
        ).reshape(n_slots, 3)
    return MarketRequest(
        t0_min=0.0,
        dt_min=draw(st.sampled_from([15.0, 60.0])),
        n_slots=n_slots,
        evs=evs,
        base_load_kw=base,
        price_usd_per_mwh=flts(40.0, 150.0, n_slots),
        station_cap_kw=caps,
        **kw,
    )


def assert_feasible(req: MarketRequest, res: mb.MarketResult) -> None:
    avail = req.evs.availability(req.n_slots)
    assert res.p_kw.shape == (len(req.evs), req.n_slots)
    assert np.all(res.p_kw[avail == 0] == 0)
    viol = check_schedule(req, res.p_kw, res.q_kvar)
    assert max(viol.values()) <= TOL, viol
    assert max(res.violations.values()) <= TOL, res.violations


def on_grid(req: MarketRequest, p: np.ndarray, bits: int) -> bool:
    step = req.evs.p_max_kw / (2**bits - 1)
    k = p / step[:, None]
    return bool(np.all(np.abs(k - np.round(k)) <= 1e-6) and np.all(np.round(k) <= 2**bits - 1) and np.all(k >= -1e-9))


# ------------------------------------------------------------------------------------------- optimality, order
@settings(max_examples=40, deadline=None)
@given(req=small_requests())
def test_lp_is_optimal_feasible_and_matches_its_own_score(req: MarketRequest) -> None:
    res = MILP().clear(req)
    assert res.info["status"] == "optimal" and res.info["has_solution"]
    assert_feasible(req, res)
    # the reported objective is evaluate_cost of the returned schedule and equals HiGHS's objective value
    assert res.objective["objective_usd"] == pytest.approx(evaluate_cost(req, res.p_kw), abs=1e-9)
    assert res.objective["objective_usd"] == pytest.approx(res.info["solver_objective_usd"], rel=1e-7, abs=1e-6)


@settings(max_examples=30, deadline=None)
@given(req=small_requests(max_evs=4, max_slots=6), bits=st.integers(2, 3))
def test_lp_le_milp_le_every_feasible_heuristic(req: MarketRequest, bits: int) -> None:
    lp, _ = reference(req)
    mi, res = reference(req, variant="milp", bits=bits)
    assert res.info["status"] == "optimal"
    assert_feasible(req, res)
    assert on_grid(req, res.p_kw, bits)
    assert lp <= mi + TOL * max(1.0, abs(mi))
    # a finer grid that contains the coarser one (3 levels ⊂ 15 levels for bits 2 → 4) can only do better
    if bits == 2:
        mi4, _ = reference(req, variant="milp", bits=4)
        assert lp - TOL <= mi4 <= mi + TOL * max(1.0, abs(mi))
    for name in ("uncontrolled", "elasticity-dr"):
        heur = mb.get(name)().clear(req)
        # heuristics may break station caps (uncontrolled ignores them): score the nearest-below feasible schedule
        p = heur.p_kw if max(check_schedule(req, heur.p_kw).values()) <= TOL else project(req, heur.p_kw)
        assert max(check_schedule(req, p).values()) <= TOL
        assert lp <= evaluate_cost(req, p) + TOL
        # the discretised optimum beats any heuristic schedule that is feasible on the same grid
        g = project(req, heur.p_kw, bits=bits)
        assert on_grid(req, g, bits) and max(check_schedule(req, g).values()) <= TOL
        assert mi <= evaluate_cost(req, g) + TOL
        scored = score(req, heur, reference_objective=lp)
        assert scored.reference_objective == lp
        assert scored.gap * abs(lp) == pytest.approx(evaluate_cost(req, p) - lp, abs=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_milp_matches_brute_force_on_tiny_instances(seed: int) -> None:
    """All (2^2)^(EVs × slots) grid schedules enumerated (at most 4^6 = 4096): same optimum as HiGHS."""
    rng = np.random.default_rng(seed)
    n, T, bits = int(rng.integers(1, 3)), int(rng.integers(2, 4)), 2
    start = rng.integers(0, T, n)
    end = np.minimum(start + rng.integers(1, T + 1, n), T)
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=np.zeros(n, int),
        station=np.zeros(n, int),
        start_slot=start,
        end_slot=end,
        end_frac=rng.choice([0.5, 1.0], n),
        e_need_kwh=rng.uniform(0, 15, n),
        p_max_kw=rng.choice([3.6, 7.2, 11.0], n),
        p_min_kw=np.zeros(n),
        eta_ch=rng.uniform(0.85, 1.0, n),
        participates=np.ones(n, bool),
        elasticity=np.full(n, -0.3),
    )
    req = MarketRequest(
        t0_min=0,
        dt_min=60,
        n_slots=T,
        evs=evs,
        base_load_kw=rng.uniform(10, 100, T),
        price_usd_per_mwh=rng.uniform(40, 150, T),
        station_cap_kw=np.array([rng.choice([8.0, 12.0, np.inf])]),
    )
    levels = 2**bits - 1
    step = evs.p_max_kw / levels
    kmax = np.floor(evs.availability(T) * levels + 1e-9)
    grid = np.array(list(itertools.product(range(levels + 1), repeat=n * T)), float).reshape(-1, n, T)
    p = grid * step[None, :, None]
    ok = np.all(grid <= kmax[None], axis=(1, 2))
    ok &= np.all(p.sum(axis=1) <= req.station_cap_kw[0] + 1e-9, axis=1)
    ok &= np.all(p.sum(axis=2) * req.dt_h * evs.eta_ch[None] <= evs.e_need_kwh[None] + 1e-9, axis=1)
    costs = [evaluate_cost(req, x) for x in p[ok]]
    best = min(costs)
    got, res = reference(req, variant="milp", bits=bits)
    assert res.info["status"] == "optimal"
    assert got == pytest.approx(best, rel=1e-7, abs=1e-7)


# ------------------------------------------------------------------------------------------- model features
def _feeder_request(voltage: bool, reactive_price: bool = False) -> MarketRequest:
    """Three buses in series (0 = substation): EVs at bus 2 see twice the sensitivity of those at bus 1."""
    T = 4
    evs = EVFlex(
        ev_id=np.arange(4),
        bus=np.array([1, 2, 2, 2]),
        station=np.arange(4),
        start_slot=np.zeros(4, int),
        end_slot=np.full(4, T),
        end_frac=np.ones(4),
        e_need_kwh=np.full(4, 30.0),
        p_max_kw=np.full(4, 11.0),
        p_min_kw=np.zeros(4),
        eta_ch=np.ones(4),
        participates=np.ones(4, bool),
        elasticity=np.full(4, -0.3),
    )
    a = 1e-3  # pu per kW
    kw: dict = {"s_max_kva": np.full(4, 11.0)}
    if voltage:
        kw["voltage"] = mb.VoltageForecast(
            vm_base_pu=np.array([[1.0, 0.99, 0.98]] * T),
            v_min_pu=0.95,
            dv_dp_pu_per_kw=np.array([[0, 0, 0], [0, a, a], [0, a, 2 * a]]),
            dv_dq_pu_per_kvar=np.array([[0, 0, 0], [0, a, a], [0, a, 2 * a]]) * 2,
        )
    if reactive_price:
        kw["dlmp_q_usd_per_mvarh"] = np.full((T, 3), 5.0)
    return MarketRequest(
        t0_min=0,
        dt_min=60,
        n_slots=T,
        evs=evs,
        base_load_kw=np.full(T, 50.0),
        price_usd_per_mwh=np.array([50.0, 60, 70, 80]),
        **kw,
    )


def test_lindistflow_voltage_limit_binds_and_holds() -> None:
    free = MILP(voltage=False).clear(_feeder_request(True))
    assert check_schedule(_feeder_request(True), free.p_kw)["voltage_pu"] > 1e-3  # the cheap slot overloads bus 2
    req = _feeder_request(True)
    res = MILP().clear(req)
    assert res.info["status"] == "optimal" and res.info["voltage_constrained"]
    assert_feasible(req, res)
    drop = 1e-3 * (res.p_kw[0] + res.p_kw[1:].sum(axis=0)) + 1e-3 * res.p_kw[1:].sum(axis=0)
    assert drop.max() <= 0.03 + 1e-9 and drop.max() >= 0.03 - 1e-6  # bus 2 headroom 0.98 − 0.95, used exactly
    assert res.objective["objective_usd"] > free.objective["objective_usd"]
    # without voltage data the constraint is skipped silently
    assert MILP().clear(_feeder_request(False)).objective["objective_usd"] == pytest.approx(
        free.objective["objective_usd"]
    )


def test_reactive_power_stays_inside_the_apparent_power_circle() -> None:
    req = _feeder_request(True, reactive_price=True)
    res = MILP(reactive=True, polygon_sides=8).clear(req)
    assert res.info["status"] == "optimal" and res.q_kvar is not None
    assert_feasible(req, res)
    assert np.all(np.hypot(res.p_kw, res.q_kvar) <= 11.0 + 1e-9)
    assert res.q_kvar.min() < -1.0  # positive Q price: EVs inject reactive power, which also lifts the voltage
    assert res.objective["objective_usd"] == pytest.approx(evaluate_cost(req, res.p_kw, q_kvar=res.q_kvar), abs=1e-9)
    assert res.objective["objective_usd"] == pytest.approx(res.info["solver_objective_usd"], rel=1e-7, abs=1e-7)


@settings(max_examples=20, deadline=None)
@given(req=small_requests(dlmp=False))
def test_peak_objective_beats_valley_filling(req: MarketRequest) -> None:
    res = MILP(objective="peak").clear(req)
    assert res.info["status"] == "optimal"
    assert_feasible(req, res)
    heur = project(req, mb.get("elasticity-dr")().clear(req).p_kw)
    assert res.objective["objective_usd"] <= evaluate_cost(req, heur, objective="peak") + TOL
    assert res.objective["objective_usd"] == pytest.approx(evaluate_cost(req, res.p_kw, objective="peak"), abs=1e-9)


def test_dlmp_prices_steer_the_schedule_per_bus() -> None:
    req = MarketRequest.from_sessions(
        dt_min=60,
        n_slots=2,
        base_load_kw=[10, 10],
        arrival_slot=[0, 0],
        departure_slot=[2, 2],
        e_need_kwh=[5, 5],
        p_max_kw=[7, 7],
        eta_ch=1.0,
        bus=[0, 1],
        dlmp_p_usd_per_mwh=np.array([[50.0, 90.0], [90.0, 50.0]]),
    )
    res = MILP().clear(req)
    np.testing.assert_allclose(res.p_kw, [[5, 0], [0, 5]], atol=1e-9)
    np.testing.assert_allclose(res.price_usd_per_mwh, [70, 70])


def test_rolling_sets_replans_and_v2g_discharges_only_with_a_battery_and_the_lp() -> None:
    """Issue 21: V2G discharges where it pays — with a battery above its floor, in the continuous variant only."""
    assert MILP(rolling=True).replans is True and MILP().replans is False
    req = MarketRequest.from_sessions(
        dt_min=60,
        n_slots=3,
        base_load_kw=[1, 1, 1],
        arrival_slot=[0],
        departure_slot=[3],
        e_need_kwh=[5],
        p_max_kw=[7],
        price_usd_per_mwh=[50, 400, 50],
    )
    ev = {**req.evs.__dict__, "p_min_kw": np.array([-7.0])}
    no_room = replace(req, evs=EVFlex(**{**ev, "e_floor_kwh": np.array([5.0])}))  # floor = target: no room
    res = MILP().clear(no_room)
    assert res.p_kw.min() >= 0 and res.info["v2g_evs"] == 0
    battery = {"e_kwh": np.array([20.0]), "e_cap_kwh": np.array([40.0]), "e_floor_kwh": np.array([8.0])}
    v2g = replace(req, evs=EVFlex(**{**ev, **battery, "eta_dis": np.array([0.9])}))
    res = MILP().clear(v2g)
    # sells at 400 $/MWh what the last slot can recharge: the battery never holds more than its target (25 kWh)
    assert res.info["v2g_evs"] == 1 and res.p_kw[0, 1] == pytest.approx(-7.0 * 0.92 * 0.9)
    e_bat = np.where(res.p_kw > 0, res.p_kw * req.evs.eta_ch[0], res.p_kw / 0.9).sum()
    assert e_bat == pytest.approx(5.0, abs=1e-6)  # the need is met net of the discharge
    assert max(res.violations.values()) <= TOL
    assert MILP(variant="milp").discharges is False and MILP().discharges is True
    res = MILP(variant="milp").clear(v2g)
    assert res.info["v2g_ignored"] == 1 and res.p_kw.min() >= 0


def test_time_limit_is_reported_not_hidden() -> None:
    rng = np.random.default_rng(0)
    n, T = 120, 96
    start = rng.integers(0, 60, n)
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=np.zeros(n, int),
        station=rng.integers(0, 4, n),
        start_slot=start,
        end_slot=np.minimum(start + rng.integers(8, 40, n), T),
        end_frac=np.ones(n),
        e_need_kwh=rng.uniform(5, 40, n),
        p_max_kw=rng.choice([3.6, 7.2, 11.0], n),
        p_min_kw=np.zeros(n),
        eta_ch=np.full(n, 0.92),
        participates=np.ones(n, bool),
        elasticity=np.full(n, -0.3),
    )
    req = MarketRequest(
        t0_min=0,
        dt_min=15,
        n_slots=T,
        evs=evs,
        base_load_kw=rng.uniform(100, 500, T),
        price_usd_per_mwh=rng.uniform(40, 150, T),
        station_cap_kw=np.full(4, 40.0),
    )
    res = MILP(variant="milp", bits=10, time_limit_s=0.05).clear(req)
    assert res.info["status"] == "time_limit" and res.info["highs_status"] == "Time limit reached"
    assert max(res.violations.values()) <= TOL  # an incumbent (or zeros) that still keeps every limit
    assert res.p_kw.shape == (n, T)


# ------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "field, value",
    [
        ("variant", "qubo"),
        ("bits", 0),
        ("bits", 13),
        ("bits", 2.5),
        ("bits", True),
        ("unserved_penalty_usd_per_kwh", -1.0),
        ("objective", "losses"),
        ("peak_usd_per_kw", float("inf")),
        ("rho_usd_per_mwh", -5),
        ("reactive", "yes"),
        ("polygon_sides", 6),
        ("polygon_sides", 0),
        ("voltage", 1),
        ("time_limit_s", 0),
        ("mip_rel_gap", 1.0),
        ("rolling", None),
    ],
)
def test_bad_parameters_name_the_field(field: str, value: object) -> None:
    with pytest.raises(MarketConfigError, match=rf"^market\.params\.{field}: got .*; allowed "):
        MILP(**{field: value})


def test_registered_and_unknown_parameter() -> None:
    assert "milp" in mb.available() and mb.get("milp") is MILP
    with pytest.raises(MarketConfigError, match="market.params.bitz: unknown parameter"):
        MILP(bitz=3)
