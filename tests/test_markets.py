"""Market interface, registry, and the invariants every mechanism must keep (a conformance suite)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import markets.base as mb
from markets.base import EVFlex, MarketConfigError, MarketRequest, RequestError, asap_fill
from markets.elasticity_dr import ElasticityDR, elastic_shift, water_fill
from markets.tariffs import tou_price

N_SLOTS = 24


@st.composite
def requests(draw: st.DrawFn, max_evs: int = 12) -> MarketRequest:
    n = draw(st.integers(1, max_evs))
    start = np.array(draw(st.lists(st.integers(0, N_SLOTS - 1), min_size=n, max_size=n)))
    length = np.array(draw(st.lists(st.integers(1, N_SLOTS), min_size=n, max_size=n)))
    end = np.minimum(start + length, N_SLOTS)
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=np.zeros(n, int),
        station=np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))),
        start_slot=start,
        end_slot=end,
        end_frac=np.array(draw(st.lists(st.floats(0.1, 1.0), min_size=n, max_size=n))),
        e_need_kwh=np.array(draw(st.lists(st.floats(0.0, 60.0), min_size=n, max_size=n))),
        p_max_kw=np.array(draw(st.lists(st.sampled_from([3.6, 7.2, 11.0]), min_size=n, max_size=n))),
        p_min_kw=np.zeros(n),
        eta_ch=np.array(draw(st.lists(st.floats(0.8, 1.0), min_size=n, max_size=n))),
        participates=np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        elasticity=np.full(n, -0.3),
    )
    base = np.array(draw(st.lists(st.floats(10.0, 500.0), min_size=N_SLOTS, max_size=N_SLOTS)))
    caps = draw(st.one_of(st.none(), st.just(np.array([15.0, 30.0, np.inf]))))
    return MarketRequest(
        t0_min=0.0,
        dt_min=60.0,
        n_slots=N_SLOTS,
        evs=evs,
        base_load_kw=base,
        price_usd_per_mwh=tou_price(base, 84, 0.75, 1.35, "affine"),
        station_cap_kw=caps,
        day_ahead=draw(st.booleans()),
    )


def _feeder() -> object:
    from markets.qubo_dlmp import _case

    return _case("case33bw-dlmp")


@pytest.mark.slow
@pytest.mark.parametrize("name", mb.available())
@settings(max_examples=40, deadline=None)
@given(req=requests())
def test_every_mechanism_keeps_ev_limits(name: str, req: MarketRequest) -> None:
    """Conformance: no power outside the window or above the rating, and never more energy than needed."""
    mech = mb.get(name)()
    if "grid" in mech.needs:  # a mechanism that prices the grid runs on the request's network (the 33-bus feeder)
        req = replace(req, grid=mb.NetworkData(_feeder()))
    res = mech.clear(req)
    evs = req.evs
    assert res.p_kw.shape == (len(evs), req.n_slots)
    avail = evs.availability(req.n_slots)
    assert np.all(res.p_kw <= evs.p_max_kw[:, None] * avail + 1e-9)
    assert np.all(res.p_kw >= -1e-12)
    assert np.all(res.p_kw[avail == 0] == 0)
    e_batt = res.p_kw.sum(axis=1) * req.dt_h * evs.eta_ch
    assert np.all(e_batt <= evs.e_need_kwh + 1e-6)
    assert "wall_time_s" in res.info
    assert np.asarray(res.price_usd_per_mwh).shape[0] == req.n_slots


@settings(max_examples=60, deadline=None)
@given(req=requests())
def test_asap_delivers_need_when_window_allows(req: MarketRequest) -> None:
    p = asap_fill(req.evs, req.n_slots, req.dt_h)
    evs = req.evs
    can = (evs.availability(req.n_slots) * evs.p_max_kw[:, None]).sum(axis=1) * req.dt_h * evs.eta_ch
    got = p.sum(axis=1) * req.dt_h * evs.eta_ch
    np.testing.assert_allclose(got, np.minimum(can, evs.e_need_kwh), rtol=1e-9, atol=1e-9)
    # charging is front-loaded: once an EV stops short of its rating it never charges again
    for i in range(len(evs)):
        row = p[i, evs.start_slot[i] : evs.end_slot[i]]
        full = evs.p_max_kw[i] * evs.availability(req.n_slots)[i, evs.start_slot[i] : evs.end_slot[i]]
        short = np.nonzero(row < full - 1e-9)[0]
        if short.size:
            assert np.all(row[short[0] + 1 :] == 0)


@settings(max_examples=60, deadline=None)
@given(req=requests())
def test_participants_get_their_energy_and_station_caps_hold(req: MarketRequest) -> None:
    res = ElasticityDR().clear(req)
    evs = req.evs
    avail = evs.availability(req.n_slots)
    got = res.p_kw.sum(axis=1) * req.dt_h * evs.eta_ch
    can = (avail * evs.p_max_kw[:, None]).sum(axis=1) * req.dt_h * evs.eta_ch
    if req.station_cap_kw is None:
        np.testing.assert_allclose(got, np.minimum(can, evs.e_need_kwh), rtol=1e-7, atol=1e-7)
    else:
        # participants never push a station above its cap
        part = evs.participates
        if part.any():
            st_load = np.zeros((3, req.n_slots))
            np.add.at(st_load, evs.station, res.p_kw)
            non = np.zeros((3, req.n_slots))
            np.add.at(non, evs.station[~part], res.p_kw[~part])
            over = st_load - np.maximum(req.station_cap_kw[:, None], non)
            assert np.all(over <= 1e-6)


@settings(max_examples=100, deadline=None)
@given(
    load=st.lists(st.floats(1.0, 100.0), min_size=2, max_size=30),
    self_e=st.floats(-1.0, 0.0),
    cross_e=st.floats(0.0, 0.5),
    dr_max=st.floats(0.0, 0.5),
    part=st.floats(0.0, 1.0),
)
def test_dr_shift_is_energy_neutral_and_bounded(load, self_e, cross_e, dr_max, part) -> None:
    load = np.array(load)
    price = tou_price(load, 84.0, 0.75, 1.35, "affine")
    s = elastic_shift(
        load,
        price,
        rho_usd_per_mwh=84.0,
        self_elasticity=self_e,
        cross_elasticity=cross_e,
        dr_max=dr_max,
        participation=part,
    )
    assert abs(s.sum()) <= 1e-9 * max(1.0, load.sum())
    assert np.all(np.abs(s) <= part * dr_max * load + 1e-9)


def test_dr_moves_load_from_peak_to_valley() -> None:
    load = np.array([50, 40, 35, 30, 60, 90, 120, 130, 100, 70.0])
    price = tou_price(load, 84.0, 0.75, 1.35, "affine")
    s = elastic_shift(
        load, price, rho_usd_per_mwh=84.0, self_elasticity=-0.3, cross_elasticity=0.1, dr_max=0.15, participation=0.85
    )
    assert s[np.argmax(load)] < 0 < s[np.argmin(load)]
    assert (load + s).max() < load.max()


@settings(max_examples=100, deadline=None)
@given(
    load=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=20),
    cap=st.floats(0.1, 20.0),
    need=st.floats(0.0, 400.0),
)
def test_water_fill_levels_the_valley(load, cap, need) -> None:
    load = np.array(load)
    caps = np.full(load.size, cap)
    x = water_fill(load, caps, need)
    assert np.all(x >= -1e-12) and np.all(x <= caps + 1e-9)
    assert x.sum() == pytest.approx(min(need, caps.sum()), rel=1e-9, abs=1e-9)
    mid = (x > 1e-9) & (x < caps - 1e-9)
    if mid.any():
        level = (load + x)[mid]
        assert np.ptp(level) <= 1e-6 * max(1.0, level.max())
        assert np.all(load[x <= 1e-9] >= level.min() - 1e-6)


def test_tou_price_range_and_ratio_shape() -> None:
    load = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(tou_price(load, 100, 0.75, 1.35, "affine"), [75, 95, 135])
    np.testing.assert_allclose(tou_price(load, 100, 0, 0, "ratio"), [25, 50, 100])


def test_registry_and_bad_parameters_are_errors() -> None:
    assert {"uncontrolled", "elasticity-dr"} <= set(mb.available())
    with pytest.raises(MarketConfigError, match="allowed: .*elasticity-dr"):
        mb.get("nope")
    with pytest.raises(MarketConfigError, match="market.params.dr_maxx: unknown parameter.*did you mean 'dr_max'"):
        ElasticityDR(dr_maxx=0.2)
    with pytest.raises(MarketConfigError, match=r"market.params.dr_max: got 2.*\[0, 1\]"):
        ElasticityDR(dr_max=2)


def test_the_registry_imports_only_the_mechanism_asked_for() -> None:
    """Each shipped name is registered by the module `BUILTIN` names, and only on first use: a fresh interpreter
    that builds `uncontrolled` never imports dimod (the QUBO mechanisms' solver library)."""
    import subprocess
    import sys

    for name in mb.BUILTIN:
        assert mb.get(name).name == name  # type: ignore[attr-defined]
    code = (
        "import sys, markets.base as mb; mb.get('uncontrolled')(); "
        "assert 'dimod' not in sys.modules and 'markets.qubo_dlmp' not in sys.modules, 'imported eagerly'; "
        "mb.get('qubo-dlmp'); assert 'dimod' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_request_validation_names_the_field() -> None:
    with pytest.raises(RequestError, match="end_slot"):
        MarketRequest.from_sessions(
            dt_min=60,
            n_slots=4,
            base_load_kw=np.ones(4),
            arrival_slot=[2],
            departure_slot=[2],
            e_need_kwh=[1],
            p_max_kw=[7],
        )
    with pytest.raises(RequestError, match="base_load_kw"):
        MarketRequest.from_sessions(
            dt_min=60,
            n_slots=4,
            base_load_kw=np.ones(3),
            arrival_slot=[0],
            departure_slot=[2],
            e_need_kwh=[1],
            p_max_kw=[7],
        )
    with pytest.raises(RequestError, match="e_need_kwh"):
        MarketRequest.from_sessions(
            dt_min=60,
            n_slots=4,
            base_load_kw=np.ones(4),
            arrival_slot=[0],
            departure_slot=[2],
            e_need_kwh=[np.nan],
            p_max_kw=[7],
        )


def test_usable_without_a_simulation() -> None:
    req = MarketRequest.from_sessions(
        dt_min=60,
        n_slots=6,
        base_load_kw=[100, 80, 60, 50, 70, 120],
        arrival_slot=[0, 0],
        departure_slot=[6, 6],
        e_need_kwh=[14, 14],
        p_max_kw=[7, 7],
        eta_ch=1.0,
    )
    res = mb.get("elasticity-dr")().clear(req)
    df = res.to_frame(req)
    assert set(df.columns) >= {"ev", "slot", "p_kw", "ev_id", "t_min"}
    assert df["p_kw"].sum() == pytest.approx(28.0)
    # valley filling puts the energy in the cheapest (lowest-load) slots
    assert res.p_kw[:, 3].sum() > 0 and res.p_kw[:, 5].sum() == 0


def test_typed_optional_parts_are_validated_and_name_the_field() -> None:
    kw = dict(
        dt_min=60,
        n_slots=4,
        base_load_kw=np.ones(4),
        arrival_slot=[0],
        departure_slot=[2],
        e_need_kwh=[1.0],
        p_max_kw=[7.0],
        bus=[2],
    )
    vf = mb.VoltageForecast(vm_base_pu=np.ones((4, 3)), dv_dp_pu_per_kw=np.zeros((3, 3)), v_min_pu=0.95)
    ok = MarketRequest.from_sessions(
        **kw,
        s_max_kva=[7.7],
        voltage=vf,
        load_range_kw=(1, 2),
        committed_station_kw=np.zeros((2, 4)),
        station_cap_kw=[10.0, 20.0],
        load_elasticity=mb.Elasticity(-0.3, 0.1),
        bus_ev_cap_kw={2: 50},
    )
    assert ok.voltage.v_min_pu.shape == (3,) and ok.load_range_kw == (1.0, 2.0) and ok.bus_ev_cap_kw == {2: 50.0}
    bad = [
        ({"s_max_kva": [7.0, 7.0]}, "s_max_kva: expected shape"),
        ({"s_max_kva": [-1.0]}, "s_max_kva: must be finite"),
        ({"voltage": mb.VoltageForecast(np.ones((3, 3)), np.zeros((3, 3)), 0.95)}, r"voltage.vm_base_pu: .*n_slots=4"),
        ({"voltage": mb.VoltageForecast(np.ones((4, 2)), np.zeros((2, 2)), 0.95)}, "voltage: has 2 buses"),
        ({"voltage": {"vm_base_pu": np.ones((4, 3))}}, "voltage: expected a VoltageForecast"),
        ({"committed_station_kw": np.zeros((2, 3)), "station_cap_kw": [1.0, 2.0]}, r"committed_station_kw: .*\(2, 4\)"),
        ({"committed_station_kw": np.zeros((3, 4)), "station_cap_kw": [1.0, 2.0]}, "committed_station_kw: expected"),
        ({"committed_station_kw": np.full((1, 4), np.nan), "station_cap_kw": [1.0]}, "committed_station_kw: contains"),
        ({"load_range_kw": (2.0, 1.0)}, "load_range_kw"),
        ({"bus_ev_cap_kw": {0: -5.0}}, "bus_ev_cap_kw"),
        ({"prev_station_price_usd_per_kwh": [np.inf]}, "prev_station_price_usd_per_kwh"),
    ]
    for extra_kw, msg in bad:
        with pytest.raises(RequestError, match=msg):
            MarketRequest.from_sessions(**kw, **extra_kw)
    with pytest.raises(RequestError, match="voltage.dv_dp_pu_per_kw: expected shape"):
        mb.VoltageForecast(np.ones((4, 3)), np.zeros((2, 2)), 0.95)
    with pytest.raises(RequestError, match="voltage.vm_base_pu: contains NaN"):
        mb.VoltageForecast(np.full((4, 3), np.nan), np.zeros((3, 3)), 0.95)
    with pytest.raises(RequestError, match="elasticity.self_elasticity"):
        mb.Elasticity(float("nan"), 0.1)
    assert not hasattr(ok, "extra")


def test_needs_are_declared_and_checked() -> None:
    from markets.milp import MILP

    assert ElasticityDR().needs == {"load_elasticity", "committed_station_kw", "load_range_kw"}
    assert ElasticityDR(self_elasticity=-0.5).announced_elasticity == mb.Elasticity(-0.5, 0.1)
    assert "voltage" in MILP().needs and "voltage" not in MILP(voltage=False).needs
    assert mb.get("uncontrolled")().needs == frozenset() and mb.get("uncontrolled")().replans is False
    for name in mb.available():
        assert mb.get(name)().needs <= mb.REQUEST_PARTS, name

    class Greedy(mb.Mechanism):
        name = "greedy"
        needs = frozenset({"weather"})

        def _clear(self, request: MarketRequest) -> mb.MarketResult:  # pragma: no cover - never cleared
            raise AssertionError

    with pytest.raises(MarketConfigError, match="Greedy.needs: unknown request part 'weather'"):
        Greedy()


def test_announced_elasticity_in_the_request_replaces_the_configured_one() -> None:
    base = np.r_[np.full(12, 100.0), np.full(12, 300.0)]
    req = MarketRequest.from_sessions(
        dt_min=60,
        n_slots=24,
        base_load_kw=base,
        arrival_slot=[0],
        departure_slot=[24],
        e_need_kwh=[1.0],
        p_max_kw=[7.0],
        day_ahead=True,
    )
    mech = ElasticityDR()
    own = mech.clear(req).base_load_shift_kw
    same = mech.clear(replace(req, load_elasticity=mech.announced_elasticity)).base_load_shift_kw
    np.testing.assert_array_equal(own, same)
    weaker = mech.clear(replace(req, load_elasticity=mb.Elasticity(-0.01, 0.0))).base_load_shift_kw
    assert 1e-6 < np.abs(weaker).sum() < np.abs(own).sum() - 1e-6


def test_real_time_repricing_is_a_typed_flag() -> None:
    req = MarketRequest.from_sessions(
        dt_min=60,
        n_slots=4,
        base_load_kw=[10, 20, 30, 5],
        arrival_slot=[0],
        departure_slot=[4],
        e_need_kwh=[9.2],
        p_max_kw=[7.0],
        price_usd_per_mwh=np.full(4, 84.0),
    )
    assert not ElasticityDR(reprice="step").clear(req).repriced  # no day-ahead load range: nothing to anchor to
    res = ElasticityDR(reprice="step").clear(replace(req, load_range_kw=(5.0, 30.0)))
    assert res.repriced and "repriced" not in res.info
    assert not ElasticityDR().clear(replace(req, load_range_kw=(5.0, 30.0))).repriced


def test_scored_composite_wraps_any_mechanism() -> None:
    from markets.milp import reference
    from markets.scoring import Scored

    req = MarketRequest.from_sessions(
        dt_min=60,
        n_slots=6,
        base_load_kw=[100, 80, 60, 50, 70, 120],
        arrival_slot=[0, 1],
        departure_slot=[6, 5],
        e_need_kwh=[14, 10],
        p_max_kw=[7, 7],
        eta_ch=1.0,
        price_usd_per_mwh=[90, 80, 60, 50, 70, 120],
    )
    for name in ("uncontrolled", "elasticity-dr", "milp"):
        mech = Scored(mb.get(name)(), variant="lp")
        res = mech.clear(req)
        plain = mb.get(name)().clear(req)
        np.testing.assert_array_equal(res.p_kw, plain.p_kw)
        assert res.reference_objective == pytest.approx(reference(req)[0]) and res.gap >= -1e-9
        assert mech.gaps == [res.gap] and mech.reference_usd == pytest.approx(res.reference_objective)
        assert mech.needs >= mb.get(name)().needs | {"dlmp"}
    assert Scored(mb.get("uncontrolled")()).clear(req).gap > 1e-3  # charging at once is not optimal here
    from markets.milp import MILP

    assert Scored(MILP(rolling=True)).replans and not Scored(MILP()).replans
    assert Scored(ElasticityDR()).announced_elasticity == ElasticityDR().announced_elasticity


def test_starting_tariffs() -> None:
    from markets.tariffs import starting_tariff

    tod = np.arange(48) % 24 + 0.5
    load = np.r_[np.linspace(1, 2, 24), np.linspace(10, 30, 24)]
    flat = starting_tariff("flat", tod, load, rho_usd_per_mwh=84.0, steps_per_day=24)
    np.testing.assert_array_equal(flat, 84.0)
    tab = starting_tariff("table", tod, load, rho_usd_per_mwh=84.0, steps_per_day=24, table_usd_per_mwh=range(24))
    np.testing.assert_array_equal(tab, np.arange(48) % 24)
    shaped = starting_tariff("load-shaped", tod, load, rho_usd_per_mwh=100.0, steps_per_day=24)
    # each day on its own forecast: both days span the whole [plf_min, plf_max] range
    for day in (shaped[:24], shaped[24:]):
        assert day.min() == pytest.approx(75.0) and day.max() == pytest.approx(135.0)
    with pytest.raises(ValueError, match="unknown tariff 'spot'"):
        starting_tariff("spot", tod, load, rho_usd_per_mwh=84.0, steps_per_day=24)


# ------------------------------------------------------------------ settings a mechanism cannot honour are rejected
def test_v2g_share_is_rejected_for_a_mechanism_that_never_discharges() -> None:
    """Issue 21: V2G-capable EVs with a mechanism that never discharges are rejected at validation and at build
    (never scheduled charge-only in silence); the mechanisms that discharge accept them."""
    from typer.testing import CliRunner

    from experiments.cli import app
    from sim.interface import check_fit
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    never = [n for n in mb.available() if not getattr(mb.get(n), "discharges", False)]
    assert "uncontrolled" in never and "milp" not in never
    for mech in ("uncontrolled", "qubo-dlmp"):
        sc = load_scenario("default", ["fleet.groups.1.v2g_share=0.3", f"market.mechanism='{mech}'"])
        with pytest.raises(MarketConfigError) as err:
            check_fit(sc, sc.market.build())
        msg = str(err.value)
        assert msg.startswith("fleet.groups.1.v2g_share: got 0.3") and f"'{mech}'" in msg and "allowed: 0" in msg
        assert "milp" in msg and "\n" not in msg
    sc = load_scenario("default", ["fleet.groups.1.v2g_share=0.3", "market.mechanism='milp'"])
    check_fit(sc, sc.market.build())  # the continuous milp discharges
    sc = load_scenario(
        "default", ["fleet.groups.1.v2g_share=0.3", "market.mechanism='milp'", "market.params.milp.variant='milp'"]
    )
    with pytest.raises(MarketConfigError, match="fleet.groups.1.v2g_share"):  # the integer grid does not
        check_fit(sc, sc.market.build())
    with pytest.raises(MarketConfigError, match="fleet.groups.1.v2g_share"):  # `evgrid run` builds a simulation
        CoSimulation(
            load_scenario(
                "default", ["fleet.groups.1.v2g_share=0.3", "fleet.n_evs=10", "market.mechanism=uncontrolled"]
            )
        )
    out = CliRunner().invoke(
        app, ["validate", "default", "--set", "fleet.groups.0.v2g_share=1.0", "--set", "market.mechanism=uncontrolled"]
    )
    assert out.exit_code == 2 and "fleet.groups.0.v2g_share: got 1" in out.output


def test_positive_own_price_elasticities_are_rejected() -> None:
    from sim.scenario import ScenarioError, load_scenario

    with pytest.raises(ScenarioError) as err:
        load_scenario("default", ["fleet.groups.0.elasticity={low = -0.2, high = 0.1}"])
    msg = str(err.value)
    assert msg.startswith("fleet.groups.0.elasticity: own-price elasticity must be in [-100, 0]") and "\n" not in msg
    with pytest.raises(ScenarioError, match="allowed: -100 <= low"):  # -1e308 overflowed to inf in the response
        load_scenario("default", ["fleet.groups.0.elasticity={low = -1e308, high = -0.1}"])
    load_scenario("default", ["fleet.groups.0.elasticity={low = -0.2, high = 0.0}"])  # zero: inelastic, allowed
    for value, allowed in ((0.2, r"\[-100, 0\]"), ("-0.3", "a finite number"), (float("nan"), "a finite number")):
        with pytest.raises(MarketConfigError, match=f"market.params.self_elasticity: got .*; allowed:? {allowed}"):
            ElasticityDR(self_elasticity=value)
    with pytest.raises(MarketConfigError, match=r"market.params.cross_elasticity: got -0.1; allowed \[0, 100\]"):
        ElasticityDR(cross_elasticity=-0.1)  # a cross-elasticity < 0 would pull load toward the dearer slots
    for key, value in (("self_elasticity", -1e308), ("cross_elasticity", 1e5)):  # overflowed to inf, NaN at 0 load
        with pytest.raises(MarketConfigError, match=rf"market.params.{key}: got .*; allowed \[(-100, 0|0, 100)\]"):
            ElasticityDR(**{key: value})
    with pytest.raises(RequestError, match="evs.elasticity: got 0.4; allowed range is <= 0"):
        MarketRequest.from_sessions(
            dt_min=60, n_slots=2, base_load_kw=[1, 1], arrival_slot=[0], departure_slot=[2], e_need_kwh=[1],
            p_max_kw=[7.0], elasticity=0.4,
        )  # fmt: skip
