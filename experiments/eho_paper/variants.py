"""EHO without the origin bias, and redirection of users who do not follow (issue 17, part 3): the tables of
docs/eho.md, computed from the current code.

    python -m experiments.eho_paper.variants           # (re)write the tables in docs/eho.md and print them
    python -m experiments.eho_paper.variants --check   # exit 1 if docs/eho.md is stale

Two tables, every search at the same number of objective evaluations (50 elephants × (1 + 50) generations =
2 550; DE and random search get exactly that budget):

1. **The searches compared** — the paper's EHO (matriarch ``β·x_center``, α 0.6, β 0.3), the variant
   (``matriarch="best"``: ``x_best + β·(x_best − x_center)``, `markets.eho`) at the paper's β and at β = 1,
   SciPy's differential evolution and random search, on (a) the bilevel problem of the `004_…` reproduction
   (three versions: followers redirected, fixed stations, all users redirected) and (b) 10-D Sphere, Rastrigin,
   Rosenbrock and Ackley, each as usual (optimum at 0, Rosenbrock at 1) and *shifted* (optimum moved to a fixed
   point inside 80 % of the box), over several seeds: median [min – max].
2. **The `004_…` table** — peak, load factor, waits, fulfilment, DR revenue — for the paper, uncontrolled
   charging, and the paper's EHO, the variant and DE on the bilevel model (following users redirected, and all
   users redirected: ``BilevelProblem(redirect="all")``) and in the co-simulation (``eho-bilevel`` with
   ``eho_matriarch``, or ``search = "de"``), at the scenario's seed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.doc_blocks import markers, splice
from experiments.eho_paper.cosim import _sim_case
from experiments.eho_paper.problem import SCENARIO, problem_from_scenario

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "eho.md"
START, END = markers("eho-variants")

N_ELEPHANTS, N_ITER = 50, 50
BUDGET = N_ELEPHANTS * (N_ITER + 1)

# label → keyword arguments of `markets.eho_bilevel.solve` (EHO's n_clans 5 and n_elite 2 are the defaults)
SEARCHES: dict[str, dict[str, Any]] = {
    "EHO, paper (β·centre, β 0.3)": {"method": "eho", "matriarch": "origin", "alpha": 0.6, "beta": 0.3},
    "EHO, variant (best, β 0.3)": {"method": "eho", "matriarch": "best", "alpha": 0.6, "beta": 0.3},
    "EHO, variant (best, β 1)": {"method": "eho", "matriarch": "best", "alpha": 0.6, "beta": 1.0},
    "SciPy DE": {"method": "de"},
    "random search": {"method": "random"},
}
# the three searches of the 004 table: the paper's settings, the variant (β = 1), DE
TABLE_SEARCHES = ("EHO, paper (β·centre, β 0.3)", "EHO, variant (best, β 1)", "SciPy DE")


# ----------------------------------------------------------------------------------------------- test functions
def sphere(X: np.ndarray) -> np.ndarray:
    """Sphere, Σ x²; on (d,) or (n, d)."""
    return np.sum(X**2, axis=-1)


def rastrigin(X: np.ndarray) -> np.ndarray:
    """Rastrigin, 10·d + Σ (x² − 10·cos 2πx)."""
    return 10.0 * X.shape[-1] + np.sum(X**2 - 10.0 * np.cos(2.0 * np.pi * X), axis=-1)


def rosenbrock(X: np.ndarray) -> np.ndarray:
    """Rosenbrock, Σ 100·(x_{i+1} − x_i²)² + (1 − x_i)²; optimum at (1, …, 1)."""
    return np.sum(100.0 * (X[..., 1:] - X[..., :-1] ** 2) ** 2 + (1.0 - X[..., :-1]) ** 2, axis=-1)


def ackley(X: np.ndarray) -> np.ndarray:
    """Ackley (a = 20, b = 0.2, c = 2π)."""
    d = X.shape[-1]
    return (
        -20.0 * np.exp(-0.2 * np.sqrt(np.sum(X**2, axis=-1) / d))
        - np.exp(np.sum(np.cos(2.0 * np.pi * X), axis=-1) / d)
        + 20.0
        + np.e
    )


Objective = Callable[[np.ndarray], np.ndarray]

# name → (function, its optimum's coordinate, lower, upper): the usual boxes
FUNCTIONS: dict[str, tuple[Objective, float, float, float]] = {
    "Sphere": (sphere, 0.0, -5.12, 5.12),
    "Rastrigin": (rastrigin, 0.0, -5.12, 5.12),
    "Rosenbrock": (rosenbrock, 1.0, -5.0, 10.0),
    "Ackley": (ackley, 0.0, -32.768, 32.768),
}


def shifted(f: Objective, o: np.ndarray) -> Objective:
    """``x ↦ f(x − o)``: the optimum moved by ``o``."""
    return lambda X: f(np.asarray(X) - o)


def benchmark_functions(
    d: int = 10, shift_seed: int = 20150101
) -> list[tuple[str, Objective, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, vectorised objective, lower, upper, optimum) of every function as usual and shifted; a shifted
    function's optimum is drawn once (``shift_seed``), uniform in the central 80 % of its box. f* = 0 for all."""
    rng = np.random.default_rng(shift_seed)
    out = []
    for name, (f, x_star, lo, hi) in FUNCTIONS.items():
        mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        target = mid + rng.uniform(-0.8, 0.8, d) * half
        box = (np.full(d, lo), np.full(d, hi))
        out.append((name, f, *box, np.full(d, x_star)))
        out.append((f"{name}, shifted", shifted(f, target - x_star), *box, target))
    return out


