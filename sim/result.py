"""`RunResult`: the tidy tables, KPIs and provenance of one run, and how they are written to disk."""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from sim.scenario import Scenario

PACKAGES = ("evgrid", "mesa", "simpy", "pandapower", "numpy", "pandas", "scipy", "dimod", "highspy", "pydantic")


PROVENANCE = "provenance.json"
_STAGING = ".evgrid-tmp-"


class OutputError(ValueError):
    """An output folder cannot be used (not ours, not empty, the working directory, not writable)."""


def is_result_dir(path: Path) -> bool:
    """True if ``path`` holds an evgrid result: a provenance file of ours (scenario hash, package versions)."""
    try:
        prov = json.loads((path / PROVENANCE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(prov, dict) and "scenario_hash" in prov and "evgrid" in (prov.get("versions") or {})


def check_output_dir(out_dir: str | Path, *, replace: bool = False, where: str = "--out") -> Path:
    """Resolve an output folder and refuse one that writing would destroy user data in.

    Allowed: a path that does not exist (its parent must be creatable and writable), an empty folder, and — with
    ``replace`` — a folder holding a previous evgrid result (`is_result_dir`). Never the working directory, one of
    its ancestors, the home folder or the root. Nothing is changed (a probe folder is made and removed at once).

    Raises:
        OutputError: one line naming the folder and what is allowed.
    """
    out = Path(out_dir).expanduser().absolute()
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or resolved == Path.home().resolve() or resolved.parent == resolved:
        raise OutputError(
            f"{where}: '{out_dir}' is the working directory, one of its parents, home or root; name a new folder"
        )
    if out.is_symlink():
        raise OutputError(f"{where}: '{out_dir}' is a symbolic link; name a real folder")
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"{where}: '{out_dir}' exists and is not a folder")
        if any(p.name != ".DS_Store" for p in out.iterdir()):
            if not is_result_dir(out):
                raise OutputError(
                    f"{where}: '{out_dir}' is not empty and holds no evgrid result; refusing to touch "
                    "it (name a new or empty folder)"
                )
            if not replace:
                raise OutputError(f"{where}: '{out_dir}' holds a previous evgrid result; pass --force to replace it")
        if not _can_create_in(out.parent):
            raise OutputError(f"{where}: cannot write in '{out.parent}' (permission denied)")
        return out
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not _can_create_in(parent):
        raise OutputError(f"{where}: cannot create '{out_dir}' ('{parent}' is not a writable folder)")
    return out


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can be made in ``folder``: asked (`os.access`), then tried with a hidden folder removed at
    once — to root `os.access` says yes everywhere, also where the file system refuses (sysfs, a read-only bind
    mount), and the refusal then came only after the whole simulation, as a traceback."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        probe = tempfile.mkdtemp(prefix=".evgrid-probe-", dir=folder)
    except OSError:
        return False
    with contextlib.suppress(OSError):  # it could be made, which is the answer; an empty folder is all it leaves
        os.rmdir(probe)
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_dir(out: Path) -> Path:
    """A fresh temporary sibling of ``out`` to write into, with the permissions of a folder made under the umask.

    Staging folders left by killed runs (their process is gone) are removed first.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}{_STAGING}"
    for old in out.parent.glob(f"{glob.escape(prefix)}*"):
        pid = old.name[len(prefix) :].split("-", 1)[0]
        if old.is_dir() and not old.is_symlink() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def publish(tmp: Path, out: Path, *, replace: bool = False) -> None:
    """Move a finished staging folder into place (checks ``out`` again; see `check_output_dir`)."""
    check_output_dir(out, replace=replace)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}{_STAGING}{os.getpid()}-old-", dir=out.parent))
        os.replace(out, old / "previous")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextmanager
def staged_output(out: Path, prov: dict[str, Any], *, replace: bool = False) -> Iterator[Path]:
    """Write a command's outputs into a staging sibling of ``out`` and move it into place when the block ends.

    ``out`` must already have passed `check_output_dir` (it is checked again when published). The provenance
    ``prov`` is written as ``provenance.json``, which is what lets ``--force`` replace this folder later. If the
    block raises (or is interrupted), the staging folder is removed and ``out`` is untouched.
    """
    tmp = staging_dir(out)
    try:
        yield tmp
        (tmp / PROVENANCE).write_text(json.dumps(_jsonable(prov), indent=2))
        publish(tmp, out, replace=replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def package_versions() -> dict[str, str | None]:
    """Installed versions of evgrid and the packages a result depends on (None when not installed)."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> tuple[tuple[str, str | None], ...]:
    # once per process: reading package metadata costs ~10 ms a package, and a study worker runs many replications
    out: list[tuple[str, str | None]] = []
    for p in PACKAGES:
        try:
            out.append((p, metadata.version(p)))
        except metadata.PackageNotFoundError:
            out.append((p, None))
    return tuple(out)


def command_provenance(command: str, args: dict[str, Any], scenario: Scenario | None = None) -> dict[str, Any]:
    """Provenance of a command's output folder: the scenario's (when there is one) plus the command and its
    arguments; ``scenario_hash`` is then the digest of the scenario and the arguments together."""
    import hashlib

    base = (
        provenance(scenario)
        if scenario is not None
        else {
            "versions": package_versions(),
            "git_revision": _git_revision(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
    )
    key = json.dumps(
        {"command": command, "args": _jsonable(args), "scenario": base.get("scenario_hash")}, sort_keys=True
    )
    return {
        **base,
        "command": command,
        "args": _jsonable(args),
        "scenario_hash": hashlib.sha256(key.encode()).hexdigest(),
    }


@functools.cache
def _git_revision() -> str:
    """The checkout's commit, asked once per process (a `git` subprocess forked from a large worker is not free)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(scenario: Scenario) -> dict[str, Any]:
    """Who/what produced a result: scenario hash, seed, package versions, git revision, platform."""
    versions = package_versions()
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
            ``station_step`` (step × station), ``evs`` (one row per EV), ``stations``, ``lsf`` (per bus),
            ``soc_fleet`` (SOC percentiles of the plugged EVs per step), ``soc_evs`` (step × a few EVs' SOC).
        kpis: flat mapping of KPI name → value (units in the names; see `sim.kpis`).
        provenance: scenario hash, versions, git revision.
        warnings: what the user should know about how the scenario was applied (e.g. a station zone the network
            lacks, replaced by all load buses); written into ``provenance.json`` and printed by ``evgrid run``.

    Bus numbers in every table (``bus``, ``evs``, ``stations``, ``lsf``) and in ``kpis["vmin_bus"]`` are pandapower
    bus indices; ``line`` holds pandapower line indices.
    """

    scenario: Scenario
    seed: Any
    tables: dict[str, pd.DataFrame]
    kpis: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def write(
        self,
        out_dir: str | Path,
        *,
        plots: Callable[[RunResult, Path], object] | None = None,
        extra: Callable[[Path], None] | None = None,
        replace: bool = False,
    ) -> Path:
        """Write tables (Parquet), KPIs (JSON), scenario (TOML), provenance and plots into ``out_dir``.

        The directory appears complete or not at all: everything is written into a temporary sibling that is
        renamed into place at the end. ``out_dir`` must not exist, be empty, or — with ``replace`` — hold a previous
        evgrid result (see `check_output_dir`); anything else raises `OutputError` before a byte is written.

        Args:
            plots: called as ``plots(result, folder)`` to draw the plots (the caller chooses the plotting module;
                None = no plots).
            extra: called with the staging folder to add files of the caller's own.
            replace: replace a previous evgrid result in ``out_dir``.
        """
        import tomli_w

        out = check_output_dir(out_dir, replace=replace)
        tmp = staging_dir(out)
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
            (tmp / "scenario.toml").write_text(tomli_w.dumps(self.scenario.model_dump(mode="json", exclude_none=True)))
            if plots is not None:
                plots(self, tmp / "plots")
            if extra is not None:
                extra(tmp)
            prov = {**self.provenance, "run_seed": str(self.seed), "warnings": list(self.warnings)}
            (tmp / PROVENANCE).write_text(json.dumps(prov, indent=2))
            publish(tmp, out, replace=replace)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    @classmethod
    def read(cls, out_dir: str | Path) -> RunResult:
        """Load a result written by `write` (tables, KPIs, scenario, provenance)."""
        import tomllib

        from sim.scenario import validate

        d = Path(out_dir)
        tables = {p.stem: pd.read_parquet(p) for p in sorted((d / "tables").glob("*.parquet"))}
        kpis = json.loads((d / "kpis.json").read_text())
        prov = json.loads((d / "provenance.json").read_text())
        scenario = validate(tomllib.loads((d / "scenario.toml").read_text()))
        return cls(
            scenario=scenario,
            seed=prov.get("run_seed"),
            tables=tables,
            kpis=kpis,
            provenance=prov,
            warnings=list(prov.get("warnings") or []),
        )
