"""The co-simulation comparison of `eho-bilevel` with its baselines (the table the paper cannot give)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from experiments.eho_paper.tables import _paper
from markets.eho_bilevel import BilevelProblem
from sim.scenario import Scenario


# ----------------------------------------------------------------------------------------------- the run
def _case_metrics(prob: BilevelProblem, r: Any) -> dict[str, float]:
    m = prob.metrics(r)
    w = r.plugin_h - prob.sessions.arrival_h
    m["share_wait_below_1_5h"] = float((w < 1.5).mean()) if w.size else 1.0
    return m


def _peak_hour(prob: BilevelProblem, r: Any, tod: np.ndarray) -> np.ndarray:
    st = np.zeros((prob.n_stations, prob.n_slots))
    np.add.at(st, r.station, r.p_kw)
    return np.floor(tod[np.argmax(st, axis=1)]).astype(int)


def _sim_case(
    prob: BilevelProblem, result: Any, sc: Scenario, base_price: np.ndarray
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The paper's indicators from a co-simulation run (same definitions as `BilevelProblem.metrics`)."""
    k, s, evs, st = result.kpis, result.tables["steps"], result.tables["evs"], result.tables["stations"]
    ss = result.tables["station_step"]
    total = s["total_load_kw"].to_numpy()
    ev = s["ev_load_kw"].to_numpy()
    price = s["price_usd_per_mwh"].to_numpy() / 1000.0
    dt = sc.time.dt_min / 60.0
    w = evs["wait_min"].to_numpy() / 60.0
    cap = st["cap_kw"].to_numpy()
    p_st = ss.pivot(index="station", columns="step", values="p_kw").to_numpy()
    peak_hour = np.floor(s["tod_h"].to_numpy()[np.argmax(p_st, axis=1)]).astype(int)
    m = {
        "peak_kw": k["peak_load_kw"],
        "load_factor": k["load_factor"],
        "min_load_kw": float(total.min()),
        "load_variance_kw2": k["load_variance_kw2"],
        "max_deviation_kw": float(np.abs(total - total.mean()).max()),
        "wait_mean_h": float(w.mean()),
        "wait_median_h": float(np.median(w)),
        "wait_max_h": float(w.max()),
        "wait_std_h": float(w.std()),
        "share_wait_below_1_5h": float((w < 1.5).mean()),
        "dr_revenue_usd": float(((price - base_price) * ev).sum() * dt),
        "user_cost_usd": k["user_cost_usd"],
        "station_utilisation_min": float(st["utilisation"].min()),
        "station_utilisation_mean": k["station_utilisation_mean"],
        "station_utilisation_max": k["station_utilisation_max"],
        "station_capacity_compliance": float((p_st <= cap[:, None] + 1e-6).mean()),
        "energy_fulfilment": k["energy_fulfilment"],
        "dr_participation": float(evs["participates"].mean()),
        "n_reneged": k["n_reneged"],
    }
    return m, st["utilisation"].to_numpy(), peak_hour


# ----------------------------------------------------------------------------------------------- `evgrid run` path
EHO_VARIANTS: dict[str, list[tuple[str, Any]]] = {
    "uncontrolled": [("market.mechanism", "uncontrolled"), ("fleet.station_choice", 0)],
    "coordinated-own-station": [("fleet.station_choice", 0)],
    "coordinated": [],
}


def eho_sim_table(k: dict[str, dict[str, float]], paper: dict[str, Any]) -> pd.DataFrame:
    """Paper vs ours from the co-simulation KPIs alone (the `experiments.papers.run_paper` path; the full
    comparison with the bilevel model, the weight study and the search judgement is :func:`run_eho_paper`)."""
    unc, coo = k["uncontrolled"], k["coordinated"]
    rows = [
        ("peak demand, uncontrolled [kW]", "peak_uncontrolled_kw", unc["peak_load_kw"]),
        ("peak demand, optimised [kW]", "peak_optimised_kw", coo["peak_load_kw"]),
        ("load factor, uncontrolled", "load_factor_uncontrolled", unc["load_factor"]),
        ("load factor, optimised", "load_factor_optimised", coo["load_factor"]),
        ("mean wait, uncontrolled [h]", "wait_mean_uncontrolled_h", unc["mean_wait_min"] / 60.0),
        ("mean wait, optimised [h]", "wait_mean_optimised_h", coo["mean_wait_min"] / 60.0),
        (
            "mean wait, optimised, users kept at their own station [h]",
            "",
            k["coordinated-own-station"]["mean_wait_min"] / 60.0,
        ),
        ("max wait, optimised [h]", "wait_max_optimised_h", coo["max_wait_min"] / 60.0),
        ("load variance, uncontrolled [kW²]", "load_variance_uncontrolled_kw2", unc["load_variance_kw2"]),
        ("load variance, optimised [kW²]", "load_variance_optimised_kw2", coo["load_variance_kw2"]),
        ("EV user cost, uncontrolled [$/day]", "user_cost_uncontrolled_usd", unc["user_cost_usd"]),
        ("EV user cost, optimised [$/day]", "user_cost_optimised_usd", coo["user_cost_usd"]),
        ("energy fulfilment, optimised", "energy_fulfilment", coo["energy_fulfilment"]),
        (
            "station utilisation, optimised (mean)",
            "station_utilisation_optimised_mean",
            coo["station_utilisation_mean"],
        ),
    ]
    return pd.DataFrame([{"metric": label, "paper": _paper(paper, key), "ours": ours} for label, key, ours in rows])


SIM_NOTE = (
    "Co-simulation: following users are redirected at arrival to the least busy of their station and its two "
    "nearest (`fleet.station_choice = 2`, the paper's advice to redirect users); kept at their own station, the "
    "optimised case shifts load by holding ports longer and waits rise instead. The `bilevel/` folder holds the "
    "full comparison (the bilevel model with and without station choice, Tables 4-11, the weight study and EHO "
    "judged against DE, random search and an exact optimum)."
)
