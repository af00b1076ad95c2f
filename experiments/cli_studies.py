"""The study commands of the `evgrid` command line: ``montecarlo``, ``sweep``, ``study``, ``attack``, ``studies``,
``report`` and ``papers`` (registered on `experiments.cli.app`; the rest of the CLI is in `experiments.cli`).

Exit codes as there: 0 success, 1 a study could not be stored, 2 bad input, 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from experiments.cli import (
    PlotsOpt,
    QuietOpt,
    ResumeOpt,
    SchedulerOpt,
    SetOpt,
    TrustPickleOpt,
    WorkersOpt,
    _check_scheduler,
    _trust_pickle,
    app,
)
from experiments.console import fail as _fail


def _run_study(
    study, out: Path, workers: int | None, scheduler: str | None, resume: bool, quiet: bool, plots: bool
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from experiments.engine import default_workers, run_study
    from experiments.report import report
    from experiments.store import Store, StoreError, StoreLockedError, StoreWriteError

    if workers is not None and workers < 1:
        _fail(f"--workers: got {workers}; allowed: integer >= 1")
    k = workers or default_workers()
    _check_scheduler(scheduler)  # before the store exists: an unreachable scheduler leaves nothing behind
    store = Store(out)
    resume_cmd = _resume_command(out)

    def notice(msg: str) -> None:
        typer.echo(msg, err=True)

    try:
        if quiet:
            counts = run_study(study, store, workers=k, scheduler=scheduler, resume=resume, notice=notice)
        else:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            ) as bar:
                task = bar.add_task(f"{study.kind} {study.scenario.name}", total=None, failed=0)

                def progress(done: int, total: int, failed: int) -> None:
                    bar.update(task, completed=done, total=total, failed=failed)

                counts = run_study(
                    study, store, workers=k, scheduler=scheduler, resume=resume, progress=progress, notice=notice
                )
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the message short
        typer.echo(f"interrupted: {_stored(store, study)}; resume with: {resume_cmd}", err=True)
        raise typer.Exit(130) from None
    except SystemExit as err:  # SIGTERM (see _terminate): the workers are stopped; say so as for Ctrl-C
        if err.code == 128 + signal.SIGTERM:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            typer.echo(f"terminated: {_stored(store, study)}; resume with: {resume_cmd}", err=True)
        raise
    except StoreLockedError as err:
        _fail(str(err))
    except StoreWriteError as err:
        typer.echo(f"error: {err}; {_stored(store, study)}; resume with: {resume_cmd}", err=True)
        raise typer.Exit(1) from None
    except StoreError as err:
        _fail(str(err))
    typer.echo(
        f"{counts['ok']} replication(s) ok, {counts['failed']} failed, {counts['skipped']} already stored"
        f" ({'dask ' + scheduler if scheduler else f'{k} worker(s)'})"
    )
    try:
        report(out, plots=plots)
    except StoreError as err:
        _fail(str(err))
    if counts["failed"]:
        typer.echo(
            f"warning: {counts['failed']} replication(s) failed; errors and tracebacks are in the store and summary.md",
            err=True,
        )
    typer.echo(f"study stored in {out.resolve()}")


def _stored(store: Any, study: Any) -> str:
    """ "N of M replications stored in DIR (a ok, b failed)", from the verified parts."""
    try:
        df = store.load(columns=["point", "rep", "status"])
    except Exception as err:  # the summary of an interruption must not itself fail
        return f"the store in {store.root.resolve()} could not be read ({err})"
    ok = int((df["status"] == "ok").sum()) if len(df) else 0
    return (
        f"{len(df)} of {study.n * len(study.points)} replications stored in {store.root.resolve()} "
        f"({ok} ok, {len(df) - ok} failed)"
    )


STUDY_COMMANDS = ("montecarlo", "sweep", "study", "attack")


def _resume_command(out: Path) -> str:
    """The command line that continues this study: the one typed, with --resume."""
    import shlex

    args = sys.argv[1:]
    if not any(a in STUDY_COMMANDS for a in args):  # invoked programmatically (e.g. CliRunner): the essentials
        args = ["<command>", "…", "--out", str(out)]
    return shlex.join(["evgrid", *(a for a in args if a not in ("--resume", "--no-resume")), "--resume"])


@app.command()
def montecarlo(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or TOML file")] = "default",
    n: Annotated[int, typer.Option("-n", help="number of replications")] = 100,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    trust_pickle: TrustPickleOpt = False,
    set_: SetOpt = None,
    seed: Annotated[int | None, typer.Option(help="root seed \\[default: the scenario's]")] = None,
    out: Annotated[Path | None, typer.Option(help="study directory \\[default: results/<scenario>-montecarlo]")] = None,
    resume: ResumeOpt = False,
    timeseries: Annotated[
        list[str] | None, typer.Option(help="also store this table per replication, e.g. steps")
    ] = None,
    plots: PlotsOpt = True,
    quiet: QuietOpt = False,
) -> None:
    """Monte Carlo: n stochastic replications of one scenario, with means, CIs and a convergence plot."""
    _trust_pickle(trust_pickle)
    from experiments.engine import Point, Study
    from sim.scenario import ScenarioError, load_scenario

    try:
        sc = load_scenario(scenario, set_ or [], seed)
        study = Study("montecarlo", sc, [Point(0, {}, "scenario")], n, sc.seed, tuple(timeseries or ()))
    except ScenarioError as err:
        _fail(str(err).replace("\n", "; "))
    _run_study(study, out or Path("results") / f"{sc.name}-montecarlo", workers, scheduler, resume, quiet, plots)


@app.command()
def sweep(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or TOML file")] = "default",
    grid: Annotated[list[str] | None, typer.Option("--grid", help="key=v1,v2,… or key=start:stop:count")] = None,
    oat: Annotated[bool, typer.Option("--oat", help="one parameter at a time around the scenario (tornado)")] = False,
    baseline: Annotated[
        list[str] | None, typer.Option(help="add a 'baseline' point with these key=value settings")
    ] = None,
    n: Annotated[int, typer.Option("-n", help="replications per parameter point")] = 20,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    trust_pickle: TrustPickleOpt = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="scenario override for every point")] = None,
    seed: Annotated[int | None, typer.Option(help="root seed \\[default: the scenario's]")] = None,
    out: Annotated[Path | None, typer.Option(help="study directory \\[default: results/<scenario>-sweep]")] = None,
    resume: ResumeOpt = False,
    plots: PlotsOpt = True,
    quiet: QuietOpt = False,
) -> None:
    """Parameter sweep (full factorial or one-at-a-time) crossed with replications, common random numbers."""
    _trust_pickle(trust_pickle)
    from experiments.engine import make_sweep
    from sim.scenario import ScenarioError, load_scenario

    if not grid:
        _fail("--grid: at least one key=values is required")
    try:
        sc = load_scenario(scenario, set_ or [], seed)
        study = make_sweep(sc, grid, n=n, oat=oat, baseline=baseline or [])
    except ScenarioError as err:
        _fail(str(err).replace("\n", "; "))
    _run_study(study, out or Path("results") / f"{sc.name}-sweep", workers, scheduler, resume, quiet, plots)


@app.command()
def study(
    name: Annotated[str, typer.Argument(help="shipped study (see `evgrid studies`) or study TOML file")],
    n: Annotated[int | None, typer.Option("-n", help="replications per point \\[default: the study's]")] = None,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    trust_pickle: TrustPickleOpt = False,
    seed: Annotated[int | None, typer.Option(help="root seed \\[default: the study's]")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="study directory \\[default: results/study-<name>]")] = None,
    resume: ResumeOpt = False,
    plots: PlotsOpt = True,
    quiet: QuietOpt = False,
) -> None:
    """Run a ready study of the papers (sensitivity sweeps) and print it beside the paper's table."""
    _trust_pickle(trust_pickle)
    from experiments.engine import load_study_file
    from sim.scenario import ScenarioError

    try:
        st, label = load_study_file(name, n=n, seed=seed, overrides=set_)
    except ScenarioError as err:
        _fail(str(err).replace("\n", "; "))
    _run_study(st, out or Path("results") / f"study-{label}", workers, scheduler, resume, quiet, plots)


