"""`eho-bilevel` (`004_…`): the lower level is exact, the port queues are SimPy's, the search is seeded and bounded,
the mechanism keeps every limit, and the optimised case beats uncontrolled charging on the peak."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from markets.base import EVFlex, MarketConfigError, MarketRequest, get
from markets.eho_bilevel import (
    BilevelProblem,
    EHOBilevel,
    Sessions,
    _respond_kernel,
    exact_upper_level,
    solve,
)


def _random_problem(
    rng: np.random.Generator,
    *,
    n: int,
    n_st: int,
    T: int = 12,
    ports: int = 1,
    booked: bool = False,
    follows: float = 1.0,
    alternatives=None,
    eps: float | None = None,
) -> BilevelProblem:
    arr = np.sort(rng.uniform(0, T * 0.6, n))
    dep = np.minimum(arr + rng.uniform(1.0, T, n), T + rng.uniform(0, 2, n))
    s = Sessions(
        arrival_h=arr,
        departure_h=dep,
        need_kwh=rng.uniform(1, 40, n),
        p_max_kw=rng.choice([3.6, 7.0, 11.0], n),
        station=rng.integers(0, n_st, n),
        eta_ch=rng.uniform(0.85, 1.0, n),
        follows=rng.random(n) < follows,
        elasticity=rng.uniform(-0.6, 0.0, n),
    )
    return BilevelProblem(
        s,
        dt_h=1.0,
        base_price_usd_per_kwh=rng.uniform(0.10, 0.18, T),
        base_load_kw=rng.uniform(50, 150, T),
        ports=np.full(n_st, ports),
        station_cap_kw=rng.uniform(8, 25, n_st),
        alternatives=alternatives,
        epsilon=float(rng.uniform(0.0, 0.6)) if eps is None else eps,
        delta=1.0,
        booked_station_kw=rng.uniform(0, 10, (n_st, T)) if booked else None,
        limit_bounds=(5.0, 30.0),
        slot_period=np.arange(T),
    )


def _milp_best_response(price, caps, e_target, a_h, d_h, k0, dt, delta, eps):
    """Exact lower-level optimum by HiGHS: powers p_k and binaries z_e (last charging slot)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    m = len(caps)
    t_end = np.array([min((k0 + e + 1) * dt, d_h) for e in range(m)])
    c = np.r_[delta * price * dt, eps * (t_end - a_h)]
    A, lo, hi = [], [], []
    A.append(np.r_[np.full(m, dt), np.zeros(m)])  # energy
    lo.append(e_target), hi.append(e_target)
    A.append(np.r_[np.zeros(m), np.ones(m)])  # one last slot
    lo.append(1), hi.append(1)
    for k in range(m):  # p_k ≤ c_k · Σ_{e ≥ k} z_e
        row = np.zeros(2 * m)
        row[k] = 1.0
        row[m + k :] = -caps[k]
        A.append(row)
        lo.append(-np.inf), hi.append(0.0)
    res = milp(
        c,
        constraints=LinearConstraint(np.array(A), lo, hi),
        integrality=np.r_[np.zeros(m), np.ones(m)],
        bounds=Bounds(np.zeros(2 * m), np.r_[caps, np.ones(m)]),
        options={"mip_rel_gap": 1e-12},
    )
    assert res.status == 0
    return res.fun


