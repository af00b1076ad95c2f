"""Stochastic fleet and station generation, and the fleet's state arrays.

The fleet is stored as a struct of numpy arrays (:class:`FleetState`) so the step loop works on arrays; the Mesa
EV agents are thin views onto one row each. Generation draws from named random streams only:
``arrivals`` (arrival and departure times), ``needs`` (battery, SOC, energy need), ``behaviour`` (DR
participation, elasticity, income group) and ``fleet`` (hardware and station assignment).

Stations sit at internal bus positions (`grids.network.Network.position` of the pandapower index the scenario names;
zones from `grids.zones`); EVs go to their group's stations in proportion to the base load of each station's bus
(``fleet.placement = "load"``) or uniformly (``"uniform"``).

Times are minutes since the start of the run. A group's arrival distribution is given as time of day; each
simulated day gets its own draw of ``share × n_evs`` EVs (or a Poisson number), mapped into the run window
``[start_h, start_h + horizon_h)``, so a run that starts at noon sees the evening arrivals of day 1 and the morning
arrivals of day 2 — the same set of sessions as a calendar day, without cutting the overnight ones in half.
A group with ``source = "elaadnl"`` draws arrival, connection time and energy from ElaadNL's empirical tables instead
(`agents.elaadnl`, `_elaadnl_sessions`), from the same ``arrivals`` and ``needs`` streams.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from agents import vehicles
from grids.network import Network, NetworkError
from grids.zones import BusZones, bus_zones, network_label
from sim.scenario import Choice, FleetGroup, Scenario, ScenarioError, StationGroup

# EV states
PENDING, WAITING, PLUGGED, DEPARTED, RENEGED = 0, 1, 2, 3, 4
STATE_NAMES = np.array(["pending", "waiting", "plugged", "departed", "reneged"])


@dataclass
class StationTable:
    """Stations as arrays. ``bus`` is the internal bus position (`grids.network.Network.bus_ids` gives the
    pandapower index); ``ports`` is the number of charging ports; ``cap_kw`` inf where uncapped."""

    name: np.ndarray
    group: np.ndarray
    bus: np.ndarray
    ports: np.ndarray
    cap_kw: np.ndarray
    release_when_full: np.ndarray
    bus_load_kw: np.ndarray | None = None  # base active load of the station's bus [kW] (fleet.placement = "load")

    def __len__(self) -> int:
        return len(self.bus)


@dataclass
class FleetState:
    """Per-EV attributes (fixed at generation) and state (updated by the simulation); one row per EV."""

    # attributes
    group: np.ndarray
    station: np.ndarray
    bus: np.ndarray
    arrival_min: np.ndarray
    departure_min: np.ndarray
    battery_kwh: np.ndarray
    soc_arrival: np.ndarray
    soc_target: np.ndarray
    p_max_kw: np.ndarray
    p_dis_kw: np.ndarray
    s_max_kva: np.ndarray
    eta_ch: np.ndarray
    eta_dis: np.ndarray
    v2g: np.ndarray
    soc_floor: np.ndarray  # a V2G EV never discharges below it [-]
    transition_soc: np.ndarray  # two-stage battery: where the taper starts; 1 = ideal (agents/battery.py) [-]
    degradation_usd_per_kwh: np.ndarray  # wear per kWh discharged from the battery [$/kWh]
    vehicle: np.ndarray  # row of the group's vehicle table (agents/vehicles.py); -1 without one
    elasticity: np.ndarray
    income_group: np.ndarray
    participates: np.ndarray
    # state
    state: np.ndarray
    e_kwh: np.ndarray
    plugin_min: np.ndarray
    unplug_min: np.ndarray
    grid_kwh: np.ndarray
    cost_usd: np.ndarray
    curtailed_kwh: np.ndarray
    discharged_kwh: np.ndarray  # energy fed to the grid by V2G, grid side [kWh]
    degradation_usd: np.ndarray  # battery wear of that discharge [$]
    v2g_revenue_usd: np.ndarray  # what that discharge earned at the step price [$]

    def __len__(self) -> int:
        return len(self.arrival_min)

    @property
    def e_target_kwh(self) -> np.ndarray:
        """Battery energy wanted at departure [kWh]."""
        return self.soc_target * self.battery_kwh

    @property
    def e_need_kwh(self) -> np.ndarray:
        """Battery energy still missing [kWh] (≥ 0)."""
        return np.maximum(self.e_target_kwh - self.e_kwh, 0.0)

    def need_of(self, idx: np.ndarray) -> np.ndarray:
        """`e_need_kwh` of the EVs ``idx`` only [kWh] (the same values; a step touches the plugged EVs, not the
        whole fleet of a long run)."""
        return np.maximum(self.soc_target[idx] * self.battery_kwh[idx] - self.e_kwh[idx], 0.0)

    @property
    def soc(self) -> np.ndarray:
        return self.e_kwh / self.battery_kwh

    def sort_by_arrival(self) -> None:
        order = np.argsort(self.arrival_min, kind="stable")
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name)[order])


def _choice(rng: np.random.Generator, spec: Choice, n: int) -> np.ndarray:
    w = None if spec.weights is None else np.asarray(spec.weights, float) / sum(spec.weights)
    idx = rng.choice(len(spec.values), size=n, p=w)
    return np.asarray(spec.values, dtype=object)[idx]


def _split_counts(total: int, shares: list[float]) -> list[int]:
    """Integer counts proportional to ``shares`` that sum to ``total`` (largest remainder)."""
    raw = np.asarray(shares) * total
    base = np.floor(raw).astype(int)
    rest = total - base.sum()
    base[np.argsort(-(raw - base), kind="stable")[:rest]] += 1
    return base.tolist()


def _arrival_tod_h(rng: np.random.Generator, g: FleetGroup, n: int) -> np.ndarray:
    a = g.arrival
    if a.process == "uniform":
        return rng.uniform(a.low_h, a.high_h, n) % 24.0
    if a.process == "normal":
        return rng.normal(a.mean_h, a.sd_h, n) % 24.0
    raise AssertionError("poisson handled by _poisson_arrivals")


def _poisson_arrivals(
    rng: np.random.Generator, rate_per_h: list[float], scale: float, t0_h: float, t1_h: float
) -> np.ndarray:
    """Non-homogeneous Poisson arrivals on [t0_h, t1_h) (absolute hours of day-time, may exceed 24) by thinning."""
    rates = np.asarray(rate_per_h, float) * scale
    lam_max = rates.max()
    if lam_max <= 0 or t1_h <= t0_h:
        return np.zeros(0)
    n = rng.poisson(lam_max * (t1_h - t0_h))
    t = np.sort(rng.uniform(t0_h, t1_h, n))
    keep = rng.uniform(0, lam_max, n) < rates[(np.floor(t) % 24).astype(int)]
    return t[keep]


def build_stations(scenario: Scenario, network: Network, warnings: list[str] | None = None) -> StationTable:
    """Create the stations of every station group (ports resolved later for ``ports = 0`` groups).

    Bus numbers of the scenario (``stations.buses``) become pandapower indices (`Scenario.bus_index`) and then, here
    and only here, internal bus positions (`Network.position`); a zone becomes its load buses (`grids.zones`).
    A zone without load buses falls back to every load bus, with a message appended to ``warnings``.

    Raises:
        ScenarioError: a bus number that is not a bus of the network (naming the bus, the group and the network).
    """
    try:
        zones = bus_zones(
            network.net,
            network.name,
            scenario.grid.zones,
            paper_numbering=scenario.grid.bus_numbering == "paper",
            network_name=network_label(network.name, scenario.grid.file),
        )
    except ValueError as err:
        raise ScenarioError(str(err)) from None
    loaded = network.base_p_kw > 0
    rows: list[tuple[str, int, int, int, float, bool]] = []
    for gi, sg in enumerate(scenario.stations):
        for b in _group_buses(scenario, sg, network, zones, loaded, warnings):
            label = int(network.bus_ids[b])  # station names speak pandapower indices, like every output
            for k in range(sg.per_bus):
                rows.append(
                    (
                        f"{sg.name}@{label}" + (f"#{k}" if sg.per_bus > 1 else ""),
                        gi,
                        int(b),
                        sg.ports,
                        sg.cap_kw if sg.cap_kw > 0 else np.inf,
                        sg.release_when_full,
                    )
                )
    name, group, bus, ports, cap, rel = zip(*rows)
    bus_pos = np.array(bus, int)
    return StationTable(
        np.array(name),
        np.array(group),
        bus_pos,
        np.array(ports),
        np.array(cap, float),
        np.array(rel, bool),
        bus_load_kw=network.base_p_kw[bus_pos].astype(float),
    )


def _group_buses(
    scenario: Scenario,
    sg: StationGroup,
    network: Network,
    zones: BusZones,
    loaded: np.ndarray,
    warnings: list[str] | None,
) -> np.ndarray:
    """Internal bus positions of a station group's stations."""
    label = network_label(network.name, scenario.grid.file)
    if isinstance(sg.buses, str):
        if sg.buses == "all":
            buses = np.nonzero(loaded)[0]
        else:
            buses = np.nonzero(loaded & (zones.zone == sg.buses))[0]
            if len(buses) == 0 and loaded.any():
                buses = np.nonzero(loaded)[0]
                msg = (
                    f"stations.{sg.name}.buses: zone '{sg.buses}' has no load buses in network {label} "
                    f"(zones: {zones.source}; {zones.counts(loaded)}); the group uses all {len(buses)} load "
                    "buses instead (set grid.zones or list the buses to choose)"
                )
                if warnings is not None:
                    warnings.append(msg)
        if len(buses) == 0:
            raise ScenarioError(f"stations.{sg.name}.buses: network {label} has no load buses")
        return buses
    out = []
    for b in sg.buses:
        try:
            out.append(network.position(scenario.bus_index(b)))
        except NetworkError:
            numbering = scenario.grid.bus_numbering
            raise ScenarioError(
                f"stations.{sg.name}.buses: bus {b} is not a bus of network {label} "
                f"({numbering} numbering; the network has {network.n_bus} buses"
                + (f", numbers 1..{network.n_bus})" if numbering == "paper" else f", indices {_ids_text(network)})")
            ) from None
    return np.array(out, int)


