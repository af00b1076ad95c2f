"""Tariffs: the prices a market starts from, before any mechanism acts.

* :func:`tou_price` — a time-of-use price that follows the load shape (`002_…` eq. 2 and 4);
* :func:`starting_tariff` — a run's starting tariff per step: flat, a 24-hour table, or load-shaped per day.

Plain functions on arrays, so a mechanism (``elasticity-dr`` announces `tou_price` day-ahead) and the simulation
(the scenario's ``[prices]`` table) share one definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["tou_price", "starting_tariff", "TARIFFS"]

#: tariff kinds :func:`starting_tariff` knows
TARIFFS = ("flat", "load-shaped", "table")


def tou_price(load_kw: np.ndarray, rho_usd_per_mwh: float, plf_min: float, plf_max: float, shape: str) -> np.ndarray:
    """TOU price per slot that follows the load shape [$/MWh] (`002_…` eq. 2 and 4).

    Args:
        load_kw: forecast system load per slot [kW].
        rho_usd_per_mwh: base price ρ [$/MWh].
        plf_min: price level factor at the lowest load (``shape="affine"``).
        plf_max: price level factor at the peak load (``shape="affine"``).
        shape: ``"affine"`` maps ``[min L, max L]`` onto ``[plf_min, plf_max]``; ``"ratio"`` is ``L / max L``.
    """
    load = np.asarray(load_kw, float)
    peak = load.max()
    if shape == "ratio":
        plf = load / peak if peak > 0 else np.ones_like(load)
    else:
        span = peak - load.min()
        x = (load - load.min()) / span if span > 0 else np.full_like(load, 0.5)
        plf = plf_min + (plf_max - plf_min) * x
    return rho_usd_per_mwh * plf


def starting_tariff(
    kind: str,
    tod_h: np.ndarray,
    base_kw: np.ndarray,
    *,
    rho_usd_per_mwh: float,
    steps_per_day: int,
    plf_min: float = 0.75,
    plf_max: float = 1.35,
    table_usd_per_mwh: Sequence[float] = (),
) -> np.ndarray:
    """The starting tariff per step [$/MWh].

    Args:
        kind: ``"flat"`` (ρ every step), ``"table"`` (24 hourly prices by the step's hour of day) or
            ``"load-shaped"`` (:func:`tou_price`, affine, on each day's forecast load separately).
        tod_h: time of day of each step [h].
        base_kw: forecast system load per step [kW] (used by ``"load-shaped"``).
        rho_usd_per_mwh: base price ρ [$/MWh].
        steps_per_day: steps in a day (the load-shaped tariff is computed per day).
        plf_min, plf_max: price level factors of the load-shaped tariff.
        table_usd_per_mwh: the 24 hourly prices of ``"table"``.
    """
    tod_h = np.asarray(tod_h, float)
    hour = (np.floor(tod_h) % 24).astype(int)
    if kind == "flat":
        return np.full(len(tod_h), rho_usd_per_mwh)
    if kind == "table":
        if len(table_usd_per_mwh) != 24:
            raise ValueError(f"table_usd_per_mwh: needs 24 hourly values, got {len(table_usd_per_mwh)}")
        return np.asarray(table_usd_per_mwh, float)[hour]
    if kind != "load-shaped":
        raise ValueError(f"kind: unknown tariff '{kind}'; allowed: {', '.join(TARIFFS)}")
    out = np.empty(len(tod_h))
    spd = max(int(steps_per_day), 1)
    for s in range(0, len(tod_h), spd):
        out[s : s + spd] = tou_price(base_kw[s : s + spd], rho_usd_per_mwh, plf_min, plf_max, "affine")
    return out
