"""ElaadNL charging-session distributions: the fleet source ``[[fleet.groups]] source = "elaadnl"``.

The tables (``agents/data/elaadnl/``, copied from the MIT-licensed EV2Gym; see ``ATTRIBUTION.md`` there) give, per
kind of charge point (``private``, ``public``):

* the **arrival time of day**: share of sessions [%] per 15-min slot, one table for weekdays (Monday–Friday) and one
  for weekends (Saturday, Sunday); a draw picks a slot by its share, then a time uniformly inside the slot;
* the **connection time** [h] and the **energy charged** [kWh]: each a quantile table, the value exceeded by
  0, 1, …, 100 % of sessions (one table for all days); a draw is inverse-transform sampling of that table, with
  linear interpolation between the percentage points.

The three are drawn independently of each other (the tables are marginals; the joint distribution is not
published). Randomness comes only from the numpy Generators the caller passes (the run's streams).

Calendar: simulated day ``c`` (0 = the day the run starts on) is day ``start_day + c`` of SimBench's profile year
2016 (`PROFILE_YEAR`; 1 January 2016 was a Friday), so ``grid.profile_start_day`` picks the weekday too.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data" / "elaadnl"
SEGMENTS: tuple[str, ...] = ("private", "public")  # the weekend table has no 'workplace' column
SLOT_H = 0.25  # the arrival tables' resolution [h]
PROFILE_YEAR = 2016  # SimBench's profile year: day 1 = Friday 1 January 2016


@dataclass(frozen=True)
class ElaadTables:
    """The ElaadNL tables, per segment.

    Attributes:
        arrival_weekday: segment → probability of each 15-min slot of the day on Monday–Friday, shape (96,), sums to 1.
        arrival_weekend: the same for Saturday and Sunday.
        pct: percentage of sessions exceeding the value, 0 … 100, shape (101,).
        connection_h: segment → connection time [h] exceeded by ``pct`` % of sessions, shape (101,), non-increasing.
        energy_kwh: segment → energy charged [kWh] exceeded by ``pct`` % of sessions, shape (101,), non-increasing.
    """

    arrival_weekday: dict[str, np.ndarray]
    arrival_weekend: dict[str, np.ndarray]
    pct: np.ndarray
    connection_h: dict[str, np.ndarray]
    energy_kwh: dict[str, np.ndarray]


def _read(name: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(header, numeric columns 1.. as a float array, first column) of one CSV file of `DATA_DIR`."""
    with open(DATA_DIR / name, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]
    return header, np.array([[float(x) for x in r[1:]] for r in body]), [r[0] for r in body]


@cache
def tables() -> ElaadTables:
    """Read and check the shipped tables (once per process).

    Raises:
        ValueError: a table does not have the shape and monotonicity described in the module docstring.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, name in (("weekday", "distribution-of-arrival.csv"), ("weekend", "distribution-of-arrival-weekend.csv")):
        header, vals, slots = _read(name)
        if len(slots) != 96 or slots[0] != "00:00" or slots[-1] != "23:45":
            raise ValueError(f"{name}: expected 96 quarter-hour rows 00:00 … 23:45")
        out[key] = {}
        for s in SEGMENTS:
            col = vals[:, header.index(s) - 1]
            if (col < 0).any() or abs(col.sum() - 100.0) > 1e-6:
                raise ValueError(f"{name}: column {s} must be shares [%] >= 0 summing to 100")
            out[key][s] = col / col.sum()
    pct: np.ndarray | None = None
    for key, name in (
        ("connection", "distribution-of-connection-time.csv"),
        ("energy", "distribution-of-energy-demand.csv"),
    ):
        header, vals, first = _read(name)
        p = np.array([float(x) for x in first])
        if not np.array_equal(p, np.arange(101.0)):
            raise ValueError(f"{name}: expected percentages 0, 1, …, 100 in the first column")
        pct = p
        out[key] = {}
        for s in SEGMENTS:
            col = vals[:, header.index(s) - 1]
            if (np.diff(col) > 0).any() or (col < 0).any():
                raise ValueError(f"{name}: column {s} must be non-negative and non-increasing")
            out[key][s] = col
    assert pct is not None
    return ElaadTables(out["weekday"], out["weekend"], pct, out["connection"], out["energy"])


def is_weekend(start_day: int, day: int) -> bool:
    """Whether simulated day ``day`` (0 = the run's first) of a run starting on day ``start_day`` of the profile year
    (1 = 1 January 2016) is a Saturday or Sunday."""
    date = dt.date(PROFILE_YEAR, 1, 1) + dt.timedelta(days=int(start_day) - 1 + int(day))
    return date.weekday() >= 5


def draw_arrival_tod_h(rng: np.random.Generator, segment: str, weekend: bool, n: int) -> np.ndarray:
    """``n`` arrival times of day [h] in [0, 24) from the weekday or weekend table of ``segment``."""
    t = tables()
    p = (t.arrival_weekend if weekend else t.arrival_weekday)[segment]
    slot = rng.choice(len(p), size=n, p=p)
    return (slot + rng.uniform(size=n)) * SLOT_H


def _quantile_draw(rng: np.random.Generator, values: np.ndarray, n: int) -> np.ndarray:
    # value(q) is exceeded by q % of sessions: with q ~ U(0, 100), P(X > value(q)) = q / 100 (inverse transform)
    return np.interp(rng.uniform(0.0, 100.0, size=n), tables().pct, values)


def draw_connection_h(rng: np.random.Generator, segment: str, n: int) -> np.ndarray:
    """``n`` connection times [h] (plug-in to plug-out) of ``segment``."""
    return _quantile_draw(rng, tables().connection_h[segment], n)


def draw_energy_kwh(rng: np.random.Generator, segment: str, n: int) -> np.ndarray:
    """``n`` session energies [kWh] (energy charged per session) of ``segment``."""
    return _quantile_draw(rng, tables().energy_kwh[segment], n)
