"""The `evgrid` command line.

Heavy libraries (numpy, pandas, pandapower, mesa) are imported inside the commands, so ``evgrid --help`` is quick.
Exit codes: 0 success, 1 a run failed, 2 bad input (scenario, override, option).
"""

from __future__ import annotations

import gc
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from experiments.console import HEADLINE, print_kpis, qubo_rtp_report, warn_failures  # noqa: F401
from experiments.console import fail as _fail
from experiments.console import guard as _guard
from experiments.console import simulate as _simulate

_BENCH_METHODS = ("pipeline", "sa", "steepest-descent", "tabu", "random", "greedy", "highs")

app = typer.Typer(
    name="evgrid",
    help="Agent-based co-simulation of EV charging, electricity markets and distribution grids.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        typer.echo(f"evgrid {metadata.version('evgrid')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Agent-based co-simulation of EV charging, electricity markets and distribution grids."""


# Options shared by the study commands (montecarlo, sweep, study, attack)
WorkersOpt = Annotated[int | None, typer.Option(help="local worker processes \\[default: CPUs]")]
SchedulerOpt = Annotated[str | None, typer.Option(help="Dask scheduler address, or 'local' for a local Dask cluster")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="scenario override, e.g. --set fleet.n_evs=500")]
ResumeOpt = Annotated[bool, typer.Option(help="run only the replications the store does not hold yet")]
PlotsOpt = Annotated[bool, typer.Option(help="write plots")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]
TrustPickleOpt = Annotated[
    bool,
    typer.Option(
        "--trust-pickle", help="allow grid.file to be a pickle (a pickle runs code when loaded: only your own files)"
    ),
]


def _trust_pickle(on: bool) -> None:
    """Opt in to pickled network files for this process and the workers it starts (see grids/netfile.py)."""
    import os

    from grids.netfile import TRUST_PICKLE_ENV

    if on:
        os.environ[TRUST_PICKLE_ENV] = "1"
        typer.echo("warning: --trust-pickle: a pickled network file can run arbitrary code when loaded", err=True)


def _check_scheduler(scheduler: str | None, timeout_s: float = 5.0) -> None:
    """Exit 2 with one line unless a Dask scheduler answers at ``scheduler`` (None and 'local' need none)."""
    if scheduler is None or scheduler == "local":
        return
    import socket
    from urllib.parse import urlsplit

    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if parts.scheme not in ("tcp", "tls") or not host or not port:
        _fail(f"--scheduler: got '{scheduler}'; allowed: 'local' or a Dask address tcp://HOST:PORT (or tls://)")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        _fail(
            f"--scheduler: cannot reach '{scheduler}' ({reason}); start a scheduler there "
            "(`dask scheduler`), check the address, or use --scheduler local"
        )


@app.command()
def run(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or path to a TOML file")] = "default",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set fleet.n_evs=500")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (overrides the scenario's)")] = None,
    out: Annotated[Path | None, typer.Option(help="output directory \\[default: results/<scenario>]")] = None,
    plots: PlotsOpt = True,
    engine: Annotated[str | None, typer.Option(help="power flow: 'fast' (default) or 'pandapower' (reference)")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace a previous evgrid result in --out (only that)")
    ] = False,
    trust_pickle: TrustPickleOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run one scenario and write its tables, KPIs and plots.

    The output folder must be new, empty, or (with --force) hold a previous evgrid result; results appear in it
    complete or not at all.
    """
    from sim.result import OutputError, check_output_dir
    from sim.scenario import ScenarioError, load_scenario

    _trust_pickle(trust_pickle)
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
    try:
        check_output_dir(out_dir, replace=force)
    except OutputError as err:
        _fail(str(err))
    # qubo-dlmp's paper table is its own command (`evgrid qubo-dlmp`): `run` co-simulates such a scenario as it is
    if sc.paper.get("compare") and sc.paper["compare"] not in OWN_COMMAND:
        from experiments.papers import run_paper

        _guard(lambda: run_paper(sc, out_dir, plots=plots, quiet=quiet, replace=force))
        return
    result = _guard(lambda: _simulate(sc, quiet))
    plotter = None
    if plots and sc.outputs.plots:
        from experiments.plots import plot_run

        plotter = plot_run
    try:
        path = result.write(out_dir, plots=plotter, replace=force)
    except OutputError as err:  # the folder changed while the simulation ran
        _fail(str(err))
    print_kpis(result.kpis, title=f"{sc.name} (seed {sc.seed})")
    warn_failures(result.kpis)
    for w in result.warnings:  # how the scenario met the network (e.g. a zone it lacks); also in provenance.json
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"results written to {path}")
    if sc.paper.get("compare") in OWN_COMMAND:
        typer.echo(f"the paper's table for this scenario: {OWN_COMMAND[sc.paper['compare']]}")


#: Paper comparisons that `run` does not run (a co-simulation of the scenario instead), and the command that does.
OWN_COMMAND = {"qubo-dlmp": "evgrid qubo-dlmp"}


@app.command()
def scenarios() -> None:
    """List the shipped scenarios with a one-line description."""
    from sim.scenario import describe_scenarios

    for name, desc in describe_scenarios():
        typer.echo(f"{name:<22} {desc}")


@app.command()
def mechanisms(
    name: Annotated[str | None, typer.Argument(help="a mechanism: list its parameters")] = None,
) -> None:
    """List the market mechanisms, or one mechanism's parameters with their defaults."""
    from markets.base import MarketConfigError, available, get

    if name is None:
        for m in available():
            doc = (get(m).__doc__ or "").strip().splitlines()
            first = re.sub(r"[;,]?\s*see (the )?module docstring\.?$", "", doc[0]) if doc else ""
            typer.echo(f"{m:<15} {first}")
        return
    try:
        cls = get(name)
    except MarketConfigError as err:
        _fail(str(err))
    typer.echo(f"{name}: parameters, set as market.params.{name}.<parameter> (default, then meaning)")
    for key, (default, meaning) in getattr(cls, "parameters", {}).items():
        typer.echo(f"  {key:<30} {default!r:<12} {meaning}")
    typer.echo(f"reads from the request: {', '.join(sorted(getattr(cls, 'needs', ()))) or 'the core only'}")
    can = bool(getattr(cls, "discharges", False))
    typer.echo(f"discharges V2G EVs: {'yes, with the defaults above' if can else 'no'}")


@app.command()
def validate(
    file: Annotated[str, typer.Argument(help="scenario TOML file or shipped name")],
    set_: SetOpt = None,
    trust_pickle: TrustPickleOpt = False,
    scheduler: SchedulerOpt = None,
    out: Annotated[Path | None, typer.Option(help="also check that this output folder could be written")] = None,
) -> None:
    """Check a scenario file against the schema, the mechanism's parameters and its network file (and, when
    given, that the Dask scheduler answers and the output folder may be written)."""
    from grids.netfile import NetworkFileError, load_network_file
    from grids.network import NetworkError
    from markets.base import MarketConfigError
    from sim.interface import check_fit
    from sim.scenario import ScenarioError, load_scenario

    _trust_pickle(trust_pickle)
    _check_scheduler(scheduler)
    if out is not None:
        _output_dir(out, False)
    try:
        sc = load_scenario(file, set_ or [])
        mech = sc.market.build()
        if sc.grid.case == "file":
            load_network_file(sc.grid.file)
        # what the mechanism cannot honour: V2G EVs, a network it cannot price (mechanisms that need the grid build
        # it here, and with it meet a network whose base case has no power-flow solution)
        check_fit(sc, mech)
    except (ScenarioError, MarketConfigError, NetworkFileError, NetworkError) as err:
        _fail(str(err).replace("\n", "; "))
    # everything `run` builds before its first step, for every mechanism: the grid (cached once per installation),
    # stations on its buses, the fleet, agents, estimator and attacks — so what `run` rejects, `validate` rejects.
    # A paper scenario is checked the way `run` takes it: its variants, or the 003 market day.
    for w in _guard(lambda: _built_warnings(sc)):
        typer.echo(f"warning: {w}", err=True)
    typer.echo(
        f"ok: {sc.name} ({sc.time.n_steps} steps of {sc.time.dt_min:g} min, {sc.fleet.n_evs} EVs/day, "
        f"{sc.grid.case}, market {sc.market.mechanism})"
    )


def _built_warnings(sc: Any) -> list[str]:
    """Build what `run` builds for ``sc`` before simulating (see `validate`); the warnings a run would print."""
    if sc.paper.get("compare") and sc.paper["compare"] not in OWN_COMMAND:
        from experiments.papers import check_paper

        return check_paper(sc)
    from sim.model import CoSimulation

    model = CoSimulation(sc)
    try:
        return list(model.warnings)
    finally:
        model.close()


def _output_dir(out: Path, force: bool) -> Path:
    """``out`` checked up front (new, empty, or a previous evgrid result with --force), or exit 2."""
    from sim.result import OutputError, check_output_dir

    try:
        return check_output_dir(out, replace=force)
    except OutputError as err:
        _fail(str(err))


ForceOpt = Annotated[bool, typer.Option("--force", help="replace a previous evgrid result in --out (only that)")]


@app.command(name="compare")
def compare_cmd(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or TOML file")] = "default",
    mechanisms: Annotated[
        str, typer.Option(help="comma-separated mechanism names")
    ] = "uncontrolled,elasticity-dr,milp",
    reference: Annotated[str, typer.Option(help="exact reference: 'lp' or 'milp' (discretised)")] = "lp",
    bits: Annotated[int, typer.Option(help="bit depth of the discretised reference")] = 4,
    set_: SetOpt = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    out: Annotated[Path | None, typer.Option(help="output directory \\[default: results/<scenario>-compare]")] = None,
    force: ForceOpt = False,
) -> None:
    """Compare mechanisms side by side: objective, gap to the exact optimum, wall time, violations."""
    from experiments.compare import COLUMNS, compare, write
    from markets.base import available
    from sim.scenario import ScenarioError, load_scenario

    names = [m.strip() for m in mechanisms.split(",") if m.strip()]
    unknown = [m for m in names if m not in available()]
    if not names or unknown:
        _fail(f"--mechanisms: unknown {unknown or '(none given)'}; allowed: {', '.join(available())}")
    if reference not in ("lp", "milp"):
        _fail(f"--reference: got '{reference}'; allowed: lp, milp")
    try:
        sc = load_scenario(scenario, set_ or [], seed)
    except ScenarioError as err:
        _fail(str(err).replace("\n", "; "))
    from sim.result import command_provenance, staged_output

    path = _output_dir(out or Path("results") / f"{sc.name}-compare", force)
    table = _guard(lambda: compare(sc, names, reference_variant=reference, bits=bits))
    args = {"mechanisms": names, "reference": reference, "bits": bits}
    with staged_output(path, command_provenance("compare", args, sc), replace=force) as staged:
        write(table, staged)
    from rich.markup import escape

    from experiments.console import ZERO_TOL, fmt_number, show
    from experiments.console import make_table as console_table

    t = console_table(
        f"{sc.name}: mechanisms vs the exact optimum ({reference})",
        [("KPI", "left")] + [(name, "right") for name in names],
    )
    for key, label in COLUMNS.items():
        t.add_row(escape(label), *(fmt_number(v) for v in table[key]))
    t.caption = f"4 significant digits; |value| < {ZERO_TOL:g} shown as 0; n/a: does not apply"
    show(t)
    typer.echo(f"table written to {path.resolve()}")


@app.command(name="pev-cases")
def pev_cases_cmd(
    method: Annotated[str, typer.Option(help="'acopf' (pandapower runopp) or 'lindistflow' (HiGHS LP)")] = "acopf",
    n_evs: Annotated[int, typer.Option(help="EVs at each EV bus (paper buses 18 and 33)")] = 50,
    load_scale: Annotated[float, typer.Option(help="multiplies the Baran & Wu loads")] = 0.6,
    price: Annotated[float, typer.Option(help="substation energy price [$/MWh]")] = 84.0,
    out: Annotated[Path | None, typer.Option(help="output directory \\[default: results/pev-cases]")] = None,
    force: ForceOpt = False,
) -> None:
    """The review's four PEV cases (001, Part 3) on the 33-bus feeder: per-bus DLMPs, total cost, losses."""
    from experiments.pev_cases import format_pev_cases, run_pev_cases

    if method not in ("acopf", "lindistflow"):
        _fail(f"--method: got '{method}'; allowed: acopf, lindistflow")
    if n_evs < 0 or not (0 < load_scale <= 3) or price < 0:
        _fail("--n-evs >= 0, --load-scale in (0, 3] and --price >= 0 are required")
    from sim.result import command_provenance, staged_output

    target = _output_dir(out or Path("results") / "pev-cases", force)
    df = run_pev_cases(n_evs_per_bus=n_evs, load_scale=load_scale, price_usd_per_mwh=price, method=method)
    text = format_pev_cases(df, [1, 2, 3, 6, 9, 12, 15, 18, 19, 22, 23, 25, 26, 30, 33])
    args = {"method": method, "n_evs": n_evs, "load_scale": load_scale, "price": price}
    with staged_output(target, command_provenance("pev-cases", args), replace=force) as staged:
        df.to_csv(staged / "pev_cases.csv", index=False)
        (staged / "pev_cases.md").write_text(text + "\n")
    typer.echo(text)
    typer.echo(f"table written to {target.resolve()}")


@app.command(name="qubo-dlmp")
def qubo_dlmp_cmd(
    quick: Annotated[bool, typer.Option("--quick", help="200 EVs and 8 reads: a smoke run, not Table 2")] = False,
    bits: Annotated[str, typer.Option(help="comma-separated bit depths")] = "4,8",
    seed: Annotated[int | None, typer.Option(help="random seed \\[default: the scenarios']")] = None,
    out: Annotated[Path | None, typer.Option(help="output directory \\[default: results/qubo-dlmp]")] = None,
    force: ForceOpt = False,
) -> None:
    """Table 2 of Suri et al. (000): tri-level QUBO DLMP scheduling, S1 and S2, ours beside the paper's."""
    from experiments.dlmp_paper import format_table2, run_table2, write_table2

    try:
        depths = tuple(int(b) for b in bits.split(",") if b.strip())
    except ValueError:
        depths = ()
    if not depths or any(not 2 <= b <= 10 for b in depths):
        _fail(f"--bits: got '{bits}'; allowed: comma-separated integers in [2, 10]")
    from sim.result import command_provenance, staged_output

    target = _output_dir(out or Path("results") / "qubo-dlmp", force)
    rows = _guard(lambda: run_table2(quick=quick, bits=depths, seed=seed))
    args = {"quick": quick, "bits": list(depths), "seed": seed}
    with staged_output(target, command_provenance("qubo-dlmp", args), replace=force) as staged:
        name = write_table2(rows, staged).name
    typer.echo(format_table2(rows)[0])
    typer.echo(f"table written to {(target / name).resolve()} (and table2.csv)")


@app.command(name="qubo-rtp")
def qubo_rtp_cmd(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or TOML file")] = "qubo-rtp-118bus",
    full: Annotated[bool, typer.Option("--full", help="the paper's scale: 500 stations / 10,000 EVs")] = False,
    runs: Annotated[int, typer.Option(help="annealer runs on the same day (30 = the paper's repeatability study)")] = 1,
    seed: Annotated[int | None, typer.Option(help="random seed (overrides the scenario's)")] = None,
    reference: Annotated[bool, typer.Option(help="solve every interval exactly in HiGHS and report the gap")] = True,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="output directory \\[default: results/<scenario>]")] = None,
    force: ForceOpt = False,
) -> None:
    """Real-time pricing of 003 with qubo-rtp: baseline vs RTP day, our outcomes beside the paper's."""
    from sim.scenario import ScenarioError, load_scenario

    if runs < 1 or runs > 1000:
        _fail(f"--runs: got {runs}; allowed: integer in [1, 1000]")
    if seed is not None and seed < 0:
        _fail(f"--seed: got {seed}; allowed: integer >= 0")
    try:
        sc = load_scenario(scenario, set_ or [], seed)
    except ScenarioError as err:
        _fail(str(err).replace("\n", "; "))
    from sim.result import command_provenance, staged_output

    target = _output_dir(out or Path("results") / f"{sc.name}{'-full' if full else ''}", force)
    args = {"full": full, "runs": runs, "reference": reference}
    with staged_output(target, command_provenance("qubo-rtp", args, sc), replace=force) as staged:
        qubo_rtp_report(sc, full=full, runs=runs, reference=reference, out=staged, shown=target)