# ----------------------------------------------------------------------------------------------- comparisons
def _scalar(f: Objective) -> Callable[[np.ndarray], float]:
    """``f`` for one point, returning a float (SciPy's DE calls point by point)."""
    return lambda x: float(f(x))


def compare_functions(seeds: list[int], d: int = 10) -> pd.DataFrame:
    """Best value found (f − f*, minimised) per function, search and seed, at `BUDGET` evaluations."""
    from markets import eho

    rows = []
    for name, f, lo, hi, _ in benchmark_functions(d):
        for label, kw in SEARCHES.items():
            for sd in seeds:
                if kw["method"] == "eho":
                    opts = {k: v for k, v in kw.items() if k != "method"}
                    r = eho.eho_minimize(
                        f, lo, hi, n_elephants=N_ELEPHANTS, n_iter=N_ITER, seed=sd, vectorized=True, **opts
                    )
                elif kw["method"] == "de":
                    r = eho.differential_evolution_budget(_scalar(f), lo, hi, n_evals=BUDGET, seed=sd)
                else:
                    r = eho.random_search(f, lo, hi, n_evals=BUDGET, seed=sd, vectorized=True)
                rows.append({"problem": name, "search": label, "seed": sd, "value": r.fun, "n_evals": r.n_evals})
    return pd.DataFrame(rows)


def _problems(sc: Any) -> dict[str, Any]:
    """The three bilevel problems of the scenario's day (the `004_…` reproduction)."""
    choice, _ = problem_from_scenario(sc, reach=2)
    fixed, _ = problem_from_scenario(sc, reach=0)
    every, _ = problem_from_scenario(sc, reach=2, redirect="all")
    return {
        "004 bilevel, followers redirected (J, max.)": choice,
        "004 bilevel, fixed stations (J, max.)": fixed,
        "004 bilevel, all users redirected (J, max.)": every,
    }


def compare_bilevel(probs: dict[str, Any], seeds: list[int]) -> pd.DataFrame:
    """Objective J (maximised) per bilevel problem (of :func:`_problems`), search and seed, at `BUDGET`
    evaluations."""
    from markets.eho_bilevel import solve

    rows = []
    for name, prob in probs.items():
        for label, kw in SEARCHES.items():
            for sd in seeds:
                budget = None if kw["method"] == "eho" else BUDGET
                out = solve(prob, n_elephants=N_ELEPHANTS, n_iter=N_ITER, n_evals=budget, seed=sd, **kw)
                rows.append(
                    {"problem": name, "search": label, "seed": sd, "value": out["objective"], "n_evals": out["n_evals"]}
                )
    return pd.DataFrame(rows)


