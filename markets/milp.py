"""`milp`: the exact optimum, with HiGHS, of the charging problem the heuristics solve (issue 3, part 4).

One clearing builds one linear (``variant="lp"``) or mixed-integer (``variant="milp"``) programme over the EVs of
the request and the request's whole horizon, solves it to HiGHS's proven optimum and returns the schedule. The
module-level helpers put any other mechanism's schedule on the same scale:

* :func:`evaluate_cost` — the exact objective of *any* schedule under this mechanism's objective;
* :func:`reference` — the optimal objective (and result) of the same request;
* :func:`check_schedule` — every constraint check, as named violations (0 = satisfied);
* :func:`project` — any schedule made feasible by removing power (optionally floored onto the MILP grid);
* :func:`score` — a result with ``reference_objective`` and ``gap = (cost − ref) / |ref|`` filled in.

The problem (per EV ``i``, slot ``t``; ``a[i,t]`` = `EVFlex.availability`, ``Δt`` the slot length in hours)::

    min   Σ_{i,t} λ[i,t]·P[i,t]·Δt/1000  (+ Σ λq[i,t]·Q[i,t]·Δt/1000)  +  π·Σ_i u[i]          objective="cost"
    or    c_peak·z + π·Σ_i u[i],   z ≥ base[t] + committed[t] + Σ_i P[i,t]  ∀t                   objective="peak"
    s.t.  0 ≤ P[i,t] ≤ p_max[i]·a[i,t]                       (no variable at all where a[i,t] = 0)
          Σ_t P[i,t]·Δt·η[i] + u[i] = e_need[i],  u[i] ≥ 0     (energy: never more than the need)
          Σ_{i∈s} P[i,t] ≤ max(cap[s] − committed_station[s,t], 0)            (station caps, when given)
          Σ_j dV/dP[b,bus_j]·P[j,t] (+ dV/dQ·Q) ≤ max(vm_base[t,b] − v_min[b], 0)   (LinDistFlow, when given)
          (P, Q) in the inscribed regular polygon of radius s_max[i]·a[i,t]          (``reactive=True`` only)

``λ[i,t]`` is ``request.dlmp_p_usd_per_mwh[t, bus_i]`` when the request carries DLMPs, else the tariff
``request.price_usd_per_mwh[t]`` (NaN tariff → the flat ``rho_usd_per_mwh``, as `uncontrolled` does).

Choices and deviations from the issue text, recorded here:

* **Per EV, not per cluster.** One variable per EV and plugged slot; clusters would only be an aggregation of the
  same problem and lose the per-EV window/need constraints the simulation checks.
* **Unserved energy is allowed but priced** (``unserved_penalty_usd_per_kwh`` π, default 10 $/kWh of battery
  energy, two orders of magnitude above any tariff), so the problem is always feasible (all-zero is a feasible
  point) and an EV that cannot be filled does not make the market fail. Energy is never *over*-delivered.
* **Charging only.** EVs with ``p_min_kw < 0`` (V2G) are scheduled in ``[0, p_max]``: `EVFlex` carries no
  discharge efficiency and no state-of-charge floor, without which V2G arbitrage is not a faithful model.
  ``info["v2g_ignored"]`` counts such EVs.
* **Discretised variant** (``variant="milp"``): ``P[i,t] = step_i·k[i,t]`` with integer
  ``k ∈ {0, …, 2^bits − 1}`` and ``step_i = p_max[i] / (2^bits − 1)`` — the integer grid of a QUBO with ``bits``
  bits per EV and slot. In a partially plugged last slot ``k ≤ ⌊a[i,t]·(2^bits − 1)⌋`` (stays within the
  rating). ``u`` stays continuous (it is a slack, not a decision); so does ``Q``.
  Ordering: LP optimum ≤ discretised optimum ≤ the cost of any schedule feasible *on the same grid*. A continuous
  heuristic schedule is not on the grid (and can beat a coarse grid's optimum, which cannot match needs exactly
  and pays the unserved penalty); ``project(request, p, bits=bits)`` floors it onto the grid for that comparison.
* **Reactive power** (``reactive=True``): Q per EV and slot in load convention (positive = consumed), priced at
  ``request.dlmp_q_usd_per_mvarh[t, bus]`` when present (else free: then Q is only shaped by the voltage
  constraint and otherwise arbitrary). Apparent power ``s_max_kva`` per EV comes from
  ``request.s_max_kva``; absent, the charger rating ``p_max_kw`` is used. ``P² + Q² ≤ (s_max·a)²`` is
  replaced by the *inscribed* regular polygon with ``polygon_sides`` sides (a multiple of 4), so every returned
  (P, Q) is inside the true circle (conservative by at most ``1 − cos(π/sides)``, 1.9 % for 16 sides). With
  ``P ≥ 0`` only the facets with normals in ``(−90°, 90°)`` are rows; the ``±90°`` facets are bounds on Q.
* **Voltage** (``voltage=True``, the LinDistFlow sensitivity): when ``request.voltage`` (a `VoltageForecast`) carries
  ``vm_base_pu`` (n_slots, n_bus) — the voltage without this request's EVs —, ``dv_dp_pu_per_kw`` (n_bus, n_bus;
  drop at bus b per kW drawn at bus j), ``v_min_pu`` (scalar or per bus) and optionally ``dv_dq_pu_per_kvar``,
  then ``vm_base − dV/dP·P_bus (− dV/dQ·Q_bus) ≥ v_min`` per slot and bus. Where the base case already violates
  ``v_min`` the headroom is taken as 0 (EVs answer only for what they add, the DSO's rule), which keeps the
  problem feasible. Rows that cannot bind (largest possible drop ≤ headroom) are not built. Absent: skipped
  silently. No line-flow limits (the issue's "nothing else").
* **Station caps** minus ``request.committed_station_kw`` (n_stations, n_slots) when given; a cap
  already exhausted by committed load leaves 0 (not a negative, infeasible bound). Infinite caps: no row.
* **Solution clean-up.** HiGHS meets rows to its feasibility tolerance (1e-7). The LP schedule is clipped to the
  bounds and scaled down where an EV's energy or a station's load exceeds its limit by such a residue (power is
  only ever removed, so every monotone constraint stays satisfied); ``info["repair_kw"]`` is the largest change.
  The discretised schedule is rounded to the integer grid.
* **Not optimal is not hidden.** On a time limit (or any other non-optimal status) the best incumbent is returned
  if HiGHS has a feasible one, else the all-zero schedule; ``info["status"]`` says which (``"optimal"``,
  ``"time_limit"``, ``"infeasible"``, …) and ``info["has_solution"]`` whether the schedule came from HiGHS.
* **Rolling vs day-ahead.** ``rolling=True`` sets ``mech.replans``; the simulation then sends every plugged EV
  each step and the mechanism re-solves (rolling horizon). ``rolling=False``: only newly arrived EVs are
  scheduled, against the load committed earlier (the day-ahead/commit mode the other mechanisms use). The
  clearing itself is the same.
* HiGHS runs single-threaded (``threads=1``): Monte Carlo runs its replications in parallel processes.

Example:
    >>> from markets.base import MarketRequest
    >>> req = MarketRequest.from_sessions(dt_min=60, n_slots=4, base_load_kw=[10, 20, 30, 5],
    ...     arrival_slot=[0], departure_slot=[4], e_need_kwh=[9.0], p_max_kw=[7.0], eta_ch=1.0,
    ...     price_usd_per_mwh=[80, 100, 120, 60])
    >>> res = MILP().clear(req)
    >>> res.info["status"], res.p_kw.round(3).tolist()
    ('optimal', [[2.0, 0.0, 0.0, 7.0]])
    >>> round(evaluate_cost(req, res.p_kw), 4)
    0.58
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from markets.base import (
    MarketConfigError,
    MarketRequest,
    MarketResult,
    Mechanism,
    RequestError,
    register,
)

_NEED_EPS_KWH = 1e-9  # needs below this are treated as met (below HiGHS's feasibility tolerance anyway)

_STATUS = {
    "kOptimal": "optimal",
    "kTimeLimit": "time_limit",
    "kInfeasible": "infeasible",
    "kUnbounded": "unbounded",
    "kUnboundedOrInfeasible": "unbounded_or_infeasible",
    "kIterationLimit": "iteration_limit",
    "kSolutionLimit": "solution_limit",
    "kInterrupt": "interrupted",
    "kMemoryLimit": "memory_limit",
    "kObjectiveBound": "objective_bound",
    "kObjectiveTarget": "objective_target",
    "kModelEmpty": "optimal",
    "kModelError": "model_error",
}


# --------------------------------------------------------------------------------------------- request data
def _price_matrix(request: MarketRequest, rho_usd_per_mwh: float) -> np.ndarray:
    """Active-energy price seen by each EV in each slot [$/MWh], shape (n_evs, n_slots)."""
    evs, n = request.evs, request.n_slots
    if request.dlmp_p_usd_per_mwh is not None:
        d = _bus_matrix(request.dlmp_p_usd_per_mwh, request, "dlmp_p_usd_per_mwh")
        return d[:, evs.bus].T.copy()
    price = np.asarray(request.price_usd_per_mwh, float)
    price = np.where(np.isnan(price), float(rho_usd_per_mwh), price)
    return np.broadcast_to(price, (len(evs), n)).copy()


def _q_price_matrix(request: MarketRequest) -> np.ndarray:
    """Reactive price per EV and slot [$/MVArh] (zeros without a reactive DLMP), shape (n_evs, n_slots)."""
    if request.dlmp_q_usd_per_mvarh is None:
        return np.zeros((len(request.evs), request.n_slots))
    d = _bus_matrix(request.dlmp_q_usd_per_mvarh, request, "dlmp_q_usd_per_mvarh")
    return d[:, request.evs.bus].T.copy()


def _bus_matrix(x: Any, request: MarketRequest, name: str) -> np.ndarray:
    a = np.asarray(x, float)
    if a.ndim != 2 or a.shape[0] != request.n_slots:
        raise RequestError(f"{name}: expected shape (n_slots={request.n_slots}, n_bus), got {a.shape}")
    if len(request.evs) and request.evs.bus.max() >= a.shape[1]:
        raise RequestError(f"{name}: has {a.shape[1]} buses but an EV is at bus {request.evs.bus.max()}")
    if not np.all(np.isfinite(a)):
        raise RequestError(f"{name}: contains NaN or inf")
    return a


def _voltage_data(request: MarketRequest) -> dict[str, np.ndarray] | None:
    """The request's voltage forecast as arrays by name (validated by `VoltageForecast`), or None."""
    v = request.voltage
    if v is None:
        return None
    out = {"vm_base_pu": v.vm_base_pu, "dv_dp_pu_per_kw": v.dv_dp_pu_per_kw, "v_min_pu": v.v_min_pu}
    if v.dv_dq_pu_per_kvar is not None:
        out["dv_dq_pu_per_kvar"] = v.dv_dq_pu_per_kvar
    return out


