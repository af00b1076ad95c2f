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
* **V2G** (``variant="lp"``): an EV with ``p_min_kw < 0`` and energy above its floor (`EVFlex.discharges`) gets
  discharge columns ``Y[i,t] ∈ [0, −p_min·a]`` (grid side) and state-of-charge columns
  ``s[i,t] ∈ [e_floor, min(e_cap, e_kwh + e_need)]`` (never above the target: the dispatch never charges past it)
  with ``s[t] = s[t−1] + η_ch·P·Δt − Y·Δt/η_dis``; the energy row becomes
  ``Σ (η_ch·P − Y/η_dis)·Δt + u = need``, the peak row counts ``P − Y``, discharge earns ``λ`` and costs the battery
  wear ``degradation_usd_per_kwh·Y·Δt/η_dis`` in both objectives. ``p_kw = P − Y``. Not in the station-cap and
  voltage rows (both stay conservative: discharge only relieves them). No binary against simultaneous P and Y:
  with η < 1 and wear > 0 it never pays unless prices are negative; the net power is what is dispatched. The
  discretised variant has no negative levels: it schedules V2G EVs as charge-only (``info["v2g_ignored"]``) and
  declares ``discharges = False``, so a scenario with V2G EVs is rejected at validation.
* **Two-stage battery.** EVs with ``transition_soc < 1`` whose energy can pass it get the charging curve as rows
  ``P[t] ≤ slope·a[t]·(cap − s[t−1])`` (`markets.battery`) — exact, not an approximation.
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
from markets.battery import charge_limit_kw, follow_curve
from markets.milp_model import (
    _battery_kwh,
    _HighsModel,
    _price_matrix,
    _q_price_matrix,
    _s_max,
    _station_limits,
    _station_load,
    _unserved_kwh,
    _voltage_data,
    _wear_usd,
)


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
    ``π × unserved battery energy`` + battery wear of V2G discharge. ``"peak"``: ``peak_usd_per_kw ×
    max_t(base + committed + Σ P)`` + the same unserved and wear terms. Unserved energy is ``max(need − Σ battery
    energy, 0)`` per EV (charging × η_ch, discharging ÷ η_dis). Schedules that break other limits are still scored;
    see :func:`check_schedule` for those.
    """
    p = np.asarray(p_kw, float)
    if p.shape != (len(request.evs), request.n_slots):
        raise RequestError(f"p_kw: expected shape ({len(request.evs)}, {request.n_slots}), got {p.shape}")
    dt = request.dt_h
    total = float(unserved_penalty_usd_per_kwh) * float(_unserved_kwh(request, p).sum()) + _wear_usd(request, p)
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

    Keys: ``window_kw`` (power where the EV is not plugged), ``negative_kw`` (discharge beyond what the EV allows:
    below ``p_min·availability``, or any discharge by an EV that cannot), ``rating_kw`` (above
    ``p_max·availability``), ``energy_excess_kwh`` (net battery energy above the need), ``soc_kwh`` (battery energy
    outside ``[e_floor, e_cap]`` at a slot's end), ``curve_kw`` (above the two-stage charging curve),
    ``station_cap_kw`` (above cap minus committed), ``voltage_pu`` (below ``v_min`` beyond the base case,
    linearised; only with voltage data), ``apparent_power_kva`` (only with ``q_kvar``).
    """
    evs, n, dt = request.evs, request.n_slots, request.dt_h
    p = np.asarray(p_kw, float)
    avail = evs.availability(n)
    p_lo = np.minimum(np.where(evs.discharges, evs.p_min_kw, 0.0), 0.0)[:, None] * avail
    e_bat = _battery_kwh(request, p)
    e_end = evs.e_kwh[:, None] + np.cumsum(e_bat, axis=1)
    e_start = e_end - e_bat
    curve = charge_limit_kw(
        e_start,
        evs.e_cap_kwh[:, None],
        evs.p_max_kw[:, None],
        evs.transition_soc[:, None],
        evs.eta_ch[:, None],
        dt,
        avail,
    )
    floor = np.minimum(evs.e_floor_kwh, evs.e_kwh)[:, None]
    out = {
        "window_kw": float(np.abs(p[avail == 0]).max(initial=0.0)),
        "negative_kw": float(np.maximum(p_lo - p, 0.0).max(initial=0.0)),
        "rating_kw": float(np.maximum(p - evs.p_max_kw[:, None] * avail, 0.0).max(initial=0.0)),
        "energy_excess_kwh": float(np.maximum(e_bat.sum(axis=1) - evs.e_need_kwh, 0.0).max(initial=0.0)),
        "soc_kwh": float(np.maximum(np.maximum(floor - e_end, e_end - evs.e_cap_kwh[:, None]), 0.0).max(initial=0.0)),
        "curve_kw": float(np.maximum(p - curve, 0.0).max(initial=0.0)),
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

    Makes two-stage batteries follow their charging curve (`markets.battery.follow_curve`, as the aggregator does:
    what the curve cuts late is moved earlier, the only step that adds power), clips to
    ``[p_min, p_max]·availability``, scales an EV down where it exceeds its need and a station down where it exceeds
    its cap (what the aggregator's dispatch does), and with ``bits`` floors every power onto the grid ``step·k`` of
    the discretised variant. Every step after the first only removes power, so the result meets every constraint of
    :func:`check_schedule` except the voltage one (check that separately) and — where a station cap removes power
    the curve had moved — the curve's reserve.
    """
    p = np.asarray(p_kw, float)
    evs = request.evs
    taper = np.nonzero(evs.transition_soc < 1.0)[0]
    if len(taper):  # two-stage batteries: along the curve first, as the aggregator dispatches (markets.battery)
        p = p.copy()
        p[taper] = follow_curve(
            p[taper],
            evs.e_kwh[taper],
            evs.e_need_kwh[taper],
            evs.e_cap_kwh[taper],
            evs.p_max_kw[taper],
            evs.transition_soc[taper],
            evs.eta_ch[taper],
            evs.eta_dis[taper],
            request.dt_h,
            evs.availability(request.n_slots)[taper],
        )
    p = MILP._repair(request, p, exact_grid=False)
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


#: solver info of a request without a single variable (nothing to schedule): optimal by definition
_NO_VARIABLES: dict[str, Any] = {
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
}


@register
class MILP(_HighsModel, Mechanism):
    """Exact (LP) or discretised (MILP) optimum of the charging problem with HiGHS; see the module docstring."""

    name = "milp"
    discharges = True  # with variant = "lp" (the instance says; see __init__)
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
        #: V2G EVs discharge in the continuous variant; the integer grid of a QUBO has no negative levels
        self.discharges = self.params["variant"] == "lp"
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
        x, info = (None, dict(_NO_VARIABLES)) if model["ncol"] == 0 else self._solve(model)
        ei, ti, nx = model["ei"], model["ti"], model["nx"]
        repair = 0.0
        if x is not None and nx:
            xv = x[:nx]
            if milp:
                xv = np.clip(np.round(xv), 0.0, model["hi"][:nx])
            p_kw[ei, ti] = model["ux"] * xv
            yi, yt, c_y = model["yi"], model["yt"], model["c_y"]
            p_kw[yi, yt] -= np.maximum(x[c_y : c_y + yi.size], 0.0)  # V2G discharge: net grid-side power
            if reactive:
                assert q_kvar is not None  # allocated whenever reactive
                q_kvar[ei, ti] = x[nx : nx + model["nq"]]
            raw = p_kw.copy()
            p_kw = self._repair(request, p_kw, exact_grid=milp)
            repair = float(np.abs(raw - p_kw).max(initial=0.0))
        kw = {k: p[k] for k in ("unserved_penalty_usd_per_kwh", "objective", "peak_usd_per_kw", "rho_usd_per_mwh")}
        obj = evaluate_cost(request, p_kw, q_kvar=q_kvar, **kw)
        wear = _wear_usd(request, p_kw)
        energy = (
            evaluate_cost(request, p_kw, unserved_penalty_usd_per_kwh=0.0, rho_usd_per_mwh=p["rho_usd_per_mwh"]) - wear
        )
        load = request.base_load_kw + request.committed_ev_kw + p_kw.sum(axis=0)
        objective = {
            "energy_cost_usd": energy,
            "unserved_kwh": float(_unserved_kwh(request, p_kw).sum()),
            "peak_kw": float(load.max()),
            "discharged_kwh": float(np.maximum(-p_kw, 0.0).sum() * dt),
            "degradation_usd": wear,
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
            v2g_evs=int(np.sum(evs.discharges)) if self.discharges else 0,
            v2g_ignored=0 if self.discharges else int(np.sum(evs.discharges)),
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
        evs, n = request.evs, request.n_slots
        avail = evs.availability(n)
        p_lo = np.minimum(np.where(evs.discharges, evs.p_min_kw, 0.0), 0.0)[:, None] * avail
        p = np.clip(p_kw, p_lo, np.maximum(evs.p_max_kw, 0.0)[:, None] * avail)
        if exact_grid:
            return p
        e = _battery_kwh(request, p)
        pos = np.maximum(e, 0.0).sum(axis=1)
        over = e.sum(axis=1) > evs.e_need_kwh
        if over.any():  # charging scaled down until the net battery energy is the need (discharge kept)
            scale = (evs.e_need_kwh[over] - np.minimum(e[over], 0.0).sum(axis=1)) / pos[over]
            p[over] = np.where(p[over] > 0, p[over] * scale[:, None], p[over])
        lim = _station_limits(request)
        if lim is not None:
            load = _station_load(request, p, lim.shape[0])
            with np.errstate(all="ignore"):
                scale = np.where(load > lim, lim / load, 1.0)
            st = evs.station
            inside = (st >= 0) & (st < lim.shape[0])
            p[inside] *= scale[st[inside]]
        return p
