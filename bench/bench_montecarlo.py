"""Benchmark: Monte Carlo throughput, CPU-time and wall parallel efficiency, and worker memory (default study).

Measured through the engine's own code into a temporary `Store` (each result written as it arrives, as
``evgrid montecarlo`` does): 1 worker = `experiments.engine.execute` with ``workers=1`` (in this process, as
``--workers 1``); 2 workers = `experiments.pool.WorkerPool`, which `execute` runs for ``--workers 2``. Paired and
repeated: every configuration runs the same replications (same seeds; their KPIs are checked bit for bit) in
alternating rounds, ABBA order (1, 2 | 2, 1 | …). Warm: one pool serves every round, and before the first clock
starts each of its workers (and this process, for 1 worker) has run one replication, so imports, the grid (disk
cache) and numba's kernels are loaded.

Printed per round and configuration: wall time, replications per minute and CPU time — this process's
(`time.process_time`) plus each worker's own user + system time (the kernel's, via psutil) — per replication, and
how much of it ran inside replications (the rows' ``cpu_s``). Per round and as the median of the rounds:

* CPU-time parallel efficiency = CPU per replication with 1 worker / CPU per replication with 2 workers: the work
  that running in parallel adds (pickling, pipes, the parent's loop, cache contention). Other jobs that take the
  cores away change it far less than the wall figure (they still add noise: caches), so it survives a shared
  machine; short ABBA rounds and the median keep that noise out;
* wall efficiency = rate(2) / (2 · rate(1)) = CPU-time efficiency × cores(2) / (2 · cores(1)), where "cores" is CPU
  / wall: what a user sees. On a loaded machine it measures the load: with autogroups (Linux's default for desktop
  kernels) the CPUs are shared between sessions before processes, so a second worker may get no more CPU than the
  first had alone.

The load average (1, 5, 15 min) at start and end says how loaded the machine was. Last, the resident memory (RSS)
of one worker after 10, 100 and ``--memory-reps`` replications (flat after 100 = no model kept alive).

Usage: ``python bench/bench_montecarlo.py [--reps 10] [--rounds 16] [--memory-reps 200] [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from experiments.pool import WorkerPool

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


@dataclass
class Run:
    """One timed configuration of one round."""

    workers: int
    n: int
    wall_s: float
    parent_cpu_s: float  # this process: the replications themselves with 1 worker; store writes, pipes with 2
    worker_cpu_s: float  # the worker processes' own user + system time (0 with 1 worker: it is this process)
    rep_cpu_s: float  # inside run_replication (sum of the rows' cpu_s)
    preempted: int  # involuntary context switches of this process and the workers (time-sharing a core)
    kpis: dict[int, tuple[str, ...]]

    @property
    def rate(self) -> float:
        return self.n / self.wall_s * 60.0

    @property
    def cores(self) -> float:
        """CPU / wall: the cores this configuration got."""
        return (self.parent_cpu_s + self.worker_cpu_s) / self.wall_s

    @property
    def cpu_per_rep(self) -> float:
        return (self.parent_cpu_s + self.worker_cpu_s) / self.n


def _clocked(body: Callable[[], None], pids: list[int]) -> tuple[float, float, float, int]:
    """(wall [s], this process's CPU [s], the ``pids``' CPU [s], involuntary context switches of all) of ``body``."""
    import psutil

    procs = [psutil.Process(p) for p in pids]
    me = psutil.Process()

    def workers_cpu() -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in procs))

    def preempted() -> int:
        return sum(p.num_ctx_switches().involuntary for p in [me, *procs])

    s0, w0, c0, t0 = preempted(), workers_cpu(), time.process_time(), time.perf_counter()
    body()
    t1, c1, w1, s1 = time.perf_counter(), time.process_time(), workers_cpu(), preempted()
    return t1 - t0, c1 - c0, w1 - w0, s1 - s0


def _measure(study: Any, pool: WorkerPool | None, n: int, root: Path) -> Run:
    """Replications 0 … n−1 of ``study`` into a new store at ``root``: in this process (``pool`` None, as
    ``execute(workers=1)``) or on the warm `WorkerPool` ``pool``."""
    from experiments.engine import execute
    from experiments.store import Store

    timed = study.tasks()[:n]
    store = Store(root)
    store.create(study.manifest(), resume=False)
    rows: list[dict[str, Any]] = []

    def on_result(row: dict[str, Any], series: dict[str, Any]) -> None:
        store.write(row, series)
        rows.append(row)

    try:
        if pool is None:
            clock = _clocked(lambda: execute(timed, on_result, workers=1), [])
        else:
            pids = pool.pids()
            clock = _clocked(lambda: pool.run(timed, on_result), pids)
            assert pool.pids() == pids, "a worker died during the timed run"
    finally:
        store.unlock()
    assert len(rows) == n and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["error"]]
    kpis = {  # repr: exact for floats, and NaN equals NaN
        r["rep"]: tuple(repr(v) for k, v in sorted(r.items()) if k.startswith("kpi.") and not k.startswith("kpi.time_"))
        for r in rows
    }
    wall, parent, worker, preempted = clock
    workers = 1 if pool is None else pool.workers
    return Run(workers, n, wall, parent, worker, sum(r["cpu_s"] for r in rows), preempted, kpis)


def _warm_up(study: Any, pool: WorkerPool, n: int) -> None:
    """One untimed replication in this process and one on each worker of ``pool`` (imports, grid, numba)."""
    from experiments.engine import execute

    warm = study.tasks()[n : n + 1 + pool.workers]  # not among the timed ones

    def check(row: dict[str, Any], _: dict[str, Any]) -> None:
        assert row["status"] == "ok", row["error"]

    execute(warm[:1], check, workers=1)
    pool.run(warm[1:], check)  # all workers idle: each gets one


def _rounds(study: Any, reps: int, rounds: int) -> tuple[list[float], list[float], dict[int, list[Run]]]:
    """Alternating rounds on one warm pool: (CPU-time efficiencies, wall efficiencies, runs by worker count)."""
    from experiments.pool import WorkerPool

    cpu_eff: list[float] = []
    wall_eff: list[float] = []
    runs: dict[int, list[Run]] = {1: [], 2: []}
    reference: dict[int, tuple[str, ...]] | None = None
    with WorkerPool(2) as pool, tempfile.TemporaryDirectory(prefix="bench-mc-") as tmp:
        _warm_up(study, pool, reps)
        for k in range(1, rounds + 1):
            # ABBA order (1, 2 | 2, 1 | …) in short rounds: the two runs of a round see nearly the same load
            order: tuple[WorkerPool | None, ...] = (None, pool) if k % 2 else (pool, None)
            for cfg in order:
                run = _measure(study, cfg, reps, Path(tmp) / f"r{k}-w{1 if cfg is None else 2}")
                reference = reference or run.kpis
                assert run.kpis == reference, "KPIs differ between runs of the same replications"
                runs[run.workers].append(run)
            one, two = runs[1][-1], runs[2][-1]
            cpu_eff.append(one.cpu_per_rep / two.cpu_per_rep)
            wall_eff.append(two.rate / (2 * one.rate))
            first = "1,2" if k % 2 else "2,1"
            print(
                f"round {k:2d} ({first}): {_brief(one)} | {_brief(two)} | "
                f"CPU-time eff {cpu_eff[-1]:6.1%}  wall eff {wall_eff[-1]:6.1%}",
                flush=True,
            )
    return cpu_eff, wall_eff, runs


def _brief(run: Run) -> str:
    return f"{run.workers} w: {run.wall_s:4.1f} s {run.rate:5.0f}/min {run.cpu_per_rep:.3f} s CPU/rep cores {run.cores:.2f}"


def _pooled(runs: list[Run]) -> str:
    """One configuration over all rounds: where its CPU went, per replication."""
    n = sum(r.n for r in runs)
    parent, workers = sum(r.parent_cpu_s for r in runs) / n, sum(r.worker_cpu_s for r in runs) / n
    inside = sum(r.rep_cpu_s for r in runs) / n
    wall = sum(r.wall_s for r in runs)
    return (
        f"{runs[0].workers} worker{'s' if runs[0].workers > 1 else ' '}, {n} replications: {n / wall * 60:5.1f}/min, "
        f"CPU {parent + workers:.3f} s/rep = parent {parent:.3f} + workers {workers:.3f}; inside replications "
        f"{inside:.3f}, outside {parent + workers - inside:.4f}; preempted {sum(r.preempted for r in runs) / n:.0f}x/rep"
    )


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"median {q[1]:.1%} (quartiles {q[0]:.1%}–{q[2]:.1%})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10, help="timed replications per configuration and round")
    ap.add_argument("--rounds", type=int, default=16, help="rounds of (1 worker, 2 workers)")
    ap.add_argument("--memory-reps", type=int, default=200)
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    from experiments.engine import Point, Study
    from experiments.replication import import_frozen
    from sim.scenario import load_scenario

    load_start = _load()
    import_frozen()  # this process runs the 1-worker replications: frozen as `evgrid`'s own process and the workers
    sc = load_scenario(args.scenario, args.set)
    study = Study("montecarlo", sc, [Point(0, {}, "scenario")], args.reps + 3, sc.seed)
    print(f"scenario {sc.name}: {sc.fleet.n_evs} EVs/day, {sc.time.n_steps} steps; {os.cpu_count()} CPUs")
    cpu_eff, wall_eff, runs = _rounds(study, args.reps, args.rounds)
    for w in (1, 2):
        print(_pooled(runs[w]))
    cpu = {w: sum(r.parent_cpu_s + r.worker_cpu_s for r in rs) / sum(r.n for r in rs) for w, rs in runs.items()}
    print(f"CPU-time efficiency: {_spread(cpu_eff)}; all rounds pooled {cpu[1] / cpu[2]:.1%}")
    print(f"wall efficiency    : {_spread(wall_eff)}")
    print(f"load average (1, 5, 15 min): {load_start} at start, {_load()} at end")
    marks = sorted({10, min(100, args.memory_reps), args.memory_reps})
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        rss = pool.submit(_rss_after, (args.scenario, args.set, marks)).result()
    print(  # caches and the allocator fill up over the first few dozen replications; flat after = nothing kept alive
        f"worker RSS after {' / '.join(map(str, marks))} replications: {' / '.join(f'{x:.1f}' for x in rss)} MiB "
        f"(growth over the last {marks[-1] - marks[-2]}: {rss[-1] - rss[-2]:+.1f} MiB)"
    )


if __name__ == "__main__":
    main()
