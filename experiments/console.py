"""Console helpers shared by the `evgrid` commands and the paper runners: KPI tables, warnings, the progress bar,
one-line failures.

Kept apart from `experiments.cli` so that modules which run things (`experiments.papers`) and the CLI both import
these helpers from below, and neither imports the other's privates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer

# Headline KPIs shown on the console after a run: (key, label, format)
HEADLINE = (
    ("peak_load_kw", "peak load [kW]", "{:,.0f}"),
    ("load_factor", "load factor", "{:.3f}"),
    ("ev_energy_kwh", "EV energy [kWh]", "{:,.0f}"),
    ("ev_peak_kw", "EV peak [kW]", "{:,.0f}"),
    ("pf_failed_steps", "power flow failed [steps]", "{:d}"),
    ("energy_losses_kwh", "energy losses [kWh]", "{:,.1f}"),
    ("vmin_pu", "Vmin [pu]", "{:.4f}"),
    ("vdi_pu", "VDI [pu]", "{:.4f}"),
    ("vri_pu", "VRI [pu]", "{:.4f}"),
    ("max_line_loading_percent", "max line loading [%]", "{:.1f}"),
    ("voltage_violation_bus_minutes", "voltage violations [bus·min]", "{:,.0f}"),
    ("ev_curtailed_kwh", "EV energy curtailed [kWh]", "{:,.1f}"),
    ("total_cost_usd", "total cost [$]", "{:,.0f}"),
    ("user_price_usd_per_kwh", "user price [$/kWh]", "{:.4f}"),
    ("mean_wait_min", "mean wait [min]", "{:.1f}"),
    ("energy_fulfilment", "energy fulfilment", "{:.3f}"),
    ("time_cpu_s", "CPU time [s]", "{:.2f}"),
)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print ``error: msg`` on stderr and exit with ``code`` (2 = bad input)."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def fmt_value(fmt: str, v: object) -> str:
    """``fmt.format(v)``, or ``str(v)`` when the value does not fit the format."""
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def warn_failures(kpis: dict) -> None:
    """Say so on stderr when power flows or state estimates failed (the steps are flagged in the tables; failed
    power flows are left out of the grid KPIs, failed estimates out of the alarm rates)."""
    n = kpis.get("pf_failed_steps", kpis.get("nonconverged_steps", 0))
    if n:
        typer.echo(
            f"warning: the power flow found no physical solution in {n} step(s); they are left out of every grid "
            "KPI (voltages, losses, loading, grid cost) and flagged in tables/steps.parquet (columns 'converged', "
            "'pf_method')",
            err=True,
        )
    n_se = kpis.get("se_nonconverged_steps", 0)
    if n_se:  # counted apart from the χ² alarm and false-alarm rates
        typer.echo(
            f"warning: the state estimate did not converge in {n_se} step(s) (not counted as alarms); "
            "see tables/steps.parquet column 'se_converged'",
            err=True,
        )


def guard[T](fn: Callable[[], T]) -> T:
    """Run ``fn``; input errors found while building the model exit 2, other failures exit 1."""
    from grids.network import NetworkError
    from markets.base import MarketConfigError
    from sim.scenario import ScenarioError

    try:
        return fn()
    except (ScenarioError, NetworkError, MarketConfigError) as err:
        fail(str(err).replace("\n", "; "))


def simulate(sc: Any, quiet: bool) -> Any:
    """Run a co-simulation of scenario ``sc``, with a progress bar unless ``quiet``; returns its `RunResult`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if quiet:
        from sim.model import CoSimulation

        return CoSimulation(sc).run()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        # set-up phases on the bar before the steps start (the grid is built once per process, then cached)
        task = bar.add_task(f"{sc.name}: loading libraries", total=sc.time.n_steps)
        from sim.model import CoSimulation, compiled_grid

        bar.update(task, description=f"{sc.name}: building grid, compiling power flow")
        compiled_grid(sc.grid)
        bar.update(task, description=f"{sc.name}: generating fleet and agents")
        model = CoSimulation(sc, progress=lambda k, n: bar.update(task, completed=k))
        bar.update(task, description=sc.name)
        return model.run()


def print_kpis(kpis: dict, title: str = "KPIs") -> None:
    """Console table of the headline KPIs."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    t.add_column("KPI")
    t.add_column("value", justify="right")
    for key, label, fmt in HEADLINE:
        if key in kpis:
            t.add_row(escape(label), fmt_value(fmt, kpis[key]))
    Console().print(t)


def qubo_rtp_report(
    sc: Any,
    *,
    full: bool = False,
    runs: int = 1,
    reference: bool = True,
    out: Path | None = None,
    shown: Path | None = None,
) -> None:
    """Run the 003 study on a loaded scenario, write it into ``out`` and print the paper-vs-ours table.

    ``shown``: the folder to name as the destination when ``out`` is a staging folder that will be moved there.
    """
    from experiments.rtp_paper import run_study, write

    table, outcomes, per_run = guard(lambda: run_study(sc, full=full, runs=runs, reference=reference))
    label = f"{sc.name}{'-full' if full else ''}"
    path = write(table, outcomes, per_run, out or Path("results") / label, sc.paper.get("source", ""))
    import json

    from sim.result import PROVENANCE, provenance

    # marks the folder as an evgrid result, so `run --force` may replace it later
    (Path(path) / PROVENANCE).write_text(json.dumps(provenance(sc), indent=2))
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"{label}: paper vs ours (seed {sc.seed})"))
    for c in ("metric", "paper", "ours"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for r in table.itertuples():
        t.add_row(escape(r.metric), escape(str(r.paper)), escape(str(r.ours)))
    Console().print(t)
    if runs > 1:
        obj = per_run["objective_usd"]
        typer.echo(
            f"{runs} annealer runs: total cost {obj.mean():,.2f} $ (min {obj.min():,.2f}, max {obj.max():,.2f}), "
            f"spread {outcomes['cost_spread_percent']:.4f} % (paper: 3-5 %); worst interval "
            f"{per_run['interval_wall_s_max'].max():.3f} s"
        )
    typer.echo(f"results written to {(shown or Path(path)).resolve()}")
