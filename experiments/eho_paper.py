"""`eho-bilevel-10stations`: Priolkar & Kunkolienkar (`004_…`) — the paper's tables beside ours, judged.

:func:`run_eho_paper` does, for one seed (everything on the same 50 EVs, drawn by the simulation's own fleet
generator from the scenario):

1. **The paper's model** — a deterministic day-ahead bilevel problem over the day's known sessions
   (`markets.eho_bilevel.BilevelProblem`) — in three cases: *uncontrolled* (full rate from plug-in at the EV's own
   station, base prices), *EHO* with every user at their own station (``fixed``), and *EHO* where following
   users may charge at one of the ``reach`` stations nearest to theirs on the feeder (``choice``; eq. 20 and the
   paper's "redirect EV users" advice). Tables 4, 5, 7, 8, 10 and 11 are printed for both EHO cases beside the
   paper's numbers.
2. **The closed loop** — the co-simulation (SimPy port queues, Mesa agents, AC power flow) run with
   ``uncontrolled`` and with the ``eho-bilevel`` mechanism, which plans day-ahead on a forecast of the day (it
   cannot see the draws) and then schedules each arriving EV as its best response. In the simulation an EV's
   station is fixed before it arrives, so this is the ``fixed`` case.
3. **Table 9** — the weight study over the paper's seven (α1, α2, α3), with the Pareto trade-off plotted.
4. **Judging the search** — EHO against SciPy differential evolution and random search at the same number of
   objective evaluations (several seeds), and against the exact optimum of a small instance (2 EVs, one port,
   5 hourly slots), found by enumerating every lower-level response region and solving one LP per region
   (`markets.eho_bilevel.exact_upper_level`).

Outputs under ``out_dir``: ``tables/*.csv`` and ``*.md``, ``plots/*.png``, ``paper_comparison.md/.csv``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from grids.network import feeder_neighbours
from markets.eho_bilevel import BilevelProblem, Sessions
from sim.scenario import Scenario, load_scenario

if TYPE_CHECKING:  # pragma: no cover
    from sim.result import RunResult

SCENARIO = "eho-bilevel-10stations"

# Table 9 of the paper: (α1, α2, α3) → DR benefit [$], grid stress [kW²], waiting time [h], fitness
TABLE9 = [
    ((0.8, 0.1, 0.1), 161.40, 2681.0, 1.81, 124.6),
    ((0.6, 0.3, 0.1), 148.30, 2406.0, 1.27, 132.1),
    ((0.4, 0.4, 0.2), 134.20, 2214.0, 0.94, 128.7),
    ((0.3, 0.3, 0.3), 120.80, 2380.0, 0.67, 118.9),
    ((0.5, 0.2, 0.4), 141.60, 2321.0, 1.04, 129.8),
    ((0.7, 0.2, 0.1), 156.80, 2509.0, 1.46, 130.2),
    ((0.4, 0.2, 0.4), 137.40, 2280.0, 0.81, 126.1),
]

# Table 7 of the paper: utilisation per station [%] (optimised)
TABLE7 = [86, 84, 92, 87, 96, 93, 91, 81, 79, 83]


def problem_from_scenario(
    sc: Scenario,
    *,
    reach: int = 0,
    weights: tuple[float, float, float] | None = None,
    seed: int | None = None,
) -> tuple[BilevelProblem, dict[str, Any]]:
    """The bilevel problem of a scenario's day: its EVs (drawn as the simulation draws them), stations, base load
    and tariff; the mechanism's parameters from ``[market.params.eho-bilevel]``.

    Args:
        sc: the scenario (one day at hourly steps is what the paper models; other steps work too).
        reach: how many other stations (nearest on the feeder) a following user would accept; 0 = own only.
        weights: (α1, α2, α3); default from the scenario.
        seed: overrides the scenario's seed.

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


# ----------------------------------------------------------------------------------------------- the paper's tables
def _paper(p: dict[str, Any], key: str) -> float:
    v = p.get(key)
    return float(v) if v is not None else float("nan")


