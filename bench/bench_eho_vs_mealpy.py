"""Benchmark: `markets.eho` against mealpy's EHO, random search and scipy's DE at equal evaluation budgets.

Standard 10-D test functions on their usual boxes — Sphere [-5.12, 5.12], Rastrigin [-5.12, 5.12], Rosenbrock
[-5, 10], Ackley [-32.768, 32.768] — and, because EHO's matriarch update ``β·x_center`` pulls towards the origin
(where those optima sit), shifted Sphere, Rastrigin and Ackley with the optimum moved to a fixed point ``o``
(drawn once, inside 80 % of the box). Each method gets the budget of our EHO with ``--elephants`` × ``--iters``
(initial population included: 50 × (1 + 100) = 5050 evaluations by default) and is run with ``--seeds`` seeds;
the table prints the median best value (f* = 0 everywhere) and median wall time. Columns:

* ``EHO`` — `eho_minimize` with the paper's operators and its defaults (α = 0.6, β = 0.3, 5 clans, 2 elites);
* ``mealpy`` — mealpy's ``EHO.OriginalEHO`` with the same α, β, clans and population, as many epochs as fit the
  budget (mealpy spends ``n_clans`` extra evaluations per epoch on the separated elephants, so it runs fewer
  epochs); "missing" when mealpy is not installed;
* ``EHO*`` — `eho_minimize` with α = 1.5, β = 1 (matriarch to the clan centre, steps past the matriarch): not the
  paper's setting, shown because it removes the stagnation of the defaults on shifted problems;
* ``random`` — `random_search`; ``DE`` — `differential_evolution_budget` (scipy, ``polish=False``).

Every method's evaluations are counted by a wrapper; the ``evals`` line shows the median count per method.
Our EHO and random search evaluate the population in one vectorised call; mealpy and DE call per point.

Usage: ``python bench/bench_eho_vs_mealpy.py [--elephants 50] [--iters 100] [--seeds 5] [--dim 10]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from markets.eho import differential_evolution_budget, eho_minimize, random_search  # noqa: E402


def sphere(X: np.ndarray) -> np.ndarray:
    """Sphere, Σ x²; works on (d,) or (n, d)."""
    return np.sum(X**2, axis=-1)


def rastrigin(X: np.ndarray) -> np.ndarray:
    """Rastrigin, 10·d + Σ (x² − 10·cos 2πx)."""
    return 10.0 * X.shape[-1] + np.sum(X**2 - 10.0 * np.cos(2.0 * np.pi * X), axis=-1)


def rosenbrock(X: np.ndarray) -> np.ndarray:
    """Rosenbrock, Σ 100·(x_{i+1} − x_i²)² + (1 − x_i)²; optimum at (1, …, 1)."""
    return np.sum(100.0 * (X[..., 1:] - X[..., :-1] ** 2) ** 2 + (1.0 - X[..., :-1]) ** 2, axis=-1)


def ackley(X: np.ndarray) -> np.ndarray:
    """Ackley (a = 20, b = 0.2, c = 2π)."""
    d = X.shape[-1]
    return (
        -20.0 * np.exp(-0.2 * np.sqrt(np.sum(X**2, axis=-1) / d))
        - np.exp(np.sum(np.cos(2.0 * np.pi * X), axis=-1) / d)
        + 20.0
        + np.e
    )


def shifted(f: Callable[[np.ndarray], np.ndarray], o: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``f(x − o)``: the optimum moved from 0 to ``o``."""
    return lambda X: f(X - o)


def problems(d: int) -> list[tuple[str, Callable[[np.ndarray], np.ndarray], float, float]]:
    """(name, vectorised objective, lower, upper) for the table's rows."""
    rng = np.random.default_rng(20150101)
    o_s = rng.uniform(-0.8, 0.8, d) * 5.12
    o_a = rng.uniform(-0.8, 0.8, d) * 32.768
    return [
        ("Sphere", sphere, -5.12, 5.12),
        ("Rastrigin", rastrigin, -5.12, 5.12),
        ("Rosenbrock", rosenbrock, -5.0, 10.0),
        ("Ackley", ackley, -32.768, 32.768),
        ("Sphere-shift", shifted(sphere, o_s), -5.12, 5.12),
        ("Rastrigin-shift", shifted(rastrigin, o_s), -5.12, 5.12),
        ("Ackley-shift", shifted(ackley, o_a), -32.768, 32.768),
    ]


