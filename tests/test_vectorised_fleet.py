"""The fleet-batched valley filling (`markets.elasticity_dr.valley_fill`, one compiled pass over the fleet) against
the per-EV implementation it replaced (kept here, and only here, as the reference).

The batched version repeats the reference's arithmetic (same breakpoints, the fill summed in numpy's pairwise
order, same interpolation), so the schedules are expected to be bit-identical; the property test asserts the
brief's tolerance (1e-9 kW per EV and slot, energy totals to 1e-9 relative) and, separately, counts exact matches.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.base import EVFlex, MarketRequest, RequestError, asap_fill
from markets.elasticity_dr import ElasticityDR, valley_fill, water_fill

# --------------------------------------------------------------------------------------------------------------
# reference: the per-EV implementation (as on main before the fleet-batched kernel)


def water_fill_ref(load_kw: np.ndarray, cap_kw: np.ndarray, need_kw_slots: float) -> np.ndarray:
    """Dense per-EV water filling (slots × slots matrix of the fill at every breakpoint)."""
    total = cap_kw.sum()
    if need_kw_slots >= total:
        return cap_kw.copy()
    if need_kw_slots <= 0:
        return np.zeros_like(cap_kw)
    bp = np.sort(np.concatenate([load_kw, load_kw + cap_kw]))
    filled = np.clip(bp[:, None] - load_kw[None, :], 0.0, cap_kw[None, :]).sum(axis=1)
    i = int(np.searchsorted(filled, need_kw_slots))
    lo_w, hi_w = bp[i - 1], bp[i]
    lo_f, hi_f = filled[i - 1], filled[i]
    w = hi_w if hi_f == lo_f else lo_w + (need_kw_slots - lo_f) * (hi_w - lo_w) / (hi_f - lo_f)
    return np.clip(w - load_kw, 0.0, cap_kw)


def valley_fill_ref(
    evs: EVFlex,
    n_slots: int,
    dt_h: float,
    load_kw: np.ndarray,
    station_cap_kw: np.ndarray | None = None,
    station_load_kw: np.ndarray | None = None,
) -> np.ndarray:
    """Python loop over EVs (earliest departure first), each water-filled on top of the previous ones."""
    p = np.zeros((len(evs), n_slots))
    load = np.asarray(load_kw, float).copy()
    avail = evs.availability(n_slots)
    st_load = None
    if station_cap_kw is not None:
        st_load = (
            np.zeros((len(station_cap_kw), n_slots))
            if station_load_kw is None
            else station_load_kw.astype(float).copy()
        )
    for i in np.argsort(evs.end_slot, kind="stable"):
        s, e = int(evs.start_slot[i]), int(evs.end_slot[i])
        cap = evs.p_max_kw[i] * avail[i, s:e]
        if st_load is not None:
            assert station_cap_kw is not None
            k = int(evs.station[i])
            cap = np.minimum(cap, np.maximum(station_cap_kw[k] - st_load[k, s:e], 0.0))
        x = water_fill_ref(load[s:e], cap, evs.e_need_kwh[i] / evs.eta_ch[i] / dt_h)
        p[i, s:e] = x
        load[s:e] += x
        if st_load is not None:
            st_load[int(evs.station[i]), s:e] += x
    return p


# --------------------------------------------------------------------------------------------------------------
# random fleets


@st.composite
def fleets(draw: st.DrawFn) -> tuple[EVFlex, int, float, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A random fleet, horizon, base load and (optionally) station caps with committed station load."""
    n_slots = draw(st.sampled_from([1, 5, 8, 24, 96, 150]))  # 150 > 128: numpy's pairwise sum splits the row
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_slots, n)
    end = np.minimum(start + rng.integers(1, n_slots + 1, n), n_slots)
    n_st = int(rng.integers(1, 5))
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=np.zeros(n, int),
        station=rng.integers(0, n_st, n),
        start_slot=start,
        end_slot=end,
        end_frac=rng.uniform(0.05, 1.0, n),
        # some EVs need nothing, some more than they can get
        e_need_kwh=np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0.0, 80.0, n)),
        p_max_kw=rng.choice([0.0, 3.6, 7.2, 11.0, 22.0], n, p=[0.05, 0.25, 0.3, 0.25, 0.15]),
        p_min_kw=np.zeros(n),
        eta_ch=rng.uniform(0.8, 1.0, n),
        participates=np.ones(n, bool),
        elasticity=np.full(n, -0.3),
    )
    load = rng.uniform(0.0, 100.0, n_slots)
    if draw(st.booleans()):  # flat stretches: ties between breakpoints
        load = np.round(load / 20.0) * 20.0
    dt_h = draw(st.sampled_from([0.25, 1.0, 1.0 / 12.0]))
    cap = st_load = None
    if draw(st.booleans()):
        cap = rng.choice([np.inf, 11.0, 22.0, 50.0], n_st)
        st_load = rng.uniform(0.0, 15.0, (n_st, n_slots)) if draw(st.booleans()) else None
    return evs, n_slots, dt_h, load, cap, st_load


