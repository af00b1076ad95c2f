"""The EVA level of ``000_…`` (eqs. 2–5): cluster P/Q schedules against DLMPs, as a QUBO and exactly.

The discretised problem (``K = 2^bits − 1`` levels; cluster ``c``, slot ``t``, slot length ``Δt`` hours)::

    P[c,t] = n[c,t] · P̄[c]/K,            n ∈ {0, …, K}
    Q[c,t] = −Q̄[c] + m[c,t] · 2Q̄[c]/K,    m ∈ {0, …, K}           (reactive; else Q = 0)
    min  Σ Δt · (λP[c,t]·P[c,t] + λQ[c,t]·Q[c,t])                  [$; λ in $/MWh, $/MVArh]
    s.t. E̲[c] ≤ Σ_t P[c,t]·Δt ≤ Ē[c]                              (energy window, eq. 3)
         P[c,t]² + Q[c,t]² ≤ S[c]²                                 (apparent power, eq. 3)

Q is in load convention (positive absorbs); with λQ > 0 the EVA earns by injecting (Q < 0) up to what the
apparent-power limit leaves.

**How the QUBO is made good** (the direct reading — P and Q bits over all clusters at once, both constraints as
slack penalties with one large weight — lands 45–130 % above the optimum; see the issue):

1. *Q is eliminated exactly.* ``Q[c,t]`` enters only slot ``(c,t)``'s cost and apparent-power row, so its best
   level given ``n`` is known in closed form (the most injecting feasible level when λQ > 0). The slot's cost is
   then a function ``f[c,t](n)`` of the P level only, and the apparent-power limit holds by construction.
2. *Domain-wall encoding.* A slot's level is the position of the wall in a chain of ordered bits; bit ``j`` costs
   the increment ``f(j+1) − f(j)`` and a chain penalty keeps the bits ordered. The QUBO energy of a valid
   pattern is then ``f`` exactly (binary bits can only carry a quadratic fit of ``f``, whose error — the Q grid
   makes ``f`` a staircase — exceeds the price differences the schedule turns on), and moving a slot by one
   level is a single flip, so annealing can move energy between slots without crossing a penalty wall.
3. *Multi-resolution.* At 8 bits a chain per slot would be 255 bits long; instead the whole range is annealed on
   a coarse grid (15 steps), then windows of ± one coarse step around that schedule on ever finer grids, each a
   small domain-wall QUBO (:func:`solve`).
4. *Decomposition.* The EVA level separates by cluster; each cluster's block is sampled in the same call and the
   best read of each block is recombined (:class:`~markets.qubo.composites.DecomposedSampler`).
5. *Penalty calibration from LP duals* (the paper's "penalty factors derived from Lagrangian multipliers"). The
   energy row is penalised as an augmented Lagrangian ``λ·r + w·r²``; ``λ`` is the dual of the energy row in the
   LP relaxation of the one-hot formulation (HiGHS), so moving energy between slots costs only the price
   difference, not a penalty wall, and ``w`` need only be a fraction of the slot price spread.
6. *Contiguity* (optional, ``switch_usd``): a switching term — ``w_c`` per interruption of a cluster's schedule,
   exactly quadratic in the on-indicators, which are single bits of the domain walls
   (:mod:`markets.qubo.contiguity`); the exact reference then carries the same term.
7. *Sampler settings.* The annealing range comes from the problem's price scales
   (:func:`~markets.qubo.composites.beta_range`), not the sampler's default.

:func:`build_qubo` keeps the plain binary formulation (fitted costs, slack bits) for comparison and for tiny
exact checks.

The exact reference is the one-hot MILP of the same discretised problem in HiGHS (:func:`reference`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from markets.qubo import composites, contiguity, encoding, highs, samplers
from markets.qubo.model import IntVar, QuboModel

__all__ = [
    "EVAInstance",
    "paper_instance",
    "EVAReference",
    "EVASolution",
    "reference",
    "build_qubo",
    "solve",
    "evaluate",
    "repair",
]


@dataclass(frozen=True)
class EVAInstance:
    """Clusters × slots of the EVA problem. Powers in MW/MVAr, energies in MWh, prices in $/MWh and $/MVArh."""

    lam_p_usd_per_mwh: np.ndarray  # (C, T)
    lam_q_usd_per_mvarh: np.ndarray  # (C, T)
    p_max_mw: np.ndarray  # (C,)
    s_max_mva: np.ndarray  # (C,)
    q_max_mvar: np.ndarray  # (C,): Q ∈ [−q_max, q_max]
    e_min_mwh: np.ndarray  # (C,)
    e_max_mwh: np.ndarray  # (C,)
    dt_h: float
    bits: int = 8
    reactive: bool = True
    bus: np.ndarray | None = None  # (C,) bus of each cluster (0-based pandapower index), informative
    # (C,) $ per interruption of each cluster's schedule (on → off → on; markets.qubo.contiguity); None = 0
    switch_usd: np.ndarray | None = None
    # a slot counts as charging (for the switching penalty) from this share of P̄ on: level ≥ ⌈share·K⌉ (0: > 0)
    on_share: float = 0.0

    def __post_init__(self) -> None:
        c, t = np.shape(self.lam_p_usd_per_mwh)
        for name in ("p_max_mw", "s_max_mva", "q_max_mvar", "e_min_mwh", "e_max_mwh"):
            if np.shape(getattr(self, name)) != (c,):
                raise ValueError(f"{name}: needs shape ({c},), got {np.shape(getattr(self, name))}")
        if np.shape(self.lam_q_usd_per_mvarh) != (c, t):
            raise ValueError(f"lam_q_usd_per_mvarh: needs shape ({c}, {t})")
        if not 1 <= self.bits <= 12:
            raise ValueError(f"bits: must be in [1, 12], got {self.bits}")
        for name in (
            "lam_p_usd_per_mwh",
            "lam_q_usd_per_mvarh",
            "p_max_mw",
            "s_max_mva",
            "q_max_mvar",
            "e_min_mwh",
            "e_max_mwh",
        ):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name}: must be finite (no NaN or inf)")
        if not (np.isfinite(self.dt_h) and self.dt_h > 0):
            raise ValueError(f"dt_h: must be > 0, got {self.dt_h}")
        if np.any(self.q_max_mvar < 0) or np.any(self.e_min_mwh < 0):
            raise ValueError("q_max_mvar, e_min_mwh: must be ≥ 0")
        if np.any(self.p_max_mw <= 0) or np.any(self.p_max_mw > self.s_max_mva):
            raise ValueError("p_max_mw: must be in (0, s_max_mva] for every cluster")
        if np.any(self.e_min_mwh > self.e_max_mwh) or np.any(self.e_min_mwh > self.p_max_mw * self.dt_h * t):
            raise ValueError("e_min_mwh: must be ≤ e_max_mwh and ≤ p_max_mw · horizon for every cluster")
        if self.switch_usd is not None:
            w = np.asarray(self.switch_usd, float)
            if w.shape != (c,) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"switch_usd: needs shape ({c},), finite and ≥ 0, got {self.switch_usd!r}")
        if not (np.isfinite(self.on_share) and 0 <= self.on_share <= 1):
            raise ValueError(f"on_share: must be in [0, 1], got {self.on_share}")

    @property
    def on_level(self) -> int:
        """The smallest level at which a slot counts as charging: ``max(1, ⌈on_share · K⌉)``."""
        return max(1, int(np.ceil(self.on_share * self.levels - 1e-9)))

    @property
    def switching(self) -> bool:
        """Whether the schedule pays for interruptions (a switching weight above 0)."""
        return self.switch_usd is not None and bool(np.any(np.asarray(self.switch_usd) > 0))

    @property
    def switch_weights(self) -> np.ndarray:
        """``w_c`` [$ per interruption] (C,), zeros without ``switch_usd``."""
        c = self.shape[0]
        return np.zeros(c) if self.switch_usd is None else np.asarray(self.switch_usd, float).reshape(c)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.lam_p_usd_per_mwh))

    @property
    def levels(self) -> int:
        """``K``: the largest integer level of P (and Q)."""
        return (1 << self.bits) - 1

    @property
    def p_step_mw(self) -> np.ndarray:
        return self.p_max_mw / self.levels

    @property
    def unit_mwh(self) -> np.ndarray:
        """Energy of one P level held for one slot, per cluster [MWh]."""
        return self.p_step_mw * self.dt_h

    @property
    def energy_units(self) -> tuple[np.ndarray, np.ndarray]:
        """``(U̲, Ū)``: the energy window in P-level units (inner rounding: every integer inside is feasible)."""
        t = self.shape[1]
        lo = np.ceil(self.e_min_mwh / self.unit_mwh - 1e-9).astype(np.int64)
        hi = np.minimum(np.floor(self.e_max_mwh / self.unit_mwh + 1e-9).astype(np.int64), t * self.levels)
        if np.any(hi < lo):
            raise ValueError(
                f"bits: {self.bits} bits leave no P level sum inside the energy window of clusters "
                f"{np.flatnonzero(hi < lo).tolist()}"
            )
        return lo, hi

    def q_of_level(self, m: np.ndarray) -> np.ndarray:
        """Q [MVAr] of integer levels ``m[..., C, T]`` (cluster axis second to last)."""
        qm = self.q_max_mvar[:, None]
        return -qm + np.asarray(m) * (2.0 * qm / self.levels)

    def best_q_levels(self) -> np.ndarray:
        """``m*[c, t, k]``: the cheapest feasible Q level at P level ``k`` (``(C, T, K+1)`` int)."""
        c, t = self.shape
        k = np.arange(self.levels + 1)
        if not self.reactive:
            return np.zeros((c, t, k.size), dtype=np.int64)
        p = self.p_step_mw[:, None] * k[None, :]  # (C, K+1)
        room = np.sqrt(np.maximum(self.s_max_mva[:, None] ** 2 - p**2, 0.0)) * (1 + 1e-12)  # |Q| allowed
        step = 2.0 * self.q_max_mvar[:, None] / self.levels
        m_lo = np.ceil((self.q_max_mvar[:, None] - room) / step - 1e-9).clip(0, self.levels)  # smallest feasible m
        m_hi = np.floor((self.q_max_mvar[:, None] + room) / step + 1e-9).clip(0, self.levels)
        m_mid = np.clip(np.rint(self.q_max_mvar[:, None] / step), m_lo, m_hi)  # nearest to Q = 0
        lam = self.lam_q_usd_per_mvarh[:, :, None]
        out = np.where(lam > 0, m_lo[:, None, :], np.where(lam < 0, m_hi[:, None, :], m_mid[:, None, :]))
        return out.astype(np.int64)

    def cost_table(self) -> np.ndarray:
        """``f[c, t, k]``: the slot's cost [$] at P level ``k`` with its best Q level."""
        k = np.arange(self.levels + 1)
        p = self.p_step_mw[:, None, None] * k[None, None, :]
        q = self.q_of_level(self.best_q_levels().transpose(2, 0, 1)).transpose(1, 2, 0) if self.reactive else 0.0
        return self.dt_h * (self.lam_p_usd_per_mwh[:, :, None] * p + self.lam_q_usd_per_mvarh[:, :, None] * q)

    def with_bits(self, bits: int) -> EVAInstance:
        from dataclasses import replace

        return replace(self, bits=bits)


