"""`eho`: Elephant Herding Optimisation (Wang, Deb & Coelho 2015) as a reusable box-bounded minimiser (issue 6).

A population-vectorised numpy implementation of EHO for any objective over a box, plus two baselines with the
same result type for comparisons at equal numbers of objective evaluations:

* :func:`eho_minimize` — EHO: clans with matriarchs, clan-updating operator, matriarch update, separating
  operator, elitism, box clipping, seeded, convergence history;
* :func:`random_search` — uniform sampling of the box (the floor any optimiser must beat);
* :func:`differential_evolution_budget` — `scipy.optimize.differential_evolution` sized to a fixed budget.

All three return an :class:`EHOResult` and *minimise*.

>>> import numpy as np
>>> sphere = lambda x: float(np.sum((x - 1.0) ** 2))  # optimum at (1, 1, 1), f* = 0
>>> res = eho_minimize(sphere, -5.0 * np.ones(3), 5.0 * np.ones(3), n_iter=30, alpha=1.5, beta=1.0, seed=0)
>>> res.n_evals, res.history.shape, bool(res.fun < 1e-9)
(1550, (31,), True)

With the defaults (α = 0.6, β = 0.3) the same run stalls near, not at, the shifted optimum (origin bias, below):

>>> bool(eho_minimize(sphere, -5.0 * np.ones(3), 5.0 * np.ones(3), n_iter=30, seed=0).fun > 1e-3)
True

The algorithm (one generation; ``n`` elephants, ``C`` clans, box ``[lower, upper]``)::

    sort the population best-first; keep copies of its n_elite best (elitism)
    deal the sorted elephants round-robin into clans: rank k goes to clan k mod C
        → clan c holds ranks c, c+C, c+2C, …; its first member (rank c) is its matriarch, its last its worst
    clan updating  (eq. 21):  x_new = x + α·(x_best,clan − x) ∘ r,   r ~ U[0, 1)^d   (every non-matriarch)
    matriarch      (eq. 22):  x_new = β·x_center,clan,  x_center,clan = mean of the clan's d-vectors (eq. 23)
                   (matriarch="best", not the paper's:  x_new = x_best,clan + β·(x_best,clan − x_center,clan))
    separating:              each clan's worst (its last member) is replaced by a uniform point of the box
    clip every new point to the box; evaluate all n new points (n evaluations)
    elitism: sort the new points, replace the n_elite worst by the kept elites, sort again

Reading choices, recorded here (the paper's text and eq. 21–23 leave them open; where the authors' reference
MATLAB code, "EHO by Gai-Ge Wang", settles a point we follow it):

* **Clans.** The sorted population is dealt round-robin into clans (rank ``k`` → clan ``k mod n_clans``), as in
  the reference code, so every clan gets a mix of good and bad elephants and clan 0's matriarch is the global
  best. Clans are re-formed every generation. When ``n_elephants`` is not a multiple of ``n_clans`` the first
  ``n_elephants mod n_clans`` clans get one elephant more (sizes differ by at most one). Every clan must have at
  least 2 elephants (a matriarch and a distinct worst): ``n_elephants ≥ 2·n_clans``.
* **Random factor.** ``r`` is drawn independently per elephant *and per coordinate* (``rand(1, dim)`` in the
  reference code), uniform on [0, 1).
* **Synchronous update.** All new positions are computed from the generation's old positions: the clan best in
  eq. 21 and the centre in eq. 23 are those of the old clan (the centre includes the matriarch itself).
* **Matriarch update** is eq. 22 taken literally, ``β·x_center`` in absolute coordinates (the standard reading,
  as in the reference code and in mealpy). It scales towards the *origin*, not towards the clan centre: the
  well-known origin bias of EHO — test functions with their optimum at 0 flatter it, and on a box that excludes
  the origin the matriarch lands on (is clipped to) the lower faces. β = 1 moves the matriarch to the clan centre.
  The matriarch's good point is not lost: it survives through elitism.
* **Matriarch variant** ``matriarch="best"`` (ours, not the paper's; the default ``"origin"`` is eq. 22 as above,
  bit-identical to before the option existed): ``x_new = x_best,clan + β·(x_best,clan − x_center,clan)`` — the
  matriarch steps from its own position *away from* its clan's centre, along the line centre → best, by β times
  their distance (β = 1 reflects the centre through the matriarch, as Nelder–Mead reflects a simplex's centroid).
  Why it removes the origin bias: eq. 22 is a contraction ``0 + β·(x_center − 0)`` about the coordinate origin, a
  point that carries no information about the objective; the variant's only reference points are the clan's own
  best and centre, so the update is *translation-equivariant* (shift the objective and the box by ``o`` and every
  run shifts by ``o``, draw for draw, clipping aside) and never favours 0. Why a step away from the centre and not
  towards it: the clan updating (eq. 21) already contracts every other elephant towards the matriarch, and elitism
  keeps the best point, so a contraction (``x_best + β·(x_center − x_best)``, tried) only resamples inside the
  clan's hull and stalls like eq. 22 on shifted problems; the direction centre → best is the clan's estimate of
  where the objective falls, and stepping along it keeps the search moving when the optimum lies outside the
  hull. β keeps its range [0, 1]; β = 0 leaves the matriarch in place. On shifted 10-D test functions any β in
  0.5–1 does about equally well and β = 0.3 (the paper's) steps too short; see docs/eho.md.
* **Separating operator.** The clan's worst (by the fitness known at the start of the generation, i.e. its last
  member) has its updated position overwritten by ``lower + (upper − lower)·U[0, 1)^d``. The reference code's
  ``(upper − lower + 1)`` — a leftover from integer problems that can sample outside the box — is not copied.
* **No greedy selection.** The new population replaces the old wholesale, except for elitism (as in the paper and
  the reference code; mealpy instead keeps the better of old and new per elephant and re-evaluates the separated
  elephants, which costs ``n_clans`` extra evaluations per generation).
* **Elitism.** The ``n_elite`` best of the previous generation replace the ``n_elite`` worst new elephants
  (``Keep = 2`` in the reference code). They are not re-evaluated. With ``n_elite ≥ 1`` the population's best is
  non-increasing; the returned best and the history are best-so-far over *all* evaluations in any case.
* **Box.** Points are clipped to ``[lower, upper]`` after each update (the reference code's ``FeasibleFunction``);
  the initial population is uniform on the box.
* **Non-finite objective values** (NaN, ±inf) are treated as ``+inf`` (worst possible). ``-inf`` is treated as
  ``+inf`` too: it almost always signals a numerical failure, not an infinitely good point. If every value is
  non-finite, ``fun`` is ``inf`` and ``x`` is the first point evaluated.
* **Not copied** from the reference code: ``ClearDups`` (random mutation of duplicate individuals, without
  re-evaluation) and the evaluation budget in place of a generation count (use ``max_evals``).
* **Budget.** Each generation costs exactly ``n_elephants`` evaluations, the initial population too, so
  ``n_evals = n_elephants·(1 + generations run)``. ``max_evals`` runs only *whole* generations that fit:
  ``n_evals ≤ max_evals`` (it must be ≥ ``n_elephants``).
* **Randomness.** Every random number comes from one ``np.random.default_rng(seed)``, drawn in a fixed order, so
  a given seed, objective and settings give bit-identical results. A `numpy.random.Generator` passed as ``seed``
  is used (advanced) in place, not copied.

Reference: G.-G. Wang, S. Deb, L. dos S. Coelho, "Elephant Herding Optimization", 3rd Int. Symp. on Computational
and Business Intelligence (ISCBI), 2015, pp. 1–5, doi:10.1109/ISCBI.2015.8.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MATRIARCH_RULES", "EHOResult", "eho_minimize", "random_search", "differential_evolution_budget"]

SeedLike = int | np.random.Generator | np.random.SeedSequence | None

MATRIARCH_RULES = ("origin", "best")  # eq. 22 as printed; the translation-equivariant variant (module docstring)

_RS_BATCH = 50  # random search: evaluations per history entry (the default n_elephants)


@dataclass(frozen=True)
class EHOResult:
    """The outcome of a minimisation (EHO, random search or budgeted DE).

    Attributes:
        x: Best point found, shape (d,), in the objective's units.
        fun: Its objective value (minimisation; ``inf`` if no finite value was ever seen).
        history: Best-so-far objective after each generation, shape (n_generations + 1,); index 0 is the initial
            population (first batch). For EHO ``history[i]`` is the best after ``n_elephants·(i + 1)``
            evaluations; it has ``n_iter + 1`` entries unless stopped early (``max_evals``, callback).
        n_evals: Objective evaluations used (points evaluated), exact.
        population: Final population, shape (n_elephants, d), sorted best-first.
        fitness: Its objective values, shape (n_elephants,), ascending (non-finite values stored as ``inf``).
    """

    x: np.ndarray
    fun: float
    history: np.ndarray
    n_evals: int
    population: np.ndarray
    fitness: np.ndarray


def _box(lower: Any, upper: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate the box and return ``(lower, upper)`` as float arrays of shape (d,)."""
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    if lo.ndim == 0 and hi.ndim == 0:
        raise ValueError("lower and upper: at least one must be an array of shape (d,) (the dimension is its length)")
    if lo.ndim > 1 or hi.ndim > 1:
        raise ValueError(f"lower and upper must be 1-D (shape (d,)); got shapes {lo.shape} and {hi.shape}")
    if lo.ndim == 1 and hi.ndim == 1 and lo.shape != hi.shape:
        raise ValueError(f"lower and upper must have the same shape; got {lo.shape} and {hi.shape}")
    lo, hi = np.broadcast_arrays(lo, hi)
    if lo.size == 0:
        raise ValueError("lower and upper must not be empty (d ≥ 1)")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("lower and upper must be finite")
    if not np.all(lo < hi):
        bad = np.flatnonzero(~(lo < hi))
        raise ValueError(f"lower must be < upper in every coordinate; violated at indices {bad.tolist()}")
    return lo.astype(float, copy=True), hi.astype(float, copy=True)


