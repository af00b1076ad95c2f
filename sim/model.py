"""`CoSimulation`: a Mesa model that owns a SimPy environment and runs the market steps.

Order of one market step at time ``t = k·Δt`` (one SimPy process; fixed):

0. EVs charged during the previous step leave ports that release full EVs; then every other event due at ``t``
   (arrivals, departures, port grants) is processed — the step process wakes with a priority below SimPy's
   normal one, so it always sees the state *after* everything else that happens at ``t``.
1. **report**: stations and EVs report their state (tap ``ev_reports``).
2. **day-ahead** (first step of each day): the market operator clears the day's plan (tariff, DR shift).
3. **clear**: the market interface (`sim.interface`) builds a `MarketRequest` for EVs that need a schedule, with the
   optional parts the mechanism declares (the finished request passes tap ``bids`` there), the mechanism
   clears it, prices go out (tap ``price_signal``) and schedules are committed.
4. **dispatch**: each plugged EV's power for the step, within its limits and its station's cap.
5. **grid**: the DSO builds bus injections, dispatches DGs, runs the power flow, curtails EV load on violations.
6. **measure**: measurements (tap ``dso_measurements``) and the recorder.
7. **settle**: battery energy, grid energy and cost per EV are updated; short-changed EVs are rescheduled.

EV arrivals, queueing and departures are SimPy processes of their own (`agents.ev.EV.session`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, cast

import mesa
import numpy as np
import simpy
from simpy.events import NORMAL, Event, EventPriority

from agents.aggregator import Aggregator, MarketOperator
from agents.attacker import Attacker
from agents.detection import ReportMonitor
from agents.dso import DSO
from agents.ev import EV, Station, UnqueuedSessions, wait_min
from agents.fleet import PLUGGED, build_stations, generate_fleet
from grids.dispatch import with_gen_dispatch
from grids.network import Network, build_network
from grids.powerflow import FastPowerFlow, PandapowerPowerFlow, PowerFlowResult, make_engine
from markets.base import EVFlex
from markets.scoring import Scored
from markets.tariffs import starting_tariff
from sim.interface import MarketInterface
from sim.scenario import GridSpec, Scenario
from sim.streams import spawn_streams
from sim.taps import Taps

if TYPE_CHECKING:  # pragma: no cover
    from sim.result import RunResult

LATE = NORMAL + 1  # the step process runs after every ordinary event due at the same time


class _Late(Event):
    """A timeout that fires after all NORMAL-priority events of the same instant (see module docstring)."""

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, EventPriority(LATE), delay)


def tariff(scenario: Scenario, tod_h: np.ndarray, base_kw: np.ndarray) -> np.ndarray:
    """The scenario's starting tariff per step [$/MWh] (:func:`markets.tariffs.starting_tariff` on ``[prices]``)."""
    pr = scenario.prices
    return starting_tariff(
        pr.tariff,
        tod_h,
        base_kw,
        rho_usd_per_mwh=pr.rho_usd_per_mwh,
        steps_per_day=int(round(24 * 60 / scenario.time.dt_min)),
        plf_min=pr.plf_min,
        plf_max=pr.plf_max,
        table_usd_per_mwh=pr.table_usd_per_mwh,
    )


def compiled_grid(g: GridSpec) -> tuple[Network, FastPowerFlow | PandapowerPowerFlow]:
    """The network and its compiled power-flow engine, built once per process for each grid specification.

    Monte Carlo workers run many replications of one grid; compiling it (pandapower build, sensitivity matrix,
    engine arrays) once saves most of a replication's set-up. Runs reset the engine's warm start.
    """
    return _compiled_grid(g.model_dump_json(exclude={"volt_var"}))


def compiled_estimator(g: GridSpec) -> Any:
    """The DSO's state estimator for a grid (default measurement set), compiled once per process."""
    return _compiled_estimator(g.model_dump_json(exclude={"volt_var"}))


@functools.lru_cache(maxsize=4)
def _compiled_estimator(spec_json: str) -> Any:
    from grids.estimation import EstimationError, MeasurementSet, StateEstimator
    from sim.scenario import ScenarioError

    network, _ = _compiled_grid(spec_json)
    try:
        return StateEstimator(network.net, MeasurementSet.default(network.net))
    except EstimationError as err:  # e.g. not observable: one line naming the buses, not a traceback
        raise ScenarioError(f"detection.state_estimation: {err}") from err


