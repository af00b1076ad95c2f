"""The DSO level of ``000_…`` (eqs. 6–8): dispatch DGs, PV, wind and the T–D interface as a QUBO, and exactly.

Given the EVA schedule as load, the DSO chooses per slot ``t`` the active power ``P[t,u]`` of each dispatchable
unit ``u`` (DGs, PV, wind; renewables are curtailable down from their forecast) and the reactive power ``Q[t,g]``
of each DG. All are integer levels on ``bits`` bits (``P = n · P̄/K``, ``Q = m · Q̄/K``, ``K = 2^bits − 1``), so
the generator limits (Penalty 12–13) hold by construction of the encoding.

**Power balance (Penalty 8) by substitution.** The T–D interface is the feeder's slack bus: it supplies what the
units do not, ``P_TD = D − Σ_u P_u`` and ``Q_TD = D_Q − Σ_g Q_g`` (``D`` = load + EV + losses estimate from the
last AC power flow). The balance is therefore exact for every bit pattern; what remains of Penalty 8 is the
interface's range, ``D − S̄_TD ≤ Σ_u P_u ≤ D`` (no reverse flow, substation rating), penalised as a row. Keeping
``P_TD`` as bits with a penalised equality (the paper's literal form) makes the annealer unable to move power
between units (every move must flip interface bits at the same time) — the same trap the issue describes for the
EVA energy row.

**Rows** (each ``lo ≤ a·x ≤ hi`` in MW-equivalents, penalised as ``w · (a·x − s − lo)²`` with a slack ``s`` on
``slack_bits`` bits of step ``(hi − lo)/(2^slack_bits − 1)``):

* ``td`` — interface range (above);
* ``pf`` — T–D power factor ≥ ``pf_min`` (Penalty 11): ``|Q_TD| ≤ tan(acos pf_min) · P_TD``, i.e.
  ``D_Q − tanφ·D ≤ Σ Q_g − tanφ Σ P_u ≤ D_Q + tanφ·D`` (the paper's 0.484 is tanφ at 0.9);
* ``v`` — voltage floor at the weakest bus of the last AC power flow (Penalty 9–10), linearised with numerical
  sensitivities ``∂V/∂P_u``, ``∂V/∂Q_g`` [pu/MW]: ``V0 + Σ s_u (P_u − P0_u) + Σ s_g (Q_g − Q0_g) ≥ V̲``,
  divided by the largest sensitivity so its residual is in MW. Only slots whose last voltage was within
  ``v_margin`` of the floor carry the row (the others are disabled: ``lo = −∞``).

**Objective** (eq. 6, in $ over the horizon): ``Σ_t Δt [Σ_u α_u P_u + Σ_g αQ_g Q_g + λTD_t P_TD + LQ_t Q_TD]``
— DG energy at its cost, renewables free, the interface at the substation's price for active and reactive energy.
The paper writes the interface term as ``Γ (P^TDfx − P^TDg)`` (a credit against a fixed contracted draw that it
never states); we price the drawn energy itself, which is the physically sound reading and keeps the DSO cost
comparable to the EVA's. The objective is linear in the levels; constant parts are kept in the cost.

**How the QUBO is solved** (:func:`solve`; the eva level's techniques, adapted — :func:`build_bqm` keeps the plain
binary formulation with one slack per row for comparison; it lands 2–9 % above the reference at 8 bits):

1. *Unary levels on coarse-to-fine windows* (:func:`build_window_bqm`, eva's ``_grids`` schedule): the whole range
   on ≤ 15 steps, then windows of ± the previous step on 4× finer grids, then a ± ``polish_radius`` window at
   single levels. The objective is linear, so eva's domain-wall chain reduces to plain unary bits (every pattern
   already has its level's exact energy); a one-level move is one flip.
2. *Lazy rows.* Rows the LP relaxation binds start active; the others join when a read breaks them (cutting
   planes). A row every assignment of the window meets carries no penalty.
3. *Slack bits matched to the moves* (:func:`_slack_sizes`): a unary slack with bits of exactly each unit's
   one-level activity change, so moving along a binding row is two flips, not a carry through binary slack bits.
   The slack is anchored at the binding bound. A row the window cannot meet is priced linearly at the reference's
   elastic price (exact: its residual keeps one sign).
4. *LP-dual multipliers* on every row (augmented Lagrangian ``λ·r + w·r²``), as the paper's "penalty factors
   derived from Lagrangian multipliers"; the LP relaxation's rounded point centres the first window (the reads
   are still the annealer's; ``warm_start = False`` anneals from the coarse stage only).
5. *Decomposition by slot* (:class:`~markets.qubo.composites.DecomposedSampler`), each slot's block scaled to unit
   largest coefficient so that one explicit ``beta_range`` fits slots whose energy scales differ by 10⁴; per slot
   the best read over stages and reads (fewest violated rows, least violation, then cheapest) is kept.

**Exact reference**: the same integer levels and rows in HiGHS (MILP, rows hard, elastic slack at a large price
so infeasible slots still return the least-violating dispatch), :func:`reference`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from markets.qubo import composites, highs, samplers
from markets.qubo.dso_bqm import ROWS, _elastic_price, build_bqm, build_window_bqm

__all__ = ["DSOInstance", "DSODispatch", "build_bqm", "solve", "reference", "evaluate", "ROWS"]


@dataclass(frozen=True)
class DSOInstance:
    """The DSO problem over ``T`` slots with ``U`` active units (the first ``G`` are DGs with reactive output).

    Powers in MW/MVAr, prices in $/MWh and $/MVArh, voltages in pu, sensitivities in pu/MW and pu/MVAr.
    """

    demand_mw: np.ndarray  # (T,) active power the feeder must be supplied with (load + EV + losses)
    demand_q_mvar: np.ndarray  # (T,)
    p_max_mw: np.ndarray  # (T, U) available output per unit and slot
    cost_usd_per_mwh: np.ndarray  # (U,)
    q_max_mvar: np.ndarray  # (G,) reactive capability of each DG (injection, ≥ 0)
    q_cost_usd_per_mvarh: np.ndarray  # (G,)
    td_price_usd_per_mwh: np.ndarray  # (T,)
    td_q_price_usd_per_mvarh: np.ndarray  # (T,)
    s_td_max_mva: float
    dt_h: float
    bits: int = 8
    pf_min: float = 0.9
    v_min_pu: float = 0.95
    v0_pu: np.ndarray | None = None  # (T,) watched-bus voltage at the linearisation point
    v_sens_p: np.ndarray | None = None  # (T, U) ∂V/∂P_u [pu/MW]
    v_sens_q: np.ndarray | None = None  # (T, G) ∂V/∂Q_g [pu/MVAr]
    p0_mw: np.ndarray | None = None  # (T, U) linearisation point
    q0_mvar: np.ndarray | None = None  # (T, G)
    v_active: np.ndarray | None = None  # (T,) bool: slot carries the voltage row

    def __post_init__(self) -> None:
        t, u = np.shape(self.p_max_mw)
        g = len(self.q_max_mvar)
        if g > u:
            raise ValueError(f"q_max_mvar: at most {u} DGs (one per active unit), got {g}")
        for name, shape in (
            ("demand_mw", (t,)),
            ("demand_q_mvar", (t,)),
            ("cost_usd_per_mwh", (u,)),
            ("q_cost_usd_per_mvarh", (g,)),
            ("td_price_usd_per_mwh", (t,)),
            ("td_q_price_usd_per_mvarh", (t,)),
        ):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"{name}: needs shape {shape}, got {np.shape(getattr(self, name))}")
        if not 1 <= self.bits <= 12:
            raise ValueError(f"bits: must be in [1, 12], got {self.bits}")
        if np.any(np.asarray(self.p_max_mw) < 0) or np.any(np.asarray(self.q_max_mvar) < 0):
            raise ValueError("p_max_mw/q_max_mvar: must be >= 0")
        if not 0 < self.pf_min <= 1:
            raise ValueError(f"pf_min: must be in (0, 1], got {self.pf_min}")

    @property
    def n_slots(self) -> int:
        return int(np.shape(self.p_max_mw)[0])

    @property
    def n_units(self) -> int:
        return int(np.shape(self.p_max_mw)[1])

    @property
    def n_dgs(self) -> int:
        return len(self.q_max_mvar)

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    @property
    def steps(self) -> np.ndarray:
        """Power per level of every integer of a slot, ``(T, U + G)`` [MW or MVAr]."""
        t = self.n_slots
        return (
            np.hstack([np.asarray(self.p_max_mw, float), np.broadcast_to(self.q_max_mvar, (t, self.n_dgs))])
            / self.levels
        )

    def level_cost(self) -> np.ndarray:
        """Cost of one level of each integer per slot, ``(T, U + G)`` [$], interface displacement included."""
        cp = self.cost_usd_per_mwh[None, :] - self.td_price_usd_per_mwh[:, None]
        cq = self.q_cost_usd_per_mvarh[None, :] - self.td_q_price_usd_per_mvarh[:, None]
        return self.dt_h * np.hstack([cp, cq]) * self.steps

    def constant_cost(self) -> float:
        """Cost [$] of the all-zero dispatch (everything from the interface)."""
        return float(
            self.dt_h
            * np.sum(self.td_price_usd_per_mwh * self.demand_mw + self.td_q_price_usd_per_mvarh * self.demand_q_mvar)
        )

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row coefficients per level ``a[t, r, v]`` [MW-equivalent per level] and bounds ``lo, hi`` ``(T, R)``.

        Disabled rows have ``lo = −inf``; ``hi`` is capped at the largest attainable activity.
        """
        t, u, g = self.n_slots, self.n_units, self.n_dgs
        steps = self.steps
        tanphi = float(np.tan(np.arccos(self.pf_min)))
        a = np.zeros((t, len(ROWS), u + g))
        lo = np.full((t, len(ROWS)), -np.inf)
        hi = np.full((t, len(ROWS)), np.inf)
        d, dq = np.asarray(self.demand_mw, float), np.asarray(self.demand_q_mvar, float)
        a[:, 0, :u] = steps[:, :u]
        lo[:, 0], hi[:, 0] = d - self.s_td_max_mva, d
        a[:, 1, :u] = -tanphi * steps[:, :u]
        a[:, 1, u:] = steps[:, u:]
        lo[:, 1], hi[:, 1] = dq - tanphi * d, dq + tanphi * d
        if self.v_sens_p is not None and self.v_active is not None and np.any(self.v_active):
            sens = np.hstack([np.asarray(self.v_sens_p, float), np.asarray(self.v_sens_q, float)])  # (T, U+G)
            # no dispatchable unit (a network without DGs/renewables): the row has no coefficients, scale 1
            scale = np.maximum(np.abs(sens).max(axis=1), 1e-9) if sens.shape[1] else np.ones(len(sens))
            a[:, 2, :] = sens * steps / scale[:, None]
            x0 = np.hstack([np.asarray(self.p0_mw, float), np.asarray(self.q0_mvar, float)])
            need = (self.v_min_pu - np.asarray(self.v0_pu, float) + (sens * x0).sum(axis=1)) / scale
            lo[:, 2] = np.where(self.v_active, need, -np.inf)
        amax = np.maximum(a, 0).sum(axis=2) * self.levels
        amin = np.minimum(a, 0).sum(axis=2) * self.levels
        hi = np.minimum(hi, amax)
        lo = np.where(lo <= amin, -np.inf, lo)  # a row every assignment meets carries no penalty
        # an unattainable floor (lo > largest activity) becomes "as close as possible": an equality at lo
        hi = np.where(np.isfinite(lo), np.maximum(hi, lo), hi)
        return a, lo, hi


