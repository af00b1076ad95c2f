"""Stochastic fleet and station generation, and the fleet's state arrays.

The fleet is stored as a struct of numpy arrays (:class:`FleetState`) so the step loop works on arrays; the Mesa
EV agents are thin views onto one row each. Generation draws from named random streams only:
``arrivals`` (arrival and departure times), ``needs`` (battery, SOC, energy need), ``behaviour`` (DR
participation, elasticity, income group) and ``fleet`` (hardware and station assignment).

Times are minutes since the start of the run. A group's arrival distribution is given as time of day; each
simulated day gets its own draw of ``share × n_evs`` EVs (or a Poisson number), mapped into the run window
``[start_h, start_h + horizon_h)``, so a run that starts at noon sees the evening arrivals of day 1 and the morning
arrivals of day 2 — the same set of sessions as a calendar day, without cutting the overnight ones in half.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from sim.scenario import Choice, FleetGroup, Scenario, ScenarioError, StationGroup

# EV states
PENDING, WAITING, PLUGGED, DEPARTED, RENEGED = 0, 1, 2, 3, 4
STATE_NAMES = np.array(["pending", "waiting", "plugged", "departed", "reneged"])


@dataclass
class StationTable:
    """Stations as arrays. ``ports`` is the number of charging ports; ``cap_kw`` inf where uncapped."""

    name: np.ndarray
    group: np.ndarray
    bus: np.ndarray
    ports: np.ndarray
    cap_kw: np.ndarray
    release_when_full: np.ndarray

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


def build_stations(scenario: Scenario, zone_buses: dict[str, np.ndarray], n_bus: int) -> StationTable:
    """Create the stations of every station group (ports resolved later for ``ports = 0`` groups)."""
    rows: list[tuple[str, int, int, int, float, bool]] = []
    for gi, sg in enumerate(scenario.stations):
        buses = _group_buses(scenario, sg, zone_buses, n_bus)
        for b in buses:
            for k in range(sg.per_bus):
                rows.append(
                    (
                        f"{sg.name}@{b}" + (f"#{k}" if sg.per_bus > 1 else ""),
                        gi,
                        int(b),
                        sg.ports,
                        sg.cap_kw if sg.cap_kw > 0 else np.inf,
                        sg.release_when_full,
                    )
                )
    name, group, bus, ports, cap, rel = zip(*rows)
    return StationTable(
        np.array(name), np.array(group), np.array(bus), np.array(ports), np.array(cap, float), np.array(rel, bool)
    )


def _group_buses(scenario: Scenario, sg: StationGroup, zone_buses: dict[str, np.ndarray], n_bus: int) -> np.ndarray:
    if isinstance(sg.buses, str):
        buses = zone_buses.get(sg.buses, np.zeros(0, int))
        if len(buses) == 0:
            raise ScenarioError(f"stations.{sg.name}.buses: zone '{sg.buses}' has no load buses in this grid")
        return buses
    idx = np.array([scenario.bus_index(b) for b in sg.buses], int)
    bad = (idx < 0) | (idx >= n_bus)
    if bad.any():
        lo, hi = (1, n_bus) if scenario.grid.bus_numbering == "paper" else (0, n_bus - 1)
        raise ScenarioError(
            f"stations.{sg.name}.buses: bus {np.asarray(sg.buses)[bad][0]} out of range; allowed {lo}..{hi} "
            f"({scenario.grid.bus_numbering} numbering)"
        )
    return idx


def generate_fleet(scenario: Scenario, stations: StationTable, streams: dict[str, np.random.Generator]) -> FleetState:
    """Draw the EV sessions of the whole run (see module docstring)."""
    t = scenario.time
    n_days = int(np.ceil(t.horizon_h / 24.0 - 1e-9))
    cols: dict[str, list[np.ndarray]] = {f.name: [] for f in fields(FleetState)}
    counts = _split_counts(scenario.fleet.n_evs, [g.share for g in scenario.fleet.groups])
    st_groups = {sg.name: i for i, sg in enumerate(scenario.stations)}
    r_arr, r_need, r_beh, r_fleet = (streams[k] for k in ("arrivals", "needs", "behaviour", "fleet"))
    for gi, (g, n_day) in enumerate(zip(scenario.fleet.groups, counts)):
        # arrival times [h since run start]
        if g.arrival.process == "poisson":
            total = sum(g.arrival.rate_per_h)
            scale = n_day / total if total > 0 else 0.0  # rates are a shape; n_evs × share is the expected daily count
            arr_h = (
                _poisson_arrivals(r_arr, g.arrival.rate_per_h, scale, t.start_h, t.start_h + t.horizon_h) - t.start_h
            )
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
        p_max = _choice(r_fleet, g.charger_kw, n).astype(float)
        v2g = r_fleet.uniform(size=n) < g.v2g_share
        members = np.nonzero(stations.group == st_groups[g.station_group])[0]
        station = members[r_fleet.integers(0, len(members), n)] if n else np.zeros(0, int)
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
            "p_dis_kw": np.where(v2g, np.minimum(g.discharge_kw, p_max), 0.0),
            "s_max_kva": p_max * g.charger_kva_factor,
            "eta_ch": np.full(n, g.eta_ch),
            "eta_dis": np.full(n, g.eta_dis),
            "v2g": v2g,
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
        }
        for k, v in add.items():
            cols[k].append(v)
    fleet = FleetState(**{k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})
    fleet.sort_by_arrival()
    # ports = 0 means one port per EV assigned to the station (home chargers): nobody queues.
    assigned = np.bincount(fleet.station.astype(int), minlength=len(stations))
    stations.ports = np.where(stations.ports == 0, np.maximum(assigned, 1), stations.ports)
    return fleet
