"""The `qubo-rtp` formulation: one slot's station-pricing instance, its exact reference (HiGHS), the evaluation of a
price choice, and the QUBO built from it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from markets.qubo import encoding, highs
from markets.qubo.model import IntVar, QuboModel

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