@settings(max_examples=300, deadline=None)
@given(case=fleets())
def test_batched_valley_fill_matches_the_per_ev_reference(case) -> None:
    evs, n_slots, dt_h, load, cap, st_load = case
    want = valley_fill_ref(evs, n_slots, dt_h, load, cap, None if st_load is None else st_load.copy())
    got = valley_fill(evs, n_slots, dt_h, load, cap, None if st_load is None else st_load.copy())
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0.0, atol=1e-9)
    assert got.sum() == pytest.approx(want.sum(), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), want.sum(axis=1), rtol=1e-9, atol=1e-9)
    # the kernel repeats the reference's arithmetic: not just close, identical
    assert np.array_equal(got, want)


@settings(max_examples=300, deadline=None)
@given(
    load=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=200),
    cap=st.lists(st.floats(0.0, 25.0), min_size=1, max_size=200),
    need=st.floats(0.0, 3000.0),
)
def test_water_fill_matches_the_dense_reference(load, cap, need) -> None:
    n = min(len(load), len(cap))
    load_kw, cap_kw = np.array(load[:n]), np.array(cap[:n])
    got = water_fill(load_kw, cap_kw, need)
    try:
        want = water_fill_ref(load_kw, cap_kw, need)
    except IndexError:
        # the reference's one crash: load + cap rounds back to load (caps below an ulp of the load), so even the
        # highest breakpoint fills less than the need; the kernel interpolates on the last segment instead
        assert np.all((got >= 0.0) & (got <= cap_kw))
        assert got.sum() == pytest.approx(need, rel=1e-9, abs=1e-12)
        return
    assert np.array_equal(got, want)


def test_valley_fill_does_not_modify_its_inputs() -> None:
    rng = np.random.default_rng(3)
    n, n_slots = 30, 24
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=np.zeros(n, int),
        station=rng.integers(0, 3, n),
        start_slot=np.zeros(n, int),
        end_slot=rng.integers(1, n_slots + 1, n),
        end_frac=np.ones(n),
        e_need_kwh=rng.uniform(5, 30, n),
        p_max_kw=np.full(n, 7.2),
        p_min_kw=np.zeros(n),
        eta_ch=np.full(n, 0.92),
        participates=np.ones(n, bool),
        elasticity=np.full(n, -0.3),
    )
    load, cap, st_load = rng.uniform(0, 50, n_slots), np.full(3, 20.0), rng.uniform(0, 5, (3, n_slots))
    load0, st_load0 = load.copy(), st_load.copy()
    valley_fill(evs, n_slots, 0.25, load, cap, st_load)
    assert np.array_equal(load, load0) and np.array_equal(st_load, st_load0)


def test_valley_fill_refuses_out_of_range_input() -> None:
    evs = EVFlex(
        ev_id=np.arange(2),
        bus=np.zeros(2, int),
        station=np.array([0, 3]),
        start_slot=np.zeros(2, int),
        end_slot=np.array([4, 6]),
        end_frac=np.ones(2),
        e_need_kwh=np.ones(2),
        p_max_kw=np.ones(2),
        p_min_kw=np.zeros(2),
        eta_ch=np.ones(2),
        participates=np.ones(2, bool),
        elasticity=np.zeros(2),
    )
    with pytest.raises(ValueError, match="n_slots=4"):
        valley_fill(evs, 4, 1.0, np.zeros(4))
    with pytest.raises(ValueError, match="3 stations"):
        valley_fill(evs, 6, 1.0, np.zeros(6), np.ones(3))


