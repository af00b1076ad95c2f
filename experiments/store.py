"""Result store of a study: one Parquet part per finished replication, a manifest, and a loader.

Layout of a study directory::

    manifest.json                 what the study is: kind, scenario (resolved), root seed, n, parameter points
    parts/p0003_r000042.parquet   one row: point, rep, status, params, KPIs, seed, scenario hash, versions
    timeseries/steps/p0003_r000042.parquet   optional per-replication time series
    summary.csv, plots/           written by `experiments.report`

Every part is written to a temporary file in the same folder and renamed into place, so a part is either
complete or absent: a study killed at any moment loses nothing that finished, and ``--resume`` runs exactly the
(point, replication) pairs without an ``ok`` part. A replication that raised leaves a ``failed`` part with its
error and traceback; resuming retries it.

Why pandas/pyarrow and not DuckDB: parts are tiny (one row) and a study of thousands of replications loads in
well under a second with ``pyarrow.dataset``; DuckDB can still query ``parts/*.parquet`` directly if a user wants
SQL, without being a dependency of the platform.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

MANIFEST = "manifest.json"
PARAM_PREFIX = "param."
KPI_PREFIX = "kpi."


class StoreError(ValueError):
    """A study directory is missing, corrupt or belongs to another study."""


def part_name(point: int, rep: int) -> str:
    return f"p{point:04d}_r{rep:06d}.parquet"


def _atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """A study directory (see module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def parts_dir(self) -> Path:
        return self.root / "parts"

    # ------------------------------------------------------------------ manifest
    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.is_file():
            raise StoreError(f"{self.root}: no {MANIFEST}; not a study directory")
        return json.loads(path.read_text())

    def create(self, manifest: dict[str, Any], *, resume: bool) -> None:
        """Start a study here, or check that ``manifest`` matches the one being resumed."""
        path = self.root / MANIFEST
        if path.is_file():
            old = json.loads(path.read_text())
            if not resume:
                raise StoreError(
                    f"{self.root}: a study is already stored here; pass --resume to continue it or choose another --out"
                )
            for key in ("kind", "scenario_hash", "root_seed", "points"):
                if old.get(key) != manifest.get(key):
                    raise StoreError(f"--resume: {key} differs from the stored study in {self.root}")
            if manifest["n"] > old["n"]:
                old["n"] = manifest["n"]
                self._write_manifest(old)
            return
        if resume and any(self.root.glob("*")):
            raise StoreError(f"--resume: {self.root} has no {MANIFEST}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_manifest(manifest)

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.root)
        with os.fdopen(fd, "w") as fh:
            json.dump(manifest, fh, indent=2, default=str)
        os.replace(tmp, self.root / MANIFEST)

    # ------------------------------------------------------------------ parts
    def write(self, row: dict[str, Any], timeseries: dict[str, pd.DataFrame] | None = None) -> None:
        """Store one replication (time series first, so an ``ok`` part implies its series are there)."""
        point, rep = int(row["point"]), int(row["rep"])
        for name, df in (timeseries or {}).items():
            _atomic_write_parquet(
                df.assign(point=point, rep=rep), self.root / "timeseries" / name / part_name(point, rep)
            )
        _atomic_write_parquet(pd.DataFrame([row]), self.parts_dir / part_name(point, rep))

    def done(self) -> set[tuple[int, int]]:
        """(point, rep) pairs with an ``ok`` part."""
        df = self.load(columns=["point", "rep", "status"])
        if df.empty:
            return set()
        ok = df[df["status"] == "ok"]
        return set(zip(ok["point"].astype(int), ok["rep"].astype(int)))

    def load(self, columns: list[str] | None = None) -> pd.DataFrame:
        """All replications as one DataFrame (one row each), sorted by point and replication."""
        files = sorted(self.parts_dir.glob("p*_r*.parquet"))
        if not files:
            return pd.DataFrame(columns=columns or ["point", "rep", "status"])
        import pyarrow as pa
        import pyarrow.parquet as pq

        # parts may differ in columns (a failed replication has no KPIs): concatenate with schema promotion
        tables = [pq.read_table(f, columns=columns) for f in files]
        df = pa.concat_tables(tables, promote_options="default").to_pandas()
        return df.sort_values(["point", "rep"], kind="stable").reset_index(drop=True)

    def load_timeseries(self, name: str = "steps") -> pd.DataFrame:
        """A stored time series of every replication, with ``point`` and ``rep`` columns."""
        files = sorted((self.root / "timeseries" / name).glob("p*_r*.parquet"))
        if not files:
            raise StoreError(f"{self.root}: no '{name}' time series stored (run with --timeseries {name})")
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
