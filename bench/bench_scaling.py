"""Benchmark: CPU per simulated day against fleet size (EVs/day), and its log-log growth exponent.

Runs the default scenario (33-bus, curtailment on) with ``elasticity-dr`` and ``uncontrolled`` at each fleet size
(``--sizes``, default 1 000, 10 000, 100 000 EVs/day) and prints, measured in this run:

* CPU and wall seconds per simulated day of the step loop (set-up excluded, as in ``bench_day.py``; median of
  ``--reps`` repetitions), the share of wall time in power flow, the power flows per day and how many steps the
  DSO curtailed;
* CPU per EV and the growth exponent ``b`` of ``CPU/day ∝ EVs^b`` fitted by least squares in log-log, over all
  sizes and between neighbouring sizes (1.0 = linear);
* the baseline, measured in the same run: ``elasticity-dr`` with the per-EV valley fill it replaced (the
  reference kept in ``tests/test_vectorised_fleet.py``) at the sizes up to ``--baseline-max`` EVs, and the
  speed-up of the batched clearing over it (the market's own CPU and the whole day's).

It writes a log-log plot of EVs vs CPU/day with the fitted exponents (``--plot``, default
``results/bench_scaling.png``). Target (issue 15): exponent ≤ 1.05 from 1 k to 100 k EVs and ≤ 10 s CPU per day at
100 k EVs with ``elasticity-dr``. The machine is shared: CPU time is the figure to compare, wall time is context.

Usage: ``python bench/bench_scaling.py [--sizes 1000 10000 100000] [--reps 1] [--baseline-max 10000]
[--plot results/bench_scaling.png] [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MECHANISMS = ("elasticity-dr", "uncontrolled")


@dataclass
class Point:
    """One (mechanism, fleet size) measurement; times are medians over the repetitions, per simulated day."""

    mechanism: str
    n_evs: int
    sessions: int
    cpu_s: float
    wall_s: float
    market_cpu_s: float
    pf_share: float
    n_pf: int
    curtailed_steps: int
    n_steps: int
    ev_schedules: float  # EV schedules the mechanism computed per day (an EV rescheduled each step counts each time)
    grid_kwh: np.ndarray  # energy each EV drew from the grid in the last repetition [kWh]


def fit_exponent(n: np.ndarray, cpu_s: np.ndarray) -> tuple[float, float]:
    """Least-squares fit of ``log cpu = a + b log n``; returns (b, a)."""
    b, a = np.polyfit(np.log(n), np.log(cpu_s), 1)
    return float(b), float(a)


def _reference_valley_fill() -> Callable[..., np.ndarray]:
    """The per-EV valley fill kept as the test reference (tests/ is not a package: load the file by path)."""
    spec = importlib.util.spec_from_file_location("_vf_ref", ROOT / "tests" / "test_vectorised_fleet.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn: Callable[..., np.ndarray] = mod.valley_fill_ref
    return fn


@contextlib.contextmanager
def _patched_valley_fill(fn: Callable[..., np.ndarray] | None) -> Iterator[None]:
    """Swap ``markets.elasticity_dr.valley_fill`` for ``fn`` (None: leave it) for the duration."""
    import markets.elasticity_dr as edr

    old = edr.valley_fill
    if fn is not None:
        edr.valley_fill = fn
    try:
        yield
    finally:
        edr.valley_fill = old


def measure(mechanism: str, n_evs: int, reps: int, overrides: list[str], valley: Callable[..., Any] | None) -> Point:
    """Run the default day ``reps`` times at ``n_evs`` EVs/day and return the medians."""
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    sc = load_scenario("default", [f"market.mechanism={mechanism}", f"fleet.n_evs={n_evs}", *overrides])
    days = sc.time.horizon_h / 24.0
    cpu, wall, mkt, share, schedules = [], [], [], [], []
    model = None
    with _patched_valley_fill(valley):
        for _ in range(reps):
            model = CoSimulation(sc)
            mech = model.market_operator.mechanism
            clear = mech.clear
            spent = [0.0, 0.0]  # CPU s in the mechanism, EV schedules cleared

            def timed(request: Any, _clear: Callable[..., Any] = clear, _spent: list[float] = spent) -> Any:
                _spent[1] += len(request.evs)
                c = time.process_time()
                try:
                    return _clear(request)
                finally:
                    _spent[0] += time.process_time() - c

            mech.clear = timed  # type: ignore[method-assign]  # instance attribute: the market operator calls mechanism.clear
            c1, w1 = time.process_time(), time.perf_counter()
            model.env.run(until=model.n_steps * model.dt_min + 1e-9)
            c2, w2 = time.process_time(), time.perf_counter()
            cpu.append((c2 - c1) / days)
            wall.append((w2 - w1) / days)
            mkt.append(spent[0] / days)
            schedules.append(spent[1] / days)
            share.append(model.dso.pf_time_s / (w2 - w1))
            model.close()
    assert model is not None
    curtailed = int(model.recorder.cols["curtailed"][: model.n_steps].astype(bool).sum())
    med = statistics.median
    return Point(
        mechanism,
        n_evs,
        len(model.fleet),
        med(cpu),
        med(wall),
        med(mkt),
        med(share),
        model.dso.n_pf,
        curtailed,
        model.n_steps,
        med(schedules),
        model.fleet.grid_kwh.copy(),
    )


def plot(points: list[Point], fits: dict[str, float], path: Path) -> None:
    """Log-log plot of EVs/day vs CPU s/day per mechanism, with the fitted power laws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for mech in dict.fromkeys(p.mechanism for p in points):
        pts = [p for p in points if p.mechanism == mech]
        n = np.array([p.n_evs for p in pts], float)
        c = np.array([p.cpu_s for p in pts])
        (line,) = ax.loglog(n, c, "o", label=f"{mech}")
        xs = np.geomspace(n.min(), n.max(), 50)
        if mech in fits:
            b, a = fit_exponent(n, c)
            ax.loglog(xs, np.exp(a) * xs**b, "-", color=line.get_color(), alpha=0.6, label=f"{mech} fit: b = {b:.2f}")
        m = np.array([p.market_cpu_s for p in pts])
        if np.all(m > 0):
            bm, am = fit_exponent(n, m)
            ax.loglog(n, m, "s", mfc="none", color=line.get_color(), label=f"{mech}: market clearing only")
            ax.loglog(
                xs, np.exp(am) * xs**bm, "--", color=line.get_color(), alpha=0.6, label=f"  clearing fit: b = {bm:.2f}"
            )
    ns = sorted({p.n_evs for p in points})
    ax.axhline(10.0, color="grey", ls=":", lw=1, label="target at 100 k: 10 s")
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("EVs per day")
    ax.set_ylabel("CPU s per simulated day")
    ax.set_title(
        "Default day (case33bw, curtailment on): CPU/day ∝ EVs^b\nfilled: whole step loop; hollow: market clearing",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--mechanisms", nargs="+", default=list(MECHANISMS))
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--baseline-max", type=int, default=10000, help="largest fleet run with the per-EV baseline")
    ap.add_argument("--plot", type=Path, default=ROOT / "results" / "bench_scaling.png")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    if any(n < 1 for n in args.sizes) or len(set(args.sizes)) < 2:
        sys.exit(f"--sizes: got {args.sizes}; allowed: at least two different fleet sizes >= 1")
    if args.reps < 1:
        sys.exit(f"--reps: got {args.reps}; allowed: >= 1")

    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    load = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load[0]:.2f} {load[1]:.2f}")
    # warm-up: imports, grid compilation (cached per process), the compiled market kernels
    for mech in args.mechanisms:
        CoSimulation(load_scenario("default", [f"market.mechanism={mech}", *args.set])).run()

    points: list[Point] = []
    print(
        f"{'mechanism':<16}{'EVs/day':>9}{'sessions':>10}{'CPU s/day':>11}{'wall s/day':>11}{'market CPU':>11}"
        f"{'CPU ms/EV':>10}{'x vs 1st':>9}{'PF share':>9}{'PFs/day':>8}{'curtailed':>10}"
        f"{'EV sched.':>11}{'µs/sched':>9}"
    )
    for mech in args.mechanisms:
        first = None
        for n in sorted(args.sizes):
            p = measure(mech, n, args.reps, args.set, None)
            points.append(p)
            first = first or p
            print(
                f"{mech:<16}{n:>9,}{p.sessions:>10,}{p.cpu_s:>11.2f}{p.wall_s:>11.2f}{p.market_cpu_s:>11.2f}"
                f"{1e3 * p.cpu_s / n:>10.3f}{p.cpu_s / first.cpu_s:>9.1f}{p.pf_share:>9.0%}{p.n_pf:>8}"
                f"{p.curtailed_steps:>5}/{p.n_steps}{p.ev_schedules:>11,.0f}"
                f"{1e6 * p.market_cpu_s / max(p.ev_schedules, 1):>9.2f}",
                flush=True,
            )

    fits: dict[str, float] = {}
    print("\ngrowth exponent b of CPU/day ∝ EVs^b (log-log least squares; 1.0 = linear):")
    for mech in args.mechanisms:
        pts = [p for p in points if p.mechanism == mech]
        n = np.array([p.n_evs for p in pts], float)
        c = np.array([p.cpu_s for p in pts])
        fits[mech], _ = fit_exponent(n, c)
        pair = ", ".join(
            f"{int(n[i]):,}→{int(n[i + 1]):,}: {np.log(c[i + 1] / c[i]) / np.log(n[i + 1] / n[i]):.2f}"
            for i in range(len(n) - 1)
        )
        print(f"  {mech:<16} b = {fits[mech]:.2f} over {int(n[0]):,}–{int(n[-1]):,} EVs   (pairwise {pair})")
        m = np.array([p.market_cpu_s for p in pts])
        if np.all(m > 0):
            bm, _ = fit_exponent(n, m)
            pair_m = ", ".join(f"{np.log(m[i + 1] / m[i]) / np.log(n[i + 1] / n[i]):.2f}" for i in range(len(n) - 1))
            print(f"  {'  market only':<16} b = {bm:.2f}                            (pairwise {pair_m})")
    big = [p for p in points if p.mechanism == "elasticity-dr" and p.n_evs == max(args.sizes)]
    if big:
        ok = "meets" if big[0].cpu_s <= 10.0 else "misses"
        print(f"  elasticity-dr at {big[0].n_evs:,} EVs: {big[0].cpu_s:.2f} CPU s/day ({ok} the 10 s target)")

    base_sizes = [n for n in sorted(args.sizes) if n <= args.baseline_max]
    if "elasticity-dr" in args.mechanisms and base_sizes:
        print("\nbaseline in this run: elasticity-dr with the per-EV valley fill (tests/test_vectorised_fleet.py)")
        print(
            f"{'EVs/day':>9}{'CPU s/day':>11}{'market CPU':>11}{'batched':>9}{'speed-up day':>13}{'market':>8}"
            f"   max |Δ energy per EV| batched vs per-EV"
        )
        ref = _reference_valley_fill()
        for n in base_sizes:
            b = measure("elasticity-dr", n, args.reps, args.set, ref)
            new = next(p for p in points if p.mechanism == "elasticity-dr" and p.n_evs == n)
            print(
                f"{n:>9,}{b.cpu_s:>11.2f}{b.market_cpu_s:>11.2f}{new.cpu_s:>9.2f}{b.cpu_s / new.cpu_s:>12.1f}x"
                f"{b.market_cpu_s / max(new.market_cpu_s, 1e-9):>7.0f}x"
                f"   {float(np.abs(b.grid_kwh - new.grid_kwh).max()):.1e} kWh",
                flush=True,
            )

    plot(points, fits, args.plot)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
