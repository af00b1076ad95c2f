"""The `eho-bilevel` mechanism: the aggregator's day-ahead forecast, the search, and the clearing of each slot."""

from __future__ import annotations

from dataclasses import fields
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
from markets.eho_bilevel.model import BilevelProblem, Sessions
from markets.eho_bilevel.search import solve

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
        "eho_matriarch": (
            "origin",
            "EHO matriarch update: 'origin' (the paper's eq. 22, β × clan centre: pulls towards the origin) or "
            "'best' (clan best + β × (clan best − clan centre): no origin bias, best with eho_beta = 1; "
            "markets/eho.py)",
        ),
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
            "eho_matriarch": (p["eho_matriarch"] in ("origin", "best"), "'origin' or 'best'"),
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
                matriarch=p["eho_matriarch"],
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