@functools.lru_cache(maxsize=8)
def _compiled_grid(spec_json: str) -> tuple[Network, FastPowerFlow | PandapowerPowerFlow]:
    from sim.gridcache import cached_grid

    g = GridSpec.model_validate_json(spec_json)
    # built once per process (lru_cache) and, across processes, once per installation (sim.gridcache)
    return cached_grid(spec_json, g.file if g.case == "file" else None, lambda: _build_grid(g))


def _build_grid(g: GridSpec) -> tuple[Network, FastPowerFlow | PandapowerPowerFlow]:
    """Network, engine and checks for one grid specification (uncached)."""
    network = build_network(
        g.case,
        file=g.file,
        network_args=g.network_args,
        load_profile=g.load_profile,
        load_scale=g.load_scale,
        line_max_i_ka=g.line_max_i_ka,
        v_min_pu=g.v_min_pu,
        v_max_pu=g.v_max_pu,
        max_line_loading_percent=g.max_line_loading_percent,
        substation_mva=g.substation_mva,
        max_trafo_loading_percent=g.max_trafo_loading_percent,
        dg_cost_scale=g.dg_cost_scale,
        profile_start_day=g.profile_start_day,
    )
    if g.zones and network.load_profile == "zonal":  # explicit zones choose the load curves too (grids/zones.py)
        from grids.zones import explicit_zones, network_label

        try:
            network.zone = explicit_zones(
                network.net,
                g.zones,
                paper_numbering=g.bus_numbering == "paper",
                network_name=network_label(g.case, g.file),
            ).zone
        except ValueError as err:
            from grids.network import NetworkError

            raise NetworkError(str(err)) from None
    engine = make_engine(network.net, g.engine)
    if g.curtailment:
        network.sensitivity_r(engine)  # from the fast engine's admittance matrix (compiled afresh for "pandapower")
    # the network's own generators follow the demand (grids.dispatch); a duck-typed wrapper of the same interface
    engine = cast(FastPowerFlow | PandapowerPowerFlow, with_gen_dispatch(engine, network.net, g.gen_dispatch))
    _check_base_case(network, engine, g)
    return network, engine


def _check_base_case(network: Network, engine: Any, g: GridSpec) -> None:
    """Refuse a network whose base case has no power-flow solution: when even the lightest quarter-hour of its own
    load on day one (× ``load_scale``, no EVs, no renewables) does not solve, every step of a run would fail, so
    say so once, before the simulation. (Heavier hours that fail are the run's business: flagged per step.)

    Raises:
        grids.network.NetworkError: one line naming the network, the base load tried and what to try.
    """
    from grids.network import NetworkError

    tod_h = np.arange(0.0, 24.0, 0.25)
    p_kw, q_kvar = network.load_kw(tod_h)
    k = int(np.argmin(p_kw.sum(axis=1)))
    res = engine.solve(p_kw[k] / 1000.0, q_kvar[k] / 1000.0)
    engine.reset_warm_start()  # runs start from the no-load solution, as without this check
    if res.converged:
        return
    source = f"grid.file = '{g.file}'" if g.case == "file" else f"grid.case = '{g.case}'"
    also = "; or the file itself" if g.case == "file" else ""
    hh, mm = divmod(int(round(tod_h[k] * 60)), 60)
    raise NetworkError(
        f"grid: the base case of network {network.name!r} ({source}) has no power-flow solution: even its lightest "
        f"load of the day ({hh:02d}:{mm:02d}, {p_kw[k].sum() / 1000.0:,.3g} MW = its own loads x grid.load_scale = "
        f"{g.load_scale:g}, no EVs) does not solve (voltage collapse, or an islanded or ill-conditioned network), so "
        f"every step would fail; try a smaller grid.load_scale, check the network's loads, line impedances and "
        f"ratings{also}"
    )


