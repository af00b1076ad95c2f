"""The bilevel model of `eho-bilevel` for a known set of sessions: the sessions, the lower level's response, and
the upper-level objective."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from markets.eho_bilevel.kernel import _kernel


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
        redirect: who may be sent to another of ``alternatives``: ``"followers"`` (the users who follow the
            program, each picking its best station) or ``"all"`` (also the users who do not follow, each sent to
            the station where it gets the most energy, then a port soonest — they still charge as non-followers).
            Without ``alternatives`` nobody changes station either way.
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
        redirect: str = "followers",
    ) -> None:
        if redirect not in ("followers", "all"):
            raise ValueError(f"redirect: got {redirect!r}; allowed 'followers' or 'all'")
        self.redirect = redirect
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
        self._station_tables(alternatives, booked_station_kw, port_free_h)
        self._e_grid = s.need_kwh / s.eta_ch
        self.n_evals = 0
        self._base: _Baseline | None = None

    def _station_tables(
        self,
        alternatives: Sequence[Sequence[int]] | None,
        booked_station_kw: Any,
        port_free_h: Sequence[Sequence[float]] | None,
    ) -> None:
        """The stations' alternatives (padded, own station first), booked load [kW] and port release times [h]."""
        S, T = self.n_stations, self.n_slots
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
            self.redirect == "all",
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
