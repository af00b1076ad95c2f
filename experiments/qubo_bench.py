"""`evgrid qubo-bench`: the `qubo-rtp` pipeline against honest baselines on the same intervals (issue 16).

The 003 day (:func:`experiments.rtp_paper.build_day`) is cleared by the scenario's own `qubo-rtp` market up to a
window of intervals (default: 8 × 15 min from 18:00, the evening peak); the :class:`RTPInstance` of each interval
in the window — with the price levels the day actually reached before it (ramp windows) — is kept and solved by
every method:

* ``pipeline`` — the default: LP duals → separable QUBO → simulated annealing → augmented-Lagrangian rounds →
  greedy repair (:func:`markets.qubo.rtp_sampling.solve` with the scenario's parameters);
* ``sa`` — simulated annealing alone: one round on the LP duals, no AL rounds (only the final repair);
* ``steepest-descent``, ``tabu``, ``random`` — the same pipeline with the sampler swapped (``random`` is
  :class:`dimod.RandomSampler`: the floor any sampler has to beat);
* ``greedy`` — the problem's natural rule: each station's level minimises its own cost table over its window,
  ignoring the feeder (bus) rows, then the pipeline's greedy repair raises prices on overloaded feeders;
* ``highs`` — the exact one-hot MILP in HiGHS (the reference the gaps are taken to).

Per method: worst-interval and mean gap to HiGHS, bus-row violations before repair (summed over the intervals),
wall and CPU time per interval. The *hard* family tightens every feeder (``paper.feeder_factor``); the share of
peak bus-intervals whose feeder row binds in the exact optimum is printed for each family.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from markets.qubo.rtp import RTPInstance, evaluate, reference
from markets.qubo.rtp_sampling import gap, repair_feeders, solve

METHODS = ("pipeline", "sa", "steepest-descent", "tabu", "random", "greedy", "highs")
BIND_TOL = 1e-3  # a feeder row binds when the exact optimum loads it to within 0.1 % of its capacity


class _Enough(Exception):
    """Raised inside the market once every wanted interval has been recorded."""


def day_instances(sc: Any, *, full: bool, start_h: float, n_intervals: int, seed: int | None = None) -> list[Any]:
    """The :class:`RTPInstance` of ``n_intervals`` intervals from clock hour ``start_h`` of the 003 day, as the
    scenario's `qubo-rtp` market meets them (the day is cleared up to the window and stopped there)."""
    from experiments.rtp_paper import build_day
    from markets.qubo_rtp import QuboRTP

    day = build_day(sc, full=full)
    n_st = int(day.n_stations)
    dt_h = day.request.dt_min / 60.0
    first = int(round(((start_h - sc.time.start_h) % 24.0) / dt_h))
    if first + n_intervals > day.request.n_slots:
        raise ValueError(f"window: {n_intervals} intervals from {start_h:g} h run past the day's end")
    kept: list[RTPInstance] = []
    seen = [0]

    class _Recorder(QuboRTP):
        def instance(self, **kw: Any) -> RTPInstance:
            inst: RTPInstance = super().instance(**kw)
            if inst.n_stations == n_st and np.size(kw["d0_kw"]) == n_st and kw["bus_cap_kw"].size:
                t = seen[0]
                seen[0] += 1
                if t >= first + n_intervals:
                    raise _Enough
                if t >= first:
                    kept.append(inst)
            return inst

    params = {**sc.market.params["qubo-rtp"], "reference": False}
    try:
        _Recorder(seed=sc.seed if seed is None else seed, **params).clear(day.request)
    except _Enough:
        pass
    return kept


def binding_share(insts: list[RTPInstance], refs: list[Any]) -> tuple[int, int]:
    """(binding, total): feeder rows with stations, over the intervals, that bind in the exact optimum."""
    bind = total = 0
    for inst, ref in zip(insts, refs, strict=True):
        ev = evaluate(inst, ref.levels)
        m = inst.bus >= 0
        load = np.zeros(np.size(inst.bus_cap_kw))
        np.add.at(load, inst.bus[m], ev["demand_kw"][m])
        used = np.bincount(inst.bus[m], minlength=load.size) > 0
        cap = inst.bus_cap_effective()
        bind += int((used & (load >= cap * (1 - BIND_TOL))).sum())
        total += int(used.sum())
    return bind, total


def greedy(inst: RTPInstance) -> tuple[np.ndarray, np.ndarray]:
    """(repaired, raw) levels of the greedy rule: each station's own best level over its window, feeders
    ignored; then the pipeline's repair (raise the cheapest-per-kW station on an overloaded feeder)."""
    lo, hi, _, _ = inst.windows()
    demand = inst.demand_table()
    table = inst.cost_table(demand)
    k = np.arange(inst.levels + 1)
    masked = np.where((k[None, :] >= lo[:, None]) & (k[None, :] <= hi[:, None]), table, np.inf)
    raw = np.argmin(masked, axis=1).astype(np.int64)
    return repair_feeders(inst, raw, hi, table, demand), raw