#: Table 1 of ``000_…``: active-power DLMPs of the six 4-hour slots [$/MWh]; reactive DLMPs range [$/MVArh].
PAPER_LAMBDA_P_USD_PER_MWH = (40.0, 50.0, 60.0, 70.0, 100.0, 60.0)
PAPER_LAMBDA_Q_RANGE_USD_PER_MVARH = (4.0, 10.0)


def paper_instance(
    bits: int = 8, seed: int = 0, n_clusters: int = 20, n_evs: int = 1000, reactive: bool = True
) -> EVAInstance:
    """The EVA instance of ``000_…`` Table 1: ``n_evs`` EVs in ``n_clusters`` clusters, 6 slots × 4 h.

    The paper gives the prices and sizes but not the fleet, so the fleet is drawn (``seed``): EVs split over
    clusters by a Dirichlet(2) share; rated power 7.4 or 11 kW (even odds), daily need U(15, 45) kWh. A cluster's
    ``P̄`` is the sum of its rated powers, ``S̄ = 1.2 · P̄`` (chargers' converters sized for reactive support),
    ``Q ∈ [−S̄, S̄]``, energy window ``[E, 1.15 · E]`` with ``E`` the cluster's need. ``λP`` is Table 1's profile
    scaled per cluster by a locational factor U(1.00, 1.08) (DLMPs rise along the feeder), ``λQ`` is drawn
    per cluster and slot from Table 1's range.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    share = rng.dirichlet(np.full(n_clusters, 2.0))
    cluster = rng.choice(n_clusters, size=n_evs, p=share)
    rated_kw = rng.choice([7.4, 11.0], size=n_evs)
    need_kwh = rng.uniform(15.0, 45.0, size=n_evs)
    p_max = np.bincount(cluster, rated_kw, n_clusters) / 1e3
    e_need = np.bincount(cluster, need_kwh, n_clusters) / 1e3
    p_max = np.maximum(p_max, 7.4e-3)  # an empty cluster keeps one charger's worth, needing nothing
    lam_p = rng.uniform(1.0, 1.08, size=(n_clusters, 1)) * np.asarray(PAPER_LAMBDA_P_USD_PER_MWH)[None, :]
    lam_q = rng.uniform(*PAPER_LAMBDA_Q_RANGE_USD_PER_MVARH, size=lam_p.shape)
    return EVAInstance(
        lam_p, lam_q, p_max, 1.2 * p_max, 1.2 * p_max, e_need, 1.15 * e_need, dt_h=4.0, bits=bits, reactive=reactive
    )


def evaluate(inst: EVAInstance, n: np.ndarray, m: np.ndarray | None = None) -> dict[str, Any]:
    """Cost [$] and constraint check of a schedule in levels (``m`` None → the best Q for each P level).

    Returns ``cost_usd``, ``violations`` (number of violated rows: energy windows, apparent power, level bounds),
    the schedule in MW/MVAr, its ``interruptions`` (on → off → on, summed over clusters) and ``switch_usd``, the
    switching penalty ``Σ_c w_c · interruptions_c`` it pays in the QUBO (0 without ``inst.switch_usd``).
    """
    n = np.asarray(n, dtype=np.int64)
    c, t = inst.shape
    if m is None:
        m = np.take_along_axis(inst.best_q_levels(), np.clip(n, 0, inst.levels)[:, :, None], axis=2)[:, :, 0]
    p = n * inst.p_step_mw[:, None]
    q = inst.q_of_level(m) if inst.reactive else np.zeros_like(p)
    interrupted = contiguity.interruptions(n, tol=inst.on_level - 1)  # (C,); charging: level ≥ on_level
    cost = float(np.sum(inst.dt_h * (inst.lam_p_usd_per_mwh * p + inst.lam_q_usd_per_mvarh * q)))
    e = p.sum(axis=1) * inst.dt_h
    tol = 1e-9 * np.maximum(inst.e_max_mwh, 1.0)
    v_energy = (e < inst.e_min_mwh - tol) | (e > inst.e_max_mwh + tol)
    v_s = p**2 + q**2 > (inst.s_max_mva[:, None] ** 2) * (1 + 1e-9)
    v_bounds = (n < 0) | (n > inst.levels) | (np.asarray(m) < 0) | (np.asarray(m) > inst.levels)
    return {
        "cost_usd": cost,
        "violations": int(v_energy.sum() + v_s.sum() + v_bounds.sum()),
        "energy_violations": int(v_energy.sum()),
        "apparent_power_violations": int(v_s.sum()),
        "p_mw": p,
        "q_mvar": q,
        "n": n,
        "m": np.asarray(m),
        "interruptions": int(interrupted.sum()),
        "switch_usd": float(np.sum(inst.switch_weights * interrupted)) if inst.switching else 0.0,
    }


@dataclass
class EVAReference:
    """HiGHS optimum of the discretised problem (``objective_usd``) and the LP relaxation's energy duals."""

    objective_usd: float
    n: np.ndarray
    lp_objective_usd: float
    energy_dual_usd_per_unit: np.ndarray  # (C,) ∂cost/∂U̲ in the LP relaxation, $ per P-level unit
    milp_s: float
    lp_s: float


