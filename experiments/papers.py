"""Paper scenarios: run the variants a paper compares and print its headline numbers next to ours.

``dr-tou`` (Erdanayev et al., `002_…`): four runs with the same seed —
``no-ev`` (no EVs, no DR), ``dr-no-ev`` (DR on the non-EV load only), ``uncontrolled`` (EVs charge at full rate
from plug-in, no DR) and ``coordinated`` (EVs and flexible load under `elasticity-dr`). The paper's numbers
come from the scenario's ``[paper]`` table.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.eho_paper import EHO_VARIANTS, SIM_NOTE, eho_sim_table, run_eho_paper
from sim.scenario import Scenario, validate

DR_TOU_VARIANTS: dict[str, list[tuple[str, Any]]] = {
    "no-ev": [("fleet.n_evs", 0), ("market.mechanism", "uncontrolled")],
    "dr-no-ev": [("fleet.n_evs", 0)],
    "uncontrolled": [("market.mechanism", "uncontrolled")],
    "coordinated": [],
}


def _variant(sc: Scenario, changes: list[tuple[str, Any]], name: str) -> Scenario:
    data = sc.model_dump(mode="json")
    data["paper"] = {}
    data["name"] = f"{sc.name}-{name}"
    for key, value in changes:
        node = data
        *head, last = key.split(".")
        for part in head:
            node = node[part]
        node[last] = value
    return validate(data)


def _pct(new: float, old: float) -> float:
    return 100.0 * (new - old) / old if old else float("nan")


def dr_tou_table(k: dict[str, dict[str, float]], paper: dict[str, Any]) -> pd.DataFrame:
    """Paper vs ours for `002_…` from the KPIs of the four variants."""
    base, dr, unc, coo = k["no-ev"], k["dr-no-ev"], k["uncontrolled"], k["coordinated"]
    rows = [
        (
            "daily cost change, coordinated vs uncontrolled EVs [%]",
            "cost_change_coordinated_vs_uncontrolled_percent",
            _pct(coo["total_cost_usd"], unc["total_cost_usd"]),
        ),
        (
            "daily cost change from DR without EVs [%] (Table 5)",
            "cost_change_dr_no_ev_percent",
            _pct(dr["total_cost_usd"], base["total_cost_usd"]),
        ),
        ("energy losses, no EVs, no DR [kWh] (Table 5)", "loss_no_ev_no_dr_kwh", base["energy_losses_kwh"]),
        ("energy losses, no EVs, with DR [kWh] (Table 5)", "loss_no_ev_with_dr_kwh", dr["energy_losses_kwh"]),
        (
            "loss change, uncontrolled EVs vs no EVs [%]",
            "loss_change_uncontrolled_vs_no_ev_percent",
            _pct(unc["energy_losses_kwh"], base["energy_losses_kwh"]),
        ),
        (
            "loss change, coordinated EVs vs no EVs [%]",
            "loss_change_coordinated_vs_no_ev_percent",
            _pct(coo["energy_losses_kwh"], base["energy_losses_kwh"]),
        ),
        ("VRI, uncontrolled [pu]", "vri_uncontrolled_pu", unc["vri_pu"]),
        ("VRI, coordinated [pu]", "vri_coordinated_pu", coo["vri_pu"]),
        (
            "VDI change, coordinated vs uncontrolled [%]",
            "vdi_change_coordinated_vs_uncontrolled_percent",
            _pct(coo["vdi_pu"], unc["vdi_pu"]),
        ),
        (
            "peak load reduction, coordinated vs uncontrolled [%] (Table 7, DR_max 15 %)",
            "peak_reduction_dr_percent",
            -_pct(coo["peak_load_kw"], unc["peak_load_kw"]),
        ),
    ]
    return pd.DataFrame(
        [{"metric": label, "paper": paper.get(key, float("nan")), "ours": ours} for label, key, ours in rows]
    )


COMPARISONS: dict[str, tuple[dict[str, list[tuple[str, Any]]], Callable[..., pd.DataFrame]]] = {
    "dr-tou": (DR_TOU_VARIANTS, dr_tou_table),
    "eho": (EHO_VARIANTS, eho_sim_table),
}

NOTES = {
    "dr-tou": (
        "Differences to expect: the paper solves a deterministic NLP (GAMS/CONOPT) over hourly levels with its own "
        "load and PV curves, which survive only as figures; we run a stochastic agent simulation with synthetic "
        "zonal profiles (grids.network.PROFILES), the DSO's DG dispatch (grid.dispatch: merit order, AC OPF or LinDistFlow) "
        "and valley-filling EV response; its DGs and PV out-produce the non-EV load over the day, so extra load "
        "lowers losses (docs/results.md). The paper's loss figures are also mutually inconsistent (Table 5: "
        "1156 kWh; Table 7: 383.6 kWh for the same base case). Compare directions and orders of magnitude, not "
        "digits."
    ),
    "eho": SIM_NOTE,
}


def check_paper(sc: Scenario) -> list[str]:
    """Build what `run_paper` builds before it simulates — each variant's model, or the 003 market day — and return
    the warnings a run would print; raises what the run would raise (`ScenarioError`, `NetworkError`, ...)."""
    kind = sc.paper["compare"]
    if kind == "qubo-rtp":
        from experiments.rtp_paper import build_day

        build_day(sc)
        return []
    if kind not in COMPARISONS:
        from sim.scenario import ScenarioError

        raise ScenarioError(f"paper.compare: unknown '{kind}'; allowed: {', '.join(COMPARISONS)}")
    from sim.model import CoSimulation

    said: list[str] = []
    for name, changes in COMPARISONS[kind][0].items():
        model = CoSimulation(_variant(sc, changes, name))
        said += [w for w in model.warnings if w not in said]
        model.close()
    return said


def run_paper(
    sc: Scenario, out_dir: Path, *, plots: bool = True, quiet: bool = False, replace: bool = False
) -> pd.DataFrame:
    """Run a paper scenario's variants, write each run and the comparison table, and print it.

    ``out_dir`` follows `sim.result.check_output_dir` (new, empty, or a previous evgrid result with ``replace``);
    everything is staged in a temporary sibling and appears complete or not at all.
    """
    from experiments.console import print_kpis, qubo_rtp_report, simulate, warn_failures
    from sim.result import check_output_dir, provenance, publish, staging_dir

    kind = sc.paper["compare"]
    if kind == "qubo-rtp":  # a market study, not a co-simulation: `evgrid qubo-rtp` runs it
        from sim.result import command_provenance, staged_output

        target = check_output_dir(out_dir, replace=replace)
        with staged_output(target, command_provenance("qubo-rtp", {}, sc), replace=replace) as staged:
            qubo_rtp_report(sc, out=staged, shown=target)
        return pd.DataFrame()
    if kind not in COMPARISONS:
        from sim.scenario import ScenarioError

        raise ScenarioError(f"paper.compare: unknown '{kind}'; allowed: {', '.join(COMPARISONS)}")
    variants, table_fn = COMPARISONS[kind]
    out = check_output_dir(out_dir, replace=replace)
    draw = plots and sc.outputs.plots
    plot_run: Callable[..., object] | None = None
    if draw:
        from experiments.plots import plot_run as _plot_run

        plot_run = _plot_run
    tmp = staging_dir(out)
    try:
        results = {}
        for name, changes in variants.items():
            results[name] = simulate(_variant(sc, changes, name), quiet)
            warn_failures(results[name].kpis)
            results[name].write(tmp / name, plots=plot_run)
        table = table_fn({n: r.kpis for n, r in results.items()}, sc.paper)
        table.to_csv(tmp / "paper_comparison.csv", index=False)
        md = [
            f"# {sc.name}: paper vs ours",
            "",
            f"Source: {sc.paper.get('source', '')}",
            "",
            "| metric | paper | ours |",
            "|---|---:|---:|",
        ]
        md += [f"| {r.metric} | {r.paper:.3f} | {r.ours:.3f} |" for r in table.itertuples()]
        md += ["", NOTES.get(kind, "")]
        (tmp / "paper_comparison.md").write_text("\n".join(md) + "\n")
        if draw:
            from experiments.plots import plot_comparison

            plot_comparison(results, tmp / "plots")
        if kind == "eho":  # the bilevel model on the same EVs: the paper's Tables 4–11, Table 9, the searches judged
            from experiments.plotting.common import formats, scenario_formats

            with formats(scenario_formats(sc)):
                run_eho_paper(tmp / "bilevel", seed=sc.seed, plots=draw, scenario=sc.name, quiet=quiet)
        (tmp / "provenance.json").write_text(json.dumps(provenance(sc), indent=2))
        publish(tmp, out, replace=replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print_kpis(results["coordinated"].kpis, title=f"{sc.name}: coordinated (seed {sc.seed})")
    from rich.markup import escape

    from experiments.console import fmt_value, show
    from experiments.console import make_table as console_table

    t = console_table(f"{sc.name}: paper vs ours", [("metric", "left"), ("paper", "right"), ("ours", "right")])
    for r in table.itertuples():
        t.add_row(escape(r.metric), fmt_value("{:.3f}", r.paper), fmt_value("{:.3f}", r.ours))
    show(t)
    print(NOTES.get(kind, ""))
    print(f"results written to {out}")
    return table
