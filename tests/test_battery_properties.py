"""Properties of the battery physics (issue 21, part 5): the two-stage curve, the departure reserve and the repair
onto the curve (`markets.battery`); the V2G schedules of `milp`; and the simulation's settle step along them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.base import EVFlex, MarketRequest, MarketResult, asap_fill
from markets.battery import charge_limit_kw, follow_curve, reserve_kwh
from markets.milp import MILP, check_schedule, evaluate_cost
from sim.model import CoSimulation
from sim.scenario import load_scenario

TOL = 1e-6
Draw = Callable[..., Any]  # a composite strategy's draw, or st.data()'s


# ------------------------------------------------------------------------------------------- strategies
def _floats(draw: Draw, lo: float, hi: float, n: int) -> np.ndarray:
    return np.array(draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n)))


def _pick(draw: Draw, values: list[float], n: int) -> np.ndarray:
    return np.array(draw(st.lists(st.sampled_from(values), min_size=n, max_size=n)), float)


@st.composite
def batteries(draw: st.DrawFn, max_evs: int = 6) -> dict[str, np.ndarray]:
    """Random EVs' batteries and chargers: capacity, charger rating, transition SOC (some ideal), efficiencies."""
    n = draw(st.integers(1, max_evs))
    soc_t = np.array(draw(st.lists(st.one_of(st.just(1.0), st.floats(0.5, 0.99)), min_size=n, max_size=n)))
    return {
        "cap": _floats(draw, 10.0, 100.0, n),
        "p_max": _pick(draw, [1.4, 3.6, 7.2, 11.0, 22.0, 50.0], n),
        "soc_t": soc_t,
        "eta": _floats(draw, 0.8, 1.0, n),
        "eta_dis": _floats(draw, 0.8, 1.0, n),
    }


def _avail(draw: Draw, n: int, n_slots: int) -> np.ndarray:
    """Any plug-in shares in [0, 1] (also 0 and 1 exactly), shape (n, n_slots)."""
    share = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))
    return np.array(draw(st.lists(share, min_size=n * n_slots, max_size=n * n_slots))).reshape(n, n_slots)


def _battery_kwh(p: np.ndarray, eta: np.ndarray, eta_dis: np.ndarray, dt: float) -> np.ndarray:
    """Battery energy of grid power ``p`` [kWh]: charging × η_ch, discharging ÷ η_dis (same shape as ``p``)."""
    return np.where(p > 0, p * eta[:, None], p / eta_dis[:, None]) * dt


def _charge_at_limit(e0: np.ndarray, b: dict[str, np.ndarray], dt: float, avail: np.ndarray) -> np.ndarray:
    """Energy after charging at the curve's limit in every slot of ``avail`` from ``e0`` (ASAP) [kWh]."""
    e = e0.astype(float).copy()
    for t in range(avail.shape[1]):
        e = e + b["eta"] * dt * charge_limit_kw(e, b["cap"], b["p_max"], b["soc_t"], b["eta"], dt, avail[:, t])
    return e


# ------------------------------------------------------------------------------------------- unit: the curve
@settings(max_examples=150, deadline=None)
@given(b=batteries(), dt=st.sampled_from([0.25, 1.0]), data=st.data())
def test_charge_limit_is_bounded_monotone_never_overfills_and_is_flat_below_the_transition(
    b: dict[str, np.ndarray], dt: float, data: st.DataObject
) -> None:
    n = len(b["cap"])
    cap, p_max, soc_t, eta = b["cap"], b["p_max"], b["soc_t"], b["eta"]
    u1, u2 = (data.draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n)) for _ in range(2))
    e1 = np.array(u1) * cap
    e2 = e1 + np.array(u2) * (cap - e1)  # e2 >= e1
    avail = _avail(data.draw, n, 1)[:, 0]
    lim1 = charge_limit_kw(e1, cap, p_max, soc_t, eta, dt, avail)
    lim2 = charge_limit_kw(e2, cap, p_max, soc_t, eta, dt, avail)
    assert (lim1 >= 0).all()
    assert (lim1 <= p_max * avail + 1e-12).all()
    assert (lim2 <= lim1 + 1e-12).all()  # non-increasing in the energy
    assert (e1 + lim1 * eta * dt <= cap + 1e-9).all()  # one step never overfills
    room = (cap - e1) / (eta * dt)
    below = e1 <= soc_t * cap
    np.testing.assert_allclose(lim1[below], np.minimum(p_max * avail, room)[below], rtol=1e-12, atol=1e-12)
    # above the transition: ACN-Sim's linear taper to 0 at full
    above = ~below
    taper = p_max * (cap - e1) / (cap * (1.0 - np.where(above, soc_t, 0.0)))
    np.testing.assert_allclose(
        lim1[above], np.minimum(np.minimum(p_max, taper) * avail, room)[above], rtol=1e-9, atol=1e-12
    )


