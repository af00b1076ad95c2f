"""Studies: Monte Carlo replications and parameter sweeps, run locally or on a Dask cluster, stored as they finish.

Seeds: replication ``i`` of a study with root seed ``s`` always runs with ``SeedSequence(s, spawn_key=(i,))``,
whatever the number of replications, workers or machines. Every parameter point of a sweep sees the same
replication seeds (common random numbers), so differences between points are the parameter's, not the noise's.

Backends (nothing home-made for distribution):

* ``workers = 1`` — in this process;
* ``workers = K`` — a `concurrent.futures.ProcessPoolExecutor` of K spawned worker processes (each imports the
  package once and runs many replications; compiled grids are cached per worker);
* ``scheduler = "local"`` — a `distributed.LocalCluster` of K single-threaded worker processes;
* ``scheduler = "tcp://host:8786"`` — an existing Dask cluster (its workers need this package installed).

The parent process writes every finished replication to the `Store` at once; workers only compute.

Fault injection (tests): the environment variable ``EVGRID_FAULT_INJECT`` lists replications that raise on
purpose, as ``rep`` or ``point:rep`` items separated by commas.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
import traceback
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.scenario import Scenario, ScenarioError, apply_overrides, parse_override, validate

FAULT_ENV = "EVGRID_FAULT_INJECT"

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


def _injected(point: int, rep: int) -> bool:
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        if ":" in item:
            p, r = item.split(":")
            if int(p) == point and int(r) == rep:
                return True
        elif int(item) == rep:
            return True
    return False


def run_replication(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one replication; never raises (a failure is returned as a ``failed`` row with its traceback)."""
    from sim.model import CoSimulation

    t0 = time.perf_counter()
    point = task.point_obj
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
    for key, value in point.params.items():
        row[f"param.{key}"] = (
            float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
        )
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


def execute(
    tasks: list[Task],
    on_result: Callable[[dict[str, Any], dict[str, Any]], None],
    *,
    workers: int = 1,
    scheduler: str | None = None,
) -> None:
    """Run tasks on the chosen backend, handing each result to ``on_result`` as soon as it is done."""
    if not tasks:
        return
    if scheduler:
        _execute_dask(tasks, on_result, workers=workers, scheduler=scheduler)
    elif workers <= 1:
        for t in tasks:
            on_result(*run_replication(t))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # "spawn": a fresh interpreter per worker (forking a process that holds BLAS/numba threads is unsafe);
        # passed per executor, never set globally.
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_replication, t) for t in tasks]
            for fut in as_completed(futures):
                on_result(*fut.result())


def _execute_dask(tasks: list[Task], on_result: Callable[..., None], *, workers: int, scheduler: str) -> None:
    import logging

    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=max(workers, 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = client.map(run_replication, tasks, pure=False)
        for fut in as_completed(futures):
            on_result(*fut.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_study(
    study: Study,
    store: Any,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> dict[str, int]:
    """Run what the store does not hold yet; returns counts of ok and failed replications run now."""
    store.create(study.manifest(), resume=resume)
    todo = study.tasks(skip=store.done() if resume else set())
    counts = {"ok": 0, "failed": 0, "skipped": len(study.points) * study.n - len(todo)}

    def on_result(row: dict[str, Any], series: dict[str, Any]) -> None:
        store.write(row, series)
        counts[row["status"]] += 1
        if progress is not None:
            progress(counts["ok"] + counts["failed"], len(todo), counts["failed"])

    execute(todo, on_result, workers=workers, scheduler=scheduler)
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