@dataclass
class Outcome:
    """One method on one interval."""

    objective_usd: float
    violations: int  # bus rows violated before repair
    wall_s: float
    cpu_s: float


def _timed(fn: Callable[[], tuple[float, int]]) -> Outcome:
    t0, c0 = time.perf_counter(), time.process_time()
    obj, viol = fn()
    return Outcome(obj, viol, time.perf_counter() - t0, time.process_time() - c0)


def run_method(method: str, inst: RTPInstance, params: dict[str, Any], seed: int) -> Outcome:
    """Solve ``inst`` with ``method`` (one of :data:`METHODS`); ``params`` are the scenario's `qubo-rtp` ones."""
    common = {"num_reads": params["num_reads"], "num_sweeps": params["num_sweeps"], "seed": seed}

    def sampled(sampler: str, al_rounds: int) -> tuple[float, int]:
        sol = solve(inst, sampler=sampler, al_rounds=al_rounds, repair=params["repair"], **common)
        return sol.objective_usd, evaluate(inst, sol.annealer_levels)["bus_violations"]

    def by_greedy() -> tuple[float, int]:
        fixed, raw = greedy(inst)
        return evaluate(inst, fixed)["objective_usd"], evaluate(inst, raw)["bus_violations"]

    def exact() -> tuple[float, int]:
        return reference(inst).objective_usd, 0

    runners: dict[str, Callable[[], tuple[float, int]]] = {
        "pipeline": lambda: sampled(params["sampler"], params["al_rounds"]),
        "sa": lambda: sampled("sa", 1),
        "steepest-descent": lambda: sampled("steepest-descent", params["al_rounds"]),
        "tabu": lambda: sampled("tabu", params["al_rounds"]),
        "random": lambda: sampled("random", params["al_rounds"]),
        "greedy": by_greedy,
        "highs": exact,
    }
    if method not in runners:
        raise ValueError(f"method: must be one of {', '.join(METHODS)}; got {method!r}")
    return _timed(runners[method])


@dataclass
class Row:
    """A method's summary over the intervals of one family."""

    method: str
    worst_gap: float
    mean_gap: float
    violations: int
    wall_mean_s: float
    wall_max_s: float
    cpu_mean_s: float


def bench(insts: list[RTPInstance], params: dict[str, Any], methods: list[str], seed: int = 0) -> list[Row]:
    """Every method on every instance; gaps to the HiGHS optimum of the same instance."""
    refs = [reference(i).objective_usd for i in insts]
    rows = []
    for m in methods:
        outs = [run_method(m, inst, params, seed + t) for t, inst in enumerate(insts)]
        g = np.array([gap(o.objective_usd, r) for o, r in zip(outs, refs, strict=True)])
        wall = np.array([o.wall_s for o in outs])
        rows.append(
            Row(
                m,
                float(g.max()),
                float(g.mean()),
                sum(o.violations for o in outs),
                float(wall.mean()),
                float(wall.max()),
                float(np.mean([o.cpu_s for o in outs])),
            )
        )
    return rows


def table(title: str, rows: list[Row]) -> str:
    """The comparison as a Markdown table (gaps in %, times in seconds per interval)."""
    lines = [
        title,
        "",
        "| method | worst gap % | mean gap % | violations before repair | wall s/interval (mean, max) | CPU s/interval |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {100 * r.worst_gap:.3f} | {100 * r.mean_gap:.3f} | {r.violations} | "
            f"{r.wall_mean_s:.3f}, {r.wall_max_s:.3f} | {r.cpu_mean_s:.3f} |"
        )
    return "\n".join(lines)


def family(
    sc: Any, *, full: bool, start_h: float, n_intervals: int, methods: list[str], seed: int | None = None
) -> tuple[list[Row], tuple[int, int], int]:
    """Bench one family (a loaded scenario): rows, the binding share (binding, total) and the station count."""
    insts = day_instances(sc, full=full, start_h=start_h, n_intervals=n_intervals, seed=seed)
    refs = [reference(i) for i in insts]
    from markets.qubo_rtp import QuboRTP

    params = QuboRTP(seed=0, **sc.market.params["qubo-rtp"]).params  # with the mechanism's defaults
    rows = bench(insts, params, methods, seed=sc.seed if seed is None else seed)
    return rows, binding_share(insts, refs), insts[0].n_stations if insts else 0