@settings(max_examples=150, deadline=None)
@given(b=batteries(), n_slots=st.integers(1, 12), dt=st.sampled_from([0.25, 1.0]), data=st.data())
def test_reserve_is_the_least_energy_from_which_charging_at_the_limit_reaches_the_target(
    b: dict[str, np.ndarray], n_slots: int, dt: float, data: st.DataObject
) -> None:
    n = len(b["cap"])
    cap = b["cap"]
    avail = _avail(data.draw, n, n_slots)
    target = _floats(data.draw, 0.05, 1.0, n) * cap
    res = reserve_kwh(target, cap, b["p_max"], b["soc_t"], b["eta"], dt, avail)
    assert res.shape == (n, n_slots + 1) and np.array_equal(res[:, -1], target)
    assert (res <= cap[:, None] + 1e-9).all()  # a target within the battery is reachable from full
    for t in range(n_slots):
        reach = _charge_at_limit(res[:, t], b, dt, avail[:, t:])
        assert (reach >= target - 1e-6).all(), (t, reach - target)
        eps = 1e-3
        short = _charge_at_limit(res[:, t] - eps, b, dt, avail[:, t:])
        assert (short < target).all(), (t, short - target)
    # the reserve never rises back in time (an idle slot can only cost energy)
    assert (np.diff(res, axis=1) >= -1e-9).all()


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    """Random EVs with batteries and any schedule within their ratings (discharge for some)."""
    b = draw(batteries())
    n = len(b["cap"])
    n_slots = draw(st.integers(1, 12))
    dt = draw(st.sampled_from([0.25, 1.0]))
    avail = _avail(draw, n, n_slots)
    e0 = _floats(draw, 0.0, 1.0, n) * b["cap"]
    need = _floats(draw, 0.0, 1.0, n) * (b["cap"] - e0)
    p_dis = np.where(np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))), b["p_max"], 0.0)
    u = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=n * n_slots, max_size=n * n_slots)))
    u = u.reshape(n, n_slots)
    p = np.where(u >= 0, u * b["p_max"][:, None], u * p_dis[:, None]) * avail
    return {**b, "n_slots": n_slots, "dt": dt, "avail": avail, "e0": e0, "need": need, "p": p}


def _follow(s: dict[str, Any], p: np.ndarray) -> np.ndarray:
    return follow_curve(
        p, s["e0"], s["need"], s["cap"], s["p_max"], s["soc_t"], s["eta"], s["eta_dis"], s["dt"], s["avail"]
    )


