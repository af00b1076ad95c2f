"""The QUBO toolkit (markets/qubo): encodings, penalties, BQM construction, samplers, composites, EVA level."""

from __future__ import annotations

import itertools

import dimod
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.qubo import composites, encoding, eva, samplers
from markets.qubo.model import QuboModel

KINDS = ("binary", "bounded", "unary")


# ---------------------------------------------------------------------------------------------------- encodings
@given(kind=st.sampled_from(KINDS), upper=st.integers(1, 300), data=st.data())
def test_encode_decode_round_trip(kind: str, upper: int, data: st.DataObject) -> None:
    e = encoding.make(kind, upper, step=0.25, offset=-1.0, mu=4 if kind == "bounded" else None)
    assert e.upper == upper
    lv = np.asarray(data.draw(st.lists(st.integers(0, upper), min_size=1, max_size=20)))
    bits = e.encode(lv)
    assert set(np.unique(bits)) <= {0, 1}
    np.testing.assert_array_equal(e.level(bits), lv)
    np.testing.assert_allclose(e.value(bits), -1.0 + 0.25 * lv)
    np.testing.assert_array_equal(e.nearest_level(e.value(bits)), lv)


@pytest.mark.parametrize("kind", KINDS)
def test_every_pattern_decodes_inside_the_range(kind: str) -> None:
    e = encoding.make(kind, 11, mu=3 if kind == "bounded" else None)
    pats = np.array(list(itertools.product((0, 1), repeat=e.n_bits)))
    lv = e.level(pats)
    assert lv.min() == 0 and lv.max() == 11
    assert set(lv.tolist()) == set(range(12))  # complete: every level reachable


def test_bad_encodings_are_errors() -> None:
    with pytest.raises(ValueError, match="upper"):
        encoding.binary(0)
    with pytest.raises(ValueError, match="level"):
        encoding.binary(5).encode(6)


