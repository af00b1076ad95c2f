"""Networks of the papers, their load profiles and distributed energy resources.

pandapower is the model of record. A :class:`Network` wraps the pandapower net with what the simulation needs on
top: each bus's base load and zone, the zonal daily load profiles, the renewables and dispatchable DGs, and the
operating limits. Bus indices are pandapower's 0-based positions everywhere in this module.

Builders (``build_network(case, …)``):

* ``case33bw`` — Baran & Wu (1989) 33-bus feeder, 12.66 kV, 3.715 MW / 2.3 MVAr; base case losses 202.7 kW,
  Vmin 0.913 pu at bus 18 (paper numbering).
* ``case33bw-dr`` — the feeder of Erdanayev et al. (`002_…`): + dispatchable DGs of 1.5 MW at paper buses 11 and
  33 with quadratic costs (A, B, C) = (0.0075, 60, 45) and (0.0075, 85, 58.5) $/MW²h, $/MWh, $/h, reactive cost
  7 / 8.5 $/MVArh and power factor 0.95; + PV 0.8 MW at bus 18; 8 MVA substation.
* ``case33bw-dlmp`` — the feeder of Suri et al. (`000_…`): + PV 500 kW at bus 15 and 3 × 500 kW wind at bus 7.
* ``case118`` — IEEE 118-bus system (pandapower's ``case118``), one system-wide profile.
* ``file`` — a network file: pandapower JSON (checked against a data allow-list before pandapower reads it),
  MATPOWER ``.m``/``.mat``, or a pickle only with the user's ``--trust-pickle`` opt-in (see `grids.netfile`).
* ``pandapower:<name>`` — a constructor of ``pandapower.networks`` from an allow-list, ``simbench:<code>`` — a
  SimBench grid with its own element profiles (see `grids.sources` and docs/grids.md).

Ratings (``line_max_i_ka``, ``substation_mva``): a number overrides, ``"network"`` keeps the network's own (line
``max_i_ka``; no T–D interface limit beyond the transformers' own), None (omitted) is the case's default: 0.4 kA
(≈ 8.8 MVA at 12.66 kV) and 8 MVA for the shipped ``case33bw*`` cases — Baran & Wu give no ratings, pandapower's
case33bw carries 99999 kA — and the network's own for every other case.

Generation of the network: every in-service ``sgen`` becomes a DER the DSO subtracts from the load at its bus
(kind ``pv``/``wind`` from its ``type``, else ``other``); its output follows SimBench's own profile, else
`PV_PROFILE`/`WIND_PROFILE` × its ``p_mw`` (``other``: constant ``p_mw``). ``net.gen`` units stay in the net
(voltage-controlled buses); `grids.dispatch` makes their active power follow the load.

Load profiles: the papers give their daily curves only as figures, so the profiles below are synthetic shapes of
the kinds the papers describe (`002_…` §2.1: residential evening peak, commercial day peak, flatter industrial),
scaled so that the 33-bus system curve spans the stated DLF range 0.52–1.00. Values are hourly levels: hour ``h``
holds over ``[h, h+1)``.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Normalised hourly demand level factors (hour 0 = 00:00–01:00); peak 1.0 in each zone.
PROFILES: dict[str, np.ndarray] = {
    "residential": np.array(
        [
            0.55,
            0.50,
            0.47,
            0.45,
            0.45,
            0.48,
            0.58,
            0.68,
            0.66,
            0.62,
            0.60,
            0.61,
            0.63,
            0.62,
            0.61,
            0.64,
            0.72,
            0.84,
            0.95,
            1.00,
            0.98,
            0.90,
            0.78,
            0.65,
        ]
    ),
    "commercial": np.array(
        [
            0.40,
            0.38,
            0.37,
            0.37,
            0.38,
            0.42,
            0.52,
            0.68,
            0.84,
            0.94,
            0.98,
            1.00,
            0.97,
            0.99,
            0.98,
            0.95,
            0.90,
            0.82,
            0.72,
            0.64,
            0.57,
            0.50,
            0.45,
            0.42,
        ]
    ),
    "industrial": np.array(
        [
            0.72,
            0.70,
            0.70,
            0.70,
            0.72,
            0.76,
            0.85,
            0.93,
            0.98,
            1.00,
            1.00,
            0.98,
            0.95,
            0.98,
            1.00,
            0.99,
            0.96,
            0.90,
            0.84,
            0.80,
            0.78,
            0.76,
            0.74,
            0.73,
        ]
    ),
    "flat": np.ones(24),
}

# PV: clear-sky bell between 06:00 and 19:00; wind: typical diurnal shape, stronger at night. Per unit of rating.
PV_PROFILE = np.clip(np.sin(np.pi * (np.arange(24) + 0.5 - 6.0) / 13.0), 0.0, None)
WIND_PROFILE = np.array(
    [
        0.62,
        0.65,
        0.66,
        0.66,
        0.64,
        0.60,
        0.55,
        0.48,
        0.42,
        0.38,
        0.35,
        0.33,
        0.32,
        0.33,
        0.35,
        0.38,
        0.42,
        0.47,
        0.52,
        0.56,
        0.58,
        0.60,
        0.61,
        0.62,
    ]
)

# Zones of the 33-bus feeder (paper numbering), after `002_…` Fig. 3 (the figure itself is missing from our copy):
# main feeder 2–18 residential, lateral 19–22 and 23–25 commercial, lateral 26–33 industrial.
ZONES_33 = {
    "residential": list(range(2, 19)),
    "commercial": list(range(19, 26)),
    "industrial": list(range(26, 34)),
}


# Kinds of the non-dispatchable generation units (`Network.renewables`); "other" = a network's sgen that is neither
# PV nor wind (CHP, biomass, hydro, fuel cell, SimBench's aggregated "lv_RES", ...).
GENERATION_KINDS = ("pv", "wind", "other")

# Default ratings of the shipped 33-bus cases (Baran & Wu give none; pandapower's case33bw carries 99999 kA).
CASE33_LINE_MAX_I_KA = 0.4
CASE33_SUBSTATION_MVA = 8.0


class NetworkError(ValueError):
    """A network could not be built (unknown case, unreadable file, bad bus)."""


@dataclass
class DER:
    """A distributed energy resource at a bus.

    Attributes:
        name: label.
        kind: ``"pv"``, ``"wind"`` or ``"dg"`` (dispatchable, quadratic cost).
        bus: pandapower bus index.
        p_max_kw: rating [kW].
        profile: hourly availability per unit of rating (renewables), shape (24,).
        cost_a: quadratic cost coefficient [$/MW²h] (DG).
        cost_b: linear cost coefficient [$/MWh] (DG).
        cost_c: fixed cost while committed [$/h] (DG).
        q_cost_usd_per_mvarh: reactive energy cost [$/MVArh] (DG).
        pf: power factor of the reactive output (lagging, injecting Q) (DG).
        series_kw: the unit's own output over the profile year [kW] (SimBench), used instead of ``profile``.
    """

    name: str
    kind: str
    bus: int
    p_max_kw: float
    profile: np.ndarray | None = None
    cost_a: float = 0.0
    cost_b: float = 0.0
    cost_c: float = 0.0
    q_cost_usd_per_mvarh: float = 0.0
    pf: float = 1.0
    series_kw: np.ndarray | None = None


@dataclass
class LoadSeries:
    """A network's own load profiles (SimBench): absolute power per load element at a fixed resolution.

    Attributes:
        p_kw: active power per load, shape (n_t, n_load) [kW] (already × ``load_scale``).
        q_kvar: reactive power per load, same shape [kVAr].
        bus: internal bus position of each load, shape (n_load,).
        step_min: resolution [min] (SimBench: 15).
        start_day: day of the profile year on which the run starts (1 = 1 January).
    """

    p_kw: np.ndarray
    q_kvar: np.ndarray
    bus: np.ndarray
    step_min: float = 15.0
    start_day: int = 1


@dataclass
class Network:
    """A pandapower net plus loads, zones, profiles, DERs and limits (see module docstring)."""

    name: str
    net: Any
    base_p_kw: np.ndarray
    base_q_kvar: np.ndarray
    zone: np.ndarray
    ders: list[DER] = field(default_factory=list)
    v_min_pu: float = 0.95
    v_max_pu: float = 1.05
    max_line_loading_percent: float = 100.0
    substation_mva: float = 8.0
    max_trafo_loading_percent: float = 100.0
    citation: str = ""
    profiles: dict[str, np.ndarray] = field(default_factory=lambda: dict(PROFILES))
    series: LoadSeries | None = None
    load_profile: str = "zonal"

    @property
    def n_bus(self) -> int:
        return len(self.base_p_kw)

    @property
    def n_line(self) -> int:
        return len(self.net.line)

    @property
    def bus_ids(self) -> np.ndarray:
        """pandapower bus index of each internal position (arrays here are indexed by position 0 … n_bus−1)."""
        return self.net.bus.index.to_numpy()

    def position(self, bus_id: int) -> int:
        """Internal position of the bus whose pandapower index is ``bus_id``; `NetworkError` if there is none."""
        pos = np.nonzero(self.bus_ids == int(bus_id))[0]
        if len(pos) == 0:
            raise NetworkError(f"bus {bus_id} is not a bus index of network {self.name!r}")
        return int(pos[0])

    def zone_buses(self, zone: str) -> np.ndarray:
        """Internal positions of the load buses in a zone (``"all"`` = every bus with load); `bus_ids` maps them to
        pandapower indices."""
        loaded = self.base_p_kw > 0
        if zone == "all":
            return np.nonzero(loaded)[0]
        return np.nonzero(loaded & (self.zone == zone))[0]

    def series_rows(self, t_h: np.ndarray, n_rows: int, step_min: float, start_day: int) -> np.ndarray:
        """Rows of a year-long profile at the given times: ``t_h`` hours after midnight of day ``start_day``.

        A step reads the profile value of the slot that contains its start (as the hourly profiles hold over
        ``[h, h+1)``); past the end of the profile year the rows wrap to its beginning.
        """
        minutes = ((start_day - 1) * 24.0 + np.asarray(t_h, float)) * 60.0
        return (np.floor(minutes / step_min + 1e-9).astype(np.int64)) % n_rows

    def load_kw(self, tod_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Non-EV load per bus at the given times: (P [kW], Q [kVAr]), each shape (n_times, n_bus).

        ``tod_h`` is hours since midnight of the run's first day (the time of day on day one; hourly profiles
        repeat every 24 h, a network's own year-long profiles — SimBench — run on through the year).
        """
        t_h = np.asarray(tod_h, float)
        if self.series is not None and self.load_profile == "network":
            s = self.series
            rows = self.series_rows(t_h, len(s.p_kw), s.step_min, s.start_day)
            p = np.zeros((rows.size, self.n_bus))
            q = np.zeros((rows.size, self.n_bus))
            for j, b in enumerate(s.bus):  # a bus may hold several loads
                p[:, b] += s.p_kw[rows, j]
                q[:, b] += s.q_kvar[rows, j]
            return p, q
        hour = (np.floor(t_h) % 24).astype(int)
        factor = np.ones((hour.size, self.n_bus))
        for z in np.unique(self.zone):
            cols = self.zone == z
            factor[:, cols] = self.profiles[z][hour][:, None]
        return factor * self.base_p_kw, factor * self.base_q_kvar

    def renewable_kw(self, tod_h: np.ndarray) -> np.ndarray:
        """Available output of each generation DER (`renewables`) at the given times: shape (n_times, n_units) [kW].

        ``tod_h`` as in :meth:`load_kw`. A unit with its own year-long series (SimBench) follows it from the run's
        ``profile_start_day``; the others follow their hourly profile × rating.
        """
        t_h = np.asarray(tod_h, float)
        hour = (np.floor(t_h) % 24).astype(int)
        ren = self.renewables
        if not ren:
            return np.zeros((hour.size, 0))
        start_day = self.series.start_day if self.series is not None else 1
        step_min = self.series.step_min if self.series is not None else 15.0
        rows = []
        for d in ren:
            if d.series_kw is not None:
                rows.append(d.series_kw[self.series_rows(t_h, len(d.series_kw), step_min, start_day)])
                continue
            assert d.profile is not None, f"{d.kind} unit without a profile"  # builders give every unit one
            rows.append(d.profile[hour] * d.p_max_kw)
        return np.stack(rows, axis=1)

    @property
    def renewables(self) -> list[DER]:
        """Non-dispatchable generation the DSO subtracts from the load: PV, wind and the network's other ``sgen``."""
        return [d for d in self.ders if d.kind in GENERATION_KINDS]

    @property
    def dgs(self) -> list[DER]:
        return [d for d in self.ders if d.kind == "dg"]

    def sensitivity_r(self, engine: Any = None) -> np.ndarray:
        """Mutual driving-point resistance ``Re(Z_ki)`` between buses [pu] (slack removed), shape (n_bus, n_bus).

        ``-Re(Z_ki)`` approximates ∂V_k/∂P_i in per unit (LinDistFlow-like sensitivity); the DSO uses it to curtail
        EV load where it helps the violated bus most. Cached after the first call (read-only array).

        Computed by our fast power-flow engine from the bus admittance matrix of its one compile run
        (:meth:`grids.powerflow.FastPowerFlow.driving_point_resistance`), no power flow of its own. Pass the
        :class:`~grids.powerflow.FastPowerFlow` already compiled from ``self.net`` as ``engine`` to reuse it;
        otherwise one is compiled here.
        """
        if getattr(self, "_r", None) is None:
            from grids.powerflow import FastPowerFlow

            if not isinstance(engine, FastPowerFlow):
                engine = FastPowerFlow(self.net)
            elif not np.array_equal(engine.bus_index, self.net.bus.index.to_numpy()):
                raise ValueError(f"sensitivity_r: the engine was not compiled from network {self.name!r}")
            self._r = engine.driving_point_resistance()
        return self._r