def _ids_text(network: Network) -> str:
    ids = np.sort(network.bus_ids)
    if ids[-1] - ids[0] + 1 == len(ids):
        return f"{ids[0]}..{ids[-1]}"
    return f"{ids[0]}..{ids[-1]} with gaps"


def _placement(
    scenario: Scenario, stations: StationTable, members: np.ndarray, g: FleetGroup, warnings: list[str] | None
) -> str:
    """The placement rule for one fleet group's stations, with what the user should know said in ``warnings``."""
    if scenario.fleet.placement != "load" or stations.bus_load_kw is None:
        return "uniform"
    w = stations.bus_load_kw[members]
    msg = ""
    if not (w > 0).any():
        msg = (
            f"fleet.placement: every station of group '{g.station_group}' sits at a bus without base load; "
            f"fleet group '{g.name}' is spread uniformly over them"
        )
    elif not (w > 0).all():
        names = [str(x) for x in stations.name[members[w <= 0]]]
        msg = (
            f"fleet.placement: {len(names)} station(s) of group '{g.station_group}' sit at buses without base load "
            f"and get no EVs of fleet group '{g.name}' ({', '.join(names[:5])}{', …' if len(names) > 5 else ''}); "
            "set fleet.placement = 'uniform' to use them"
        )
    if msg and warnings is not None and msg not in warnings:
        warnings.append(msg)
    return "load" if (w > 0).any() else "uniform"


