"""The `qubo-rtp` sampler pipeline: sample the QUBO of an :class:`RTPInstance`, decode, repair, and report the gap
to the reference."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from markets.qubo import composites, samplers
from markets.qubo.rtp import RTPInstance, _Block, _one_hot, build_qubo, evaluate


@dataclass
class RTPSolution:
    """One cleared interval: the annealer's own levels and the (classically) repaired ones, kept apart."""

    levels: np.ndarray
    objective_usd: float
    annealer_levels: np.ndarray
    annealer_objective_usd: float
    annealer_feasible: bool
    repaired: bool
    bus_violations: int
    n_vars: int
    n_interactions: int
    wall_s: float
    sample_s: float
    al_rounds: int
    fit_error_usd: float
    cap_short: int
    ramp_broken: int
    info: dict[str, Any] = field(default_factory=dict)


def _decode(blocks: list[_Block], x: np.ndarray, base: np.ndarray) -> np.ndarray:
    out = base.copy()
    for b in blocks:
        out[b.stations] = b.qlo + b.var.levels(x[None, :])[0]
    return out


def repair_feeders(
    inst: RTPInstance, levels: np.ndarray, hi: np.ndarray, table: np.ndarray, demand: np.ndarray
) -> np.ndarray:
    """Greedy: while a bus row is violated, raise by one level the station at that bus with the least cost
    increase per kW removed."""
    levels = levels.copy()
    rows = np.arange(inst.n_stations)
    for _ in range(inst.n_stations * (inst.levels + 1)):
        over = evaluate(inst, levels)["bus_over_kw"]
        bad = np.flatnonzero(over > 1e-6 * np.maximum(inst.bus_cap_effective(), 1.0))
        if bad.size == 0:
            break
        cand = np.isin(inst.bus, bad) & (levels < hi)
        if not cand.any():
            break
        up = np.minimum(levels + 1, inst.levels)
        dd = demand[rows, levels] - demand[rows, up]
        df = table[rows, up] - table[rows, levels]
        score = np.where(cand & (dd > 1e-12), df / np.where(dd > 1e-12, dd, 1.0), np.inf)
        i = int(np.argmin(score))
        if not np.isfinite(score[i]):
            break
        levels[i] += 1
    return levels


def solve(
    inst: RTPInstance,
    *,
    sampler: str = "sa",
    num_reads: int = 4,
    num_sweeps: int = 100,
    seed: int | None = None,
    al_rounds: int = 6,
    repair: bool = True,
    tie_nudge: float = 1e-4,
    **sampler_params: Any,
) -> RTPSolution:
    """Clear one interval: LP duals → separable QUBO → sample (decomposed per station) → AL rounds → repair."""
    t0 = time.perf_counter()
    lo, hi, cap_short, ramp_broken = inst.windows()
    demand = inst.demand_table()
    table = inst.cost_table(demand)
    kb = inst.base_level
    target = inst.flat_target(lo, hi)
    # levels in [lo, kb] share kb's demand and cost; a window at or below kb, or a station without responsive
    # demand, is flat: it gets the tie-break level and no variables
    flat = (hi <= kb) | (inst.d0_kw <= 0) | (inst.elasticity <= 0)
    qlo = np.where(flat, target, np.maximum(lo, kb))
    hi = np.where(flat, target, hi)
    lam, lp_s = _bus_multipliers(inst, table, demand, qlo, hi, tie_nudge)
    base = samplers.get(sampler)
    accepted = base.parameters
    rng = np.random.default_rng(seed)
    sample_s = 0.0
    best: tuple[float, np.ndarray] | None = None
    last = qlo.copy()
    n_vars = n_int = 0
    fit_err = 0.0
    rounds = 0
    span = np.where(
        hi > qlo, np.abs(table[np.arange(inst.n_stations), hi] - table[np.arange(inst.n_stations), qlo]), 0.0
    )
    for rounds in range(1, max(al_rounds, 1) + 1):
        model, blocks, err = build_qubo(inst, qlo, hi, lam, table, demand)
        fit_err = max(fit_err, err)
        if model.n_vars == 0:
            levels = qlo.copy()
        else:
            bqm = model.to_bqm()
            n_vars, n_int = model.n_vars, bqm.num_interactions
            params = samplers.read_params(sampler, base, num_reads, num_sweeps, sampler_params)
            _seed_and_temperatures(params, sampler, "seed" in accepted, rng, bqm, table, span)
            levels, secs = _sample_levels(base, bqm, params, blocks, model.n_vars, qlo)
            sample_s += secs
        ev = evaluate(inst, levels)
        last = levels
        if ev["bus_violations"] == 0:
            if best is None or ev["objective_usd"] < best[0]:
                best = (ev["objective_usd"], levels)
            break
        # augmented-Lagrangian step on the violated rows: enough to price the overshoot out
        lam = lam + _al_bump(inst, ev["bus_over_kw"], lam, rounds)
    final, ann_levels, ann_obj, annealer_feasible, repaired = _final_levels(
        inst, best, last, repair, (lo, qlo, hi, kb, target), table, demand
    )
    ev = evaluate(inst, final)
    return RTPSolution(
        final,
        ev["objective_usd"],
        ann_levels,
        ann_obj,
        annealer_feasible,
        repaired,
        ev["bus_violations"],
        n_vars,
        n_int,
        time.perf_counter() - t0,
        sample_s,
        rounds,
        fit_err,
        int(cap_short.sum()),
        int(ramp_broken.sum()),
        {"lp_s": lp_s, "bus_lambda_usd_per_kw": lam},
    )