def feeder_neighbours(net: Any, buses: np.ndarray, reach: int) -> list[list[int]]:
    """For each station, itself and the ``reach`` other stations nearest along the feeder (in-service lines and
    transformers, closed bus-bus switches; hops; ties by station index). ``buses`` are internal bus positions."""
    n = len(net.bus)
    pos = {b: i for i, b in enumerate(net.bus.index)}  # pandapower index -> position (indices may have gaps)
    adj: list[list[int]] = [[] for _ in range(n)]
    line_ok = net.line.in_service.astype(bool)
    if len(net.switch):  # a line behind an open line switch carries nothing
        open_l = net.switch[(net.switch.et == "l") & ~net.switch.closed.astype(bool)].element
        line_ok &= ~net.line.index.isin(open_l)
    edges = [zip(net.line.from_bus, net.line.to_bus, line_ok)]
    if len(net.trafo):
        edges.append(zip(net.trafo.hv_bus, net.trafo.lv_bus, net.trafo.in_service))
    if len(net.switch):
        bb = net.switch[(net.switch.et == "b") & net.switch.closed]
        edges.append(zip(bb.bus, bb.element, [True] * len(bb)))
    for fb, tb, ok in (e for group in edges for e in group):
        if ok and fb in pos and tb in pos:
            adj[pos[fb]].append(pos[tb])
            adj[pos[tb]].append(pos[fb])
    out = []
    for k, b in enumerate(buses):
        dist = np.full(n, np.inf)
        dist[int(b)] = 0
        q = deque([int(b)])
        while q:
            u = q.popleft()
            for v in adj[u]:
                if dist[v] == np.inf:
                    dist[v] = dist[u] + 1
                    q.append(v)
        d = dist[np.asarray(buses, int)]
        order = [j for j in np.lexsort((np.arange(len(buses)), d)) if j != k]
        out.append([k] + [int(j) for j in order[:reach]])
    return out


