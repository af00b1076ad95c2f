"""`eho-bilevel`: the bilevel DR-price / station-limit model of Priolkar & Kunkolienkar (`004_…`), solved with EHO.

**Upper level (aggregator, eq. 6–9, 13–16).** The decision vector is
``x = [m_1 … m_P, L_1 … L_S]``: one DR price multiplier per price period (the 24 hours of the day; Table 1:
``DP(t) ∈ [0.8, 2.0] × BP(t)``) and one power limit per station (Table 1: ``[50, 150] kW``). It maximises::

    J(x) = α1·F1/C0 − α2·F2/F2_0 − α3·F3/F3_0 − penalties
    F1 = Σ_t (DP_t − BP_t)·P_t·Δt          DR revenue [$] (eq. 6; P_t = EV load of slot t)
    F2 = var_t(base_t + P_t)               grid stress [kW²] (eq. 7: variance of the total load about its mean)
    F3 = Σ_i (t_plug,i − t_arrival,i)      waiting [h] (eq. 8, see below)

**Normalisation** ("normalization factors applied for dimensional consistency", eq. 9, not given): each term is
divided by its value in the uncontrolled case — every EV charges at full rate from plug-in, at its own station,
at the base price, no station limits beyond the physical caps — so ``J`` is dimensionless and ``F2/F2_0 = 1``
means "as stressed as uncontrolled charging". ``F1`` is 0 there, so it is divided by the users' uncontrolled
energy bill ``C0 = Σ_t BP_t·P0_t·Δt`` instead: ``F1/C0`` is the DR revenue as a share of what users paid
before. Where ``F3_0 = 0`` (no queue) ``F3`` is divided by one hour per EV.

**Waiting** (eq. 8, "time between EV arrival and charging initiation") is the time an EV queues for a port,
``t_plug − t_arrival`` — what the simulation measures (`sim.kpis`: plug-in − arrival) and what the paper's
Table 4 reports. Read literally as the first slot with power > 0 it could be zeroed by a trickle of charge at
plug-in, so it would not measure anything (next paragraph). An EV that reneges waits until its departure.

Constraints: station capacity (eq. 13) is kept exactly by construction (every schedule respects
``min(C_k, L_k)`` minus the load already booked at the station); DR price bounds (eq. 14, read as
``DP_min ≤ DP ≤ DP_max``; the printed ``=`` is a typo) are the search box; the grid connection limit (eq. 15,
``grid_max_kw``), the DR obligation (eq. 16; both printed ``≥``, read as: the energy moved out of the slots where
uncontrolled charging would have drawn it must be at least ``dr_min_kwh``) and Table 11's validation thresholds
(energy fulfilment ≥ ``min_fulfilment``, default 95 %; longest wait ≤ ``max_wait_h``, off by default) are
penalties (``penalty × relative violation``), because EHO is an unconstrained search.

**Lower level (EV users, eq. 10–12, 17–19).** Each EV minimises ``H = δ·cost + ε·(t_end − t_arrival)``
(cost [$] at the DR price; ``t_end`` = end of its last charging slot, when it is charged and frees its port)
subject to its energy need (eq. 17), its window (eq. 18, from plug-in to departure) and its rate (eq. 19), and
the station's remaining capacity. Readings:

* **The user's wait is the time until charged.** Eq. 11 writes ``t_start − t_arrival``; with per-slot powers
  (Table 2) that term is degenerate — a trickle in the plug-in slot makes it minimal at no cost while the bulk
  still goes to the cheapest slots, so ``ε`` would change nothing. What a user waits for is the charged car: we
  use ``t_end − t_arrival`` (queue + deferral + charging), which equals the printed term plus the charging time
  when charging is contiguous. ``ε`` [$/h] is what an hour sooner is worth to the user (the paper gives no value;
  default 0.25 $/h).
* **Energy is a hard constraint** (eq. 17): an EV takes its whole need when its window allows, else as much as
  it can; among schedules that deliver that much it minimises ``H``.
* **Exact best response.** For a fixed last slot ``e`` the problem is a continuous knapsack (linear cost, one
  energy row, a box per slot) and filling the cheapest slots ``≤ e`` first is optimal; the minimum over the
  ≤ 24 possible last slots of ``δ·C(e) + ε·(t_end(e) − t_arrival)`` is the exact optimum of the mixed-integer
  problem (a fill for ``e`` that ends earlier is only better, and is itself a candidate; tested against a
  HiGHS MILP).
* **Station capacity is booked first-come, first-served.** EVs answer in arrival order, each against the
  capacity left by those before it — the rule the simulation's aggregator applies when it commits schedules
  (``committed_station_kw``). Under FIFO ports an EV's wait depends only on EVs that arrived earlier, so this
  sequential best response is an equilibrium of the followers' game: no EV can do better by deviating.
* **Wait comes from the port queues.** Ports are a FIFO queue per station, simulated event by event exactly as
  the simulation's `simpy.Resource` does it (tested against SimPy, and against the co-simulation on the paper
  scenario): an EV gets the first port that frees, and a port frees when its EV is full (at the end of its last
  charging slot, ``release_when_full``) or departs; an EV still queued at its departure leaves without charging
  (reneges). Charging starts at a slot boundary, as in the simulation (an EV plugged at 10:20 first charges at
  11:00). So a follower that defers charging to cheap hours holds its port longer and makes the EVs behind it
  wait — the externality the upper level's ``α3·F3`` prices in.
* **Where the user charges** (optional, ``alternatives``): a user can shorten their wait only by choosing
  *where* (or when) to charge; eq. 20 ("location capacity … charging station within a certain radius") and the
  paper's advice to "redirect new EV users to stations 8–10" say the same. With ``alternatives[k]`` = the
  stations a user of station ``k`` would also accept, a following user picks the station (own first on ties)
  that minimises its ``H``, knowing the queues (the paper's "wait time predictions"). Without ``alternatives``
  every EV charges at its own station — the simulation's case: an EV's station is fixed before any market sees
  it. At a fixed station whose cap does not bind, full rate from plug-in frees every port soonest (by induction
  over the FIFO queue), so no schedule can then beat uncontrolled charging on queue waits.
* **Users who do not follow** (``follows = False``; Table 11's "participation rate in DR") charge as soon as
  they plug in, at their own station, and respond to the DR price only through their price elasticity ``e``
  (eq. 4 with ``c0 = BP``): in slot ``t`` they draw ``p_max · clip(1 + e·(DP_t − BP_t)/BP_t, 0, 1)``, i.e. they
  slow down when the DR price is above the base price (they never exceed their rating) and keep charging until
  full or gone.
* **Station limits** bind only when more EVs charge at once at a station than ``L_k / p_max``; with the paper's
  7-kW chargers and 2 ports per station (`eho-bilevel-10stations`) a limit ≥ 50 kW never binds, so that half of
  ``x`` is inert there (the search still carries it, as the paper's does).

**Not modelled**: Table 1's 50 "priority weights" (the paper never says what they weight); the DR incentive and
penalty of eq. 2–5 (the paper's EHO objective does not contain them); travel times (no data).

Everything here works without the simulation: build a :class:`BilevelProblem` from a session list and call
:meth:`BilevelProblem.evaluate`. The lower level runs in one compiled kernel (numba, a pinned dependency; the
same function runs as plain Python when numba is missing or ``EVGRID_NO_NUMBA=1``), ~0.1 ms per candidate for 50
EVs, so EHO's 50 × 50 evaluations take well under a second.

Example:
    >>> import numpy as np
    >>> s = Sessions(arrival_h=[0.0, 0.5], departure_h=[6.0, 6.0], need_kwh=[14.0, 7.0], p_max_kw=7.0,
    ...              station=0)
    >>> bp = np.array([0.15, 0.15, 0.12, 0.12, 0.12, 0.15])
    >>> prob = BilevelProblem(s, dt_h=1.0, base_price_usd_per_kwh=bp, base_load_kw=np.full(6, 50.0),
    ...                       ports=[1], station_cap_kw=[100.0], epsilon=0.0)
    >>> r = prob.uncontrolled()
    >>> r.p_kw.tolist(), r.plugin_h.tolist()       # FIFO: EV 1 waits for EV 0's port until 2:00
    ([[7.0, 7.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 7.0, 0.0, 0.0, 0.0]], [0.0, 2.0])
    >>> obj, d = prob.evaluate(np.r_[np.ones(6), 100.0])   # base prices: followers defer to the cheap slots
    >>> d["response"].p_kw.tolist()
    [[0.0, 0.0, 7.0, 7.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 7.0, 0.0]]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from markets.base import (
    MarketConfigError,
    MarketRequest,
    MarketResult,
    Mechanism,
    finite_number,
    register,
)

_TOL = 1e-9


# ----------------------------------------------------------------------------------------------- lower level
def _respond_kernel(
    arr,
    dep,
    e_grid,
    pmax,
    follows,
    elast,
    home,
    alt,
    n_alt,
    port_free0,
    n_ports,
    release_full,
    cap_eff,
    booked0,
    price,
    base_price,
    dt,
    delta,
    eps,
    uncontrolled,
    p_out,
    station_out,
    plugin_out,
    start_out,
    release_out,
    reneged_out,
):  # pragma: no cover - jit
    """The lower level and the port queues, EV by EV in arrival order (see module docstring).

    Written in plain loops over arrays so that numba compiles it unchanged; the Python original is the fallback.
    Outputs are written into ``p_out`` (n, T) [kW], ``station_out``, ``plugin_out``, ``start_out``, ``release_out``
    [h] and ``reneged_out``.
    """
    n = arr.shape[0]
    T = price.shape[0]
    port_free = port_free0.copy()
    booked = booked0.copy()
    caps = np.zeros(T)
    cand = np.zeros(T)
    best = np.zeros(T)
    for i in range(n):
        a = arr[i]
        d = dep[i]
        e_need = e_grid[i]
        h = home[i]
        n_c = 1
        if (not uncontrolled) and follows[i]:
            n_c = n_alt[h]
        best_e = -1.0
        best_h = np.inf
        best_c = h
        best_port = -1
        best_plug = d
        best_start = d
        best_ren = True
        for ci in range(n_c):
            c = alt[h, ci]
            # FIFO: the first port to free (all EVs that arrived earlier already hold theirs)
            j = 0
            for q in range(1, n_ports[c]):
                if port_free[c, q] < port_free[c, j]:
                    j = q
            g = max(a, port_free[c, j])
            for k in range(T):
                cand[k] = 0.0
            if g >= d:
                e_got = 0.0
                h_val = eps * (d - a)
                plug = d
                start = d
                ren = True
            else:
                plug = g
                ren = False
                k0 = int(math.ceil(g / dt - 1e-9))
                kd = int(math.ceil(d / dt - 1e-9))
                kend = min(kd, T)
                frac = 1.0
                if kd <= T:
                    frac = d / dt - (kend - 1)
                    if frac > 1.0:
                        frac = 1.0
                cost = 0.0
                if k0 < kend:
                    room = 0.0
                    for k in range(k0, kend):
                        av = frac if k == kend - 1 else 1.0
                        r = cap_eff[c] - booked[c, k]
                        cp = pmax[i] * av
                        if r < cp:
                            cp = r
                        if cp < 0.0:
                            cp = 0.0
                        caps[k] = cp
                        room += cp * dt
                    target = min(e_need, room)
                    if uncontrolled or not follows[i]:
                        rem = target
                        for k in range(k0, kend):
                            if rem <= _TOL:
                                break
                            cp = caps[k]
                            if (not uncontrolled) and base_price[k] > 0:
                                f = 1.0 + elast[i] * (price[k] - base_price[k]) / base_price[k]
                                if f < 0.0:
                                    f = 0.0
                                if f > 1.0:
                                    f = 1.0
                                av = frac if k == kend - 1 else 1.0
                                lim = pmax[i] * av * f
                                if lim < cp:
                                    cp = lim
                            take = min(cp * dt, rem)
                            cand[k] = take / dt
                            rem -= take
                            cost += take * price[k]
                    elif target > _TOL:
                        # exact best response: for every possible last charging slot e, the cheapest fill of
                        # slots k0..e (a continuous knapsack); keep the e with the smallest δ·cost + ε·(t_end − a)
                        m = kend - k0
                        order = np.argsort(price[k0:kend], kind="mergesort")
                        e_best = -1
                        h_best = np.inf
                        room_e = 0.0
                        for e in range(k0, kend):
                            room_e += caps[e] * dt
                            if room_e < target - 1e-7 * max(1.0, target):
                                continue
                            rem = target
                            cs = 0.0
                            for oi in range(m):
                                k = k0 + order[oi]
                                if k > e:
                                    continue
                                take = min(caps[k] * dt, rem)
                                cs += take * price[k]
                                rem -= take
                                if rem <= _TOL:
                                    break
                            hv = delta * cs + eps * (min((e + 1) * dt, d) - a)
                            if hv < h_best - 1e-12:
                                h_best = hv
                                e_best = e
                        rem = target
                        for oi in range(m):
                            k = k0 + order[oi]
                            if k > e_best:
                                continue
                            take = min(caps[k] * dt, rem)
                            cand[k] = take / dt
                            cost += take * price[k]
                            rem -= take
                            if rem <= _TOL:
                                break
                e_got = 0.0
                first = -1
                last = -1
                for k in range(T):
                    if cand[k] > 1e-12:
                        e_got += cand[k] * dt
                        last = k
                        if first < 0:
                            first = k
                start = first * dt if first >= 0 else g
                t_end = min((last + 1) * dt, d) if last >= 0 else g
                h_val = delta * cost + eps * (t_end - a)
            if e_got > best_e + 1e-9 or (abs(e_got - best_e) <= 1e-9 and h_val < best_h - 1e-12):
                best_e = e_got
                best_h = h_val
                best_c = c
                best_port = j
                best_plug = plug
                best_start = start
                best_ren = ren
                for k in range(T):
                    best[k] = cand[k]
        # commit the choice: book the station's capacity and the port
        station_out[i] = best_c
        plugin_out[i] = best_plug
        start_out[i] = best_start
        reneged_out[i] = best_ren
        last = -1
        for k in range(T):
            p_out[i, k] = best[k]
            booked[best_c, k] += best[k]
            if best[k] > 1e-12:
                last = k
        if best_ren:
            release_out[i] = d
        else:
            rel = d
            if release_full[best_c] and best_e >= e_need - 1e-6:
                rel = best_plug if last < 0 else min((last + 1) * dt, d)
            release_out[i] = rel
            port_free[best_c, best_port] = rel


_KERNEL: Callable[..., None] | None = None


def _kernel() -> Callable[..., None]:
    """The compiled kernel (numba, cached on disk), or the Python original when numba is unavailable/disabled."""
    global _KERNEL
    if _KERNEL is None:
        fn: Callable[..., None] = _respond_kernel
        if os.environ.get("EVGRID_NO_NUMBA", "") not in ("1", "true"):
            try:
                import numba

                fn = numba.njit(cache=True)(_respond_kernel)
            except Exception:  # pragma: no cover - numba missing or broken: the same code, interpreted
                fn = _respond_kernel
        _KERNEL = fn
    return _KERNEL


# ----------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Sessions:
    """EV charging sessions, one entry per EV (struct of arrays; scalars broadcast).

    Attributes:
        arrival_h: arrival at the station [h since slot 0 of the problem].
        departure_h: latest departure [h]; an EV still queued then leaves without charging.
        need_kwh: battery energy wanted [kWh].
        p_max_kw: charger rating [kW] (grid side).
        station: the EV's own station (index).
        eta_ch: charging efficiency (grid energy = need / eta).
        follows: whether the user follows the aggregator's DR program (best response); else elastic.
        elasticity: price elasticity of a non-following user (≤ 0).
    """

    arrival_h: Any
    departure_h: Any
    need_kwh: Any
    p_max_kw: Any = 7.0
    station: Any = 0
    eta_ch: Any = 1.0
    follows: Any = True
    elasticity: Any = -0.3

    def __post_init__(self) -> None:
        n = len(np.atleast_1d(self.arrival_h))
        for f in fields(self):
            dtype = int if f.name == "station" else (bool if f.name == "follows" else float)
            a = np.broadcast_to(np.asarray(getattr(self, f.name), dtype), (n,)).copy()
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise ValueError(f"sessions.{f.name}: contains NaN or inf")
            a.setflags(write=False)
            object.__setattr__(self, f.name, a)
        if np.any(self.departure_h < self.arrival_h):
            raise ValueError("sessions.departure_h: must be >= arrival_h")
        if np.any(self.need_kwh < 0) or np.any(self.p_max_kw < 0):
            raise ValueError("sessions.need_kwh/p_max_kw: must be >= 0")
        if np.any((self.eta_ch <= 0) | (self.eta_ch > 1)):
            raise ValueError("sessions.eta_ch: allowed range is (0, 1]")
        if np.any(self.elasticity > 0):
            raise ValueError("sessions.elasticity: must be <= 0")

    def __len__(self) -> int:
        return len(self.arrival_h)

    def select(self, idx: Any) -> Sessions:
        return Sessions(*(getattr(self, f.name)[idx] for f in fields(self)))


@dataclass(frozen=True)
class Response:
    """The lower level's answer to one upper-level decision (and the port queues it implies).

    Attributes:
        p_kw: grid-side charging power per EV and slot [kW], shape (n, T) (EVs in the problem's session order).
        station: station each EV charged at.
        plugin_h: time the EV got a port [h] (departure for EVs that reneged).
        start_h: start of its first charging slot [h] (plug-in if it never charged, departure if it reneged).
        release_h: time it freed its port [h].
        reneged: EVs that left without a port.
        price_usd_per_kwh: the DR price per slot [$/kWh].
        limit_kw: the station power limits in force [kW].
    """

    p_kw: np.ndarray
    station: np.ndarray
    plugin_h: np.ndarray
    start_h: np.ndarray
    release_h: np.ndarray
    reneged: np.ndarray
    price_usd_per_kwh: np.ndarray
    limit_kw: np.ndarray


@dataclass
class _Baseline:
    response: Response
    cost_usd: float
    variance_kw2: float
    wait_h: float
    ev_kw: np.ndarray = field(repr=False)


class BilevelProblem:
    """The bilevel model of `004_…` for a known set of sessions (usable without any simulation).

    Args:
        sessions: the EV sessions (any order; kept sorted by arrival internally, results in the given order).
        dt_h: slot length [h].
        base_price_usd_per_kwh: base price ``BP`` per slot [$/kWh], shape (T,).
        base_load_kw: non-EV load per slot [kW], shape (T,) (plus EV load committed earlier, if any).
        ports: ports per station.
        station_cap_kw: physical power cap per station [kW] (inf = none).
        slot_period: price period of each slot (default: hour of the slot, ``floor(t0_h + k·dt) mod 24``); one
            multiplier per distinct period is optimised.
        t0_h: time of day of slot 0 [h] (only used for the default ``slot_period``).
        alternatives: per station, the stations its users would also accept (own station first); None = own only.
        weights: (α1, α2, α3) of eq. 9.
        delta, epsilon: lower-level weights of cost [1/$] and wait [1/h] (eq. 12).
        price_bounds: bounds of the DR price multipliers (Table 1).
        limit_bounds: bounds of the station power limits [kW] (Table 1).
        release_when_full: per station (or scalar): EVs free the port once full (else at departure).
        grid_max_kw: grid connection limit of the total load (eq. 15) [kW].
        dr_min_kwh: DR obligation (eq. 16): minimum EV energy moved out of its uncontrolled slot [kWh].
        min_fulfilment: Table 11's threshold on energy fulfilment (delivered ÷ needed over all EVs), or 0.
        max_wait_h: Table 11's threshold on the longest queue wait [h] (inf = none).
        penalty: weight of a relative constraint violation in ``J``.
        booked_station_kw: EV load already booked at each station per slot [kW], shape (S, T) (rolling use).
        port_free_h: per station, times its ports free (busy ports) [h]; missing ports are free from the start.
    """

    def __init__(
        self,
        sessions: Sessions,
        *,
        dt_h: float,
        base_price_usd_per_kwh: Any,
        base_load_kw: Any,
        ports: Any,
        station_cap_kw: Any,
        slot_period: Any = None,
        t0_h: float = 0.0,
        alternatives: Sequence[Sequence[int]] | None = None,
        weights: tuple[float, float, float] = (0.6, 0.3, 0.1),
        delta: float = 1.0,
        epsilon: float = 0.25,
        price_bounds: tuple[float, float] = (0.8, 2.0),
        limit_bounds: tuple[float, float] = (50.0, 150.0),
        release_when_full: Any = True,
        grid_max_kw: float = np.inf,
        dr_min_kwh: float = 0.0,
        min_fulfilment: float = 0.95,
        max_wait_h: float = np.inf,
        penalty: float = 10.0,
        booked_station_kw: Any = None,
        port_free_h: Sequence[Sequence[float]] | None = None,
    ) -> None:
        self.base_price = np.asarray(base_price_usd_per_kwh, float).copy()
        T = self.base_price.size
        self.n_slots = T
        self.dt_h = float(dt_h)
        self.base_load = np.broadcast_to(np.asarray(base_load_kw, float), (T,)).copy()
        if np.any(self.base_price <= 0):
            raise ValueError("base_price_usd_per_kwh: must be > 0")
        self.ports = np.atleast_1d(np.asarray(ports, int)).copy()
        S = self.ports.size
        self.n_stations = S
        self.cap = np.broadcast_to(np.asarray(station_cap_kw, float), (S,)).copy()
        self.release_full = np.broadcast_to(np.asarray(release_when_full, bool), (S,)).copy()
        if np.any(self.ports < 1):
            raise ValueError("ports: every station needs at least one port")
        order = np.argsort(sessions.arrival_h, kind="stable")
        self.order = order
        self.sessions = sessions
        s = sessions.select(order)
        if len(s) and (s.station.min() < 0 or s.station.max() >= S):
            raise ValueError(f"sessions.station: must be in 0..{S - 1}")
        self._s = s
        if slot_period is None:
            slot_period = np.floor(t0_h + np.arange(T) * self.dt_h + 1e-9).astype(int) % 24
        sp = np.asarray(slot_period, int)
        self.periods, self.slot_period = np.unique(sp, return_inverse=True)
        self.n_price = self.periods.size
        self.weights = tuple(float(w) for w in weights)
        self.delta, self.epsilon = float(delta), float(epsilon)
        self.price_bounds = (float(price_bounds[0]), float(price_bounds[1]))
        self.limit_bounds = (float(limit_bounds[0]), float(limit_bounds[1]))
        self.grid_max_kw = float(grid_max_kw)
        self.dr_min_kwh = float(dr_min_kwh)
        self.min_fulfilment = float(min_fulfilment)
        self.max_wait_h = float(max_wait_h)
        self.penalty = float(penalty)
        # alternatives as a padded matrix, own station first
        alts = (
            [[k] for k in range(S)]
            if alternatives is None
            else [[k] + [int(j) for j in alternatives[k] if int(j) != k] for k in range(S)]
        )
        width = max(len(a) for a in alts)
        self.alt = np.array([a + [a[0]] * (width - len(a)) for a in alts], np.int64)
        self.n_alt = np.array([len(a) for a in alts], np.int64)
        self.booked0 = np.zeros((S, T)) if booked_station_kw is None else np.asarray(booked_station_kw, float).copy()
        width_p = int(self.ports.max())
        self.port_free0 = np.full((S, width_p), np.inf)
        for k in range(S):
            self.port_free0[k, : self.ports[k]] = -np.inf
            if port_free_h is not None:
                busy = sorted(float(t) for t in port_free_h[k])[: self.ports[k]]
                self.port_free0[k, : len(busy)] = busy
        self._e_grid = s.need_kwh / s.eta_ch
        self.n_evals = 0
        self._base: _Baseline | None = None

    # ------------------------------------------------------------------ decision vector
    @property
    def n_dim(self) -> int:
        """Length of the upper-level vector ``x`` (price multipliers, then station limits)."""
        return self.n_price + self.n_stations

    @property
    def lower(self) -> np.ndarray:
        return np.r_[np.full(self.n_price, self.price_bounds[0]), np.full(self.n_stations, self.limit_bounds[0])]

    @property
    def upper(self) -> np.ndarray:
        return np.r_[np.full(self.n_price, self.price_bounds[1]), np.full(self.n_stations, self.limit_bounds[1])]

    def decode(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """(DR price per slot [$/kWh], station limits [kW]) of ``x``, clipped into the bounds."""
        x = np.clip(np.asarray(x, float), self.lower, self.upper)
        mult = x[: self.n_price][self.slot_period]
        return self.base_price * mult, x[self.n_price :]

    # ------------------------------------------------------------------ lower level
    def _run(self, price: np.ndarray, cap_eff: np.ndarray, *, uncontrolled: bool) -> Response:
        s, T = self._s, self.n_slots
        n = len(s)
        p = np.zeros((n, T))
        st = np.zeros(n, np.int64)
        plug, start, rel = np.zeros(n), np.zeros(n), np.zeros(n)
        ren = np.zeros(n, np.bool_)
        _kernel()(
            s.arrival_h,
            s.departure_h,
            self._e_grid,
            s.p_max_kw,
            s.follows,
            s.elasticity,
            s.station.astype(np.int64),
            self.alt,
            self.n_alt,
            self.port_free0,
            self.ports.astype(np.int64),
            self.release_full,
            cap_eff,
            self.booked0,
            price,
            self.base_price,
            self.dt_h,
            self.delta,
            self.epsilon,
            uncontrolled,
            p,
            st,
            plug,
            start,
            rel,
            ren,
        )
        inv = np.empty_like(self.order)
        inv[self.order] = np.arange(n)
        return Response(
            p_kw=p[inv],
            station=st[inv],
            plugin_h=plug[inv],
            start_h=start[inv],
            release_h=rel[inv],
            reneged=ren[inv],
            price_usd_per_kwh=price,
            limit_kw=cap_eff,
        )

    def respond(self, x: Any) -> Response:
        """The lower level's answer (schedules, stations, queue times) to the upper-level decision ``x``."""
        price, limits = self.decode(x)
        return self._run(price, np.minimum(self.cap, limits), uncontrolled=False)

    def uncontrolled(self) -> Response:
        """Every EV at its own station, full rate from plug-in, base prices, physical caps only."""
        return self._run(self.base_price.copy(), self.cap.copy(), uncontrolled=True)

    # ------------------------------------------------------------------ upper level
    @property
    def baseline(self) -> _Baseline:
        """The uncontrolled case and its normalisers ``C0``, ``F2_0``, ``F3_0``."""
        if self._base is None:
            r = self.uncontrolled()
            ev = r.p_kw.sum(axis=0)
            total = self.base_load + ev
            cost = float((self.base_price * ev).sum() * self.dt_h)
            wait = float((r.plugin_h - self.sessions.arrival_h).sum())
            self._base = _Baseline(r, cost, float(total.var()), wait, ev)
        return self._base

    def terms(self, r: Response) -> dict[str, float]:
        """Objective terms and constraint measures of a response (unnormalised, with units)."""
        ev = r.p_kw.sum(axis=0)
        total = self.base_load + ev
        dt = self.dt_h
        b = self.baseline
        s = self.sessions
        delivered = r.p_kw.sum(axis=1) * dt * s.eta_ch
        need = float(s.need_kwh.sum())
        wait = r.plugin_h - s.arrival_h
        return {
            "dr_revenue_usd": float(((r.price_usd_per_kwh - self.base_price) * ev).sum() * dt),
            "grid_stress_kw2": float(total.var()),
            "wait_total_h": float((r.plugin_h - self.sessions.arrival_h).sum()),
            "user_cost_usd": float((r.price_usd_per_kwh * ev).sum() * dt),
            "grid_excess_kwh": float(np.clip(total - self.grid_max_kw, 0, None).sum() * dt),
            "dr_shifted_kwh": float(np.clip(b.ev_kw - ev, 0, None).sum() * dt),
            "fulfilment": float(delivered.sum() / need) if need > 0 else 1.0,
            "wait_max_h": float(wait.max()) if wait.size else 0.0,
        }

    def objective(self, r: Response) -> tuple[float, dict[str, float]]:
        """``J`` (to maximise) of a response, with its normalised terms."""
        t = self.terms(r)
        b = self.baseline
        n = max(len(self.sessions), 1)

        f1 = t["dr_revenue_usd"] / b.cost_usd if b.cost_usd > 0 else 0.0
        f2 = t["grid_stress_kw2"] / b.variance_kw2 if b.variance_kw2 > 0 else 0.0
        f3 = t["wait_total_h"] / (b.wait_h if b.wait_h > 1e-9 else float(n))
        pen = 0.0
        e_ev = max(float(b.ev_kw.sum() * self.dt_h), 1e-9)
        pen += self.penalty * t["grid_excess_kwh"] / e_ev
        if self.dr_min_kwh > 0:
            pen += self.penalty * max(self.dr_min_kwh - t["dr_shifted_kwh"], 0.0) / self.dr_min_kwh
        if self.min_fulfilment > 0:
            pen += self.penalty * max(self.min_fulfilment - t["fulfilment"], 0.0) / self.min_fulfilment
        if np.isfinite(self.max_wait_h):
            pen += self.penalty * max(t["wait_max_h"] - self.max_wait_h, 0.0) / max(self.max_wait_h, 1.0)
        a1, a2, a3 = self.weights
        j = a1 * f1 - a2 * f2 - a3 * f3 - pen
        return float(j), {**t, "f1_norm": f1, "f2_norm": f2, "f3_norm": f3, "penalty": pen}

    def evaluate(self, x: Any) -> tuple[float, dict[str, Any]]:
        """Objective ``J(x)`` (to maximise) and details: the normalised terms and the lower-level response."""
        self.n_evals += 1
        r = self.respond(x)
        j, t = self.objective(r)
        return j, {**t, "response": r}

    def loss(self, x: Any) -> float:
        """``−J(x)``: the function a minimiser (EHO, DE, random search) is given."""
        self.n_evals += 1
        return -self.objective(self.respond(x))[0]

    # ------------------------------------------------------------------ reporting
    def metrics(self, r: Response) -> dict[str, float]:
        """The paper's indicators (Tables 4, 5, 7, 8, 10, 11) of a response."""
        s = self.sessions
        ev = r.p_kw.sum(axis=0)
        total = self.base_load + ev
        dt = self.dt_h
        horizon = self.n_slots * dt
        qwait = r.plugin_h - s.arrival_h
        swait = r.start_h - s.arrival_h
        delivered = r.p_kw.sum(axis=1) * dt * s.eta_ch
        done = s.departure_h <= horizon + 1e-9
        need = s.need_kwh
        util = self.station_utilisation(r)
        st_load = np.zeros((self.n_stations, self.n_slots))
        np.add.at(st_load, r.station, r.p_kw)
        t = self.terms(r)
        return {
            "peak_kw": float(total.max()),
            "load_factor": float(total.mean() / total.max()) if total.max() > 0 else 0.0,
            "min_load_kw": float(total.min()),
            "load_variance_kw2": float(total.var()),
            "max_deviation_kw": float(np.abs(total - total.mean()).max()),
            "ev_peak_kw": float(ev.max()),
            "ev_energy_kwh": float(ev.sum() * dt),
            "wait_mean_h": float(qwait.mean()) if qwait.size else 0.0,
            "wait_median_h": float(np.median(qwait)) if qwait.size else 0.0,
            "wait_max_h": float(qwait.max()) if qwait.size else 0.0,
            "wait_std_h": float(qwait.std()) if qwait.size else 0.0,
            "start_delay_mean_h": float(swait.mean()) if swait.size else 0.0,
            "start_delay_max_h": float(swait.max()) if swait.size else 0.0,
            "n_reneged": int(r.reneged.sum()),
            "dr_revenue_usd": t["dr_revenue_usd"],
            "user_cost_usd": t["user_cost_usd"],
            "station_utilisation_min": float(util.min()),
            "station_utilisation_mean": float(util.mean()),
            "station_utilisation_max": float(util.max()),
            "station_capacity_compliance": float((st_load <= self.cap[:, None] + 1e-6).mean()),
            "station_limit_compliance": float((st_load <= r.limit_kw[:, None] + 1e-6).mean()),
            "energy_fulfilment": float(delivered[done].sum() / need[done].sum()) if need[done].sum() > 0 else 1.0,
            "min_ev_fulfilment": float(np.min(np.where(need > 0, delivered / np.where(need > 0, need, 1), 1.0)))
            if need.size
            else 1.0,
            "dr_participation": float(s.follows.mean()) if len(s) else 0.0,
            "n_redirected": int((r.station != s.station).sum()),
        }

    def station_utilisation(self, r: Response) -> np.ndarray:
        """Share of port-hours occupied per station over the horizon."""
        horizon = self.n_slots * self.dt_h
        busy = np.clip(np.minimum(r.release_h, horizon) - np.where(r.reneged, horizon, r.plugin_h), 0, None)
        return np.bincount(r.station, weights=busy, minlength=self.n_stations) / (self.ports * horizon)


# ----------------------------------------------------------------------------------------------- searches
def solve(
    problem: BilevelProblem,
    *,
    method: str = "eho",
    n_elephants: int = 50,
    n_clans: int = 5,
    n_iter: int = 50,
    alpha: float = 0.6,
    beta: float = 0.3,
    n_elite: int = 2,
    n_evals: int | None = None,
    seed: Any = None,
) -> dict[str, Any]:
    """Search the upper level of ``problem`` with EHO (`markets.eho`), random search or SciPy DE.

    ``method="eho"`` runs ``n_elephants × n_iter`` iterations (plus the initial population); the other two run
    ``n_evals`` objective evaluations (default: as many as EHO would), so searches compare at equal budgets.

    Returns:
        dict with ``x`` (best upper-level vector), ``objective`` (``J``, maximised), ``history`` (best ``J`` per
        iteration), ``n_evals`` (evaluations counted by the problem), ``wall_time_s`` and the EHO result.
    """
    import time

    from markets import eho

    t = time.perf_counter()
    before = problem.n_evals
    lo, hi = problem.lower, problem.upper
    if method == "eho":
        res = eho.eho_minimize(
            problem.loss,
            lo,
            hi,
            n_elephants=n_elephants,
            n_clans=n_clans,
            n_iter=n_iter,
            alpha=alpha,
            beta=beta,
            n_elite=n_elite,
            seed=seed,
            max_evals=n_evals,
        )
    elif method == "random":
        res = eho.random_search(problem.loss, lo, hi, n_evals=int(n_evals or n_elephants * (n_iter + 1)), seed=seed)
    elif method == "de":
        res = eho.differential_evolution_budget(
            problem.loss, lo, hi, n_evals=int(n_evals or n_elephants * (n_iter + 1)), seed=seed
        )
    else:
        raise ValueError(f"method: got {method!r}; allowed 'eho', 'random', 'de'")
    return {
        "x": np.asarray(res.x, float),
        "objective": -float(res.fun),
        "history": -np.asarray(res.history, float),
        "n_evals": problem.n_evals - before,
        "wall_time_s": time.perf_counter() - t,
        "result": res,
    }


# ----------------------------------------------------------------------------------------------- mechanism
_GOLDEN = 0.6180339887498949


def _follow_draw(ev_id: np.ndarray) -> np.ndarray:
    """A deterministic, well-spread number in [0, 1) per EV id (the fractional golden-ratio sequence)."""
    return np.mod(np.asarray(ev_id, float) * _GOLDEN + 0.5 * _GOLDEN, 1.0)


_FORECAST_KEYS = {
    "n_evs",
    "arrival_h",
    "departure_h",
    "dwell_h",
    "need_kwh",
    "p_kw",
    "eta_ch",
    "ports",
    "release_when_full",
    "follow_share",
    "elasticity",
}


def forecast_sessions(fc: dict[str, Any], n_stations: int, t0_tod_h: float) -> tuple[Sessions, np.ndarray, bool]:
    """The aggregator's day-ahead forecast of the sessions of a day, from the distributions it knows.

    A *stratified, deterministic* set, not a random draw: ``n_evs`` EVs at the mid-quantiles
    ``(i + ½)/n`` of the uniform arrival window ``arrival_h`` [time of day], needs spread over ``need_kwh`` by a
    golden-ratio sequence (so they are not correlated with arrival time), departures at the next occurrence of a
    time of day spread over ``departure_h`` (or after a dwell spread over ``dwell_h``), stations round-robin in
    arrival order with ``ports`` ports each. Times are returned in hours since the request's slot 0 (whose time of
    day is ``t0_tod_h``).

    Returns:
        (sessions, ports per station, release_when_full).
    """
    n = int(fc.get("n_evs", 0))
    q = (np.arange(n) + 0.5) / max(n, 1)
    u = np.mod((np.arange(n) + 1) * _GOLDEN, 1.0)
    w = np.mod((np.arange(n) + 1) * _GOLDEN * _GOLDEN + 0.25, 1.0)
    a_lo, a_hi = fc.get("arrival_h", [8.0, 19.0])
    tod = a_lo + q * (a_hi - a_lo)
    arr = (tod - t0_tod_h) % 24.0
    if "dwell_h" in fc:
        d_lo, d_hi = fc["dwell_h"]
        dep = arr + d_lo + w * (d_hi - d_lo)
    else:
        d_lo, d_hi = fc.get("departure_h", [6.0, 8.0])
        dep_tod = d_lo + w * (d_hi - d_lo)
        gap = (dep_tod - tod) % 24.0
        dep = arr + np.where(gap < 1e-9, 24.0, gap)
    e_lo, e_hi = fc.get("need_kwh", [10.0, 50.0])
    share = float(fc.get("follow_share", 1.0))
    s = Sessions(
        arrival_h=arr,
        departure_h=dep,
        need_kwh=e_lo + u * (e_hi - e_lo),
        p_max_kw=float(fc.get("p_kw", 7.0)),
        station=np.arange(n) % max(n_stations, 1),
        eta_ch=float(fc.get("eta_ch", 1.0)),
        follows=_follow_draw(np.arange(n)) < share,
        elasticity=float(fc.get("elasticity", -0.3)),
    )
    ports = np.broadcast_to(np.asarray(fc.get("ports", max(n, 1)), int), (n_stations,)).copy()
    return s, ports, bool(fc.get("release_when_full", True))


@register
class EHOBilevel(Mechanism):
    """Bilevel DR prices and station limits (`004_…`) searched by EHO; see the module docstring.

    Clearing (in the simulation, or on any `MarketRequest`):

    * **day-ahead** (``request.day_ahead``; in ``mode="rolling"`` also every clearing with EVs): build a
      `BilevelProblem` from the EVs the request shows — plugged from their ``start_slot``, at their station — plus
      the day-ahead forecast of the day's sessions (``forecast``, see :func:`forecast_sessions`; the
      simulation's day-ahead request shows no EVs, so without a forecast there is nothing to optimise and the
      base price and the physical caps are announced), search it with EHO, and announce the DR price of every
      slot and the station limits. The base price ``BP`` is the request's tariff (NaN: the flat
      ``rho_usd_per_mwh``). Load already committed (``committed_ev_kw``, ``committed_station_kw``) is
      part of the base load and of the stations' booked capacity.
    * **every clearing** schedules the request's EVs as the lower level's answer to the announced prices and
      limits: followers' exact best responses, the others' elastic response (module docstring), each within its
      window, rating, need and its station's limit minus what is booked there. The EVs are already plugged (their
      queue wait is over); a follower's ``H`` counts the time until it is charged.

    ``result.info["station_limit_kw"]`` holds the limits, ``info["dr_multiplier"]`` the price multiplier per slot.
    In ``mode="rolling"`` the re-optimised price is flagged ``result.repriced`` (the market operator then
    adopts it for the rest of the horizon).

    Whether following users may change station is a fleet behaviour in a simulation (``fleet.station_choice``),
    not a parameter of the mechanism.
    """

    name = "eho-bilevel"
    needs = frozenset({"committed_station_kw"})  # the stations' booked capacity
    parameters = {
        "alpha1": (0.6, "weight of the DR revenue F1 (eq. 9)"),
        "alpha2": (0.3, "weight of the grid stress F2 (load variance, eq. 9)"),
        "alpha3": (0.1, "weight of the waiting time F3 (eq. 9)"),
        "n_elephants": (50, "EHO population (Table 6)"),
        "n_clans": (5, "EHO clans (Table 6: clans of 10 elephants)"),
        "n_iter": (50, "EHO iterations (Table 6)"),
        "eho_alpha": (0.6, "EHO clan-updating scale α (Table 6)"),
        "eho_beta": (0.3, "EHO matriarch/centre scale β (Table 6)"),
        "n_elite": (2, "EHO elites kept per iteration"),
        "search": (
            "eho",
            "upper-level search: 'eho' (the paper's), 'de' (SciPy differential evolution) or 'random', "
            "the last two at EHO's number of evaluations",
        ),
        "price_min": (0.8, "lowest DR price multiplier of the base price (Table 1)"),
        "price_max": (2.0, "highest DR price multiplier of the base price (Table 1)"),
        "limit_min_kw": (50.0, "lowest station power limit [kW] (Table 1)"),
        "limit_max_kw": (150.0, "highest station power limit [kW] (Table 1)"),
        "delta": (1.0, "lower-level weight of the charging cost [1/$] (eq. 12)"),
        "epsilon": (0.25, "lower-level weight of the user's wait until charged [1/h] (eq. 12; $ per hour)"),
        "follow_share": (
            "request",
            "'request' (the EVs' participates flags) or a share in [0, 1] of users that follow the optimised schedule",
        ),
        "elasticity": (
            "request",
            "'request' (each EV's elasticity) or one price elasticity (<= 0) of the users that do not follow",
        ),
        "mode": ("day-ahead", "'day-ahead' (optimise once per day) or 'rolling' (re-optimise at every clearing)"),
        "grid_max_kw": (0.0, "grid connection limit of the total load (eq. 15) [kW]; 0 = none"),
        "dr_min_kwh": (0.0, "DR obligation (eq. 16): EV energy moved out of its uncontrolled slot [kWh]"),
        "min_fulfilment": (0.95, "Table 11 threshold on energy fulfilment, kept as a penalty; 0 = none"),
        "max_wait_h": (0.0, "Table 11 threshold on the longest queue wait [h], kept as a penalty; 0 = none"),
        "penalty": (10.0, "weight of a relative constraint violation in the objective"),
        "rho_usd_per_mwh": (145.0, "flat base price when the request carries no tariff [$/MWh]"),
        "forecast": (
            {},
            "day-ahead forecast of the day's sessions: n_evs, arrival_h [lo, hi], departure_h or "
            "dwell_h [lo, hi], need_kwh [lo, hi], p_kw, eta_ch, ports, release_when_full, "
            "follow_share, elasticity",
        ),
    }

    def _validate(self) -> None:
        p = self.params

        num = finite_number

        def integer(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        # bounds that depend on another parameter only when that one is of the right type (else it is named itself)
        n_el = p["n_elephants"] if integer(p["n_elephants"]) else 1
        pr_min = p["price_min"] if num(p["price_min"]) else 0.0
        lim_min = p["limit_min_kw"] if num(p["limit_min_kw"]) else 0.0
        fs, el = p["follow_share"], p["elasticity"]
        checks = {
            "alpha1": (num(p["alpha1"]) and p["alpha1"] >= 0, ">= 0"),
            "alpha2": (num(p["alpha2"]) and p["alpha2"] >= 0, ">= 0"),
            "alpha3": (num(p["alpha3"]) and p["alpha3"] >= 0, ">= 0"),
            "n_elephants": (integer(p["n_elephants"]) and p["n_elephants"] >= 2, "integer >= 2"),
            "n_clans": (
                integer(p["n_clans"]) and 1 <= p["n_clans"] <= max(n_el, 1),
                "integer in 1..n_elephants",
            ),
            "n_iter": (integer(p["n_iter"]) and p["n_iter"] >= 0, "integer >= 0"),
            "eho_alpha": (num(p["eho_alpha"]) and 0 <= p["eho_alpha"] <= 2, "[0, 2]"),
            "eho_beta": (num(p["eho_beta"]) and 0 <= p["eho_beta"] <= 1, "[0, 1]"),
            "n_elite": (
                integer(p["n_elite"]) and 0 <= p["n_elite"] < max(n_el, 1),
                "integer in 0..n_elephants-1",
            ),
            "price_min": (num(p["price_min"]) and 0 < p["price_min"], "> 0"),
            "price_max": (num(p["price_max"]) and p["price_max"] >= pr_min, ">= price_min"),
            "limit_min_kw": (num(p["limit_min_kw"]) and p["limit_min_kw"] >= 0, ">= 0"),
            "limit_max_kw": (num(p["limit_max_kw"]) and p["limit_max_kw"] >= lim_min, ">= limit_min_kw"),
            "delta": (num(p["delta"]) and p["delta"] >= 0, ">= 0"),
            "epsilon": (num(p["epsilon"]) and p["epsilon"] >= 0, ">= 0"),
            "follow_share": (fs == "request" or (num(fs) and 0 <= fs <= 1), "'request' or [0, 1]"),
            "elasticity": (el == "request" or (num(el) and el <= 0), "'request' or <= 0"),
            "mode": (p["mode"] in ("day-ahead", "rolling"), "'day-ahead' or 'rolling'"),
            "search": (p["search"] in ("eho", "de", "random"), "'eho', 'de' or 'random'"),
            "grid_max_kw": (num(p["grid_max_kw"]) and p["grid_max_kw"] >= 0, ">= 0 (0 = none)"),
            "dr_min_kwh": (num(p["dr_min_kwh"]) and p["dr_min_kwh"] >= 0, ">= 0"),
            "min_fulfilment": (num(p["min_fulfilment"]) and 0 <= p["min_fulfilment"] <= 1, "[0, 1]"),
            "max_wait_h": (num(p["max_wait_h"]) and p["max_wait_h"] >= 0, ">= 0 (0 = none)"),
            "penalty": (num(p["penalty"]) and p["penalty"] >= 0, ">= 0"),
            "rho_usd_per_mwh": (num(p["rho_usd_per_mwh"]) and p["rho_usd_per_mwh"] > 0, "> 0"),
            "forecast": (
                isinstance(p["forecast"], dict) and set(p["forecast"]) <= _FORECAST_KEYS,
                f"a table with keys among {', '.join(sorted(_FORECAST_KEYS))}",
            ),
        }
        for k, (ok, allowed) in checks.items():
            if not ok:
                raise MarketConfigError(f"market.params.{k}: got {p[k]!r}; allowed {allowed}")
        fc = p["forecast"]
        for key in ("arrival_h", "departure_h", "dwell_h", "need_kwh"):
            v = fc.get(key)
            if v is not None and not (
                isinstance(v, (list, tuple)) and len(v) == 2 and all(num(y) for y in v) and v[0] <= v[1]
            ):
                raise MarketConfigError(
                    f"market.params.forecast.{key}: got {v!r}; allowed [low, high] with low <= high"
                )
        for key, lo in (("n_evs", 0), ("ports", 1)):
            v = fc.get(key)
            if v is not None and not (integer(v) and v >= lo):
                raise MarketConfigError(f"market.params.forecast.{key}: got {v!r}; allowed integer >= {lo}")
        self._plan: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    def _base_price_kwh(self, request: MarketRequest) -> np.ndarray:
        """Base price ``BP`` per request slot [$/kWh]: the day-ahead plan's tariff where it covers the slot."""
        n = request.n_slots
        t = request.t0_min + np.arange(n) * request.dt_min
        bp = np.asarray(request.price_usd_per_mwh, float).copy()
        bp = np.where(np.isfinite(bp) & (bp > 0), bp, self.params["rho_usd_per_mwh"])
        plan = self._plan
        if plan is not None and not request.day_ahead:
            j = np.round((t - plan["t0_min"]) / plan["dt_min"]).astype(int)
            ok = (j >= 0) & (j < plan["base_usd_per_mwh"].size)
            bp[ok] = plan["base_usd_per_mwh"][j[ok]]
        return bp / 1000.0

    def _stations(self, request: MarketRequest) -> tuple[int, np.ndarray]:
        if request.station_cap_kw is not None:
            cap = np.asarray(request.station_cap_kw, float)
            s = max(cap.size, int(request.evs.station.max()) + 1 if len(request.evs) else 0)
            return s, np.r_[cap, np.full(s - cap.size, np.inf)]
        s = int(request.evs.station.max()) + 1 if len(request.evs) else 1
        fc = self.params["forecast"]
        if fc.get("n_evs"):
            s = max(s, 1)
        return s, np.full(s, np.inf)

    def _request_sessions(self, request: MarketRequest) -> Sessions:
        evs, dt_h = request.evs, request.dt_h
        p = self.params
        if p["follow_share"] == "request":
            follows = evs.participates
        else:
            follows = _follow_draw(evs.ev_id) < float(p["follow_share"])
        el = (
            np.minimum(evs.elasticity, 0.0)
            if p["elasticity"] == "request"
            else np.full(len(evs), float(p["elasticity"]))
        )
        return Sessions(
            arrival_h=evs.start_slot * dt_h,
            departure_h=(evs.end_slot - 1 + evs.end_frac) * dt_h,
            need_kwh=evs.e_need_kwh,
            p_max_kw=np.maximum(evs.p_max_kw, 0.0),
            station=evs.station,
            eta_ch=evs.eta_ch,
            follows=follows,
            elasticity=el,
        )

    def problem(self, request: MarketRequest, *, with_forecast: bool = True) -> tuple[BilevelProblem, int]:
        """The `BilevelProblem` of a request (its EVs, plus the forecast on day-ahead); and how many EVs are real."""
        p = self.params
        n_st, cap = self._stations(request)
        own = self._request_sessions(request)
        n_real = len(own)
        ports = np.full(n_st, max(n_real, 1))
        release = True
        sessions = own
        fc = p["forecast"]
        if with_forecast and fc.get("n_evs"):
            # the forecast is of the plan's day; a later (rolling) clearing keeps the sessions still to arrive
            plan = self._plan
            if plan is not None and not request.day_ahead and "t0_tod_h" in plan:
                t0_tod, offset = plan["t0_tod_h"], (request.t0_min - plan["day_t0_min"]) / 60.0
            else:
                t0_tod, offset = float(request.tod_h[0]), 0.0
            fs, fports, release = forecast_sessions(fc, n_st, t0_tod)
            keep = (fs.arrival_h >= offset) & (fs.arrival_h - offset < request.n_slots * request.dt_h)
            fs = fs.select(keep)
            fs = Sessions(
                fs.arrival_h - offset,
                fs.departure_h - offset,
                fs.need_kwh,
                fs.p_max_kw,
                fs.station,
                fs.eta_ch,
                fs.follows,
                fs.elasticity,
            )
            ports = np.maximum(fports, 1)
            sessions = Sessions(*(np.r_[getattr(own, f.name), getattr(fs, f.name)] for f in fields(Sessions)))
        booked = np.zeros((n_st, request.n_slots))
        if request.committed_station_kw is not None:
            c = request.committed_station_kw
            booked[: c.shape[0], :] += c[:, : request.n_slots]
        hours = np.floor(np.asarray(request.tod_h, float) + 1e-9).astype(int) % 24
        prob = BilevelProblem(
            sessions,
            dt_h=request.dt_h,
            base_price_usd_per_kwh=self._base_price_kwh(request),
            base_load_kw=request.base_load_kw + request.committed_ev_kw,
            ports=ports,
            station_cap_kw=cap,
            slot_period=hours,
            weights=(p["alpha1"], p["alpha2"], p["alpha3"]),
            delta=p["delta"],
            epsilon=p["epsilon"],
            price_bounds=(p["price_min"], p["price_max"]),
            limit_bounds=(p["limit_min_kw"], p["limit_max_kw"]),
            release_when_full=release,
            grid_max_kw=p["grid_max_kw"] if p["grid_max_kw"] > 0 else np.inf,
            dr_min_kwh=p["dr_min_kwh"],
            min_fulfilment=p["min_fulfilment"],
            max_wait_h=p["max_wait_h"] if p["max_wait_h"] > 0 else np.inf,
            penalty=p["penalty"],
            booked_station_kw=booked,
        )
        return prob, n_real

    def _optimise(self, request: MarketRequest) -> dict[str, Any]:
        prob, _ = self.problem(request)
        p = self.params
        if len(prob.sessions) == 0:
            x = np.r_[np.ones(prob.n_price), np.full(prob.n_stations, p["limit_max_kw"])]
            x = np.clip(x, prob.lower, prob.upper)
            out = {"x": x, "objective": float("nan"), "history": np.zeros(0), "n_evals": 0}
        else:
            out = solve(
                prob,
                method=p["search"],
                n_elephants=p["n_elephants"],
                n_clans=p["n_clans"],
                n_iter=p["n_iter"],
                alpha=p["eho_alpha"],
                beta=p["eho_beta"],
                n_elite=p["n_elite"],
                seed=int(self.rng.integers(2**63 - 1)),
            )
        mult = np.clip(out["x"][: prob.n_price], prob.price_bounds[0], prob.price_bounds[1])
        by_hour = np.ones(24)
        by_hour[prob.periods] = mult
        limits = np.clip(out["x"][prob.n_price :], prob.limit_bounds[0], prob.limit_bounds[1])
        if len(prob.sessions) == 0:  # nothing to optimise: base price, physical caps
            by_hour[:] = 1.0
            limits = np.where(np.isfinite(prob.cap), prob.cap, prob.limit_bounds[1])
        return {
            "t0_min": request.t0_min,
            "dt_min": request.dt_min,
            "mult_by_hour": by_hour,
            "limits_kw": limits,
            "base_usd_per_mwh": prob.base_price * 1000.0,
            "objective": out["objective"],
            "history": out["history"],
            "n_evals": out["n_evals"],
            "n_sessions": len(prob.sessions),
        }

    # ------------------------------------------------------------------ clearing
    def _clear(self, request: MarketRequest) -> MarketResult:
        p = self.params
        n, dt_h = request.n_slots, request.dt_h
        info: dict[str, Any] = {"mode": p["mode"]}
        repriced = False
        if request.day_ahead or (p["mode"] == "rolling" and len(request.evs)):
            bp_now = self._base_price_kwh(request) * 1000.0
            plan = self._optimise(request)
            if request.day_ahead:
                plan["t0_tod_h"], plan["day_t0_min"] = float(request.tod_h[0]), request.t0_min
            else:  # keep the day's tariff as the base price of later clearings, and the forecast's day
                plan["base_usd_per_mwh"] = bp_now
                plan["t0_min"], plan["dt_min"] = request.t0_min, request.dt_min
                if self._plan is not None and "t0_tod_h" in self._plan:
                    plan["t0_tod_h"], plan["day_t0_min"] = self._plan["t0_tod_h"], self._plan["day_t0_min"]
                repriced = True
            self._plan = plan
            info.update(
                eho_objective=plan["objective"],
                eho_history=plan["history"].tolist(),
                eho_n_evals=plan["n_evals"],
                n_sessions_optimised=plan["n_sessions"],
            )
        current: dict[str, Any] | None = self._plan  # None before the first day-ahead plan
        hours = np.floor(np.asarray(request.tod_h, float) + 1e-9).astype(int) % 24
        n_st, cap = self._stations(request)
        if current is not None:
            mult = current["mult_by_hour"][hours]
            lim = np.asarray(current["limits_kw"], float)
            limits = np.r_[lim, np.full(max(n_st - lim.size, 0), np.inf)][:n_st]
        else:  # no plan yet: base price, physical caps
            mult = np.ones(n)
            limits = np.full(n_st, np.inf)
        bp = self._base_price_kwh(request)
        price_kwh = bp * mult
        p_kw = np.zeros((len(request.evs), n))
        objective: dict[str, float] = {}
        if len(request.evs):
            prob, _ = self.problem(request, with_forecast=False)
            r = prob._run(price_kwh, np.minimum(cap, limits), uncontrolled=False)
            p_kw = r.p_kw
            ev = p_kw.sum(axis=0)
            objective = {
                "ev_energy_cost_usd": float((price_kwh * ev).sum() * dt_h),
                "dr_revenue_usd": float(((price_kwh - bp) * ev).sum() * dt_h),
                "start_delay_h": float((r.start_h - prob.sessions.arrival_h).sum()),
                "forecast_peak_kw": float((request.base_load_kw + request.committed_ev_kw + ev).max()),
            }
        # the limits in force: the plan's choice, or the physical cap (NaN: none) before any plan
        info["station_limit_kw"] = (
            np.where(np.isfinite(np.minimum(cap, limits)), np.minimum(cap, limits), np.nan)
            if current is None
            else limits
        )
        info["dr_multiplier"] = mult
        return MarketResult(
            mechanism=self.name,
            price_usd_per_mwh=price_kwh * 1000.0,
            p_kw=p_kw,
            base_load_shift_kw=np.zeros(n),
            objective=objective,
            info=info,
            repriced=repriced,
        )


# ----------------------------------------------------------------------------------------------- exact optimum
def exact_upper_level(problem: BilevelProblem, *, max_lps: int = 200_000) -> dict[str, Any]:
    """The exact optimum of the upper level of a *small* instance, by enumerating lower-level response regions.

    Given the upper-level prices, every follower's answer is a cheapest-first fill of its window, so it depends
    only on (a) the order of the slot prices and (b) each EV's choice of its last charging slot — and with them
    the port queue, the load profile, ``F2``, ``F3`` and the penalties are fixed. Over the closure of such a region
    ``F1`` is linear in the multipliers and the conditions "this order" and "this last slot is each EV's best
    response" are linear inequalities. So: for every permutation of the slots, walk the EVs in arrival order,
    branch on every distinct best-response candidate, and solve one LP (HiGHS via SciPy) per leaf that maximises
    ``F1`` in the region; the best leaf is the optimum. On ties the follower is assumed to answer in the leader's
    favour (the optimistic bilevel solution), so the value is the supremum of what any search evaluating the
    kernel can reach — an upper bound that can be approached but, on a boundary, not always attained.

    Requires: every EV follows, no ``alternatives``, station caps that cannot bind (``min(cap, lowest limit)`` ≥
    the sum of the ratings at the station), no booked load, no grid limit. The station-limit half of ``x`` is then
    inert and returned at its upper bound. Cost grows as ``T! × Π (choices per EV)``: keep ``T ≤ 6``, ≤ 3 EVs.

    Returns:
        dict with ``objective`` (sup ``J``), ``x`` (an optimal upper-level vector), ``objective_at_x`` (``J`` the
        kernel gives at ``x``), ``n_lp`` (LPs solved), ``n_feasible`` (non-empty regions).
    """
    from itertools import permutations

    from scipy.optimize import linprog

    s = problem._s
    T, dt, P = problem.n_slots, problem.dt_h, problem.n_price
    if not np.all(s.follows):
        raise ValueError("exact_upper_level: every EV must follow (no elastic users)")
    if np.any(problem.n_alt > 1):
        raise ValueError("exact_upper_level: no alternatives (station choice) supported")
    load_at = np.bincount(s.station, weights=s.p_max_kw, minlength=problem.n_stations)
    if np.any(np.minimum(problem.cap, problem.limit_bounds[0]) < load_at - 1e-9) or np.any(problem.booked0 != 0):
        raise ValueError("exact_upper_level: station caps/limits must not bind and nothing may be booked")
    if np.isfinite(problem.grid_max_kw):
        raise ValueError("exact_upper_level: no grid connection limit supported")
    bp, per = problem.base_price, problem.slot_period
    delta, eps = problem.delta, problem.epsilon
    n = len(s)
    lo_m, hi_m = problem.price_bounds
    best: dict[str, Any] = {"objective": -np.inf, "m": None, "n_lp": 0, "n_feasible": 0}

    def coef(x_kwh: np.ndarray) -> np.ndarray:
        """Row such that row @ m = Σ_k π_k x_k (π_k = BP_k m_per(k))."""
        r = np.zeros(P)
        np.add.at(r, per, bp * x_kwh)
        return r

    def leaf(order: tuple[int, ...], rows: list[np.ndarray], rhs: list[float], p: np.ndarray, plug: np.ndarray) -> None:
        if best["n_lp"] >= max_lps:
            raise RuntimeError("exact_upper_level: max_lps exceeded; use a smaller instance")
        A = list(rows)
        bb = list(rhs)
        for u, v in zip(order[:-1], order[1:]):  # π_u ≤ π_v
            r = np.zeros(P)
            r[per[u]] += bp[u]
            r[per[v]] -= bp[v]
            A.append(r)
            bb.append(0.0)
        ev = p.sum(axis=0)
        c = -coef(ev * dt)
        best["n_lp"] += 1
        res = linprog(
            c,
            A_ub=np.array(A) if A else None,
            b_ub=np.array(bb) if bb else None,
            bounds=[(lo_m, hi_m)] * P,
            method="highs",
        )
        if res.status != 0:
            return
        best["n_feasible"] += 1
        m = np.asarray(res.x)
        price = bp * m[per]
        # objective() only reads schedules, prices and plug-in times, in the problem's (caller's) session order
        inv = np.empty_like(problem.order)
        inv[problem.order] = np.arange(n)
        resp = Response(
            p_kw=p[inv],
            station=s.station.astype(np.int64)[inv],
            plugin_h=plug[inv],
            start_h=plug[inv],
            release_h=plug[inv],
            reneged=np.zeros(n, bool),
            price_usd_per_kwh=price,
            limit_kw=problem.cap,
        )
        j, _ = problem.objective(resp)
        if j > best["objective"] + 1e-12:
            best.update(objective=j, m=m)

    def walk(
        i: int,
        order: tuple[int, ...],
        rank: np.ndarray,
        port_free: list[list[float]],
        rows: list[np.ndarray],
        rhs: list[float],
        p: np.ndarray,
        plug: np.ndarray,
    ) -> None:
        if i == n:
            leaf(order, rows, rhs, p, plug)
            return
        a, d, c = s.arrival_h[i], s.departure_h[i], int(s.station[i])
        e_need = problem._e_grid[i]
        pf = port_free[c]
        j = int(np.argmin(pf))
        g = max(a, pf[j])
        if g >= d:
            plug2 = plug.copy()
            plug2[i] = d
            walk(i + 1, order, rank, port_free, rows, rhs, p, plug2)
            return
        k0 = int(math.ceil(g / dt - 1e-9))
        kd = int(math.ceil(d / dt - 1e-9))
        kend = min(kd, T)
        frac = min(d / dt - (kend - 1), 1.0) if kd <= T else 1.0
        caps = np.zeros(T)
        for k in range(k0, kend):
            caps[k] = s.p_max_kw[i] * (frac if k == kend - 1 else 1.0)
        target = min(e_need, caps.sum() * dt)
        cands: list[tuple[np.ndarray, float]] = []
        if target > _TOL:
            win = sorted(range(k0, kend), key=lambda k: (rank[k], k))
            for e in range(k0, kend):
                if caps[k0 : e + 1].sum() * dt < target - 1e-7 * max(1.0, target):
                    continue
                x = np.zeros(T)
                rem = target
                for k in win:
                    if k > e:
                        continue
                    take = min(caps[k] * dt, rem)
                    x[k] = take
                    rem -= take
                    if rem <= _TOL:
                        break
                last = int(np.nonzero(x > 1e-12)[0].max())
                t_end = min((last + 1) * dt, d)
                if not any(np.array_equal(x, y) for y, _ in cands):
                    cands.append((x, t_end))
        else:
            cands.append((np.zeros(T), g))
        for ci, (x, t_end) in enumerate(cands):
            rows2, rhs2 = list(rows), list(rhs)
            for cj, (y, t_y) in enumerate(cands):
                if cj != ci:  # δ·π·x + ε·t_x ≤ δ·π·y + ε·t_y
                    rows2.append(delta * (coef(x) - coef(y)))
                    rhs2.append(eps * (t_y - t_end))
            p2 = p.copy()
            p2[i] = x / dt
            plug2 = plug.copy()
            plug2[i] = g
            full = x.sum() >= e_need - 1e-6
            rel = (t_end if x.sum() > 1e-12 else g) if (full and problem.release_full[c]) else d
            pf2 = [list(q) for q in port_free]
            pf2[c][j] = rel
            walk(i + 1, order, rank, pf2, rows2, rhs2, p2, plug2)

    free0 = [list(problem.port_free0[k, : problem.ports[k]]) for k in range(problem.n_stations)]
    for order in permutations(range(T)):
        rank = np.empty(T, int)
        rank[list(order)] = np.arange(T)
        walk(0, order, rank, free0, [], [], np.zeros((n, T)), np.zeros(n))
    if best["m"] is None:
        raise RuntimeError("exact_upper_level: no feasible region (should not happen)")
    x = np.r_[best["m"], np.full(problem.n_stations, problem.limit_bounds[1])]
    j_at, _ = problem.evaluate(x)
    return {
        "objective": float(best["objective"]),
        "x": x,
        "objective_at_x": float(j_at),
        "n_lp": best["n_lp"],
        "n_feasible": best["n_feasible"],
    }
