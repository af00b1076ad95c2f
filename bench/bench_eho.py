"""Benchmark: the `eho-bilevel` mechanism on the paper scenario (`004_…`, `eho-bilevel-10stations`).

Prints, measured in this run:

* EHO wall time for the paper problem (50 elephants × 50 iterations = 2 550 evaluations of the bilevel objective,
  50 EVs, 10 stations, 24 hourly slots; target ≤ 10 s on the 2-core development machine), with and without
  station choice;
* the lower level's time per upper-level candidate — the compiled kernel (numba) and the same code interpreted
  (``EVGRID_NO_NUMBA`` path), and the one-off compile/load time;
* the objective J (maximised) reached by EHO, SciPy differential evolution and random search at the *same* number
  of evaluations over several seeds, and EHO's gap to the best of the others;
* the exact optimum of a small instance (enumeration of lower-level regions, one LP each) and each search's gap
  to it;
* the mechanism's day-ahead clearing time inside the co-simulation.

Usage: ``python bench/bench_eho.py [--seeds 5] [--seed 2026]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="search seeds per method")
    ap.add_argument("--seed", type=int, default=2026, help="scenario seed (the EVs drawn)")
    args = ap.parse_args()

    import numpy as np

    t = time.perf_counter()
    import markets.eho_bilevel as eb
    import markets.eho_bilevel.kernel as ebk
    from experiments.eho_paper import _summary, compare_searches, problem_from_scenario, small_instance
    from sim.scenario import load_scenario

    t_import = time.perf_counter() - t
    sc = load_scenario("eho-bilevel-10stations", seed=args.seed)
    prob_f, _ = problem_from_scenario(sc, reach=0)
    prob_c, _ = problem_from_scenario(sc, reach=2)
    x0 = prob_c.upper.copy()
    t = time.perf_counter()
    prob_c.respond(x0)  # compiles (or loads from the on-disk cache) the kernel
    t_compile = time.perf_counter() - t
    print(f"imports {t_import:.2f} s; kernel compile/load {t_compile:.2f} s (once per process)")

    rng = np.random.default_rng(0)
    X = rng.uniform(prob_c.lower, prob_c.upper, (500, prob_c.n_dim))
    for name, prob in (("fixed stations", prob_f), ("station choice", prob_c)):
        t = time.perf_counter()
        for x in X:
            prob.respond(x)
        ll = (time.perf_counter() - t) / len(X) * 1e3
        t = time.perf_counter()
        for x in X:
            prob.loss(x)
        ev = (time.perf_counter() - t) / len(X) * 1e3
        print(f"lower level per candidate ({name}): {ll:.3f} ms; full objective evaluation {ev:.3f} ms")
    ebk._KERNEL = ebk._respond_kernel  # the interpreted fallback, same code
    t = time.perf_counter()
    for x in X[:20]:
        prob_c.respond(x)
    print(
        f"lower level per candidate, interpreted fallback (station choice): "
        f"{(time.perf_counter() - t) / 20 * 1e3:.1f} ms"
    )
    ebk._KERNEL = None

    for name, prob in (("fixed stations", prob_f), ("station choice", prob_c)):
        t = time.perf_counter()
        out = eb.solve(prob, seed=args.seed)
        wall = time.perf_counter() - t
        print(
            f"EHO, paper problem ({name}): {out['n_evals']} evaluations in {wall:.2f} s "
            f"(target <= 10 s); J = {out['objective']:.4f}"
        )

    seeds = list(range(args.seeds))
    for name, prob in (("fixed stations", prob_f), ("station choice", prob_c)):
        df, _ = compare_searches(prob, seeds=seeds)
        s = _summary(df)
        print(f"\nequal budgets, paper problem ({name}), {args.seeds} seeds:")
        print(s.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        best_other = float(df[df.method != "eho"].objective.max())
        eho_mean = float(df[df.method == "eho"].objective.mean())
        print(f"EHO mean gap to the best of DE/random: {(best_other - eho_mean) / abs(best_other):.1%}")

    small = small_instance()
    t = time.perf_counter()
    ex = eb.exact_upper_level(small)
    print(
        f"\nsmall instance (2 EVs, 1 port, 5 slots): exact J* = {ex['objective']:.4f} from {ex['n_lp']} LPs "
        f"in {time.perf_counter() - t:.2f} s"
    )
    df, _ = compare_searches(small, seeds=seeds, n_elephants=20, n_iter=20, eho_kw={"n_clans": 4})
    print(_summary(df, reference=ex["objective"]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    from sim.model import CoSimulation

    t = time.perf_counter()
    res = CoSimulation(sc).run()
    print(
        f"\nco-simulation with eho-bilevel: {time.perf_counter() - t:.2f} s wall, market "
        f"{res.kpis.get('time_market_s', float('nan')):.2f} s; peak {res.kpis['peak_load_kw']:.1f} kW"
    )


if __name__ == "__main__":
    main()