def _paper_bus(net: Any, bus_1based: int) -> int:
    idx = bus_1based - 1
    if idx not in set(net.bus.index):
        raise NetworkError(f"bus {bus_1based} (paper numbering) is not in the network")
    return idx


def build_network(
    case: str = "case33bw",
    *,
    file: str | Path = "",
    network_args: dict[str, Any] | None = None,
    load_profile: str | None = None,
    load_scale: float = 1.0,
    line_max_i_ka: float | str | None = None,
    v_min_pu: float = 0.95,
    v_max_pu: float = 1.05,
    max_line_loading_percent: float = 100.0,
    substation_mva: float | str | None = None,
    max_trafo_loading_percent: float = 100.0,
    dg_cost_scale: float = 1.0,
    profile_start_day: int = 1,
) -> Network:
    """Build a network (see module docstring).

    Args:
        case: ``case33bw``, ``case33bw-dr``, ``case33bw-dlmp``, ``case118``, ``file``, ``pandapower:<name>`` or
            ``simbench:<code>`` (`grids.sources`).
        file: network file when ``case = "file"`` (``.json``, ``.m``, ``.mat``; pickles need ``--trust-pickle``).
        network_args: keyword arguments of a ``pandapower:<name>`` constructor (scalars).
        load_profile: ``"zonal"`` (R/C/I zones), ``"residential"`` (one residential curve), ``"flat"`` or
            ``"network"`` (the network's own year-long profiles: SimBench); None = ``"network"`` for SimBench,
            ``"zonal"`` otherwise.
        load_scale: multiplies every base load.
        line_max_i_ka: thermal rating given to every line [kA]; ``"network"`` keeps the network's own; None = the
            case's default (0.4 kA for the shipped case33bw cases, the network's own otherwise).
        v_min_pu: lower voltage limit [pu].
        v_max_pu: upper voltage limit [pu].
        max_line_loading_percent: line loading limit [%].
        substation_mva: rating of the T–D interface [MVA]; ``"network"`` = none beyond the transformers' own
            (infinite); None = the case's default (8 MVA for the shipped case33bw cases, ``"network"`` otherwise).
        max_trafo_loading_percent: transformer loading limit [%] (recorded and enforced like line loading).
        dg_cost_scale: multiplies the DG cost coefficients A, B and C (sensitivity studies, `002_…` §3.2).
        profile_start_day: day of the profile year (1–366) on which the run starts (SimBench profiles).

    Raises:
        NetworkError: one line naming the field, the value and what is allowed.
    """
    net, citation, source, shipped33 = _load_case(case, file, network_args)
    _apply_line_rating(net, CASE33_LINE_MAX_I_KA if (line_max_i_ka is None and shipped33) else line_max_i_ka)
    substation_mva, load_profile, has_series = _check_settings(
        case, source, shipped33, substation_mva, load_profile, profile_start_day
    )
    _warn_unmodelled(net, case)

    n_bus = len(net.bus)
    pos = {b: i for i, b in enumerate(net.bus.index)}
    base_p, base_q, series = _base_loads(net, pos, source, has_series, load_scale, profile_start_day)

    # zonal: the papers' zones on the 33-bus feeder, else derived from the file's loads (grids/zones.py)
    from grids.zones import derive_zones

    zone = derive_zones(net, case).zone.astype(object) if load_profile == "zonal" else np.full(n_bus, load_profile)

    ders = _network_ders(net, case, pos, source, dg_cost_scale)
    # The simulation supplies every load and sgen through the power-flow arrays; the net keeps them as the record.
    return Network(
        name=case,
        net=net,
        base_p_kw=base_p,
        base_q_kvar=base_q,
        zone=zone.astype(str),
        ders=ders,
        v_min_pu=v_min_pu,
        v_max_pu=v_max_pu,
        max_line_loading_percent=max_line_loading_percent,
        substation_mva=float(substation_mva),
        max_trafo_loading_percent=max_trafo_loading_percent,
        citation=citation,
        series=series,
        load_profile=load_profile,
    )