def check_size(scenario: Scenario, memory_bytes: int | None = None) -> None:
    """Refuse up front a run whose EVs cannot fit in memory (``memory_bytes``, default this machine's).

    Each EV of the whole horizon costs ~2 KiB (fleet arrays, its agent and session process) before its set-points
    (checked once the fleet is drawn, `agents.setpoints.check_memory`); a run that needs more than half the memory
    would otherwise end in a `MemoryError` traceback or in swapping, after the set-up.

    Raises:
        ScenarioError: one line with the size needed, the memory there is and what to change.
    """
    from agents.setpoints import machine_memory_bytes
    from sim.scenario import ScenarioError

    t = scenario.time
    n_evs = scenario.fleet.n_evs * max(t.horizon_h / 24.0, 1.0)
    need = 2048.0 * n_evs
    have = memory_bytes if memory_bytes is not None else machine_memory_bytes()
    if need > have / 2:
        raise ScenarioError(
            f"fleet.n_evs x time.horizon_h: {n_evs:,.0f} EVs need ~{need / 2**30:,.1f} GiB, more than half of this "
            f"machine's {have / 2**30:,.1f} GiB; lower fleet.n_evs or shorten time.horizon_h"
        )


def check_dispatch(g: GridSpec, network: Network) -> None:
    """Refuse ``grid.dispatch = "lindistflow"`` on a network LinDistFlow cannot model (meshed or split, several
    slacks, voltage-controlled generators, off-nominal transformer ratios; `grids.dlmp.radial_problem`).

    Raises:
        ScenarioError: one line naming the field, the value, the network's problem and what is allowed.
    """
    if g.dispatch != "lindistflow":
        return
    from grids.dlmp import radial_problem
    from sim.scenario import ScenarioError

    why = radial_problem(network)
    if why is not None:
        raise ScenarioError(
            f"grid.dispatch: got 'lindistflow', which needs a radial feeder, but network {network.name!r} {why}; "
            "allowed: 'merit' or 'opf' (AC OPF, any network)"
        )