@settings(max_examples=150, deadline=None)
@given(s=schedules())
def test_follow_curve_stays_on_the_curve_and_never_adds_energy_the_schedule_did_not_plan(s: dict[str, Any]) -> None:
    p, dt = s["p"], s["dt"]
    out = _follow(s, p)
    assert out.shape == p.shape
    e = s["e0"].copy()
    for t in range(s["n_slots"]):
        lim = charge_limit_kw(e, s["cap"], s["p_max"], s["soc_t"], s["eta"], dt, s["avail"][:, t])
        assert (out[:, t] <= lim + 1e-9).all(), t  # never above the curve along its own SOC path
        e = e + _battery_kwh(out[:, t : t + 1], s["eta"], s["eta_dis"], dt)[:, 0]
    assert (e <= s["cap"] + 1e-9).all()
    np.testing.assert_array_equal(out[p < 0], p[p < 0])  # discharge is kept as scheduled
    assert (out[p >= 0] >= 0).all()
    planned = _battery_kwh(p, s["eta"], s["eta_dis"], dt).sum(axis=1)
    got = _battery_kwh(out, s["eta"], s["eta_dis"], dt).sum(axis=1)
    # never more than the schedule's own net energy (a net discharge's goal is the energy now: never above 0) nor the need
    assert (got <= np.maximum(planned, 0.0) + 1e-9).all(), got - planned
    assert (got <= s["need"] + 1e-9).all(), got - s["need"]
    # a charge-only schedule whose energy the curve can deliver keeps all of it (the taper's cut is pulled forward)
    charge_only = (p >= 0).all(axis=1)
    goal = np.minimum(planned, s["need"])
    reachable = _charge_at_limit(s["e0"], s, dt, s["avail"]) >= s["e0"] + goal + 1e-6
    ok = charge_only & reachable
    assert (got[ok] >= goal[ok] - 1e-6).all(), (got - goal)[ok]


def _follow_numpy(s: dict[str, Any], p: np.ndarray) -> np.ndarray:
    """`follow_curve` as numpy code over the fleet (what the compiled kernel replaced), from the public pieces."""
    eta, dt = s["eta"], s["dt"]
    planned = np.zeros(len(p))
    for t in range(p.shape[1]):  # summed slot by slot, as the kernel does
        planned += _battery_kwh(p[:, t : t + 1], eta, s["eta_dis"], dt)[:, 0]
    top = s["e0"] + np.clip(planned, 0.0, s["need"])
    res = reserve_kwh(top, s["cap"], s["p_max"], s["soc_t"], eta, dt, s["avail"])
    e, out = s["e0"].astype(float).copy(), p.astype(float).copy()
    for t in range(p.shape[1]):
        lim = charge_limit_kw(e, s["cap"], s["p_max"], s["soc_t"], eta, dt, s["avail"][:, t])
        catch_up = (np.minimum(res[:, t + 1], top) - e) / (eta * dt)
        q = np.minimum(np.minimum(np.maximum(p[:, t], catch_up), lim), np.maximum(top - e, 0.0) / (eta * dt))
        out[:, t] = q = np.where(p[:, t] < 0, p[:, t], np.maximum(q, 0.0))
        e = e + np.where(q > 0, q * eta, q / s["eta_dis"]) * dt
    return out


@settings(max_examples=300, deadline=None)
@given(s=schedules())
def test_compiled_follow_curve_equals_the_numpy_formulas_bit_for_bit(s: dict[str, Any]) -> None:
    """The kernel repeats `reserve_kwh` / `charge_limit_kw`'s arithmetic; results must not move by one bit."""
    np.testing.assert_array_equal(_follow(s, s["p"]), _follow_numpy(s, s["p"]))


