"""Benchmark: the batched power flow against `pp.runpp` and against one `FastPowerFlow.solve` per snapshot.

For case33bw and case118, a day of snapshots (the net's own loads along a daily curve, ±10 % per bus): CPU time
per snapshot of ``pp.runpp`` (a quarter of the snapshots, on pandapower's own engine), of a loop over
`FastPowerFlow.solve`, and of `FastPowerFlow.solve_batch`, in alternating rounds (the machine is shared: medians of
the rounds, CPU time beside wall); the speed-ups over ``pp.runpp`` (issue 15: ≥ 200× on case33bw, ≥ 100× on
case118) and the largest voltage difference to ``pp.runpp`` (≤ 1e-6 pu). One-time costs (compilation, the BLAS
thread controller) are paid before the clock starts.

Usage: ``python bench/bench_powerflow.py [--snapshots 96] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = {"case33bw": (0.3, 1.3), "case118": (0.5, 1.1)}  # daily load range, × the net's own loads
TARGET = {"case33bw": 200, "case118": 100}


def _clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _day(net: object, lo: float, hi: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    from grids.powerflow import bus_net_load

    p, q = bus_net_load(net)
    curve = lo + (hi - lo) * (0.5 - 0.5 * np.cos(np.linspace(0, 2 * np.pi, k)))
    scale = curve[:, None] * np.random.default_rng(0).uniform(0.9, 1.1, (k, len(p)))
    return p * scale, q * scale


def _round(net: object, P: np.ndarray, Q: np.ndarray) -> dict[str, tuple[float, float]]:
    """(CPU, wall) seconds per snapshot of each method, and the largest |ΔV| of the batch to pp.runpp."""
    from grids.powerflow import FastPowerFlow, PandapowerPowerFlow

    k = len(P)
    ref, loop, batch = PandapowerPowerFlow(net), FastPowerFlow(net), FastPowerFlow(net)
    for eng in (ref, loop):
        eng.solve(P[0], Q[0])  # warm: compiled kernels, the same start as the batch's
    batch.solve_batch(P[:1], Q[:1])
    c, w = _clock()
    want = {j: ref.solve(P[j], Q[j]) for j in range(0, k, 4)}
    t_ref = ((time.process_time() - c) / len(want), (time.perf_counter() - w) / len(want))
    c, w = _clock()
    for j in range(k):
        loop.solve(P[j], Q[j])
    t_loop = ((time.process_time() - c) / k, (time.perf_counter() - w) / k)
    c, w = _clock()
    got = batch.solve_batch(P, Q)
    t_batch = ((time.process_time() - c) / k, (time.perf_counter() - w) / k)
    dv = max(float(np.nanmax(np.abs(got[j].vm_pu - r.vm_pu))) for j, r in want.items())
    return {"runpp": t_ref, "loop": t_loop, "batch": t_batch, "dv": (dv, dv)}


def main() -> None:
    import pandapower.networks as pn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snapshots", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores shared); {args.snapshots} snapshots a day")
    for case, (lo, hi) in CASES.items():
        net = getattr(pn, case)()
        P, Q = _day(net, lo, hi, args.snapshots)
        rounds = [_round(net, P, Q) for _ in range(args.rounds)]

        def med(key: str, i: int, rounds: list = rounds) -> float:
            return float(np.median([r[key][i] for r in rounds]))

        ratio = [float(np.median([r["runpp"][0] / r[m][0] for r in rounds])) for m in ("loop", "batch")]
        print(
            f"{case}: per snapshot, CPU (wall) — pp.runpp {med('runpp', 0) * 1e3:.2f} ms ({med('runpp', 1) * 1e3:.2f}), "
            f"solve loop {med('loop', 0) * 1e3:.3f} ms ({med('loop', 1) * 1e3:.3f}), "
            f"solve_batch {med('batch', 0) * 1e3:.3f} ms ({med('batch', 1) * 1e3:.3f}); "
            f"speed-up over pp.runpp by CPU: loop x{ratio[0]:.0f}, batch x{ratio[1]:.0f} (target x{TARGET[case]}); "
            f"max |dV| to pp.runpp {max(r['dv'][0] for r in rounds):.1e} pu"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
