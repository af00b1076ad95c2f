"""`qubo-dlmp`: the tri-level DLMP scheduling of Suri, Nagpal & Sharma (``000_…``) on dimod samplers.

One clearing runs, for the horizon of the request (``mode = "day-ahead"``) or slot by slot over the remaining
horizon (``mode = "rolling"``: plan slots ``k … T−1``, commit slot ``k``, move on)::

    EVs ──clustering──► clusters (spectral, silhouette reported; or one per bus)
    (a) EVA level  : P/Q per cluster and slot against the DLMPs (markets.qubo.eva, QUBO, eqs. 2–5)
    (b) DSO level  : dispatch of DGs, PV, wind and the T–D interface (markets.qubo.dso, QUBO, eqs. 6–8)
                     → verified by AC power flow (grids.powerflow, pandapower's model compiled once)
                     infeasible (voltage below V̲, T–D power factor below pf_min, substation overload or no
                     convergence) → feedback to (a): a price adder per cluster and violated slot,
                     ``adder += span(λP) · (V̲ − Vmin)/0.01 pu · ρ_c`` where ``ρ_c ∈ [0, 1]`` is the cluster's
                     share of the voltage drop at the weakest bus (its bus's driving-point resistance to that bus
                     relative to the largest) — the voltage component of a DLMP, learnt by subgradient steps —
                     and (a) is solved again, at most ``rounds`` times; the round with the fewest violations
                     (then least reactive export, then lowest total cost) is kept.
                     reactive feedback (``q_feedback``): λQ alone makes every cluster inject as much Q as its
                     apparent-power limit leaves, which exports reactive power through the T–D interface
                     (PF ≈ 0.6) and raises the losses. When the AC power flow shows a slot exporting X MVAr,
                     clusters lose their λQ in that slot (→ the EVA schedules Q = 0 there), nearest to the
                     substation first (their Q supports the voltage least), until the injection removed covers
                     X + ``q_margin``·|P_TD|; a slot importing beyond ``tan(acos pf_min)``·P_TD gets one cluster's
                     λQ back per round, farthest first. It is the reactive component of a DLMP that the flat λQ
                     misses (Q is worth nothing once the feeder's own demand is covered), learnt like the voltage
                     adder, and runs in the same rounds.
    (c) allocation : cluster schedules split over the EVs (markets.qubo.allocation, exact LP of eqs. 9–10, then
                     fewest interruptions: ``allocation = "fewest"``, or pauses only where the cluster pauses:
                     ``"contiguous"``).

Contiguous charging (issue 17): ``contiguity_weight`` > 0 adds a switching term to the EVA QUBO
(markets.qubo.contiguity): each interruption of a cluster's schedule (charge, pause, charge again; a slot is
charging from ``min_on_share`` of the cluster's rating, any power with 0) costs the weight × the cluster's EVs.
0 (the default) leaves the QUBO and every result as before.

Scenario readings (the paper is silent or inconsistent; our choices, with the paper's numbers as defaults):

* ``demand_response = false`` is the paper's S1 ("no load shifting", §4.1.1: constant EV power all day): each
  cluster's energy is spread flat over the slots its EVs are plugged in, Q = 0; the EVA QUBO is not needed.
  ``true`` with ``reactive = true`` is S2 (active and reactive DR).
* λP per cluster is the energy-weighted mean of its EVs' bus DLMPs when the request carries DLMPs, else the
  request's price per slot. λQ likewise from ``dlmp_q_usd_per_mvarh``, else ``lam_q_usd_per_mvarh`` (default the
  paper's range 4–10 $/MVArh shaped like λP). Reactive power is in load convention; with λQ > 0 the EVA earns by
  injecting (``Q < 0``), limited by the chargers' apparent power (``request.s_max_kva`` or ``s_factor`` × kW).
* The DSO prices the T–D interface at the cluster-free slot price (λP of the request, λQ as above).
* DGs: the paper's DSO objective has DGs but its setup lists none; ``dgs`` adds them (the shipped scenarios borrow
  the two 1.5-MW DGs of the 002 feeder). PV and wind are the network's DERs.
* The per-bus non-EV load is the request's ``grid.bus_load_kw`` (what the simulation runs), or, for a request
  without it, the network's zonal profile averaged over each slot; either is scaled so that its total equals the
  request's ``base_load_kw``. PV and wind availability likewise: ``grid.renewable_kw``, else the DERs' profiles.

The network (``grid``): the DSO level prices and verifies the network the request carries (request part
``grid``, `markets.base.NetworkData`): in a simulation, the scenario's own. A hand-built request without one may
name a case instead (``grid = "case33bw-dlmp"``: built here); a case name that differs from the request's network
is an error, never a silent substitute. The model is the paper's distribution feeder, so `check_network` refuses,
in one line, a network that is not one: more or fewer than one slack (the T–D interface), voltage-controlled
generators (``gen``, which the DSO level does not dispatch), or a meshed topology (the DLMP decomposition and the
driving-point-resistance voltage component assume a radial feeder). ``grid = "none"`` skips (b): the EVA schedule
is allocated without grid verification, and no network is needed.
"""

