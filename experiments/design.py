"""Study designs: points of scenario overrides (dotted keys, aliases), grids, factorial and one-at-a-time designs."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.scenario import ScenarioError, parse_override

# Friendly parameter names → scenario paths (one name may set several paths).
ALIASES: dict[str, list[str]] = {
    "dr.participation": ["fleet.participation", "market.params.elasticity-dr.participation"],
    "dr.dr_max": ["market.params.elasticity-dr.dr_max"],
    "dr.elasticity": ["market.params.elasticity-dr.self_elasticity"],
    "ev.elasticity": ["market.params.elasticity-dr.self_elasticity", "fleet.groups.*.elasticity"],
    "ev.n": ["fleet.n_evs"],
    "dg.cost_scale": ["grid.dg_cost_scale"],
}


@dataclass(frozen=True)
class Point:
    """One parameter point of a study: its values and the scenario overrides that realise them."""

    index: int
    params: dict[str, Any]
    label: str = ""

    def overrides(self, n_groups: int) -> list[str]:
        return [o for key, value in self.params.items() for o in expand_override(key, value, n_groups)]


def _toml_literal(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return repr(float(value)) if isinstance(value, float) else str(value)


def expand_override(key: str, value: Any, n_groups: int) -> list[str]:
    """``--set`` strings for one parameter (aliases and ``fleet.groups.*`` expanded)."""
    paths = ALIASES.get(key, [key])
    out = []
    for path in paths:
        if path.endswith(".elasticity") and path.startswith("fleet.groups.*"):
            v = {"low": float(value), "high": float(value)}
        else:
            v = value
        targets = [path.replace("*", str(i)) for i in range(n_groups)] if "*" in path else [path]
        out += [f"{t}={_toml_literal(v)}" for t in targets]
    return out


def parse_grid(text: str) -> tuple[str, list[Any]]:
    """``key=v1,v2,v3`` or ``key=start:stop:count`` (inclusive linspace) → (key, values)."""
    path, raw = parse_override(text)
    key = ".".join(path)
    if isinstance(raw, str) and raw.count(":") == 2 and "," not in raw:
        try:
            a, b, n = raw.split(":")
            count = int(n)
            if count < 1:
                raise ValueError
            values = [round(float(v), 12) for v in np.linspace(float(a), float(b), count)]
        except ValueError:
            raise ScenarioError(f"--grid {text}: expected start:stop:count with count >= 1") from None
        return key, values
    if isinstance(raw, str):
        values = [parse_override(f"v={v.strip()}")[1] for v in raw.split(",") if v.strip()]
    elif isinstance(raw, (int, float)):  # a single TOML number, or "a,b" read as a string above
        values = [raw]
    elif isinstance(raw, list):
        values = raw
    else:
        values = [raw]
    if not values:
        raise ScenarioError(f"--grid {text}: no values")
    return key, values


def factorial(grids: list[tuple[str, list[Any]]]) -> list[Point]:
    """Full factorial design over the grids."""
    keys = [k for k, _ in grids]
    combos = itertools.product(*(v for _, v in grids)) if grids else [()]
    return [Point(i, dict(zip(keys, c)), ", ".join(f"{k}={v}" for k, v in zip(keys, c))) for i, c in enumerate(combos)]


def one_at_a_time(grids: list[tuple[str, list[Any]]]) -> list[Point]:
    """Point 0 is the scenario as written (baseline); then each parameter value alone."""
    pts = [Point(0, {}, "baseline")]
    for key, values in grids:
        for v in values:
            pts.append(Point(len(pts), {key: v}, f"{key}={v}"))
    return pts