@dataclass
class DSODispatch:
    """A dispatch (decoded QUBO read or reference) with its cost and row violations.

    ``p_mw`` (T, U), ``q_mvar`` (T, G), interface ``p_td_mw``/``q_td_mvar`` (T,), ``cost_usd`` the objective,
    ``violation`` (T, R) the distance of each row to its range [MW-equivalent], ``n_violations`` the number of
    violated rows (tolerance 1e-6).
    """

    p_mw: np.ndarray
    q_mvar: np.ndarray
    p_td_mw: np.ndarray
    q_td_mvar: np.ndarray
    cost_usd: float
    violation: np.ndarray
    n_violations: int
    levels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def evaluate(inst: DSOInstance, levels: np.ndarray) -> DSODispatch:
    """Decode integer levels ``(T, U + G)`` into a dispatch; cost and row violations are exact (no slack)."""
    lv = np.asarray(levels, dtype=np.int64)
    u = inst.n_units
    x = lv * inst.steps
    p, q = x[:, :u], x[:, u:]
    cost = inst.constant_cost() + float(np.sum(inst.level_cost() * lv))
    a, lo, hi = inst.rows()
    act = np.einsum("trv,tv->tr", a, lv.astype(float))
    viol = np.maximum(np.where(np.isfinite(lo), lo - act, 0.0), 0.0) + np.maximum(act - hi, 0.0)
    return DSODispatch(
        p,
        q,
        inst.demand_mw - p.sum(axis=1),
        inst.demand_q_mvar - q.sum(axis=1),
        cost,
        viol,
        int((viol > 1e-6).sum()),
        lv,
    )


