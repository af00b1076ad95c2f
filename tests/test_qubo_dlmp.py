"""qubo-dlmp (000_…): allocation invariants, DSO QUBO vs its HiGHS reference, clustering, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.base import MarketConfigError, MarketRequest, RequestError, get
from markets.qubo import allocation, clustering, dso


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_allocation_conserves_energy_and_respects_ratings(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8))
    t = data.draw(st.integers(1, 6))
    c = data.draw(st.integers(1, min(3, n)))
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    rated = np.array(data.draw(st.lists(st.sampled_from([0.0036, 0.0072, 0.011]), min_size=n, max_size=n)))
    start = np.array(data.draw(st.lists(st.integers(0, t - 1), min_size=n, max_size=n)))
    end = np.minimum(start + np.array(data.draw(st.lists(st.integers(1, t), min_size=n, max_size=n))), t)
    avail = ((np.arange(t) >= start[:, None]) & (np.arange(t) < end[:, None])).astype(float)
    cap = rated[:, None] * avail
    need = np.array(data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))) * cap.sum(axis=1) * 4.0
    # cluster schedules that deliver exactly the members' needs (spread over their capacity)
    share = np.divide(
        cap, cap.sum(axis=1, keepdims=True), out=np.zeros_like(cap), where=cap.sum(axis=1, keepdims=True) > 0
    )
    cluster_p = np.zeros((c, t))
    np.add.at(cluster_p, labels, share * need[:, None] / 4.0)
    al = allocation.allocate(cluster_p, labels, cap, need, 4.0)
    assert np.all(al.p_mw >= -1e-12) and np.all(al.p_mw <= cap + 1e-9)
    np.testing.assert_allclose(al.p_mw.sum(axis=1) * 4.0, need, atol=1e-7)  # every EV gets its energy
    got = np.zeros((c, t))
    np.add.at(got, labels, al.p_mw)
    np.testing.assert_allclose(got.sum(axis=1), cluster_p.sum(axis=1), atol=1e-7)  # cluster energy conserved
    assert al.shortfall_mwh <= 1e-7 * n  # the per-EV tolerance above, summed (hypothesis found 1.02e-7 over 6 EVs)


def _small_dso(bits: int) -> dso.DSOInstance:
    t = 3
    return dso.DSOInstance(
        demand_mw=np.array([5.0, 6.0, 7.5]),
        demand_q_mvar=np.array([1.5, 1.8, 2.2]),
        p_max_mw=np.column_stack(
            [np.full(t, 1.5), np.full(t, 1.5), np.array([0.1, 0.45, 0.2]), np.array([0.9, 0.6, 0.7])]
        ),
        cost_usd_per_mwh=np.array([60.0, 85.0, 0.0, 0.0]),
        q_max_mvar=np.array([0.5, 0.5]),
        q_cost_usd_per_mvarh=np.array([7.0, 8.5]),
        td_price_usd_per_mwh=np.array([50.0, 70.0, 100.0]),
        td_q_price_usd_per_mvarh=np.array([5.0, 7.0, 10.0]),
        s_td_max_mva=8.0,
        dt_h=4.0,
        bits=bits,
    )


def _small_dso_voltage(bits: int) -> dso.DSOInstance:
    """The small case with a voltage floor that binds (LP dual ≠ 0): DGs and DG reactive power must trade."""
    from dataclasses import replace

    b = _small_dso(bits)
    t = b.n_slots
    return replace(
        b,
        v0_pu=np.array([0.935, 0.93, 0.925]),
        v_sens_p=np.tile([0.012, 0.02, 0.008, 0.006], (t, 1)),
        v_sens_q=np.tile([0.03, 0.045], (t, 1)),
        p0_mw=np.column_stack([np.zeros((t, 2)), b.p_max_mw[:, 2:]]),
        q0_mvar=np.zeros((t, 2)),
        v_active=np.ones(t, bool),
    )


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("case", [_small_dso, _small_dso_voltage])
def test_dso_qubo_is_balance_feasible_and_within_1pct_of_its_reference(bits: int, case) -> None:
    inst = case(bits)
    ref = dso.reference(inst)
    got = dso.solve(inst, seed=3, num_reads=16, num_sweeps=400)
    # balance holds by construction: units + interface = demand, interface within its range
    np.testing.assert_allclose(got.p_mw.sum(axis=1) + got.p_td_mw, inst.demand_mw, atol=1e-9)
    assert np.all(got.p_td_mw >= -1e-9) and np.all(got.p_td_mw <= inst.s_td_max_mva + 1e-9)
    assert np.all(got.p_mw <= inst.p_max_mw + 1e-12)
    assert got.n_violations <= ref.n_violations == 0  # no row the reference keeps is broken
    assert got.cost_usd >= ref.cost_usd - 1e-6
    assert (got.cost_usd - ref.cost_usd) / ref.cost_usd <= 0.01
    assert all(s["n_vars"] > 0 for s in got.info["stages"])  # every stage is a sampled QUBO


def test_clustering_reports_silhouette_in_range() -> None:
    rng = np.random.default_rng(0)
    n = 60
    bus = rng.integers(1, 33, n)
    cl = clustering.cluster_evs(
        "spectral",
        5,
        bus=bus,
        bus_r_pu=bus / 33.0,
        e_need_kwh=rng.uniform(10, 60, n),
        p_max_kw=rng.choice([3.6, 7.2], n),
        start_slot=np.zeros(n, int),
        end_slot=np.full(n, 6),
        rng=rng,
    )
    assert cl.n_clusters == 5 and -1.0 <= cl.silhouette <= 1.0
    by_bus = clustering.cluster_evs(
        "by-bus",
        0,
        bus=bus,
        bus_r_pu=bus / 33.0,
        e_need_kwh=np.ones(n),
        p_max_kw=np.ones(n),
        start_slot=np.zeros(n, int),
        end_slot=np.ones(n, int),
        rng=rng,
    )
    assert by_bus.n_clusters == len(np.unique(bus)) and -1.0 <= by_bus.silhouette <= 1.0


def _request() -> MarketRequest:
    return MarketRequest.from_sessions(
        dt_min=240,
        n_slots=6,
        base_load_kw=[2500, 2300, 3000, 3400, 3700, 3300],
        arrival_slot=[0, 0, 1, 2, 0, 3],
        departure_slot=[6, 4, 6, 6, 3, 6],
        e_need_kwh=[40, 20, 60, 30, 10, 25],
        p_max_kw=[7.2, 7.2, 11, 3.6, 7.2, 7.2],
        eta_ch=1.0,
        bus=[5, 17, 17, 24, 31, 9],
        price_usd_per_mwh=[40, 50, 60, 70, 100, 60],
    )


@pytest.mark.slow
def test_mechanism_is_seed_deterministic_and_keeps_ev_limits() -> None:
    req = _request()
    a = get("qubo-dlmp")(seed=7, bits=4, grid="case33bw-dlmp").clear(req)
    b = get("qubo-dlmp")(seed=7, bits=4, grid="case33bw-dlmp").clear(req)
    np.testing.assert_array_equal(a.p_kw, b.p_kw)
    np.testing.assert_array_equal(a.q_kvar, b.q_kvar)
    assert a.objective == b.objective
    avail = req.evs.availability(req.n_slots)
    assert np.all(a.p_kw <= req.evs.p_max_kw[:, None] * avail + 1e-9) and np.all(a.p_kw >= 0)
    np.testing.assert_allclose(a.p_kw.sum(axis=1) * req.dt_h, req.evs.e_need_kwh, rtol=1e-6)
    assert {"eva_cost_usd", "dso_cost_usd", "total_cost_usd"} <= set(a.objective)


def test_rolling_mode_delivers_the_same_energy() -> None:
    req = _request()
    r = get("qubo-dlmp")(seed=1, bits=4, mode="rolling", grid="none").clear(req)
    np.testing.assert_allclose(r.p_kw.sum(axis=1) * req.dt_h, req.evs.e_need_kwh, rtol=1e-6)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"bits": 1}, "bits"),
        ({"rounds": 0}, "rounds"),
        ({"clustering": "kmeans"}, "clustering"),
        ({"mode": "live"}, "mode"),
        ({"sampler": "annealer"}, "sampler"),
        ({"v_min_pu": 1.2}, "v_min_pu"),
        ({"dgs": [{"bus": 40}]}, "dgs.0"),
        (
            {"dgs": [{"bus": 2.5, "p_max_kw": 1, "cost_usd_per_mwh": 1, "q_max_kvar": 0, "q_cost_usd_per_mvarh": 0}]},
            "dgs.0",
        ),
        ({"grid": "case118"}, "grid"),
        ({"bitz": 4}, "bitz"),
    ],
)
def test_bad_parameters_are_one_line_errors(kw: dict, field: str) -> None:
    with pytest.raises(MarketConfigError) as err:
        get("qubo-dlmp")(**kw)
    msg = str(err.value)
    assert f"market.params.{field}" in msg and "\n" not in msg


def test_second_allocation_stage_removes_avoidable_interruptions() -> None:
    # two EVs, one cluster drawing 1 MW for 4 h, each EV needing 2 MWh: the EVs can take turns without pausing
    al = allocation.allocate(np.ones((1, 4)), np.zeros(2, int), np.ones((2, 4)), np.array([2.0, 2.0]), 1.0)
    assert al.interruptions == 0 and al.tracking_error_mwh < 1e-9 and al.shortfall_mwh < 1e-9
    assert allocation.count_interruptions(np.array([[1, 0, 1, 0], [0, 1, 0, 1]])) == 2  # on → off → on, twice
    q = allocation._fewest_interruptions(
        np.ones(4), np.ones((2, 4)), np.array([2.0, 2.0]), np.array([[1.0, 0, 1, 0], [0, 1, 0, 1]]), 1.0, 2.0
    )
    assert q is not None and allocation.count_interruptions(q) == 0
    np.testing.assert_allclose(q.sum(axis=0), 1.0)


# ---------------------------------------------------------------------------------------------- the network it prices
def _network(net: object, name: str) -> object:
    """A `grids.network.Network` around a pandapower net (its loads as base load, one residential zone)."""
    from grids.network import Network

    n = len(net.bus)
    pos = {b: i for i, b in enumerate(net.bus.index)}
    p, q = np.zeros(n), np.zeros(n)
    loads = net.load[net.load.in_service]
    np.add.at(p, [pos[b] for b in loads.bus], loads.p_mw.to_numpy() * 1000.0)
    np.add.at(q, [pos[b] for b in loads.bus], loads.q_mvar.to_numpy() * 1000.0)
    return Network(name=name, net=net, base_p_kw=p, base_q_kvar=q, zone=np.full(n, "residential"))


def _cigre_mv() -> object:
    import pandapower.networks as pn

    return _network(pn.create_cigre_network_mv(), "cigre-mv")


def _meshed_33() -> object:
    import pandapower.networks as pn

    net = pn.case33bw()
    net.line["in_service"] = True  # close the five tie lines: loops
    return _network(net, "case33bw-meshed")


def test_prices_the_network_the_request_carries_not_one_of_its_own() -> None:
    """On a request carrying CIGRE MV (15 buses), the DSO level's power flows are CIGRE's, not the 33-bus feeder's."""
    from dataclasses import replace

    from markets.base import NetworkData

    cigre = _cigre_mv()
    req = replace(
        MarketRequest.from_sessions(
            dt_min=240,
            n_slots=6,
            base_load_kw=np.full(6, 0.5) * cigre.base_p_kw.sum(),
            arrival_slot=[0, 0, 1, 2],
            departure_slot=[6, 4, 6, 6],
            e_need_kwh=[40, 20, 60, 30],
            p_max_kw=[7.2, 7.2, 11, 3.6],
            eta_ch=1.0,
            bus=[3, 5, 8, 13],
            price_usd_per_mwh=[40, 50, 60, 70, 100, 60],
        ),
        grid=NetworkData(cigre),
    )
    res = get("qubo-dlmp")(seed=7, bits=4).clear(req)
    assert res.info["vm_pu"].shape == (6, cigre.n_bus) == (6, 15)
    np.testing.assert_allclose(res.p_kw.sum(axis=1) * req.dt_h, req.evs.e_need_kwh, rtol=1e-6)
    # a named case that is not the request's network is an error, never a silent substitute
    with pytest.raises(MarketConfigError, match=r"market.params.grid: got 'case33bw-dlmp'.*'cigre-mv'"):
        get("qubo-dlmp")(seed=7, bits=4, grid="case33bw-dlmp").clear(req)
    # DLMPs of another network (33 buses) do not fit this one (15)
    with pytest.raises(RequestError, match="dlmp_p_usd_per_mwh: 33 bus columns.*15 buses"):
        replace(req, dlmp_p_usd_per_mwh=np.full((6, 33), 50.0))