@settings(max_examples=100, deadline=None)
@given(s=schedules(), data=st.data())
def test_follow_curve_leaves_a_schedule_already_on_the_curve_unchanged(s: dict[str, Any], data: st.DataObject) -> None:
    """`asap_fill` of two-stage EVs (full power along the curve until the need is met) is already on the curve."""
    n, n_slots = len(s["cap"]), s["n_slots"]
    start = np.array(data.draw(st.lists(st.integers(0, n_slots - 1), min_size=n, max_size=n)))
    end = np.array([data.draw(st.integers(a + 1, n_slots)) for a in start])
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=np.zeros(n, int),
        station=np.zeros(n, int),
        start_slot=start,
        end_slot=end,
        end_frac=_floats(data.draw, 0.1, 1.0, n),
        e_need_kwh=s["need"],
        p_max_kw=s["p_max"],
        p_min_kw=np.zeros(n),
        eta_ch=s["eta"],
        participates=np.ones(n, bool),
        elasticity=np.full(n, -0.3),
        e_kwh=s["e0"],
        e_cap_kwh=s["cap"],
        transition_soc=s["soc_t"],
    )
    p = asap_fill(evs, n_slots, s["dt"])
    s = {**s, "avail": evs.availability(n_slots)}
    np.testing.assert_allclose(_follow(s, p), p, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------- milp with V2G EVs
@st.composite
def v2g_requests(draw: st.DrawFn, max_evs: int = 5, max_slots: int = 8) -> MarketRequest:
    """`tests/test_milp.py`'s small requests with batteries: V2G EVs (p_min_kw < 0) above a floor, two-stage
    curves, both efficiencies and wear; positive prices with a wide spread (discharge pays in some slots)."""
    n_slots = draw(st.integers(2, max_slots))
    n = draw(st.integers(1, max_evs))
    ints = lambda lo, hi: np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)))  # noqa: E731
    start = ints(0, n_slots - 1)
    end = np.minimum(start + ints(1, n_slots), n_slots)
    cap = _floats(draw, 20.0, 80.0, n)
    e0 = _floats(draw, 0.0, 1.0, n) * cap
    need = _floats(draw, 0.0, 1.0, n) * (cap - e0)
    p_max = _pick(draw, [3.6, 7.2, 11.0], n)
    v2g = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    soc_t = np.array(draw(st.lists(st.one_of(st.just(1.0), st.floats(0.5, 0.95)), min_size=n, max_size=n)))
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=ints(0, 2),
        station=ints(0, 2),
        start_slot=start,
        end_slot=end,
        end_frac=_floats(draw, 0.1, 1.0, n),
        e_need_kwh=need,
        p_max_kw=p_max,
        p_min_kw=np.where(v2g, -p_max * _floats(draw, 0.3, 1.0, n), 0.0),
        eta_ch=_floats(draw, 0.8, 1.0, n),
        participates=np.ones(n, bool),
        elasticity=np.full(n, -0.3),
        eta_dis=_floats(draw, 0.8, 1.0, n),
        e_kwh=e0,
        e_cap_kwh=cap,
        e_floor_kwh=_floats(draw, 0.0, 1.0, n) * e0,
        transition_soc=soc_t,
        degradation_usd_per_kwh=_floats(draw, 0.0, 0.05, n),
    )
    caps = draw(st.one_of(st.none(), st.just(np.array([8.0, 15.0, np.inf])), st.just(np.array([30.0, 30.0, 30.0]))))
    dlmp = _floats(draw, 20.0, 400.0, 3 * n_slots).reshape(n_slots, 3) if draw(st.booleans()) else None
    return MarketRequest(
        t0_min=0.0,
        dt_min=draw(st.sampled_from([15.0, 60.0])),
        n_slots=n_slots,
        evs=evs,
        base_load_kw=_floats(draw, 10.0, 500.0, n_slots),
        price_usd_per_mwh=_floats(draw, 20.0, 400.0, n_slots),
        station_cap_kw=caps,
        dlmp_p_usd_per_mwh=dlmp,
    )


def _soc_path(req: MarketRequest, p: np.ndarray) -> np.ndarray:
    evs = req.evs
    return evs.e_kwh[:, None] + np.cumsum(_battery_kwh(p, evs.eta_ch, evs.eta_dis, req.dt_h), axis=1)