@app.command()
def studies() -> None:
    """List the ready studies with a one-line description."""
    from experiments.engine import describe_studies

    for name, desc in describe_studies():
        typer.echo(f"{name:<22} {desc}")


@app.command(name="report")
def report_cmd(
    directory: Annotated[Path, typer.Argument(help="a study directory")],
    plots: PlotsOpt = True,
) -> None:
    """Regenerate a study's summary tables and plots from its store, without re-running anything."""
    from experiments.report import report
    from experiments.store import StoreError

    try:
        report(directory, plots=plots)
    except StoreError as err:
        _fail(str(err))
    typer.echo(f"report written to {directory.resolve()}")


@app.command()
def attack(
    scenario: Annotated[str, typer.Argument(help="shipped scenario name or TOML file")] = "default",
    attack_spec: Annotated[
        list[str] | None,
        typer.Option(
            "--attack",
            help="attack as a TOML inline table body, e.g. "
            "'kind=\"station-inflation\", share=0.15, magnitude=0.3, start_h=5, end_h=9'",
        ),
    ] = None,
    grid: Annotated[
        list[str] | None, typer.Option("--grid", help="campaign axes, e.g. attacks.0.magnitude=0.1,0.3")
    ] = None,
    detection: Annotated[str, typer.Option(help="'off', 'on' or 'both' (with and without detection)")] = "both",
    n: Annotated[int, typer.Option("-n", help="replications per point")] = 20,
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    trust_pickle: TrustPickleOpt = False,
    set_: SetOpt = None,
    seed: Annotated[int | None, typer.Option(help="root seed")] = None,
    out: Annotated[Path | None, typer.Option(help="study directory \\[default: results/<scenario>-attack]")] = None,
    resume: ResumeOpt = False,
    plots: PlotsOpt = True,
    quiet: QuietOpt = False,
) -> None:
    """Attack campaign: attack axes × detection × replications, impact paired against the same days without attack.

    Adds a clean 'baseline' and an 'uncontrolled' point on the same seeds; with state estimation on, also the ROC
    of the χ² test (roc.csv, plots/roc.png). Columns: see experiments/attack_study.py.
    """
    _trust_pickle(trust_pickle)
    from experiments.attack_study import make_attack_study
    from sim.scenario import ScenarioError, load_scenario

    if not attack_spec:
        _fail("--attack: at least one attack is required")
    if detection not in ("off", "on", "both"):
        _fail(f"--detection: got '{detection}'; allowed: off, on, both")
    overrides = list(set_ or []) + ["attacks=[" + ", ".join("{" + a + "}" for a in attack_spec or []) + "]"]
    axes = list(grid or [])
    if detection == "both":
        axes.append("detection.enabled=false,true")
    else:
        overrides.append(f"detection.enabled={'true' if detection == 'on' else 'false'}")
    if not axes:
        axes = ["attacks.0.magnitude=" + str(load_scenario(scenario, overrides).attacks[0].magnitude)]
    try:
        sc = load_scenario(scenario, overrides, seed)
        study = make_attack_study(sc, axes, n=n)
    except ScenarioError as err:
        _fail(str(err).replace("\n", "; "))
    _run_study(study, out or Path("results") / f"{sc.name}-attack", workers, scheduler, resume, quiet, plots)