class CoSimulation(mesa.Model):
    """EVs, stations, aggregator, DSO and market operator on one SimPy clock against a pandapower grid.

    Args:
        scenario: a validated `Scenario`.
        seed: overrides ``scenario.seed`` (a `SeedSequence` is accepted, for replications spawned elsewhere).
        progress: called after every step with (step, n_steps).

    Example:
        >>> from sim.scenario import load_scenario
        >>> sim = CoSimulation(load_scenario("default", ["fleet.n_evs=20", "time.horizon_h=2"]))
        >>> result = sim.run()
        >>> result.kpis["n_evs"] >= 0
        True
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | np.random.SeedSequence | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        seed = scenario.seed if seed is None else seed
        self.streams = spawn_streams(seed)
        super().__init__(rng=self.streams["mesa"])
        # Mesa 3.5 reserves ``Model.scenario`` for its own (experimental) Scenario class; ours is ``spec``
        self.spec = scenario
        self.seed = seed
        self.progress = progress
        self.env = simpy.Environment()
        self.taps = Taps()
        t = scenario.time
        self.dt_min = t.dt_min
        self.n_steps = t.n_steps
        self._until_min = self.n_steps * self.dt_min + 1e-9  # `run` processes the events due before this
        self.steps_per_day = max(int(round(24 * 60 / t.dt_min)), 1)
        self.lookahead_steps = max(int(np.ceil(scenario.market.lookahead_h * 60 / t.dt_min - 1e-9)), 1)
        self.t_build = time.perf_counter()
        check_size(scenario)
        g = scenario.grid
        self.network, engine = compiled_grid(g)
        net = self.network
        check_dispatch(g, net)
        self.warnings: list[str] = []  # for the user: RunResult.warnings, printed by the CLI
        self.station_table = build_stations(scenario, net, self.warnings)
        self.fleet = generate_fleet(scenario, self.station_table, self.streams, self.warnings)

        # exogenous profiles per step
        self.t_min = np.arange(self.n_steps) * self.dt_min
        self.tod_h = (t.start_h + self.t_min / 60.0) % 24.0
        t_h = t.start_h + self.t_min / 60.0  # hours since midnight of day one: year-long profiles run on
        self.base_p_kw, self.base_q_kvar = net.load_kw(t_h)
        self.renewable_kw = net.renewable_kw(t_h)
        base_total = self.base_p_kw.sum(axis=1)

        mech = scenario.market.build(seed=self.streams["solver"])
        if scenario.market.reference:  # score every clearing against the exact optimum (a composite mechanism)
            mech = Scored(mech, variant=scenario.market.reference_variant, bits=scenario.market.reference_bits)
        self.market_operator = MarketOperator(self, mech, self.n_steps, tariff(scenario, self.tod_h, base_total))
        self.interface = MarketInterface(self, mech)
        self.aggregator = Aggregator(self, self.n_steps)
        vv = (np.asarray(g.volt_var.v_pu), np.asarray(g.volt_var.q_share)) if g.volt_var.enabled else None
        self.dso = DSO(self, net, engine, curtail=g.curtailment, volt_var=vv, dispatch=g.dispatch)
        self.stations = [Station(self, i, self.station_table) for i in range(len(self.station_table))]
        self._station_alternatives = self._alternatives(scenario.fleet.station_choice)
        self.estimator = None
        self.last_pf: PowerFlowResult | None = None
        if scenario.detection.state_estimation:
            self.estimator = compiled_estimator(g)
            self.estimator.reset_warm_start()
            self.se_flag = np.zeros(self.n_steps, bool)
            self.se_converged = np.zeros(self.n_steps, bool)  # estimate converged (False also: not estimated)
            self.se_vm_error = np.full(self.n_steps, np.nan)
            self.se_vm_sq = np.full(self.n_steps, np.nan)  # mean over buses of (estimated − true |V|)² [pu²]
            self.se_objective = np.full(self.n_steps, np.nan)  # χ² statistic J per step (ROC over thresholds)
        self.attacker = Attacker(self, list(scenario.attacks)) if scenario.attacks else None
        self.monitor = None
        if scenario.detection.enabled:
            st = self.station_table
            self.monitor = ReportMonitor(
                scenario.detection, st.ports, st.cap_kw, float(self.fleet.p_max_kw.max()) if len(self.fleet) else 0.0
            )
        self.evs = [EV(self, i) for i in range(len(self.fleet))]
        bulk = self._never_queue()
        self.unqueued = UnqueuedSessions(self.fleet, np.nonzero(bulk)[0])
        for ev in self.evs:  # sessions start in creation order, so runs stay bit-identical
            if not bulk[ev.idx]:
                self.env.process(ev.session())
        from sim.recorder import Recorder

        self.recorder = Recorder(self)
        self.env.process(self._market_steps())
        self.t_build = time.perf_counter() - self.t_build
        self._release_next: np.ndarray = np.zeros(0, int)

    def _never_queue(self) -> np.ndarray:
        """EVs whose session is fixed in advance (`agents.ev.UnqueuedSessions`): at a station with a port for every
        EV assigned to it, kept until departure, and no EV redirected between stations."""
        f, st = self.fleet, self.station_table
        if self._station_alternatives is not None or not len(f):
            return np.zeros(len(f), bool)
        assigned = np.bincount(f.station, minlength=len(st))
        roomy = (st.ports >= assigned) & ~st.release_when_full.astype(bool)
        return roomy[f.station]

    def _alternatives(self, reach: int) -> list[list[int]] | None:
        """Per station, itself and its ``reach`` nearest stations of the same group along the feeder."""
        if reach <= 0:
            return None
        from grids.network import feeder_neighbours

        st = self.station_table
        out: list[list[int]] = [[k] for k in range(len(st))]
        for g in np.unique(st.group):
            members = np.nonzero(st.group == g)[0]
            for k, alts in zip(members, feeder_neighbours(self.network.net, st.bus[members], reach)):
                out[k] = [int(members[j]) for j in alts]
        return out

    def choose_station(self, i: int) -> int:
        """The station EV ``i`` queues at: its own, or — with ``fleet.station_choice`` > 0 and an EV that follows the
        aggregator — the least busy (waiting + charging per port) of its own and its nearest ones (ties: own)."""
        own = int(self.fleet.station[i])
        if self._station_alternatives is None or not self.fleet.participates[i]:
            return own
        best, best_load = own, np.inf
        for k in self._station_alternatives[own]:
            ports = self.stations[k].ports
            load = (ports.count + len(ports.queue)) / ports.capacity
            if load < best_load - 1e-12:
                best, best_load = k, load
        return best

    # ------------------------------------------------------------------ step loop
    def _market_steps(self) -> Generator[Event, Any, None]:
        for k in range(self.n_steps):
            for i in self._release_next:
                ev = self.evs[i]
                if not ev.charged.triggered:
                    ev.charged.succeed()
            yield _Late(self.env, 0.0)
            self.unqueued.advance(self.env.now)
            self._step(k)
            self.steps = k + 1
            if self.progress is not None:
                self.progress(k + 1, self.n_steps)
            yield _Late(self.env, self.dt_min)
        self.unqueued.advance(self._until_min, inclusive=False)  # as SimPy's run(until) leaves the rest

    def _horizon(self, k: int, idx: np.ndarray) -> int:
        """Steps a real-time clearing at step ``k`` covers: ``market.lookahead_h``, extended to the last departure of
        the EVs ``idx`` it schedules, never past the end of the run.

        A rolling horizon: planning to the end of a week-long or year-long run made every step cost the whole rest of
        the run. Runs of at most the look-ahead (the default 24 h covers every paper scenario) plan to their end.
        """
        last = int(np.ceil(self.fleet.departure_min[idx].max() / self.dt_min - 1e-9))  # the step after it
        return min(self.n_steps - k, max(self.lookahead_steps, last - k))

    def _step(self, k: int) -> None:
        f, agg, mo, dso = self.fleet, self.aggregator, self.market_operator, self.dso
        dt_h = self.dt_min / 60.0
        # 1. report: EVs' states reach the aggregator through the ``ev_reports`` tap when they ask for a schedule
        # 2. day-ahead plan (the DSO prices the grid first when DLMPs are on)
        if k % self.steps_per_day == 0:
            n = min(self.steps_per_day, self.n_steps - k)
            if self.spec.market.dlmp != "off":
                self._price_grid(k, n)
            mo.plan_day(k, self.interface.request(k, n, EVFlex.empty(), day_ahead=True))
        # 3. clear for EVs that need a schedule (every plugged EV when the mechanism re-plans each step)
        if mo.replans:
            agg.scheduled[f.state == PLUGGED] = False
        idx = agg.to_schedule()
        if len(idx):
            n = self._horizon(k, idx)
            req = self.interface.request(k, n, self.taps.apply("ev_reports", agg.flex(idx, k, n), k), day_ahead=False)
            res = self.taps.apply("price_signal", mo.clear(req).with_info(ev_id=req.evs.ev_id), k)
            agg.accept(idx, k, res)
            mo.reprice(k, res)
        # 4. dispatch
        ev_idx, p_ev, q_ev = agg.dispatch(k)
        # 5. grid
        shift_bus = self.shift_bus(k)
        p_base = self.base_p_kw[k] + shift_bus
        nb = self.network.n_bus
        p_ev_bus = np.bincount(f.bus[ev_idx], weights=p_ev, minlength=nb)
        price = float(mo.price_usd_per_mwh[k])
        s_ev_bus = np.bincount(f.bus[ev_idx], weights=f.s_max_kva[ev_idx], minlength=nb)
        q_ev_bus = np.bincount(f.bus[ev_idx], weights=q_ev, minlength=nb)
        grid = dso.operate(
            p_base, self.base_q_kvar[k], p_ev_bus, price, self.renewable_kw[k], s_ev_bus, q_ev_kvar=q_ev_bus
        )
        p_disp = p_ev
        p_ev = np.where(p_ev > 0, p_ev * grid.ev_factor_bus[f.bus[ev_idx]], p_ev)
        # 6. measure (state estimation and bad-data detection on the tapped measurements) and record
        if self.estimator is not None and grid.pf.converged:
            self.last_pf = grid.pf
            z = self.taps.apply("dso_measurements", self.estimator.measure(grid.pf, self.streams["noise"]), k)
            det = self.estimator.detect(z, alpha=self.spec.detection.alpha)
            # a non-converged estimate is counted as such (se_converged), never as a χ² alarm or a clean step
            self.se_converged[k] = det.converged
            self.se_flag[k] = det.flagged and det.converged
            self.se_objective[k] = det.objective if det.converged else np.nan
            if det.converged:
                err = det.result.vm_pu - grid.pf.vm_pu
                self.se_vm_error[k] = float(np.nanmax(np.abs(err)))
                self.se_vm_sq[k] = float(np.nanmean(err**2))
        # 7. settle
        sched = agg.kw.at(ev_idx, k)
        e_batt = np.where(p_ev > 0, p_ev * f.eta_ch[ev_idx], p_ev / f.eta_dis[ev_idx]) * dt_h
        f.e_kwh[ev_idx] = np.minimum(f.e_kwh[ev_idx] + e_batt, f.battery_kwh[ev_idx])
        f.grid_kwh[ev_idx] += p_ev * dt_h
        f.cost_usd[ev_idx] += p_ev * dt_h * price / 1000.0
        if (p_ev < 0).any():
            self._settle_v2g(ev_idx, p_ev, e_batt, price, dt_h)
        f.curtailed_kwh[ev_idx] += (p_disp - p_ev) * dt_h
        agg.shortfall(ev_idx, k, p_ev)
        if self.monitor is not None:
            self.monitor.meter(
                np.bincount(f.station[ev_idx], weights=np.maximum(p_ev, 0.0), minlength=len(self.station_table)), k
            )
        full = ev_idx[f.need_of(ev_idx) <= 1e-6]
        self._release_next = full[self.station_table.release_when_full[f.station[full]]]
        self.recorder.record(
            k,
            grid,
            p_base,
            p_ev_bus_final=np.bincount(f.bus[ev_idx], weights=p_ev, minlength=nb),
            p_ev_requested_kw=float(np.maximum(sched, 0).sum()),
            p_ev_curtailed_kw=float((p_disp - p_ev).sum()),
            ev_idx=ev_idx,
            p_ev=p_ev,
            price=price,
            shift_kw=float(shift_bus.sum()),
        )

    def _settle_v2g(self, ev_idx: np.ndarray, p_ev: np.ndarray, e_batt: np.ndarray, price: float, dt_h: float) -> None:
        """V2G part of step 7 for the EVs ``ev_idx`` (grid-side power ``p_ev`` [kW], battery energy change ``e_batt``
        [kWh]): what was fed back (grid side), what it earned at the step price, and the battery wear it cost
        (added to the EV's cost; the revenue is already there, as negative energy at the step price)."""
        f = self.fleet
        wear = np.maximum(-e_batt, 0.0) * f.degradation_usd_per_kwh[ev_idx]
        fed_kwh = np.maximum(-p_ev, 0.0) * dt_h
        f.discharged_kwh[ev_idx] += fed_kwh
        f.v2g_revenue_usd[ev_idx] += fed_kwh * price / 1000.0
        f.degradation_usd[ev_idx] += wear
        f.cost_usd[ev_idx] += wear

    def shift_bus(self, k: int) -> np.ndarray:
        """The day-ahead DR shift of step ``k`` spread over buses in proportion to their load [kW]."""
        shift = self.market_operator.shift_kw[k]
        load = self.base_p_kw[k]
        total = load.sum()
        return load * (shift / total) if total > 0 else np.zeros_like(load)

    def _price_grid(self, k: int, n: int) -> None:
        """DLMPs of steps ``k … k+n−1`` from the DSO, on the forecast non-EV load (before demand response)."""
        mo = self.market_operator
        if mo.dlmp_p is None:
            mo.dlmp_p = np.zeros((self.n_steps, self.network.n_bus))
            mo.dlmp_q = np.zeros((self.n_steps, self.network.n_bus))
        lam_p, lam_q, failed = self.dso.dlmp(
            self.spec.market.dlmp,
            self.base_p_kw[k : k + n],
            self.base_q_kvar[k : k + n],
            mo.price_usd_per_mwh[k : k + n],
            self.spec.prices.q_price_usd_per_mvarh,
            self.renewable_kw[k : k + n],
        )
        assert mo.dlmp_p is not None and mo.dlmp_q is not None
        mo.dlmp_p[k : k + n], mo.dlmp_q[k : k + n] = lam_p, lam_q
        mo.dlmp_failed_slots += failed

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Run the whole horizon and return the `RunResult`."""
        t0 = time.perf_counter()
        c0 = time.process_time()
        self.env.run(until=self._until_min)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        result = self.recorder.result(wall_s=wall, cpu_s=cpu)
        self.close()
        return result

    def close(self) -> None:
        """Deregister every agent (Mesa's own ``remove_all_agents``), so a finished model holds no agents.

        Mesa ≥ 3.5 keeps no class-level reference to models (the 3.3 ``Agent._ids`` leak is gone), so nothing here
        touches Mesa's private state; Monte Carlo workers stay flat in memory (``bench/bench_montecarlo.py``).
        """
        self.remove_all_agents()

    def wait_min(self) -> np.ndarray:
        return wait_min(self.fleet, self.env.now)

    def advance(self, n_steps: int = 1) -> int:
        """Run the next ``n_steps`` market steps (fewer at the end of the horizon) and return the steps done so far.

        For live views that step the model by hand: SimPy's events are processed one by one until the step process
        has finished its step, exactly as `run` processes them, so stepping then calling `run` gives the same result.
        The recorder's arrays hold rows ``0 … steps−1`` afterwards.
        """
        target = min(self.steps + max(int(n_steps), 0), self.n_steps)
        while self.steps < target:
            self.env.step()
        return self.steps