@settings(max_examples=60, deadline=None)
@given(req=v2g_requests())
def test_lp_with_v2g_is_feasible_balanced_and_its_objective_prices_the_net_power(req: MarketRequest) -> None:
    evs = req.evs
    res = MILP().clear(req)
    assert res.info["status"] == "optimal" and res.info["has_solution"]
    viol = check_schedule(req, res.p_kw)
    assert max(viol.values()) <= TOL, viol
    assert max(res.violations.values()) <= TOL, res.violations
    path = _soc_path(req, res.p_kw)
    assert (path >= np.minimum(evs.e_floor_kwh, evs.e_kwh)[:, None] - TOL).all()
    assert (path <= np.minimum(evs.e_cap_kwh, evs.e_kwh + evs.e_need_kwh)[:, None] + TOL).all()  # never above target
    assert (res.p_kw >= np.minimum(evs.p_min_kw, 0.0)[:, None] - 1e-9).all()
    assert (res.p_kw[~evs.discharges] >= 0).all()
    # HiGHS's objective (charge and discharge columns apart) is the cost of the net power returned: with prices >= 0
    # no slot charges and discharges at once (that would show as a difference here)
    assert res.info["solver_objective_usd"] == pytest.approx(evaluate_cost(req, res.p_kw), rel=1e-7, abs=1e-5)
    # energy balance with both efficiencies: the battery gets the need less what is left unserved, never more
    got = _battery_kwh(res.p_kw, evs.eta_ch, evs.eta_dis, req.dt_h).sum(axis=1)
    assert (got <= evs.e_need_kwh + TOL).all()
    # ... and nothing is left unserved when charging at the curve's limit could deliver the need (no station cap)
    if req.station_cap_kw is None:
        full = asap_fill(evs, req.n_slots, req.dt_h)
        servable = _battery_kwh(full, evs.eta_ch, evs.eta_dis, req.dt_h).sum(axis=1) >= evs.e_need_kwh - 1e-9
        np.testing.assert_allclose(got[servable], evs.e_need_kwh[servable], atol=TOL)
        assert res.objective["unserved_kwh"] == pytest.approx(float((evs.e_need_kwh - got).sum()), abs=TOL)


@settings(max_examples=40, deadline=None)
@given(req=v2g_requests())
def test_lp_objective_with_v2g_is_never_above_the_charge_only_optimum(req: MarketRequest) -> None:
    from dataclasses import fields, replace

    v2g = MILP().clear(req).objective["objective_usd"]
    ev = {f.name: getattr(req.evs, f.name) for f in fields(req.evs)}
    charge_only = replace(req, evs=EVFlex(**{**ev, "p_min_kw": np.zeros(len(req.evs))}))
    res = MILP().clear(charge_only)
    assert (res.p_kw >= 0).all()
    assert v2g <= res.objective["objective_usd"] + TOL * max(1.0, abs(v2g))


def test_lp_discharges_when_it_pays_and_recharges_with_both_efficiencies() -> None:
    """A fixed case where V2G pays (the random ones above discharge only sometimes)."""
    one: dict[str, float] = {
        "ev_id": 0,
        "bus": 0,
        "station": 0,
        "start_slot": 0,
        "end_slot": 4,
        "end_frac": 1.0,
        "e_need_kwh": 5.0,
        "p_max_kw": 7.0,
        "p_min_kw": -7.0,
        "eta_ch": 0.9,
        "participates": True,
        "elasticity": -0.3,
        "eta_dis": 0.8,
        "e_kwh": 30.0,
        "e_cap_kwh": 40.0,
        "e_floor_kwh": 10.0,
        "transition_soc": 0.8,
        "degradation_usd_per_kwh": 0.01,
    }
    evs = EVFlex(**{k: np.array([v]) for k, v in one.items()})
    price = np.array([400.0, 30.0, 30.0, 30.0])
    req = MarketRequest(t0_min=0.0, dt_min=60.0, n_slots=4, evs=evs, base_load_kw=np.ones(4), price_usd_per_mwh=price)
    res = MILP().clear(req)
    assert res.p_kw[0, 0] == pytest.approx(-7.0)
    got = _battery_kwh(res.p_kw, evs.eta_ch, evs.eta_dis, 1.0).sum()
    assert got == pytest.approx(5.0, abs=TOL)
    assert max(res.violations.values()) <= TOL
    assert res.info["solver_objective_usd"] == pytest.approx(evaluate_cost(req, res.p_kw), abs=1e-6)


# ------------------------------------------------------------------------------------------- simulation
SMALL = [
    "fleet.n_evs=60",
    "time.horizon_h=24",
    "market.mechanism=milp",
    "fleet.groups.0.v2g_share=0.5",
    "fleet.groups.1.v2g_share=0.5",
    "stations.1.cap_kw=0",  # no station cap: what an EV can get depends on itself only (and on the DSO)
]


