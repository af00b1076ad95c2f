"""Benchmark summary: the headline speed figures in one Markdown table, with the date and the machine's load.

The last step of ``make bench``; the README quotes its table. Each row is measured in this run, CPU time beside
wall time (the machine is shared: CPU is the figure to compare), on short versions of the full benches:

* the default study's day (1 000 EVs, 96 steps, step loop only);
* ``elasticity-dr`` at 1 000 / 10 000 / 100 000 EVs a day: CPU per day at 100 000 and the log-log growth exponent
  (``bench_scaling.py``; it also draws the scaling curve into ``results/bench_scaling.png``);
* the batched power flow against ``pp.runpp`` per snapshot (``bench_powerflow.py``);
* the Gymnasium environment's steps per second (``bench_gym.py``);
* a month of ``simbench-mv-year`` (CPU per simulated day, × 365 for the year; ``bench_year.py``).

Usage: ``python bench/summary.py [--skip-100k]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))


def _day() -> tuple[str, str, str]:
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    CoSimulation(load_scenario("default", ["time.horizon_h=2"])).run()  # warm-up: kernels loaded, caches filled
    model = CoSimulation(load_scenario("default"))
    c, w = time.process_time(), time.perf_counter()
    model.env.run(until=model.n_steps * model.dt_min + 1e-9)
    return (
        "default study, one day (1 000 EVs, 96 steps), step loop",
        f"{time.process_time() - c:.2f} s",
        (f"{time.perf_counter() - w:.2f} s"),
    )


def _scaling(sizes: list[int]) -> list[tuple[str, str, str]]:
    import bench_scaling as bs

    pts = [bs.measure("elasticity-dr", n, 1, [], None) for n in sizes]
    b, _ = bs.fit_exponent(np.array(sizes, float), np.array([p.cpu_s for p in pts]))
    bs.plot(pts, {"elasticity-dr": b}, bs.ROOT / "results" / "bench_scaling.png")
    big = pts[-1]
    return [
        (f"`elasticity-dr`, {big.n_evs:,} EVs a day, per day (growth exponent {sizes[0]:,} → {sizes[-1]:,}: {b:.2f})",
         f"{big.cpu_s:.1f} s", f"{big.wall_s:.1f} s"),
    ]  # fmt: skip


def _powerflow() -> list[tuple[str, str, str]]:
    import bench_powerflow as bp
    import pandapower.networks as pn

    cpu, wall = [], []
    for case, (lo, hi) in bp.CASES.items():
        net = getattr(pn, case)()
        P, Q = bp._day(net, lo, hi, 96)
        rounds = [bp._round(net, P, Q) for _ in range(3)]  # the median of three: one round is noisy when loaded
        for i, out in ((0, cpu), (1, wall)):
            out.append(f"×{np.median([r['runpp'][i] / r['batch'][i] for r in rounds]):.0f}")
    name = "batched power flow, speed-up over `pp.runpp` per snapshot, case33bw / case118"
    return [(name, " / ".join(cpu), " / ".join(wall))]


def _gym() -> tuple[str, str, str]:
    from sim.gym_env import EVGridEnv

    env = EVGridEnv("default")
    env.reset(seed=0)
    done = False
    while not done:  # warm-up episode: numba kernels, lazy imports
        _, _, done, _, _ = env.step(np.ones(env.n_stations))
    env.reset(seed=1)
    steps, c, w, done = 0, time.process_time(), time.perf_counter(), False
    while not done:
        _, _, done, _, _ = env.step(np.ones(env.n_stations))
        steps += 1
    cpu, wall = time.process_time() - c, time.perf_counter() - w
    return "Gymnasium env, default scenario, steps per second", f"{steps / cpu:.0f}", f"{steps / wall:.0f}"


def _year(days: float = 30.0) -> tuple[str, str, str]:
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    model = CoSimulation(load_scenario("simbench-mv-year", [f"time.horizon_h={days * 24:g}"]))
    c, w = time.process_time(), time.perf_counter()
    model.env.run(until=model.n_steps * model.dt_min + 1e-9)
    cpu, wall = (time.process_time() - c) / days, (time.perf_counter() - w) / days
    return (
        "`simbench-mv-year`, per simulated day (× 365 for the year)",
        f"{cpu:.2f} s ({cpu * 365:.0f} s)",
        (f"{wall:.2f} s ({wall * 365:.0f} s)"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-100k", action="store_true", help="scaling at 1 000 and 10 000 EVs only")
    args = ap.parse_args()
    start = os.getloadavg()[0]
    rows = [_day()]
    rows += _scaling([1000, 10000] if args.skip_100k else [1000, 10000, 100000])
    rows += _powerflow()
    rows += [_gym(), _year()]
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    print(f"\n{today}, {os.cpu_count()} cores, load average {start:.1f} at start, {os.getloadavg()[0]:.1f} at end:\n")
    print("| figure | CPU | wall |\n|---|---:|---:|")
    for name, cpu, wall in rows:
        print(f"| {name} | {cpu} | {wall} |")


if __name__ == "__main__":
    main()
