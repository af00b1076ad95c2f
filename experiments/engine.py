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

import contextlib
import functools
import itertools
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.scenario import Scenario, ScenarioError, apply_overrides, parse_override, validate

FAULT_ENV = "EVGRID_FAULT_INJECT"
FAULT_SLEEP_ENV = "EVGRID_FAULT_SLEEP_S"
FAULT_TRACE_ENV = "EVGRID_FAULT_TRACE"
MAX_ATTEMPTS = 3  # a replication whose worker dies this many times is stored as failed

# Friendly parameter names → scenario paths (one name may set several paths).
ALIASES: dict[str, list[str]] = {
    "dr.participation": ["fleet.participation", "market.params.elasticity-dr.participation"],
    "dr.dr_max": ["market.params.elasticity-dr.dr_max"],
    "dr.elasticity": ["market.params.elasticity-dr.self_elasticity"],
    "ev.elasticity": ["market.params.elasticity-dr.self_elasticity", "fleet.groups.*.elasticity"],
    "ev.n": ["fleet.n_evs"],
    "dg.cost_scale": ["grid.dg_cost_scale"],
}


@dataclass(frozen=True)
class Point:
    """One parameter point of a study: its values and the scenario overrides that realise them."""

    index: int
    params: dict[str, Any]
    label: str = ""

    def overrides(self, n_groups: int) -> list[str]:
        return [o for key, value in self.params.items() for o in expand_override(key, value, n_groups)]