@pytest.mark.parametrize("seed", range(40))
def test_best_response_is_optimal_against_highs(seed: int) -> None:
    """One follower against booked station load and a port it gets late: the kernel's answer = HiGHS MILP optimum."""
    rng = np.random.default_rng(seed)
    prob = _random_problem(rng, n=1, n_st=1, booked=True)
    prob.port_free0[0, 0] = float(rng.uniform(0, 4))  # the port is busy until then
    x = np.r_[rng.uniform(0.8, 2.0, prob.n_price), rng.uniform(5, 30, 1)]
    r = prob.respond(x)
    s, dt = prob._s, prob.dt_h
    a, d, pmax = s.arrival_h[0], s.departure_h[0], s.p_max_kw[0]
    g = max(a, prob.port_free0[0, 0])
    if g >= d:
        assert r.reneged[0] and r.p_kw.sum() == 0
        return
    price, limit = prob.decode(x)
    k0, kd = math.ceil(g / dt - 1e-9), math.ceil(d / dt - 1e-9)
    kend = min(kd, prob.n_slots)
    frac = min(d / dt - (kend - 1), 1.0) if kd <= prob.n_slots else 1.0
    if k0 >= kend:
        assert r.p_kw.sum() == 0
        return
    av = np.ones(kend - k0)
    av[-1] = frac
    caps = np.clip(np.minimum(pmax * av, min(prob.cap[0], limit[0]) - prob.booked0[0, k0:kend]), 0, None)
    target = min(prob._e_grid[0], caps.sum() * dt)
    got = r.p_kw[0].sum() * dt
    assert got == pytest.approx(target, rel=1e-9, abs=1e-9)
    assert np.all(r.p_kw[0, :k0] == 0) and np.all(r.p_kw[0, kend:] == 0)
    assert np.all(r.p_kw[0, k0:kend] <= caps + 1e-9)
    if target <= 1e-9:
        return
    last = np.nonzero(r.p_kw[0] > 1e-12)[0].max()
    ours = prob.delta * float((price * r.p_kw[0]).sum() * dt) + prob.epsilon * (min((last + 1) * dt, d) - a)
    ref = _milp_best_response(price[k0:kend], caps, target, a, d, k0, dt, prob.delta, prob.epsilon)
    assert ours == pytest.approx(ref, rel=1e-7, abs=1e-7)


def _simpy_queue(prob: BilevelProblem, r) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the same sessions through SimPy `Resource`s (FIFO, reneging at departure); each EV holds its
    port until its schedule has delivered its need (end of its last charging slot) or it departs."""
    env = simpy.Environment()
    res = [simpy.Resource(env, capacity=int(c)) for c in prob.ports]
    s = prob.sessions
    n = len(s)
    plug, ren = np.full(n, np.nan), np.zeros(n, bool)
    dt = prob.dt_h

    def ev(i: int):
        yield env.timeout(s.arrival_h[i])
        st = res[int(r.station[i])]
        req = st.request()
        got = yield req | env.timeout(max(s.departure_h[i] - env.now, 0.0))
        if req not in got:
            req.cancel()
            ren[i] = True
            return
        plug[i] = env.now
        row = r.p_kw[i]
        full = row.sum() * dt >= s.need_kwh[i] / s.eta_ch[i] - 1e-6
        if full and row.sum() > 0 and prob.release_full[int(r.station[i])]:
            last = np.nonzero(row > 1e-12)[0].max()
            hold = min((last + 1) * dt, s.departure_h[i]) - env.now
        else:
            hold = s.departure_h[i] - env.now
        yield env.timeout(max(hold, 0.0))
        st.release(req)

    for i in np.argsort(s.arrival_h, kind="stable"):
        env.process(ev(int(i)))
    env.run()
    return plug, ren


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("mode", ["uncontrolled", "optimised"])
def test_port_queue_equals_simpy(seed: int, mode: str) -> None:
    rng = np.random.default_rng(100 + seed)
    prob = _random_problem(rng, n=8, n_st=2, ports=int(rng.integers(1, 3)), follows=0.6)
    x = np.r_[rng.uniform(0.8, 2.0, prob.n_price), rng.uniform(5, 30, prob.n_stations)]
    r = prob.uncontrolled() if mode == "uncontrolled" else prob.respond(x)
    plug, ren = _simpy_queue(prob, r)
    np.testing.assert_array_equal(ren, r.reneged)
    np.testing.assert_allclose(plug[~ren], r.plugin_h[~ren], atol=1e-9)


def test_bilevel_uncontrolled_equals_the_cosimulation() -> None:
    """The paper scenario's uncontrolled day: the bilevel model and the SimPy/Mesa co-simulation agree exactly."""
    from experiments.eho_paper import problem_from_scenario
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    sc = load_scenario("eho-bilevel-10stations", ["market.mechanism='uncontrolled'", "fleet.station_choice=0"])
    prob, _ = problem_from_scenario(sc)
    m = prob.metrics(prob.baseline.response)
    k = CoSimulation(sc).run().kpis
    assert m["peak_kw"] == pytest.approx(k["peak_load_kw"], rel=1e-9)
    assert m["load_variance_kw2"] == pytest.approx(k["load_variance_kw2"], rel=1e-9)
    assert m["wait_mean_h"] * 60 == pytest.approx(k["mean_wait_min"], rel=1e-9)
    assert m["wait_max_h"] * 60 == pytest.approx(k["max_wait_min"], rel=1e-9)
    assert m["energy_fulfilment"] == pytest.approx(k["energy_fulfilment"], rel=1e-9)
    assert m["station_utilisation_mean"] == pytest.approx(k["station_utilisation_mean"], rel=1e-9)


