"""Benchmark: environment steps per second of `sim.gym_env.EVGridEnv` (issue 18 item 4), single and vectorised.

Runs whole episodes of the default scenario (1 000 EVs, 96 steps of 15 min, curtailment on) with a constant policy
(every station at share 1) and prints steps/s by CPU time and by wall time, for one environment and for
``gymnasium.vector.SyncVectorEnv`` copies (steps counted per copy). Reset cost is excluded; the machine is shared,
so CPU time is the figure to compare. Target (issue 18): 2 000 steps/s single-threaded.

Usage: ``python bench/bench_gym.py [--episodes 3] [--vec 4] [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from sim.gym_env import EVGridEnv, make_vec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--vec", type=int, default=4)
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    env = EVGridEnv("default", args.set)
    steps, cpu, wall = 0, 0.0, 0.0
    for ep in range(args.episodes):
        env.reset(seed=ep)
        c, w = time.process_time(), time.perf_counter()
        done = False
        while not done:
            _, _, done, _, _ = env.step(np.ones(env.n_stations))
            steps += 1
        cpu += time.process_time() - c
        wall += time.perf_counter() - w
    print(
        f"EVGridEnv default ({env.n_stations} stations): {steps} steps, {steps / cpu:,.0f} steps/s CPU, "
        f"{steps / wall:,.0f} steps/s wall (target 2,000)"
    )
    vec = make_vec(args.vec, "default", args.set)
    vec.reset(seed=0)  # copies get seeds 0, 1, …
    n = 96
    c, w = time.process_time(), time.perf_counter()
    for _ in range(n):
        vec.step(np.ones((args.vec, env.n_stations)))
    cpu, wall = time.process_time() - c, time.perf_counter() - w
    print(
        f"SyncVectorEnv x{args.vec}: {n * args.vec} steps, {n * args.vec / cpu:,.0f} steps/s CPU, "
        f"{n * args.vec / wall:,.0f} steps/s wall (load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