def _load_case(case: str, file: str | Path, network_args: dict[str, Any] | None) -> tuple[Any, str, Any, bool]:
    """The net of ``case``, its citation, its source (None if built in) and whether it is a shipped 33-bus case."""
    import pandapower.networks as pn

    from grids.sources import SHIPPED_CASES, SourceError, check_case, load_source

    try:
        check_case(case)
    except SourceError as err:
        raise NetworkError(str(err)) from None
    shipped33 = case in ("case33bw", "case33bw-dr", "case33bw-dlmp")
    if network_args and case in SHIPPED_CASES:
        raise NetworkError(
            f"grid.network_args: {sorted(network_args)} given but grid.case = '{case}' takes no arguments; "
            "allowed only with grid.case = 'pandapower:<name>'"
        )
    citation = ""
    source = None
    if shipped33:
        net = pn.case33bw()
        citation = "M. E. Baran, F. F. Wu, 'Network reconfiguration in distribution systems for loss reduction "
        citation += "and load balancing', IEEE Trans. Power Delivery 4(2), 1989"
    elif case == "case118":
        net = pn.case118()
        citation = "IEEE 118-bus test system (pandapower case118, from MATPOWER)"
    else:
        try:
            source = load_source(case, file=file, network_args=network_args)
        except SourceError as err:
            raise NetworkError(str(err)) from None
        net, citation = source.net, source.citation
    return net, citation, source, shipped33