def _cell(v: np.ndarray) -> str:
    """``median [min – max]``, 3 significant digits."""

    def g(x: float) -> str:
        return f"{x:.3g}".replace("e-0", "e-").replace("e+0", "e")

    return f"{g(float(np.median(v)))} [{g(float(v.min()))} – {g(float(v.max()))}]"


def search_table(runs: pd.DataFrame) -> list[str]:
    """Markdown: one row per problem, one column per search (median [min – max] over the seeds)."""
    labels = list(SEARCHES)
    lines = ["| problem | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    if (runs["n_evals"] != BUDGET).any():
        raise RuntimeError(f"a search used other than {BUDGET} evaluations")
    for problem, g in runs.groupby("problem", sort=False):
        cells = [_cell(g.loc[g.search == lab, "value"].to_numpy()) for lab in labels]
        lines.append(f"| {problem} | " + " | ".join(cells) + " |")
    return lines


# ----------------------------------------------------------------------------------------------- the 004 table
def _busiest(prob: Any) -> int:
    """The station most EVs call their own (lowest index on ties)."""
    return int(np.bincount(prob.sessions.station, minlength=prob.n_stations).argmax())


def _bilevel_case(prob: Any, kw: dict[str, Any], seed: int) -> dict[str, float]:
    """The `004_…` indicators of one search of one bilevel problem (EHO's seed = the scenario's)."""
    from markets.eho_bilevel import solve

    budget = None if kw["method"] == "eho" else BUDGET
    out = solve(prob, n_elephants=N_ELEPHANTS, n_iter=N_ITER, n_evals=budget, seed=seed, **kw)
    j, d = prob.evaluate(out["x"])
    r = d["response"]
    m = prob.metrics(r)
    wait = r.plugin_h - prob.sessions.arrival_h
    return {**m, "objective": j, "wait_max_busiest_h": float(wait[prob.sessions.station == _busiest(prob)].max())}


def _cosim_case(sc: Any, prob: Any, params: dict[str, Any]) -> dict[str, float]:
    """The `004_…` indicators of the co-simulation with `eho-bilevel` and ``params`` over the scenario's."""
    from sim.model import CoSimulation, tariff
    from sim.scenario import validate

    data = sc.model_dump(mode="json")
    data["market"]["mechanism"] = "eho-bilevel"
    data["market"]["params"].setdefault("eho-bilevel", {}).update(params)
    data["paper"] = {}
    v = validate(data)
    res = CoSimulation(v).run()
    st = res.tables["steps"]
    base_price = tariff(v, st["tod_h"].to_numpy(), st["total_load_kw"].to_numpy()) / 1000.0
    m, _, _ = _sim_case(prob, res, v, base_price)
    evs = res.tables["evs"]
    home = prob.sessions.station[evs["ev"].to_numpy(int)]
    busiest = evs["wait_min"].to_numpy()[home == _busiest(prob)] / 60.0
    return {**m, "objective": float("nan"), "wait_max_busiest_h": float(busiest.max())}


def _sim_params(kw: dict[str, Any]) -> dict[str, Any]:
    """`eho-bilevel` parameters that select a search of `SEARCHES`."""
    if kw["method"] != "eho":
        return {"search": kw["method"]}
    return {"search": "eho", "eho_matriarch": kw["matriarch"], "eho_alpha": kw["alpha"], "eho_beta": kw["beta"]}


def cases_004(sc: Any, probs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Case label → the `004_…` indicators: uncontrolled, then each of `TABLE_SEARCHES` on the bilevel model
    (followers redirected; all users redirected; ``probs`` of :func:`_problems`) and in the co-simulation
    (followers redirected)."""
    choice = probs["004 bilevel, followers redirected (J, max.)"]
    every = probs["004 bilevel, all users redirected (J, max.)"]
    unc = choice.baseline.response
    wait = unc.plugin_h - choice.sessions.arrival_h
    cases = {
        "ours, uncontrolled": {
            **choice.metrics(unc),
            "objective": choice.objective(unc)[0],
            "wait_max_busiest_h": float(wait[choice.sessions.station == _busiest(choice)].max()),
        }
    }
    for label in TABLE_SEARCHES:
        cases[f"bilevel, followers redirected — {label}"] = _bilevel_case(choice, SEARCHES[label], sc.seed)
    for label in TABLE_SEARCHES:
        cases[f"bilevel, all users redirected — {label}"] = _bilevel_case(every, SEARCHES[label], sc.seed)
    for label in TABLE_SEARCHES:
        cases[f"co-simulation, followers redirected — {label}"] = _cosim_case(sc, choice, _sim_params(SEARCHES[label]))
    return cases


# (column, metric key, format, paper keys uncontrolled/optimised)
COLUMNS_004: list[tuple[str, str, str, tuple[str, str] | None]] = [
    ("J", "objective", "{:.3f}", None),
    ("peak [kW]", "peak_kw", "{:.0f}", ("peak_uncontrolled_kw", "peak_optimised_kw")),
    ("load factor", "load_factor", "{:.3f}", ("load_factor_uncontrolled", "load_factor_optimised")),
    ("mean wait [h]", "wait_mean_h", "{:.2f}", ("wait_mean_uncontrolled_h", "wait_mean_optimised_h")),
    ("max wait [h]", "wait_max_h", "{:.2f}", ("wait_max_uncontrolled_h", "wait_max_optimised_h")),
    ("max wait, busiest station [h]", "wait_max_busiest_h", "{:.2f}", None),
    ("energy fulfilment", "energy_fulfilment", "{:.1%}", ("", "energy_fulfilment")),
    ("DR revenue [$/day]", "dr_revenue_usd", "{:.0f}", ("", "dr_revenue_usd")),
    ("capacity compliance", "station_capacity_compliance", "{:.0%}", ("", "station_capacity_compliance")),
]


def table_004(sc: Any, cases: dict[str, dict[str, float]]) -> list[str]:
    """Markdown: the paper's row (uncontrolled → optimised), then one row per case of :func:`cases_004`."""
    paper = sc.paper

    def fmt(f: str, v: Any) -> str:
        return "—" if v is None or not np.isfinite(float(v)) else f.format(float(v)).replace("%", " %")

    lines = ["| case | " + " | ".join(c[0] for c in COLUMNS_004) + " |", "|---|" + "---:|" * len(COLUMNS_004)]
    cells = []
    for _, _, f, keys in COLUMNS_004:
        if keys is None:
            cells.append("—")
        else:
            u, o = (paper.get(k) if k else None for k in keys)
            cells.append(f"{fmt(f, u)} → {fmt(f, o)}" if u is not None else fmt(f, o))
    lines.append("| paper (uncontrolled → optimised) | " + " | ".join(cells) + " |")
    for label, m in cases.items():
        lines.append(f"| {label} | " + " | ".join(fmt(f, m.get(key)) for _, key, f, _ in COLUMNS_004) + " |")
    return lines


# ----------------------------------------------------------------------------------------------- docs
def render(*, seeds: int = 5, fn_seeds: int = 10, scenario: str = SCENARIO) -> str:
    """The block between the markers of docs/eho.md: the search comparison and the `004_…` table."""
    from sim.scenario import load_scenario

    sc = load_scenario(scenario)
    probs = _problems(sc)
    bil = compare_bilevel(probs, [sc.seed + i for i in range(seeds)])
    fun = compare_functions(list(range(fn_seeds)))
    home = next(iter(probs.values())).sessions.station
    busiest = _busiest(next(iter(probs.values())))
    lines = [
        START,
        "",
        f"Searches at {BUDGET} evaluations each; bilevel problems: J (maximised) over {seeds} search seeds "
        f"{sc.seed}–{sc.seed + seeds - 1}; test functions (10-D): f − f* (minimised) over {fn_seeds} seeds 0–"
        f"{fn_seeds - 1}; median [min – max].",
        "",
        *search_table(pd.concat([bil, fun], ignore_index=True)),
        "",
        f"The `004_…` table (seed {sc.seed}; busiest station: station {busiest + 1}, home of "
        f"{int(np.sum(home == busiest))} of the {home.size} EVs):",
        "",
        *table_004(sc, cases_004(sc, probs)),
        "",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the tables in docs/eho.md are stale")
    args = ap.parse_args(argv)
    block = render()
    doc, new = splice(DOC, "eho-variants", block)
    if args.check:
        if new != doc:
            print(f"{DOC} is stale: run 'python -m experiments.eho_paper.variants'", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(block)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
