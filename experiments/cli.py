"""The `evgrid` command line.

Heavy libraries (numpy, pandas, pandapower, mesa) are imported inside the commands, so ``evgrid --help`` is quick.
Exit codes: 0 success, 1 a run failed, 2 bad input (scenario, override, option).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="evgrid",
    help="Agent-based co-simulation of EV charging, electricity markets and distribution grids.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Headline KPIs shown on the console after a run: (key, label, format)
HEADLINE = (
    ("peak_load_kw", "peak load [kW]", "{:,.0f}"),
    ("load_factor", "load factor", "{:.3f}"),
    ("ev_energy_kwh", "EV energy [kWh]", "{:,.0f}"),
    ("ev_peak_kw", "EV peak [kW]", "{:,.0f}"),
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


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _fmt(fmt: str, v: object) -> str:
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


@app.command()
def run(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or path to a TOML file")] = "default",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. --set fleet.n_evs=500")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random seed (overrides the scenario's)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output directory [default: results/<scenario>]")] = None,
    plots: Annotated[bool, typer.Option(help="write plots")] = True,
    engine: Annotated[Optional[str], typer.Option(help="power flow: 'fast' (default) or 'pandapower' (reference)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Run one scenario and write its tables, KPIs and plots."""
    from sim.scenario import ScenarioError, load_scenario

    if seed is not None and seed < 0:
        _fail(f"--seed: got {seed}; allowed: integer >= 0")
    overrides = list(set_ or [])
    if engine is not None:
        if engine not in ("fast", "pandapower"):
            _fail(f"--engine: got '{engine}'; allowed: fast, pandapower")
        overrides.append(f"grid.engine='{engine}'")
    try:
        sc = load_scenario(scenario, overrides, seed)
    except ScenarioError as err:
        _fail(str(err).replace("\n", "; "))
    out_dir = out or Path("results") / sc.name
    if sc.paper.get("compare"):
        from experiments.papers import run_paper

        _guard(lambda: run_paper(sc, out_dir, plots=plots, quiet=quiet))
        return
    result = _guard(lambda: _simulate(sc, quiet))
    path = result.write(out_dir, plots=plots and sc.outputs.plots)
    print_kpis(result.kpis, title=f"{sc.name} (seed {sc.seed})")
    warn_failures(result.kpis)
    typer.echo(f"results written to {path}")


def warn_failures(kpis: dict) -> None:
    """Say so on stderr when power flows failed to converge (the steps are flagged in the tables)."""
    n = kpis.get("nonconverged_steps", 0)
    if n:
        typer.echo(f"warning: the power flow did not converge in {n} step(s); see tables/steps.parquet "
                   "column 'converged'", err=True)


def _guard(fn):  # type: ignore[no-untyped-def]
    """Run ``fn``; input errors found while building the model exit 2, other failures exit 1."""
    from grids.network import NetworkError
    from markets.base import MarketConfigError
    from sim.scenario import ScenarioError

    try:
        return fn()
    except (ScenarioError, NetworkError, MarketConfigError) as err:
        _fail(str(err).replace("\n", "; "))


def _simulate(sc, quiet: bool):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from sim.model import CoSimulation

    if quiet:
        return CoSimulation(sc).run()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=True,
    ) as bar:
        task = bar.add_task(sc.name, total=sc.time.n_steps)
        model = CoSimulation(sc, progress=lambda k, n: bar.update(task, completed=k))
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
            t.add_row(escape(label), _fmt(fmt, kpis[key]))
    Console().print(t)


@app.command()
def scenarios() -> None:
    """List the shipped scenarios with a one-line description."""
    from sim.scenario import describe_scenarios

    for name, desc in describe_scenarios():
        typer.echo(f"{name:<22} {desc}")


@app.command()
def validate(file: Annotated[str, typer.Argument(help="scenario TOML file or shipped name")]) -> None:
    """Check a scenario file against the schema (and the mechanism's parameters)."""
    from markets.base import MarketConfigError
    from sim.scenario import ScenarioError, load_scenario

    try:
        sc = load_scenario(file)
        sc.market.build()
    except (ScenarioError, MarketConfigError) as err:
        _fail(str(err).replace("\n", "; "))
    typer.echo(f"ok: {sc.name} ({sc.time.n_steps} steps of {sc.time.dt_min:g} min, {sc.fleet.n_evs} EVs/day, "
               f"{sc.grid.case}, market {sc.market.mechanism})")


def main() -> None:
    """Entry point of the ``evgrid`` command."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
