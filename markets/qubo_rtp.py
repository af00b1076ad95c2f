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

from typing import Any

import numpy as np

from markets.base import MarketConfigError, MarketRequest, MarketResult, Mechanism, finite_number, register
from markets.qubo import samplers
from markets.qubo.rtp import RTPInstance, RTPReference, build_qubo, evaluate, reference, urgency_factor
from markets.qubo.rtp_sampling import RTPSolution, gap, solve

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
        n_st, cap, bus_row, bus_cap = _station_rows(request)
        prev = self._prev_levels(request, n_st, dt_h)
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
            row, r_obj = _interval_row(sol, inst, p["reference"])
            ref_obj += r_obj
            obj["energy_and_comfort_usd"] += sol.objective_usd
            ann_obj += sol.annealer_objective_usd
            info_rows.append(row)
            prices[t] = inst.price(sol.levels)
            dem = inst.demand_table()[np.arange(n_st), sol.levels]
            # EVs defer in proportion to their effective elasticity: p_i = d_i (1 − x e_i), x = Δp/p0
            x = np.maximum(prices[t] - inst.price(inst.base_level), 0.0) / inst.base_price_usd_per_kwh
            # Each EV's elasticity scaled by its station's (capped ÷ raw) mean, and the station's draw then held
            # to the modelled D[s, level] exactly: the load the EVs draw is the load the prices were chosen for
            # (so the bus and station checks below, made on the model, hold for the realised load too).
            pw = _ev_draw(evs, desire, e_i, eps_st, x, dem, inst, n_st)
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
        return self._result(request, p_kw, prices, obj, ann_obj, ref_obj, info_rows, viol)

    def _prev_levels(self, request: MarketRequest, n_st: int, dt_h: float) -> np.ndarray | None:
        """The price level each station held in the previous interval (None without earlier station prices)."""
        p = self.params
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
        return prev

    def _result(
        self,
        request: MarketRequest,
        p_kw: np.ndarray,
        prices: np.ndarray,
        obj: dict[str, float],
        ann_obj: float,
        ref_obj: float,
        info_rows: list[dict[str, float]],
        viol: dict[str, float],
    ) -> MarketResult:
        """The clearing's result: mean price per slot (energy-weighted over stations), schedules, per-interval info."""
        p = self.params
        evs, n, dt_h = request.evs, request.n_slots, request.dt_h
        n_st = prices.shape[1]
        n_ev = len(evs)
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


def _station_rows(request: MarketRequest) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(number of stations, station caps [kW] with inf for none, bus row of each station (−1: no feeder cap),
    feeder caps [kW] per bus row) of a request."""
    evs = request.evs
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
    return n_st, cap, bus_row, bus_cap


def _interval_row(sol: RTPSolution, inst: RTPInstance, with_reference: bool) -> tuple[dict[str, float], float]:
    """One interval's info row (wall time, size, repair, feasibility; gaps and MILP time against the reference
    when asked) and the reference objective [$] (0 without)."""
    row = {
        "wall_s": sol.wall_s,
        "n_vars": float(sol.n_vars),
        "repaired": float(sol.repaired),
        "al_rounds": float(sol.al_rounds),
        "lp_s": float(sol.info["lp_s"]),
        "sample_s": sol.sample_s,
        "annealer_feasible": float(sol.annealer_feasible),
    }
    ref_obj = 0.0
    if with_reference:
        r = reference(inst)
        ref_obj = r.objective_usd
        row["gap"] = gap(sol.objective_usd, r.objective_usd)
        row["annealer_gap"] = gap(sol.annealer_objective_usd, r.objective_usd)
        row["milp_s"] = r.milp_s
        row["annealer_feasible"] = float(sol.annealer_feasible)
    return row, ref_obj


def _ev_draw(
    evs: Any,
    desire: np.ndarray,
    e_i: np.ndarray,
    eps_st: np.ndarray,
    x: np.ndarray,
    dem: np.ndarray,
    inst: RTPInstance,
    n_st: int,
) -> np.ndarray:
    """Each EV's draw [kW] at its station's price: desire less its elastic deferral, held to the station's
    modelled demand ``dem`` (see the comment in `QuboRTP._clear`)."""
    n_ev = len(evs)
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
    return pw
