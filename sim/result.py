"""`RunResult`: the tidy tables, KPIs and provenance of one run, and how they are written to disk."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from sim.scenario import Scenario

PACKAGES = ("evgrid", "mesa", "simpy", "pandapower", "numpy", "pandas", "scipy", "dimod", "highspy", "pydantic")


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(scenario: Scenario) -> dict[str, Any]:
    """Who/what produced a result: scenario hash, seed, package versions, git revision, platform."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "scenario": scenario.name,
        "scenario_hash": scenario.digest(),
        "seed": scenario.seed,
        "versions": versions,
        "git_revision": _git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item"):
        return _jsonable(x.item())
    return x


@dataclass
class RunResult:
    """Result of one run.

    Attributes:
        scenario: the resolved scenario.
        seed: the seed the run used.
        tables: tidy tables — ``steps`` (one row per step), ``bus`` (step × bus), ``line`` (step × line),
            ``station_step`` (step × station), ``evs`` (one row per EV), ``stations``, ``lsf`` (per bus).
        kpis: flat mapping of KPI name → value (units in the names; see `sim.kpis`).
        provenance: scenario hash, versions, git revision.
    """

    scenario: Scenario
    seed: Any
    tables: dict[str, pd.DataFrame]
    kpis: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path, *, plots: bool | None = None,
              extra: Callable[[Path], None] | None = None) -> Path:
        """Write tables (Parquet), KPIs (JSON), scenario (TOML), provenance and plots into ``out_dir``.

        The directory appears complete or not at all: everything is written into a temporary sibling that is
        renamed into place at the end (an existing ``out_dir`` is replaced).
        """
        import tomli_w

        out = Path(out_dir).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            (tmp / "tables").mkdir()
            skip = set()
            if not self.scenario.outputs.bus_table:
                skip |= {"bus", "line"}
            if not self.scenario.outputs.ev_table:
                skip.add("evs")
            for name, df in self.tables.items():
                if name not in skip:
                    df.to_parquet(tmp / "tables" / f"{name}.parquet", index=False)
            (tmp / "kpis.json").write_text(json.dumps({k: _jsonable(v) for k, v in self.kpis.items()}, indent=2))
            (tmp / "provenance.json").write_text(json.dumps({**self.provenance, "run_seed": str(self.seed)}, indent=2))
            (tmp / "scenario.toml").write_text(tomli_w.dumps(self.scenario.model_dump(mode="json", exclude_none=True)))
            if plots if plots is not None else self.scenario.outputs.plots:
                from experiments.plots import plot_run

                plot_run(self, tmp / "plots")
            if extra is not None:
                extra(tmp)
            if out.exists():
                old = out.with_name(f".{out.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    @classmethod
    def read(cls, out_dir: str | Path) -> "RunResult":
        """Load a result written by `write` (tables, KPIs, scenario, provenance)."""
        import tomllib

        from sim.scenario import validate

        d = Path(out_dir)
        tables = {p.stem: pd.read_parquet(p) for p in sorted((d / "tables").glob("*.parquet"))}
        kpis = json.loads((d / "kpis.json").read_text())
        prov = json.loads((d / "provenance.json").read_text())
        scenario = validate(tomllib.loads((d / "scenario.toml").read_text()))
        return cls(scenario=scenario, seed=prov.get("run_seed"), tables=tables, kpis=kpis, provenance=prov)
