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

Line ratings: Baran & Wu give none (pandapower's case33bw carries 99999 kA). Unless told otherwise every line gets
``line_max_i_ka`` (default 0.4 kA ≈ 8.8 MVA at 12.66 kV, the substation rating), so line loading is meaningful;
pass ``line_max_i_ka=None`` to keep the file's ratings.

Load profiles: the papers give their daily curves only as figures, so the profiles below are synthetic shapes of
the kinds the papers describe (`002_…` §2.1: residential evening peak, commercial day peak, flatter industrial),
scaled so that the 33-bus system curve spans the stated DLF range 0.52–1.00. Values are hourly levels: hour ``h``
holds over ``[h, h+1)``.
"""

from __future__ import annotations

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
        """pandapower indices of the load buses in a zone (``"all"`` = every bus with load)."""
        loaded = self.base_p_kw > 0
        if zone == "all":
            return np.nonzero(loaded)[0]
        return np.nonzero(loaded & (self.zone == zone))[0]

    def load_kw(self, tod_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Non-EV load per bus at the given times of day: (P [kW], Q [kVAr]), each shape (n_times, n_bus)."""
        hour = (np.floor(np.asarray(tod_h, float)) % 24).astype(int)
        factor = np.ones((hour.size, self.n_bus))
        for z in np.unique(self.zone):
            cols = self.zone == z
            factor[:, cols] = self.profiles[z][hour][:, None]
        return factor * self.base_p_kw, factor * self.base_q_kvar

    def renewable_kw(self, tod_h: np.ndarray) -> np.ndarray:
        """Available output of each PV/wind DER at the given times: shape (n_times, n_renewables) [kW]."""
        hour = (np.floor(np.asarray(tod_h, float)) % 24).astype(int)
        ren = [d for d in self.ders if d.kind in ("pv", "wind")]
        if not ren:
            return np.zeros((hour.size, 0))
        rows = []
        for d in ren:
            assert d.profile is not None, f"{d.kind} unit without a profile"  # builders give every PV/wind unit one
            rows.append(d.profile[hour] * d.p_max_kw)
        return np.stack(rows, axis=1)

    @property
    def renewables(self) -> list[DER]:
        return [d for d in self.ders if d.kind in ("pv", "wind")]

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
    """For each station, itself and the ``reach`` other stations nearest along the feeder (in-service lines, hops;
    ties by station index)."""
    n = len(net.bus)
    adj: list[list[int]] = [[] for _ in range(n)]
    for fb, tb, ok in zip(net.line.from_bus, net.line.to_bus, net.line.in_service):
        if ok:
            adj[int(fb)].append(int(tb))
            adj[int(tb)].append(int(fb))
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
    load_profile: str = "zonal",
    load_scale: float = 1.0,
    line_max_i_ka: float | None = 0.4,
    v_min_pu: float = 0.95,
    v_max_pu: float = 1.05,
    max_line_loading_percent: float = 100.0,
    substation_mva: float = 8.0,
    max_trafo_loading_percent: float = 100.0,
    dg_cost_scale: float = 1.0,
) -> Network:
    """Build one of the papers' networks (see module docstring).

    Args:
        case: ``case33bw``, ``case33bw-dr``, ``case33bw-dlmp``, ``case118`` or ``file``.
        file: network file when ``case = "file"`` (``.json``, ``.m``, ``.mat``; pickles need ``--trust-pickle``).
        load_profile: ``"zonal"`` (R/C/I zones), ``"residential"`` (one residential curve) or ``"flat"``.
        load_scale: multiplies every base load.
        line_max_i_ka: thermal rating given to every line [kA]; None keeps the network's own.
        v_min_pu: lower voltage limit [pu].
        v_max_pu: upper voltage limit [pu].
        max_line_loading_percent: line loading limit [%].
        substation_mva: rating of the T–D interface [MVA].
        max_trafo_loading_percent: transformer loading limit [%] (recorded and enforced like line loading).
        dg_cost_scale: multiplies the DG cost coefficients A, B and C (sensitivity studies, `002_…` §3.2).
    """
    import pandapower.networks as pn

    citation = ""
    if case.startswith("case33bw"):
        net = pn.case33bw()
        citation = "M. E. Baran, F. F. Wu, 'Network reconfiguration in distribution systems for loss reduction "
        citation += "and load balancing', IEEE Trans. Power Delivery 4(2), 1989"
    elif case == "case118":
        net = pn.case118()
        citation = "IEEE 118-bus test system (pandapower case118, from MATPOWER)"
    elif case == "file":
        from grids.netfile import NetworkFileError, load_network_file

        try:
            net = load_network_file(file)
        except NetworkFileError as err:
            raise NetworkError(str(err)) from None
        citation = f"network file {Path(file).name}"
    else:
        raise NetworkError(f"grid.case: unknown '{case}'; allowed: case33bw, case33bw-dr, case33bw-dlmp, case118, file")

    if line_max_i_ka is not None and len(net.line):
        net.line["max_i_ka"] = float(line_max_i_ka)

    n_bus = len(net.bus)
    pos = {b: i for i, b in enumerate(net.bus.index)}
    base_p = np.zeros(n_bus)
    base_q = np.zeros(n_bus)
    loads = net.load[net.load.in_service]
    np.add.at(base_p, [pos[b] for b in loads.bus], (loads.p_mw * loads.scaling).to_numpy() * 1000 * load_scale)
    np.add.at(base_q, [pos[b] for b in loads.bus], (loads.q_mvar * loads.scaling).to_numpy() * 1000 * load_scale)

    # zonal: the papers' zones on the 33-bus feeder, else derived from the file's loads (grids/zones.py)
    from grids.zones import derive_zones

    zone = derive_zones(net, case).zone.astype(object) if load_profile == "zonal" else np.full(n_bus, load_profile)

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

    for d in ders:
        if d.kind == "dg":
            d.cost_a, d.cost_b, d.cost_c = (c * dg_cost_scale for c in (d.cost_a, d.cost_b, d.cost_c))
    # The simulation supplies every load through the power-flow arrays; the net keeps its loads as the record.
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
        substation_mva=substation_mva,
        max_trafo_loading_percent=max_trafo_loading_percent,
        citation=citation,
    )