def _one_hot(inst: EVAInstance, integral: bool) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Solve the one-hot formulation: z[c,t,k] ∈ {0,1} (or [0,1]), Σ_k z = 1, U̲ ≤ Σ_{t,k} k z ≤ Ū; the MILP
    (``integral``) with the switching penalty of ``inst.switch_usd`` (:func:`contiguity.one_hot_terms`), the LP
    relaxation (the multipliers' source) without it."""
    c, t = inst.shape
    kk = inst.levels + 1
    f = inst.cost_table().reshape(-1)
    n_col = f.size
    lo_u, hi_u = inst.energy_units
    col = np.arange(n_col)
    slot = col // kk  # row of the one-hot equality
    clus = col // (t * kk)
    lev = (col % kk).astype(float)
    rows = np.concatenate([slot, c * t + clus])
    vals = np.concatenate([np.ones(n_col), lev])
    cols = np.concatenate([col, col])
    a = sp.csc_matrix((vals, (rows, cols)), shape=(c * t + c, n_col))
    r_lo = np.concatenate([np.ones(c * t), lo_u.astype(float)])
    r_hi = np.concatenate([np.ones(c * t), hi_u.astype(float)])
    col_hi, const = np.ones(n_col), 0.0
    if integral and inst.switching:
        dx, block, cost_u, const = contiguity.one_hot_terms(c, t, kk, inst.on_level, inst.switch_weights, lo_u > 0)
        f = np.concatenate([f + dx, cost_u])
        a = sp.vstack([sp.hstack([a, sp.csc_matrix((a.shape[0], cost_u.size))]), block])
        r_lo = np.concatenate([r_lo, np.zeros(block.shape[0])])
        r_hi = np.concatenate([r_hi, np.full(block.shape[0], np.inf)])
        col_hi = np.concatenate([col_hi, np.full(cost_u.size, np.inf)])
    h, secs = highs.run(
        f,
        0.0,
        col_hi,
        a,
        r_lo,
        r_hi,
        integer=np.arange(f.size) < n_col if integral else None,
        mip_rel_gap=0.0,
        mip_abs_gap=1e-9,
    )
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"EVA reference: HiGHS status {h.modelStatusToString(status)}")
    z = np.asarray(h.getSolution().col_value)[:n_col].reshape(c, t, kk)
    duals = np.zeros(c) if integral else np.asarray(h.getSolution().row_dual)[c * t : c * t + c]
    return float(h.getInfo().objective_function_value) + const, z, duals, secs