@app.command()
def papers(
    only: Annotated[str, typer.Option(help="comma-separated papers, e.g. 000,002 \\[default: all five]")] = "",
    workers: WorkersOpt = None,
    out: Annotated[Path | None, typer.Option(help="output directory \\[default: results/papers]")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace a previous evgrid result in --out (only that)")
    ] = False,
) -> None:
    """Every seed paper's headline numbers beside ours, each paper's reproduction run in full (about 6 min)."""
    from experiments.fidelity import PAPERS, TITLES, _headlines, run_papers
    from sim.result import OutputError, check_output_dir, command_provenance, staged_output

    chosen = tuple(p.strip() for p in only.split(",") if p.strip()) or PAPERS
    if any(p not in PAPERS for p in chosen) or len(set(chosen)) != len(chosen):
        _fail(f"--only: got '{only}'; allowed: comma-separated, each one of {', '.join(PAPERS)}")
    if workers is not None and workers < 1:
        _fail(f"--workers: got {workers}; allowed: integer >= 1")
    from experiments.engine import default_workers

    try:
        target = check_output_dir(out or Path("results") / "papers", replace=force)
    except OutputError as err:
        _fail(str(err))
    args = {"only": list(chosen), "workers": workers}
    with staged_output(target, command_provenance("papers", args), replace=force) as staged:
        df = run_papers(staged, chosen, workers=workers or default_workers(), say=lambda m: typer.echo(m, err=True))
        df.to_csv(staged / "papers.csv", index=False)
        md = ["| paper | headline | paper's | ours | regenerated by |", "|---|---|---:|---:|---|"]
        md += [
            f"| {h.paper} | {h.metric} | {h.paper_text()} | {h.ours_text()} | `{h.source}` |" for h in _headlines(df)
        ]
        (staged / "papers.md").write_text("\n".join(md) + "\n")
    from rich.markup import escape

    from experiments.console import make_table, show

    t = make_table("the papers' headline numbers beside ours", [("paper", "left"), ("headline", "left"),
                   ("paper's", "right"), ("ours", "right")])  # fmt: skip
    rows = _headlines(df)
    for i, h in enumerate(rows):
        first, last = i == 0 or rows[i - 1].paper != h.paper, i + 1 == len(rows) or rows[i + 1].paper != h.paper
        label = f"{h.paper} {escape(TITLES[h.paper])}" if first else ""
        t.add_row(label, escape(h.metric), escape(h.paper_text()), h.ours_text(), end_section=last)
    show(t)
    typer.echo(f"results written to {target.resolve()} (papers.md; each paper's own tables in its folder)")