def paper_tables(
    cases: dict[str, dict[str, float]],
    paper: dict[str, Any],
    util: dict[str, np.ndarray],
    peak_hour: dict[str, np.ndarray],
) -> dict[str, pd.DataFrame]:
    """Tables 4, 5, 7, 8, 10 and 11: the paper's numbers beside ours.

    Args:
        cases: metrics per case (``uncontrolled``, ``eho-choice``, ``eho-fixed``, ``sim-eho``; see
            `BilevelProblem.metrics`).
        paper: the scenario's ``[paper]`` table.
        util: station utilisation per case (shares).
        peak_hour: hour of day of each station's highest load, per case.
    """
    names = [c for c in ("uncontrolled", "eho-choice", "eho-fixed", "sim-uncontrolled", "sim-eho") if c in cases]

    def rows(spec: list[tuple[str, str | None, str | None, str, float]]) -> pd.DataFrame:
        out = []
        for label, pu, po, key, scale in spec:
            r = {
                "metric": label,
                "paper_uncontrolled": _paper(paper, pu) if pu else float("nan"),
                "paper_optimised": _paper(paper, po) if po else float("nan"),
            }
            for c in names:
                r[c] = cases[c].get(key, float("nan")) * scale
            out.append(r)
        return pd.DataFrame(out)

    t: dict[str, pd.DataFrame] = {}
    t["table4_wait"] = rows(
        [
            ("waiting time, mean [h]", "wait_mean_uncontrolled_h", "wait_mean_optimised_h", "wait_mean_h", 1.0),
            ("waiting time, median [h]", "wait_median_uncontrolled_h", "wait_median_optimised_h", "wait_median_h", 1.0),
            ("waiting time, maximum [h]", "wait_max_uncontrolled_h", "wait_max_optimised_h", "wait_max_h", 1.0),
            (
                "waiting time, standard deviation [h]",
                "wait_std_uncontrolled_h",
                "wait_std_optimised_h",
                "wait_std_h",
                1.0,
            ),
            ("EVs that waited < 1.5 h [%]", None, None, "share_wait_below_1_5h", 100.0),
        ]
    )
    t["table5_grid_stress"] = rows(
        [
            (
                "variance of load [kW²]",
                "load_variance_uncontrolled_kw2",
                "load_variance_optimised_kw2",
                "load_variance_kw2",
                1.0,
            ),
            (
                "max. deviation from the mean [kW]",
                "max_deviation_uncontrolled_kw",
                "max_deviation_optimised_kw",
                "max_deviation_kw",
                1.0,
            ),
            ("load factor", "load_factor_uncontrolled", "load_factor_optimised", "load_factor", 1.0),
        ]
    )
    t8 = rows(
        [
            ("DR revenue [$/day]", None, "dr_revenue_usd", "dr_revenue_usd", 1.0),
            (
                "cost for EV users [$/day]",
                "user_cost_uncontrolled_usd",
                "user_cost_optimised_usd",
                "user_cost_usd",
                1.0,
            ),
        ]
    )
    base_cost = cases["uncontrolled"]["user_cost_usd"]
    sav = {
        "metric": "total savings = user saving + DR revenue [$/day]",
        "paper_uncontrolled": float("nan"),
        "paper_optimised": 236.7,
    }
    for c in names:
        ref = cases["sim-uncontrolled"]["user_cost_usd"] if c.startswith("sim-") else base_cost
        sav[c] = 0.0 if c.endswith("uncontrolled") else ref - cases[c]["user_cost_usd"] + cases[c]["dr_revenue_usd"]
    t["table8_economics"] = pd.concat([t8, pd.DataFrame([sav])], ignore_index=True)
    util_rows = []
    for k in range(len(util["uncontrolled"])):
        r = {"station": k + 1, "paper_optimised_percent": TABLE7[k] if k < len(TABLE7) else float("nan")}
        for c in names:
            if c in util:
                r[f"{c}_percent"] = 100.0 * util[c][k]
                r[f"{c}_peak_hour"] = int(peak_hour[c][k])
        util_rows.append(r)
    t["table7_utilisation"] = pd.DataFrame(util_rows)
    t10 = rows(
        [
            ("peak demand [kW]", "peak_uncontrolled_kw", "peak_optimised_kw", "peak_kw", 1.0),
            ("load factor", "load_factor_uncontrolled", "load_factor_optimised", "load_factor", 1.0),
            ("waiting time, mean [h]", "wait_mean_uncontrolled_h", "wait_mean_optimised_h", "wait_mean_h", 1.0),
            (
                "grid stress (load variance) [kW²]",
                "load_variance_uncontrolled_kw2",
                "load_variance_optimised_kw2",
                "load_variance_kw2",
                1.0,
            ),
            ("revenue due to DR [$/day]", None, "dr_revenue_usd", "dr_revenue_usd", 1.0),
            ("EV user cost [$/day]", "user_cost_uncontrolled_usd", "user_cost_optimised_usd", "user_cost_usd", 1.0),
            ("station utilisation, lowest [%] (paper: 23 → 62)", None, None, "station_utilisation_min", 100.0),
            ("station utilisation, highest [%] (paper: 97 → 97)", None, None, "station_utilisation_max", 100.0),
            (
                "station utilisation, mean [%]",
                "station_utilisation_uncontrolled_mean",
                "station_utilisation_optimised_mean",
                "station_utilisation_mean",
                100.0,
            ),
        ]
    )
    t10.loc[t10.metric.str.startswith("station utilisation, mean"), ["paper_uncontrolled", "paper_optimised"]] *= 100.0
    t["table10_performance"] = t10
    t11 = rows(
        [
            ("energy fulfilment (threshold ≥ 95 %) [%]", None, "energy_fulfilment", "energy_fulfilment", 100.0),
            (
                "station capacity compliance (threshold 100 %) [%]",
                None,
                "station_capacity_compliance",
                "station_capacity_compliance",
                100.0,
            ),
            ("participation rate in DR (threshold ≥ 70 %) [%]", None, "dr_participation", "dr_participation", 100.0),
            ("waiting time, maximum (threshold ≤ 4 h) [h]", None, "wait_max_optimised_h", "wait_max_h", 1.0),
        ]
    )
    t11.loc[t11.index[:3], "paper_optimised"] *= 100.0
    t["table11_validation"] = t11
    return t