def solve(
    inst: DSOInstance,
    *,
    sampler: str = "sa",
    num_reads: int = 32,
    num_sweeps: int = 500,
    seed: int | None = None,
    weight_factor: float = 2.0,
    calibrate: bool = True,
    coarse_levels: int = 15,
    shrink: int = 4,
    passes: int = 3,
    cold_factor: float = 0.05,
    normalise: bool = True,
    polish_radius: int = 2,
    warm_start: bool = True,
    **sampler_params: Any,
) -> DSODispatch:
    """Solve the DSO level by annealing on ever finer grids (as :func:`markets.qubo.eva.solve`), decomposed by slot.

    Stage 1 covers every level's whole range on ``coarse_levels`` steps; each later stage is a window of ± the
    previous step around the current dispatch on a ``shrink`` times finer grid, repeated (up to ``passes``
    times) while it changes the dispatch, down to single levels (the stage grid is eva's ``_grids``). Every stage
    is the unary window QUBO of :func:`build_window_bqm` sampled through
    :class:`~markets.qubo.composites.DecomposedSampler`; ``calibrate`` takes the rows' multipliers from the LP
    relaxation (HiGHS, a few ms): the paper's "penalty factors derived from Lagrangian multipliers". The SA
    temperature range comes from the price scales: at the start a move of a quarter of a window of the largest
    coefficient is accepted half the time, at the end ``cold_factor`` × the cheapest single-level move 1 %
    (relative to each slot's block scale when ``normalise``).

    Per slot, the dispatch returned is the best decoded read over all stages and reads (fewest violated rows,
    least violation, then cheapest), scored exactly by :func:`evaluate` — annealing results, no classical repair.
    ``info`` carries the QUBO size (largest stage), sampling time, the beta range of the last stage and the
    stage log. Block energies are normalised (``normalise``), so no QUBO energy in $ is reported.
    """
    from markets.qubo.eva import _grids  # the same coarse-to-fine schedule as the EVA level

    t0 = time.perf_counter()
    lp, duals, active, side = _lp_start(inst, calibrate, coarse_levels, shrink)
    base = samplers.get(sampler)
    params = samplers.read_params(sampler, base, num_reads, num_sweeps, sampler_params)
    rng = np.random.default_rng(seed)
    t, nv = inst.n_slots, inst.n_units + inst.n_dgs
    k = inst.levels
    lc = np.abs(inst.level_cost())
    x = np.zeros((t, nv), np.int64)
    best_lv = np.zeros((t, nv), np.int64)
    best_key = np.full((t, 3), np.inf)
    stats: list[dict[str, Any]] = []
    br: Any = None
    stages = _grids(k, coarse_levels, shrink) + [(1, polish_radius)] * (polish_radius > 0)
    for stage, (step, radius) in enumerate(stages):
        if stage == 1 and warm_start:
            x = lp.levels  # centre the windows on the rounded LP relaxation (the reads stay the annealer's)
        for _rep in range(passes):
            lo, width = _window(x, step, radius, k)
            bqm, lay = build_window_bqm(
                inst, lo, step, width, duals, weight_factor, active, side=side, normalise=normalise
            )
            p = dict(params)
            if "seed" in base.parameters and seed is not None:
                p["seed"] = int(rng.integers(2**31 - 1))
            if sampler == "sa" and "beta_range" not in sampler_params:
                p["beta_range"] = _sa_beta_range(bqm, lay, lc, step, width, cold_factor, normalise)
            cand, secs = _sample_decoded(base, bqm, lay, p, lo, step, k)  # (R, T, nv): every read, decoded
            pick, best_lv, best_key = _keep_best_reads(inst, cand, best_lv, best_key)
            ev, newly, side = _activate_broken_rows(inst, pick, active, side)
            active |= newly
            stats.append(_stage_record(stage, step, width, bqm, secs, ev, active))
            br = p.get("beta_range")
            changed = bool(newly.any()) or (radius > 0 and not np.array_equal(best_lv, x))
            x = best_lv.copy()
            if not changed:
                break
    out = evaluate(inst, best_lv)
    out.info.update(_solve_info(stats, br, sampler, t0))
    return out


