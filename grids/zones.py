"""Zones of a network's load buses (residential / commercial / industrial), from what the network itself says.

A zone picks the daily load curve of a bus (``grid.load_profile = "zonal"``) and where a station group given as a zone
(``stations.buses = "commercial"``) puts its stations. Zones are found in this order:

1. **Explicit** ``grid.zones = {residential = [...], commercial = [...], industrial = [...]}`` (bus numbers of the
   scenario, i.e. pandapower bus indices unless ``grid.bus_numbering = "paper"``): replaces everything below; buses
   it does not list are residential.
2. **The papers' zones** of the 33-bus feeder (``case33bw*``): `grids.network.ZONES_33`.
3. **Derived from the network's loads**, each in-service load classified by the first of these that names a zone:

   * its load profile (SimBench's ``load.profile``): BDEW standard profiles ``H0…`` households → residential,
     ``G0…G6`` trade and commerce → commercial, ``L0…L2`` agriculture → **residential** (farmsteads: the farm is the
     home the car is parked at, and the BDEW L curves peak morning and evening like households); SimBench's
     aggregated grids behind a transformer (``lv_*``, ``mv_*``) → residential, except ``*comm*`` → commercial;
     other profiles (``BL-H``, ``WB-H``, …) name no zone;
   * its name: the CIGRE benchmark convention ``Load R…`` residential, ``Load CI…`` commercial/industrial →
     **commercial**, ``Load C…`` commercial, ``Load I…`` industrial; or a word in it (``resid``, ``household``,
     ``commerc``, ``office``, ``shop``, ``industr``, …);
   * its ``load.type``, if it holds such a word (pandapower uses the column for the connection, ``wye``/``delta``,
     which names no zone).

   A bus takes the zone that carries most of its active load (ties: residential, commercial, industrial). A load
   bus none of whose loads names a zone is residential.
4. Otherwise every load bus is **residential**.

Positions: arrays here are indexed by the internal bus position (order of ``net.bus.index``), like every per-bus
array of `grids.network.Network`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ZONES = ("residential", "commercial", "industrial")

# CIGRE benchmark load names ("Load R1", "Load CI12", "Load C1", "Load I2"; TF C6.04.02)
_CIGRE_NAME = re.compile(r"^\s*load\s+(r|ci|c|i)\d+\s*$", re.IGNORECASE)
_CIGRE_ZONE = {"r": "residential", "ci": "commercial", "c": "commercial", "i": "industrial"}
# BDEW standard load profiles as SimBench names them ("H0-A", "G4-M", "L2-A")
_BDEW = re.compile(r"^\s*([hgl])\d", re.IGNORECASE)
_BDEW_ZONE = {"h": "residential", "g": "commercial", "l": "residential"}
# SimBench profiles of aggregated lower-voltage grids ("lv_semiurb4", "mv_comm")
_AGGREGATE = re.compile(r"^\s*(lv|mv|hv)_", re.IGNORECASE)
_WORDS = (
    ("industrial", ("industr",)),
    ("commercial", ("commerc", "gewerbe", "office", "shop", "retail", "business")),
    ("residential", ("resid", "household", "haushalt", "domestic", "home")),
)


@dataclass(frozen=True)
class BusZones:
    """Zone of every bus by internal position, and where it came from.

    Attributes:
        zone: zone name per bus position (``"residential"`` for buses without load too), shape (n_bus,).
        source: how the zones were found, for messages (e.g. ``"derived from the load names (18 of 18 loads name
            one)"``).
    """

    zone: np.ndarray
    source: str

    def counts(self, loaded: np.ndarray) -> str:
        """``"12 residential, 3 commercial, 0 industrial"`` over the buses where ``loaded`` is true."""
        return ", ".join(f"{int(((self.zone == z) & loaded).sum())} {z}" for z in ZONES)


def _word_zone(text: str) -> str | None:
    t = text.lower()
    for zone, words in _WORDS:
        if any(w in t for w in words):
            return zone
    return None


def profile_zone(profile: Any) -> str | None:
    """Zone named by a SimBench/BDEW load profile name, or None (see module docstring)."""
    if not isinstance(profile, str) or not profile.strip():
        return None
    m = _BDEW.match(profile)
    if m:
        return _BDEW_ZONE[m.group(1).lower()]
    if _AGGREGATE.match(profile):
        return "commercial" if "comm" in profile.lower() else "residential"
    return None


def name_zone(name: Any) -> str | None:
    """Zone named by a load's name (CIGRE convention or a zone word), or None."""
    if not isinstance(name, str) or not name.strip():
        return None
    m = _CIGRE_NAME.match(name)
    if m:
        return _CIGRE_ZONE[m.group(1).lower()]
    return _word_zone(name)


def type_zone(load_type: Any) -> str | None:
    """Zone named by a load's ``type`` (only zone words count: ``wye``/``delta`` name a connection), or None."""
    return _word_zone(load_type) if isinstance(load_type, str) else None