@app.command(name="qubo-bench")
def qubo_bench_cmd(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or TOML file")] = "qubo-rtp-118bus",
    full: Annotated[bool, typer.Option("--full", help="the paper's scale: 500 stations / 10,000 EVs")] = False,
    intervals: Annotated[int, typer.Option(help="intervals in the window (from --start-h)")] = 8,
    start_h: Annotated[float, typer.Option(help="clock hour the window starts at (evening peak: 18)")] = 18.0,
    hard_feeder: Annotated[float, typer.Option(help="paper.feeder_factor of the hard family")] = 0.3,
    methods: Annotated[str, typer.Option(help="comma-separated: " + ", ".join(_BENCH_METHODS))] = ",".join(
        _BENCH_METHODS
    ),
    seed: Annotated[int | None, typer.Option(help="random seed (overrides the scenario's)")] = None,
    set_: SetOpt = None,
) -> None:
    """qubo-rtp against baselines (SA, steepest descent, tabu, random, greedy, HiGHS) on easy and hard intervals."""
    from sim.scenario import ScenarioError, load_scenario

    picked = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in picked if m not in _BENCH_METHODS]
    if bad or not picked:
        _fail(f"--methods: got {methods!r}; allowed: comma-separated of {', '.join(_BENCH_METHODS)}")
    if not 1 <= intervals <= 96:
        _fail(f"--intervals: got {intervals}; allowed: integer in [1, 96]")
    if not 0.0 <= start_h < 24.0:
        _fail(f"--start-h: got {start_h}; allowed: 0 <= hour < 24")
    if not 0.0 < hard_feeder <= 10.0:
        _fail(f"--hard-feeder: got {hard_feeder}; allowed: 0 < factor <= 10")
    if seed is not None and seed < 0:
        _fail(f"--seed: got {seed}; allowed: integer >= 0")
    from experiments import qubo_bench

    for label, extra in (
        ("easy", []),
        (f"hard (paper.feeder_factor={hard_feeder:g})", [f"paper.feeder_factor={hard_feeder}"]),
    ):
        try:
            sc = load_scenario(scenario, [*(set_ or []), *extra], seed)
            rows, (bind, total), n_st = qubo_bench.family(
                sc, full=full, start_h=start_h, n_intervals=intervals, methods=picked, seed=seed
            )
        except (ScenarioError, ValueError) as err:
            _fail(str(err).replace("\n", "; "))
        share = f"{bind}/{total} = {100 * bind / max(total, 1):.1f} %"
        title = (
            f"{label}: {n_st} stations, {intervals} intervals from {start_h:g} h; "
            f"feeder rows binding in the exact optimum: {share}"
        )
        typer.echo(qubo_bench.table(title, rows) + "\n")


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so staging folders are removed on the way out (exit 143)."""
    raise SystemExit(128 + signum)


@app.command()
def dash(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or path to a TOML file")] = "default",
    port: Annotated[int, typer.Option(help="TCP port to serve the page on")] = 8765,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    set_: SetOpt = None,
) -> None:
    """Watch a co-simulation live in the browser (a Solara page): feeder, prices, loads, queues, KPIs, attacks."""
    import json
    import os

    from sim.scenario import ScenarioError

    if not 1 <= port <= 65535:
        _fail(f"--port: got {port}; allowed: 1..65535")
    try:
        from experiments.dash import ENV_SCENARIO, ENV_SET, default_params

        default_params(scenario, list(set_ or []))
    except ScenarioError as err:
        _fail(str(err).replace("\n", "; "))
    # no network: assets come from the solara-assets package, no telemetry, no PyPI version check
    env = {
        **os.environ,
        ENV_SCENARIO: scenario,
        ENV_SET: json.dumps(list(set_ or [])),
        "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False",
    }
    typer.echo(f"evgrid dash: {scenario} at http://{host}:{port}/  (Ctrl-C stops it)", err=False)
    sys.stdout.flush()
    os.execve(
        sys.executable,
        [
            sys.executable,
            "-m",
            "solara",
            "run",
            "experiments.dash",
            "--host",
            host,
            "--port",
            str(port),
            "--production",
            "--no-open",
            "--no-check-version",
            "--log-level",
            "warning",
        ],
        env,
    )


# the study commands live in their own module; importing it registers them on `app`
from experiments import cli_studies  # noqa: E402, F401


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """A Python warning reaches the user as one ``warning: …`` line (no file path, no source line)."""
    typer.echo(f"warning: {message}", err=True)


#: Commands that never load the simulation stack (they stay as quick as ``evgrid --help``).
LIGHT_COMMANDS = frozenset({"scenarios", "studies", "mechanisms", "dash"})


def preload(argv: list[str]) -> None:
    """Import the simulation stack with the garbage collector paused, then freeze what it created.

    Importing pandas, scipy, pandapower and Mesa creates ~10^6 objects that live as long as the process; with
    Python's default thresholds they are walked again in repeated full collections (~0.25 s of a 2 s start), and in
    every later one. Frozen, they are left out of all collections; the thresholds stay Python's, so cycles a run
    leaves behind (a finished model) are collected as before. Nothing a run computes depends on it. Skipped for
    help, ``--version`` and the commands in `LIGHT_COMMANDS`.
    """
    args = argv[1:]
    if not args or args[0] in LIGHT_COMMANDS or {"--help", "-h", "--version"} & set(args):
        return
    gc.disable()  # paused from the first import on; import_frozen freezes what the imports made
    try:
        from experiments.replication import import_frozen  # what the study workers do at their start too

        import_frozen()
    finally:
        gc.enable()


def main() -> None:
    """Entry point of the ``evgrid`` command."""
    signal.signal(signal.SIGTERM, _terminate)
    warnings.showwarning = _show_warning
    try:
        preload(sys.argv)  # inside: a Ctrl-C during the imports is "interrupted" too, not a traceback
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    finally:
        # Everything is written and closed by now. The interpreter's final garbage collection would walk every object
        # the scientific stack created (~0.4 s of the exit after `import pandapower`); frozen objects are skipped,
        # while reference counting still releases what it always does.
        gc.freeze()


if __name__ == "__main__":
    # `python -m experiments.cli`: run the module under its own name, so that the study commands (which register
    # on `experiments.cli.app`, see above) are on the app that runs
    from experiments.cli import main as _main_of_module

    _main_of_module()
