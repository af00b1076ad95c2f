"""Benchmark: one simulated day of the default scenario (33-bus, 1000 EVs, 15-min steps, elasticity-dr).

Prints, measured in this run:
* CPU and wall seconds per simulated day after warm-up (median of the repetitions), with and without model set-up;
* the share of the day's wall time spent in power flow;
* the fast power flow's speed-up over ``pp.runpp`` on the same snapshots (every step of the day), and the largest
  difference between the two (vm [pu], losses [MW]);
* the time ``evgrid --help`` takes.

Usage: ``python bench/bench_day.py [--reps 5] [--scenario default] [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    import numpy as np

    from grids.powerflow import PandapowerPowerFlow
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    sc = load_scenario(args.scenario, args.set)
    days = sc.time.horizon_h / 24.0
    # warm-up: imports, grid compilation (cached per process), first-call costs
    CoSimulation(sc).run()

    run_cpu, run_wall, full_cpu, pf_share, rep_cpu = [], [], [], [], []
    model = None
    for _ in range(args.reps):
        c0 = time.process_time()
        model = CoSimulation(sc)
        c1, w1 = time.process_time(), time.perf_counter()
        model.env.run(until=model.n_steps * model.dt_min + 1e-9)
        c2, w2 = time.process_time(), time.perf_counter()
        run_cpu.append((c2 - c1) / days)
        run_wall.append((w2 - w1) / days)
        full_cpu.append((c2 - c0) / days)
        pf_share.append(model.dso.pf_time_s / (w2 - w1))
        model.close()
        c3 = time.process_time()
        CoSimulation(sc).run()  # a whole replication: set-up, steps, tables, KPIs, loss sensitivities
        rep_cpu.append((time.process_time() - c3) / days)
    med = statistics.median
    print(
        f"scenario {sc.name}: {sc.fleet.n_evs} EVs/day, {model.n_steps} steps of {sc.time.dt_min:g} min, "
        f"{len(model.fleet)} sessions, grid {sc.grid.case}, engine {sc.grid.engine}"
    )
    print(f"CPU s per simulated day (step loop)      : {med(run_cpu):.3f}   (target <= 0.5)")
    print(f"wall s per simulated day (step loop)     : {med(run_wall):.3f}")
    print(f"CPU s per simulated day incl. set-up     : {med(full_cpu):.3f}")
    print(f"CPU s per replication (set-up, run, tables, KPIs): {med(rep_cpu):.3f}")
    print(f"share of step-loop wall time in power flow: {med(pf_share):.1%} ({model.dso.n_pf} power flows per day)")

    # fast engine vs pp.runpp on the same snapshots
    rec = model.recorder
    p, q = rec.p_net_bus / 1000.0, rec.q_net_bus / 1000.0
    fast = model.dso.engine
    ref = PandapowerPowerFlow(model.network.net)
    fast.reset_warm_start()
    t = time.perf_counter()
    fast_res = [fast.solve(p[k], q[k]) for k in range(len(p))]
    t_fast = (time.perf_counter() - t) / len(p)
    t = time.perf_counter()
    ref_res = [ref.solve(p[k], q[k]) for k in range(len(p))]
    t_ref = (time.perf_counter() - t) / len(p)
    dv = max(float(np.abs(a.vm_pu - b.vm_pu).max()) for a, b in zip(fast_res, ref_res))
    dl = max(abs(a.losses_mw - b.losses_mw) for a, b in zip(fast_res, ref_res))
    print(
        f"power flow per snapshot: fast {t_fast * 1e3:.3f} ms, pp.runpp {t_ref * 1e3:.2f} ms "
        f"-> speed-up x{t_ref / t_fast:.0f} on {len(p)} snapshots (max |dV| {dv:.1e} pu, max |dP_loss| {dl:.1e} MW)"
    )

    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.cli", "--help"], cwd=ROOT, capture_output=True, check=True)
    print(f"evgrid --help                            : {time.perf_counter() - t:.2f} s (target < 1)")


if __name__ == "__main__":
    main()
