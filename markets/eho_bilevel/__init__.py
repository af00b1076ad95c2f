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
  they plug in, at their own station — or, with ``redirect="all"`` (an option, off by default), at the station of
  their alternatives where they get the most energy, then a port soonest (own on ties) — and respond to the DR price only through their price elasticity ``e``
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

from markets.eho_bilevel.exact import exact_upper_level
from markets.eho_bilevel.kernel import _respond_kernel
from markets.eho_bilevel.mechanism import EHOBilevel, forecast_sessions
from markets.eho_bilevel.model import BilevelProblem, Response, Sessions
from markets.eho_bilevel.search import solve

__all__ = [
    "BilevelProblem",
    "EHOBilevel",
    "Response",
    "Sessions",
    "_respond_kernel",
    "exact_upper_level",
    "forecast_sessions",
    "solve",
]