def test_compiled_and_python_kernels_agree() -> None:
    rng = np.random.default_rng(7)
    prob = _random_problem(rng, n=15, n_st=3, ports=2, follows=0.5, booked=True, alternatives=[[0, 1], [1, 2], [2, 0]])
    x = np.r_[rng.uniform(0.8, 2.0, prob.n_price), rng.uniform(5, 30, prob.n_stations)]
    r = prob.respond(x)
    s, T = prob._s, prob.n_slots
    n = len(s)
    out = [np.zeros((n, T)), np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, bool)]
    price, lim = prob.decode(x)
    _respond_kernel(
        s.arrival_h,
        s.departure_h,
        prob._e_grid,
        s.p_max_kw,
        s.follows,
        s.elasticity,
        s.station.astype(np.int64),
        prob.alt,
        prob.n_alt,
        prob.port_free0,
        prob.ports.astype(np.int64),
        prob.release_full,
        np.minimum(prob.cap, lim),
        prob.booked0,
        price,
        prob.base_price,
        prob.dt_h,
        prob.delta,
        prob.epsilon,
        False,
        False,
        *out,
    )
    inv = np.empty_like(prob.order)
    inv[prob.order] = np.arange(n)
    np.testing.assert_allclose(out[0][inv], r.p_kw, atol=1e-12)
    np.testing.assert_array_equal(out[1][inv], r.station)
    np.testing.assert_allclose(out[2][inv], r.plugin_h)


def test_station_choice_only_helps_followers_and_keeps_limits() -> None:
    rng = np.random.default_rng(3)
    prob = _random_problem(rng, n=20, n_st=3, ports=1, follows=0.7, alternatives=[[0, 1, 2]] * 3, eps=0.5)
    x = np.r_[np.ones(prob.n_price), np.full(prob.n_stations, 30.0)]
    r = prob.respond(x)
    moved = r.station != prob.sessions.station
    assert not np.any(moved & ~prob.sessions.follows)
    load = np.zeros((prob.n_stations, prob.n_slots))
    np.add.at(load, r.station, r.p_kw)
    assert np.all(load <= np.minimum(prob.cap, 30.0)[:, None] + 1e-9)


def test_search_is_seeded_and_bounded() -> None:
    rng = np.random.default_rng(11)
    prob = _random_problem(rng, n=10, n_st=2, ports=1)
    a = solve(prob, n_elephants=10, n_clans=2, n_iter=5, seed=5)
    b = solve(prob, n_elephants=10, n_clans=2, n_iter=5, seed=5)
    c = solve(prob, n_elephants=10, n_clans=2, n_iter=5, seed=6)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["objective"] == b["objective"] and not np.array_equal(a["x"], c["x"])
    for out in (a, c, solve(prob, method="de", n_evals=60, seed=1), solve(prob, method="random", n_evals=60, seed=1)):
        assert np.all(out["x"] >= prob.lower - 1e-12) and np.all(out["x"] <= prob.upper + 1e-12)
        assert out["objective"] == pytest.approx(prob.evaluate(out["x"])[0])
    assert a["n_evals"] == 10 * 6
    price, lim = prob.decode(np.full(prob.n_dim, 99.0))  # decode clips into the box
    np.testing.assert_allclose(price, prob.base_price * 2.0)
    np.testing.assert_allclose(lim, 30.0)


