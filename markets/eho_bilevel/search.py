"""The upper-level searches of `eho-bilevel` (EHO and its baselines) over a :class:`BilevelProblem`."""

from __future__ import annotations

from typing import Any

import numpy as np

from markets.eho_bilevel.model import BilevelProblem


# ----------------------------------------------------------------------------------------------- searches
def solve(
    problem: BilevelProblem,
    *,
    method: str = "eho",
    n_elephants: int = 50,
    n_clans: int = 5,
    n_iter: int = 50,
    alpha: float = 0.6,
    beta: float = 0.3,
    n_elite: int = 2,
    n_evals: int | None = None,
    seed: Any = None,
    matriarch: str = "origin",
) -> dict[str, Any]:
    """Search the upper level of ``problem`` with EHO (`markets.eho`), random search or SciPy DE.

    ``method="eho"`` runs ``n_elephants × n_iter`` iterations (plus the initial population); the other two run
    ``n_evals`` objective evaluations (default: as many as EHO would), so searches compare at equal budgets.

    Returns:
        dict with ``x`` (best upper-level vector), ``objective`` (``J``, maximised), ``history`` (best ``J`` per
        iteration), ``n_evals`` (evaluations counted by the problem), ``wall_time_s`` and the EHO result.

    ``matriarch`` selects EHO's matriarch update (`markets.eho.eho_minimize`): ``"origin"`` (the paper's eq. 22) or
    ``"best"`` (the translation-equivariant variant).
    """
    import time

    from markets import eho

    t = time.perf_counter()
    before = problem.n_evals
    lo, hi = problem.lower, problem.upper
    if method == "eho":
        res = eho.eho_minimize(
            problem.loss,
            lo,
            hi,
            n_elephants=n_elephants,
            n_clans=n_clans,
            n_iter=n_iter,
            alpha=alpha,
            beta=beta,
            n_elite=n_elite,
            seed=seed,
            max_evals=n_evals,
            matriarch=matriarch,
        )
    elif method == "random":
        res = eho.random_search(problem.loss, lo, hi, n_evals=int(n_evals or n_elephants * (n_iter + 1)), seed=seed)
    elif method == "de":
        res = eho.differential_evolution_budget(
            problem.loss, lo, hi, n_evals=int(n_evals or n_elephants * (n_iter + 1)), seed=seed
        )
    else:
        raise ValueError(f"method: got {method!r}; allowed 'eho', 'random', 'de'")
    return {
        "x": np.asarray(res.x, float),
        "objective": -float(res.fun),
        "history": -np.asarray(res.history, float),
        "n_evals": problem.n_evals - before,
        "wall_time_s": time.perf_counter() - t,
        "result": res,
    }