def _s_max(request: MarketRequest) -> np.ndarray:
    """Apparent-power limit per EV [kVA]: ``request.s_max_kva`` or the charger rating."""
    if request.s_max_kva is None:
        return request.evs.p_max_kw.astype(float).copy()
    return np.asarray(request.s_max_kva, float).copy()


def _station_limits(request: MarketRequest) -> np.ndarray | None:
    """Remaining station capacity [kW], shape (n_stations, n_slots) (inf = uncapped), or None."""
    if request.station_cap_kw is None:
        return None
    cap = np.asarray(request.station_cap_kw, float)
    lim = np.broadcast_to(cap[:, None], (cap.size, request.n_slots)).copy()
    if request.committed_station_kw is not None:  # shape checked by MarketRequest
        lim = lim - request.committed_station_kw
    return np.maximum(lim, 0.0)


def _station_load(request: MarketRequest, p_kw: np.ndarray, n_st: int) -> np.ndarray:
    st = request.evs.station
    inside = (st >= 0) & (st < n_st)
    load = np.zeros((n_st, request.n_slots))
    np.add.at(load, st[inside], np.maximum(p_kw[inside], 0.0))
    return load


def _unserved_kwh(request: MarketRequest, p_kw: np.ndarray) -> np.ndarray:
    evs = request.evs
    got = np.asarray(p_kw, float).sum(axis=1) * request.dt_h * evs.eta_ch
    return np.maximum(evs.e_need_kwh - got, 0.0)


