"""EVA level of ``000_…`` (20 clusters × 6 slots) as a QUBO against HiGHS on the same discretised problem.

For 4 and 8 bits and a few fleets (seeds) it prints the QUBO's size (variables, interactions of its largest
stage), wall time, the annealer's own gap to the HiGHS optimum, the gap after classical repair (applied only if
the annealer's schedule violates a constraint), violations, and the time ratio to HiGHS — all measured in this
run. A last row per bit depth is the plain binary formulation (fitted costs, slack penalties, same sampler) to
show what the structure-exploiting formulation buys. Run: ``python bench/bench_qubo_eva.py [n_seeds]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from markets.qubo import composites, eva, samplers


def _gap_pct(cost: float, opt: float) -> float:
    return 100.0 * (cost - opt) / abs(opt)


def _plain_binary(inst: eva.EVAInstance, ref: eva.EVAReference, seed: int) -> tuple[float, int, float]:
    """The direct reading: binary levels, quadratic cost fit, slack-encoded energy rows with LP-dual multipliers."""
    t0 = time.perf_counter()
    model, nvar, _ = eva.build_qubo(inst, ref.energy_dual_usd_per_unit, weight_factor=0.5)
    bqm = model.to_bqm()
    ss = composites.DecomposedSampler(samplers.get("sa")).sample(
        bqm, components=eva._cluster_blocks(model, nvar), num_reads=16, num_sweeps=400, seed=seed
    )
    n = nvar.levels(composites.samples_matrix(ss, model.n_vars)[:1])[0]
    ev = eva.evaluate(inst, n)
    return _gap_pct(ev["cost_usd"], ref.objective_usd), ev["violations"], time.perf_counter() - t0


def main(n_seeds: int = 3) -> None:
    print(f"EVA QUBO vs HiGHS one-hot MILP, 000 Table 1 instance (20 clusters x 6 slots x 4 h), {n_seeds} fleets")
    head = (
        f"{'bits':>4} {'fleet':>5} {'vars':>6} {'inter':>7} {'wall_s':>7} {'gap_%':>7} {'rep_gap_%':>9} "
        f"{'viol':>4} {'highs_s':>7} {'ratio':>6}"
    )
    print(head)
    worst: dict[int, tuple[float, float, int]] = {}
    for bits in (4, 8):
        for seed in range(n_seeds):
            inst = eva.paper_instance(bits, seed=seed)
            t0 = time.perf_counter()
            ref = eva.reference(inst)
            highs_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            sol = eva.solve(inst, seed=seed)  # computes its own LP duals: all of the QUBO's work is timed
            wall = time.perf_counter() - t0
            gap, rep = _gap_pct(sol.cost_usd, ref.objective_usd), _gap_pct(sol.repaired_cost_usd, ref.objective_usd)
            print(
                f"{bits:>4} {seed:>5} {sol.n_vars:>6} {sol.n_interactions:>7} {wall:>7.2f} {gap:>7.3f} {rep:>9.3f} "
                f"{sol.violations:>4} {highs_s:>7.2f} {wall / highs_s:>6.2f}",
                flush=True,
            )
            w = worst.get(bits, (-np.inf, 0.0, 0))
            worst[bits] = (max(w[0], gap), max(w[1], wall), max(w[2], sol.violations))
        g, v, s = _plain_binary(eva.paper_instance(bits, seed=0), eva.reference(eva.paper_instance(bits, seed=0)), 0)
        print(
            f"{bits:>4} {'plain':>5} {'':>6} {'':>7} {s:>7.2f} {g:>7.3f} {'':>9} {v:>4}   (binary levels, fitted costs)"
        )
    for bits, (g, w, v) in worst.items():
        print(
            f"{bits}-bit worst: annealer gap {g:.3f} %, wall {w:.2f} s, violations {v} "
            f"(target <= 1 %, <= 5 s, 0; paper runtime {69.5 if bits == 4 else 326.6} s)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