def test_elasticity_dr_clearing_matches_the_per_ev_reference() -> None:
    """A whole clearing (non-participants at full rate, participants valley-filled under station caps)."""
    rng = np.random.default_rng(11)
    n, n_slots, n_st = 400, 96, 12
    evs = EVFlex(
        ev_id=np.arange(n),
        bus=rng.integers(0, 5, n),
        station=rng.integers(0, n_st, n),
        start_slot=np.zeros(n, int),
        end_slot=rng.integers(1, n_slots + 1, n),
        end_frac=rng.uniform(0.1, 1.0, n),
        e_need_kwh=rng.uniform(2, 40, n),
        p_max_kw=rng.choice([3.6, 7.2, 11.0], n),
        p_min_kw=np.zeros(n),
        eta_ch=np.full(n, 0.92),
        participates=rng.random(n) < 0.85,
        elasticity=np.full(n, -0.3),
    )
    base = 3000.0 + 1000.0 * np.sin(np.linspace(0, 2 * np.pi, n_slots))
    cap = np.full(n_st, 40.0)
    req = MarketRequest(
        t0_min=0.0, dt_min=15.0, n_slots=n_slots, evs=evs, base_load_kw=base, station_cap_kw=cap, day_ahead=True
    )
    res = ElasticityDR().clear(req)
    follow = evs.participates
    p_asap = asap_fill(evs.select(~follow), n_slots, 0.25)
    st_load = np.zeros((n_st, n_slots))
    np.add.at(st_load, evs.station[~follow], p_asap)
    load = base + res.base_load_shift_kw + p_asap.sum(axis=0)
    want = valley_fill_ref(evs.select(follow), n_slots, 0.25, load, cap, st_load)
    assert np.array_equal(res.p_kw[follow], want)
    assert np.array_equal(res.p_kw[~follow], p_asap)


def test_elasticity_dr_refuses_a_station_outside_the_caps() -> None:
    evs = EVFlex(
        ev_id=np.arange(2),
        bus=np.zeros(2, int),
        station=np.array([0, 2]),
        start_slot=np.zeros(2, int),
        end_slot=np.array([2, 4]),
        end_frac=np.ones(2),
        e_need_kwh=np.ones(2),
        p_max_kw=np.ones(2),
        p_min_kw=np.zeros(2),
        eta_ch=np.ones(2),
        participates=np.array([False, True]),
        elasticity=np.zeros(2),
    )
    req = MarketRequest(t0_min=0.0, dt_min=60.0, n_slots=4, evs=evs, base_load_kw=np.ones(4), station_cap_kw=np.ones(2))
    with pytest.raises(RequestError, match="evs.station: got 2; allowed 0 … 1"):
        ElasticityDR().clear(req)


# --------------------------------------------------------------------------------------------------------------
# aggregator: the committed load per station / in total, summed without copying the plugged fleet's rows


@pytest.fixture(scope="module")
def midday_model():
    """The default scenario (300 EVs) run to the evening peak, with schedules committed and curtailment seen."""
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    model = CoSimulation(load_scenario("default", ["fleet.n_evs=300"]))
    model.env.run(until=40 * model.dt_min + 1e-9)
    yield model
    model.close()


def test_aggregator_committed_load_matches_np_add_at(midday_model) -> None:
    from agents.fleet import PLUGGED

    agg, f = midday_model.aggregator, midday_model.fleet
    rows = np.nonzero(agg.scheduled & (f.state == PLUGGED))[0]
    assert len(rows) > 20  # the check means something only with many committed EVs
    for k in (0, 17, 40, 60):
        want = np.zeros((len(midday_model.station_table), agg.schedule_kw.shape[1] - k))
        np.add.at(want, f.station[rows], agg.schedule_kw[rows, k:])
        assert np.array_equal(agg.committed_station_kw(k), want)
        assert want.any() or k > 40
        assert np.array_equal(agg.committed_kw(k), agg.schedule_kw[rows, k:].sum(axis=0))


@settings(max_examples=60, deadline=None)
@given(
    n_slots=st.integers(1, 40),
    windows=st.lists(st.tuples(st.integers(0, 45), st.integers(1, 30), st.floats(1e-6, 1.0)), min_size=0, max_size=20),
)
def test_availability_matches_the_boolean_matrix_reference(n_slots: int, windows: list) -> None:  # type: ignore[type-arg]
    """The compiled `availability` equals the former numpy formula bit for bit: 1 inside [start, end), the last
    slot's share where it lies in the horizon, 0 elsewhere (windows starting or ending past the horizon included)."""
    from markets.parts import availability

    start = np.array([w[0] for w in windows], int)
    end = start + np.array([w[1] for w in windows], int)
    frac = np.array([w[2] for w in windows], float)
    k = np.arange(n_slots)
    ref = ((k >= start[:, None]) & (k < end[:, None])).astype(float)
    last = end - 1
    inside = last < n_slots
    ref[np.nonzero(inside)[0], last[inside]] *= frac[inside]
    np.testing.assert_array_equal(availability(start, end, frac, n_slots), ref)