def reference(inst: EVAInstance) -> EVAReference:
    """HiGHS optimum of the discretised EVA problem (one-hot MILP, gap 0) and the LP relaxation's duals.

    With ``inst.switch_usd`` the MILP's objective is the cost plus the switching penalty (``objective_usd``).
    """
    lp_obj, _, duals, lp_s = _one_hot(inst, integral=False)
    obj, z, _, milp_s = _one_hot(inst, integral=True)
    n = np.argmax(z, axis=2)
    return EVAReference(obj, n, lp_obj, duals, milp_s, lp_s)


def build_qubo(
    inst: EVAInstance,
    multiplier_usd_per_unit: np.ndarray | None = None,
    weight_factor: float = 1.0,
    enc: str = "binary",
    mu: int | None = None,
) -> tuple[QuboModel, IntVar, np.ndarray]:
    """The EVA QUBO: P levels on ``enc`` bits, slot costs as fitted tables, energy rows as augmented Lagrangians.

    ``multiplier_usd_per_unit`` (C,) is the LP dual of each energy row (None → 0, a plain quadratic penalty with
    the classic weight: the largest one-level cost). The weight per row is ``weight_factor`` × the largest
    difference of per-unit slot prices, in $ per unit² (with duals) — the scale at which moving one unit between
    slots changes the cost. Returns the model, the P block and the table fit's largest error per slot [$].
    """
    c, t = inst.shape
    model = QuboModel()
    e = encoding.make(enc, inst.levels, mu=mu)
    nvar = model.integer("n", (c, t), e)
    fit_err = model.add_objective_table(nvar, inst.cost_table())
    lo_u, hi_u = inst.energy_units
    rows = model.rows(nvar, sp.kron(sp.identity(c), np.ones((1, t))))
    weight, lam = _energy_weights(inst, multiplier_usd_per_unit, weight_factor)
    model.add_constraint("energy", rows, lo_u, hi_u, weight, lam, slack="binary")
    return model, nvar, fit_err


