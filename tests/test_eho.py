"""Tests for `markets.eho`: EHO (Wang, Deb & Coelho 2015) and the equal-budget baselines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.eho import EHOResult, differential_evolution_budget, eho_minimize, random_search

D = 10
SHIFT = np.linspace(-2.5, 3.0, D)  # optimum of the shifted sphere, away from the origin
LO, HI = np.full(D, -5.0), np.full(D, 5.0)


def sphere_shifted(x: np.ndarray) -> float:
    return float(np.sum((x - SHIFT) ** 2))


def sphere_shifted_batch(X: np.ndarray) -> np.ndarray:
    return np.sum((X - SHIFT) ** 2, axis=1)


class Recorder:
    """Records every point the optimiser evaluates."""

    def __init__(self, f):
        self.f, self.points = f, []

    def __call__(self, x):
        self.points.append(np.array(x, copy=True))
        return self.f(x)


def _same(a: EHOResult, b: EHOResult) -> bool:
    return (
        np.array_equal(a.x, b.x)
        and a.fun == b.fun
        and np.array_equal(a.history, b.history)
        and a.n_evals == b.n_evals
        and np.array_equal(a.population, b.population)
        and np.array_equal(a.fitness, b.fitness)
    )


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_result_different_seed_different():
    kw = dict(n_elephants=20, n_clans=4, n_iter=15)
    a = eho_minimize(sphere_shifted, LO, HI, seed=7, **kw)
    b = eho_minimize(sphere_shifted, LO, HI, seed=7, **kw)
    c = eho_minimize(sphere_shifted, LO, HI, seed=8, **kw)
    assert _same(a, b)
    assert not np.array_equal(a.population, c.population)


def test_seed_kinds_are_equivalent_and_paths_agree():
    kw = dict(n_elephants=20, n_clans=4, n_iter=10)
    ref = eho_minimize(sphere_shifted, LO, HI, seed=3, **kw)
    assert _same(ref, eho_minimize(sphere_shifted, LO, HI, seed=np.random.SeedSequence(3), **kw))
    assert _same(ref, eho_minimize(sphere_shifted, LO, HI, seed=np.random.default_rng(3), **kw))
    # the vectorised path draws the same random numbers and evaluates the same points
    vec = eho_minimize(sphere_shifted_batch, LO, HI, seed=3, vectorized=True, **kw)
    np.testing.assert_allclose(vec.population, ref.population, rtol=0, atol=1e-12)
    np.testing.assert_allclose(vec.history, ref.history, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------- bounds


def test_bounds_respected_on_a_box_excluding_the_origin():
    # β·centre lies below the box [10, 20]; α = 3 overshoots past the matriarch: both must be clipped
    lo, hi = np.full(4, 10.0), np.array([20.0, 11.0, 30.0, 10.5])
    rec = Recorder(lambda x: float(np.sum((x - 15.0) ** 2)))
    res = eho_minimize(rec, lo, hi, n_elephants=12, n_clans=3, n_iter=20, alpha=3.0, beta=0.3, seed=1)
    pts = np.array(rec.points)
    assert pts.shape == (res.n_evals, 4)
    assert np.all(pts >= lo) and np.all(pts <= hi)
    assert np.all(res.population >= lo) and np.all(res.population <= hi)
    assert np.all(res.x >= lo) and np.all(res.x <= hi)


@settings(max_examples=25, deadline=None)
@given(
    lo=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=4),
    width=st.floats(1e-3, 1e3),
    alpha=st.floats(0.01, 3.0),
    beta=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_bounds_respected_property(lo, width, alpha, beta, seed):
    lo = np.array(lo)
    hi = lo + width
    rec = Recorder(lambda x: float(np.sum(np.sin(x))))
    res = eho_minimize(rec, lo, hi, n_elephants=10, n_clans=2, n_iter=5, alpha=alpha, beta=beta, seed=seed)
    pts = np.array(rec.points)
    assert len(pts) == res.n_evals == 60
    assert np.all(pts >= lo) and np.all(pts <= hi)


# -------------------------------------------------------------------------------------------------- quality


def test_shifted_sphere_10d_reaches_the_optimum():
    # α = 1.5 (steps may pass the matriarch), β = 1 (matriarch to the clan centre): with the paper-style
    # defaults α = 0.6, β = 0.3 EHO stagnates on a *shifted* sphere (see the module docstring, origin bias).
    res = eho_minimize(
        sphere_shifted_batch, LO, HI, n_elephants=50, n_iter=200, alpha=1.5, beta=1.0, seed=0, vectorized=True
    )
    assert res.fun < 1e-3
    assert np.linalg.norm(res.x - SHIFT) < 1e-3
    assert res.n_evals == 50 * 201
    assert res.history.shape == (201,)
    assert np.all(np.diff(res.history) <= 0)
    assert res.history[-1] == res.fun == sphere_shifted(res.x)


def test_defaults_converge_on_the_centred_sphere():
    # Measured on seeds 0–4 (3000 evaluations): EHO ≤ 8.6e-7; EHO with clan updating off (α → 0) 1.8e-4–2.8e-4;
    # random search at the same budget 13–20. The bound 1e-5 sits > 10× from both sides.
    funs = [
        eho_minimize(lambda X: np.sum(X**2, axis=1), LO, HI, n_iter=60, seed=s, vectorized=True).fun for s in range(5)
    ]
    assert max(funs) < 1e-5, funs


def test_clan_updating_is_what_converges():
    """The shifted sphere (α = 1.5, β = 1) is solved by EHO; with the clan-updating operator switched off
    (α → the smallest positive double: x + α·(x_best − x)·r == x) the same run stalls above 10 on every seed."""

    def run(seed: int, alpha: float) -> float:
        return eho_minimize(
            sphere_shifted_batch, LO, HI, n_elephants=50, n_iter=200, alpha=alpha, beta=1.0, seed=seed, vectorized=True
        ).fun

    for s in range(3):
        assert run(s, 1.5) < 1e-3
        assert run(s, 5e-324) > 1.0  # the ablation measurably loses (measured 10.7–13.1)


def test_beats_random_search_at_equal_evaluations():
    """At equal evaluations (50 × 41) EHO's *worst* seed beats random search's *best* seed by ≥ 100× on the
    10-d Rastrigin and sphere (measured: EHO ≤ 8.4e-4 and ≤ 1e-6; random search ≥ 77 and ≥ 13)."""

    def rastrigin(X):
        return 10.0 * X.shape[-1] + np.sum(X**2 - 10.0 * np.cos(2.0 * np.pi * X), axis=-1)

    lo, hi = np.full(D, -5.12), np.full(D, 5.12)
    for f in (rastrigin, lambda X: np.sum(X**2, axis=1)):
        ours = [eho_minimize(f, lo, hi, n_elephants=50, n_iter=40, seed=s, vectorized=True) for s in range(5)]
        rand = [random_search(f, lo, hi, n_evals=50 * 41, seed=s, vectorized=True) for s in range(5)]
        assert all(o.n_evals == r.n_evals == 50 * 41 for o, r in zip(ours, rand, strict=True))
        assert 100 * max(o.fun for o in ours) < min(r.fun for r in rand), ([o.fun for o in ours], [r.fun for r in rand])


def test_matriarch_goes_to_beta_times_centre():
    # β = 0: after one generation every clan's matriarch is exactly the origin (no elites to mask it)
    res = eho_minimize(
        lambda x: float(np.sum((x - 1.0) ** 2)),
        -np.ones(3),
        2 * np.ones(3),
        n_elephants=15,
        n_clans=3,
        n_iter=1,
        beta=0.0,
        n_elite=0,
        seed=5,
    )
    assert int(np.sum(np.all(res.population == 0.0, axis=1))) == 3


def test_variant_matriarch_steps_from_the_best_away_from_the_clan_centre():
    # matriarch="best": after one generation (no elites) each clan's matriarch is x_best + β·(x_best − x_center) of
    # the initial clan (clipped to the box); the initial population is the same draw as with n_iter = 0
    f = lambda x: float(np.sum((x - 1.0) ** 2))  # noqa: E731
    lo, hi, kw = -np.ones(3), 2 * np.ones(3), dict(n_elephants=15, n_clans=3, n_elite=0, seed=5, matriarch="best")
    pop0 = eho_minimize(f, lo, hi, n_iter=0, **kw).population  # sorted best-first: rank k is in clan k mod 3
    res = eho_minimize(f, lo, hi, n_iter=1, beta=0.7, **kw)
    for c in range(3):
        best, centre = pop0[c], pop0[c::3].mean(axis=0)
        expected = np.clip(best + 0.7 * (best - centre), lo, hi)
        assert np.any(np.all(np.abs(res.population - expected) < 1e-12, axis=1)), c


def test_variant_is_translation_equivariant_and_the_paper_is_not():
    # shift the objective and the box by o: the variant's run shifts by o (draw for draw); eq. 22's does not
    o = np.linspace(-3.0, 7.0, D)
    kw = dict(n_iter=50, seed=3, vectorized=True)
    for rule, beta in (("best", 1.0), ("origin", 0.3)):
        a = eho_minimize(lambda X: np.sum(X**2, axis=1), LO, HI, matriarch=rule, beta=beta, **kw)
        b = eho_minimize(lambda X: np.sum((X - o) ** 2, axis=1), LO + o, HI + o, matriarch=rule, beta=beta, **kw)
        if rule == "best":
            np.testing.assert_allclose(b.x, a.x + o, atol=1e-9)
            assert b.fun == pytest.approx(a.fun, rel=1e-6)
        else:  # measured: 1.3e-6 at 0, 0.017 shifted
            assert b.fun > 1000 * a.fun


def test_variant_beats_the_paper_update_on_a_shifted_sphere():
    """10-D shifted sphere, 2 550 evaluations, α 0.6: the paper's β·x_center update stalls (measured 4.0–9.3 on
    seeds 0–5), the variant (matriarch="best", β 1) gets ≥ 100× closer (0.011–0.027); puts the origin pull back
    and this fails."""
    for s in range(3):
        kw = dict(n_elephants=50, n_iter=50, seed=s, vectorized=True)
        paper = eho_minimize(sphere_shifted_batch, LO, HI, **kw).fun
        variant = eho_minimize(sphere_shifted_batch, LO, HI, matriarch="best", beta=1.0, **kw).fun
        assert paper > 1.0 and variant < 0.05 and 100 * variant < paper, (s, paper, variant)


def test_default_is_the_paper_update():
    kw = dict(n_elephants=20, n_clans=4, n_iter=10, seed=4)
    assert _same(
        eho_minimize(sphere_shifted, LO, HI, **kw), eho_minimize(sphere_shifted, LO, HI, matriarch="origin", **kw)
    )


def test_elitism_keeps_the_best_in_the_population():
    res = eho_minimize(sphere_shifted, LO, HI, n_elephants=20, n_clans=4, n_iter=30, n_elite=2, seed=2)
    assert res.fitness[0] == res.fun
    assert np.array_equal(res.population[0], res.x)
    assert np.all(np.diff(res.fitness) >= 0)


def test_uneven_clans_and_no_elites():
    res = eho_minimize(sphere_shifted, LO, HI, n_elephants=23, n_clans=5, n_iter=10, n_elite=0, seed=4)
    assert res.population.shape == (23, D) and res.fitness.shape == (23,)
    assert res.n_evals == 23 * 11
    assert np.all(np.diff(res.history) <= 0)  # best-so-far, even without elitism
    assert res.fun == min(res.history)


# ------------------------------------------------------------------------------------------ non-finite values


def test_non_finite_values_are_treated_as_worst():
    def f(x):
        if x[0] > 0:
            return float("nan")
        if x[1] > 0:
            return -float("inf")  # a numerical failure, not a great point
        return float(np.sum(x**2))

    res = eho_minimize(f, -np.ones(3), np.ones(3), n_elephants=20, n_clans=4, n_iter=20, seed=0)
    assert np.isfinite(res.fun) and res.x[0] <= 0 and res.x[1] <= 0
    assert not np.any(np.isnan(res.fitness))
    assert np.all(res.fitness[np.isfinite(res.fitness)] >= 0)
    assert np.all(np.isfinite(res.history))


def test_all_non_finite():
    res = eho_minimize(lambda x: float("nan"), [0.0, 0.0], [1.0, 1.0], n_elephants=10, n_clans=2, n_iter=3, seed=0)
    assert res.fun == np.inf and np.all(res.fitness == np.inf) and res.x.shape == (2,)


# ------------------------------------------------------------------------------------------------ budget/API


def test_max_evals_runs_whole_generations_and_counts_exactly():
    calls = []
    res = eho_minimize(
        lambda x: calls.append(1) or float(np.sum(x**2)), LO, HI, n_elephants=50, n_iter=100, max_evals=275, seed=0
    )
    assert res.n_evals == len(calls) == 250
    assert res.history.shape == (5,)


def test_callback_sees_progress_and_can_stop():
    seen = []

    def cb(state: EHOResult) -> bool:
        seen.append(state.n_evals)
        return len(seen) == 3

    res = eho_minimize(sphere_shifted, LO, HI, n_elephants=10, n_clans=2, n_iter=50, seed=0, callback=cb)
    assert seen == [20, 30, 40] and res.n_evals == 40 and res.history.shape == (4,)


def test_vectorized_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match="vectorized"):
        eho_minimize(lambda X: np.zeros(3), LO, HI, n_iter=1, vectorized=True)


def test_scalar_bound_broadcasts():
    res = eho_minimize(sphere_shifted, -5.0, HI, n_elephants=10, n_clans=2, n_iter=2, seed=0)
    assert res.x.shape == (D,)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lower=[0.0, 1.0], upper=[1.0, 1.0]), "lower must be < upper"),
        (dict(lower=[0.0, 0.0], upper=[1.0, 1.0, 1.0]), "same shape"),
        (dict(lower=0.0, upper=1.0), "lower and upper"),
        (dict(lower=[[0.0]], upper=[[1.0]]), "1-D"),
        (dict(lower=[0.0, -np.inf], upper=[1.0, 1.0]), "finite"),
        (dict(n_elephants=9, n_clans=5), "n_elephants"),
        (dict(n_clans=0), "n_clans"),
        (dict(n_elephants=2.5), "n_elephants"),
        (dict(n_iter=-1), "n_iter"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=np.nan), "alpha"),
        (dict(beta=1.5), "beta"),
        (dict(beta=-0.1), "beta"),
        (dict(n_elite=50), "n_elite"),
        (dict(n_elite=-1), "n_elite"),
        (dict(max_evals=49), "max_evals"),
        (dict(callback=3), "callback"),
        (dict(matriarch="centre"), "matriarch must be one of 'origin', 'best'; got 'centre'"),
        (dict(matriarch=None), "matriarch"),
    ],
)
def test_validation_names_the_argument(kwargs, name):
    args = dict(lower=[0.0, 0.0], upper=[1.0, 1.0])
    args.update(kwargs)
    lower, upper = args.pop("lower"), args.pop("upper")
    with pytest.raises(ValueError, match=name):
        eho_minimize(lambda x: 0.0, lower, upper, **args)


# ------------------------------------------------------------------------------------------------- baselines


def test_random_search_budget_history_and_seed():
    a = random_search(sphere_shifted_batch, LO, HI, n_evals=120, seed=1, vectorized=True)
    b = random_search(sphere_shifted, LO, HI, n_evals=120, seed=1)
    assert a.n_evals == 120 and a.history.shape == (3,)  # batches of 50, 50, 20
    np.testing.assert_allclose(a.history, b.history, rtol=1e-12)
    assert a.population.shape == (50, D) and a.fun == a.fitness[0] == a.history[-1]
    assert np.all(a.population >= LO) and np.all(a.population <= HI)


def test_de_budget_is_respected_and_counted():
    calls = []
    res = differential_evolution_budget(lambda x: calls.append(1) or sphere_shifted(x), LO, HI, n_evals=1000, seed=0)
    assert res.n_evals == len(calls) <= 1000
    assert res.history.shape[0] >= 2 and np.all(np.diff(res.history) <= 0)
    assert res.fun == sphere_shifted(res.x) == res.history[-1]
    again = differential_evolution_budget(sphere_shifted, LO, HI, n_evals=1000, seed=0)
    assert again.fun == res.fun
    with pytest.raises(ValueError, match="n_evals"):
        differential_evolution_budget(sphere_shifted, LO, HI, n_evals=4)


# --------------------------------------------------------------------------------- independent cross-check


def test_not_worse_than_mealpy_at_equal_evaluations():
    import mealpy  # a pinned test dependency: the independent implementation we are checked against
    from mealpy import EHO, FloatVar

    def rastrigin(X):
        return 10.0 * X.shape[-1] + np.sum(X**2 - 10.0 * np.cos(2.0 * np.pi * X), axis=-1)

    lo, hi = np.full(D, -5.12), np.full(D, 5.12)
    ours, theirs = [], []
    for s in range(3):
        ours.append(eho_minimize(rastrigin, lo, hi, n_elephants=50, n_iter=40, seed=s, vectorized=True).fun)
        # mealpy: 50 initial + 55 per epoch (its separated elephants are re-evaluated) → 36 epochs ≤ 2050 evals
        model = EHO.OriginalEHO(epoch=36, pop_size=50, alpha=0.6, beta=0.3, n_clans=5)
        problem = {
            "obj_func": lambda x: float(rastrigin(np.asarray(x))),
            "log_to": None,
            "minmax": "min",
            "bounds": FloatVar(lb=lo.tolist(), ub=hi.tolist()),
        }
        theirs.append(float(model.solve(problem, seed=s).target.fitness))
    assert mealpy.__version__
    assert np.median(ours) <= np.median(theirs)
    # and not merely "no worse": measured ours ≤ 8.4e-4 on every seed, mealpy 5.6–6.4, ours without clan
    # updating 0.11–0.24, random search ≥ 77 — the bound 0.01 separates EHO from both broken variants
    assert max(ours) < 0.01, ours