def _check_settings(
    case: str, source: Any, shipped33: bool, substation_mva: float | str | None, load_profile: str | None, day: int
) -> tuple[float | str, str, bool]:
    """Resolved, checked ``substation_mva`` [MVA], ``load_profile`` (``day``: profile_start_day); has load series?"""
    if substation_mva is None:
        substation_mva = CASE33_SUBSTATION_MVA if shipped33 else "network"
    if substation_mva == "network":
        substation_mva = float("inf")  # no interface limit beyond the transformers' own
    elif isinstance(substation_mva, str) or not float(substation_mva) > 0:
        raise NetworkError(f"grid.substation_mva: {substation_mva!r}; allowed: a number > 0 [MVA] or 'network'")
    if not 1 <= int(day) <= 366:
        raise NetworkError(f"grid.profile_start_day: {day}; allowed: a day of the year 1-366")
    has_series = source is not None and source.load_p_mw is not None
    if load_profile is None:
        load_profile = "network" if has_series else "zonal"
    if load_profile == "network" and not has_series:
        raise NetworkError(
            f"grid.load_profile: 'network' needs a network with its own load profiles (simbench:<code> or a file "
            f"saved from one); '{case}' has none; allowed: zonal, residential, flat"
        )
    if int(day) != 1 and not has_series:
        raise NetworkError(
            f"grid.profile_start_day: {day} has no effect on '{case}' (no year-long profiles); "
            "allowed: only with a network that has them (simbench:<code> or a file saved from one)"
        )
    return substation_mva, load_profile, has_series