# --------------------------------------------------------------------------------------------- public helpers
def evaluate_cost(
    request: MarketRequest,
    p_kw: np.ndarray,
    *,
    unserved_penalty_usd_per_kwh: float = 10.0,
    q_kvar: np.ndarray | None = None,
    objective: str = "cost",
    peak_usd_per_kw: float = 1.0,
    rho_usd_per_mwh: float = 84.0,
) -> float:
    """The exact objective of any schedule under `MILP`'s objective [$] (lower is better).

    ``"cost"``: energy cost at the DLMP (else tariff) + reactive cost at the reactive DLMP (if ``q_kvar``) +
    ``π × unserved battery energy``. ``"peak"``: ``peak_usd_per_kw × max_t(base + committed + Σ P)`` + the same
    unserved term. Unserved energy is ``max(need − Σ P·Δt·η, 0)`` per EV. Schedules that break other limits are
    still scored; see :func:`check_schedule` for those.
    """
    p = np.asarray(p_kw, float)
    if p.shape != (len(request.evs), request.n_slots):
        raise RequestError(f"p_kw: expected shape ({len(request.evs)}, {request.n_slots}), got {p.shape}")
    dt = request.dt_h
    total = float(unserved_penalty_usd_per_kwh) * float(_unserved_kwh(request, p).sum())
    if objective == "peak":
        load = request.base_load_kw + request.committed_ev_kw + p.sum(axis=0)
        return total + float(peak_usd_per_kw) * float(load.max())
    total += float((_price_matrix(request, rho_usd_per_mwh) * p).sum() * dt / 1000.0)
    if q_kvar is not None:
        total += float((_q_price_matrix(request) * np.asarray(q_kvar, float)).sum() * dt / 1000.0)
    return total


