"""Year-long element profiles (SimBench): checks that every element has one, and the station-placement rule.

`check_element_profiles` refuses a net in which an in-service load or static generator names no profile, or one
that ``net.profiles`` lacks: ``simbench.get_absolute_values`` would hold such an element flat at its ``p_mw`` (or
raise a ValueError without naming the element), and a flat profile is a silently wrong answer.

`station_buses_by_energy` is the rule by which the shipped SimBench scenarios place their stations
(``experiments/scenarios/simbench-*.toml``; docs/grids.md):

1. the energy of a load bus is the annual energy of its loads' own profiles, ``Σ_t P_t · Δt`` [MWh];
2. a load bus belongs to the **feeder** it hangs from: the connected part of the network (closed switches only,
   transformers left out) that remains after removing the substation buses (the low-voltage side of every
   transformer; the external grid's bus where there is none); a load bus on a substation bus is its own feeder;
3. feeders are ranked by their total load energy, buses within a feeder by their energy (ties: lower bus index);
4. stations go round-robin over the feeders: the largest bus of each feeder in feeder order, then the second
   largest of each, …, until ``n`` buses are chosen.

So the stations sit where the most energy is drawn, yet every feeder gets its share before any feeder gets two.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ProfileError(ValueError):
    """An element's profile is missing; the message is one line naming the element."""


def _label(net: Any, element: str, idx: Any) -> str:
    row = net[element].loc[idx]
    name = row.get("name")
    named = f" '{name}'" if isinstance(name, str) and name else ""
    return f"{element} {idx}{named} at bus {int(row.bus)}"


def check_element_profiles(net: Any) -> None:
    """Every in-service load and sgen of ``net`` names a profile that ``net.profiles`` holds.

    Loads need ``<profile>_pload`` and ``<profile>_qload`` in ``net.profiles["load"]``; static generators need
    ``<profile>`` in ``net.profiles["renewables"]`` or ``net.profiles["powerplants"]`` (as SimBench looks them up).

    Raises:
        ProfileError: one line naming the first element without a usable profile (and how many more there are).
    """
    profiles = net.profiles if "profiles" in net else {}
    problems: list[str] = []
    suffixes: tuple[str, ...]
    for element in ("load", "sgen"):
        df = net[element]
        if not len(df):
            continue
        live = df.index[df.in_service.astype(bool)]
        if element == "load":
            table = profiles.get("load")
            have = set(table.columns) if table is not None else set()
            suffixes = ("_pload", "_qload")
            where = "net.profiles['load']"
        else:
            have = set()
            for key in ("renewables", "powerplants"):
                if profiles.get(key) is not None:
                    have |= set(profiles[key].columns)
            suffixes = ("",)
            where = "net.profiles['renewables'/'powerplants']"
        for idx in live:
            name = df.at[idx, "profile"] if "profile" in df else None
            if not isinstance(name, str) or not name.strip():
                problems.append(
                    f"{_label(net, element, idx)} has no element profile ({element}.profile is empty; "
                    "SimBench would hold it flat at its p_mw)"
                )
                continue
            lacking = [name + s for s in suffixes if name + s not in have]
            if lacking:
                problems.append(
                    f"{_label(net, element, idx)} names profile '{name}' but {where} has no column "
                    f"{', '.join(repr(c) for c in lacking)}"
                )
    if problems:
        more = f" (and {len(problems) - 1} more element(s))" if len(problems) > 1 else ""
        raise ProfileError(problems[0] + more + "; allowed: every in-service load and sgen names one of its profiles")


def feeders(net: Any) -> dict[int, int]:
    """Feeder number of every bus (pandapower index → 0, 1, …; see module docstring, rule 2).

    Substation buses map to -1. Feeders are numbered in order of their smallest bus index.
    """
    import networkx as nx
    import pandapower.topology as top

    roots = set(int(b) for b in net.trafo.lv_bus) if len(net.trafo) else set(int(b) for b in net.ext_grid.bus)
    graph = top.create_nxgraph(net, respect_switches=True, include_trafos=False)
    graph.remove_nodes_from(roots)
    comps = sorted((sorted(int(b) for b in c) for c in nx.connected_components(graph)), key=lambda c: c[0])
    out = {b: -1 for b in roots}
    for k, comp in enumerate(comps):
        out.update({b: k for b in comp})
    return out


def load_bus_energy_mwh(net: Any, load_p_mw: np.ndarray, load_index: np.ndarray, step_min: float) -> dict[int, float]:
    """Annual energy [MWh] of every load bus: its loads' profiles ``load_p_mw`` (n_t × n_load, columns
    ``load_index``) summed over the year × the step [h]."""
    e = load_p_mw.sum(axis=0) * step_min / 60.0
    out: dict[int, float] = {}
    for j, idx in enumerate(load_index):
        b = int(net.load.at[idx, "bus"])
        out[b] = out.get(b, 0.0) + float(e[j])
    return out


def station_buses_by_energy(
    net: Any, load_p_mw: np.ndarray, load_index: np.ndarray, n: int, step_min: float = 15.0
) -> list[int]:
    """The ``n`` station buses (pandapower indices) by the rule of the module docstring, in the order chosen."""
    energy = load_bus_energy_mwh(net, load_p_mw, load_index, step_min)
    feeder_of = feeders(net)
    groups: dict[int, list[int]] = {}
    for b in energy:
        f = feeder_of.get(b, -1)
        key = f if f >= 0 else -1 - b  # a load on a substation bus is a feeder of its own
        groups.setdefault(key, []).append(b)
    ranked = [sorted(bs, key=lambda b: (-energy[b], b)) for bs in groups.values()]
    ranked.sort(key=lambda bs: (-sum(energy[b] for b in bs), bs[0]))
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(n, len(energy)):
        for bs in ranked:
            if depth < len(bs) and len(chosen) < n:
                chosen.append(bs[depth])
        depth += 1
    return chosen
