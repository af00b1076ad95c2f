"""Benchmark: environment steps per second of `sim.gym_env.EVGridEnv` (issue 18 item 4), single and vectorised.

Runs whole episodes of the default scenario (1 000 EVs, 96 steps of 15 min, curtailment on) with a constant policy
(every station at share 1) and prints steps/s by CPU time and by wall time, for one environment and for
``gymnasium.vector.SyncVectorEnv`` copies (steps counted per copy), and the power flows per step. Reset cost is
excluded, and so is a first, untimed episode: its first step loads the numba kernels and lazily imported modules,
0.4-0.7 s once per process, which would otherwise count as 1-2 ms a step over three episodes. The machine is shared,
so CPU time is the figure to compare, and the best episode is printed beside the mean because other processes slow
some episodes down. ``--profile N`` prints the N costliest functions of the single environment's steps (cProfile, by
own time; the profiler itself slows the steps). Target (issue 18): 2 000 steps/s single-threaded.

Usage: ``python bench/bench_gym.py [--episodes 3] [--vec 4] [--profile 0] [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
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
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest functions")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()

    env = EVGridEnv("default", args.set)
    env.reset(seed=args.episodes)  # warm-up episode (not timed): the one-off kernel loading of the process
    done = False
    while not done:
        done = env.step(np.ones(env.n_stations))[2]
    prof = cProfile.Profile() if args.profile else None
    steps, cpu, wall, best, n_pf = 0, 0.0, 0.0, np.inf, 0
    for ep in range(args.episodes):
        env.reset(seed=ep)
        pf0 = env.unwrapped._model.dso.n_pf
        n, done = 0, False
        c, w = time.process_time(), time.perf_counter()
        if prof is not None:
            prof.enable()
        while not done:
            _, _, done, _, _ = env.step(np.ones(env.n_stations))
            n += 1
        if prof is not None:
            prof.disable()
        cpu += time.process_time() - c
        wall += time.perf_counter() - w
        best = min(best, (time.process_time() - c) / n)
        steps += n
        n_pf += env.unwrapped._model.dso.n_pf - pf0
    print(
        f"EVGridEnv default ({env.n_stations} stations): {steps} steps, {steps / cpu:,.0f} steps/s CPU "
        f"(best episode {1 / best:,.0f}), {steps / wall:,.0f} steps/s wall, {n_pf / steps:.2f} power flows/step "
        "(target 2,000 steps/s)"
    )
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
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
