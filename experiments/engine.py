"""Studies: Monte Carlo replications and parameter sweeps, run locally or on a Dask cluster, stored as they finish.

Seeds: replication ``i`` of a study with root seed ``s`` always runs with ``SeedSequence(s, spawn_key=(i,))``,
whatever the number of replications, workers or machines. Every parameter point of a sweep sees the same
replication seeds (common random numbers), so differences between points are the parameter's, not the noise's.

Backends (multiprocessing and Dask; the pool's only own logic is knowing which task each worker runs):

* ``workers = 1`` — in this process;
* ``workers = K`` — K spawned worker processes fed one task at a time over pipes (each imports the package once
  and runs many replications; compiled grids are cached per worker);
* ``scheduler = "local"`` — a `distributed.LocalCluster` of K single-threaded worker processes;
* ``scheduler = "tcp://host:8786"`` — an existing Dask cluster (its workers need this package installed).

The parent process writes every finished replication to the `Store` at once; workers only compute.

Faults (see docs/studies.md, "When things go wrong"):

* a worker process that dies (SIGKILL, OOM killer, segfault) is replaced and the replication it was running is
  re-queued; a replication that kills its worker `MAX_ATTEMPTS` times is stored as ``failed`` with the cause.
  With Dask the scheduler does the same (``distributed.scheduler.allowed-failures``; `KilledWorker` → ``failed``);
* every result is stored as it arrives and then released (Dask never recomputes stored work after a loss);
* workers ignore SIGINT (the parent stops them: queued tasks are dropped, running ones killed); pool workers end
  themselves when the parent dies (PR_SET_PDEATHSIG on Linux, and a thread watching the parent's pid), Dask's
  local workers by distributed's own parent watch, so a killed study leaves no orphan.

Fault injection (tests) through environment variables, read by the workers:

* ``EVGRID_FAULT_INJECT`` — comma-separated items: ``rep`` or ``point:rep`` raise on purpose (a ``failed``
  replication); ``kill@rep`` or ``kill@point:rep`` SIGKILL the process running that replication (every attempt);
* ``EVGRID_FAULT_SLEEP_S`` — each replication first sleeps this long [s] (so a test can interrupt mid-study);
* ``EVGRID_FAULT_TRACE`` — a file to which each replication appends ``point rep pid`` when it starts.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from experiments.design import ALIASES as ALIASES
from experiments.design import Point, factorial, one_at_a_time, parse_grid
from experiments.design import expand_override as expand_override
from experiments.pool import Notice, _children_ignore_sigint, _execute_pool, _stderr
from experiments.pool import dask_setup as dask_setup
from experiments.pool import default_workers as default_workers
from experiments.replication import FAULT_ENV as FAULT_ENV
from experiments.replication import FAULT_SLEEP_ENV as FAULT_SLEEP_ENV
from experiments.replication import FAULT_TRACE_ENV as FAULT_TRACE_ENV
from experiments.replication import MAX_ATTEMPTS, Task, _cached_versions, _scenario, failed_row, run_replication
from sim.scenario import Scenario, ScenarioError, parse_override


@dataclass
class Study:
    """A set of (point, replication) tasks over one base scenario."""

    kind: str
    scenario: Scenario
    points: list[Point]
    n: int
    root_seed: int
    timeseries: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ScenarioError(f"-n: got {self.n}; allowed: integer >= 1")
        unknown = set(self.timeseries) - {"steps", "bus", "line", "station_step", "evs", "stations", "lsf"}
        if unknown:
            raise ScenarioError(
                f"--timeseries: unknown {sorted(unknown)}; allowed: steps, bus, line, station_step, evs, stations, lsf"
            )
        # validate every point now: a typo in a grid must fail before anything runs
        from markets.base import MarketConfigError

        n_groups = len(self.scenario.fleet.groups)
        for p in self.points:
            try:
                sc = _scenario(self.scenario_json, tuple(p.overrides(n_groups)))
                sc.market.build()
            except (ScenarioError, MarketConfigError) as err:
                raise ScenarioError(f"point '{p.label}': {err}".replace("\n", "; ")) from None

    @functools.cached_property
    def scenario_json(self) -> str:
        return json.dumps(self.scenario.model_dump(mode="json"), sort_keys=True)

    def manifest(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "scenario": self.scenario.name,
            "scenario_hash": self.scenario.digest(),
            "scenario_data": json.loads(self.scenario_json),
            "root_seed": self.root_seed,
            "n": self.n,
            "points": [{"index": p.index, "label": p.label, "params": p.params} for p in self.points],
            "timeseries": list(self.timeseries),
            "versions": _cached_versions(),
            **self.extra,
        }

    def tasks(self, skip: AbstractSet[tuple[int, int]] = frozenset()) -> list[Task]:
        n_groups = len(self.scenario.fleet.groups)
        return [
            Task(p.index, r, tuple(p.params.items()), self.scenario_json, self.root_seed, self.timeseries, n_groups)
            for r in range(self.n)  # replication-major: early stops still cover every point
            for p in self.points
            if (p.index, r) not in skip
        ]


def execute(
    tasks: list[Task],
    on_result: Callable[[dict[str, Any], dict[str, Any]], None],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    notice: Notice | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> None:
    """Run tasks on the chosen backend, handing each result to ``on_result`` as soon as it is done.

    ``notice`` receives one-line messages for the user (a worker died, waiting for workers); default: stderr.
    A replication whose worker dies is re-run, up to ``max_attempts`` attempts in all, then handed to
    ``on_result`` as a ``failed`` row naming the cause. An exception raised by ``on_result`` (e.g. a full disk)
    or a KeyboardInterrupt stops the workers at once and propagates.
    """
    if not tasks:
        return
    say = notice or _stderr
    if scheduler:
        _execute_dask(tasks, on_result, workers=workers, scheduler=scheduler, notice=say, max_attempts=max_attempts)
    elif workers <= 1:
        for t in tasks:
            on_result(*run_replication(t))
    else:
        _execute_pool(tasks, on_result, workers=workers, notice=say, max_attempts=max_attempts)


# ---------------------------------------------------------------------------------------------- Dask
NO_WORKER_GRACE_S = 5.0


def _watch_workers(client: Any, address: str, notice: Notice, stop: threading.Event) -> None:
    """Tell the user when no worker has been connected for `NO_WORKER_GRACE_S`, and when workers are back."""
    since: float | None = None
    told = False
    while not stop.wait(1.0):
        try:
            n = len(client.nthreads())
        except Exception:  # the scheduler is briefly unreachable: the next poll tells
            continue
        if n == 0:
            since = since if since is not None else time.monotonic()
            if not told and time.monotonic() - since >= NO_WORKER_GRACE_S:
                notice(
                    f"waiting for workers: none is connected to the scheduler {address}; "
                    "the study goes on when one connects (Ctrl-C stops it, --resume continues it)"
                )
                told = True
        else:
            if told:
                notice(f"{n} worker(s) connected; the study goes on")
            since, told = None, False


def _execute_dask(
    tasks: list[Task],
    on_result: Callable[..., None],
    *,
    workers: int,
    scheduler: str,
    notice: Notice,
    max_attempts: int,
) -> None:
    """Submit every task, store each result as it completes and release it at once.

    Released results are no longer held by the cluster, so a lost worker costs only the replications it was
    running (and results not yet fetched), never stored ones. A task whose worker dies ``max_attempts`` times
    (`KilledWorker`) becomes a failed row. ``scheduler="local"`` starts a `LocalCluster` on 127.0.0.1 only; the
    attempt limit applies to it — an external scheduler uses its own ``distributed.scheduler.allowed-failures``.
    """
    import logging

    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    # A connection that closes while the study stops (Ctrl-C kills the local workers) is logged by
    # distributed.batched at INFO with a traceback; LocalCluster's silence_logs covers it only until close() restores
    # the handler's level, and the message comes later, from the event loop. The logger's own level stays.
    logging.getLogger("distributed.batched").setLevel(logging.ERROR)
    cluster = None
    # no profiler on local workers: it samples each replication every 10 ms (~10 % CPU), for a dashboard they lack
    cfg = {"distributed.scheduler.allowed-failures": max_attempts - 1, "distributed.worker.profile.enabled": False}
    with dask.config.set(cfg):
        if scheduler == "local":
            with _children_ignore_sigint():  # Ctrl-C is handled here, which stops the cluster
                cluster = LocalCluster(
                    host="127.0.0.1",  # never reachable from another machine (tasks are pickles)
                    n_workers=max(workers, 1),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                    preload=[__name__],  # dask_setup: restarted workers ignore SIGINT too
                )
                client = Client(cluster)
        else:
            client = Client(scheduler)
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_workers, args=(client, scheduler, notice, stop), name="evgrid-dask-watch", daemon=True
    )
    pending: dict[Any, tuple[Any, Task]] = {}
    clean = False
    try:
        watcher.start()
        futures = client.map(run_replication, tasks, pure=False, retries=max_attempts - 1)
        pending = {f.key: (f, t) for f, t in zip(futures, tasks)}
        results = as_completed(futures)
        del futures
        for fut in results:
            _, task = pending.pop(fut.key)
            try:
                row, series = fut.result()
            except KilledWorker as err:
                row, series = failed_row(task, f"WorkerDied: {err}"), {}
                notice(f"warning: point {task.point} rep {task.rep} killed its Dask workers; stored as failed")
            except Exception as err:  # raised outside run_replication (e.g. the package missing on a worker)
                row, series = failed_row(task, f"{type(err).__name__}: {err}"), {}
            on_result(row, series)
            fut.release()  # stored: the cluster may forget it (and never recompute it after a worker loss)
            del fut
        clean = True
    finally:
        stop.set()
        try:
            if pending:
                client.cancel([f for f, _ in pending.values()])
            client.close(timeout=5)
        finally:
            if cluster is not None:
                if not clean:  # interrupted or failed: a graceful close waits for running tasks (seconds)
                    _kill_local_workers()
                cluster.close(timeout=5)


def _kill_local_workers() -> None:
    """SIGKILL this process's `LocalCluster` worker processes (their results are not wanted any more)."""
    import multiprocessing as mp

    for proc in mp.active_children():
        if proc.name.startswith("Dask Worker process"):
            proc.kill()


