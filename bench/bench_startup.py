"""Benchmark: wall and CPU time from process start to the first simulated step of a scenario (issue 20, "start fast").

Each measurement runs in a fresh Python process, the way ``evgrid run <scenario>`` does: interpreter start, the CLI
module, scenario loading, grid build, power-flow compilation, fleet and agents, until the step process reports its
first step (the child then exits without simulating further). Printed per measurement: wall [s] (seen from this
process, from spawning the child to the child's "first step" line) and the child's CPU [s] at that moment.

* ``cold``: numba's on-disk cache (``NUMBA_CACHE_DIR``) and evgrid's grid cache (``EVGRID_CACHE_DIR``,
  sim/gridcache.py) point at an empty folder, so every JIT kernel used in the set-up (pandapower's power-flow
  kernels) is compiled and the grid is built — what the very first run on an installation pays;
* ``warm``: the same folders again, now filled — what every later run pays. The OS file cache is warm in both.
* ``warm, no grid cache``: ``EVGRID_GRID_CACHE=off`` — the grid built in every run (the figure before the cache).

Usage: ``python bench/bench_startup.py [--scenario default] [--reps 3] [--no-cold]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The child: what `evgrid run` executes before the first step, then one step, then exit.
CHILD = r"""
import json, os, sys, time
import experiments.cli  # the CLI module, as `evgrid` loads it
experiments.cli.preload(['evgrid', 'run'])  # as `evgrid`'s main() does before a command
from sim.scenario import load_scenario
sc = load_scenario(sys.argv[1], [], None)
from sim.model import CoSimulation
def progress(k, n):
    if k == 1:
        print(json.dumps({"cpu_s": time.process_time()}), flush=True)
        os._exit(0)
CoSimulation(sc, progress=progress).run()
print(json.dumps({"error": "no step was reported"}), flush=True)
"""


def time_to_first_step(scenario: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall [s], CPU [s]) from spawning a fresh interpreter to its first simulated step."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, scenario], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline() if proc.stdout else ""
    wall = time.perf_counter() - t0
    proc.wait()
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        raise SystemExit(f"child failed (exit {proc.returncode}): {line!r}") from None
    if "cpu_s" not in rec:
        raise SystemExit(f"child failed: {rec}")
    return wall, float(rec["cpu_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--reps", type=int, default=3, help="warm measurements")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache measurement (it compiles ~10 s)")
    args = ap.parse_args()

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["EVGRID_GRID_CACHE"] = "on"
    with tempfile.TemporaryDirectory(prefix="evgrid-numba-") as cache:
        env["NUMBA_CACHE_DIR"] = cache
        env["EVGRID_CACHE_DIR"] = cache
        print(f"time to the first step of '{args.scenario}' in a fresh process (numba and grid cache: {cache})")
        print(f"{'':20s} {'wall [s]':>9s} {'CPU [s]':>9s}")
        if args.no_cold:
            time_to_first_step(args.scenario, env)  # fill the cache, unreported
        else:
            w, c = time_to_first_step(args.scenario, env)
            print(f"{'cold':20s} {w:9.2f} {c:9.2f}")
        walls, cpus = [], []
        for _ in range(args.reps):
            w, c = time_to_first_step(args.scenario, env)
            walls.append(w)
            cpus.append(c)
            print(f"{'warm':20s} {w:9.2f} {c:9.2f}")
        off = {**env, "EVGRID_GRID_CACHE": "off"}
        w, c = time_to_first_step(args.scenario, off)
        print(f"{'warm, no grid cache':20s} {w:9.2f} {c:9.2f}")
        if walls:
            print(
                f"warm median: wall {statistics.median(walls):.2f} s, CPU {statistics.median(cpus):.2f} s "
                f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
            )


if __name__ == "__main__":
    main()
