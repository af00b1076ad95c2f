"""Contiguous charging in qubo-dlmp (issue 17, part 2): the EVA switching penalty, its MILP reference, the
contiguous EV split, the parameters, and today's results unchanged at weight 0."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.base import MarketConfigError, MarketRequest, MarketResult, get
from markets.qubo import allocation, contiguity, encoding, eva
from markets.qubo.model import QuboModel

PRICES = [40.0, 90.0, 45.0, 95.0, 50.0, 60.0]  # cheap and dear slots alternate: cost alone gaps every schedule


def _penalty_model(
    c: int, t: int, width: int, lo: np.ndarray, step: int, on_level: int, w: np.ndarray, must: np.ndarray
) -> QuboModel:
    m = QuboModel()
    y = m.integer("y", (c, t), encoding.unary(width))
    contiguity.add_switch_penalty(m, y, lo, step, on_level, w, must)
    return m


def test_penalty_energy_is_weight_times_interruptions_on_hand_made_schedules() -> None:
    # one cluster, 6 slots, whole range [0, 4] in single levels: z = [level > 0]
    cases = {
        (3, 0, 2, 0, 0, 1): 2,  # charge, pause, charge, pause, charge
        (0, 2, 2, 0, 0, 0): 0,
        (1, 1, 1, 1, 1, 1): 0,
        (1, 0, 1, 0, 1, 0): 2,
        (0, 0, 0, 0, 0, 4): 0,
        (4, 0, 0, 0, 0, 4): 1,
    }
    m = _penalty_model(1, 6, 4, np.zeros((1, 6), np.int64), 1, 1, np.array([2.5]), np.array([True]))
    for levels, n_int in cases.items():
        x = m.encode({"y": np.array([levels])}, fill_slack=False)
        assert m.energy(x) == pytest.approx(2.5 * n_int), levels
        assert contiguity.interruptions(np.array([levels]))[0] == n_int
    # a higher on-level: 1 is "off", so (3, 1, 2, 0, 0, 0) pauses once
    m2 = _penalty_model(1, 6, 4, np.zeros((1, 6), np.int64), 1, 2, np.array([1.0]), np.array([True]))
    assert m2.energy(m2.encode({"y": np.array([[3, 1, 2, 0, 0, 0]])}, fill_slack=False)) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_penalty_energy_matches_the_run_count_in_any_window(data: st.DataObject) -> None:
    c, t = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6))
    width, step = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    on_level = data.draw(st.integers(1, 12))
    lo = np.array(data.draw(st.lists(st.integers(0, 10), min_size=c * t, max_size=c * t))).reshape(c, t)
    bits = np.array(data.draw(st.lists(st.integers(0, width), min_size=c * t, max_size=c * t))).reshape(c, t)
    w = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.5, 3.0]), min_size=c, max_size=c)))
    must = np.array(data.draw(st.lists(st.booleans(), min_size=c, max_size=c)))
    m = _penalty_model(c, t, width, lo, step, on_level, w, must)
    energy = m.energy(m.encode({"y": bits}, fill_slack=False))
    level = lo + step * bits
    runs = contiguity.runs(level, tol=on_level - 1)
    assert energy == pytest.approx(float(np.sum(w * (runs - must))), abs=1e-9)
    # a cluster that must charge and does pays exactly w × its interruptions
    ok = must & (runs >= 1)
    assert np.allclose((w * (runs - must))[ok], (w * contiguity.interruptions(level, tol=on_level - 1))[ok])


def _gappy_instance(bits: int) -> eva.EVAInstance:
    inst = eva.paper_instance(bits=bits, seed=1, n_clusters=4, n_evs=200)
    c = inst.shape[0]
    lam = np.tile(PRICES, (c, 1)) * inst.lam_p_usd_per_mwh[:, :1] / 40.0
    return replace(inst, lam_p_usd_per_mwh=lam, e_min_mwh=2.2 * inst.e_min_mwh, e_max_mwh=2.2 * inst.e_max_mwh)


@pytest.mark.parametrize("bits", [4, 8])
def test_switching_weight_removes_the_eva_interruptions(bits: int) -> None:
    inst = _gappy_instance(bits)
    c = inst.shape[0]
    free = eva.solve(inst, seed=0)
    assert eva.evaluate(inst, free.n)["interruptions"] >= c  # every cluster pauses at the dear slots
    paid = replace(inst, switch_usd=np.full(c, 30.0))
    sol = eva.solve(paid, seed=0)
    ev = eva.evaluate(paid, sol.n)
    assert sol.violations == 0 and ev["interruptions"] == 0
    assert sol.info["interruptions"] == 0 and sol.info["switch_usd"] == 0.0
    # the exact reference of the penalised problem agrees (objective = cost + w × interruptions)
    ref = eva.reference(paid)
    ev_ref = eva.evaluate(paid, ref.n)
    assert ref.objective_usd == pytest.approx(ev_ref["cost_usd"] + ev_ref["switch_usd"], rel=1e-9)
    assert ev["cost_usd"] + ev["switch_usd"] <= ref.objective_usd * 1.01  # the annealer: within 1 % of it


def test_reference_trades_interruptions_against_cost() -> None:
    inst = _gappy_instance(4)
    c = inst.shape[0]
    counts, costs = [], []
    for w in (0.0, 0.5, 2.0, 50.0):
        ref = eva.reference(replace(inst, switch_usd=np.full(c, w)))
        ev = eva.evaluate(inst, ref.n)
        counts.append(ev["interruptions"])
        costs.append(ev["cost_usd"])
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] == 0
    assert costs == sorted(costs)


def test_on_share_counts_a_trickle_as_off() -> None:
    inst = _gappy_instance(4)
    n = np.zeros(inst.shape, np.int64)
    n[:, [0, 2, 4]] = 10
    n[:, [1, 3]] = 1  # a trickle of one level bridges the dear slots
    assert eva.evaluate(inst, n)["interruptions"] == 0
    assert eva.evaluate(replace(inst, on_share=0.2), n)["interruptions"] == 2 * inst.shape[0]


def _request() -> MarketRequest:
    return MarketRequest.from_sessions(
        dt_min=240,
        n_slots=6,
        base_load_kw=[2500, 2300, 3000, 3400, 3700, 3300],
        arrival_slot=[0, 0, 0, 0, 1, 0, 0, 0],
        departure_slot=[6, 6, 6, 6, 6, 5, 6, 6],
        e_need_kwh=[60, 80, 40, 70, 50, 30, 90, 65],
        p_max_kw=[7.2, 7.2, 11, 7.2, 7.2, 3.6, 11, 7.2],
        eta_ch=1.0,
        bus=[5, 5, 17, 17, 24, 24, 9, 9],
        price_usd_per_mwh=PRICES,
    )


def _clear(bits: int, **kw: object) -> MarketResult:
    return get("qubo-dlmp")(seed=11, bits=bits, grid="none", n_clusters=3, clustering="by-bus", **kw).clear(_request())


# p_kw (rounded to 1e-9 kW) hash, interruptions, EVA cost of `_clear(bits)`, taken before the switching term existed
STORED = {4: ("22842009380f94ec", 9, 14.177109), 8: ("08dbe86fa50a7577", 7, 13.467395)}


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_zero_is_todays_result_bit_for_bit(bits: int) -> None:
    for kw in ({}, {"contiguity_weight": 0.0, "allocation": "fewest", "min_on_share": 0.0}):
        r = _clear(bits, **kw)
        digest = hashlib.sha256(np.round(r.p_kw, 9).tobytes()).hexdigest()[:16]
        assert (digest, r.info["interruptions"], round(r.objective["eva_cost_usd"], 6)) == STORED[bits]
    # the EVA alone, on the drawn instance of the toolkit's tests (hash of its levels, before the term existed)
    sol = eva.solve(eva.paper_instance(bits=bits, seed=0, n_clusters=5, n_evs=200), seed=3, num_reads=4, num_sweeps=100)
    want = {4: "602b23a4e17dfc80", 8: "636634874de62659"}[bits]
    assert hashlib.sha256(sol.n.tobytes()).hexdigest()[:16] == want


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_on_gives_fewer_interruptions_than_weight_zero(bits: int) -> None:
    base = _clear(bits, allocation="contiguous")
    on = _clear(bits, allocation="contiguous", contiguity_weight=1.0)
    assert base.info["eva"]["cluster_interruptions"] > 0 and on.info["eva"]["cluster_interruptions"] == 0
    assert on.info["interruptions"] < base.info["interruptions"]
    assert on.info["interruptions"] <= 1
    req = _request()
    np.testing.assert_allclose(on.p_kw.sum(axis=1) * req.dt_h, req.evs.e_need_kwh, rtol=1e-6)


def test_contiguous_split_pauses_only_where_the_cluster_does() -> None:
    # three 1-MW EVs needing 1 MWh each, a cluster drawing 1.5 MW, pausing, 1.5 MW: one EV must take both sides
    cluster = np.array([[1.5, 0.0, 1.5]])
    al = allocation.allocate(cluster, np.zeros(3, int), np.ones((3, 3)), np.ones(3), 1.0, contiguous=True)
    assert al.interruptions == 1 and al.tracking_error_mwh < 1e-7 and al.shortfall_mwh < 1e-7
    # within one run (no pause of the cluster) nobody pauses, however little the cluster draws in a slot
    cluster = np.array([[4.0, 0.2, 4.0, 1.0]])
    need = np.array([2.4, 2.4, 2.2, 2.2])
    al = allocation.allocate(cluster, np.zeros(4, int), np.ones((4, 4)), need, 1.0, contiguous=True)
    assert al.lp_interruptions > 0 and al.interruptions == 0 and al.tracking_error_mwh < 1e-7
    np.testing.assert_allclose(al.p_mw.sum(axis=1), need, atol=1e-7)


@pytest.mark.parametrize(
    "kw, field, allowed",
    [
        ({"contiguity_weight": -1.0}, "contiguity_weight", "[0, 1000]"),
        ({"contiguity_weight": 5000}, "contiguity_weight", "[0, 1000]"),
        ({"contiguity_weight": float("nan")}, "contiguity_weight", "[0, 1000]"),
        ({"contiguity_weight": "high"}, "contiguity_weight", "[0, 1000]"),
        ({"allocation": "greedy"}, "allocation", "'contiguous'"),
        ({"min_on_share": 1.0}, "min_on_share", "[0, 1)"),
        ({"min_on_share": -0.1}, "min_on_share", "[0, 1)"),
    ],
)
def test_bad_contiguity_parameters_are_one_line_errors(kw: dict, field: str, allowed: str) -> None:
    with pytest.raises(MarketConfigError) as err:
        get("qubo-dlmp")(**kw)
    msg = str(err.value)
    assert msg.startswith(f"market.params.{field}: got {next(iter(kw.values()))!r}") and allowed in msg
    assert "\n" not in msg


def test_eva_instance_refuses_bad_switching_fields() -> None:
    inst = eva.paper_instance(bits=4, seed=0, n_clusters=3, n_evs=50)
    with pytest.raises(ValueError, match="switch_usd"):
        replace(inst, switch_usd=np.array([1.0, -1.0, 0.0]))
    with pytest.raises(ValueError, match="switch_usd"):
        replace(inst, switch_usd=np.ones(2))
    with pytest.raises(ValueError, match="on_share"):
        replace(inst, on_share=1.5)
