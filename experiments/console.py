"""Console helpers shared by the `evgrid` commands and the paper runners: KPI tables, warnings, the progress bar,
one-line failures.

Kept apart from `experiments.cli` so that modules which run things (`experiments.papers`) and the CLI both import
these helpers from below, and neither imports the other's privates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    ("vmax_pu", "Vmax [pu]", "{:.4f}"),
    ("undervoltage_bus_minutes", "undervoltage [bus·min]", "{:,.0f}"),
    ("overvoltage_bus_minutes", "overvoltage [bus·min]", "{:,.0f}"),
    ("vdi_pu", "VDI [pu]", "{:.4f}"),
    ("vri_pu", "VRI [pu]", "{:.4f}"),
    ("max_line_loading_percent", "max line loading [%]", "{:.1f}"),
    ("voltage_violation_bus_minutes", "voltage violations, both sides [bus·min]", "{:,.0f}"),
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


# differences below this are shown as 0 (floating-point noise of sums over a day, e.g. a gap of 2e-16)
ZERO_TOL = 1e-9


def _missing(v: object) -> bool:
    """None, NaN or ±inf: a KPI that does not apply (e.g. fulfilment without EVs)."""
    if v is None:
        return True
    try:
        return not math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def fmt_value(fmt: str, v: object) -> str:
    """``fmt.format(v)``; ``n/a`` for a missing, NaN or infinite value; ``str(v)`` when it does not fit the format."""
    if _missing(v):
        return "n/a"
    try:
        if isinstance(v, float) and fmt.endswith("d}"):
            v = int(v) if v.is_integer() else v
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def fmt_number(v: object, digits: int = 4, zero_tol: float = ZERO_TOL) -> str:
    """A number with ``digits`` significant digits and no exponent for ordinary magnitudes: ``n/a`` when missing,
    ``0`` when ``|v| < zero_tol``, thousands separated from 10**digits on, scientific only beyond 1e12 or below
    1e-4."""
    if _missing(v):
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__float__"):
        return str(v)
    x = float(v)
    a = abs(x)
    if a < zero_tol:
        return "0"
    if a >= 1e12 or a < 1e-4:
        return f"{x:.{digits - 1}e}"
    if a >= 10**digits:
        return f"{x:,.0f}"
    x = float(f"{x:.{digits}g}")  # round first: 0.000999 at 2 digits → 0.0010, not 0.00100
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def make_table(title: str, columns: Sequence[tuple[str, str]]) -> Any:
    """A rich table whose cells fold rather than cut: a long label wraps inside the terminal width (even one
    without spaces, like ``market.params.elasticity-dr.participation``), nothing ends in ``…``.

    Args:
        title: shown above the table (markup escaped).
        columns: (header, justify) per column, justify "left" or "right".
    """
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    for name, justify in columns:
        t.add_column(escape(name), justify=justify, overflow="fold")  # type: ignore[arg-type]
    return t


def show(t: Any) -> None:
    """Print a rich renderable on stdout at the terminal's width."""
    from rich.console import Console

    Console().print(t)


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
    """Console table of the headline KPIs (``n/a`` for KPIs that do not apply, e.g. fulfilment without EVs)."""
    from rich.markup import escape

    t = make_table(title, (("KPI", "left"), ("value", "right")))
    for key, label, fmt in HEADLINE:
        if key in kpis:
            t.add_row(escape(label), fmt_value(fmt, kpis[key]))
    show(t)


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
    from rich.markup import escape

    t = make_table(
        f"{label}: paper vs ours (seed {sc.seed})", [("metric", "left"), ("paper", "right"), ("ours", "right")]
    )
    for r in table.itertuples():
        t.add_row(escape(r.metric), escape(str(r.paper)), escape(str(r.ours)))
    show(t)
    if runs > 1:
        obj = per_run["objective_usd"]
        typer.echo(
            f"{runs} annealer runs: total cost {obj.mean():,.2f} $ (min {obj.min():,.2f}, max {obj.max():,.2f}), "
            f"spread {outcomes['cost_spread_percent']:.4f} % (paper: 3-5 %); worst interval "
            f"{per_run['interval_wall_s_max'].max():.3f} s"
        )
    typer.echo(f"results written to {(shown or Path(path)).resolve()}")