def _bus_multipliers(
    inst: RTPInstance, table: np.ndarray, demand: np.ndarray, qlo: np.ndarray, hi: np.ndarray, tie_nudge: float
) -> tuple[np.ndarray, float]:
    """The bus rows' starting multipliers [$ per kW of Δt·D] from the LP relaxation (zeros when no station is on
    a capped bus), and the LP time [s]."""
    coupled = np.size(inst.bus_cap_kw) > 0 and bool(np.any(inst.bus >= 0))
    lam = np.zeros(np.size(inst.bus_cap_kw))
    lp_s = 0.0
    if coupled:
        _, _, lam, lp_s, _ = _one_hot(inst, table, demand, qlo, hi, integral=False)
        # $/kW over the interval → multiplier on Δt·D; nudged up so that stations indifferent at the exact dual
        # (the LP mixes two of their levels) break the tie toward the feasible side of the row
        lam = lam / inst.dt_h * (1.0 + tie_nudge)
    return lam, lp_s


def _seed_and_temperatures(
    params: dict[str, Any],
    sampler: str,
    takes_seed: bool,
    rng: np.random.Generator,
    bqm: Any,
    table: np.ndarray,
    span: np.ndarray,
) -> None:
    """Add a seed from ``rng`` and (SA) a temperature range from the cost table's steps [$] to ``params``, unless
    the caller set them."""
    if takes_seed:
        params.setdefault("seed", int(rng.integers(2**31 - 1)))
    if sampler == "sa":
        steps = np.abs(np.diff(table, axis=1))
        small = steps[steps > 1e-12]
        cold = float(np.quantile(small, 0.02)) * 0.1 if small.size else 1e-6
        hot = float(span.max()) if span.max() > 0 else 1.0
        params.setdefault("beta_range", composites.beta_range(bqm, hot_energy=hot, cold_energy=cold))


def _sample_levels(
    base: Any, bqm: Any, params: dict[str, Any], blocks: list[_Block], n_vars: int, qlo: np.ndarray
) -> tuple[np.ndarray, float]:
    """Sample the QUBO decomposed per station and decode the first read to levels; also the sampling time [s]."""
    comps = [c for b in blocks for c in b.var.index.reshape(b.stations.size, -1)]
    ts = time.perf_counter()
    ss = composites.DecomposedSampler(base).sample(bqm, components=comps, **params)
    secs = time.perf_counter() - ts
    x = composites.samples_matrix(ss, n_vars)[0]
    levels = _decode(blocks, x, qlo)
    return levels, secs


def _al_bump(inst: RTPInstance, over: np.ndarray, lam: np.ndarray, rounds: int) -> np.ndarray:
    """Augmented-Lagrangian step [$/kW] on the bus rows overshot by ``over`` [kW]: enough to price it out."""
    bump = np.where(over > 0, (np.abs(lam) + 0.5 * inst.cost_usd_per_kwh + 1e-3) * 2.0 ** (rounds - 1) * 0.25, 0.0)
    return bump


def _final_levels(
    inst: RTPInstance,
    best: tuple[float, np.ndarray] | None,
    last: np.ndarray,
    repair: bool,
    window: tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray],
    table: np.ndarray,
    demand: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float, bool, bool]:
    """The annealer's levels (best feasible round, else the last), repaired if allowed and still infeasible, with
    the base-level tie-break toward users.

    Returns:
        Final levels, the annealer's levels, their objective [$], whether the annealer was feasible, and whether
        the final levels were repaired.
    """
    lo, qlo, hi, kb, target = window
    annealer_feasible = best is not None
    ann_levels = best[1] if best is not None else last
    ann_obj = evaluate(inst, ann_levels)["objective_usd"]
    final = ann_levels
    repaired = False
    if not annealer_feasible and repair:
        final = repair_feeders(inst, ann_levels, hi, table, demand)
        repaired = True
    # tie-break toward users: a read at the base level moves down to the window's lowest level (same demand, cost)
    at_base = (final == qlo) & (qlo == kb) & (lo < kb)
    final = np.where(at_base, target, final)
    ann_levels = np.where((ann_levels == qlo) & (qlo == kb) & (lo < kb), target, ann_levels)
    return final, ann_levels, ann_obj, annealer_feasible, repaired


def gap(objective: float, ref: float) -> float:
    """Relative gap ``(objective − ref)/|ref|`` (0 when both are 0)."""
    return float((objective - ref) / abs(ref)) if ref else 0.0
