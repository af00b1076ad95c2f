"""One replication of a study point: the task, its run under the fault-injection hooks, and the row it records
(or the failed row)."""

from __future__ import annotations

import functools
import gc
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.design import Point
from sim.scenario import Scenario, apply_overrides, validate

FAULT_ENV = "EVGRID_FAULT_INJECT"


FAULT_SLEEP_ENV = "EVGRID_FAULT_SLEEP_S"


FAULT_TRACE_ENV = "EVGRID_FAULT_TRACE"


MAX_ATTEMPTS = 3  # a replication whose worker dies this many times is stored as failed


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
    row.update(status="failed", error=error, wall_s=0.0, cpu_s=0.0)
    return row


def import_frozen() -> None:
    """Import the simulation stack with the garbage collector paused, then freeze what the process holds, as
    ``evgrid`` does in its own process (experiments/cli.py `preload`). For worker processes, before their first task.

    The ~4·10^5 objects of the imports live as long as the process; unfrozen, every full collection walks them
    again: 10–11 ms of collector per default-study replication, 3.6–3.8 ms frozen (measured). Thresholds stay
    Python's, so what a replication leaves behind is collected as before; no result depends on it.
    """
    if "sim.model" in sys.modules:  # imported already (then frozen or not by whoever imported it)
        return
    gc.disable()
    try:
        import sim.model  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


def run_replication(task: Task) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one replication; never raises (a failure is returned as a ``failed`` row with its traceback)."""
    from sim.model import CoSimulation

    _fault_hooks(task)
    t0, c0 = time.perf_counter(), time.process_time()
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
    row["cpu_s"] = time.process_time() - c0  # whole-process CPU: on a Dask worker its own threads count too
    return row, series