def run_study(
    study: Study,
    store: Any,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    notice: Notice | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> dict[str, int]:
    """Run what the store does not hold yet; returns counts of ok and failed replications run now.

    Holds the store's lock from start to end (a second writer gets `StoreLockedError`). Raises `StoreError`
    if, at the end, a replication that was run has no part (never expected; the store is then incomplete).
    """
    from experiments.store import StoreError

    say = notice or _stderr
    store.create(study.manifest(), resume=resume)
    try:
        if store.cleaned:
            say(f"removed {len(store.cleaned)} temporary file(s) left by an interrupted run")
        done = store.done() if resume else set()
        if store.rejected:
            more = f" (and {len(store.rejected) - 1} more)" if len(store.rejected) > 1 else ""
            say(
                f"warning: {len(store.rejected)} stored part(s) do not belong to this study and are not counted; "
                f"they are run again: {store.rejected[0]}{more}"
            )
        todo = study.tasks(skip=done)
        counts = {"ok": 0, "failed": 0, "skipped": len(study.points) * study.n - len(todo)}

        def on_result(row: dict[str, Any], series: dict[str, Any]) -> None:
            store.write(row, series)
            counts[row["status"]] += 1
            if progress is not None:
                progress(counts["ok"] + counts["failed"], len(todo), counts["failed"])

        execute(todo, on_result, workers=workers, scheduler=scheduler, notice=say, max_attempts=max_attempts)
        missing = sorted({(t.point, t.rep) for t in todo} - store.stored())
        if missing:
            raise StoreError(
                f"{store.root}: {len(missing)} replication(s) were run but are not stored "
                f"(first: point {missing[0][0]} rep {missing[0][1]}); run again with --resume"
            )
    finally:
        store.unlock()
    return counts


STUDY_DIR = __import__("pathlib").Path(__file__).resolve().parent / "studies"


def make_sweep(
    scenario: Scenario,
    grid: list[str] | list[tuple[str, list[Any]]],
    *,
    n: int,
    oat: bool = False,
    baseline: list[str] | dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Study:
    """A sweep study: full factorial (or one-at-a-time) points, plus an optional 'baseline' point."""
    grids = [parse_grid(g) if isinstance(g, str) else g for g in grid]
    points = one_at_a_time(grids) if oat else factorial(grids)
    if baseline and not oat:
        if isinstance(baseline, dict):
            params = dict(baseline)
        else:
            params = {}
            for text in baseline:
                path, value = parse_override(text)
                params[".".join(path)] = value
        points.append(Point(len(points), params, "baseline"))
    return Study("oat" if oat else "sweep", scenario, points, n, scenario.seed, extra=extra or {})


def load_study_file(
    name: str, *, n: int | None = None, seed: int | None = None, overrides: list[str] | None = None
) -> tuple[Study, str]:
    """A ready study (``experiments/studies/<name>.toml``) or a study TOML file → (Study, label).

    ``overrides`` (``key=value``, as ``--set``) apply to the study's scenario after the study's own ``set``.
    """
    from pathlib import Path

    from sim.scenario import load_scenario, read_toml

    path = Path(name)
    if path.suffix != ".toml":
        path = STUDY_DIR / f"{name}.toml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in STUDY_DIR.glob("*.toml")))
        raise ScenarioError(f"study: '{name}' is neither a file nor a ready study; allowed: {names}")
    spec = read_toml(path)
    allowed = {
        "description",
        "kind",
        "scenario",
        "n",
        "seed",
        "set",
        "grid",
        "baseline",
        "headline_kpis",
        "paper_table",
        "points",
        "roc",
    }
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ScenarioError(f"{path.name}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(allowed))}")
    kind = spec.get("kind", "sweep")
    if kind not in ("sweep", "oat", "montecarlo", "points"):
        raise ScenarioError(f"{path.name}: kind '{kind}'; allowed: sweep, oat, montecarlo, points")
    sc = load_scenario(
        spec.get("scenario", "default"),
        [*spec.get("set", []), *(overrides or [])],
        seed if seed is not None else spec.get("seed"),
    )
    reps = int(n if n is not None else spec.get("n", 20))
    extra = {"study": path.stem, "headline_kpis": spec.get("headline_kpis"), "paper_table": spec.get("paper_table")}
    if kind == "montecarlo":
        return Study("montecarlo", sc, [Point(0, {}, "scenario")], reps, sc.seed, extra=extra), path.stem
    if kind == "points":  # named points, each a set of overrides, all on the same replication seeds
        pts = spec.get("points", [])
        if not pts or not all(isinstance(p, dict) and isinstance(p.get("label"), str) for p in pts):
            raise ScenarioError(f"{path.name}: [[points]] needs at least one point, each with a label")
        labels = [p["label"] for p in pts]
        if len(set(labels)) != len(labels):
            raise ScenarioError(f"{path.name}: points.label must be unique, got {labels}")
        points = [Point(i, dict(p.get("set", {})), p["label"]) for i, p in enumerate(pts)]
        series = ("steps",) if spec.get("roc") else ()
        return Study(
            "points", sc, points, reps, sc.seed, series, extra={**extra, "roc": bool(spec.get("roc"))}
        ), path.stem
    grids = [(k, v if isinstance(v, list) else [v]) for k, v in spec.get("grid", {}).items()]
    if not grids:
        raise ScenarioError(f"{path.name}: [grid] needs at least one parameter")
    return make_sweep(sc, grids, n=reps, oat=kind == "oat", baseline=spec.get("baseline"), extra=extra), path.stem


def describe_studies() -> list[tuple[str, str]]:
    """(name, one-line description) of each ready study."""
    from sim.scenario import read_toml

    return [(p.stem, str(read_toml(p).get("description", "")).strip()) for p in sorted(STUDY_DIR.glob("*.toml"))]