# ---------------------------------------------------------------------------------------------------- penalties
@st.composite
def small_constraint(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    k, n, upper = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    a = np.array(draw(st.lists(st.lists(st.integers(-2, 3), min_size=n, max_size=n), min_size=k, max_size=k)))
    amin = np.minimum(a, 0).sum(axis=1) * upper
    amax = np.maximum(a, 0).sum(axis=1) * upper
    lo = np.array([draw(st.integers(int(x), int(y))) for x, y in zip(amin, amax)])
    hi = np.array([draw(st.integers(int(x), int(y))) for x, y in zip(lo, amax)])
    return a, lo, hi, upper


@settings(max_examples=60, deadline=None)
@given(case=small_constraint(), kind=st.sampled_from(("binary", "unary")))
def test_penalty_is_zero_exactly_on_feasible_assignments(case, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Every feasible assignment has a slack pattern of zero penalty; every infeasible one, positive for all."""
    a, lo, hi, upper = case
    n = a.shape[1]
    m = QuboModel()
    v = m.integer("v", (n,), encoding.binary(upper))
    con = m.add_constraint("c", m.rows(v, a), lo, hi, weight=1.0, slack=kind)
    bqm = m.to_bqm()
    slack_idx = np.setdiff1d(np.arange(m.n_vars), v.index.reshape(-1))
    slack_pats = np.array(list(itertools.product((0, 1), repeat=slack_idx.size)), dtype=np.int8)
    for levels in itertools.product(range(upper + 1), repeat=n):
        x = np.repeat(m.encode({"v": np.array(levels)}, fill_slack=False)[None], len(slack_pats), axis=0)
        x[:, slack_idx] = slack_pats
        pens = m.energy(x) - m.objective(x)
        np.testing.assert_allclose(bqm.energies((x, list(range(m.n_vars)))), m.energy(x), atol=1e-9)
        feasible = bool(np.all((a @ np.array(levels) >= lo) & (a @ np.array(levels) <= hi)))
        assert (pens.min() == pytest.approx(0.0, abs=1e-9)) if feasible else (pens.min() > 0.5)
        assert bool(m.is_feasible(m.encode({"v": np.array(levels)}))) == feasible
        assert bool(np.all(con.violation(x).sum(axis=1) > 0)) != feasible


def test_objective_table_fit_is_exact_for_quadratics() -> None:
    m = QuboModel()
    v = m.integer("v", (3,), encoding.binary(7))
    k = np.arange(8)
    table = np.stack([2.0 * k - 0.5 * k**2, 3.0 + 0 * k, k**2])
    err = m.add_objective_table(v, table)
    assert err.max() < 1e-9
    for lv in itertools.product(range(8), repeat=3):
        x = m.encode({"v": np.array(lv)})
        assert m.objective(x) == pytest.approx(table[np.arange(3), lv].sum())


# ---------------------------------------------------------------------------------------------------- samplers
def test_sampler_names_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"sa", "tabu", "steepest-descent", "exact", "dwave", "dwave-hybrid"} <= set(samplers.names())
    with pytest.raises(samplers.SamplerConfigError, match="sampler: must be one of"):
        samplers.get("quantum-magic")
    monkeypatch.delenv("DWAVE_API_TOKEN", raising=False)
    monkeypatch.setattr(samplers, "_leap_token", lambda: None)
    for name in ("dwave", "dwave-hybrid"):
        with pytest.raises(samplers.SamplerConfigError, match="no D-Wave Leap API token"):
            samplers.get(name)


def test_exact_sampler_refuses_large_problems() -> None:
    bqm = dimod.BinaryQuadraticModel({i: 1.0 for i in range(40)}, {}, 0.0, dimod.BINARY)
    with pytest.raises(ValueError):
        samplers.get("exact").sample(bqm)


def _two_blocks() -> tuple[dimod.BinaryQuadraticModel, list[np.ndarray]]:
    rng = np.random.default_rng(5)
    lin = rng.normal(size=8)
    rows, cols = np.triu_indices(4, 1)
    q = rng.normal(size=rows.size * 2)
    r = np.concatenate([rows, rows + 4])
    c = np.concatenate([cols, cols + 4])
    return (
        dimod.BinaryQuadraticModel.from_numpy_vectors(lin, (r, c, q), 0.0, dimod.BINARY),
        [np.arange(4), np.arange(4, 8)],
    )


def _sub(bqm: dimod.BinaryQuadraticModel, idx: np.ndarray) -> dimod.BinaryQuadraticModel:
    keep = set(int(i) for i in idx)
    return dimod.BinaryQuadraticModel(
        {v: bqm.get_linear(v) for v in keep},
        {(u, v): b for (u, v), b in bqm.quadratic.items() if u in keep and v in keep},
        0.0,
        dimod.BINARY,
    )


def test_decomposed_sampler_matches_exact_and_connected_components() -> None:
    bqm, comps = _two_blocks()
    ground = dimod.ExactSolver().sample(bqm).first.energy
    ss = composites.DecomposedSampler(samplers.get("sa")).sample(bqm, components=comps, num_reads=8, seed=1)
    assert ss.first.energy == pytest.approx(ground)
    per_block = sum(dimod.ExactSolver().sample(_sub(bqm, idx)).first.energy for idx in comps)
    assert per_block == pytest.approx(ground)
    auto = composites.DecomposedSampler(dimod.ExactSolver()).sample(bqm)  # components found from the graph
    assert auto.first.energy == pytest.approx(ground)
    with pytest.raises(ValueError, match="cross components"):
        composites.DecomposedSampler(dimod.ExactSolver()).sample(bqm, components=[np.arange(3), np.arange(3, 8)])


def test_postprocess_never_worsens_and_repair_reaches_feasibility() -> None:
    m = QuboModel()
    v = m.integer("v", (4,), encoding.binary(3))
    m.add_objective_levels(v, np.array([1.0, -2.0, 0.5, 3.0]))
    m.add_constraint("sum", m.rows(v, np.ones((1, 4))), 5, 7, weight=0.01)  # weak: samples may violate
    bqm = m.to_bqm()
    raw = samplers.get("random").sample(bqm, num_reads=20, seed=3)
    post = composites.PostprocessComposite(samplers.get("random")).sample(bqm, num_reads=20, seed=3)
    assert post.first.energy <= raw.first.energy + 1e-12
    x = m.encode({"v": np.zeros(4, int)}, fill_slack=False)
    assert not m.is_feasible(x)
    assert m.is_feasible(composites.greedy_repair(m, x))


# ---------------------------------------------------------------------------------------------------- EVA level
def _tiny(bits: int, reactive: bool = True) -> eva.EVAInstance:
    return eva.paper_instance(bits, seed=3, n_clusters=2, n_evs=60, reactive=reactive)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_domain_wall_energy_is_the_true_cost(seed: int) -> None:
    inst = _tiny(4)
    rng = np.random.default_rng(seed)
    n = rng.integers(0, inst.levels + 1, size=inst.shape)
    model, y = eva.build_window_qubo(inst, np.zeros(inst.shape, np.int64), 1, inst.levels, None)
    x = model.encode({"y": n})
    assert model.objective(x) == pytest.approx(eva.evaluate(inst, n)["cost_usd"], rel=1e-9, abs=1e-9)
    feasible = eva.evaluate(inst, n)["energy_violations"] == 0
    assert bool(model.is_feasible(x)) == feasible


@pytest.mark.parametrize("reactive", [False, True])
def test_exact_solver_agrees_with_the_reference_on_a_tiny_instance(reactive: bool) -> None:
    # one cluster, 3 slots of 4 h, P̄ = 0.3 MW on 2 bits (0.1 MW steps): energy units of 0.4 MWh, window [2, 5]
    inst = eva.EVAInstance(
        np.array([[40.0, 100.0, 60.0]]),
        np.array([[4.0, 10.0, 7.0]]),
        np.array([0.3]),
        np.array([0.36]),
        np.array([0.36]),
        np.array([0.8]),
        np.array([2.0]),
        4.0,
        bits=2,
        reactive=reactive,
    )
    ref = eva.reference(inst)
    sol = eva.solve(inst, sampler="exact", ref=ref)
    assert sol.n_vars <= 24
    assert sol.violations == 0
    assert sol.cost_usd == pytest.approx(ref.objective_usd, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [4, 8])
def test_eva_annealing_is_near_optimal_and_feasible(bits: int) -> None:
    inst = eva.paper_instance(bits, seed=11, n_clusters=4, n_evs=200)
    ref = eva.reference(inst)
    sol = eva.solve(inst, seed=2, ref=ref)
    assert sol.violations == 0
    assert (sol.cost_usd - ref.objective_usd) <= 0.01 * abs(ref.objective_usd)
    assert sol.cost_usd >= ref.objective_usd - 1e-6  # the MILP is the optimum of the same problem


def test_eva_is_seed_deterministic() -> None:
    inst = eva.paper_instance(8, seed=4, n_clusters=3, n_evs=120)
    a, b = eva.solve(inst, seed=9), eva.solve(inst, seed=9)
    np.testing.assert_array_equal(a.n, b.n)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_repair_lands_in_the_energy_window(seed: int) -> None:
    inst = _tiny(4)
    n = np.random.default_rng(seed).integers(0, inst.levels + 1, size=inst.shape)
    ev = eva.evaluate(inst, eva.repair(inst, n))
    assert ev["violations"] == 0


def test_eva_instance_validation_names_the_field() -> None:
    inst = _tiny(4)
    with pytest.raises(ValueError, match="bits"):
        inst.with_bits(13)
    with pytest.raises(ValueError, match="p_max_mw"):
        eva.EVAInstance(
            inst.lam_p_usd_per_mwh,
            inst.lam_q_usd_per_mvarh,
            -inst.p_max_mw,
            inst.s_max_mva,
            inst.q_max_mvar,
            inst.e_min_mwh,
            inst.e_max_mwh,
            inst.dt_h,
        )


def test_rows_build_the_expected_sparse_matrix() -> None:
    m = QuboModel()
    v = m.integer("v", (2,), encoding.binary(3))
    r = m.rows(v, sp.csr_matrix(np.array([[1.0, 2.0]])))
    np.testing.assert_array_equal(r.toarray(), [[1, 2, 2, 4]])


def test_eva_instance_rejects_nan_prices_and_zero_slots() -> None:
    inst = _tiny(4)
    lam = inst.lam_p_usd_per_mwh.copy()
    lam[0, 0] = np.nan
    with pytest.raises(ValueError, match="lam_p_usd_per_mwh: must be finite"):
        eva.EVAInstance(
            lam,
            inst.lam_q_usd_per_mvarh,
            inst.p_max_mw,
            inst.s_max_mva,
            inst.q_max_mvar,
            inst.e_min_mwh,
            inst.e_max_mwh,
            inst.dt_h,
        )
    with pytest.raises(ValueError, match="dt_h"):
        eva.EVAInstance(
            inst.lam_p_usd_per_mwh,
            inst.lam_q_usd_per_mvarh,
            inst.p_max_mw,
            inst.s_max_mva,
            inst.q_max_mvar,
            inst.e_min_mwh,
            inst.e_max_mwh,
            0.0,
        )
