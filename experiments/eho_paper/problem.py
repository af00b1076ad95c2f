"""The bilevel problem of a scenario's day, the small exactly-solvable instance, and the searches compared on it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from grids.network import feeder_neighbours
from markets.eho_bilevel import BilevelProblem, Sessions
from sim.scenario import Scenario

SCENARIO = "eho-bilevel-10stations"


def problem_from_scenario(
    sc: Scenario,
    *,
    reach: int = 0,
    weights: tuple[float, float, float] | None = None,
    seed: int | None = None,
    redirect: str = "followers",
) -> tuple[BilevelProblem, dict[str, Any]]:
    """The bilevel problem of a scenario's day: its EVs (drawn as the simulation draws them), stations, base load
    and tariff; the mechanism's parameters from ``[market.params.eho-bilevel]``.

    Args:
        sc: the scenario (one day at hourly steps is what the paper models; other steps work too).
        reach: how many other stations (nearest on the feeder) a following user would accept; 0 = own only.
        weights: (α1, α2, α3); default from the scenario.
        seed: overrides the scenario's seed.
        redirect: ``"followers"`` (only users who follow the program may change station) or ``"all"`` (users who
            do not follow are redirected too, to the station where they get a port soonest); see `BilevelProblem`.

    Returns:
        (problem, context) with the fleet, station table, time of day per slot and the base load.
    """
    from sim.model import CoSimulation, tariff

    m = CoSimulation(sc, seed=seed)
    try:
        f, st = m.fleet, m.station_table
        dt_h = m.dt_min / 60.0
        base_kw = m.base_p_kw.sum(axis=1)
        price = tariff(sc, m.tod_h, base_kw) / 1000.0
        p = dict(sc.market.params.get("eho-bilevel", {}))
        need = np.maximum(f.soc_target - f.soc_arrival, 0.0) * f.battery_kwh
        sessions = Sessions(
            arrival_h=f.arrival_min / 60.0,
            departure_h=f.departure_min / 60.0,
            need_kwh=need,
            p_max_kw=f.p_max_kw,
            station=f.station.astype(int),
            eta_ch=f.eta_ch,
            follows=f.participates,
            elasticity=np.minimum(f.elasticity, 0.0),
        )
        alts = feeder_neighbours(m.network.net, st.bus, reach) if reach > 0 else None
        w = weights or (p.get("alpha1", 0.6), p.get("alpha2", 0.3), p.get("alpha3", 0.1))
        grid_max = float(p.get("grid_max_kw", 0.0))
        prob = BilevelProblem(
            sessions,
            dt_h=dt_h,
            base_price_usd_per_kwh=price,
            base_load_kw=base_kw,
            ports=st.ports,
            station_cap_kw=st.cap_kw,
            slot_period=np.floor(m.tod_h + 1e-9).astype(int) % 24,
            alternatives=alts,
            weights=w,
            delta=p.get("delta", 1.0),
            epsilon=p.get("epsilon", 0.25),
            price_bounds=(p.get("price_min", 0.8), p.get("price_max", 2.0)),
            limit_bounds=(p.get("limit_min_kw", 50.0), p.get("limit_max_kw", 150.0)),
            release_when_full=st.release_when_full,
            grid_max_kw=grid_max if grid_max > 0 else np.inf,
            dr_min_kwh=p.get("dr_min_kwh", 0.0),
            min_fulfilment=p.get("min_fulfilment", 0.95),
            max_wait_h=p.get("max_wait_h", 0.0) or np.inf,
            penalty=p.get("penalty", 10.0),
            redirect=redirect,
        )
        ctx = {
            "tod_h": m.tod_h.copy(),
            "base_kw": base_kw,
            "station_bus": st.bus.copy(),
            "params": p,
            "alternatives": alts,
            "n_evs": len(f),
        }
    finally:
        m.close()
    return prob, ctx


# ----------------------------------------------------------------------------------------------- judging
def small_instance(weights: tuple[float, float, float] = (0.6, 0.3, 0.1), epsilon: float = 0.25) -> BilevelProblem:
    """A small bilevel instance whose exact optimum `exact_upper_level` finds: 2 EVs queueing for one port over
    5 hourly slots, base prices 0.12–0.17 $/kWh, one price multiplier per slot."""
    bp = np.array([0.15, 0.17, 0.14, 0.12, 0.13])
    s = Sessions(arrival_h=[0.0, 0.4], departure_h=[5.0, 5.0], need_kwh=[12.0, 9.0], p_max_kw=7.0, station=0)
    return BilevelProblem(
        s,
        dt_h=1.0,
        base_price_usd_per_kwh=bp,
        base_load_kw=[60.0, 90.0, 70.0, 40.0, 30.0],
        ports=[1],
        station_cap_kw=[100.0],
        slot_period=np.arange(5),
        weights=weights,
        epsilon=epsilon,
    )


def compare_searches(
    prob: BilevelProblem,
    *,
    seeds: list[int],
    n_elephants: int = 50,
    n_iter: int = 50,
    eho_kw: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """EHO, DE and random search at the same number of evaluations, per seed: objective, evaluations, time."""
    from markets.eho_bilevel import solve

    rows: list[dict[str, Any]] = []
    hist: dict[str, list[np.ndarray]] = {}
    budget = n_elephants * (n_iter + 1)
    for method in ("eho", "de", "random"):
        hist[method] = []
        for sd in seeds:
            out = solve(
                prob,
                method=method,
                n_elephants=n_elephants,
                n_iter=n_iter,
                n_evals=budget if method != "eho" else None,
                seed=sd,
                **(eho_kw or {}),
            )
            rows.append(
                {
                    "method": method,
                    "seed": sd,
                    "objective": out["objective"],
                    "n_evals": out["n_evals"],
                    "wall_time_s": out["wall_time_s"],
                }
            )
            hist[method].append(out["history"])
    return pd.DataFrame(rows), hist