from __future__ import annotations

import time
import weakref
from functools import lru_cache
from typing import Any

import numpy as np

from markets.base import (
    MarketConfigError,
    MarketRequest,
    MarketResult,
    Mechanism,
    RequestError,
    finite_number,
    register,
)
from markets.qubo import allocation, clustering, samplers
from markets.qubo.dlmp_levels import PAPER_LAM_P, PAPER_LAM_Q, _Levels, _slot_mean, _table

__all__ = ["QuboDLMP", "PAPER_LAM_P", "PAPER_LAM_Q", "CASES", "network_problem"]


#: grid cases the ``grid`` parameter may name (for a hand-built request that carries no network)
CASES = ("case33bw", "case33bw-dlmp", "case33bw-dr")


@lru_cache(maxsize=4)
def _case(case: str) -> Any:
    """The `grids.network.Network` of a named grid case, built once."""
    from grids.network import build_network

    return build_network(case)


_COMPILED: list[tuple[weakref.ref[Any], Any, np.ndarray]] = []  # the last few networks compiled (any instance)


def _compile(network: Any) -> tuple[Any, np.ndarray]:
    """(fast power-flow engine of its own, driving-point resistance matrix [pu]) of a network, compiled once per
    network object (every clearing resets the engine's warm start, so instances may share it)."""
    from grids.powerflow import FastPowerFlow

    for ref, engine, rmat in _COMPILED:
        if ref() is network:
            return engine, rmat
    engine = FastPowerFlow(network.net)  # a copy of the net: the simulation's engine and warm start stay untouched
    rmat = network.sensitivity_r(engine)
    _COMPILED[:] = [*_COMPILED[-3:], (weakref.ref(network), engine, rmat)]
    return engine, rmat


def network_problem(network: Any) -> str | None:
    """Why ``network`` is not a feeder the tri-level model can price (None when it is one): it needs exactly one
    in-service slack (the T–D interface), no voltage-controlled generators and a radial topology."""
    import networkx as nx
    import pandapower.topology as top

    net = network.net
    n_slack = int(net.ext_grid.in_service.sum()) + int((net.gen.in_service & net.gen.slack).sum())
    if n_slack != 1:
        return f"it has {n_slack} in-service slack elements, and it needs exactly one (the T–D interface)"
    n_gen = int((net.gen.in_service & ~net.gen.slack).sum())
    if n_gen:
        return f"it has {n_gen} voltage-controlled generators (gen), which its DSO level does not dispatch"
    g = top.create_nxgraph(net, respect_switches=True, include_out_of_service=False)
    loops = g.number_of_edges() - (g.number_of_nodes() - nx.number_connected_components(g))
    if loops > 0:
        return f"it is meshed ({loops} independent loops of in-service branches), and it needs a radial feeder"
    return None