def test_exact_optimum_bounds_every_search_on_a_small_instance() -> None:
    bp = np.array([0.15, 0.17, 0.12, 0.13])
    s = Sessions(arrival_h=[0.0, 0.3], departure_h=[4.0, 4.0], need_kwh=[10.0, 6.0], p_max_kw=7.0, station=0)
    prob = BilevelProblem(
        s,
        dt_h=1.0,
        base_price_usd_per_kwh=bp,
        base_load_kw=[60.0, 90.0, 40.0, 30.0],
        ports=[1],
        station_cap_kw=[100.0],
        slot_period=np.arange(4),
        epsilon=0.25,
    )
    ex = exact_upper_level(prob)
    assert ex["objective_at_x"] <= ex["objective"] + 1e-9
    grid = np.linspace(0.8, 2.0, 5)
    mesh = np.stack(np.meshgrid(*[grid] * 4), -1).reshape(-1, 4)
    best_grid = max(prob.evaluate(np.r_[m, 150.0])[0] for m in mesh)
    assert best_grid <= ex["objective"] + 1e-9
    best = {}
    for method in ("eho", "de", "random"):
        objs = [
            solve(prob, method=method, n_elephants=20, n_clans=2, n_iter=20, seed=sd)["objective"] for sd in range(5)
        ]
        assert max(objs) <= ex["objective"] + 1e-9
        best[method] = max(objs)
    # The bound is tight, not just valid: DE's best of 5 seeds (420 evaluations each) comes within 10 % of it
    # (measured 4.7 %), so an "exact" value that overstates the optimum fails; the returned point is consistent.
    assert prob.evaluate(np.asarray(ex["x"], float))[0] == pytest.approx(ex["objective_at_x"], abs=1e-9)
    assert best["de"] >= ex["objective"] - 0.10 * abs(ex["objective"]), (best, ex["objective"])
    # EHO as specified (α 0.6, β 0.3) does NOT beat random search on this 4-d instance (measured gaps to J*: EHO
    # 0.69–1.04, random 0.08–0.54), so this test cannot and does not separate EHO from random search;
    # test_paper_run_quick does, on the paper problems, and tests/test_eho.py on the benchmark functions.


def _request(rng: np.random.Generator, n: int, *, caps=None, day_ahead: bool = False) -> MarketRequest:
    N = 24
    start = rng.integers(0, 12, n)
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=np.zeros(n, int),
        station=rng.integers(0, 3, n),
        start_slot=start,
        end_slot=np.minimum(start + rng.integers(2, 16, n), N),
        end_frac=rng.uniform(0.2, 1, n),
        e_need_kwh=rng.uniform(5, 50, n),
        p_max_kw=rng.choice([3.6, 7.0, 11.0], n),
        p_min_kw=np.zeros(n),
        eta_ch=np.full(n, 0.92),
        participates=rng.random(n) < 0.7,
        elasticity=rng.uniform(-0.5, -0.1, n),
    )
    base = 200 + 80 * np.sin(np.arange(N) / 24 * 2 * np.pi)
    committed = rng.uniform(0, 5, (3, N))
    return MarketRequest(
        t0_min=480.0,
        dt_min=60.0,
        n_slots=N,
        evs=evs,
        base_load_kw=base,
        price_usd_per_mwh=np.linspace(120, 170, N),
        station_cap_kw=caps,
        day_ahead=day_ahead,
        committed_station_kw=committed,
    )