def _lp_start(
    inst: DSOInstance, calibrate: bool, coarse_levels: int, shrink: int
) -> tuple[DSODispatch, np.ndarray | None, np.ndarray, np.ndarray]:
    """Check the schedule settings and solve the LP relaxation :func:`solve` starts from.

    Returns:
        The LP relaxation, the row multipliers (None unless ``calibrate``), the rows active from the start
        (T, rows) and their broken side (all 0).
    """
    if not 1 <= coarse_levels <= 64:
        raise ValueError(f"coarse_levels: must be in [1, 64], got {coarse_levels}")
    if shrink < 2:
        raise ValueError(f"shrink: must be >= 2, got {shrink}")
    lp = reference(inst, integral=False)
    duals = lp.info["duals"] if calibrate else None
    # rows the LP relaxation binds (or violates) start active; the rest join when a read violates them
    active = (np.abs(lp.info["duals"]) > 1e-9) | (lp.violation > 1e-9)
    side = np.zeros(active.shape, np.int64)  # +1: a read broke the row's upper bound
    return lp, duals, active, side


def _window(x: np.ndarray, step: int, radius: int, k: int) -> tuple[np.ndarray, int]:
    """A stage's window: lowest level (T, nv) and width in steps of ``step`` levels, ± ``radius`` levels around
    ``x`` (the whole range [0, ``k``] when ``radius`` is 0)."""
    t, nv = x.shape
    if radius == 0:
        lo, width = np.zeros((t, nv), np.int64), -(-k // step)
    else:
        width = 2 * (radius // step)
        lo = np.clip(x - (width // 2) * step, 0, max(k - width * step, 0))
    return lo, width


def _stage_record(
    stage: int, step: int, width: int, bqm: Any, secs: float, ev: DSODispatch, active: np.ndarray
) -> dict[str, Any]:
    """One line of the stage log in ``info['stages']``."""
    return {
        "stage": stage,
        "step": step,
        "width": width,
        "n_vars": int(bqm.num_variables),
        "n_interactions": int(bqm.num_interactions),
        "sample_s": secs,
        "cost_usd": ev.cost_usd,
        "violations": ev.n_violations,
        "active_rows": int(active.sum()),
    }


def _solve_info(stats: list[dict[str, Any]], br: Any, sampler: str, t0: float) -> dict[str, Any]:
    """:func:`solve`'s ``info``: the largest stage's QUBO size, total sampling time [s], wall time since ``t0``."""
    return {
        "n_vars": max((st["n_vars"] for st in stats), default=0),
        "n_interactions": max((st["n_interactions"] for st in stats), default=0),
        "sample_s": sum(st["sample_s"] for st in stats),
        "wall_s": time.perf_counter() - t0,
        "beta_range": br,
        "sampler": sampler,
        "stages": stats,
    }


def _sa_beta_range(
    bqm: Any, lay: dict[str, Any], lc: np.ndarray, step: int, width: int, cold_factor: float, normalise: bool
) -> tuple[float, float]:
    """The SA temperature range of one stage from the price scales ``lc`` = |level cost| [$ per level] (see
    :func:`solve`)."""
    nz = lc[lc > 1e-9]
    if normalise and lay["n_vars"]:
        # every block's largest coefficient is 1; the finest cost move of a slot is relative to it
        rel = np.where(lc > 1e-9, lc, np.inf).min(axis=1) / lay["block_scale"]
        hot, cold = 0.5 * max(width, 1) / 4, cold_factor * float(rel[np.isfinite(rel)].min(initial=1e-3))
    else:
        hot = float(lc.max(initial=1.0)) * step * max(width, 1) / 4 if nz.size else 1.0
        cold = cold_factor * float(nz.min()) if nz.size else 1e-3
    return composites.beta_range(bqm, hot_energy=max(hot, 1e-6), cold_energy=max(cold, 1e-12))


def _sample_decoded(
    base: Any, bqm: Any, lay: dict[str, Any], p: dict[str, Any], lo: np.ndarray, step: int, k: int
) -> tuple[np.ndarray, float]:
    """Sample one stage's window QUBO and decode every read to levels (R, T, nv); also the sampling time [s]."""
    t, nv = lo.shape
    ts = time.perf_counter()
    if lay["n_vars"] == 0:
        xs = np.zeros((1, 0), np.int8)
    else:
        ss = composites.DecomposedSampler(base).sample(bqm, components=lay["components"], **p)
        xs = composites.samples_matrix(ss, lay["n_vars"])
    secs = time.perf_counter() - ts
    cnt = (
        np.stack(
            [np.bincount(lay["owner"], weights=xr[lay["level_bits"]].astype(float), minlength=t * nv) for xr in xs]
        )
        .reshape(-1, t, nv)
        .astype(np.int64)
    )
    return np.minimum(lo[None] + step * cnt, k), secs


def _keep_best_reads(
    inst: DSOInstance, cand: np.ndarray, best_lv: np.ndarray, best_key: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slot, the best decoded read of ``cand`` (R, T, nv) and the best levels and keys so far.

    Returns:
        This stage's pick (T, nv), and the updated ``best_lv`` (T, nv) and ``best_key`` (T, 3).
    """
    t = inst.n_slots
    # the slots are independent: keep, per slot, the best read so far (fewest violated rows, least
    # violation, then cheapest) — a choice among the annealer's reads by the exact objective
    key = _slot_keys(inst, cand)  # (R, T, 3)
    order = np.lexsort((key[..., 2], key[..., 1], key[..., 0]), axis=0)[0]  # (T,)
    pick = cand[order, np.arange(t)]
    pkey = key[order, np.arange(t)]
    better = np.array([tuple(pkey[j]) < tuple(best_key[j]) for j in range(t)])
    best_lv = np.where(better[:, None], pick, best_lv)
    best_key = np.where(better[:, None], pkey, best_key)
    return pick, best_lv, best_key


def _activate_broken_rows(
    inst: DSOInstance, pick: np.ndarray, active: np.ndarray, side: np.ndarray
) -> tuple[DSODispatch, np.ndarray, np.ndarray]:
    """Score ``pick`` exactly and find the rows it breaks that are not active yet, with the side they broke.

    Returns:
        The evaluated pick, the newly broken rows (T, rows) and the updated ``side`` (+1 upper, -1 lower bound).
    """
    ev = evaluate(inst, pick)
    newly = (ev.violation > 1e-6) & ~active
    a_, lo_, hi_ = inst.rows()
    above = np.einsum("trv,tv->tr", a_, pick.astype(float)) > hi_
    side = np.where(newly, np.where(above, 1, -1), side)
    return ev, newly, side


def _slot_keys(inst: DSOInstance, levels: np.ndarray) -> np.ndarray:
    """Per read and slot: (violated rows, total violation [MW-eq], cost [$]) of levels ``(R, T, U + G)``."""
    a, lo, hi = inst.rows()
    act = np.einsum("trv,ktv->ktr", a, levels.astype(float))
    viol = np.maximum(np.where(np.isfinite(lo), lo - act, 0.0), 0.0) + np.maximum(act - hi, 0.0)
    cost = (inst.level_cost()[None] * levels).sum(axis=2)
    return np.stack([(viol > 1e-6).sum(axis=2).astype(float), viol.sum(axis=2), cost], axis=2)


def _lp_duals(inst: DSOInstance) -> np.ndarray:
    """Row duals ``(T, R)`` of the LP relaxation (0 for rows without bounds)."""
    return reference(inst, integral=False).info["duals"]


def reference(
    inst: DSOInstance, elastic_usd_per_mw: float | None = None, integral: bool = True, time_limit_s: float = 10.0
) -> DSODispatch:
    """HiGHS optimum of the same discretised problem (integer levels, rows hard; elastic row slack priced at
    ``elastic_usd_per_mw``, default 1e3 × the largest level price per MW, so an infeasible slot still yields the
    least-violating dispatch). ``info['milp_s']`` is HiGHS's wall time; after ``time_limit_s`` the incumbent is
    returned with ``info['optimal'] = False`` (HiGHS can need minutes on 8-bit levels with unattainable rows)."""
    t, nv = inst.n_slots, inst.n_units + inst.n_dgs
    a, lo, hi = inst.rows()
    cost = inst.level_cost().reshape(-1)
    big = elastic_usd_per_mw if elastic_usd_per_mw is not None else _elastic_price(inst)
    rows_t, rows_r = np.nonzero(np.isfinite(lo) | np.isfinite(hi))
    n_row = len(rows_t)
    n_lvl = t * nv
    # columns: levels, then per row an elastic e+ (below lo) and e− (above hi)
    n_col = n_lvl + 2 * n_row
    r_idx = np.repeat(np.arange(n_row), nv)
    c_idx = (rows_t[:, None] * nv + np.arange(nv)[None, :]).reshape(-1)
    vals = a[rows_t, rows_r].reshape(-1)
    r_idx = np.concatenate([r_idx, np.arange(n_row), np.arange(n_row)])
    c_idx = np.concatenate([c_idx, n_lvl + np.arange(n_row), n_lvl + n_row + np.arange(n_row)])
    vals = np.concatenate([vals, np.ones(n_row), -np.ones(n_row)])
    am = sp.csc_matrix((vals, (r_idx, c_idx)), shape=(n_row, n_col))
    lo_r, hi_r = lo[rows_t, rows_r], hi[rows_t, rows_r]
    h, secs = highs.run(
        np.concatenate([cost, np.full(2 * n_row, big)]),
        0.0,
        np.concatenate([np.full(n_lvl, float(inst.levels)), np.full(2 * n_row, np.inf)]),
        am,
        lo_r,
        hi_r,
        integer=integral and np.arange(n_col) < n_lvl,
        mip_rel_gap=1e-6,
        time_limit=float(time_limit_s),
    )
    status = h.getModelStatus()
    optimal = status == highspy.HighsModelStatus.kOptimal
    if not optimal and not (status == highspy.HighsModelStatus.kTimeLimit and h.getSolution().value_valid):
        raise RuntimeError(f"DSO reference: HiGHS status {h.modelStatusToString(status)}")
    col = np.asarray(h.getSolution().col_value)
    duals = np.zeros((t, len(ROWS)))
    if not integral:
        duals[rows_t, rows_r] = np.asarray(h.getSolution().row_dual)
    levels = np.rint(col[:n_lvl]).astype(np.int64).reshape(t, nv)
    out = evaluate(inst, levels)
    out.info.update(
        {
            "milp_s": secs,
            "duals": duals,
            "optimal": optimal,
            "objective_usd": float(h.getInfo().objective_function_value) + inst.constant_cost(),
        }
    )
    return out
