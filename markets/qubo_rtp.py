"""`qubo-rtp`: real-time station pricing as a QUBO (quantum-annealing pricing paper, `003_…`).

Every 15-min interval the operator sets one price per charging station on a ``bits``-bit level grid
(default 5 bits: 32 levels, 0.05–0.35 $/kWh, base price ``p0`` = 0.12 $/kWh) and the EVs at the station respond
with their elasticity. The paper states its model only in words (its equations did not survive in our copy); the
reading below keeps its terms and numbers and is written so that the discretised problem has a provable optimum.

**Demand response** (paper Obj. 2, "piecewise-linear logistic" elasticity, eq. 31 extension). An EV ``i`` at the
station wants ``d_i = min(p_max·availability, remaining grid energy/Δt)`` [kW] at the base price (it would charge
as fast as it can: the uncontrolled baseline). Its effective elasticity is ``e_i = |ε_i| · g(u_i)`` with urgency
``u_i = need / (p_max · time left)`` and ``g`` a piecewise-linear logistic that falls from 1 (relaxed) to
``urgency_floor`` (urgent). The station's demand at level ``k`` is::

    D[s,k] = D0[s] · (1 − ε̄[s] · max(p_k − p_b, 0) / p0),   D0 = Σ d_i,  ε̄ = Σ d_i e_i / D0

where ``p_b`` is the grid level nearest ``p0`` (so the base level gives exactly the base demand). Prices below
``p_b`` cannot raise demand (the EVs already charge at full rate); they only lower the bill. The reduction is
deferred, not lost: it stays in the EVs' remaining need and comes back in later intervals. ``ε̄`` is capped so
that demand stays positive at the highest price (the cap is reported).

**Objective per interval** [$], per station, all terms quadratic in ``D`` (hence in the level, where ``D`` is
affine):

* energy cost (Obj. 1): ``Δt · (c_t · D + p0 · (D0 − D))`` — the interval's supply at the marginal cost ``c_t``
  (``request.price_usd_per_mwh``), the deferred energy valued at the base price it will be bought at later;
* user discomfort (Obj. 2): ``Δt · p0 · (D − D0)² / (2 ε̄ D0)`` — the welfare loss of the linear demand curve
  (the Harberger triangle), which is what makes the price an interior optimum instead of bang-bang;
* renewable alignment (Obj. 3, Constraint 9): ``Δt · w_ren · (D − R_s)² / D0`` with ``R_s`` the station's share
  (by ``D0``) of the renewable power available to EV charging (``request.renewable_kw``);
* congestion (Constraint 8): ``Δt · w_cong · D² / cap_s`` (utilisation-weighted, ``cap_s`` the station cap).

**Constraints.** Station capacity ``D ≤ cap_s`` and the price ramp ``|p_t − p_{t−1}| ≤ ramp_max`` are hard: both
only bound the level from one side, so they restrict each station to a window of levels ``[lo, hi]`` (capacity
wins where the two conflict; a station whose demand exceeds its cap even at the highest price is capped
physically and reported). The bus (feeder) capacity rows ``Σ_{s at b} D[s] ≤ cap_b``
(``request.bus_ev_cap_kw``, bus → kW) couple stations; where the ramp windows of a feeder's stations
cannot bring it under its capacity, the ramp yields there too (``feeders_over_ramp``, reported as
``ramp_broken``) — physical limits win over price smoothness.

**The QUBO.** Each station's level is ``qlo + offset`` with the offset binary-encoded over its window (levels
below ``p_b`` all give the same demand and cost, so the window starts at ``max(lo, p_b)`` and the decoder moves a
read at ``p_b`` down to :meth:`RTPInstance.flat_target` — half a ramp step below ``p_b``: same objective, a lower
bill, and room to rise next interval). On that window every term is exactly quadratic in the offset, so its
coefficients are exact (no fit error beyond rounding). The bus
rows are dualised: their multipliers come from the LP relaxation of the one-hot MILP (HiGHS duals), which makes
the QUBO separable per station (:class:`~markets.qubo.composites.DecomposedSampler` recombines the best read of
every station); outer augmented-Lagrangian rounds raise the multipliers of rows the read violates. The SA
temperature range comes from the problem's own cost scales. A read that still violates a bus row is repaired
classically (greedy price raises) and reported apart: ``annealer_gap`` vs ``repaired_gap``.

**Exact reference.** :func:`reference` solves the one-hot MILP of the same discretised problem (same windows,
same cost table, bus rows) in HiGHS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from markets.base import MarketConfigError, MarketRequest, MarketResult, Mechanism, finite_number, register
from markets.qubo import composites, encoding, highs, samplers
from markets.qubo.model import IntVar, QuboModel

__all__ = [
    "RTPInstance",
    "RTPSolution",
    "RTPReference",
    "QuboRTP",
    "reference",
    "solve",
    "evaluate",
    "build_qubo",
    "urgency_factor",
]

# Piecewise-linear logistic of the elasticity factor over urgency (paper: "elasticity decreases as the urgency of
# demand increases"): breakpoints of 1/(1+exp((u−0.6)/0.1)) rescaled to [floor, 1].
_U_BREAKS = np.array([0.0, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0])


def urgency_factor(urgency: np.ndarray, floor: float) -> np.ndarray:
    """Elasticity factor ``g(u)`` ∈ [floor, 1] of charging urgency ``u`` (need / energy deliverable before leaving).

    Piecewise-linear approximation of a logistic centred at ``u = 0.6``: 1 for relaxed EVs, ``floor`` for EVs that
    must charge flat out.

    >>> urgency_factor(np.array([0.0, 0.6, 1.0]), 0.2).round(3).tolist()
    [1.0, 0.594, 0.2]
    """
    logistic = 1.0 / (1.0 + np.exp((_U_BREAKS - 0.6) / 0.1))
    lo, hi = logistic[-1], logistic[0]
    vals = floor + (1.0 - floor) * (logistic - lo) / (hi - lo)
    return np.interp(np.asarray(urgency, float), _U_BREAKS, vals)


@dataclass(frozen=True)
class RTPInstance:
    """One pricing interval: stations, their baseline demand and elasticity, and the grid's limits.

    Attributes:
        d0_kw: demand of each station at the base price [kW], shape (S,).
        elasticity: station elasticity ε̄ ≥ 0 (magnitude; demand falls by ε̄·Δp/p0), shape (S,).
        cap_kw: station power cap [kW] (inf = none), shape (S,).
        renewable_kw: renewable power available to each station's EVs [kW], shape (S,).
        bus: row index of each station's bus in ``bus_cap_kw`` (−1 = uncoupled), shape (S,).
        bus_cap_kw: EV capacity of each coupled bus/feeder [kW], shape (B,).
        prev_level: each station's level in the previous interval (None = no ramp limit), shape (S,).
        cost_usd_per_kwh: marginal cost of supply in this interval [$/kWh].
        dt_h: interval length [h].
        bits: bits of the price level grid.
        price_min_usd_per_kwh, price_max_usd_per_kwh, base_price_usd_per_kwh: grid bounds and ``p0`` [$/kWh].
        ramp_max_usd_per_kwh: largest price change between intervals [$/kWh].
        w_ren_usd_per_kwh: weight of the renewable-alignment term [$/kWh].
        w_cong_usd_per_kwh: weight of the congestion term [$/kWh].
        ramp_bus_rows: a feeder the ramp window cannot relieve lifts the ramp's upper bound for its stations
            (capacity wins over price smoothness); False keeps the ramp and reports the overload as unavoidable.
    """

    d0_kw: np.ndarray
    elasticity: np.ndarray
    cap_kw: np.ndarray
    renewable_kw: np.ndarray
    bus: np.ndarray
    bus_cap_kw: np.ndarray
    prev_level: np.ndarray | None
    cost_usd_per_kwh: float
    dt_h: float = 0.25
    bits: int = 5
    price_min_usd_per_kwh: float = 0.05
    price_max_usd_per_kwh: float = 0.35
    base_price_usd_per_kwh: float = 0.12
    ramp_max_usd_per_kwh: float = 0.05
    w_ren_usd_per_kwh: float = 0.02
    w_cong_usd_per_kwh: float = 0.02
    ramp_bus_rows: bool = True

    def __post_init__(self) -> None:
        n = np.shape(self.d0_kw)
        if len(n) != 1:
            raise ValueError(f"d0_kw: needs shape (S,), got {n}")
        for name in ("elasticity", "cap_kw", "renewable_kw", "bus"):
            if np.shape(getattr(self, name)) != n:
                raise ValueError(f"{name}: needs shape {n} (one per station), got {np.shape(getattr(self, name))}")
        if self.prev_level is not None and np.shape(self.prev_level) != n:
            raise ValueError(f"prev_level: needs shape {n} or None, got {np.shape(self.prev_level)}")
        for name in ("d0_kw", "elasticity", "renewable_kw"):
            v = np.asarray(getattr(self, name), float)
            if not np.all(np.isfinite(v)) or np.any(v < 0):
                raise ValueError(f"{name}: must be finite and ≥ 0")
        if np.any(np.isnan(np.asarray(self.cap_kw, float))) or np.any(np.asarray(self.cap_kw, float) < 0):
            raise ValueError("cap_kw: must be ≥ 0 (inf = no cap)")
        b = np.asarray(self.bus)
        if b.size and (b.min() < -1 or b.max() >= np.size(self.bus_cap_kw)):
            raise ValueError(f"bus: must be −1 or a row of bus_cap_kw in [0, {np.size(self.bus_cap_kw) - 1}]")
        if not 1 <= self.bits <= 12:
            raise ValueError(f"bits: must be in [1, 12], got {self.bits}")
        if not (
            0 <= self.price_min_usd_per_kwh <= self.base_price_usd_per_kwh <= self.price_max_usd_per_kwh
            and self.price_min_usd_per_kwh < self.price_max_usd_per_kwh
        ):
            raise ValueError(
                "base_price_usd_per_kwh: must lie in [price_min_usd_per_kwh, price_max_usd_per_kwh], with 0 ≤ min < max"
            )
        if not (np.isfinite(self.dt_h) and self.dt_h > 0):
            raise ValueError(f"dt_h: must be > 0, got {self.dt_h}")
        if not np.isfinite(self.cost_usd_per_kwh):
            raise ValueError("cost_usd_per_kwh: must be finite")

    @property
    def n_stations(self) -> int:
        return int(np.size(self.d0_kw))

    @property
    def levels(self) -> int:
        """``K``: the highest price level."""
        return (1 << self.bits) - 1

    @property
    def step_usd_per_kwh(self) -> float:
        return (self.price_max_usd_per_kwh - self.price_min_usd_per_kwh) / self.levels

    def price(self, level: np.ndarray | int) -> np.ndarray:
        """Price [$/kWh] of integer levels."""
        return self.price_min_usd_per_kwh + self.step_usd_per_kwh * np.asarray(level, float)

    @property
    def base_level(self) -> int:
        """``k_b``: the level nearest the base price."""
        return int(
            np.clip(
                np.rint((self.base_price_usd_per_kwh - self.price_min_usd_per_kwh) / self.step_usd_per_kwh),
                0,
                self.levels,
            )
        )

    @property
    def ramp_levels(self) -> int:
        """Largest level change between intervals allowed by ``ramp_max_usd_per_kwh``."""
        return int(np.floor(self.ramp_max_usd_per_kwh / self.step_usd_per_kwh + 1e-9))

    def flat_target(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Where several levels give the same demand and cost (at or below the base level, or no responsive
        demand), the level chosen: half a ramp step below the base price, within the window — a discount for
        users that leaves the next interval room to raise the price above the base price."""
        return np.clip(self.base_level - self.ramp_levels // 2, lo, hi)

    def demand_table(self) -> np.ndarray:
        """``D[s, k]`` [kW] for every station and level (module docstring); computed once, read-only."""
        return self._demand

    @cached_property
    def _demand(self) -> np.ndarray:
        k = np.arange(self.levels + 1)
        x = np.maximum(self.price(k) - self.price(self.base_level), 0.0) / self.base_price_usd_per_kwh
        d = self.d0_kw[:, None] * np.maximum(1.0 - self.elasticity[:, None] * x[None, :], 0.0)
        d.setflags(write=False)
        return d

    def cost_table(self, demand: np.ndarray | None = None) -> np.ndarray:
        """``f[s, k]`` [$]: the station's objective at each level (module docstring)."""
        d = self.demand_table() if demand is None else demand
        d0 = self.d0_kw[:, None]
        p0 = self.base_price_usd_per_kwh
        energy = self.cost_usd_per_kwh * d + p0 * (d0 - d)
        eps = self.elasticity[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            discomfort = np.where((eps > 0) & (d0 > 0), p0 * (d - d0) ** 2 / (2.0 * eps * d0), 0.0)
            ren = np.where(d0 > 0, self.w_ren_usd_per_kwh * (d - self.renewable_kw[:, None]) ** 2 / d0, 0.0)
            cong = np.where(
                np.isfinite(self.cap_kw[:, None]) & (self.cap_kw[:, None] > 0),
                self.w_cong_usd_per_kwh * d**2 / self.cap_kw[:, None],
                0.0,
            )
        return self.dt_h * (energy + discomfort + ren + cong)

    def windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(lo, hi, cap_short, ramp_broken)`` (copies; see :meth:`_windows`)."""
        return tuple(a.copy() for a in self._windows)  # type: ignore[return-value]

    @cached_property
    def _windows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(lo, hi, cap_short, ramp_broken)``: each station's admissible levels (ramp ∩ capacity).

        ``cap_short`` marks stations whose demand exceeds the cap even at the highest price (window = {K});
        ``ramp_broken`` those whose capacity level lies beyond the ramp window (capacity wins).
        """
        kk = self.levels
        d = self.demand_table()
        ok = d <= self.cap_kw[:, None] * (1 + 1e-12)
        cap_short = ~ok[:, -1]
        k_cap = np.where(cap_short, kk, np.argmax(ok, axis=1))
        if self.prev_level is None:
            lo, hi = np.zeros(self.n_stations, np.int64), np.full(self.n_stations, kk, np.int64)
        else:
            r = self.ramp_levels
            prev = np.asarray(self.prev_level, np.int64)
            lo, hi = np.maximum(prev - r, 0), np.minimum(prev + r, kk)
        ramp_broken = k_cap > hi
        lo = np.maximum(lo, k_cap)
        hi = np.maximum(hi, lo)
        cap_b = np.asarray(self.bus_cap_kw, float)
        if self.ramp_bus_rows and cap_b.size and self.prev_level is not None:
            # a feeder the ramp window cannot relieve: its stations may rise above the ramp (capacity wins)
            m = self.bus >= 0
            least = np.zeros(cap_b.size)
            np.add.at(least, self.bus[m], d[np.arange(self.n_stations), hi][m])
            short = np.zeros(self.n_stations, bool)
            short[m] = least[self.bus[m]] > cap_b[self.bus[m]] * (1 + 1e-9)
            ramp_broken = ramp_broken | (short & (hi < kk))
            hi = np.where(short, kk, hi)
        return lo, hi, cap_short, ramp_broken

    def bus_cap_effective(self) -> np.ndarray:
        """Bus rows' right-hand sides [kW] (see :attr:`_bus_cap_effective`)."""
        return self._bus_cap_effective

    @cached_property
    def _bus_cap_effective(self) -> np.ndarray:
        """Bus rows' right-hand sides [kW]: ``cap_b``, raised to the least load the windows allow where even the
        highest admissible prices cannot meet it this interval (the shortfall is reported as unavoidable)."""
        cap = np.asarray(self.bus_cap_kw, float)
        if cap.size == 0:
            return cap
        _, hi, _, _ = self.windows()
        least = np.zeros(cap.size)
        m = self.bus >= 0
        np.add.at(least, self.bus[m], self.demand_table()[np.arange(self.n_stations), hi][m])
        return np.maximum(cap, least * (1 + 1e-9))


def _one_hot(
    inst: RTPInstance, table: np.ndarray, demand: np.ndarray, lo: np.ndarray, hi: np.ndarray, integral: bool
) -> tuple[float, np.ndarray, np.ndarray, float, str]:
    """One-hot MILP/LP over the windows: min Σ f z, Σ_k z[s,k] = 1, Σ_{s∈b} Σ_k D z ≤ cap_b."""
    s_n = inst.n_stations
    width = hi - lo + 1
    start = np.concatenate([[0], np.cumsum(width)])
    n_col = int(start[-1])
    st = np.repeat(np.arange(s_n), width)
    lev = np.arange(n_col) - start[st] + lo[st]
    cost = table[st, lev]
    dem = demand[st, lev]
    n_bus = int(np.size(inst.bus_cap_kw))
    coupled = inst.bus[st] >= 0
    rows = np.concatenate([st, s_n + inst.bus[st][coupled]])
    cols = np.concatenate([np.arange(n_col), np.arange(n_col)[coupled]])
    vals = np.concatenate([np.ones(n_col), dem[coupled]])
    a = sp.csc_matrix((vals, (rows, cols)), shape=(s_n + n_bus, n_col))
    h, secs = highs.run(
        cost,
        0.0,
        1.0,
        a,
        np.concatenate([np.ones(s_n), np.full(n_bus, -np.inf)]),
        np.concatenate([np.ones(s_n), inst.bus_cap_effective()]),
        integer=integral,
        mip_rel_gap=0.0,
        mip_abs_gap=1e-9,
    )
    status = h.modelStatusToString(h.getModelStatus())
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return float("nan"), lo.copy(), np.zeros(n_bus), secs, status
    z = np.asarray(h.getSolution().col_value)
    levels = lo.copy()
    pick = z > 0.5
    levels[st[pick]] = lev[pick]
    duals = np.zeros(n_bus) if integral else np.maximum(-np.asarray(h.getSolution().row_dual)[s_n:], 0.0)
    return float(h.getInfo().objective_function_value), levels, duals, secs, status


@dataclass
class RTPReference:
    """HiGHS optimum of the discretised interval (one-hot MILP) and the LP relaxation's bus duals [$/kW]."""

    objective_usd: float
    levels: np.ndarray
    status: str
    milp_s: float


def reference(inst: RTPInstance) -> RTPReference:
    """The exact optimum of the discretised interval: one-hot price-level MILP in HiGHS (gap 0)."""
    lo, hi, _, _ = inst.windows()
    d = inst.demand_table()
    obj, levels, _, secs, status = _one_hot(inst, inst.cost_table(d), d, lo, hi, integral=True)
    return RTPReference(obj, levels, status, secs)


def evaluate(inst: RTPInstance, levels: np.ndarray) -> dict[str, Any]:
    """Objective [$] and bus-row violations [kW] of integer ``levels``."""
    levels = np.asarray(levels, np.int64)
    d = inst.demand_table()
    rows = np.arange(inst.n_stations)
    dem = d[rows, levels]
    obj = float(inst.cost_table(d)[rows, levels].sum())
    load = np.zeros(np.size(inst.bus_cap_kw))
    m = inst.bus >= 0
    np.add.at(load, inst.bus[m], dem[m])
    cap = inst.bus_cap_effective()
    over = np.maximum(load - cap, 0.0)
    return {
        "objective_usd": obj,
        "demand_kw": dem,
        "bus_over_kw": over,
        "bus_violations": int((over > 1e-6 * np.maximum(cap, 1.0)).sum()),
        "bus_over_physical_kw": np.maximum(load - inst.bus_cap_kw, 0.0),
    }


@dataclass
class _Block:
    var: IntVar
    stations: np.ndarray
    qlo: np.ndarray


def build_qubo(
    inst: RTPInstance,
    qlo: np.ndarray,
    hi: np.ndarray,
    bus_lambda_usd_per_kw: np.ndarray,
    table: np.ndarray,
    demand: np.ndarray,
) -> tuple[QuboModel, list[_Block], float]:
    """The separable interval QUBO: per station, ``offset = level − qlo`` binary-encoded over ``[0, hi − qlo]``,
    objective ``f[s, level] + λ_bus · D[s, level]`` as an (exact) quadratic table fit. Stations with a one-level
    window get no variables. Returns the model, its blocks (one per window width) and the largest fit error [$]."""
    model = QuboModel()
    width = hi - qlo
    lam = (
        np.where(inst.bus >= 0, bus_lambda_usd_per_kw[np.maximum(inst.bus, 0)], 0.0)
        if np.size(bus_lambda_usd_per_kw)
        else np.zeros(inst.n_stations)
    )
    blocks: list[_Block] = []
    err = 0.0
    for w in np.unique(width[width > 0]):
        st = np.flatnonzero(width == w)
        var = model.integer(f"offset{int(w)}", (st.size,), encoding.binary(int(w)))
        lev = qlo[st, None] + np.arange(int(w) + 1)[None, :]
        tab = table[st[:, None], lev] + lam[st, None] * inst.dt_h * demand[st[:, None], lev]
        tab = tab - tab[:, :1]  # constant per station: keeps the BQM offset small
        err = max(err, _add_quadratic_table(model, var, tab))
        blocks.append(_Block(var, st, qlo[st]))
    return model, blocks, err


def _add_quadratic_table(model: QuboModel, var: IntVar, table: np.ndarray) -> float:
    """Objective ``Σ_e table[e, level_e]`` for tables quadratic in the level: ``a + b·ℓ + c·ℓ²`` with
    ``ℓ = Σ_j c_j x_j`` is ``a + Σ_j (b c_j + c c_j²) x_j + Σ_{i<j} 2 c c_i c_j x_i x_j`` (``x² = x``).

    A least-squares fit of ``(a, b, c)`` per element (one 3-column solve for the whole block, cheaper than the
    generic :meth:`QuboModel.add_objective_table`); returns the largest absolute fit error [$] (0 to rounding
    for the tables of this module, which are quadratic on the QUBO windows).
    """
    w = var.encoding.upper
    ell = np.arange(w + 1, dtype=float)
    design = np.stack([np.ones_like(ell), ell, ell**2], axis=1)
    coef, *_ = np.linalg.lstsq(design, table.T, rcond=None)  # (3, n_el)
    err = float(np.abs(design @ coef - table.T).max()) if table.size else 0.0
    cj = var.encoding.coefficients.astype(float)
    idx = var.index.reshape(-1, cj.size)
    model.offset += float(coef[0].sum())
    model.add_linear(idx, coef[1][:, None] * cj[None, :] + coef[2][:, None] * cj[None, :] ** 2)
    ii, jj = np.triu_indices(cj.size, 1)
    if ii.size:
        model.add_quadratic(idx[:, ii], idx[:, jj], 2.0 * coef[2][:, None] * (cj[ii] * cj[jj])[None, :])
    return err


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


def _repair(inst: RTPInstance, levels: np.ndarray, hi: np.ndarray, table: np.ndarray, demand: np.ndarray) -> np.ndarray:
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
    coupled = np.size(inst.bus_cap_kw) > 0 and bool(np.any(inst.bus >= 0))
    lam = np.zeros(np.size(inst.bus_cap_kw))
    lp_s = 0.0
    if coupled:
        _, _, lam, lp_s, _ = _one_hot(inst, table, demand, qlo, hi, integral=False)
        # $/kW over the interval → multiplier on Δt·D; nudged up so that stations indifferent at the exact dual
        # (the LP mixes two of their levels) break the tie toward the feasible side of the row
        lam = lam / inst.dt_h * (1.0 + tie_nudge)
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
            if "seed" in accepted:
                params.setdefault("seed", int(rng.integers(2**31 - 1)))
            if sampler == "sa":
                steps = np.abs(np.diff(table, axis=1))
                small = steps[steps > 1e-12]
                cold = float(np.quantile(small, 0.02)) * 0.1 if small.size else 1e-6
                hot = float(span.max()) if span.max() > 0 else 1.0
                params.setdefault("beta_range", composites.beta_range(bqm, hot_energy=hot, cold_energy=cold))
            comps = [c for b in blocks for c in b.var.index.reshape(b.stations.size, -1)]
            ts = time.perf_counter()
            ss = composites.DecomposedSampler(base).sample(bqm, components=comps, **params)
            sample_s += time.perf_counter() - ts
            x = composites.samples_matrix(ss, model.n_vars)[0]
            levels = _decode(blocks, x, qlo)
        ev = evaluate(inst, levels)
        last = levels
        if ev["bus_violations"] == 0:
            if best is None or ev["objective_usd"] < best[0]:
                best = (ev["objective_usd"], levels)
            break
        # augmented-Lagrangian step on the violated rows: enough to price the overshoot out
        over = ev["bus_over_kw"]
        bump = np.where(over > 0, (np.abs(lam) + 0.5 * inst.cost_usd_per_kwh + 1e-3) * 2.0 ** (rounds - 1) * 0.25, 0.0)
        lam = lam + bump
    annealer_feasible = best is not None
    ann_levels = best[1] if best is not None else last
    ann_obj = evaluate(inst, ann_levels)["objective_usd"]
    final = ann_levels
    repaired = False
    if not annealer_feasible and repair:
        final = _repair(inst, ann_levels, hi, table, demand)
        repaired = True
    # tie-break toward users: a read at the base level moves down to the window's lowest level (same demand, cost)
    at_base = (final == qlo) & (qlo == kb) & (lo < kb)
    final = np.where(at_base, target, final)
    ann_levels = np.where((ann_levels == qlo) & (qlo == kb) & (lo < kb), target, ann_levels)
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


def gap(objective: float, ref: float) -> float:
    """Relative gap ``(objective − ref)/|ref|`` (0 when both are 0)."""
    return float((objective - ref) / abs(ref)) if ref else 0.0


@register
class QuboRTP(Mechanism):
    """Per-interval station prices by QUBO annealing with elasticity-driven response; see module docstring.

    ``clear`` prices the request's slots one after another (each slot one interval of the module docstring, the
    ramp limit chaining them), moving each EV's deferred energy into the following slots. Reads
    ``request.bus_ev_cap_kw`` ({bus: kW}) for the feeder rows and ``request.prev_station_price_usd_per_kwh``
    (per station, $/kWh; NaN or absent: the base price) for the ramp of the first slot. The simulation fills
    neither (its scenarios have no feeder EV caps, and each clearing starts the ramp at the base price); a request
    built by hand may carry both. ``result.info["station_price_usd_per_kwh"]`` holds the
    prices per slot and station; ``result.price_usd_per_mwh`` is their demand-weighted mean per slot.
    """

    name = "qubo-rtp"
    needs = frozenset({"bus_ev_cap_kw", "prev_station_price_usd_per_kwh"})  # filled only by hand (class docstring)
    parameters = {
        "bits": (5, "bits of the price level grid (paper: 5, i.e. 32 levels)"),
        "price_min_usd_per_kwh": (0.05, "lowest price [$/kWh] (paper 0.05)"),
        "price_max_usd_per_kwh": (0.35, "highest price [$/kWh] (paper 0.35)"),
        "base_price_usd_per_kwh": (0.12, "flat base price p0 [$/kWh] (paper 0.12)"),
        "ramp_max_usd_per_kwh": (0.05, "largest price change between intervals [$/kWh] (the paper gives none)"),
        "feeders_over_ramp": (True, "a feeder the ramp window cannot relieve lifts the ramp for its stations"),
        "w_ren_usd_per_kwh": (0.02, "weight of the renewable-alignment term [$/kWh]"),
        "w_cong_usd_per_kwh": (0.02, "weight of the congestion term [$/kWh]"),
        "urgency_floor": (0.2, "elasticity factor of the most urgent EVs (piecewise-linear logistic), in [0, 1]"),
        "sampler": ("sa", f"dimod sampler by name: {', '.join(samplers.names())}"),
        "num_reads": (4, "reads per sample call"),
        "num_sweeps": (100, "SA sweeps per read"),
        "al_rounds": (6, "augmented-Lagrangian rounds for the bus rows"),
        "repair": (True, "repair a read that still violates a bus row (reported separately)"),
        "reference": (False, "also solve the one-hot MILP in HiGHS every interval and report the gap"),
    }

    def _validate(self) -> None:
        p = self.params

        def num(x: Any) -> bool:
            return finite_number(x)

        def integer(x: Any, lo: int, hi: int) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and bool(lo <= x <= hi)

        lo_p, hi_p, p0 = p["price_min_usd_per_kwh"], p["price_max_usd_per_kwh"], p["base_price_usd_per_kwh"]
        checks = [
            ("bits", integer(p["bits"], 1, 10), "integer in [1, 10]"),
            ("price_min_usd_per_kwh", num(lo_p) and lo_p >= 0, ">= 0"),
            ("price_max_usd_per_kwh", num(hi_p) and num(lo_p) and hi_p > lo_p, "> price_min_usd_per_kwh"),
            (
                "base_price_usd_per_kwh",
                num(p0) and num(lo_p) and num(hi_p) and lo_p <= p0 <= hi_p and p0 > 0,
                "(0, ...] within [price_min_usd_per_kwh, price_max_usd_per_kwh]",
            ),
            ("ramp_max_usd_per_kwh", num(p["ramp_max_usd_per_kwh"]) and p["ramp_max_usd_per_kwh"] > 0, "> 0"),
            ("w_ren_usd_per_kwh", num(p["w_ren_usd_per_kwh"]) and p["w_ren_usd_per_kwh"] >= 0, ">= 0"),
            ("w_cong_usd_per_kwh", num(p["w_cong_usd_per_kwh"]) and p["w_cong_usd_per_kwh"] >= 0, ">= 0"),
            ("urgency_floor", num(p["urgency_floor"]) and 0 <= p["urgency_floor"] <= 1, "[0, 1]"),
            ("sampler", p["sampler"] in samplers.names(), ", ".join(samplers.names())),
            ("num_reads", integer(p["num_reads"], 1, 10_000), "integer in [1, 10000]"),
            ("num_sweeps", integer(p["num_sweeps"], 1, 1_000_000), "integer in [1, 1000000]"),
            ("al_rounds", integer(p["al_rounds"], 1, 100), "integer in [1, 100]"),
            ("repair", isinstance(p["repair"], bool), "true or false"),
            ("feeders_over_ramp", isinstance(p["feeders_over_ramp"], bool), "true or false"),
            ("reference", isinstance(p["reference"], bool), "true or false"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise MarketConfigError(f"market.params.{key}: got {p[key]!r}; allowed {allowed}")

    def instance(
        self,
        *,
        d0_kw: np.ndarray,
        elasticity: np.ndarray,
        cap_kw: np.ndarray,
        renewable_kw: np.ndarray,
        bus: np.ndarray,
        bus_cap_kw: np.ndarray,
        prev_level: np.ndarray | None,
        cost_usd_per_kwh: float,
        dt_h: float,
    ) -> RTPInstance:
        """An :class:`RTPInstance` with this mechanism's grid and weights; elasticities capped so that demand
        stays positive at the highest price."""
        p = self.params
        probe = RTPInstance(
            np.zeros(1),
            np.zeros(1),
            np.full(1, np.inf),
            np.zeros(1),
            np.full(1, -1),
            np.zeros(0),
            None,
            0.0,
            dt_h,
            p["bits"],
            p["price_min_usd_per_kwh"],
            p["price_max_usd_per_kwh"],
            p["base_price_usd_per_kwh"],
        )
        x_max = (probe.price(probe.levels) - probe.price(probe.base_level)) / p["base_price_usd_per_kwh"]
        eps_cap = 0.95 / x_max if x_max > 0 else np.inf
        return RTPInstance(
            np.asarray(d0_kw, float),
            np.minimum(np.asarray(elasticity, float), eps_cap),
            np.asarray(cap_kw, float),
            np.asarray(renewable_kw, float),
            np.asarray(bus, np.int64),
            np.asarray(bus_cap_kw, float),
            prev_level,
            float(cost_usd_per_kwh),
            float(dt_h),
            p["bits"],
            p["price_min_usd_per_kwh"],
            p["price_max_usd_per_kwh"],
            p["base_price_usd_per_kwh"],
            p["ramp_max_usd_per_kwh"],
            p["w_ren_usd_per_kwh"],
            p["w_cong_usd_per_kwh"],
            p["feeders_over_ramp"],
        )

    def _clear(self, request: MarketRequest) -> MarketResult:
        p = self.params
        evs, n, dt_h = request.evs, request.n_slots, request.dt_h
        n_ev = len(evs)
        n_st = int(
            max(
                evs.station.max() + 1 if n_ev else 0,
                0 if request.station_cap_kw is None else len(request.station_cap_kw),
                1,
            )
        )
        cap = np.full(n_st, np.inf)
        if request.station_cap_kw is not None:
            cap[: len(request.station_cap_kw)] = request.station_cap_kw
        cap = np.where(cap > 0, cap, np.inf)
        st_bus = np.zeros(n_st, np.int64)
        st_bus[evs.station] = evs.bus
        bus_caps: dict[int, float] = dict(request.bus_ev_cap_kw or {})
        rows_of = {b: r for r, b in enumerate(sorted(bus_caps))}
        bus_row = np.array([rows_of.get(int(b), -1) for b in st_bus], np.int64)
        bus_cap = np.array([bus_caps[b] for b in sorted(bus_caps)], float)
        prev_prices = request.prev_station_price_usd_per_kwh
        prev: np.ndarray | None = None
        probe = self.instance(
            d0_kw=np.zeros(1),
            elasticity=np.zeros(1),
            cap_kw=np.full(1, np.inf),
            renewable_kw=np.zeros(1),
            bus=np.full(1, -1),
            bus_cap_kw=np.zeros(0),
            prev_level=None,
            cost_usd_per_kwh=0.0,
            dt_h=dt_h,
        )
        if prev_prices is not None:
            pp = np.full(n_st, p["base_price_usd_per_kwh"])
            m = min(n_st, len(prev_prices))
            pp[:m] = np.where(np.isnan(prev_prices[:m]), pp[:m], prev_prices[:m])
            prev = np.clip(
                np.rint((pp - probe.price_min_usd_per_kwh) / probe.step_usd_per_kwh), 0, probe.levels
            ).astype(np.int64)
        avail = evs.availability(n)
        remaining = evs.e_need_kwh / evs.eta_ch  # grid energy still wanted [kWh]
        eps_ev = np.abs(evs.elasticity)
        cost = request.price_usd_per_mwh / 1000.0
        cost = np.where(np.isnan(cost), p["base_price_usd_per_kwh"], cost)
        p_kw = np.zeros((n_ev, n))
        prices = np.zeros((n, n_st))
        obj = {"energy_and_comfort_usd": 0.0}
        ref_obj = 0.0
        ann_obj = 0.0
        info_rows: list[dict[str, float]] = []
        # bus_cap_kw: largest overload of a bus row; bus_cap_avoidable_kw: the part the ramp limit did not force
        viol = {"bus_cap_kw": 0.0, "bus_cap_avoidable_kw": 0.0, "station_cap_kw": 0.0}
        for t in range(n):
            desire = np.minimum(evs.p_max_kw * avail[:, t], remaining / dt_h)
            desire = np.maximum(desire, 0.0)
            left_h = np.maximum((evs.end_slot - t - 1 + evs.end_frac) * dt_h, dt_h * 1e-3)
            urg = np.where(desire > 0, remaining / np.maximum(evs.p_max_kw * left_h, 1e-9), 0.0)
            e_i = eps_ev * urgency_factor(urg, p["urgency_floor"])
            d0 = np.bincount(evs.station, weights=desire, minlength=n_st) if n_ev else np.zeros(n_st)
            de = np.bincount(evs.station, weights=desire * e_i, minlength=n_st) if n_ev else np.zeros(n_st)
            eps_st = np.where(d0 > 0, de / np.where(d0 > 0, d0, 1.0), 0.0)
            ren = request.renewable_kw[t] * (d0 / d0.sum() if d0.sum() > 0 else np.zeros(n_st))
            inst = self.instance(
                d0_kw=d0,
                elasticity=eps_st,
                cap_kw=cap,
                renewable_kw=ren,
                bus=bus_row,
                bus_cap_kw=bus_cap,
                prev_level=prev,
                cost_usd_per_kwh=float(cost[t]),
                dt_h=dt_h,
            )
            try:
                sol = solve(
                    inst,
                    sampler=p["sampler"],
                    num_reads=p["num_reads"],
                    num_sweeps=p["num_sweeps"],
                    seed=int(self.rng.integers(2**31 - 1)),
                    al_rounds=p["al_rounds"],
                    repair=p["repair"],
                )
            except samplers.SamplerConfigError as err:  # e.g. 'exact' on more than a toy, or no Leap token
                raise MarketConfigError(f"market.params.sampler: {err}") from None
            row = {
                "wall_s": sol.wall_s,
                "n_vars": float(sol.n_vars),
                "repaired": float(sol.repaired),
                "al_rounds": float(sol.al_rounds),
                "lp_s": float(sol.info["lp_s"]),
                "sample_s": sol.sample_s,
                "annealer_feasible": float(sol.annealer_feasible),
            }
            obj["energy_and_comfort_usd"] += sol.objective_usd
            ann_obj += sol.annealer_objective_usd
            if p["reference"]:
                r = reference(inst)
                ref_obj += r.objective_usd
                row["gap"] = gap(sol.objective_usd, r.objective_usd)
                row["annealer_gap"] = gap(sol.annealer_objective_usd, r.objective_usd)
                row["milp_s"] = r.milp_s
                row["annealer_feasible"] = float(sol.annealer_feasible)
            info_rows.append(row)
            prices[t] = inst.price(sol.levels)
            dem = inst.demand_table()[np.arange(n_st), sol.levels]
            # EVs defer in proportion to their effective elasticity: p_i = d_i (1 − x e_i), x = Δp/p0
            x = np.maximum(prices[t] - inst.price(inst.base_level), 0.0) / inst.base_price_usd_per_kwh
            # Each EV's elasticity scaled by its station's (capped ÷ raw) mean, and the station's draw then held
            # to the modelled D[s, level] exactly: the load the EVs draw is the load the prices were chosen for
            # (so the bus and station checks below, made on the model, hold for the realised load too).
            if n_ev:
                ratio = np.divide(inst.elasticity, eps_st, out=np.ones(n_st), where=eps_st > 0)
                pw = desire * np.clip(1.0 - x[evs.station] * e_i * ratio[evs.station], 0.0, 1.0)
                got = np.bincount(evs.station, weights=pw, minlength=n_st)
                # too much: scale down; too little (EVs clipped at zero): fill the headroom up to each desire
                down = np.divide(dem, got, out=np.ones(n_st), where=got > dem)
                pw = pw * down[evs.station]
                got = np.bincount(evs.station, weights=pw, minlength=n_st)
                room = np.bincount(evs.station, weights=desire - pw, minlength=n_st)
                up = np.divide(np.maximum(dem - got, 0.0), room, out=np.zeros(n_st), where=room > 1e-12)
                pw = pw + (desire - pw) * np.minimum(up, 1.0)[evs.station]
            else:
                pw = desire
            # physical station cap (only binds where even the highest price cannot bring demand under it)
            st_load = np.bincount(evs.station, weights=pw, minlength=n_st) if n_ev else np.zeros(n_st)
            scale = np.ones(n_st)
            np.divide(cap, st_load, out=scale, where=st_load > cap)
            viol["station_cap_kw"] = max(viol["station_cap_kw"], float(np.max(np.maximum(dem - cap, 0.0))))
            ev_t = evaluate(inst, sol.levels)
            viol["bus_cap_kw"] = max(viol["bus_cap_kw"], float(ev_t["bus_over_physical_kw"].max(initial=0.0)))
            viol["bus_cap_avoidable_kw"] = max(
                viol["bus_cap_avoidable_kw"], float(ev_t["bus_over_kw"].max(initial=0.0))
            )
            pw = pw * scale[evs.station] if n_ev else pw
            p_kw[:, t] = pw
            remaining = np.maximum(remaining - pw * dt_h, 0.0)
            prev = sol.levels
        ev_kw = p_kw.sum(axis=0)
        st_energy = np.zeros((n, n_st))
        if n_ev:
            for t in range(n):
                st_energy[t] = np.bincount(evs.station, weights=p_kw[:, t], minlength=n_st)
        tot = st_energy.sum(axis=1)
        mean_price = np.where(
            tot > 0, (prices * st_energy).sum(axis=1) / np.where(tot > 0, tot, 1.0), prices.mean(axis=1)
        )
        walls = np.array([r["wall_s"] for r in info_rows])
        info: dict[str, Any] = {
            "station_price_usd_per_kwh": prices,
            "interval_wall_s_mean": float(walls.mean()),
            "interval_wall_s_max": float(walls.max()),
            "repaired_intervals": int(sum(r["repaired"] for r in info_rows)),
            "annealer_objective_usd": ann_obj,
            "intervals": info_rows,  # per slot: wall_s, n_vars, repaired, annealer_feasible (+ gap, milp_s)
            "sampler": p["sampler"],
        }
        gap_total = None
        if p["reference"]:
            info["gap_max"] = max(r["gap"] for r in info_rows)
            info["annealer_gap_max"] = max(r["annealer_gap"] for r in info_rows)
            gap_total = gap(obj["energy_and_comfort_usd"], ref_obj)
        return MarketResult(
            mechanism=self.name,
            price_usd_per_mwh=mean_price * 1000.0,
            p_kw=p_kw,
            objective={
                **obj,
                "ev_energy_cost_usd": float((st_energy * prices).sum() * dt_h),
                "ev_peak_kw": float(ev_kw.max(initial=0.0)),
            },
            violations=viol,
            info=info,
            reference_objective=ref_obj if p["reference"] else None,
            gap=gap_total,
        )