@register
class QuboDLMP(_Levels, Mechanism):
    """Tri-level DLMP scheduling (``000_…``): EVA QUBO, DSO QUBO verified by AC power flow, EV allocation."""

    name = "qubo-dlmp"
    # DLMPs price the clusters; the chargers' kVA bound Q; the DSO level runs on the simulated network (not 'none')
    needs = frozenset({"dlmp", "s_max_kva", "grid"})
    parameters = {
        "bits": (8, "bits per P level of the EVA and DSO QUBOs (paper: 8 primary, 4 sensitivity), 2–10"),
        "sampler": ("sa", "dimod sampler by name (markets.qubo.samplers)"),
        "num_reads": (16, "sampler reads per QUBO, >= 1"),
        "num_sweeps": (200, "simulated-annealing sweeps per read, >= 1"),
        "rounds": (3, "EVA ↔ DSO feedback rounds, 1–20"),
        "clustering": ("by-bus", "'spectral' (paper) or 'by-bus'"),
        "n_clusters": (20, "clusters for spectral clustering, >= 1"),
        "demand_response": (True, "false = S1: flat cluster schedules, no shifting"),
        "reactive": (True, "EVA reactive-power dispatch (S2)"),
        "grid": (
            "auto",
            "network of the DSO level: 'auto' (the request's: in a simulation the scenario's), a case for a "
            "hand-built request without one (case33bw, case33bw-dlmp, case33bw-dr), or 'none' (no DSO level)",
        ),
        "dgs": (
            [],
            "DGs: list of {bus (paper numbering: pandapower index + 1), p_max_kw, cost_usd_per_mwh, q_max_kvar, "
            "q_cost_usd_per_mvarh}",
        ),
        "lam_q_usd_per_mvarh": (list(PAPER_LAM_Q), "reactive price per slot when the request has no Q DLMP"),
        "s_factor": (1.1, "charger kVA per kW when the request has no s_max_kva, >= 1"),
        "v_min_pu": (0.95, "voltage floor of the DSO level [pu], in (0.8, 1.0)"),
        "pf_min": (0.9, "minimum T–D power factor, in (0, 1]"),
        "mode": ("day-ahead", "'day-ahead' (plan the horizon) or 'rolling' (re-plan every slot)"),
        "reference": (False, "solve the DSO's HiGHS reference (MILP, 10 s limit) and report the QUBO's gap"),
        "small_evs": (
            50,
            "requests with at most this many EVs: one round, one pass per grid, 3 DSO grids, <= 2 reads, "
            "<= 32 sweeps; >= 0",
        ),
        "q_feedback": (True, "withdraw λQ per cluster/slot while the T–D interface exports reactive power"),
        "q_margin": (0.02, "reactive import kept at the interface by the Q feedback, × |P_TD|, in [0, 0.48]"),
        "contiguity_weight": (
            0.0,
            "EVA switching penalty [$ per EV of a cluster, per interruption of the cluster's schedule (charge, "
            "pause, charge again)], in [0, 1000]; 0 = none",
        ),
        "min_on_share": (
            0.0,
            "share of its rating from which a cluster or an EV counts as charging in a slot, in [0, 1): the "
            "switching penalty's on-indicator, and a second interruption count with an EV below it as paused "
            "(info interruptions_at_min_share); 0 = any power",
        ),
        "allocation": (
            "fewest",
            "EV split of the cluster schedules after the LP: 'fewest' (node-limited MILP over on/off per EV and "
            "slot) or 'contiguous' (fewest pauses between the cluster's runs, none inside one)",
        ),
    }

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if self.params["grid"] == "none":  # no DSO level: no network needed
            self.needs = self.needs - {"grid"}
        self._compiled: tuple[Any, Any, np.ndarray] | None = None  # (network, engine, R) of the last network seen

    def check_network(self, network: Any) -> None:
        """Refuse, in one line, a network the DSO level cannot price (see the module docstring)."""
        prm = self.params
        if prm["grid"] == "none":
            return
        if prm["grid"] != "auto" and prm["grid"] != network.name:
            raise MarketConfigError(
                f"market.params.grid: got {prm['grid']!r}, but the network simulated is {network.name!r}; allowed: "
                "'auto' (price the simulated network) or 'none'"
            )
        why = network_problem(network)
        if why is not None:
            raise MarketConfigError(
                f"grid.case: market.mechanism 'qubo-dlmp' cannot price network {network.name!r}: {why}; allowed: a "
                "radial distribution feeder with one slack and no gen, or market.params.grid = 'none'"
            )
        ids = set(int(b) for b in network.bus_ids)
        for i, d in enumerate(prm["dgs"]):
            if int(d["bus"]) - 1 not in ids:
                raise MarketConfigError(
                    f"market.params.dgs.{i}.bus: got {d['bus']} (paper numbering), not a bus of network "
                    f"{network.name!r}; allowed: a pandapower bus index + 1"
                )

    def _network(self, request: MarketRequest) -> tuple[Any, Any, np.ndarray] | None:
        """(network, its power-flow engine, driving-point resistance [pu]) of the request, checked; None for 'none'."""
        prm = self.params
        if prm["grid"] == "none":
            return None
        if request.grid is not None:
            network = request.grid.network
        elif prm["grid"] == "auto":
            raise RequestError(
                "grid: qubo-dlmp prices the network the request carries, and this request carries none; give it "
                "grid=NetworkData(network), or set market.params.grid to a case name or 'none'"
            )
        else:
            network = _case(prm["grid"])
        if self._compiled is None or self._compiled[0] is not network:
            self.check_network(network)
            self._compiled = (network, *_compile(network))
        return self._compiled

    def _validate(self) -> None:
        p = self.params

        def integer(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        num = finite_number
        lam_q = p["lam_q_usd_per_mvarh"]
        # a flat list: np.ravel of a nested or ragged list raises (or flattens [[1], 2] into a valid-looking table)
        lam_q_list = list(lam_q) if isinstance(lam_q, list | tuple | np.ndarray) else [lam_q]
        checks = [
            ("bits", integer(p["bits"]) and 2 <= p["bits"] <= 10, "an integer in [2, 10]"),
            ("num_reads", integer(p["num_reads"]) and p["num_reads"] >= 1, "an integer >= 1"),
            ("num_sweeps", integer(p["num_sweeps"]) and p["num_sweeps"] >= 1, "an integer >= 1"),
            ("rounds", integer(p["rounds"]) and 1 <= p["rounds"] <= 20, "an integer in [1, 20]"),
            ("clustering", p["clustering"] in clustering.METHODS, "'spectral' or 'by-bus'"),
            ("n_clusters", integer(p["n_clusters"]) and p["n_clusters"] >= 1, "an integer >= 1"),
            ("s_factor", num(p["s_factor"]) and p["s_factor"] >= 1, ">= 1"),
            ("v_min_pu", num(p["v_min_pu"]) and 0.8 < p["v_min_pu"] < 1.0, "in (0.8, 1.0)"),
            ("pf_min", num(p["pf_min"]) and 0 < p["pf_min"] <= 1, "in (0, 1]"),
            ("mode", p["mode"] in ("day-ahead", "rolling"), "'day-ahead' or 'rolling'"),
            ("q_feedback", isinstance(p["q_feedback"], bool), "true or false"),
            ("small_evs", integer(p["small_evs"]) and p["small_evs"] >= 0, "an integer >= 0"),
            ("q_margin", num(p["q_margin"]) and 0 <= p["q_margin"] <= 0.48, "in [0, 0.48]"),
            (
                "contiguity_weight",
                num(p["contiguity_weight"]) and 0 <= p["contiguity_weight"] <= 1000,
                "a number in [0, 1000] ($ per EV and interruption)",
            ),
            ("allocation", p["allocation"] in ("fewest", "contiguous"), "'fewest' or 'contiguous'"),
            ("min_on_share", num(p["min_on_share"]) and 0 <= p["min_on_share"] < 1, "a number in [0, 1)"),
            ("grid", p["grid"] in ("auto", "none", *CASES), f"'auto', 'none' or a case: {', '.join(CASES)}"),
            (
                "lam_q_usd_per_mvarh",
                len(lam_q_list) >= 1 and all(num(x) for x in lam_q_list),
                "a finite number or a non-empty list of finite numbers [$/MVArh]",
            ),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise MarketConfigError(f"market.params.{name}: got {p[name]!r}; allowed: {allowed}")
        if p["sampler"] not in samplers.names():
            raise MarketConfigError(
                f"market.params.sampler: got {p['sampler']!r}; allowed: {', '.join(samplers.names())}"
            )
        keys = {"bus", "p_max_kw", "cost_usd_per_mwh", "q_max_kvar", "q_cost_usd_per_mvarh"}
        if not isinstance(p["dgs"], list | tuple):
            raise MarketConfigError(f"market.params.dgs: got {p['dgs']!r}; allowed: a list of tables (one per DG)")
        for i, d in enumerate(p["dgs"]):
            if not isinstance(d, dict) or set(d) != keys:
                raise MarketConfigError(f"market.params.dgs.{i}: needs exactly the keys {', '.join(sorted(keys))}")
            if (
                not all(num(d[k]) for k in keys)
                or int(d["bus"]) != d["bus"]
                or d["bus"] < 1
                or d["p_max_kw"] <= 0
                or d["q_max_kvar"] < 0
            ):
                raise MarketConfigError(
                    f"market.params.dgs.{i}: numbers with bus an integer >= 1 (a bus of the network), p_max_kw > 0, "
                    "q_max_kvar >= 0"
                )

    # ------------------------------------------------------------------------------------------------ clearing
    def _clear(self, request: MarketRequest) -> MarketResult:
        if self.params["mode"] == "rolling" and request.n_slots > 1:
            return self._rolling(request)
        return self._plan(request)

    def _rolling(self, request: MarketRequest) -> MarketResult:
        """Receding horizon: plan slots k…T−1 with what is still needed, keep slot k."""
        from dataclasses import replace

        evs = request.evs
        n, t = len(evs), request.n_slots
        p = np.zeros((n, t))
        q = np.zeros((n, t))
        left_kwh = evs.e_need_kwh.copy()
        first: MarketResult | None = None
        for k in range(t):
            alive = (evs.end_slot > k) & (left_kwh > 1e-9)
            sub_evs = evs.select(alive)
            sub_evs = replace(
                sub_evs,
                start_slot=np.maximum(sub_evs.start_slot - k, 0),
                end_slot=sub_evs.end_slot - k,
                e_need_kwh=left_kwh[alive],
            )
            sl = slice(k, t)
            sub = replace(
                request,
                t0_min=request.t0_min + k * request.dt_min,
                n_slots=t - k,
                evs=sub_evs,
                base_load_kw=request.base_load_kw[sl],
                committed_ev_kw=request.committed_ev_kw[sl],
                price_usd_per_mwh=request.price_usd_per_mwh[sl],
                renewable_kw=request.renewable_kw[sl],
                tod_h=None if request.tod_h is None else request.tod_h[sl],
                dlmp_p_usd_per_mwh=None if request.dlmp_p_usd_per_mwh is None else request.dlmp_p_usd_per_mwh[sl],
                dlmp_q_usd_per_mvarh=None if request.dlmp_q_usd_per_mvarh is None else request.dlmp_q_usd_per_mvarh[sl],
                s_max_kva=None if request.s_max_kva is None else request.s_max_kva[alive],
                voltage=None if request.voltage is None else request.voltage.window(k),
                committed_station_kw=None
                if request.committed_station_kw is None
                else request.committed_station_kw[:, sl],
                grid=None if request.grid is None else request.grid.window(k),
            )
            res = self._plan(sub)
            first = first or res
            p[alive, k] = res.p_kw[:, 0]
            if res.q_kvar is not None:
                q[alive, k] = res.q_kvar[:, 0]
            left_kwh[alive] = np.maximum(left_kwh[alive] - res.p_kw[:, 0] * request.dt_h * evs.eta_ch[alive], 0.0)
        assert first is not None
        return replace(first, p_kw=p, q_kvar=q, info={**first.info, "mode": "rolling", "replans": t})

    def _nothing_to_plan(self, request: MarketRequest) -> MarketResult:
        """The result of a request with no EV energy to deliver: zero schedules at the request's (or paper) prices."""
        n, t = len(request.evs), request.n_slots
        return MarketResult(
            self.name,
            _table(PAPER_LAM_P, t)
            if not np.all(np.isfinite(request.price_usd_per_mwh))
            else np.asarray(request.price_usd_per_mwh, float),
            np.zeros((n, t)),
            np.zeros((n, t)),
            info={"rounds": 0, "silhouette": float("nan"), "n_clusters": 0},
        )

    def _anneal_settings(self, n: int) -> int:
        """Annealing effort for ``n`` EVs (set on ``self``); returns the number of feedback rounds."""
        prm = self.params
        # small requests (a handful of EVs: the conformance suite, a station's day) anneal with a cheaper setting
        small = n <= prm["small_evs"]
        self._reads = min(prm["num_reads"], 2) if small else prm["num_reads"]
        self._sweeps = min(prm["num_sweeps"], 32) if small else prm["num_sweeps"]
        self._passes = 1 if small else 3
        self._shrink = 16 if small else 4  # DSO: fewer, wider windows (3 grids instead of 4 at 8 bits)
        rounds = 1 if small else prm["rounds"]
        return rounds

    def _slot_prices(self, request: MarketRequest) -> tuple[np.ndarray, np.ndarray]:
        """Slot prices [$/MWh, $/MVArh] (T,): the request's energy price (the paper's table if it has none) and the
        configured λQ."""
        t = request.n_slots
        lam_p_slot = np.asarray(request.price_usd_per_mwh, float)
        if not np.all(np.isfinite(lam_p_slot)):
            lam_p_slot = _table(PAPER_LAM_P, t)
        lam_q_slot = _table(self.params["lam_q_usd_per_mvarh"], t)
        return lam_p_slot, lam_q_slot

    def _ev_limits(self, request: MarketRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per EV: power cap per slot [MW] (N, T), grid-side energy need [MWh] (N,), apparent-power rating [kVA]."""
        prm, evs, t, dt = self.params, request.evs, request.n_slots, request.dt_h
        avail = evs.availability(t)
        cap_mw = evs.p_max_kw[:, None] * avail / 1000.0
        need_mwh = np.minimum(evs.e_need_kwh / evs.eta_ch / 1000.0, cap_mw.sum(axis=1) * dt)
        s_kva = np.asarray(evs.p_max_kw * prm["s_factor"] if request.s_max_kva is None else request.s_max_kva, float)
        s_kva = np.maximum(s_kva, evs.p_max_kw)
        return cap_mw, need_mwh, s_kva

    def _cluster(self, request: MarketRequest, bus_r: np.ndarray, seed: int) -> Any:
        """EVs → clusters by the configured method (``bus_r``: driving-point resistance of each EV's bus [pu])."""
        prm, evs = self.params, request.evs
        return clustering.cluster_evs(
            prm["clustering"],
            prm["n_clusters"],
            bus=evs.bus,
            bus_r_pu=bus_r,
            e_need_kwh=evs.e_need_kwh,
            p_max_kw=evs.p_max_kw,
            start_slot=evs.start_slot,
            end_slot=evs.end_slot,
            rng=np.random.default_rng(seed),
        )

    def _grid_loads(self, request: MarketRequest, net: Any) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Bus loads [MW, MVAr] (T, n_bus) without EVs, scaled to the request's base load, and the network's units."""
        t, dt = request.n_slots, request.dt_h
        tod = np.asarray(request.tod_h, float)
        data = request.grid
        if data is not None and data.bus_load_kw is not None:  # what the simulation runs
            assert data.bus_load_kvar is not None  # NetworkData gives both or neither
            shape_p, shape_q = data.bus_load_kw, data.bus_load_kvar
        else:  # a hand-built request: the network's zonal profiles, averaged over each slot
            level = np.stack([_slot_mean(net.profiles[z], tod, dt) for z in net.zone], axis=1)
            shape_p, shape_q = level * net.base_p_kw, level * net.base_q_kvar
        scale = np.divide(request.base_load_kw, shape_p.sum(axis=1), out=np.zeros(t), where=shape_p.sum(axis=1) > 0)
        load_p = shape_p * scale[:, None] / 1000.0  # (T, n_bus) MW
        load_q = shape_q * scale[:, None] / 1000.0
        units = self._units(net, tod, dt, None if data is None else data.renewable_kw)
        return load_p, load_q, units

    def _dso_round(
        self,
        units: dict[str, Any],
        loads: tuple[np.ndarray, np.ndarray],
        ev_bus: np.ndarray,
        ev_pq: tuple[np.ndarray, np.ndarray],
        lam_slot: tuple[np.ndarray, np.ndarray],
        dt: float,
        loss_est: tuple[np.ndarray, np.ndarray],
        seed: int,
    ) -> dict[str, Any]:
        """The DSO level on the bus loads ``loads`` [MW, MVAr] (T, n_bus) plus the EVs' allocated powers ``ev_pq``
        [MW, MVAr] (N, T) at their buses ``ev_bus``."""
        load_p, load_q = loads
        t, n_bus = load_p.shape
        ev_p_bus = np.zeros((t, n_bus))
        ev_q_bus = np.zeros((t, n_bus))
        np.add.at(ev_p_bus.T, ev_bus, ev_pq[0])
        np.add.at(ev_q_bus.T, ev_bus, ev_pq[1])
        return self._dso(
            units,
            load_p + ev_p_bus,
            load_q + ev_q_bus,
            lam_slot[0],
            lam_slot[1],
            dt,
            loss_est[0],
            loss_est[1],
            seed,
        )

    def _plan(self, request: MarketRequest) -> MarketResult:
        prm = self.params
        t_start = time.perf_counter()
        self._timing = {"reference_s": 0.0, "eva_sample_s": 0.0, "dso_sample_s": 0.0}
        evs = request.evs
        n, t, dt = len(evs), request.n_slots, request.dt_h
        if n == 0 or not np.any(evs.e_need_kwh > 0):
            return self._nothing_to_plan(request)
        seeds = self.rng.integers(0, 2**31 - 1, size=2 * prm["rounds"] + 2)
        rounds = self._anneal_settings(n)
        lam_p_slot, lam_q_slot = self._slot_prices(request)
        grid = self._network(request)
        bus_r = np.zeros(n) if grid is None else np.diag(grid[2])[evs.bus]
        # ---- EVs → clusters
        cap_mw, need_mwh, s_kva = self._ev_limits(request)
        cl = self._cluster(request, bus_r, int(seeds[0]))
        c, lab = cl.n_clusters, cl.labels
        member, p_max_c, s_max_c, e_c, cap_c = _cluster_sums(lab, c, evs.p_max_kw, s_kva, need_mwh, cap_mw)
        lam_p_c, lam_q_c = _cluster_prices(request, member, need_mwh, lam_p_slot, lam_q_slot)
        limits_c = (p_max_c, s_max_c, e_c, cap_c)
        switch_c = prm["contiguity_weight"] * member.sum(axis=1)  # $ per interruption of each cluster's schedule
        span = float(np.ptp(lam_p_c)) + 1.0
        base_adder = _short_slot_adder(cap_c, p_max_c, span)
        # ---- grid data per slot
        if grid is not None:
            net, pf, rmat = grid
            pf.reset_warm_start()
            load_p, load_q, units = self._grid_loads(request, net)
        adder = np.zeros((c, t))
        q_on = np.ones((c, t))  # reactive feedback: 0 where a cluster's λQ is withdrawn (no injection pays)
        r_c = (member @ bus_r) / np.maximum(member.sum(axis=1), 1)  # electrical distance from the substation [pu]
        best: dict[str, Any] | None = None
        history = []
        losses_est, lossq_est = np.zeros(t), np.zeros(t)
        for rnd in range(rounds):
            # ---- (a) EVA level
            lam_eva = (lam_p_c + base_adder + adder, lam_q_c * q_on)
            out = self._eva(*lam_eva, *limits_c, dt, int(seeds[1 + 2 * rnd]), switch_usd=switch_c)
            # the EVA's cost is reported at the DLMPs, not at the feedback's internal adders
            out["cost_usd"] = float(np.sum(dt * (lam_p_c * out["p_mw"] + lam_q_c * out["q_mvar"])))
            # ---- (c) allocation (needed for the per-bus load the DSO sees)
            al = allocation.allocate(
                out["p_mw"], lab, cap_mw, need_mwh, dt, contiguous=prm["allocation"] == "contiguous"
            )
            q_ev = _q_per_ev(member, s_kva, out["q_mvar"])  # (N, T) MVAr, load convention
            rec: dict[str, Any] = {"round": rnd + 1, "eva": out, "alloc": al, "q_ev": q_ev}
            if grid is not None:
                rec.update(
                    self._dso_round(
                        units,
                        (load_p, load_q),
                        evs.bus,
                        (al.p_mw, q_ev),
                        (lam_p_slot, lam_q_slot),
                        dt,
                        (losses_est, lossq_est),
                        int(seeds[2 + 2 * rnd]),
                    )
                )
                losses_est, lossq_est = rec["losses_mw"], rec["lossq_mvar"]
            q_export = _score_round(rec, out, dt)
            history.append(_history_row(rnd, rec, out, q_export, q_on))
            key = (rec["n_viol"], round(q_export, 3), rec["total_usd"])
            if best is None or key < (best["n_viol"], round(best["q_export_mvarh"], 3), best["total_usd"]):
                best = rec
            if not prm["demand_response"] or grid is None or (rec["n_viol"] == 0 and q_export < 1e-3):
                break
            # ---- feedback 1: voltage component of the DLMP as a price adder on the violated slots
            moved = False
            voltage_adder = _voltage_adder(rec["vm"], prm["v_min_pu"], rmat, evs.bus, member, span)
            if voltage_adder is not None:
                adder += voltage_adder
                moved = True
            # ---- feedback 2: reactive power at the T–D interface (see the module docstring)
            if prm["reactive"] and prm["q_feedback"]:
                moved |= self._q_feedback(q_on, out["q_mvar"], rec["p_td_mw"], rec["q_td_mvar"], r_c)
            if not moved:
                break  # what is left (substation rating, unattainable rows) no EVA price can move
        assert best is not None
        return self._result(request, best, cl, history, lam_p_c, lam_q_c, evs, dt, time.perf_counter() - t_start)


def _cluster_sums(
    lab: np.ndarray, c: int, p_max_kw: np.ndarray, s_kva: np.ndarray, need_mwh: np.ndarray, cap_mw: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Membership (C, N) of the cluster labels ``lab`` and the clusters' ratings [MW, MVA], energy need [MWh] and
    power cap per slot [MW] (C, T)."""
    n = len(lab)
    member = np.zeros((c, n))
    member[lab, np.arange(n)] = 1.0
    p_max_c = member @ (p_max_kw / 1000.0)
    s_max_c = member @ (s_kva / 1000.0)
    e_c = member @ need_mwh
    cap_c = member @ cap_mw  # (C, T)
    return member, p_max_c, s_max_c, e_c, cap_c


def _short_slot_adder(cap_c: np.ndarray, p_max_c: np.ndarray, span: float) -> np.ndarray:
    """Price adder [$/MWh] (C, T) on the slots a cluster can hardly use (cap ``cap_c`` [MW] far below its rating
    ``p_max_c``), scaled by the price span ``span`` [$/MWh]."""
    # slots a cluster can hardly use get a price adder so the EVA plans around them (allocation clips the rest)
    short = 1.0 - np.divide(cap_c, p_max_c[:, None], out=np.zeros_like(cap_c), where=p_max_c[:, None] > 0)
    return 4.0 * span * short


def _cluster_prices(
    request: MarketRequest, member: np.ndarray, need_mwh: np.ndarray, lam_p_slot: np.ndarray, lam_q_slot: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's P and Q prices [$/MWh, $/MVArh] (C, T): the request's DLMPs at its members' buses, weighted
    by energy need, or the slot prices."""
    evs = request.evs
    c = member.shape[0]
    w_e = member * np.maximum(need_mwh, 1e-12)
    w_e /= w_e.sum(axis=1, keepdims=True)
    if request.dlmp_p_usd_per_mwh is not None:
        lam_p_c = w_e @ np.asarray(request.dlmp_p_usd_per_mwh, float)[:, evs.bus].T
    else:
        lam_p_c = np.tile(lam_p_slot, (c, 1))
    if request.dlmp_q_usd_per_mvarh is not None:
        lam_q_c = w_e @ np.asarray(request.dlmp_q_usd_per_mvarh, float)[:, evs.bus].T
    else:
        lam_q_c = np.tile(lam_q_slot, (c, 1))
    return lam_p_c, lam_q_c


def _q_per_ev(member: np.ndarray, s_kva: np.ndarray, q_mvar: np.ndarray) -> np.ndarray:
    """The clusters' reactive power ``q_mvar`` (C, T) split over their EVs by apparent-power rating (N, T)."""
    share_q = member * s_kva
    share_q = np.divide(
        share_q,
        share_q.sum(axis=1, keepdims=True),
        out=np.zeros_like(share_q),
        where=share_q.sum(axis=1, keepdims=True) > 0,
    )
    return share_q.T @ q_mvar  # (N, T) MVAr, load convention


def _score_round(rec: dict[str, Any], out: dict[str, Any], dt: float) -> float:
    """Add a round's violations, total cost [$] and reactive export [MVArh] to ``rec``; returns the export."""
    rec["n_viol"] = int(rec.get("grid_violations", 0)) + int(out["violations"])
    rec["total_usd"] = out["cost_usd"] + rec.get("dso_cost_usd", 0.0)
    q_export = 0.0
    if "q_td_mvar" in rec:
        q_export = float(np.maximum(-rec["q_td_mvar"], 0.0).sum() * dt)
    rec["q_export_mvarh"] = q_export
    return q_export


def _history_row(
    rnd: int, rec: dict[str, Any], out: dict[str, Any], q_export: float, q_on: np.ndarray
) -> dict[str, Any]:
    """One line of ``info['history']``."""
    return {
        "round": rnd + 1,
        "violations": rec["n_viol"],
        "eva_cost_usd": out["cost_usd"],
        "dso_cost_usd": rec.get("dso_cost_usd", 0.0),
        "vmin_pu": float(rec["vm"].min()) if "vm" in rec else float("nan"),
        "q_export_mvarh": q_export,
        "q_withdrawn": int((q_on == 0).sum()),
    }


def _voltage_adder(
    vm: np.ndarray, v_min_pu: float, rmat: np.ndarray, ev_bus: np.ndarray, member: np.ndarray, span: float
) -> np.ndarray | None:
    """Feedback 1: the voltage component of the DLMP as a price adder [$/MWh] (C, T) on the slots below
    ``v_min_pu``, by each cluster's resistance to the weakest bus; None when no slot is."""
    deficit = np.maximum(v_min_pu - vm.min(axis=1), 0.0)  # (T,)
    if np.any(deficit > 1e-4):
        weak = vm.argmin(axis=1)
        rho = rmat[np.ix_(weak, ev_bus)]  # (T, N)
        rho_c = (rho @ member.T) / np.maximum(member.sum(axis=1), 1)[None, :]  # (T, C)
        rho_c = rho_c / max(float(rho_c.max()), 1e-12)
        return span * (deficit / 0.01)[None, :] * rho_c.T
    return None
