"""Benchmark: a simulated year (issue 18 item 3) — `simbench-mv-year`, 365 days at 15 min, 1 000 ElaadNL sessions a day.

Prints the set-up time, the step loop's CPU and wall time, CPU per simulated day, the peak resident memory of
this process and the two largest things it holds: the aggregator's set-point matrices (EVs × ring width) and the
recorder's per-step arrays. Target (issue 18): ≤ 30 s CPU per simulated year. The machine is shared: CPU time is
the figure to compare.

Measured 2026-12-06: before set-point rows were shared between EVs whose windows never overlap, a year was peak
3.85 GiB (set-point matrices 2 × 1.84 GiB); after, 1.88 GiB (set-points 0.07 GiB, recorder arrays 0.19 GiB), step
loop 234 s CPU at load 2.4; 30 days 0.66 GiB (docs/performance.md).

Usage: ``python bench/bench_year.py [--days 365] [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=365.0)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    sc = load_scenario("simbench-mv-year", [f"time.horizon_h={24 * args.days:g}", *args.set])
    c0, w0 = time.process_time(), time.perf_counter()
    model = CoSimulation(sc)
    c1, w1 = time.process_time(), time.perf_counter()
    result = model.run()
    c2, w2 = time.process_time(), time.perf_counter()
    days = sc.time.horizon_h / 24.0
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB
    print(f"simbench-mv-year: {days:g} days, {sc.time.n_steps} steps, {len(model.fleet):,} EV sessions")
    print(f"set-up (grid, fleet, agents) : {c1 - c0:8.1f} s CPU, {w1 - w0:8.1f} s wall")
    print(f"step loop                    : {c2 - c1:8.1f} s CPU, {w2 - w1:8.1f} s wall (target for a year: 30 s CPU)")
    print(f"per simulated day            : {(c2 - c1) / days:8.3f} s CPU")
    print(f"peak resident memory         : {rss_gib:8.2f} GiB (load average {os.getloadavg()[0]:.1f})")
    agg, rec = model.aggregator, model.recorder
    setpoints_gib = (agg.kw.data.nbytes + agg.kvar.data.nbytes) / 2**30
    rec_gib = sum(v.nbytes for v in vars(rec).values() if hasattr(v, "nbytes")) / 2**30
    rec_gib += sum(v.nbytes for v in rec.cols.values()) / 2**30
    print(f"  set-point matrices (kW, kVAr): {setpoints_gib:8.2f} GiB allocated (pages touched count in RSS)")
    print(f"  recorder per-step arrays     : {rec_gib:8.2f} GiB")
    print(
        f"energy fulfilment {result.kpis['energy_fulfilment']:.3f}, overvoltage {result.kpis['overvoltage_bus_minutes']:,.0f} bus·min"
    )


if __name__ == "__main__":
    main()