def _discharge_then_charge(m: CoSimulation) -> None:
    """Replace every schedule (tap ``price_signal``) by the most demanding one for the dispatch: discharge at the
    limit until the middle of the EV's stay, then charge at the charger's rating."""
    f = m.fleet

    def schedule(res: MarketResult, k: int) -> tuple[MarketResult, bool]:
        ev = np.asarray(res.info["ev_id"])
        t = (k + np.arange(res.p_kw.shape[1]))[None, :] * m.dt_min
        mid = ((f.arrival_min + f.departure_min) / 2.0)[ev, None]
        p = np.where(t < mid, -f.p_dis_kw[ev, None], f.p_max_kw[ev, None])
        return replace(res, p_kw=p), False

    m.taps.register("price_signal", schedule)


def _run_traced(
    overrides: list[str], seed: int, adversary: bool = False
) -> tuple[CoSimulation, np.ndarray, np.ndarray]:
    """Run a small simulation step by step; battery and grid energy of every EV at every step boundary [kWh],
    shape (n_steps + 1, n_evs) each (row k: before step k). ``adversary``: with `_discharge_then_charge`."""
    m = CoSimulation(load_scenario("default", [*SMALL, *overrides], seed=seed))
    if adversary:
        _discharge_then_charge(m)
    f = m.fleet
    e, g = [f.e_kwh.copy()], [f.grid_kwh.copy()]
    while m.steps < m.n_steps:
        m.advance(1)
        e.append(f.e_kwh.copy())
        g.append(f.grid_kwh.copy())
    return m, np.array(e), np.array(g)


def _reachable_kwh(m: CoSimulation) -> np.ndarray:
    """Battery energy each EV reaches charging at its curve's limit from its arrival SOC through its plug-in time,
    plugged in at arrival (the first whole step after it) [kWh]."""
    f, dt = m.fleet, m.dt_min
    e = f.soc_arrival * f.battery_kwh
    for k in range(m.n_steps):
        share = np.clip((f.departure_min - k * dt) / dt, 0.0, 1.0) * (f.arrival_min <= k * dt)
        e = e + f.eta_ch * dt / 60.0 * charge_limit_kw(
            e, f.battery_kwh, f.p_max_kw, f.transition_soc, f.eta_ch, dt / 60.0, share
        )
    return e


def _check_run(m: CoSimulation, e: np.ndarray, g: np.ndarray) -> None:
    """Every battery property of a traced run (`_run_traced`), per EV and step, and at departure."""
    f, dt_h = m.fleet, m.dt_min / 60.0
    cap = f.battery_kwh
    assert f.transition_soc.max() < 1.0 and f.v2g.any()
    assert f.discharged_kwh.sum() > 1.0  # the runs do discharge
    t0 = np.arange(m.n_steps)[:, None] * m.dt_min
    unplug = np.where(np.isnan(f.unplug_min), np.inf, f.unplug_min)
    plugged = (f.plugin_min <= t0) & (t0 < unplug)  # (n_steps, n_evs); NaN plug-in compares False
    p = np.diff(g, axis=0) / dt_h  # grid-side power of each step [kW]
    de = np.diff(e, axis=0)
    e0 = e[:-1]
    assert (p[~plugged] == 0).all() and (de[~plugged] == 0).all()
    # SOC: never below the floor (or the arrival SOC, if lower), never above the target unless it arrived above it
    lo = np.where(f.v2g, np.minimum(f.soc_floor, f.soc_arrival), f.soc_arrival) * cap
    assert (e >= lo - 1e-9).all(), (e - lo).min()
    assert (e <= np.maximum(f.soc_target, f.soc_arrival) * cap + 1e-9).all()
    assert (e <= cap + 1e-9).all()
    # power: charge-only EVs never discharge; V2G EVs within their discharge limit over the plugged-in share
    share = np.clip((f.departure_min - t0) / m.dt_min, 0.0, 1.0)
    assert (p[:, ~f.v2g] >= 0).all()
    assert (p >= -f.p_dis_kw * share - 1e-9).all()
    # the battery energy balance with both efficiencies (up to the battery's capacity)
    e_bat = np.where(p > 0, p * f.eta_ch, p / f.eta_dis) * dt_h
    np.testing.assert_allclose(de, np.minimum(e0 + e_bat, cap) - e0, rtol=0, atol=1e-9)
    # the two-stage curve at the step's starting SOC, times the plugged-in share
    lim = charge_limit_kw(e0, cap, f.p_max_kw, f.transition_soc, f.eta_ch, dt_h, share)
    assert (p <= lim + 1e-9).all(), (p - lim).max()
    # every EV whose target was reachable, undisturbed, leaves with it
    left = f.unplug_min <= m.n_steps * m.dt_min
    undisturbed = (f.plugin_min == f.arrival_min) & (f.curtailed_kwh == 0)
    feasible = left & undisturbed & (_reachable_kwh(m) >= f.soc_target * cap + 1e-6)
    assert feasible.sum() >= 10
    short = f.soc_target * cap - e[-1]
    assert (short[feasible] <= 1e-6).all(), short[feasible].max()