def _station_of_evs(
    rng: np.random.Generator, members: np.ndarray, n: int, placement: str, stations: StationTable
) -> np.ndarray:
    """Stations (rows of the station table) of ``n`` EVs of one group, drawn from ``rng`` (``fleet.placement``).

    ``uniform``: each EV independently at a station drawn with equal probability. ``load``: counts in proportion to
    the base active load of each station's bus (split evenly among the group's stations at that bus), rounded by
    largest remainder so they sum to ``n``, then shuffled over the EVs.
    """
    if placement == "uniform" or stations.bus_load_kw is None:
        return members[rng.integers(0, len(members), n)] if n else np.zeros(0, int)
    w = np.maximum(stations.bus_load_kw[members].astype(float), 0.0)
    same_bus = np.unique(stations.bus[members], return_inverse=True, return_counts=True)
    w = w / same_bus[2][same_bus[1]]
    counts = _split_counts(n, (w / w.sum()).tolist())
    return rng.permutation(np.repeat(members, counts))


def _parametric_sessions(
    scenario: Scenario, g: FleetGroup, n_day: int, r_arr: np.random.Generator, r_need: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sessions of a ``source = "parametric"`` group: (arrival [h since run start], departure [h since run start],
    battery [kWh], SOC target, SOC at arrival), sorted by arrival."""
    t = scenario.time
    n_days = int(np.ceil(t.horizon_h / 24.0 - 1e-9))
    # arrival times [h since run start]
    if g.arrival.process == "poisson":
        total = sum(g.arrival.rate_per_h)
        scale = n_day / total if total > 0 else 0.0  # rates are a shape; n_evs × share is the expected daily count
        arr_h = _poisson_arrivals(r_arr, g.arrival.rate_per_h, scale, t.start_h, t.start_h + t.horizon_h) - t.start_h
    else:
        days = [d * 24.0 + (_arrival_tod_h(r_arr, g, n_day) - t.start_h) % 24.0 for d in range(n_days)]
        arr_h = np.concatenate(days) if days else np.zeros(0)
    arr_h = np.sort(arr_h[arr_h < t.horizon_h])
    n = len(arr_h)
    if g.departure.kind == "dwell":
        dep_h = arr_h + r_arr.uniform(g.departure.low_h, g.departure.high_h, n)
    else:
        dep_tod = r_arr.uniform(g.departure.low_h, g.departure.high_h, n) % 24.0
        arr_tod = (arr_h + t.start_h) % 24.0
        gap = (dep_tod - arr_tod) % 24.0
        dep_h = arr_h + np.where(gap < 1e-9, 24.0, gap)
    battery = _choice(r_need, g.battery_kwh, n).astype(float)
    target = np.full(n, g.soc_target)
    if g.energy_need_kwh is not None:
        need = r_need.uniform(g.energy_need_kwh.low, g.energy_need_kwh.high, n)
        need = np.minimum(need, battery * target)
        soc_arr = target - need / battery
    else:
        soc_arr = np.minimum(r_need.uniform(g.soc_arrival.low, g.soc_arrival.high, n), target)
    return arr_h, dep_h, battery, target, soc_arr


def _elaadnl_sessions(
    scenario: Scenario,
    g: FleetGroup,
    n_day: int,
    r_arr: np.random.Generator,
    r_need: np.random.Generator,
    warnings: list[str] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sessions of a ``source = "elaadnl"`` group (`agents.elaadnl`), returned like `_parametric_sessions`.

    Every calendar day the run touches gets ``n_day`` arrivals from its day's table (weekday or weekend, by
    ``g.day_type``); those inside the run window are kept, so a noon-to-noon day sees the afternoon of one day and
    the morning of the next. Departure = arrival + connection time. The battery's energy need is the drawn energy
    (metered at the charge point) × ``eta_ch``, capped at ``battery × soc_target`` (an EV cannot take more); how many
    sessions were capped is said in ``warnings``.
    """
    from agents import elaadnl

    t = scenario.time
    segment = g.segment or "public"
    start_day = scenario.grid.profile_start_day
    arr: list[np.ndarray] = []
    for c in range(int(np.ceil((t.start_h + t.horizon_h) / 24.0 - 1e-9))):
        weekend = g.day_type == "weekend" or (g.day_type in (None, "calendar") and elaadnl.is_weekend(start_day, c))
        arr.append(c * 24.0 + elaadnl.draw_arrival_tod_h(r_arr, segment, weekend, n_day) - t.start_h)
    arr_h = np.concatenate(arr) if arr else np.zeros(0)
    arr_h = np.sort(arr_h[(arr_h >= 0.0) & (arr_h < t.horizon_h)])
    n = len(arr_h)
    dep_h = arr_h + elaadnl.draw_connection_h(r_arr, segment, n)
    battery = _choice(r_need, g.battery_kwh, n).astype(float)
    target = np.full(n, g.soc_target)
    need = elaadnl.draw_energy_kwh(r_need, segment, n) * g.eta_ch  # ElaadNL meters the charge point: grid side
    capped = need > battery * target
    if capped.any() and warnings is not None:
        warnings.append(
            f"fleet.groups.{g.name}: {int(capped.sum())} of {n} ElaadNL session energies exceed battery_kwh x "
            f"soc_target and are capped there (largest {need[capped].max():.1f} kWh); raise battery_kwh or "
            "soc_target to keep them"
        )
    soc_arr = target - np.minimum(need, battery * target) / battery
    return arr_h, dep_h, battery, target, soc_arr


def _say_undeliverable(g: FleetGroup, need_kwh: np.ndarray, max_kwh: np.ndarray, warnings: list[str] | None) -> None:
    """Say how many sessions of an ElaadNL group need more battery energy [kWh] than their charger can deliver in
    their connection time (``max_kwh``): ElaadNL publishes connection time and energy as separate distributions,
    drawn independently here, so a short session may come with a large energy; it stays unfulfilled."""
    short = need_kwh > max_kwh + 1e-9
    if short.any() and warnings is not None:
        gap = float((need_kwh - max_kwh)[short].sum())
        warnings.append(
            f"fleet.groups.{g.name}: {int(short.sum())} of {len(need_kwh)} ElaadNL sessions need more energy than "
            f"their charger delivers in their connection time ({gap:.0f} of {need_kwh.sum():.0f} kWh cannot be "
            "served: connection time and energy are drawn independently); energy fulfilment stays below 1"
        )


def _hardware(
    g: FleetGroup, r_fleet: np.random.Generator, battery: np.ndarray, target: np.ndarray, soc_arr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Charger power [kW], discharge limit [kW], vehicle row (-1: none), battery [kWh] and SOC at arrival of a group's
    EVs. With ``vehicles`` the model's capacity and AC limits replace the group's: a drawn energy need is kept (within
    the new capacity), a drawn SOC at arrival too."""
    n = len(battery)
    p_max = _choice(r_fleet, g.charger_kw, n).astype(float)
    p_dis = np.full(n, g.discharge_kw)
    vehicle = np.full(n, -1)
    if g.vehicles is not None:
        need_kwh = (target - soc_arr) * battery
        vehicle, battery, ac_kw, dis_kw = vehicles.draw(
            r_fleet, g.vehicles.table, g.vehicles.models, g.vehicles.weights, n
        )
        p_max = np.minimum(p_max, ac_kw)
        p_dis = np.minimum(p_dis, dis_kw)
        if g.energy_need_kwh is not None or g.source == "elaadnl":
            soc_arr = np.maximum(target - need_kwh / battery, 0.0)
    return p_max, p_dis, vehicle, battery, soc_arr


def generate_fleet(
    scenario: Scenario,
    stations: StationTable,
    streams: dict[str, np.random.Generator],
    warnings: list[str] | None = None,
) -> FleetState:
    """Draw the EV sessions of the whole run (see module docstring).

    EVs go to their group's stations by ``fleet.placement`` (`_station_of_evs`). With ``"load"``, stations at buses
    without base load get no EVs (said in ``warnings``), and a group whose stations all sit at such buses is placed
    uniformly (said too).
    """
    cols: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(FleetState)}
    counts = _split_counts(scenario.fleet.n_evs, [g.share for g in scenario.fleet.groups])
    st_groups = {sg.name: i for i, sg in enumerate(scenario.stations)}
    r_arr, r_need, r_beh, r_fleet = (streams[k] for k in ("arrivals", "needs", "behaviour", "fleet"))
    for gi, (g, n_day) in enumerate(zip(scenario.fleet.groups, counts)):
        if g.source == "elaadnl":
            arr_h, dep_h, battery, target, soc_arr = _elaadnl_sessions(scenario, g, n_day, r_arr, r_need, warnings)
        else:
            arr_h, dep_h, battery, target, soc_arr = _parametric_sessions(scenario, g, n_day, r_arr, r_need)
        n = len(arr_h)
        p_max, p_dis, vehicle, battery, soc_arr = _hardware(g, r_fleet, battery, target, soc_arr)
        if g.source == "elaadnl":
            _say_undeliverable(g, (target - soc_arr) * battery, p_max * g.eta_ch * (dep_h - arr_h), warnings)
        v2g = (r_fleet.uniform(size=n) < g.v2g_share) & (p_dis > 0)
        members = np.nonzero(stations.group == st_groups[g.station_group])[0]
        station = _station_of_evs(r_fleet, members, n, _placement(scenario, stations, members, g, warnings), stations)
        part = r_beh.uniform(size=n) < scenario.fleet.participation
        elast = r_beh.uniform(g.elasticity.low, g.elasticity.high, n)
        income = _choice(r_beh, g.income_group, n).astype(str)
        add = {
            "group": np.full(n, gi),
            "station": station.astype(int),
            "bus": stations.bus[station] if n else np.zeros(0, int),
            "arrival_min": arr_h * 60.0,
            "departure_min": dep_h * 60.0,
            "battery_kwh": battery,
            "soc_arrival": soc_arr,
            "soc_target": target,
            "p_max_kw": p_max,
            "p_dis_kw": np.where(v2g, np.minimum(p_dis, p_max), 0.0),
            "s_max_kva": p_max * g.charger_kva_factor,
            "eta_ch": np.full(n, g.eta_ch),
            "eta_dis": np.full(n, g.eta_dis),
            "v2g": v2g,
            "soc_floor": np.full(n, g.v2g_soc_floor),
            "transition_soc": np.full(n, g.battery.transition_soc if g.battery.model == "two-stage" else 1.0),
            "degradation_usd_per_kwh": np.full(n, g.degradation_usd_per_kwh),
            "vehicle": vehicle,
            "elasticity": elast,
            "income_group": income,
            "participates": part,
            "state": np.full(n, PENDING),
            "e_kwh": soc_arr * battery,
            "plugin_min": np.full(n, np.nan),
            "unplug_min": np.full(n, np.nan),
            "grid_kwh": np.zeros(n),
            "cost_usd": np.zeros(n),
            "curtailed_kwh": np.zeros(n),
            "discharged_kwh": np.zeros(n),
            "degradation_usd": np.zeros(n),
            "v2g_revenue_usd": np.zeros(n),
        }
        for k, v in add.items():
            cols[k].append(v)
    fleet = FleetState(**{k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})
    fleet.sort_by_arrival()
    # ports = 0 means one port per EV assigned to the station (home chargers): nobody queues.
    assigned = np.bincount(fleet.station.astype(int), minlength=len(stations))
    stations.ports = np.where(stations.ports == 0, np.maximum(assigned, 1), stations.ports)
    return fleet