@dataclass
class EVASolution:
    """A decoded QUBO solution with the annealer's own result and the classically repaired one, kept apart."""

    n: np.ndarray
    cost_usd: float
    violations: int
    repaired_n: np.ndarray
    repaired_cost_usd: float
    repaired_violations: int
    n_vars: int
    n_interactions: int
    wall_s: float
    sample_s: float
    fit_error_usd: float
    info: dict[str, Any] = field(default_factory=dict)


def repair(inst: EVAInstance, n: np.ndarray) -> np.ndarray:
    """Classical repair of a level schedule: move each cluster's energy into its window one level at a time,
    adding at the slot with the cheapest next level or removing at the slot whose level saves most."""
    n = np.asarray(n, dtype=np.int64).copy()
    f = inst.cost_table()
    lo_u, hi_u = inst.energy_units
    for c in range(inst.shape[0]):
        while n[c].sum() < lo_u[c]:
            ok = n[c] < inst.levels
            up = np.where(
                ok,
                f[c, np.arange(inst.shape[1]), np.minimum(n[c] + 1, inst.levels)]
                - f[c, np.arange(inst.shape[1]), n[c]],
                np.inf,
            )
            n[c, int(np.argmin(up))] += 1
        while n[c].sum() > hi_u[c]:
            ok = n[c] > 0
            down = np.where(
                ok,
                f[c, np.arange(inst.shape[1]), np.maximum(n[c] - 1, 0)] - f[c, np.arange(inst.shape[1]), n[c]],
                np.inf,
            )
            n[c, int(np.argmin(down))] -= 1
    return n