def _base_loads(
    net: Any, pos: dict[Any, int], source: Any, has_series: bool, load_scale: float, profile_start_day: int
) -> tuple[np.ndarray, np.ndarray, LoadSeries | None]:
    """Base active [kW] and reactive [kVAr] load per bus, and the network's own load series (if it has one)."""
    n_bus = len(net.bus)
    base_p = np.zeros(n_bus)
    base_q = np.zeros(n_bus)
    loads = net.load[net.load.in_service]
    np.add.at(base_p, [pos[b] for b in loads.bus], (loads.p_mw * loads.scaling).to_numpy() * 1000 * load_scale)
    np.add.at(base_q, [pos[b] for b in loads.bus], (loads.q_mvar * loads.scaling).to_numpy() * 1000 * load_scale)
    series = None
    if has_series:
        assert source is not None and source.load_p_mw is not None and source.load_q_mvar is not None
        ld = net.load.loc[source.load_index]
        scale = ld.scaling.to_numpy(float) * 1000.0 * load_scale
        series = LoadSeries(
            p_kw=source.load_p_mw * scale,
            q_kvar=source.load_q_mvar * scale,
            bus=np.array([pos[b] for b in ld.bus], int),
            step_min=source.step_min,
            start_day=int(profile_start_day),
        )
    return base_p, base_q, series


def _network_ders(net: Any, case: str, pos: dict[Any, int], source: Any, dg_cost_scale: float) -> list[DER]:
    """The case's DERs: the papers' units on the shipped 33-bus cases plus the net's sgens, DG costs scaled."""
    ders: list[DER] = []
    if case == "case33bw-dr":
        ders += [
            DER(
                "DG11",
                "dg",
                pos[_paper_bus(net, 11)],
                1500.0,
                cost_a=0.0075,
                cost_b=60.0,
                cost_c=45.0,
                q_cost_usd_per_mvarh=7.0,
                pf=0.95,
            ),
            DER(
                "DG33",
                "dg",
                pos[_paper_bus(net, 33)],
                1500.0,
                cost_a=0.0075,
                cost_b=85.0,
                cost_c=58.5,
                q_cost_usd_per_mvarh=8.5,
                pf=0.95,
            ),
            DER("PV18", "pv", pos[_paper_bus(net, 18)], 800.0, profile=PV_PROFILE),
        ]
    elif case == "case33bw-dlmp":
        ders += [DER("PV15", "pv", pos[_paper_bus(net, 15)], 500.0, profile=PV_PROFILE)]
        ders += [DER(f"WT7-{k}", "wind", pos[_paper_bus(net, 7)], 500.0, profile=WIND_PROFILE) for k in range(1, 4)]

    ders += _sgen_units(net, pos, source)
    for d in ders:
        if d.kind == "dg":
            d.cost_a, d.cost_b, d.cost_c = (c * dg_cost_scale for c in (d.cost_a, d.cost_b, d.cost_c))
    return ders


# Placeholder ratings: pandapower writes 99999 kA where a case gives none (Baran & Wu, MATPOWER rateA = 0 in some).
_PLACEHOLDER_KA = 9999.0


