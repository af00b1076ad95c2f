"""Vehicle models from published specifications: ``[fleet.groups.vehicles]``.

Two tables ship in ``agents/data/vehicles/`` (copied from the MIT-licensed EV2Gym; see ``ATTRIBUTION.md`` there):
``ev2gym`` (the 13 most registered battery-electric models in the Netherlands; none discharges) and ``ev2gym-v2g``
(8 V2G-capable models of 2024). Per model we use the battery capacity [kWh], the AC charging power limit [kW] (the
EV draws at most the smaller of it and the charge point's rating), the AC discharging power limit [kW] (0: the model
cannot discharge) and the number of registrations (the draw's weights). The files are JSON: read, never executed.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data" / "vehicles"
TABLES: dict[str, str] = {"ev2gym": "ev_specs.json", "ev2gym-v2g": "ev_specs_v2g_enabled2024.json"}


@dataclass(frozen=True)
class VehicleTable:
    """One table, one entry per model (arrays in the file's order).

    Attributes:
        name: model names.
        battery_kwh: usable battery capacity [kWh].
        ac_charge_kw: maximum AC charging power [kW].
        ac_discharge_kw: maximum AC discharging power [kW] (0 = no V2G).
        registrations: registered vehicles (the draw's weights) [-].
    """

    name: tuple[str, ...]
    battery_kwh: np.ndarray
    ac_charge_kw: np.ndarray
    ac_discharge_kw: np.ndarray
    registrations: np.ndarray


@cache
def load(table: str) -> VehicleTable:
    """The table ``table`` (one of `TABLES`)."""
    with open(DATA_DIR / TABLES[table], encoding="utf-8") as f:
        raw: dict[str, dict[str, float]] = json.load(f)

    def col(key: str) -> np.ndarray:
        a = np.array([float(v[key]) for v in raw.values()])
        a.setflags(write=False)
        return a

    return VehicleTable(
        tuple(raw),
        col("battery_capacity"),
        col("max_ac_charge_power"),
        col("max_ac_discharge_power"),
        col("number_of_registrations"),
    )


def check_models(table: str, models: list[str] | str) -> None:
    """Raise ValueError (one line naming the model, the table and what is allowed) for a model not in the table."""
    if models == "all":
        return
    names = load(table).name
    for m in models:
        if m not in names:
            near = difflib.get_close_matches(m, names, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise ValueError(f"model '{m}' is not in table '{table}'; allowed: {', '.join(names)}{hint}")


def draw(
    rng: np.random.Generator, table: str, models: list[str] | str, weights: str, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Models of ``n`` EVs drawn from ``rng``: (model index into the table, battery [kWh], AC charging limit [kW],
    AC discharging limit [kW])."""
    t = load(table)
    rows = np.arange(len(t.name)) if models == "all" else np.array([t.name.index(m) for m in models])
    w = t.registrations[rows] if weights == "registrations" else np.ones(len(rows))
    pick = rows[rng.choice(len(rows), size=n, p=w / w.sum())] if n else np.zeros(0, int)
    return pick, t.battery_kwh[pick], t.ac_charge_kw[pick], t.ac_discharge_kw[pick]