def _int_arg(name: str, value: Any, minimum: int) -> int:
    """An integer argument ≥ ``minimum`` (bools rejected), or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}; got {value}")
    return int(value)


class _Evaluator:
    """Evaluates batches of points, counts evaluations and maps non-finite values to ``+inf``."""

    def __init__(self, fun: Callable[..., Any], vectorized: bool) -> None:
        if not callable(fun):
            raise ValueError("fun must be callable")
        self.fun = fun
        self.vectorized = bool(vectorized)
        self.n_evals = 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        if self.vectorized:
            vals = np.asarray(self.fun(X.copy()), dtype=float)
            if vals.shape != (n,):
                vals = vals.reshape(-1) if vals.size == n else vals
                if vals.shape != (n,):
                    raise ValueError(
                        f"fun (vectorized=True) must return shape ({n},) for X of shape {X.shape}; got {np.shape(vals)}"
                    )
        else:
            vals = np.empty(n, dtype=float)
            for i in range(n):
                vals[i] = float(self.fun(X[i].copy()))
        self.n_evals += n
        return np.where(np.isfinite(vals), vals, np.inf)


def eho_minimize(
    fun: Callable[[np.ndarray], float] | Callable[[np.ndarray], np.ndarray],
    lower: np.ndarray | list[float] | float,
    upper: np.ndarray | list[float] | float,
    *,
    n_elephants: int = 50,
    n_clans: int = 5,
    n_iter: int = 50,
    alpha: float = 0.6,
    beta: float = 0.3,
    n_elite: int = 2,
    seed: SeedLike = None,
    vectorized: bool = False,
    max_evals: int | None = None,
    callback: Callable[[EHOResult], bool | None] | None = None,
    matriarch: str = "origin",
) -> EHOResult:
    """Minimise ``fun`` over the box ``[lower, upper]`` with Elephant Herding Optimisation.

    See the module docstring for the algorithm and every reading choice.

    Args:
        fun: Objective. ``fun(x) -> float`` for ``x`` of shape (d,); with ``vectorized=True``,
            ``fun(X) -> array (n,)`` for ``X`` of shape (n, d). Receives copies. Non-finite values count as ``+inf``.
        lower: Lower bounds, shape (d,) (a scalar is broadcast to ``upper``'s shape), in the variables' units.
        upper: Upper bounds, shape (d,), ``upper > lower`` in every coordinate.
        n_elephants: Population size (evaluations per generation), ≥ 2·n_clans.
        n_clans: Number of clans, ≥ 1.
        n_iter: Number of generations after the initial population, ≥ 0.
        alpha: Clan-updating scale factor α > 0 (eq. 21); α ≤ 1 keeps a step between the elephant and its
            matriarch.
        beta: Matriarch scale factor, 0 ≤ β ≤ 1 (eq. 22).
        n_elite: Elites carried from one generation to the next, 0 ≤ n_elite < n_elephants.
        seed: Seed for ``np.random.default_rng`` (int, Generator, SeedSequence or None for fresh entropy).
        vectorized: Whether ``fun`` evaluates a whole (n, d) batch at once.
        max_evals: Evaluation budget, ≥ n_elephants; only whole generations that fit are run. None: no limit.
        callback: Called after each generation with the current state as an `EHOResult`; return True to stop.
        matriarch: Matriarch update: ``"origin"`` (the paper's eq. 22, ``β·x_center``; pulls towards the origin) or
            ``"best"`` (``x_best + β·(x_best − x_center)``; translation-equivariant, see the module docstring).

    Returns:
        The `EHOResult`: best point and value, best-so-far history (index 0 = initial population), exact number
        of evaluations, final population sorted best-first and its values.

    Raises:
        ValueError: On an invalid argument (named in the message) or a vectorised ``fun`` returning the wrong
            shape.
    """
    lo, hi = _box(lower, upper)
    n, C, n_iter, n_elite, alpha, beta, max_evals = _check_args(
        n_elephants, n_clans, n_iter, n_elite, alpha, beta, max_evals, callback
    )
    if matriarch not in MATRIARCH_RULES:
        raise ValueError(f"matriarch must be one of {', '.join(map(repr, MATRIARCH_RULES))}; got {matriarch!r}")

    rng = np.random.default_rng(seed)
    evaluate = _Evaluator(fun, vectorized)
    span = hi - lo
    return _herd(evaluate, rng, lo, hi, span, n, C, n_iter, n_elite, alpha, beta, max_evals, callback, matriarch)


def _check_args(
    n_elephants: int,
    n_clans: int,
    n_iter: int,
    n_elite: int,
    alpha: float,
    beta: float,
    max_evals: int | None,
    callback: object,
) -> tuple[int, int, int, int, float, float, int | None]:
    """`eho_minimize`'s settings checked and converted: ``(n, C, n_iter, n_elite, alpha, beta, max_evals)``.

    Raises:
        ValueError: naming the argument, its value and what is allowed.
    """
    n = _int_arg("n_elephants", n_elephants, 2)
    C = _int_arg("n_clans", n_clans, 1)
    if n < 2 * C:
        raise ValueError(
            f"n_elephants must be ≥ 2·n_clans (each clan needs a matriarch and a distinct worst); "
            f"got n_elephants={n}, n_clans={C}"
        )
    n_iter = _int_arg("n_iter", n_iter, 0)
    n_elite = _int_arg("n_elite", n_elite, 0)
    if n_elite >= n:
        raise ValueError(f"n_elite must be < n_elephants; got n_elite={n_elite}, n_elephants={n}")
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be finite and > 0; got {alpha}")
    beta = float(beta)
    if not (0.0 <= beta <= 1.0):
        raise ValueError(f"beta must satisfy 0 ≤ beta ≤ 1; got {beta}")
    if max_evals is not None:
        max_evals = _int_arg("max_evals", max_evals, 1)
        if max_evals < n:
            raise ValueError(
                f"max_evals must be ≥ n_elephants (the initial population); got max_evals={max_evals}, n_elephants={n}"
            )
    if callback is not None and not callable(callback):
        raise ValueError("callback must be callable or None")
    return n, C, n_iter, n_elite, alpha, beta, max_evals


def _herd(
    evaluate: _Evaluator,
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    span: np.ndarray,
    n: int,
    C: int,
    n_iter: int,
    n_elite: int,
    alpha: float,
    beta: float,
    max_evals: int | None,
    callback: Callable[[EHOResult], bool | None] | None,
    matriarch: str = "origin",
) -> EHOResult:
    """The EHO generations of `eho_minimize` (checked settings, ``span = hi - lo``): initial population, then clan
    updating, matriarchs, separating and elitism until ``n_iter``, the budget or the callback stops it."""
    d = lo.size

    # Clan structure over sorted ranks (fixed, since clans are re-dealt from the sorted population each time).
    ranks = np.arange(n)
    clan_of = ranks % C  # rank k → clan k mod C
    counts = np.bincount(clan_of, minlength=C).astype(float)
    is_matriarch = ranks < C  # rank c is clan c's first (best) member
    worst = np.array([c + C * ((n - 1 - c) // C) for c in range(C)])  # each clan's last member

    pop = lo + span * rng.random((n, d))
    fit = evaluate(pop)
    order = np.argsort(fit, kind="stable")
    pop, fit = pop[order], fit[order]
    best_x, best_f = pop[0].copy(), float(fit[0])
    history = [best_f]

    def snapshot() -> EHOResult:
        return EHOResult(
            x=best_x.copy(),
            fun=best_f,
            history=np.array(history),
            n_evals=evaluate.n_evals,
            population=pop.copy(),
            fitness=fit.copy(),
        )

    for _ in range(n_iter):
        if max_evals is not None and evaluate.n_evals + n > max_evals:
            break
        elite_x, elite_f = pop[:n_elite].copy(), fit[:n_elite].copy()
        # Clan updating (eq. 21) for everyone, from the old positions; matriarchs and worsts overwritten below.
        r = rng.random((n, d))
        new = pop + alpha * (pop[clan_of] - pop) * r
        new[is_matriarch] = _matriarchs(pop, clan_of, counts, beta, matriarch)
        # Separating: each clan's worst → a uniform point of the box.
        new[worst] = lo + span * rng.random((C, d))
        np.clip(new, lo, hi, out=new)

        new_fit = evaluate(new)
        i = int(np.argmin(new_fit))
        if new_fit[i] < best_f:
            best_x, best_f = new[i].copy(), float(new_fit[i])
        order = np.argsort(new_fit, kind="stable")
        new, new_fit = new[order], new_fit[order]
        if n_elite:
            new[n - n_elite :] = elite_x
            new_fit[n - n_elite :] = elite_f
            order = np.argsort(new_fit, kind="stable")
            new, new_fit = new[order], new_fit[order]
        pop, fit = new, new_fit
        history.append(best_f)
        if callback is not None and callback(snapshot()):
            break

    return snapshot()


def _matriarchs(pop: np.ndarray, clan_of: np.ndarray, counts: np.ndarray, beta: float, rule: str) -> np.ndarray:
    """The C matriarchs' new positions from the old (sorted) population: eq. 22–23 (``"origin"``: β · the mean of
    the old clan) or the variant (``"best"``: the matriarch ``pop[c]`` plus β · (matriarch − clan mean))."""
    C = counts.size
    centres = np.zeros((C, pop.shape[1]))
    np.add.at(centres, clan_of, pop)
    centres /= counts[:, None]
    if rule == "origin":
        return beta * centres
    best = pop[:C]
    return best + beta * (best - centres)


def random_search(
    fun: Callable[[np.ndarray], float] | Callable[[np.ndarray], np.ndarray],
    lower: np.ndarray | list[float] | float,
    upper: np.ndarray | list[float] | float,
    *,
    n_evals: int,
    seed: SeedLike = None,
    vectorized: bool = False,
) -> EHOResult:
    """Uniform random sampling of the box with exactly ``n_evals`` evaluations (baseline).

    Points are drawn in batches of 50 (the default ``n_elephants``), the last batch possibly smaller.

    Args:
        fun: Objective, as in :func:`eho_minimize`.
        lower: Lower bounds, shape (d,).
        upper: Upper bounds, shape (d,).
        n_evals: Number of points to evaluate, ≥ 1.
        seed: Seed for ``np.random.default_rng``.
        vectorized: Whether ``fun`` evaluates an (n, d) batch at once.

    Returns:
        An `EHOResult`: ``history[i]`` is the best after batch ``i`` (``50·(i + 1)`` evaluations, the last
        entry after all ``n_evals``); ``population``/``fitness`` are the (up to) 50 best points seen, best-first.

    Raises:
        ValueError: On an invalid argument.
    """
    lo, hi = _box(lower, upper)
    n_total = _int_arg("n_evals", n_evals, 1)
    rng = np.random.default_rng(seed)
    evaluate = _Evaluator(fun, vectorized)
    top_x = np.empty((0, lo.size))
    top_f = np.empty(0)
    history: list[float] = []
    while evaluate.n_evals < n_total:
        m = min(_RS_BATCH, n_total - evaluate.n_evals)
        X = lo + (hi - lo) * rng.random((m, lo.size))
        F = evaluate(X)
        top_x, top_f = np.vstack([top_x, X]), np.concatenate([top_f, F])
        order = np.argsort(top_f, kind="stable")[:_RS_BATCH]
        top_x, top_f = top_x[order], top_f[order]
        history.append(float(top_f[0]))
    return EHOResult(
        x=top_x[0].copy(),
        fun=float(top_f[0]),
        history=np.array(history),
        n_evals=evaluate.n_evals,
        population=top_x,
        fitness=top_f,
    )


def _de_sizes(budget: int, d: int) -> tuple[int, int, int]:
    """DE's population multiplier ``m``, population size ``S`` and generations after the first, for ``budget``
    evaluations in ``d`` dimensions (see `differential_evolution_budget`)."""
    m = min(15, max(1, budget // (50 * d)))
    S = max(5, m * d)
    if budget < S:
        raise ValueError(f"n_evals must be ≥ max(5, d) = {S} (one DE population); got {budget}")
    maxiter = budget // S - 1
    return m, S, maxiter


def differential_evolution_budget(
    fun: Callable[[np.ndarray], float],
    lower: np.ndarray | list[float] | float,
    upper: np.ndarray | list[float] | float,
    *,
    n_evals: int,
    seed: SeedLike = None,
) -> EHOResult:
    """`scipy.optimize.differential_evolution` with at most ``n_evals`` evaluations (baseline).

    Settings: scipy's defaults (``best1bin``, mutation (0.5, 1) with dithering, recombination 0.7, Latin-hypercube
    initialisation, immediate updating) with ``polish=False`` (no L-BFGS-B evaluations outside the budget) and
    ``tol = atol = 0`` (no early convergence stop). Population size ``S = max(5, m·d)`` with the multiplier
    ``m = clamp(n_evals // (50·d), 1, 15)`` — scipy's default ``m = 15`` when the budget allows ≥ 50 generations,
    smaller otherwise —, and ``maxiter = n_evals // S − 1`` generations after the initial one, so
    ``S·(maxiter + 1) ≤ n_evals`` evaluations. Evaluations are counted by a wrapper (exact ``n_evals``);
    non-finite values count as ``+inf``.

    Args:
        fun: Objective ``fun(x) -> float`` for ``x`` of shape (d,).
        lower: Lower bounds, shape (d,).
        upper: Upper bounds, shape (d,).
        n_evals: Evaluation budget, ≥ max(5, d) (one population).
        seed: Seed for ``np.random.default_rng`` (passed to scipy as ``rng``).

    Returns:
        An `EHOResult`: ``history[i]`` is the best after ``S·(i + 1)`` evaluations (index 0 = initial population);
        ``population``/``fitness`` are DE's final population, sorted best-first.

    Raises:
        ValueError: On an invalid argument.
    """
    from scipy.optimize import differential_evolution

    lo, hi = _box(lower, upper)
    d = lo.size
    budget = _int_arg("n_evals", n_evals, 1)
    m, S, maxiter = _de_sizes(budget, d)
    evaluate = _Evaluator(fun, vectorized=False)
    seen: list[float] = []
    best: list[Any] = [np.inf, None]  # best value and point over every evaluation

    def counted(x: np.ndarray) -> float:
        xx = np.asarray(x, dtype=float)
        v = float(evaluate(xx[None, :])[0])
        seen.append(v)
        if best[1] is None or v < best[0]:
            best[0], best[1] = v, xx.copy()
        return v

    res = differential_evolution(
        counted,
        list(zip(lo, hi)),
        popsize=m,
        maxiter=maxiter,
        polish=False,
        tol=0.0,
        atol=0.0,
        rng=np.random.default_rng(seed),
    )
    if evaluate.n_evals > budget:  # pragma: no cover - guards against a change in scipy's population rule
        raise RuntimeError(f"differential_evolution used {evaluate.n_evals} > {budget} evaluations")
    running = np.minimum.accumulate(np.array(seen))
    marks = np.arange(S, len(seen) + 1, S) - 1
    history = running[marks] if marks.size else running[-1:]
    if marks.size and marks[-1] != len(seen) - 1:
        history = np.append(history, running[-1])
    fitness = np.where(np.isfinite(res.population_energies), res.population_energies, np.inf)
    order = np.argsort(fitness, kind="stable")
    return EHOResult(
        x=best[1],
        fun=float(best[0]),
        history=history,
        n_evals=evaluate.n_evals,
        population=np.asarray(res.population, dtype=float)[order],
        fitness=fitness[order],
    )