def build_window_qubo(
    inst: EVAInstance,
    lo: np.ndarray,
    step: int,
    width: int,
    multiplier_usd_per_unit: np.ndarray | None,
    weight_factor: float = 1.0,
    order_factor: float = 2.0,
) -> tuple[QuboModel, IntVar]:
    """The EVA QUBO on the grid ``n[c,t] = lo[c,t] + step · Σ_j y[c,t,j]``, ``j < width``, in domain-wall bits.

    Bit ``j`` of a slot costs the increment ``f(lo + step·(j+1)) − f(lo + step·j)`` of the true slot cost ``f``
    and a chain penalty ``ρ · y[j+1] · (1 − y[j])`` keeps the bits ordered (a "domain wall"), so the QUBO energy
    of every valid pattern is the true cost — no fit error, whatever the shape of ``f`` — and moving a slot one
    grid step up or down is a single bit flip, which is what lets annealing move energy between slots. ``ρ`` is
    ``order_factor`` × the slot's largest absolute increment. With ``lo = 0``, ``step = 1``, ``width = K`` this
    is the whole problem; a short window around a coarser solution refines it. Levels beyond ``K`` are cut by
    shortening the slot's chain (its high bits are fixed to 0 by a linear penalty).

    With ``inst.switch_usd`` the window also carries the switching penalty of
    :func:`markets.qubo.contiguity.add_switch_penalty` (``w_c`` per interruption of cluster ``c``, on the bit at
    which a slot's level reaches ``inst.on_level``); ``ρ`` is then at least ``order_factor · w_c``, so that
    breaking a chain at that bit never pays for the ``≤ 1.5 w_c`` a slot's on-indicator can save.
    """
    c, t = inst.shape
    lo = np.asarray(lo, np.int64)
    model = QuboModel()
    y = model.integer("y", (c, t), encoding.unary(width))
    grid = lo[:, :, None] + step * np.arange(width + 1)[None, None, :]  # (C, T, width + 1)
    valid = grid <= inst.levels
    fw = np.take_along_axis(inst.cost_table(), np.minimum(grid, inst.levels), axis=2)
    inc = np.diff(fw, axis=2)  # (C, T, width)
    big = np.abs(np.where(valid[:, :, 1:], inc, 0.0)).max(axis=2, keepdims=True)  # (C, T, 1)
    floor = np.maximum(inst.switch_weights, 1e-9)[:, None, None] if inst.switching else 1e-9
    rho = order_factor * np.maximum(big, floor)
    model.offset += float(fw[:, :, 0].sum())
    # Out-of-range bits: linear penalty larger than anything they could gain.
    model.add_linear(y.index, np.where(valid[:, :, 1:], inc, 4.0 * rho + np.abs(inc)))
    if width > 1:
        # ρ·y[j+1]·(1 − y[j]) = ρ·y[j+1] − ρ·y[j]·y[j+1]
        model.add_linear(y.index[:, :, 1:], np.broadcast_to(rho, y.index[:, :, 1:].shape))
        model.add_quadratic(y.index[:, :, :-1], y.index[:, :, 1:], -np.broadcast_to(rho, y.index[:, :, 1:].shape))
    lo_u, hi_u = inst.energy_units
    base = lo.sum(axis=1)
    span = t * width * step
    r_lo = np.clip(lo_u - base, 0, span)
    r_hi = np.clip(hi_u - base, r_lo, span)
    weight, lam = _energy_weights(inst, multiplier_usd_per_unit, weight_factor)
    # A residual of one grid step then costs weight_factor × the price spread of one step, as on the fine grid.
    model.add_constraint(
        "energy", model.rows(y, step * sp.kron(sp.identity(c), np.ones((1, t)))), r_lo, r_hi, weight / step, lam
    )
    if inst.switching and width >= 1:
        contiguity.add_switch_penalty(model, y, lo, step, inst.on_level, inst.switch_weights, lo_u > 0)
    return model, y