@pytest.mark.parametrize(
    "overrides, seed",
    [
        (["fleet.groups.0.degradation_usd_per_kwh=0", "fleet.groups.1.degradation_usd_per_kwh=0"], 1),
        (["market.params.milp.objective='peak'"], 2),
        (["market.params.milp.objective='peak'", "market.params.milp.rolling=true"], 3),
    ],
)
def test_simulation_keeps_every_battery_within_its_limits_and_meets_feasible_targets(
    overrides: list[str], seed: int
) -> None:
    _check_run(*_run_traced(overrides, seed))


@pytest.mark.parametrize("seed", [4, 5])
def test_dispatch_keeps_the_limits_and_the_reserve_against_any_schedule(seed: int) -> None:
    """Whatever the schedule, a V2G EV discharges only down to the reserve from which it still reaches its target
    (one already below the next step's reserve, which rises as departure nears, charges back up to it), and the
    dispatch keeps the curve, the floor and the target."""
    _check_run(*_run_traced(["fleet.groups.0.v2g_share=1", "fleet.groups.1.v2g_share=1"], seed, adversary=True))


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 30), n_slots=st.integers(1, 40))
def test_compiled_charge_along_curve_equals_the_numpy_reference(seed: int, n: int, n_slots: int) -> None:
    """`charge_along_curve` (compiled) and `charge_along_curve_numpy` agree bit for bit on random fleets: ideal and
    two-stage batteries, partial availability, limits below the charger's, needs from 0 to more than fits."""
    from markets.base import EVFlex, charge_along_curve, charge_along_curve_numpy

    rng = np.random.default_rng(seed)
    cap = rng.uniform(10, 100, n)
    e = cap * rng.uniform(0, 0.95, n)
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=np.zeros(n, int),
        station=np.zeros(n, int),
        start_slot=np.zeros(n, int),
        end_slot=rng.integers(1, n_slots + 5, n),
        end_frac=rng.uniform(0.01, 1.0, n),
        e_need_kwh=np.minimum(rng.choice([0.0, 1.0, 20.0, 200.0], n), cap - e),
        p_max_kw=rng.choice([3.7, 11.0, 50.0], n),
        p_min_kw=np.zeros(n),
        eta_ch=rng.uniform(0.85, 1.0, n),
        participates=np.ones(n, bool),
        elasticity=np.zeros(n),
        e_kwh=e,
        e_cap_kwh=cap,
        transition_soc=rng.choice([1.0, 0.8, 0.5], n),
    )
    avail = evs.availability(n_slots) * rng.choice([1.0, 0.5], (n, n_slots))
    p_lim = evs.p_max_kw * rng.choice([1.0, 0.3], n)
    fast = charge_along_curve(evs, p_lim, avail, 0.25)
    np.testing.assert_array_equal(fast, charge_along_curve_numpy(evs, p_lim, avail, 0.25))
