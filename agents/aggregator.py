"""Aggregator and market operator agents.

The aggregator groups EVs by station (and so by bus), reports the flexibility (`EVFlex`) of the EVs that need a
schedule (the simulation's market interface, `sim.interface`, wraps it into the `MarketRequest`), and turns the `MarketResult` into per-EV power for the current step without breaking any EV's limits: never above
its charger rating, never outside its plug-in window, never more energy than it still needs, and never above its
station's cap (a station over its cap scales all its EVs down in proportion).

Schedules are committed per EV when it plugs in; an EV that got less than scheduled (station cap, DSO
curtailment) is rescheduled at the next step with what it still needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mesa
import numpy as np

from agents.fleet import PLUGGED
from agents.setpoints import Setpoints, check_memory, ring_width
from markets.base import EVFlex, MarketRequest, MarketResult, Mechanism
from markets.battery import charge_limit_kw, follow_curve, reserve_kwh
from markets.parts import availability
from markets.scoring import Scored

if TYPE_CHECKING:  # pragma: no cover
    from sim.model import CoSimulation


class MarketOperator(mesa.Agent):
    """Calls the configured mechanism and keeps the day-ahead plan (tariff and demand-response shift per step).

    With reference scoring on, ``mechanism`` is a `markets.scoring.Scored` composite; its running totals are
    read through ``reference`` (None when scoring is off).
    """

    def __init__(
        self,
        model: CoSimulation,
        mechanism: Mechanism,
        n_steps: int,
        tariff_usd_per_mwh: np.ndarray,
    ) -> None:
        super().__init__(model)
        self.mechanism = mechanism
        self.price_usd_per_mwh = np.asarray(tariff_usd_per_mwh, float).copy()
        self.shift_kw = np.zeros(n_steps)
        self.wall_time_s = 0.0
        self.n_clearings = 0
        self.dlmp_p: np.ndarray | None = None  # (n_steps, n_bus) when the DSO prices the grid
        self.dlmp_q: np.ndarray | None = None
        self.dlmp_failed_slots = 0
        self.load_range_kw: tuple[float, float] | None = None  # day-ahead forecast range, anchors real-time prices

    @property
    def reference(self) -> Scored | None:
        """The scoring composite when the mechanism is scored against the exact optimum, else None."""
        return self.mechanism if isinstance(self.mechanism, Scored) else None

    @property
    def objective_usd(self) -> float:
        """The mechanism's schedules on the reference's objective, summed over scored clearings [$]."""
        return self.reference.objective_usd if self.reference is not None else 0.0

    @property
    def reference_usd(self) -> float:
        """The exact optima of the scored clearings, summed [$]."""
        return self.reference.reference_usd if self.reference is not None else 0.0

    @property
    def gaps(self) -> list[float]:
        """Relative gap of every scored clearing."""
        return self.reference.gaps if self.reference is not None else []

    @property
    def reference_time_s(self) -> float:
        """Wall time spent solving references [s]."""
        return self.reference.reference_time_s if self.reference is not None else 0.0

    @property
    def replans(self) -> bool:
        """Whether the mechanism re-solves every plugged EV at every step (rolling horizon; declared by it)."""
        return self.mechanism.replans

    def clear(self, request: MarketRequest) -> MarketResult:
        """Clear with the mechanism (scored against the exact optimum when it is a `Scored` composite)."""
        result = self.mechanism.clear(request)
        self.wall_time_s += result.info["wall_time_s"]
        self.n_clearings += 1
        return result

    def plan_day(self, k: int, request: MarketRequest) -> None:
        """Clear the day-ahead request starting at step ``k`` and store its price and shift."""
        res = self.clear(request)
        n = request.n_slots
        price = np.asarray(res.price_usd_per_mwh, float)
        if price.ndim == 2:  # locational prices: the plan keeps the system (mean) price
            price = price.mean(axis=1)
        self.price_usd_per_mwh[k : k + n] = price[:n]
        if res.base_load_shift_kw is not None:
            self.shift_kw[k : k + n] = res.base_load_shift_kw[:n]
        total = request.base_load_kw + self.shift_kw[k : k + n]
        self.load_range_kw = (float(total.min()), float(total.max()))

    def reprice(self, k: int, result: MarketResult) -> None:
        """Adopt a real-time price for steps ``k …`` when the mechanism re-priced (``result.repriced``)."""
        if result.repriced:
            price = np.asarray(result.price_usd_per_mwh, float)
            self.price_usd_per_mwh[k : k + len(price)] = price


class Aggregator(mesa.Agent):
    """Builds market requests from the fleet and dispatches schedules to individual EVs (see module docstring)."""

    def __init__(self, model: CoSimulation, n_steps: int) -> None:
        super().__init__(model)
        fleet = model.fleet
        # per EV and step, kept around each EV's stay on long runs (agents/setpoints.py; dense on short ones)
        reach = max(model.lookahead_steps, model.steps_per_day)  # the real-time and the day-ahead requests' reach
        width = ring_width(fleet.arrival_min, fleet.departure_min, model.dt_min, reach)
        first = np.floor(fleet.arrival_min / model.dt_min).astype(np.int64)  # each EV's window opens at arrival
        self.kw = Setpoints(len(fleet), n_steps, width, first)  # (np.zeros: no page touched before the check)
        check_memory(*self.kw.data.shape)
        self.kvar = Setpoints(len(fleet), n_steps, width, first)  # reactive (+ = inject), when a market sets them
        self.scheduled = np.zeros(len(fleet), bool)
        self._kvar_set = False  # schedule_kvar is all zeros until a market sets reactive power
        # per EV, the step after the last schedule entry ever written: clearing an old schedule touches only up to
        # there (clearing to the end of the horizon made each step cost the whole horizon on multi-day runs)
        self._end = np.zeros(len(fleet), np.int64)

    def to_schedule(self) -> np.ndarray:
        """Indices of plugged EVs that need a (new) schedule."""
        f = self.model.fleet
        idx = np.nonzero((f.state == PLUGGED) & ~self.scheduled)[0]
        return idx[f.need_of(idx) > 1e-9]

    def flex(self, idx: np.ndarray, k: int, n_slots: int) -> EVFlex:
        """Flexibility of EVs ``idx`` for a request whose slot 0 is step ``k``."""
        f = self.model.fleet
        end, frac = self._window(idx, k, n_slots)
        return EVFlex.trusted(  # the fleet's own state, built here (re-validated over whole runs in tests)
            ev_id=idx,
            bus=f.bus[idx],
            station=f.station[idx],
            start_slot=np.zeros(len(idx), int),
            end_slot=end,
            end_frac=frac,
            e_need_kwh=f.need_of(idx),
            p_max_kw=f.p_max_kw[idx],
            p_min_kw=-f.p_dis_kw[idx],
            eta_ch=f.eta_ch[idx],
            participates=f.participates[idx],
            elasticity=f.elasticity[idx],
            eta_dis=f.eta_dis[idx],
            e_kwh=f.e_kwh[idx],
            e_cap_kwh=f.battery_kwh[idx],
            # a V2G EV that arrived below its floor may not discharge below where it is (the dispatch holds the floor)
            e_floor_kwh=np.where(
                f.v2g[idx], np.minimum(f.soc_floor[idx] * f.battery_kwh[idx], f.e_kwh[idx]), f.e_kwh[idx]
            ),
            transition_soc=f.transition_soc[idx],
            degradation_usd_per_kwh=f.degradation_usd_per_kwh[idx],
        )

    def _window(self, idx: np.ndarray, k: int, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
        """End slot (exclusive) and the plugged-in share of the last slot of EVs ``idx``, slot 0 = step ``k``."""
        dt = self.model.dt_min
        dep_rel = (self.model.fleet.departure_min[idx] - k * dt) / dt
        end = np.minimum(np.ceil(dep_rel - 1e-9).astype(int), n_slots)
        end = np.maximum(end, 1)
        frac = np.where(np.ceil(dep_rel - 1e-9) <= n_slots, dep_rel - (end - 1), 1.0)
        return end, np.clip(frac, 1e-6, 1.0)

    @property
    def schedule_kw(self) -> np.ndarray:
        """Active set-points [kW], (n_evs, n_steps), on runs that keep the dense matrix (see `Setpoints.dense`)."""
        return self.kw.dense()

    @property
    def schedule_kvar(self) -> np.ndarray:
        """Reactive set-points [kVAr] (+ = inject), as `schedule_kw`."""
        return self.kvar.dense()

    def committed_kw(self, k: int, n: int | None = None) -> np.ndarray:
        """EV load already committed for steps ``k … k+n−1`` (default: to the end of the horizon) [kW]."""
        rows = np.nonzero(self.scheduled & (self.model.fleet.state == PLUGGED))[0]
        out = np.zeros((1, self._columns(k, n)))
        self.kw.add_rows(out, np.zeros(len(self.scheduled), np.int64), rows, k)
        return out[0]

    def committed_station_kw(self, k: int, n: int | None = None) -> np.ndarray:
        """Committed EV load per station for steps ``k … k+n−1`` (default: to the end of the horizon) [kW], shape
        (n_stations, n)."""
        f = self.model.fleet
        rows = np.nonzero(self.scheduled & (f.state == PLUGGED))[0]
        out = np.zeros((len(self.model.station_table), self._columns(k, n)))
        self.kw.add_rows(out, f.station, rows, k)
        return out

    def _columns(self, k: int, n: int | None) -> int:
        rest = self.kw.n_steps - k
        n = rest if n is None else max(min(n, rest), 0)
        if n > self.kw.width:
            raise ValueError(f"committed load over {n} steps; the set-points keep {self.kw.width} per EV")
        return n

    def accept(self, idx: np.ndarray, k: int, result: MarketResult) -> None:
        """Store the schedules of EVs ``idx`` from a result whose slot 0 is step ``k``."""
        n = result.p_kw.shape[1]
        end = int(self._end[idx].max()) if len(idx) else 0  # nothing of these EVs' schedules lies beyond
        self.kw.clear(idx, k + n, end)  # a shorter horizon: nothing of an old schedule may stay behind it
        f = self.model.fleet
        p = np.clip(result.p_kw, -f.p_dis_kw[idx, None], f.p_max_kw[idx, None])
        taper = np.nonzero(f.transition_soc[idx] < 1.0)[0]
        if len(taper):  # two-stage batteries: along the curve, the energy it cuts late pulled forward
            p[taper] = self._along_curve(idx[taper], k, p[taper])
        self.kw.write(idx, k, p)
        if self._kvar_set:  # reactive set-points were ever stored: clear the old ones of these EVs
            self.kvar.clear(idx, k, end)
        if result.q_kvar is not None:
            self.kvar.write(idx, k, -np.asarray(result.q_kvar))  # market: load convention; grid side: injection
            self._kvar_set = True
        self._end[idx] = k + n
        self.scheduled[idx] = True

    def _along_curve(self, rows: np.ndarray, k: int, p_kw: np.ndarray) -> np.ndarray:
        """Schedules ``p_kw`` of EVs ``rows`` (slot 0 = step ``k``) made to follow their charging curve
        (`markets.battery.follow_curve`)."""
        f = self.model.fleet
        end, frac = self._window(rows, k, p_kw.shape[1])
        return follow_curve(
            p_kw,
            f.e_kwh[rows],
            f.need_of(rows),
            f.battery_kwh[rows],
            f.p_max_kw[rows],
            f.transition_soc[rows],
            f.eta_ch[rows],
            f.eta_dis[rows],
            self.model.dt_min / 60.0,
            availability(np.zeros(len(rows), int), end, frac, p_kw.shape[1]),  # as flex(rows, k, n).availability
        )

    def dispatch(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Power of every plugged EV this step, within all its limits and its station's cap.

        Returns:
            (indices of plugged EVs, their grid-side active power [kW], their reactive injection [kVAr], the
            latter within the charger's headroom ``sqrt(S² − P²)``).
        """
        f = self.model.fleet
        dt_h = self.model.dt_min / 60.0
        idx = np.nonzero(f.state == PLUGGED)[0]
        p = self.kw.at(idx, k)
        # never more than the energy still missing; never beyond the plug-in window of this step
        p = np.minimum(p, f.need_of(idx) / (f.eta_ch[idx] * dt_h))
        frac = np.clip((f.departure_min[idx] - k * self.model.dt_min) / self.model.dt_min, 0.0, 1.0)
        p = np.clip(p, -f.p_dis_kw[idx] * frac, f.p_max_kw[idx] * frac)
        taper = np.nonzero(f.transition_soc[idx] < 1.0)[0]  # two-stage batteries: the curve at this step's SOC
        if len(taper):
            j = idx[taper]
            lim = charge_limit_kw(
                f.e_kwh[j], f.battery_kwh[j], f.p_max_kw[j], f.transition_soc[j], f.eta_ch[j], dt_h, frac[taper]
            )
            p[taper] = np.minimum(p[taper], lim)
        dis = np.nonzero(p < 0)[0]
        if len(dis):  # V2G: never below the SOC floor, nor below what still reaches the target by departure
            j = idx[dis]
            res = self._reserve_next_kwh(j, k)
            keep = np.maximum(f.soc_floor[j] * f.battery_kwh[j], res)
            p[dis] = np.maximum(p[dis], -np.maximum(f.e_kwh[j] - keep, 0.0) * f.eta_dis[j] / dt_h)
            # the reserve rises as departure nears: an EV already below the next step's reserve charges up to it
            # (within its curve) instead of idling, which would leave it short of its target for good
            lim = charge_limit_kw(
                f.e_kwh[j], f.battery_kwh[j], f.p_max_kw[j], f.transition_soc[j], f.eta_ch[j], dt_h, frac[dis]
            )
            below = res > f.e_kwh[j]
            back = np.minimum((res - f.e_kwh[j]) / (f.eta_ch[j] * dt_h), lim)
            p[dis] = np.where(below, np.maximum(p[dis], back), p[dis])
        st = self.model.station_table
        if np.isfinite(st.cap_kw).any() and len(idx):
            load = np.bincount(f.station[idx], weights=np.maximum(p, 0.0), minlength=len(st))
            scale = np.where(load > st.cap_kw, st.cap_kw / np.maximum(load, 1e-12), 1.0)
            p = np.where(p > 0, p * scale[f.station[idx]], p)
        headroom = np.sqrt(np.maximum(f.s_max_kva[idx] ** 2 - p**2, 0.0))
        q = np.clip(self.kvar.at(idx, k), -headroom, headroom)
        return idx, p, q

    def discharge_floor_kwh(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Least battery energy EVs ``rows`` may hold at the end of step ``k`` [kWh]: their SOC floor, and the
        reserve from which charging at their limit (`agents.battery.reserve_kwh`) still meets the target by
        departure."""
        f = self.model.fleet
        return np.maximum(f.soc_floor[rows] * f.battery_kwh[rows], self._reserve_next_kwh(rows, k))

    def _reserve_next_kwh(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Least battery energy of EVs ``rows`` at the end of step ``k`` from which charging at their limit still
        meets the target by departure [kWh] (`markets.battery.reserve_kwh`)."""
        f = self.model.fleet
        dt = self.model.dt_min
        rel = (f.departure_min[rows] - (k + 1) * dt) / dt  # plugged-in slots after this one
        n = int(max(np.ceil(rel.max() - 1e-9), 0)) if len(rows) else 0
        avail = np.clip(rel[:, None] - np.arange(n), 0.0, 1.0)
        cap = f.battery_kwh[rows]
        res = reserve_kwh(
            f.soc_target[rows] * cap, cap, f.p_max_kw[rows], f.transition_soc[rows], f.eta_ch[rows], dt / 60.0, avail
        )
        return res[:, 0]

    def shortfall(self, idx: np.ndarray, k: int, p_kw: np.ndarray) -> None:
        """EVs that got less than scheduled this step are rescheduled next step."""
        short = p_kw < self.kw.at(idx, k) - 1e-9
        if short.any():
            rows = idx[short]
            self.scheduled[rows] = False
            self.kw.clear(rows, k + 1, int(self._end[rows].max()))  # (_end stays a bound for both arrays)