def derive_zones(net: Any, case: str = "") -> BusZones:
    """Zones of a pandapower net: the papers' for ``case33bw*``, else from its loads (see module docstring)."""
    ids = net.bus.index.to_numpy()
    pos = {int(b): i for i, b in enumerate(ids)}
    zone = np.full(len(ids), "residential", dtype=object)
    if case.startswith("case33bw"):
        from grids.network import ZONES_33

        for z, buses in ZONES_33.items():
            for b in buses:
                zone[pos[b - 1]] = z  # paper numbering
        return BusZones(zone.astype(str), "the papers' zones of the 33-bus feeder (ZONES_33)")
    loads = net.load[net.load["in_service"].astype(bool)] if len(net.load) else net.load
    if not len(loads):
        return BusZones(zone.astype(str), "none: the network has no loads")
    cols = {c: loads[c].tolist() if c in loads else [None] * len(loads) for c in ("profile", "name", "type")}
    found: dict[str, int] = {"profile": 0, "name": 0, "type": 0}
    weight = np.zeros((len(ids), len(ZONES)))
    p_mw = np.abs((loads["p_mw"] * loads["scaling"]).to_numpy(float))
    for k, b in enumerate(loads["bus"].to_numpy()):
        for key, fn in (("profile", profile_zone), ("name", name_zone), ("type", type_zone)):
            named_zone = fn(cols[key][k])
            if named_zone is not None:
                found[key] += 1
                # a load of 0 MW still names its bus's zone (tiny weight: it never outweighs a real load)
                weight[pos[int(b)], ZONES.index(named_zone)] += max(p_mw[k], 1e-12)
                break
    named = weight.sum(axis=1) > 0
    if not named.any():
        return BusZones(zone.astype(str), "none named by the network's loads, so every load bus is residential")
    zone[named] = np.array(ZONES, dtype=object)[np.argmax(weight[named], axis=1)]  # argmax: first of ties
    where = {"profile": "load profiles", "name": "load names", "type": "load types"}
    used = " and ".join(f"the {where[k]}" for k in ("profile", "name", "type") if found[k])
    return BusZones(zone.astype(str), f"derived from {used} ({sum(found.values())} of {len(loads)} loads name one)")


def explicit_zones(
    net: Any, zones: Mapping[Any, Sequence[int]], *, paper_numbering: bool = False, network_name: str = ""
) -> BusZones:
    """Zones given per bus (``grid.zones``); unlisted buses are residential.

    Args:
        net: the pandapower net.
        zones: zone name → bus numbers of the scenario.
        paper_numbering: the numbers are 1-based (``grid.bus_numbering = "paper"``): index = number − 1.
        network_name: how messages name the network (`network_label`).

    Raises:
        ValueError: an unknown zone, a bus number that is not a bus of the network, or a bus in two zones; the message
            names the field, the bus and the network (callers turn it into their error type).
    """
    ids = net.bus.index.to_numpy()
    pos = {int(b): i for i, b in enumerate(ids)}
    zone = np.full(len(ids), "residential", dtype=object)
    seen: dict[int, str] = {}
    for z, buses in zones.items():
        if z not in ZONES:
            raise ValueError(f"grid.zones: unknown zone '{z}'; allowed: {', '.join(ZONES)}")
        for b in buses:
            idx = int(b) - 1 if paper_numbering else int(b)
            if idx not in pos:
                raise ValueError(
                    f"grid.zones.{z}: bus {b} is not a bus of network {network_name or '?'} "
                    f"({'paper numbering 1..' if paper_numbering else 'pandapower indices '}"
                    f"{_range_text(ids, paper_numbering)})"
                )
            if b in seen and seen[b] != z:
                raise ValueError(f"grid.zones.{z}: bus {b} is also in zone '{seen[b]}'; a bus has one zone")
            seen[b] = z
            zone[pos[idx]] = z
    return BusZones(zone.astype(str), "grid.zones of the scenario")


def bus_zones(
    net: Any,
    case: str = "",
    zones: Mapping[Any, Sequence[int]] | None = None,
    *,
    paper_numbering: bool = False,
    network_name: str = "",
) -> BusZones:
    """The zones of a network: explicit ``zones`` if given (non-empty), else `derive_zones`."""
    if zones and any(len(v) for v in zones.values()):
        return explicit_zones(
            net, zones, paper_numbering=paper_numbering, network_name=network_name or network_label(case)
        )
    return derive_zones(net, case)


def network_label(case: str, file: str = "") -> str:
    """How messages name a network: ``'case33bw'``, or ``file 'net.json'`` for ``grid.case = "file"``."""
    if case == "file" and file:
        return f"file '{Path(file).name}'"
    return repr(case)


def _range_text(ids: np.ndarray, paper: bool) -> str:
    """Compact description of a network's bus indices for error messages."""
    if paper:
        return f"{len(ids)}"
    ids = np.sort(ids)
    contiguous = len(ids) and ids[-1] - ids[0] + 1 == len(ids)
    span = f"{ids[0]}..{ids[-1]}" if len(ids) else "none"
    return span if contiguous else f"{span}, {len(ids)} buses, not contiguous"
