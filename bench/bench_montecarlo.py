"""Benchmark: Monte Carlo throughput and worker memory on the default scenario.

Prints, measured in this run:
* replications per minute with 1 and 2 local worker processes (steady state: every worker has run one
  replication before the clock starts), and the parallel efficiency rate(2) / (2 · rate(1));
* the resident memory (RSS) of one worker after 10 and after 500 replications (flat = no model kept alive).

Usage: ``python bench/bench_montecarlo.py [--reps 40] [--memory-reps 500] [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_after(args: tuple[str, list[str], list[int]]) -> list[float]:
    """In a fresh worker: run replications and return RSS [MiB] at the given counts."""
    import psutil

    from experiments.engine import Point, Study, run_replication

    scenario, overrides, marks = args
    from sim.scenario import load_scenario

    sc = load_scenario(scenario, overrides)
    study = Study("montecarlo", sc, [Point(0, {}, "scenario")], max(marks), sc.seed)
    out = []
    proc = psutil.Process()
    for i, task in enumerate(study.tasks(), start=1):
        row, _ = run_replication(task)
        assert row["status"] == "ok", row["error"]
        if i in marks:
            out.append(proc.memory_info().rss / 2**20)
    return out


def _throughput(study, workers: int, n: int) -> float:
    """Replications per minute with ``workers`` processes, after one warm-up replication per worker."""
    from experiments.engine import run_replication

    tasks = study.tasks()
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(run_replication, tasks[:workers]))  # imports, grid compilation
        t = time.perf_counter()
        rows = [r for r, _ in pool.map(run_replication, tasks[workers : workers + n])]
        elapsed = time.perf_counter() - t
    assert all(r["status"] == "ok" for r in rows)
    return n / elapsed * 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=40, help="timed replications per configuration")
    ap.add_argument("--memory-reps", type=int, default=500)
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    from experiments.engine import Point, Study
    from sim.scenario import load_scenario

    sc = load_scenario(args.scenario, args.set)
    study = Study("montecarlo", sc, [Point(0, {}, "scenario")], args.reps + 2, sc.seed)
    r1 = _throughput(study, 1, args.reps)
    r2 = _throughput(study, 2, args.reps)
    print(f"scenario {sc.name}: {sc.fleet.n_evs} EVs/day, {sc.time.n_steps} steps")
    print(f"replications per minute, 1 worker : {r1:8.1f}")
    print(f"replications per minute, 2 workers: {r2:8.1f}")
    print(f"parallel efficiency (2 workers)   : {r2 / (2 * r1):8.1%}")
    marks = [10, args.memory_reps]
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        rss = pool.submit(_rss_after, (args.scenario, args.set, marks)).result()
    print(f"worker RSS after {marks[0]} replications : {rss[0]:8.1f} MiB")
    print(f"worker RSS after {marks[1]} replications: {rss[1]:8.1f} MiB  (growth {rss[1] - rss[0]:+.1f} MiB)")


if __name__ == "__main__":
    main()