@pytest.mark.parametrize("seed", range(6))
def test_mechanism_keeps_ev_and_station_limits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mech = get("eho-bilevel")(n_elephants=10, n_clans=2, n_iter=3, seed=1, limit_min_kw=10.0, limit_max_kw=40.0)
    caps = np.array([30.0, 60.0, np.inf])
    plan = mech.clear(_request(rng, 20, caps=caps, day_ahead=True))
    lim = plan.info["station_limit_kw"]
    assert lim.shape == (3,) and np.all((lim >= 10.0) & (lim <= 40.0))
    price = plan.price_usd_per_mwh
    assert np.all(price >= 0.8 * np.linspace(120, 170, 24) - 1e-9) and np.all(
        price <= 2.0 * np.linspace(120, 170, 24) + 1e-9
    )
    req = _request(rng, 25, caps=caps, day_ahead=False)
    res = mech.clear(req)
    evs = req.evs
    avail = evs.availability(req.n_slots)
    assert np.all(res.p_kw <= evs.p_max_kw[:, None] * avail + 1e-9) and np.all(res.p_kw >= 0)
    assert np.all(res.p_kw.sum(axis=1) * req.dt_h * evs.eta_ch <= evs.e_need_kwh + 1e-6)
    load = req.committed_station_kw.copy()
    np.add.at(load, evs.station, res.p_kw)
    bound = np.maximum(np.minimum(caps, lim)[:, None], req.committed_station_kw)
    assert np.all(load <= bound + 1e-6)
    np.testing.assert_array_equal(res.info["station_limit_kw"], lim)  # later clearings keep the day's plan


def test_rolling_mode_reprices_and_keeps_limits() -> None:
    rng = np.random.default_rng(5)
    fc = {"n_evs": 10, "arrival_h": [8.0, 19.0], "departure_h": [6.0, 8.0], "need_kwh": [10.0, 40.0], "ports": 2}
    mech = EHOBilevel(n_elephants=10, n_clans=2, n_iter=3, seed=2, mode="rolling", forecast=fc)
    caps = np.array([30.0, 60.0, 90.0])
    mech.clear(_request(rng, 0, caps=caps, day_ahead=True))
    req = _request(rng, 8, caps=caps, day_ahead=False)
    res = mech.clear(req)
    assert res.repriced and res.info["eho_n_evals"] == 40
    load = req.committed_station_kw.copy()
    np.add.at(load, req.evs.station, res.p_kw)
    lim = np.minimum(caps, res.info["station_limit_kw"])[:, None]
    assert np.all(load <= np.maximum(lim, req.committed_station_kw) + 1e-6)


def test_mechanism_is_deterministic_by_seed_and_validates() -> None:
    rng = np.random.default_rng(0)
    req = _request(rng, 12, caps=np.array([30.0, 60.0, 90.0]), day_ahead=True)
    kw = {"n_elephants": 10, "n_clans": 2, "n_iter": 4}
    a, b = EHOBilevel(seed=3, **kw).clear(req), EHOBilevel(seed=3, **kw).clear(req)
    np.testing.assert_array_equal(a.price_usd_per_mwh, b.price_usd_per_mwh)
    np.testing.assert_array_equal(a.p_kw, b.p_kw)
    for bad, needle in (
        ({"alpha1": -1}, "alpha1"),
        ({"mode": "weekly"}, "mode"),
        ({"follow_share": 2}, "follow_share"),
        ({"forecast": {"n_evs": 5, "colour": 1}}, "forecast"),
        ({"price_max": 0.5}, "price_max"),
        ({"bogus": 1}, "bogus"),
    ):
        with pytest.raises(MarketConfigError, match=needle) as err:
            EHOBilevel(**bad)
        assert "\n" not in str(err.value)