def _toml_literal(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return repr(float(value)) if isinstance(value, float) else str(value)


def expand_override(key: str, value: Any, n_groups: int) -> list[str]:
    """``--set`` strings for one parameter (aliases and ``fleet.groups.*`` expanded)."""
    paths = ALIASES.get(key, [key])
    out = []
    for path in paths:
        if path.endswith(".elasticity") and path.startswith("fleet.groups.*"):
            v = {"low": float(value), "high": float(value)}
        else:
            v = value
        targets = [path.replace("*", str(i)) for i in range(n_groups)] if "*" in path else [path]
        out += [f"{t}={_toml_literal(v)}" for t in targets]
    return out


def parse_grid(text: str) -> tuple[str, list[Any]]:
    """``key=v1,v2,v3`` or ``key=start:stop:count`` (inclusive linspace) → (key, values)."""
    path, raw = parse_override(text)
    key = ".".join(path)
    if isinstance(raw, str) and raw.count(":") == 2 and "," not in raw:
        try:
            a, b, n = raw.split(":")
            count = int(n)
            if count < 1:
                raise ValueError
            values = [round(float(v), 12) for v in np.linspace(float(a), float(b), count)]
        except ValueError:
            raise ScenarioError(f"--grid {text}: expected start:stop:count with count >= 1") from None
        return key, values
    if isinstance(raw, str):
        values = [parse_override(f"v={v.strip()}")[1] for v in raw.split(",") if v.strip()]
    elif isinstance(raw, (int, float)):  # a single TOML number, or "a,b" read as a string above
        values = [raw]
    elif isinstance(raw, list):
        values = raw
    else:
        values = [raw]
    if not values:
        raise ScenarioError(f"--grid {text}: no values")
    return key, values


def factorial(grids: list[tuple[str, list[Any]]]) -> list[Point]:
    """Full factorial design over the grids."""
    keys = [k for k, _ in grids]
    combos = itertools.product(*(v for _, v in grids)) if grids else [()]
    return [Point(i, dict(zip(keys, c)), ", ".join(f"{k}={v}" for k, v in zip(keys, c))) for i, c in enumerate(combos)]


def one_at_a_time(grids: list[tuple[str, list[Any]]]) -> list[Point]:
    """Point 0 is the scenario as written (baseline); then each parameter value alone."""
    pts = [Point(0, {}, "baseline")]
    for key, values in grids:
        for v in values:
            pts.append(Point(len(pts), {key: v}, f"{key}={v}"))
    return pts


@dataclass(frozen=True)
class Task:
    """Everything a worker needs to run one replication (picklable, small)."""

    point: int
    rep: int
    params: tuple[tuple[str, Any], ...]
    scenario_json: str
    root_seed: int
    timeseries: tuple[str, ...] = ()
    n_groups: int = 1

    @property
    def point_obj(self) -> Point:
        return Point(self.point, dict(self.params))


@functools.lru_cache(maxsize=64)
def _scenario(scenario_json: str, overrides: tuple[str, ...]) -> Scenario:
    data = json.loads(scenario_json)
    return validate(apply_overrides(data, list(overrides)) if overrides else data)


@functools.lru_cache(maxsize=1)
def _cached_versions() -> dict[str, Any]:
    from importlib import metadata

    from sim.result import PACKAGES

    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def _fault_items(kind: str) -> list[tuple[int | None, int]]:
    """(point or None, rep) items of ``EVGRID_FAULT_INJECT`` of one kind: "raise" (bare) or "kill" (``kill@``)."""
    out: list[tuple[int | None, int]] = []
    for item in filter(None, (s.strip() for s in os.environ.get(FAULT_ENV, "").split(","))):
        prefix, _, spec = item.rpartition("@")
        if (prefix or "raise") != kind:
            continue
        p, _, r = spec.rpartition(":")
        out.append((int(p) if p else None, int(r)))
    return out


def _injected(point: int, rep: int, kind: str = "raise") -> bool:
    return any(p in (None, point) and r == rep for p, r in _fault_items(kind))


def _fault_hooks(task: Task) -> None:
    """Test hooks (module docstring): trace the start, sleep, kill this process."""
    trace = os.environ.get(FAULT_TRACE_ENV)
    if trace:
        fd = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:  # one short O_APPEND write per line: lines of concurrent workers never interleave
            os.write(fd, f"{task.point} {task.rep} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
    delay_s = float(os.environ.get(FAULT_SLEEP_ENV, "0") or 0)
    if delay_s > 0:
        time.sleep(delay_s)
    if _injected(task.point, task.rep, "kill"):
        os.kill(os.getpid(), signal.SIGKILL)


def _base_row(task: Task) -> dict[str, Any]:
    row: dict[str, Any] = {
        "point": task.point,
        "rep": task.rep,
        "status": "",
        "error": "",
        "traceback": "",
        "root_seed": task.root_seed,
        "scenario_hash": "",
        "versions": json.dumps(_cached_versions()),
    }
    for key, value in task.point_obj.params.items():
        row[f"param.{key}"] = (
            float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        )
    return row


def failed_row(task: Task, error: str) -> dict[str, Any]:
    """The ``failed`` row of a replication that could not run to its end (e.g. it kept killing its worker)."""
    row = _base_row(task)
    try:
        row["scenario_hash"] = _scenario(task.scenario_json, tuple(task.point_obj.overrides(task.n_groups))).digest()
    except Exception:  # the row must be stored whatever the scenario does; its hash is then unknown
        pass
    row.update(status="failed", error=error, wall_s=0.0)
    return row


def run_replication(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one replication; never raises (a failure is returned as a ``failed`` row with its traceback)."""
    from sim.model import CoSimulation

    _fault_hooks(task)
    t0 = time.perf_counter()
    point = task.point_obj
    row = _base_row(task)
    try:
        sc = _scenario(task.scenario_json, tuple(point.overrides(task.n_groups)))
        row["scenario_hash"] = sc.digest()
        if _injected(task.point, task.rep):
            raise RuntimeError(f"fault injected by {FAULT_ENV} (point {task.point}, rep {task.rep})")
        seed = np.random.SeedSequence(task.root_seed, spawn_key=(task.rep,))
        result = CoSimulation(sc, seed=seed).run()
        for k, v in result.kpis.items():
            row[f"kpi.{k}"] = float(v) if isinstance(v, (int, float, np.integer, np.floating)) else v
        series = {name: result.tables[name] for name in task.timeseries}
        row["status"] = "ok"
    except Exception as err:  # a replication's failure is data: recorded, and the study goes on
        row["status"] = "failed"
        row["error"] = f"{type(err).__name__}: {err}"
        row["traceback"] = traceback.format_exc()
        series = {}
    row["wall_s"] = time.perf_counter() - t0
    return row, series


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


def default_workers() -> int:
    """Worker processes sized to the machine (the CPUs this process may use)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


Notice = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


# ---------------------------------------------------------------------------------------------- process pool
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 0.5


def _watch_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` is no longer its parent (the parent died, however it died).

    Linux: the kernel sends SIGKILL at the parent's death (PR_SET_PDEATHSIG); everywhere: a daemon thread polls
    ``os.getppid()`` (a dead parent's children are re-parented) as a fallback.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the thread below still works
            pass
    if os.getppid() != parent_pid:  # died before the watch was set
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="evgrid-parent-watch", daemon=True).start()


def _pool_worker(conn: Any, parent_pid: int) -> None:
    """A pool worker: run the tasks the parent sends, one at a time, until it sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    _watch_parent(parent_pid)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(run_replication(task))


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Processes started inside ignore SIGINT from their first instruction on.

    A terminal's Ctrl-C reaches the whole process group; the parent handles it and stops its workers, which
    must not die on their own with a KeyboardInterrupt traceback each (even in the middle of their imports).
    An ignored signal stays ignored across exec (a handler does not), and Python then leaves SIGINT alone. Only
    the main thread may change a disposition; from another thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def dask_setup(worker: Any) -> None:
    """Dask preload of `LocalCluster` workers (run in each worker's main thread): ignore SIGINT, as above.

    Covers workers that a nanny restarts after a death, which `_children_ignore_sigint` cannot reach.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class _Worker:
    proc: Any
    conn: Any
    task: Task | None = None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _execute_pool(
    tasks: list[Task], on_result: Callable[..., None], *, workers: int, notice: Notice, max_attempts: int
) -> None:
    """K spawned worker processes, each fed one task at a time over its own pipe.

    Not `concurrent.futures.ProcessPoolExecutor`: there one dead worker breaks the whole pool (BrokenProcessPool)
    and nobody knows which task killed it. Here the parent knows which task each worker runs, so a dead worker's
    task is re-queued (or, at its ``max_attempts``-th death, stored as failed) and a new worker replaces it.
    """
    import collections
    import multiprocessing as mp
    from multiprocessing.connection import wait

    # "spawn": a fresh interpreter per worker (forking a process that holds BLAS/numba threads is unsafe);
    # passed per pool, never set globally.
    ctx = mp.get_context("spawn")
    queue = collections.deque(tasks)
    deaths: collections.Counter[tuple[int, int]] = collections.Counter()
    pool: list[_Worker] = []
    parent = os.getpid()

    def start() -> _Worker:
        ours, theirs = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_pool_worker, args=(theirs, parent), name="evgrid-worker", daemon=True)
        with _children_ignore_sigint():
            proc.start()
        theirs.close()
        return _Worker(proc, ours)

    def busy() -> int:
        return sum(w.task is not None for w in pool)

    clean = False
    try:
        pool += [start() for _ in range(min(workers, len(queue)))]
        while queue or busy():
            for w in pool:
                if w.task is None and queue:
                    w.task = queue.popleft()
                    try:
                        w.conn.send(w.task)
                    except OSError:  # it died: seen through its sentinel below
                        pass
            ready = set(wait([w.conn for w in pool if w.task is not None] + [w.proc.sentinel for w in pool]))
            for w in list(pool):
                if w.task is not None and w.conn in ready:
                    try:
                        row, series = w.conn.recv()
                    except (EOFError, OSError):  # died mid-task: handled as a death below
                        pass
                    else:
                        w.task = None
                        on_result(row, series)
                if w.proc.sentinel not in ready:
                    continue
                w.proc.join()
                w.conn.close()
                pool.remove(w)
                cause = _death(w.proc.exitcode)
                if w.task is not None:
                    key = (w.task.point, w.task.rep)
                    deaths[key] += 1
                    if deaths[key] >= max_attempts:
                        notice(
                            f"warning: point {key[0]} rep {key[1]} killed its worker {deaths[key]} times "
                            f"(last: {cause}); stored as failed"
                        )
                        on_result(
                            failed_row(
                                w.task,
                                f"WorkerDied: the worker process died {deaths[key]} times while running this "
                                f"replication (last: {cause})",
                            ),
                            {},
                        )
                    else:
                        notice(
                            f"warning: worker process {w.proc.pid} died ({cause}) while running point {key[0]} "
                            f"rep {key[1]}; a new worker runs it again (attempt {deaths[key] + 1} of {max_attempts})"
                        )
                        queue.appendleft(w.task)
                if len(pool) < min(workers, len(queue) + busy()):
                    pool.append(start())
        clean = True
    finally:
        for w in pool:
            if clean:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            else:  # interrupted or failed: queued tasks are dropped with the workers, at once
                w.proc.kill()
        for w in pool:
            w.proc.join(timeout=5 if clean else None)
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join()
            w.conn.close()


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

    cluster = None
    with dask.config.set({"distributed.scheduler.allowed-failures": max_attempts - 1}):
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


def load_study_file(name: str, *, n: int | None = None, seed: int | None = None) -> tuple[Study, str]:
    """A ready study (``experiments/studies/<name>.toml``) or a study TOML file → (Study, label)."""
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
        spec.get("scenario", "default"), list(spec.get("set", [])), seed if seed is not None else spec.get("seed")
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