def _apply_line_rating(net: Any, line_max_i_ka: float | str | None) -> None:
    """Give every line ``line_max_i_ka`` [kA], or keep the network's own (``"network"``/None); warn on placeholders."""
    if line_max_i_ka is None or line_max_i_ka == "network":
        live = net.line[net.line.in_service.astype(bool)] if len(net.line) else net.line
        n_fake = int((live.max_i_ka >= _PLACEHOLDER_KA).sum()) if len(live) else 0
        if n_fake:
            warnings.warn(
                f"grid.line_max_i_ka: {n_fake} of {len(live)} lines keep a placeholder rating >= {_PLACEHOLDER_KA:g} "
                "kA (the network gives none), so their loading is near 0 %; set grid.line_max_i_ka to a number",
                RuntimeWarning,
                stacklevel=3,
            )
        return
    if isinstance(line_max_i_ka, str) or not float(line_max_i_ka) > 0:
        raise NetworkError(f"grid.line_max_i_ka: {line_max_i_ka!r}; allowed: a number > 0 [kA] or 'network'")
    if len(net.line):
        net.line["max_i_ka"] = float(line_max_i_ka)


def _warn_unmodelled(net: Any, case: str) -> None:
    """Say which elements of the network the simulation does not model (never drop them silently)."""
    notes = []
    for table in ("storage", "asymmetric_load", "asymmetric_sgen", "motor", "dcline", "ssc", "svc", "tcsc", "vsc"):
        df = getattr(net, table, None) if table in net else None
        n = int(df.in_service.astype(bool).sum()) if df is not None and len(df) and "in_service" in df else 0
        if n:
            notes.append(f"{n} {table}")
    if len(net.sgen):
        live = net.sgen[net.sgen.in_service.astype(bool)]
        if (live.q_mvar.abs() > 1e-9).any():
            notes.append("the reactive output of sgen (their P is kept)")
        if (live.p_mw < 0).any():
            notes.append(f"{int((live.p_mw < 0).sum())} sgen with negative p_mw")
        off = int(((live.p_mw > 0) & (live.scaling == 0)).sum())
        if off:  # e.g. mv_oberrhein(scenario="load"): the study case scales generation to 0
            notes.append(f"the output of {off} sgen with scaling 0 (their p_mw x scaling is 0)")
    if notes:
        warnings.warn(
            f"grid.case '{case}': left out of the power flow or without output: {', '.join(notes)}",
            RuntimeWarning,
            stacklevel=3,
        )


def sgen_kind(sgen_type: Any) -> str:
    """``pv``, ``wind`` or ``other`` from a pandapower/SimBench sgen ``type`` (PV, PV_MV, WP, WT, Wind_MV, ...)."""
    t = str(sgen_type or "").strip().lower()
    if "pv" in t or "solar" in t or "photovolt" in t:
        return "pv"
    if "wind" in t or t.startswith(("wp", "wt", "wka")):
        return "wind"
    return "other"


def _sgen_units(net: Any, pos: dict[Any, int], source: Any) -> list[DER]:
    """Every in-service sgen with p_mw >= 0 as a generation DER (see module docstring for its profile)."""
    if not len(net.sgen):
        return []
    own = {}
    if source is not None and source.sgen_p_mw is not None and source.sgen_index is not None:
        own = {int(i): source.sgen_p_mw[:, j] for j, i in enumerate(source.sgen_index)}
    units = []
    for idx, row in net.sgen.iterrows():
        if not bool(row.in_service) or not float(row.p_mw) >= 0:
            continue
        scaling = float(row.scaling) if "scaling" in row and np.isfinite(row.scaling) else 1.0
        kind = sgen_kind(row.get("type"))
        p_kw = float(row.p_mw) * scaling * 1000.0
        series = own[int(idx)] * scaling * 1000.0 if int(idx) in own else None
        profile = PV_PROFILE if kind == "pv" else WIND_PROFILE if kind == "wind" else np.ones(24)
        rating = max(p_kw, float(series.max())) if series is not None and len(series) else p_kw
        name = str(row.get("name")) if row.get("name") not in (None, "") and row.get("name") == row.get("name") else ""
        units.append(DER(name or f"sgen{idx}", kind, pos[row.bus], rating, profile=profile, series_kw=series))
    return units