def _md(df: pd.DataFrame, fmt: str = "{:.3g}") -> str:
    cols = list(df.columns)
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if c in ("metric", "method", "case") else "---:" for c in cols) + "|",
    ]
    for r in df.itertuples(index=False):
        cells = []
        for v in r:
            if isinstance(v, (float, np.floating)):
                cells.append("–" if not np.isfinite(v) else (f"{v:,.1f}" if abs(float(v)) >= 100 else fmt.format(v)))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def _summary(df: pd.DataFrame, reference: float | None = None) -> pd.DataFrame:
    g = df.groupby("method", sort=False)
    out = g.agg(
        objective_mean=("objective", "mean"),
        objective_std=("objective", "std"),
        objective_best=("objective", "max"),
        n_evals=("n_evals", "mean"),
        wall_time_s=("wall_time_s", "mean"),
    ).reset_index()
    ref = reference if reference is not None else float(out.objective_best.max())
    out["gap_mean_to_reference"] = (ref - out.objective_mean) / abs(ref)
    out["gap_best_to_reference"] = (ref - out.objective_best) / abs(ref)
    return out


# ----------------------------------------------------------------------------------------------- plots
def _plots(out: Path, ctx: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    hours = ctx["tod_h"]
    x = np.arange(len(hours))
    labels = [f"{int(h):02d}" for h in hours]
    # 1. DR price profile
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xe = np.r_[x, x[-1] + 1]
    ax.step(xe, np.r_[ctx["base_price"], ctx["base_price"][-1]] * 1000, where="post", label="base price BP", color="k")
    for name, pr in ctx["prices"].items():
        ax.step(xe, np.r_[pr, pr[-1]] * 1000, where="post", label=f"DR price, {name}")
    ax.set(xlabel="hour of day", ylabel="price [$/MWh]", title="DR price profile (upper-level decision)")
    ax.set_xticks(x[::2], labels[::2])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "dr_price_profile.png", dpi=120)
    plt.close(fig)
    # 2. load profile before/after
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(x, ctx["base_kw"], "k:", label="non-EV load")
    for name, tot in ctx["loads"].items():
        ax.plot(x, tot, label=name)
    ax.set(xlabel="hour of day", ylabel="total load [kW]", title="Load profile: uncontrolled vs optimised")
    ax.set_xticks(x[::2], labels[::2])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "load_profile.png", dpi=120)
    plt.close(fig)
    # 3. wait distribution
    fig, ax = plt.subplots(figsize=(6, 3.5))
    waits = ctx["waits"]
    bins = np.arange(0, max(max((w.max() for w in waits.values()), default=1.0), 1.0) + 1.0, 1.0)
    ax.hist(list(waits.values()), bins=bins.tolist(), label=list(waits), rwidth=0.9)
    ax.set(xlabel="queue wait [h]", ylabel="EVs", title="Wait-time distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "wait_distribution.png", dpi=120)
    plt.close(fig)
    # 4. convergence
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method, (evals, curves) in ctx["convergence"].items():
        for i, (e, c) in enumerate(zip(evals, curves)):
            ax.plot(
                e,
                c,
                color={"eho": "C0", "de": "C1", "random": "C2"}[method],
                alpha=0.7,
                label=method if i == 0 else None,
            )
    ax.set(xlabel="objective evaluations", ylabel="best J (to maximise)", title="Convergence at equal budgets")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "convergence.png", dpi=120)
    plt.close(fig)
    # 5. station utilisation
    fig, ax = plt.subplots(figsize=(7, 3.5))
    util = ctx["util"]
    w = 0.8 / max(len(util), 1)
    for i, (name, u) in enumerate(util.items()):
        ax.bar(np.arange(len(u)) + 1 + (i - (len(util) - 1) / 2) * w, 100 * u, width=w, label=name)
    ax.plot(np.arange(len(TABLE7)) + 1, TABLE7, "k_", markersize=14, label="paper (optimised)")
    ax.set(xlabel="station", ylabel="port utilisation [%]", title="Station utilisation (share of port-hours)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "station_utilisation.png", dpi=120)
    plt.close(fig)
    # 6. weight study Pareto
    ws = ctx.get("weights")
    if ws is not None and len(ws):
        _weight_pareto(plt, out, ws)


def _pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (more revenue ``x`` and less ``y``), in order of ``x``."""
    pts = np.column_stack([x, y])
    front = [
        i
        for i, (rv, yv) in enumerate(pts)
        if not np.any((pts[:, 0] >= rv) & (pts[:, 1] <= yv) & ((pts[:, 0] > rv) | (pts[:, 1] < yv)))
    ]
    return np.array(sorted(front, key=lambda i: pts[i, 0]), int)


def _weight_pareto(plt: Any, out: Path, ws: pd.DataFrame) -> None:
    """``weight_pareto.png``: DR revenue against grid stress and against mean wait, per weight set and method.

    One colour scale (our mean wait [h], shared by both panels and both methods) with its colour bar in its own
    space; weight labels only on our Pareto-front points, staggered so that they do not overlap.
    """
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    norm = Normalize(float(ws["wait_mean_h"].min()), float(ws["wait_mean_h"].max()) or 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    panels = [
        (
            "load_variance_kw2",
            "paper_grid_stress_kw2",
            "grid stress (load variance) [kW²]",
            "DR revenue vs grid stress",
        ),
        ("wait_mean_h", "paper_wait_h", "mean queue wait [h]", "DR revenue vs mean wait"),
    ]
    sc = None
    for ax, (ours_y, py, ylabel, title) in zip(axes, panels):
        for method, mk in (("eho", "o"), ("de", "s")):
            d = ws[ws.method == method]
            sc = ax.scatter(
                d["dr_revenue_usd"],
                d[ours_y],
                c=d["wait_mean_h"],
                cmap="viridis",
                norm=norm,
                marker=mk,
                edgecolors="k",
                linewidths=0.4,
                zorder=3,
            )
        front = _pareto_front(ws["dr_revenue_usd"].to_numpy(float), ws[ours_y].to_numpy(float))
        f = ws.iloc[front]
        ax.plot(f["dr_revenue_usd"], f[ours_y], "k--", lw=0.8, zorder=2)
        for j, r in enumerate(f.itertuples()):  # staggered above/below the front
            ax.annotate(
                str(r.weights),
                (r.dr_revenue_usd, getattr(r, ours_y)),
                fontsize=7,
                xytext=(4, 8 if j % 2 == 0 else -12),
                textcoords="offset points",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
            )
        d = ws[ws.method == "eho"]
        ax.scatter(d["paper_dr_benefit_usd"], d[py], marker="x", color="r", zorder=4)
        ax.set(xlabel="DR revenue [$/day]", ylabel=ylabel, title=title)
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.grid(alpha=0.3)
    fig.legend(
        handles=[
            Line2D([], [], marker="o", ls="", mfc="w", mec="k", label="ours, EHO"),
            Line2D([], [], marker="s", ls="", mfc="w", mec="k", label="ours, DE (same budget)"),
            Line2D([], [], marker="x", ls="", color="r", label="paper (Table 9)"),
            Line2D([], [], ls="--", color="k", lw=0.8, label="our Pareto front (labels: weights)"),
        ],
        loc="outside lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    fig.colorbar(sc, ax=list(axes), label="our mean wait [h] (both panels)", pad=0.01)
    fig.savefig(out / "weight_pareto.png", dpi=120)
    plt.close(fig)


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


NOTES = """\
Reading the comparison (details in markets/eho_bilevel.py and experiments/eho_paper.py):

* Same day, same EVs: the 50 sessions are drawn once by the simulation's fleet generator; `uncontrolled` from
  the bilevel model and from the co-simulation agree to the last digit (same FIFO port queues).
* `eho-choice`: following users may charge at one of the two stations nearest to theirs (eq. 20, the paper's
  redirection advice) — the only lever by which coordination can cut queue waits below full-rate charging at
  one's own station. `eho-fixed` and `sim-eho` keep every EV at its station: there, shifting load means holding a
  port longer, and waits rise. `sim-eho` plans on a forecast of the day (the simulation shows the market no EV
  before it arrives) and then schedules each EV as its best response.
* User cost rises: eq. 6 makes DR revenue Σ(DP − BP)·P a transfer from users; with energy needs fixed (eq. 17)
  users cannot escape it. The paper's simultaneous DR revenue (+149 $) and user-cost fall (−88 $) would need
  users to save 237 $ by shifting, more than their whole bill at 0.12–0.17 $/kWh allows (50 × 10–50 kWh ≈
  1.5 MWh ≈ 220 $ a day); its 736 $ uncontrolled bill implies ≈ 5 MWh, three times Table 3's demand.
* The paper's waits (max 6.5 h uncontrolled) and utilisation come from an unstated number of ports; we chose 2
  per station (uncontrolled mean wait ≈ 2 h). Our maximum wait stays above the paper's 4-h threshold: the
  longest waits are at the busiest station (seed 2026: 9 of the 50 EVs drew station 10), and users there who do
  not follow the program are not redirected.
* Station limits (50–150 kW) never bind with 2 ports of 7 kW: that half of the decision vector is inert here.
* Judging: EHO as the paper specifies it (α 0.6, β 0.3, literal eq. 22 — the matriarch moves to β × the clan
  centre, i.e. towards the box's lower corner) ends far below SciPy's differential evolution at the same number
  of evaluations, and on the small instance below random search; DE comes within a few per cent of the exact
  optimum. The paper's claim that EHO finds "the globally competitive solution" is not borne out.
"""


def run_eho_paper(
    out_dir: str | Path,
    *,
    seed: int | None = None,
    quick: bool = False,
    plots: bool = True,
    scenario: str | Path = SCENARIO,
    reach: int = 2,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the `004_…` comparison and write tables, plots and the judgement of the search (module docstring).

    Args:
        out_dir: output directory (replaced).
        seed: overrides the scenario's seed (the EVs drawn, and the searches' seeds).
        quick: fewer EHO iterations (10), seeds (2) and no co-simulation plots — for tests and smoke runs.
        plots: write plots.
        scenario: shipped scenario name or TOML path.
        reach: stations (besides its own) a following user accepts in the ``eho-choice`` case.
        quiet: print nothing.

    Returns:
        dict of the tables (DataFrames) and the headline numbers.
    """
    from markets.eho_bilevel import exact_upper_level, solve
    from sim.model import CoSimulation, tariff

    t_start = time.perf_counter()
    sc = load_scenario(scenario, seed=seed)
    seed = sc.seed
    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    p = dict(sc.market.params.get("eho-bilevel", {}))
    n_el, n_it = int(p.get("n_elephants", 50)), int(p.get("n_iter", 50))
    if quick:
        n_it = 10
    eho_kw: dict[str, Any] = {
        "n_clans": int(p.get("n_clans", 5)),
        "alpha": float(p.get("eho_alpha", 0.6)),
        "beta": float(p.get("eho_beta", 0.3)),
        "n_elite": int(p.get("n_elite", 2)),
    }
    seeds = [seed + i for i in range(2 if quick else 5)]

    # 1. the paper's model: uncontrolled, EHO with station choice, EHO at fixed stations
    prob_c, ctx = problem_from_scenario(sc, reach=reach)
    prob_f, _ = problem_from_scenario(sc, reach=0)
    unc = prob_c.baseline.response
    t = time.perf_counter()
    sol_c = solve(prob_c, n_elephants=n_el, n_iter=n_it, seed=seed, **eho_kw)
    eho_wall = time.perf_counter() - t
    sol_f = solve(prob_f, n_elephants=n_el, n_iter=n_it, seed=seed, **eho_kw)
    j_c, d_c = prob_c.evaluate(sol_c["x"])
    j_f, d_f = prob_f.evaluate(sol_f["x"])
    r_c, r_f = d_c["response"], d_f["response"]
    t = time.perf_counter()
    n_ll = 200
    for _ in range(n_ll):
        prob_c.respond(sol_c["x"])
    ll_ms = (time.perf_counter() - t) / n_ll * 1000.0
    cases = {
        "uncontrolled": _case_metrics(prob_c, unc),
        "eho-choice": _case_metrics(prob_c, r_c),
        "eho-fixed": _case_metrics(prob_f, r_f),
    }
    tod = ctx["tod_h"]
    util = {
        "uncontrolled": prob_c.station_utilisation(unc),
        "eho-choice": prob_c.station_utilisation(r_c),
        "eho-fixed": prob_f.station_utilisation(r_f),
    }
    peak_hour = {
        "uncontrolled": _peak_hour(prob_c, unc, tod),
        "eho-choice": _peak_hour(prob_c, r_c, tod),
        "eho-fixed": _peak_hour(prob_f, r_f, tod),
    }

    # 2. the closed loop: the co-simulation with uncontrolled and eho-bilevel (same seed: same EVs)
    sims = {}
    base_price = None
    for name, mech in (("sim-uncontrolled", "uncontrolled"), ("sim-eho", "eho-bilevel")):
        from sim.scenario import validate

        data = sc.model_dump(mode="json")
        data["market"]["mechanism"] = mech
        if mech == "uncontrolled":  # no aggregator to redirect users: everyone queues at their own station
            data["fleet"]["station_choice"] = 0
        data["paper"] = {}
        data["name"] = f"{sc.name}-{mech}"
        v = validate(data)
        res = CoSimulation(v).run()
        if base_price is None:
            st = res.tables["steps"]
            base_price = tariff(v, st["tod_h"].to_numpy(), st["total_load_kw"].to_numpy()) / 1000.0
        sims[name] = res
        plotter: Callable[[RunResult, Path], object] | None = None
        if plots and not quick and sc.outputs.plots:
            from experiments.plots import plot_run

            plotter = plot_run
        res.write(out / name, plots=plotter, replace=True)
        cases[name], util[name], peak_hour[name] = _sim_case(prob_c, res, v, base_price)
    sim_info = sims["sim-eho"].kpis

    tables = paper_tables(cases, sc.paper, util, peak_hour)

    # 3. Table 9: the weight study (EHO as in the paper, and DE at the same budget)
    ws_rows = []
    for w, p_rev, p_var, p_wait, p_fit in TABLE9:
        pw, _ = problem_from_scenario(sc, reach=reach, weights=w)
        for method in ("eho", "de"):
            sol = solve(
                pw,
                method=method,
                n_elephants=n_el,
                n_iter=n_it,
                seed=seed,
                n_evals=None if method == "eho" else n_el * (n_it + 1),
                **(eho_kw if method == "eho" else {}),
            )
            j, d = pw.evaluate(sol["x"])
            m = pw.metrics(d["response"])
            ws_rows.append(
                {
                    "weights": ":".join(f"{a:g}" for a in w),
                    "method": method,
                    "objective": j,
                    "dr_revenue_usd": m["dr_revenue_usd"],
                    "load_variance_kw2": m["load_variance_kw2"],
                    "wait_mean_h": m["wait_mean_h"],
                    "peak_kw": m["peak_kw"],
                    "user_cost_usd": m["user_cost_usd"],
                    "paper_dr_benefit_usd": p_rev,
                    "paper_grid_stress_kw2": p_var,
                    "paper_wait_h": p_wait,
                    "paper_fitness": p_fit,
                }
            )
    weights = pd.DataFrame(ws_rows)
    # the lower-level weight ε (not in the paper) as a sensitivity
    eps_rows = []
    for eps in (0.1, 0.25, 0.5, 1.0):
        pe, _ = problem_from_scenario(sc, reach=reach)
        pe.epsilon = eps
        pe._base = None
        sol = solve(pe, n_elephants=n_el, n_iter=n_it, seed=seed, **eho_kw)
        m = pe.metrics(pe.evaluate(sol["x"])[1]["response"])
        eps_rows.append(
            {
                "epsilon_usd_per_h": eps,
                "objective": sol["objective"],
                "peak_kw": m["peak_kw"],
                "load_factor": m["load_factor"],
                "wait_mean_h": m["wait_mean_h"],
                "dr_revenue_usd": m["dr_revenue_usd"],
                "energy_fulfilment": m["energy_fulfilment"],
            }
        )
    eps_table = pd.DataFrame(eps_rows)

    # 4. judging the search: equal budgets on the paper problem, and the exact optimum of a small instance
    cmp_c, hist_c = compare_searches(prob_c, seeds=seeds, n_elephants=n_el, n_iter=n_it, eho_kw=eho_kw)
    cmp_f, _ = compare_searches(prob_f, seeds=seeds, n_elephants=n_el, n_iter=n_it, eho_kw=eho_kw)
    summ_c, summ_f = _summary(cmp_c), _summary(cmp_f)
    summ_c.insert(0, "problem", f"paper, station choice (reach {reach})")
    summ_f.insert(0, "problem", "paper, fixed stations")
    w1, w2, w3 = prob_c.weights  # eq. 9's (α1, α2, α3)
    small = small_instance(weights=(w1, w2, w3), epsilon=prob_c.epsilon)
    t = time.perf_counter()
    exact = exact_upper_level(small)
    exact_s = time.perf_counter() - t
    cmp_s, _ = compare_searches(small, seeds=seeds, n_elephants=20, n_iter=20, eho_kw={**eho_kw, "n_clans": 4})
    summ_s = _summary(cmp_s, reference=exact["objective"])
    summ_s.insert(0, "problem", "small (2 EVs, 1 port, 5 slots): gap to the exact optimum")
    search = pd.concat([summ_c, summ_f, summ_s], ignore_index=True)

    # write
    for name, df in {
        **tables,
        "table9_weights": weights,
        "epsilon_sensitivity": eps_table,
        "search_comparison": search,
        "search_runs": pd.concat(
            [cmp_c.assign(problem="choice"), cmp_f.assign(problem="fixed"), cmp_s.assign(problem="small")]
        ),
    }.items():
        df.to_csv(out / "tables" / f"{name}.csv", index=False)
    long = []
    for name, df in tables.items():
        if "metric" in df:
            long.append(df.assign(table=name))
    pd.concat(long, ignore_index=True).to_csv(out / "paper_comparison.csv", index=False)
    headline = {
        "eho_wall_time_s": eho_wall,
        "eho_n_evals": sol_c["n_evals"],
        "lower_level_ms_per_candidate": ll_ms,
        "objective_eho_choice": j_c,
        "objective_eho_fixed": j_f,
        "exact_small_objective": exact["objective"],
        "exact_small_n_lp": exact["n_lp"],
        "exact_small_time_s": exact_s,
        "gap_eho_to_best_other_choice": float(summ_c.set_index("method").loc["eho", "gap_mean_to_reference"]),
        "sim_market_wall_time_s": float(sim_info.get("time_market_s", float("nan"))),
        "wall_time_s": time.perf_counter() - t_start,
        "seed": seed,
        "quick": quick,
    }
    md = [
        f"# {sc.name}: paper vs ours (seed {seed}{', quick' if quick else ''})",
        "",
        f"Source: {sc.paper.get('source', '')}",
        "",
        "Cases: `uncontrolled` (full rate from plug-in, own station, base price), `eho-choice` (EHO; following "
        f"users may use one of the {reach} nearest other stations), `eho-fixed` (EHO; own station), "
        "`sim-uncontrolled` / `sim-eho` (the co-simulation, forecast-based day-ahead plan).",
        "",
    ]
    titles = {
        "table4_wait": "Table 4 — wait statistics [h]",
        "table5_grid_stress": "Table 5 — grid stress",
        "table7_utilisation": "Table 7 — station utilisation [%] and peak hour",
        "table8_economics": "Table 8 — economics",
        "table10_performance": "Table 10 — performance indicators",
        "table11_validation": "Table 11 — validation metrics",
    }
    for name, title in titles.items():
        md += [f"## {title}", "", _md(tables[name]), ""]
    md += [
        "## Table 9 — weight factors (ours: EHO and DE at the same budget; paper's numbers beside)",
        "",
        _md(weights),
        "",
        "## Lower-level weight ε (not given in the paper), EHO",
        "",
        _md(eps_table),
        "",
        "## Judging the search (objective J, maximised; gap = (reference − J) / |reference|; reference = best "
        "of all runs, or the exact optimum for the small instance)",
        "",
        _md(search),
        "",
        f"Exact optimum of the small instance: J* = {exact['objective']:.4f} ({exact['n_lp']} LPs, "
        f"{exact_s:.1f} s); J at its x through the kernel = {exact['objective_at_x']:.4f}.",
        "",
        f"EHO on the paper problem: {sol_c['n_evals']} evaluations in {eho_wall:.2f} s; lower level "
        f"{ll_ms:.3f} ms per candidate.",
        "",
        NOTES,
    ]
    (out / "paper_comparison.md").write_text("\n".join(md) + "\n")
    if plots:
        conv = {}
        for method, curves in hist_c.items():
            step = {
                "eho": n_el,
                "random": 50,
                "de": max(5, min(15, max(1, n_el * (n_it + 1) // (50 * prob_c.n_dim))) * prob_c.n_dim),
            }[method]
            conv[method] = ([step * (np.arange(len(c)) + 1) for c in curves], curves)
        _plots(
            out / "plots",
            {
                "tod_h": tod,
                "base_price": prob_c.base_price,
                "base_kw": ctx["base_kw"],
                "prices": {
                    "eho-choice": r_c.price_usd_per_kwh,
                    "eho-fixed": r_f.price_usd_per_kwh,
                    "sim-eho (forecast plan)": sims["sim-eho"].tables["steps"]["price_usd_per_mwh"].to_numpy() / 1000,
                },
                "loads": {
                    "uncontrolled": prob_c.base_load + unc.p_kw.sum(axis=0),
                    "eho-choice": prob_c.base_load + r_c.p_kw.sum(axis=0),
                    "eho-fixed": prob_f.base_load + r_f.p_kw.sum(axis=0),
                    "sim-eho": sims["sim-eho"].tables["steps"]["total_load_kw"].to_numpy(),
                },
                "waits": {
                    "uncontrolled": unc.plugin_h - prob_c.sessions.arrival_h,
                    "eho-choice": r_c.plugin_h - prob_c.sessions.arrival_h,
                    "eho-fixed": r_f.plugin_h - prob_f.sessions.arrival_h,
                },
                "convergence": conv,
                "util": {k: util[k] for k in ("uncontrolled", "eho-choice", "eho-fixed")},
                "weights": weights,
            },
        )
    if not quiet:
        print((out / "paper_comparison.md").read_text())
        print(f"results written to {out.resolve()}")
    return {
        **tables,
        "table9_weights": weights,
        "epsilon_sensitivity": eps_table,
        "search": search,
        "headline": headline,
        "cases": cases,
    }


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