def test_passing_the_paper_feeder_gives_the_named_case_result_bit_for_bit() -> None:
    """The shipped scenarios' path (the request carries case33bw-dlmp) equals the old one (the case built inside)."""
    from dataclasses import replace

    from grids.network import build_network
    from markets.base import NetworkData

    req = _request()
    named = get("qubo-dlmp")(seed=7, bits=4, grid="case33bw-dlmp").clear(req)
    carried = get("qubo-dlmp")(seed=7, bits=4).clear(replace(req, grid=NetworkData(build_network("case33bw-dlmp"))))
    np.testing.assert_array_equal(named.p_kw, carried.p_kw)
    np.testing.assert_array_equal(named.info["vm_pu"], carried.info["vm_pu"])
    assert named.objective == carried.objective


@pytest.mark.parametrize(
    "make, why",
    [
        (_meshed_33, "meshed"),
        (lambda: _network(__import__("pandapower.networks").networks.case118(), "case118"), "gen"),
    ],
)
def test_a_network_it_cannot_price_is_refused_in_one_line(make, why: str) -> None:
    from dataclasses import replace

    from markets.base import NetworkData

    network = make()
    mech = get("qubo-dlmp")(bits=4)
    with pytest.raises(MarketConfigError) as err:
        mech.check_network(network)
    msg = str(err.value)
    assert msg.startswith("grid.case:") and why in msg and "radial" in msg and "\n" not in msg
    with pytest.raises(MarketConfigError, match=why):  # clearing on it is refused too
        mech.clear(replace(_request(), grid=NetworkData(network)))
    get("qubo-dlmp")(bits=4, grid="none").check_network(network)  # no DSO level: nothing to refuse