def _energy_weights(inst: EVAInstance, dual: np.ndarray | None, weight_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Penalty weight [$ per unit²] and multiplier [$ per unit] of each cluster's energy row."""
    unit_price = inst.dt_h * inst.p_step_mw[:, None] * inst.lam_p_usd_per_mwh  # $ per level unit, (C, T)
    if dual is None:
        return weight_factor * unit_price.max(axis=1), np.zeros(inst.shape[0])
    spread = unit_price.max(axis=1) - unit_price.min(axis=1)
    # Penalised residual r = Σn − slack − U̲; its multiplier is minus the dual of "Σn ≥ U̲", so the Lagrangian
    # prices a unit of energy at the marginal price in both directions and the weight only breaks ties.
    return weight_factor * np.maximum(spread, 1e-3 * unit_price.max(axis=1)), -np.asarray(dual, float)


def _cluster_blocks(model: QuboModel, var: IntVar) -> list[np.ndarray]:
    """Variables of each cluster (its bits and its energy row's slack) — the independent blocks."""
    con = model.constraints["energy"]
    slack = {r: sv.index.reshape(-1) for r, sv in con.slack.blocks} if con.slack is not None else {}
    return [
        np.concatenate([var.index[k].reshape(-1), slack.get(k, np.empty(0, np.int64))]) for k in range(var.shape[0])
    ]


def _anneal(
    model: QuboModel, var: IntVar, sampler: str, params: dict[str, Any], hot: float, cold: float
) -> tuple[np.ndarray, float, int, int, Any]:
    """Sample one model decomposed by cluster; return the best read's levels of ``var``, seconds, size, β range.

    ``hot``/``cold`` [$] are the uphill moves accepted half the time at the start and 1 % at the end (SA only).
    """
    bqm = model.to_bqm()
    p = dict(params)
    if sampler == "sa":
        p.setdefault("beta_range", composites.beta_range(bqm, hot_energy=hot, cold_energy=cold))
    ts = time.perf_counter()
    ss = composites.DecomposedSampler(samplers.get(sampler)).sample(bqm, components=_cluster_blocks(model, var), **p)
    secs = time.perf_counter() - ts
    x = composites.samples_matrix(ss, model.n_vars)[:1]
    return var.levels(x)[0], secs, model.n_vars, bqm.num_interactions, p.get("beta_range")


def _grids(k: int, coarse_levels: int, shrink: int) -> list[tuple[int, int]]:
    """``(step, radius)`` of each stage: the whole range at step ``⌈K / coarse_levels⌉``, then windows of
    ± the previous step at a step ``shrink`` times finer, down to step 1."""
    step = max(1, -(-k // coarse_levels))
    out = [(step, 0)]
    while step > 1:
        nxt = max(1, -(-step // shrink))
        out.append((nxt, step))
        step = nxt
    return out


def solve(
    inst: EVAInstance,
    *,
    sampler: str = "sa",
    num_reads: int = 16,
    num_sweeps: int = 400,
    seed: int | None = None,
    calibrate: bool = True,
    weight_factor: float = 0.5,
    coarse_levels: int = 15,
    shrink: int = 4,
    passes: int = 3,
    ref: EVAReference | None = None,
    cold_factor: float = 0.05,
    **sampler_params: Any,
) -> EVASolution:
    """Solve the EVA level by annealing on a sequence of ever finer grids, each QUBO decomposed by cluster.

    Stage 1 covers every slot's whole range on a grid of ``coarse_levels`` steps (the full grid when
    ``K ≤ coarse_levels``); each later stage is a window of ± the previous step around the current schedule on a
    ``shrink`` times finer grid, repeated (up to ``passes`` times) while it still changes the schedule, down to
    single levels. Every stage is an exact domain-wall QUBO (:func:`build_window_qubo`) sampled by ``sampler``
    through :class:`~markets.qubo.composites.DecomposedSampler`; the energy rows carry the LP relaxation's duals
    as multipliers (``calibrate``) and a weight of ``weight_factor`` × the cluster's slot price spread.

    The annealer's schedule is the best (feasible first, then cheapest) of the stages' decoded schedules — all
    annealing results. Only if it still violates a constraint is :func:`repair` applied; the repaired schedule
    is reported apart (``repaired_*``).
    """
    t0 = time.perf_counter()
    _check_schedule(coarse_levels, shrink)
    duals = (ref if ref is not None else _lp_only(inst)).energy_dual_usd_per_unit if calibrate else None
    base = samplers.get(sampler)
    params = samplers.read_params(sampler, base, num_reads, num_sweeps, sampler_params)
    rng = np.random.default_rng(seed)
    c, t = inst.shape
    k = inst.levels
    n = np.zeros((c, t), np.int64)
    stats: list[dict[str, Any]] = []
    best: tuple[tuple[int, float], np.ndarray] | None = None
    sample_s, n_vars, n_int = 0.0, 0, 0
    br: Any = None
    for stage, (step, radius) in enumerate(_grids(k, coarse_levels, shrink)):
        for _ in range(1 if radius == 0 else passes):
            lo, width = _window(n, step, radius, k)
            model, y = build_window_qubo(inst, lo, step, width, duals, weight_factor)
            if "seed" in base.parameters and seed is not None:
                params["seed"] = int(rng.integers(2**31 - 1))
            unit = inst.dt_h * inst.p_step_mw[:, None] * inst.lam_p_usd_per_mwh  # $ per level
            lv, secs, nv, ni, br = _anneal(
                model,
                y,
                sampler,
                params,
                hot=float(unit.max()) * step * max(width, 1) / 4,
                cold=cold_factor * float(unit.min()),
            )
            new = np.minimum(lo + step * lv, k)
            ev = evaluate(inst, new)
            stats.append(_stage_record(stage, step, width, nv, ni, secs, ev))
            sample_s += secs
            n_vars, n_int = max(n_vars, nv), max(n_int, ni)
            key = (ev["violations"], ev["cost_usd"] + ev["switch_usd"])
            if best is None or key < best[0]:
                best = (key, new)
            changed = not np.array_equal(new, n)
            n = best[1]
            if not changed:
                break
    assert best is not None
    return _solution(
        inst, best[1], n_vars, n_int, t0, sample_s, {"beta_range": br, "sampler": sampler, "stages": stats}
    )


def _check_schedule(coarse_levels: int, shrink: int) -> None:
    """Refuse a coarse-to-fine schedule :func:`solve` cannot run (one line naming the field)."""
    if not 1 <= coarse_levels <= 64:
        raise ValueError(f"coarse_levels: must be in [1, 64], got {coarse_levels}")
    if shrink < 2:
        raise ValueError(f"shrink: must be ≥ 2, got {shrink}")


def _window(n: np.ndarray, step: int, radius: int, k: int) -> tuple[np.ndarray, int]:
    """A stage's window: lowest level (C, T) and width in steps of ``step`` levels, ± ``radius`` levels around
    the schedule ``n`` (the whole range [0, ``k``] when ``radius`` is 0)."""
    c, t = n.shape
    if radius == 0:
        lo, width = np.zeros((c, t), np.int64), -(-k // step)
    else:
        width = 2 * (radius // step)
        lo = np.clip(n - (width // 2) * step, 0, max(k - width * step, 0))
    return lo, width


def _stage_record(
    stage: int, step: int, width: int, nv: int, ni: int, secs: float, ev: dict[str, Any]
) -> dict[str, Any]:
    """One line of the stage log in ``info['stages']``."""
    return {
        "stage": stage,
        "step": step,
        "width": width,
        "n_vars": nv,
        "n_interactions": ni,
        "sample_s": secs,
        "cost_usd": ev["cost_usd"],
        "violations": ev["violations"],
    }


def _solution(
    inst: EVAInstance, n: np.ndarray, n_vars: int, n_int: int, t0: float, sample_s: float, info: dict[str, Any]
) -> EVASolution:
    """The annealer's schedule ``n`` scored exactly, and repaired apart (:func:`repair`) only if it violates."""
    ev = evaluate(inst, n)
    rep = repair(inst, n) if ev["violations"] else n
    ev_r = evaluate(inst, rep) if ev["violations"] else ev
    if inst.switching:  # what the schedule pays for its interruptions, beside its cost
        info = {**info, "interruptions": ev_r["interruptions"], "switch_usd": ev_r["switch_usd"]}
    return EVASolution(
        n,
        ev["cost_usd"],
        ev["violations"],
        rep,
        ev_r["cost_usd"],
        ev_r["violations"],
        n_vars,
        n_int,
        time.perf_counter() - t0,
        sample_s,
        0.0,
        info,
    )


def _lp_only(inst: EVAInstance) -> EVAReference:
    lp_obj, _, duals, lp_s = _one_hot(inst, integral=False)
    return EVAReference(np.nan, np.empty(0), lp_obj, duals, np.nan, lp_s)