def check_schedule(
    request: MarketRequest,
    p_kw: np.ndarray,
    q_kvar: np.ndarray | None = None,
    *,
    voltage: bool = True,
) -> dict[str, float]:
    """Every constraint the simulation applies, as the largest violation of each (0 = satisfied).

    Keys: ``window_kw`` (power where the EV is not plugged), ``negative_kw``, ``rating_kw`` (above
    ``p_max·availability``), ``energy_excess_kwh`` (battery energy above the need), ``station_cap_kw`` (above
    cap minus committed), ``voltage_pu`` (below ``v_min`` beyond the base case, linearised; only with voltage data),
    ``apparent_power_kva`` (only with ``q_kvar``).
    """
    evs, n, dt = request.evs, request.n_slots, request.dt_h
    p = np.asarray(p_kw, float)
    avail = evs.availability(n)
    out = {
        "window_kw": float(np.abs(p[avail == 0]).max(initial=0.0)),
        "negative_kw": float(np.maximum(-p, 0.0).max(initial=0.0)),
        "rating_kw": float(np.maximum(p - evs.p_max_kw[:, None] * avail, 0.0).max(initial=0.0)),
        "energy_excess_kwh": float(np.maximum(p.sum(axis=1) * dt * evs.eta_ch - evs.e_need_kwh, 0.0).max(initial=0.0)),
        "station_cap_kw": 0.0,
    }
    lim = _station_limits(request)
    if lim is not None:
        over = _station_load(request, p, lim.shape[0]) - lim
        out["station_cap_kw"] = float(np.maximum(over, 0.0).max(initial=0.0))
    vd = _voltage_data(request) if voltage else None
    if vd is not None:
        nb = vd["vm_base_pu"].shape[1]
        p_bus = np.zeros((nb, n))
        np.add.at(p_bus, evs.bus, p)
        drop = vd["dv_dp_pu_per_kw"] @ p_bus
        if q_kvar is not None and "dv_dq_pu_per_kvar" in vd:
            q_bus = np.zeros((nb, n))
            np.add.at(q_bus, evs.bus, np.asarray(q_kvar, float))
            drop = drop + vd["dv_dq_pu_per_kvar"] @ q_bus
        head = np.maximum(vd["vm_base_pu"] - vd["v_min_pu"][None, :], 0.0).T
        out["voltage_pu"] = float(np.maximum(drop - head, 0.0).max(initial=0.0))
    if q_kvar is not None:
        s = np.hypot(p, np.asarray(q_kvar, float))
        out["apparent_power_kva"] = float(np.maximum(s - _s_max(request)[:, None] * avail, 0.0).max(initial=0.0))
    return out


def project(request: MarketRequest, p_kw: np.ndarray, *, bits: int | None = None) -> np.ndarray:
    """The nearest-below feasible version of any schedule, for scoring heuristics that break limits.

    Clips to ``[0, p_max·availability]``, scales an EV down where it exceeds its need and a station down where it
    exceeds its cap (what the aggregator's dispatch does), and with ``bits`` floors every power onto the grid
    ``step·k`` of the discretised variant. Power is only removed, so the result meets every constraint of
    :func:`check_schedule` except the voltage one (check that separately).
    """
    p = MILP._repair(request, np.asarray(p_kw, float), exact_grid=False)
    if bits is not None:
        levels = 2 ** int(bits) - 1
        step = np.maximum(request.evs.p_max_kw, 0.0) / levels
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(step[:, None] > 0, np.floor(p / step[:, None] + 1e-9), 0.0)
        cap = np.floor(request.evs.availability(request.n_slots) * levels + 1e-9)
        p = np.minimum(k, cap) * step[:, None]
    return p


def reference(
    request: MarketRequest, *, variant: str = "lp", bits: int | None = None, **params: Any
) -> tuple[float, MarketResult]:
    """The optimal objective [$] of ``request`` (and the `MILP` result), for gaps of other mechanisms.

    ``params`` are further `MILP` parameters (e.g. ``unserved_penalty_usd_per_kwh``); use the same ones in
    :func:`evaluate_cost`. A heuristic's gap is ``(evaluate_cost(req, its p_kw) − ref) / |ref|``.
    """
    if bits is not None:
        params["bits"] = bits
    res = MILP(variant=variant, **params).clear(request)
    return float(res.objective["objective_usd"]), res


def score(
    request: MarketRequest, result: MarketResult, reference_objective: float | None = None, **params: Any
) -> MarketResult:
    """``result`` with ``reference_objective`` and ``gap = (cost − ref) / |ref|`` filled in.

    The schedule is scored as the aggregator would dispatch it: :func:`project` first (a heuristic that breaks a
    station cap would otherwise look *better* than the optimum); ``info["score_removed_kw"]`` is the largest power
    the projection removed (0 for a feasible schedule). The LP reference is solved when not given. ``params`` are
    `MILP` parameters; those that `evaluate_cost` knows are used for scoring too.
    """
    if reference_objective is None:
        reference_objective, _ = reference(request, **params)
    keys = ("unserved_penalty_usd_per_kwh", "objective", "peak_usd_per_kw", "rho_usd_per_mwh")
    kw = {k: params[k] for k in keys if k in params}
    p = project(request, result.p_kw)
    cost = evaluate_cost(request, p, q_kvar=result.q_kvar if params.get("reactive") else None, **kw)
    ref = float(reference_objective)
    gap = (cost - ref) / abs(ref) if ref != 0 else (0.0 if abs(cost) <= 1e-12 else math.inf)
    return replace(
        result,
        reference_objective=ref,
        gap=float(gap),
        info={**result.info, "score_removed_kw": float(np.abs(result.p_kw - p).max(initial=0.0))},
    )