def test_optimised_day_beats_uncontrolled_on_peak_in_the_cosimulation() -> None:
    """Closed loop on the paper scenario (a short EHO): lower peak, higher load factor, caps kept, energy ≥ 95 %."""
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    k = {}
    for mech in ("uncontrolled", "eho-bilevel"):
        sc = load_scenario(
            "eho-bilevel-10stations",
            [f"market.mechanism='{mech}'", "market.params.eho-bilevel.n_iter=8", "fleet.station_choice=0"],
        )
        r = CoSimulation(sc).run()
        k[mech] = r.kpis
        ss, st = r.tables["station_step"], r.tables["stations"]
        assert np.all(ss["p_kw"].to_numpy() <= st["cap_kw"].to_numpy()[ss["station"].to_numpy()] + 1e-6)
    assert k["eho-bilevel"]["peak_load_kw"] < 0.9 * k["uncontrolled"]["peak_load_kw"]
    assert k["eho-bilevel"]["load_factor"] > k["uncontrolled"]["load_factor"]
    assert k["eho-bilevel"]["energy_fulfilment"] >= 0.95


@pytest.mark.slow
def test_paper_run_quick(tmp_path) -> None:
    """The paper comparison runs end to end; with station choice EHO beats uncontrolled on peak, LF and wait."""
    import pandas as pd

    from experiments.eho_paper import run_eho_paper

    out = run_eho_paper(tmp_path / "eho", quick=True, plots=False, quiet=True)
    c = out["cases"]
    unc, opt = c["uncontrolled"], c["eho-choice"]
    assert opt["peak_kw"] < unc["peak_kw"] and opt["load_factor"] > unc["load_factor"]
    assert opt["wait_mean_h"] < unc["wait_mean_h"]
    assert opt["station_capacity_compliance"] == 1.0 and opt["energy_fulfilment"] >= 0.95
    assert (tmp_path / "eho" / "paper_comparison.md").is_file()
    assert (tmp_path / "eho" / "tables" / "table9_weights.csv").is_file()
    s = out["search"]
    small = s[s.problem.str.startswith("small")]
    assert np.all(small.gap_best_to_reference >= -1e-9)
    # At equal evaluations (550) EHO's worst seed beats random search's best seed on both paper problems by
    # ≥ 0.01 in J (measured: choice 0.091 vs 0.043, fixed 0.027 vs 0.007); EHO replaced by random search gives
    # identical runs and fails this.
    runs = pd.read_csv(tmp_path / "eho" / "tables" / "search_runs.csv")
    for problem in ("choice", "fixed"):
        r = runs[runs.problem == problem]
        eho_j, rand_j = r[r.method == "eho"].objective, r[r.method == "random"].objective
        assert len(eho_j) == len(rand_j) == 2 and set(r.n_evals[r.method != "de"]) == {550}
        assert eho_j.min() >= rand_j.max() + 0.01, (problem, eho_j.tolist(), rand_j.tolist())


def test_redirecting_users_cuts_waits_in_the_co_simulation() -> None:
    """Issue 6 must-show in the co-simulation: with following users redirected to a nearby, less busy station the
    optimised day beats uncontrolled charging on peak, load factor and mean wait, keeps every station cap and
    fulfils ≥ 95 % of the energy."""
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    unc = CoSimulation(
        load_scenario("eho-bilevel-10stations", ["market.mechanism=uncontrolled", "fleet.station_choice=0"])
    ).run()
    m = CoSimulation(load_scenario("eho-bilevel-10stations"))
    opt = m.run()
    a, b = unc.kpis, opt.kpis
    assert b["peak_load_kw"] < a["peak_load_kw"] and b["load_factor"] > a["load_factor"]
    assert b["mean_wait_min"] < a["mean_wait_min"]
    assert b["energy_fulfilment"] >= 0.95
    ss = opt.tables["station_step"]
    assert (ss["p_kw"].to_numpy() <= m.station_table.cap_kw[ss["station"].to_numpy()] + 1e-6).all()
    moved = (opt.tables["evs"]["station"].to_numpy() != unc.tables["evs"]["station"].to_numpy()).sum()
    assert moved > 0  # some users really were redirected