class Counted:
    """Scalar and vectorised wrapper that counts evaluations."""

    def __init__(self, f: Callable[[np.ndarray], np.ndarray]) -> None:
        self.f, self.n = f, 0

    def scalar(self, x: np.ndarray) -> float:
        self.n += 1
        return float(self.f(np.asarray(x, dtype=float)))

    def batch(self, X: np.ndarray) -> np.ndarray:
        self.n += X.shape[0]
        return self.f(X)


def run_mealpy(f: Counted, lo: np.ndarray, hi: np.ndarray, n: int, budget: int, seed: int) -> float:
    """mealpy ``OriginalEHO`` within ``budget`` evaluations (whole epochs only); returns its best value."""
    from mealpy import EHO, FloatVar

    n_clans = 5
    epochs = max(1, (budget - n - 1) // (n + n_clans))  # init n (+1 problem check), then n + n_clans per epoch
    model = EHO.OriginalEHO(epoch=epochs, pop_size=n, alpha=0.6, beta=0.3, n_clans=n_clans)
    problem = {
        "obj_func": f.scalar,
        "bounds": FloatVar(lb=lo.tolist(), ub=hi.tolist()),
        "minmax": "min",
        "log_to": None,
    }
    g = model.solve(problem, seed=seed)
    return float(g.target.fitness)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elephants", type=int, default=50)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--dim", type=int, default=10)
    a = ap.parse_args()
    n, d = a.elephants, a.dim
    budget = n * (a.iters + 1)
    try:
        import mealpy

        have_mealpy = True
        mealpy_note = f"mealpy {mealpy.__version__}"
    except Exception as exc:  # noqa: BLE001 - any import failure means "skip it"
        have_mealpy = False
        mealpy_note = f"mealpy missing ({type(exc).__name__}: {exc}); its column is skipped"
    print(
        f"d = {d}, budget = {budget} evaluations ({n} × (1 + {a.iters})), median over {a.seeds} seeds; "
        f"{mealpy_note}; numpy {np.__version__}"
    )

    methods: dict[str, Callable[[Counted, np.ndarray, np.ndarray, int], float]] = {
        "EHO": lambda f, lo, hi, s: (
            eho_minimize(f.batch, lo, hi, n_elephants=n, n_iter=a.iters, seed=s, vectorized=True).fun
        ),
        "mealpy": lambda f, lo, hi, s: run_mealpy(f, lo, hi, n, budget, s),
        "EHO*": lambda f, lo, hi, s: (
            eho_minimize(
                f.batch, lo, hi, n_elephants=n, n_iter=a.iters, alpha=1.5, beta=1.0, seed=s, vectorized=True
            ).fun
        ),
        "random": lambda f, lo, hi, s: random_search(f.batch, lo, hi, n_evals=budget, seed=s, vectorized=True).fun,
        "DE": lambda f, lo, hi, s: differential_evolution_budget(f.scalar, lo, hi, n_evals=budget, seed=s).fun,
    }
    if not have_mealpy:
        del methods["mealpy"]

    names = list(methods)
    head = f"{'function':<16}" + "".join(f"{m:>11}" for m in names) + " │" + "".join(f"{m + ' s':>9}" for m in names)
    print(head)
    print("─" * len(head))
    evals: dict[str, list[int]] = {m: [] for m in names}
    for pname, f, lo_s, hi_s in problems(d):
        lo, hi = np.full(d, lo_s), np.full(d, hi_s)
        vals, times = {}, {}
        for m, run in methods.items():
            v, t = [], []
            for s in range(a.seeds):
                c = Counted(f)
                t0 = time.perf_counter()
                v.append(run(c, lo, hi, s))
                t.append(time.perf_counter() - t0)
                evals[m].append(c.n)
                assert c.n <= budget + 1, (m, c.n, budget)
            vals[m], times[m] = float(np.median(v)), float(np.median(t))
        print(
            f"{pname:<16}"
            + "".join(f"{vals[m]:>11.3g}" for m in names)
            + " │"
            + "".join(f"{times[m]:>9.3f}" for m in names)
        )
    print("evals (median)  " + "".join(f"{int(np.median(evals[m])):>11d}" for m in names))


if __name__ == "__main__":
    main()