@register
class MILP(Mechanism):
    """Exact (LP) or discretised (MILP) optimum of the charging problem with HiGHS; see the module docstring."""

    name = "milp"
    parameters = {
        "variant": ("lp", "'lp' (continuous power) or 'milp' (power on the integer grid of a `bits`-bit QUBO)"),
        "bits": (4, "bits per EV and slot of the discretised variant: P = step·k, k in 0 … 2^bits − 1 (1–12)"),
        "unserved_penalty_usd_per_kwh": (10.0, "price of battery energy not delivered [$/kWh] (keeps it feasible)"),
        "objective": ("cost", "'cost' (energy at DLMP/tariff + penalty) or 'peak' (peak system load + penalty)"),
        "peak_usd_per_kw": (1.0, "weight of the peak load in objective 'peak' [$/kW]"),
        "rho_usd_per_mwh": (84.0, "flat price where the request has neither DLMP nor tariff [$/MWh]"),
        "reactive": (False, "also schedule Q per EV within the apparent-power limit (request.s_max_kva)"),
        "polygon_sides": (16, "sides of the inscribed polygon replacing P² + Q² ≤ S² (multiple of 4, ≥ 4)"),
        "voltage": (True, "add the LinDistFlow voltage constraint when the request carries a voltage forecast"),
        "time_limit_s": (30.0, "HiGHS time limit per clearing [s]"),
        "mip_rel_gap": (1e-6, "relative MIP gap at which HiGHS stops and reports optimal"),
        "rolling": (False, "re-solve for every plugged EV each step (sets `replans`; the simulation acts on it)"),
    }

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        #: True: the aggregator should send every plugged EV at each step (rolling horizon re-planning).
        self.replans = bool(self.params["rolling"])
        #: DLMPs price the energy, station reports bound the caps, chargers' kVA bound Q; the voltage forecast only
        #: when the voltage constraint is on
        self.needs = frozenset(
            {"dlmp", "committed_station_kw", "s_max_kva"} | ({"voltage"} if self.params["voltage"] else set())
        )

    def _validate(self) -> None:
        p = self.params

        def num(x: Any) -> bool:
            return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))

        def integer(x: Any) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))

        checks = {
            "variant": (p["variant"] in ("lp", "milp"), "'lp' or 'milp'"),
            "bits": (integer(p["bits"]) and 1 <= p["bits"] <= 12, "an integer in [1, 12]"),
            "unserved_penalty_usd_per_kwh": (
                num(p["unserved_penalty_usd_per_kwh"]) and 0 <= p["unserved_penalty_usd_per_kwh"] < math.inf,
                ">= 0, finite",
            ),
            "objective": (p["objective"] in ("cost", "peak"), "'cost' or 'peak'"),
            "peak_usd_per_kw": (num(p["peak_usd_per_kw"]) and 0 <= p["peak_usd_per_kw"] < math.inf, ">= 0, finite"),
            "rho_usd_per_mwh": (num(p["rho_usd_per_mwh"]) and 0 <= p["rho_usd_per_mwh"] < math.inf, ">= 0, finite"),
            "reactive": (isinstance(p["reactive"], (bool, np.bool_)), "true or false"),
            "polygon_sides": (
                integer(p["polygon_sides"]) and p["polygon_sides"] >= 4 and p["polygon_sides"] % 4 == 0,
                "an integer multiple of 4, >= 4",
            ),
            "voltage": (isinstance(p["voltage"], (bool, np.bool_)), "true or false"),
            "time_limit_s": (num(p["time_limit_s"]) and p["time_limit_s"] > 0, "> 0"),
            "mip_rel_gap": (num(p["mip_rel_gap"]) and 0 <= p["mip_rel_gap"] < 1, "[0, 1)"),
            "rolling": (isinstance(p["rolling"], (bool, np.bool_)), "true or false"),
        }
        for k, (ok, allowed) in checks.items():
            if not ok:
                raise MarketConfigError(f"market.params.{k}: got {p[k]!r}; allowed {allowed}")

    # ------------------------------------------------------------------ model
    def _build(self, request: MarketRequest) -> dict[str, Any]:
        """Columns [x | q | u | z] and the sparse rows of the problem, all as numpy arrays (no per-nonzero loop)."""
        p = self.params
        evs, n, dt = request.evs, request.n_slots, request.dt_h
        milp = p["variant"] == "milp"
        levels = 2 ** int(p["bits"]) - 1
        avail = evs.availability(n)
        pmax = np.maximum(evs.p_max_kw, 0.0)
        ok_ev = (pmax > 0) & (evs.e_need_kwh > _NEED_EPS_KWH)
        mask = (avail > 0) & ok_ev[:, None]
        ei, ti = np.nonzero(mask)
        nx = ei.size
        unit = pmax / levels if milp else np.ones(len(evs))  # kW per unit of x
        ux = unit[ei]
        if milp:
            x_ub = np.floor(avail[ei, ti] * levels + 1e-9)
        else:
            x_ub = pmax[ei] * avail[ei, ti]
        reactive = bool(p["reactive"])
        nq = nx if reactive else 0
        need_ev = np.nonzero(evs.e_need_kwh > _NEED_EPS_KWH)[0]
        nu = need_ev.size
        peak = p["objective"] == "peak"
        nz = 1 if peak else 0
        ncol = nx + nq + nu + nz
        c_x, c_q, c_u, c_z = 0, nx, nx + nq, nx + nq + nu

        cost = np.zeros(ncol)
        lo = np.zeros(ncol)
        hi = np.zeros(ncol)
        hi[:nx] = x_ub
        if not peak:
            cost[:nx] = _price_matrix(request, p["rho_usd_per_mwh"])[ei, ti] * ux * dt / 1000.0
        m = int(p["polygon_sides"])
        s_max = _s_max(request) if reactive else np.zeros(0)  # read only when reactive
        if reactive:
            qb = s_max[ei] * avail[ei, ti] * math.cos(math.pi / m)
            lo[c_q:c_u], hi[c_q:c_u] = -qb, qb
            cost[c_q:c_u] = _q_price_matrix(request)[ei, ti] * dt / 1000.0
        lo[c_u:c_z], hi[c_u:c_z] = 0.0, np.inf
        cost[c_u:c_z] = float(p["unserved_penalty_usd_per_kwh"])
        if peak:
            lo[c_z], hi[c_z] = -np.inf, np.inf
            cost[c_z] = float(p["peak_usd_per_kw"])

        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        rlo: list[np.ndarray] = []
        rhi: list[np.ndarray] = []
        nrow = 0

        def add(r: np.ndarray, c: np.ndarray, v: np.ndarray, lo_: np.ndarray, hi_: np.ndarray) -> None:
            nonlocal nrow
            rows.append(r + nrow)
            cols.append(c)
            vals.append(v)
            rlo.append(lo_)
            rhi.append(hi_)
            nrow += lo_.size

        # energy: Σ_t unit·x·Δt·η + u = need  (one row per EV with a need)
        row_of_ev = np.full(len(evs), -1)
        row_of_ev[need_ev] = np.arange(nu)
        need = evs.e_need_kwh[need_ev]
        add(
            np.concatenate([row_of_ev[ei], np.arange(nu)]),
            np.concatenate([c_x + np.arange(nx), c_u + np.arange(nu)]),
            np.concatenate([ux * dt * evs.eta_ch[ei], np.ones(nu)]),
            need,
            need,
        )

        # station caps
        lim = _station_limits(request)
        if lim is not None and nx:
            n_st = lim.shape[0]
            st = evs.station[ei]
            inside = (st >= 0) & (st < n_st)
            key = st[inside] * n + ti[inside]
            ub_sum = np.bincount(key, weights=ux[inside] * x_ub[inside], minlength=n_st * n)
            flat = lim.ravel()
            binding = np.nonzero(np.isfinite(flat) & (ub_sum > flat + 1e-12))[0]
            rid = np.full(n_st * n, -1)
            rid[binding] = np.arange(binding.size)
            r = rid[key]
            keep = r >= 0
            add(
                r[keep],
                (c_x + np.arange(nx))[inside][keep],
                ux[inside][keep],
                np.full(binding.size, -np.inf),
                flat[binding],
            )

        # LinDistFlow voltage: Σ_j dV/dP[b, bus_j]·P[j,t] (+ dV/dQ·Q) ≤ headroom[t, b]
        vd = _voltage_data(request) if p["voltage"] else None
        if vd is not None and nx:
            nb = vd["vm_base_pu"].shape[1]
            head = np.maximum(vd["vm_base_pu"] - vd["v_min_pu"][None, :], 0.0)  # (n, nb)
            coef = vd["dv_dp_pu_per_kw"][:, evs.bus[ei]] * ux[None, :]  # (nb, nx)
            coef_q = None
            if reactive and "dv_dq_pu_per_kvar" in vd:
                coef_q = vd["dv_dq_pu_per_kvar"][:, evs.bus[ei]]
            # largest possible left-hand side per (b, t): rows that cannot bind are left out
            worst = np.zeros((nb, n))
            np.add.at(worst.T, ti, (np.maximum(coef, 0.0) * x_ub[None, :]).T)
            if coef_q is not None:
                np.add.at(worst.T, ti, (np.abs(coef_q) * hi[c_q:c_u][None, :]).T)
            binding = worst > head.T + 1e-12  # (nb, n)
            rid = np.full((nb, n), -1)
            bb, tt = np.nonzero(binding)
            rid[bb, tt] = np.arange(bb.size)
            r_parts, c_parts, v_parts = [], [], []
            for c0, cf in ((c_x, coef), (c_q, coef_q)):
                if cf is None:
                    continue
                b_i, k_i = np.nonzero((cf != 0) & binding[:, ti])
                r_parts.append(rid[b_i, ti[k_i]])
                c_parts.append(c0 + k_i)
                v_parts.append(cf[b_i, k_i])
            add(
                np.concatenate(r_parts),
                np.concatenate(c_parts),
                np.concatenate(v_parts),
                np.full(bb.size, -np.inf),
                head.T[bb, tt],
            )

        # P–Q polygon (inscribed, facets with normals in (−90°, 90°))
        if reactive and nx:
            ang = 2 * np.pi * np.arange(m) / m
            ang = ang[np.cos(ang) > 1e-12]
            rad = s_max[ei] * avail[ei, ti] * math.cos(math.pi / m)
            k_idx = np.repeat(np.arange(ang.size), nx)
            v_idx = np.tile(np.arange(nx), ang.size)
            r = np.arange(ang.size * nx)
            add(
                np.concatenate([r, r]),
                np.concatenate([c_x + v_idx, c_q + v_idx]),
                np.concatenate([np.cos(ang)[k_idx] * ux[v_idx], np.sin(ang)[k_idx]]),
                np.full(r.size, -np.inf),
                rad[v_idx],
            )

        # peak: Σ_i unit·x[i,t] − z ≤ −(base + committed)[t]
        if peak:
            load = request.base_load_kw + request.committed_ev_kw
            add(
                np.concatenate([ti, np.arange(n)]),
                np.concatenate([c_x + np.arange(nx), np.full(n, c_z)]),
                np.concatenate([ux, -np.ones(n)]),
                np.full(n, -np.inf),
                -load,
            )

        integrality = np.zeros(ncol, np.int32)
        if milp:
            integrality[:nx] = 1
        return {
            "ncol": ncol,
            "nrow": nrow,
            "cost": cost,
            "lo": lo,
            "hi": hi,
            "rows": np.concatenate(rows) if rows else np.zeros(0, int),
            "cols": np.concatenate(cols) if cols else np.zeros(0, int),
            "vals": np.concatenate(vals) if vals else np.zeros(0),
            "rlo": np.concatenate(rlo) if rlo else np.zeros(0),
            "rhi": np.concatenate(rhi) if rhi else np.zeros(0),
            "integrality": integrality,
            "ei": ei,
            "ti": ti,
            "ux": ux,
            "nx": nx,
            "nq": nq,
        }

    # ------------------------------------------------------------------ solve
    def _solve(self, model: dict[str, Any]) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Solve with HiGHS; returns (column values or None, solver info)."""
        import highspy
        from scipy.sparse import coo_matrix

        p = self.params
        ncol, nrow = model["ncol"], model["nrow"]
        a = coo_matrix((model["vals"], (model["rows"], model["cols"])), shape=(nrow, ncol)).tocsc()
        a.sum_duplicates()
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.setOptionValue("time_limit", float(p["time_limit_s"]))
        h.setOptionValue("mip_rel_gap", float(p["mip_rel_gap"]))
        inf = highspy.kHighsInf
        lo, hi = np.where(np.isinf(model["lo"]), -inf, model["lo"]), np.where(np.isinf(model["hi"]), inf, model["hi"])
        rlo = np.where(np.isinf(model["rlo"]), -inf, model["rlo"])
        rhi = np.where(np.isinf(model["rhi"]), inf, model["rhi"])
        milp = bool(model["integrality"].any())
        passed = h.passModel(
            ncol,
            nrow,
            int(a.nnz),
            int(highspy.MatrixFormat.kColwise),
            int(highspy.ObjSense.kMinimize),
            0.0,
            model["cost"],
            lo,
            hi,
            rlo,
            rhi,
            a.indptr.astype(np.int32),
            a.indices.astype(np.int32),
            a.data.astype(float),
            model["integrality"],
        )
        t = time.perf_counter()
        if passed == highspy.HighsStatus.kError:
            ms, key = None, "kModelError"
        else:
            h.run()
            ms = h.getModelStatus()
            key = str(ms).rsplit(".", 1)[-1]
        solve_s = time.perf_counter() - t
        status = _STATUS.get(key, key.removeprefix("k").lower())
        info = h.getInfo()
        feasible = int(info.primal_solution_status) == int(highspy.SolutionStatus.kSolutionStatusFeasible)
        x: np.ndarray | None = None
        if key == "kModelError":
            feasible = False
        elif key == "kModelEmpty":  # no rows: every column sits at its cheaper bound
            x = np.where(model["cost"] < 0, model["hi"], model["lo"])
            x = np.where(np.isfinite(x), x, 0.0)
            feasible = True
        elif feasible:
            x = np.asarray(h.getSolution().col_value, float)
        gap = float(info.mip_gap) if milp else (0.0 if status == "optimal" else math.nan)
        out = {
            "status": status,
            "highs_status": h.modelStatusToString(ms) if ms is not None else "passModel error",
            "has_solution": x is not None,
            "mip_gap": gap if math.isfinite(gap) else math.nan,
            "solver_objective_usd": float(info.objective_function_value) if x is not None else math.nan,
            "dual_bound_usd": float(info.mip_dual_bound) if milp else math.nan,
            "mip_nodes": int(info.mip_node_count) if milp else 0,
            "n_vars": int(ncol),
            "n_int_vars": int(model["integrality"].sum()),
            "n_rows": int(nrow),
            "n_nonzeros": int(a.nnz),
            "solve_time_s": solve_s,
        }
        return x, out

    def _clear(self, request: MarketRequest) -> MarketResult:
        p = self.params
        evs, n, dt = request.evs, request.n_slots, request.dt_h
        milp = p["variant"] == "milp"
        reactive = bool(p["reactive"])
        t = time.perf_counter()
        model = self._build(request)
        build_s = time.perf_counter() - t
        p_kw = np.zeros((len(evs), n))
        q_kvar = np.zeros((len(evs), n)) if reactive else None
        if model["ncol"] == 0:
            x, info = (
                None,
                {
                    "status": "optimal",
                    "highs_status": "no variables",
                    "has_solution": True,
                    "mip_gap": 0.0,
                    "solver_objective_usd": 0.0,
                    "dual_bound_usd": math.nan,
                    "mip_nodes": 0,
                    "n_vars": 0,
                    "n_int_vars": 0,
                    "n_rows": 0,
                    "n_nonzeros": 0,
                    "solve_time_s": 0.0,
                },
            )
        else:
            x, info = self._solve(model)
        ei, ti, nx = model["ei"], model["ti"], model["nx"]
        repair = 0.0
        if x is not None and nx:
            xv = x[:nx]
            if milp:
                xv = np.clip(np.round(xv), 0.0, model["hi"][:nx])
            p_kw[ei, ti] = model["ux"] * xv
            if reactive:
                assert q_kvar is not None  # allocated whenever reactive
                q_kvar[ei, ti] = x[nx : nx + model["nq"]]
            raw = p_kw.copy()
            p_kw = self._repair(request, p_kw, exact_grid=milp)
            repair = float(np.abs(raw - p_kw).max(initial=0.0))
        kw = {k: p[k] for k in ("unserved_penalty_usd_per_kwh", "objective", "peak_usd_per_kw", "rho_usd_per_mwh")}
        obj = evaluate_cost(request, p_kw, q_kvar=q_kvar, **kw)
        energy = evaluate_cost(request, p_kw, unserved_penalty_usd_per_kwh=0.0, rho_usd_per_mwh=p["rho_usd_per_mwh"])
        load = request.base_load_kw + request.committed_ev_kw + p_kw.sum(axis=0)
        objective = {
            "energy_cost_usd": energy,
            "unserved_kwh": float(_unserved_kwh(request, p_kw).sum()),
            "peak_kw": float(load.max()),
            "objective_usd": obj,
        }
        if reactive:
            objective["reactive_cost_usd"] = float((_q_price_matrix(request) * q_kvar).sum() * dt / 1000.0)
        if request.dlmp_p_usd_per_mwh is not None:
            price = np.asarray(request.dlmp_p_usd_per_mwh, float).mean(axis=1)
        else:
            price = np.asarray(request.price_usd_per_mwh, float)
            price = np.where(np.isnan(price), float(p["rho_usd_per_mwh"]), price)
        info.update(
            variant=p["variant"],
            bits=int(p["bits"]) if milp else None,
            build_time_s=build_s,
            repair_kw=repair,
            v2g_ignored=int(np.sum(evs.p_min_kw < 0)),
            voltage_constrained=bool(p["voltage"]) and _voltage_data(request) is not None,
        )
        return MarketResult(
            mechanism=self.name,
            price_usd_per_mwh=price,
            p_kw=p_kw,
            q_kvar=q_kvar,
            base_load_shift_kw=np.zeros(n),
            objective=objective,
            violations=check_schedule(request, p_kw, q_kvar, voltage=bool(p["voltage"])),
            info=info,
        )

    @staticmethod
    def _repair(request: MarketRequest, p_kw: np.ndarray, *, exact_grid: bool) -> np.ndarray:
        """Remove solver-tolerance residues: clip to the bounds, then scale down energy and station overshoots.

        On the discretised grid only the (float-exact) clip is applied: rounded integers already meet the rows to
        rounding; any residue is reported by `check_schedule`.
        """
        evs, n, dt = request.evs, request.n_slots, request.dt_h
        avail = evs.availability(n)
        p = np.clip(p_kw, 0.0, np.maximum(evs.p_max_kw, 0.0)[:, None] * avail)
        if exact_grid:
            return p
        e = p.sum(axis=1) * dt * evs.eta_ch
        over = e > evs.e_need_kwh
        if over.any():
            p[over] *= (evs.e_need_kwh[over] / e[over])[:, None]
        lim = _station_limits(request)
        if lim is not None:
            load = _station_load(request, p, lim.shape[0])
            with np.errstate(all="ignore"):
                scale = np.where(load > lim, lim / load, 1.0)
            st = evs.station
            inside = (st >= 0) & (st < lim.shape[0])
            p[inside] *= scale[st[inside]]
        return p