def test_a_request_without_network_is_refused_unless_a_case_is_named() -> None:
    with pytest.raises(RequestError, match="grid: qubo-dlmp prices the network the request carries"):
        get("qubo-dlmp")(bits=4).clear(_request())
    assert "grid" not in get("qubo-dlmp")(grid="none").needs and "grid" in get("qubo-dlmp")().needs
    with pytest.raises(MarketConfigError, match=r"market.params.dgs.0.bus: got 40"):
        dg = {"bus": 40, "p_max_kw": 1500.0, "cost_usd_per_mwh": 60.0, "q_max_kvar": 500.0, "q_cost_usd_per_mvarh": 7.0}
        get("qubo-dlmp")(dgs=[dg]).check_network(_network(__import__("pandapower.networks").networks.case33bw(), "x"))


def test_simulation_hands_its_own_network_and_bus_load_to_qubo_dlmp() -> None:
    """In a co-simulation on case33bw (no PV/wind), qubo-dlmp's request carries that network and the load the
    simulation runs per bus — not the case33bw-dlmp feeder its old default built."""
    from markets.base import EVFlex
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    sc = load_scenario(
        "qubo-dlmp-33bus-s1",
        ["grid.case='case33bw'", "fleet.n_evs=20", "time.horizon_h=8", "market.params.qubo-dlmp.reference=false"],
    )
    sim = CoSimulation(sc)
    req = sim.interface.request(0, 2, EVFlex.empty(), day_ahead=True)
    assert req.grid is not None and req.grid.network is sim.network and sim.network.name == "case33bw"
    np.testing.assert_array_equal(req.grid.bus_load_kw, sim.base_p_kw[:2])
    assert req.grid.renewable_kw is not None and req.grid.renewable_kw.shape == (2, 0)
    result = sim.run()
    assert result.kpis["n_evs"] == 20


def test_a_scenario_on_a_network_it_cannot_price_is_refused_before_the_run() -> None:
    from sim.interface import check_fit
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    sc = load_scenario(
        "qubo-dlmp-33bus-s1", ["grid.case='case118'", "grid.bus_numbering='pandapower'", "fleet.n_evs=10"]
    )
    with pytest.raises(MarketConfigError, match=r"^grid.case: market.mechanism 'qubo-dlmp' cannot price network"):
        check_fit(sc, sc.market.build())  # `evgrid validate`
    with pytest.raises(MarketConfigError, match="market.params.qubo-dlmp.grid = 'none'"):
        CoSimulation(sc)  # `evgrid run`, studies
    named = load_scenario("qubo-dlmp-33bus-s1", ["market.params.qubo-dlmp.grid='case33bw-dr'"])
    with pytest.raises(MarketConfigError, match=r"market.params.qubo-dlmp.grid: got 'case33bw-dr'"):
        check_fit(named, named.market.build())
