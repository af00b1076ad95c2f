"""Result store of a study: one Parquet part per finished replication, a manifest, a lock and a loader.

Layout of a study directory::

    manifest.json                 what the study is: kind, scenario (resolved), root seed, n, points, study hash
    .lock                         held (flock) by the one process writing the study; holds its pid
    parts/p0003_r000042.parquet   one row: point, rep, status, params, KPIs, seed, scenario hash, versions
    timeseries/steps/p0003_r000042.parquet   optional per-replication time series
    summary.csv, plots/           written by `experiments.report`

Every part is written to a temporary file in the same folder and renamed into place, so a part is either
complete or absent: a study killed at any moment loses nothing that finished, and ``--resume`` runs exactly the
(point, replication) pairs without an ``ok`` part. A replication that raised leaves a ``failed`` part with its
error and traceback; resuming retries it.

What the store refuses to be fooled by:

* **two writers** — `create` takes an exclusive ``flock`` on ``.lock`` (released when the process ends, however
  it ends); a second writer gets `StoreLockedError` naming the holder's pid;
* **foreign parts** — each part carries, in its Parquet metadata and in its row, the study hash, root seed, point
  and replication; a part that does not match the manifest and its own file name (another study's part copied or
  renamed into place, a truncated file) is not counted: it is listed in `Store.rejected` and re-run on resume;
* **leftovers** — temporary files of a killed writer are removed on resume (under the lock, so never a live one);
* **links** — parts, time series and manifest are written to a fresh temporary file and renamed, which replaces a
  link instead of writing through it; a linked ``parts/`` or ``timeseries/`` folder is refused;
* **a full disk** — the manifest is written to a temporary file, flushed, fsynced and renamed: on ENOSPC the old
  manifest stays as it was and the error is one line (`StoreWriteError`).

Why pandas/pyarrow and not DuckDB: parts are tiny (one row) and a study of thousands of replications loads in
well under a second with pyarrow; DuckDB can still query ``parts/*.parquet`` directly if a user wants SQL, without
being a dependency of the platform.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

MANIFEST = "manifest.json"
LOCK = ".lock"
TMP_PREFIX = ".tmp-"
PARAM_PREFIX = "param."
KPI_PREFIX = "kpi."
META_KEY = b"evgrid"  # Parquet key-value metadata of a part: JSON {study_hash, root_seed, point, rep}
IDENTITY_KEYS = ("kind", "scenario_hash", "root_seed", "points")  # what makes two manifests the same study
_PART_RE = re.compile(r"p(\d+)_r(\d+)\.parquet")


class StoreError(ValueError):
    """A study directory is missing, corrupt, locked, linked or belongs to another study."""


class StoreLockedError(StoreError):
    """Another process holds the study's lock."""


class StoreWriteError(StoreError):
    """Writing to the store failed (e.g. ENOSPC); nothing already stored was changed."""


def part_name(point: int, rep: int) -> str:
    return f"p{point:04d}_r{rep:06d}.parquet"


def study_hash(manifest: dict[str, Any]) -> str:
    """SHA-256 of what identifies a study (kind, base scenario hash, root seed, points), hex."""
    ident = {k: manifest.get(k) for k in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def _no_link(path: Path) -> None:
    if path.is_symlink():
        raise StoreError(f"{path}: is a symbolic link; the store does not write through links")


def _write_table(table: Any, path: str) -> None:
    """Write a pyarrow table as Parquet (a seam for the fault-injection tests)."""
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _why(err: OSError) -> str:
    return err.strerror or errno.errorcode.get(err.errno or 0, "") or str(err)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    The rename replaces ``path`` itself (a symbolic link there is replaced, never followed); with ``durable``
    the data are fsynced before the rename. On any OS error (ENOSPC, EIO, ...) the temporary file is removed,
    ``path`` is left as it was, and `StoreWriteError` says so in one line.
    """
    _no_link(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise StoreWriteError(f"cannot write {path}: {_why(err)}; {path.name} is unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _atomic_write_parquet(df: pd.DataFrame, path: Path, meta: dict[str, Any]) -> None:
    import pyarrow as pa

    _no_link(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta).encode()})
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".parquet", dir=path.parent)
    os.close(fd)
    try:
        _write_table(table, tmp)
        os.replace(tmp, path)  # replaces a link at `path`, never writes through it
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise StoreWriteError(f"cannot write {path}: {_why(err)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """A study directory (see module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None
        self._expect: dict[str, Any] | None = None
        self.rejected: list[str] = []  # parts not counted by the last load(), each "file: why"
        self.cleaned: list[str] = []  # stale temporary files removed by create(resume=True)

    @property
    def parts_dir(self) -> Path:
        return self.root / "parts"

    # ------------------------------------------------------------------ lock
    def lock(self) -> None:
        """Take the store's exclusive lock (non-blocking); `StoreLockedError` if another process holds it."""
        if self._lock_fd is not None:
            return
        _no_link(self.root / LOCK)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.root / LOCK, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreLockedError(
                f"{self.root}: another evgrid process (pid {holder}) is writing this study; "
                "wait for it to end or choose another --out"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            os.close(fd)  # releases the lock with the descriptor
            raise
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock (the kernel also releases it when the process ends)."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    # ------------------------------------------------------------------ manifest
    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.is_file():
            raise StoreError(f"{self.root}: no {MANIFEST}; not a study directory")
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as err:
            raise StoreError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or not all(k in data for k in (*IDENTITY_KEYS, "n")):
            raise StoreError(f"{path}: not an evgrid study manifest")
        return data

    def create(self, manifest: dict[str, Any], *, resume: bool) -> None:
        """Lock the store, then start a study here or check that ``manifest`` matches the one being resumed.

        The lock is held until `unlock` (or the end of the process). On resume, temporary files left by a killed
        writer are removed (listed in `cleaned`).
        """
        manifest = {**manifest, "study_hash": study_hash(manifest)}
        path = self.root / MANIFEST
        if resume and not path.is_file() and self.root.is_dir():
            # a study killed before its manifest was written leaves only its lock (and maybe a temporary file)
            if any(p.name != LOCK and not p.name.startswith(TMP_PREFIX) for p in self.root.iterdir()):
                raise StoreError(f"--resume: {self.root} has no {MANIFEST}")
        try:  # a folder the file system refuses (even to root: sysfs, a read-only mount) is one line, not a traceback
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"--out: cannot create the study folder '{self.root}' ({err.strerror or err})") from None
        try:
            self.lock()
        except OSError as err:
            raise StoreError(f"--out: cannot lock the study folder '{self.root}' ({err.strerror or err})") from None
        try:
            self._create_locked(manifest, resume=resume)
        except BaseException:
            self.unlock()
            raise

    def _create_locked(self, manifest: dict[str, Any], *, resume: bool) -> None:
        path = self.root / MANIFEST
        for sub in (self.parts_dir, self.root / "timeseries"):
            _no_link(sub)
        if resume:  # under the lock: no live writer owns them
            self.cleaned = self._remove_stale_tmp()
        if path.exists() or path.is_symlink():
            old = self.manifest()
            if not resume:
                raise StoreError(
                    f"{self.root}: a study is already stored here; pass --resume to continue it or choose another --out"
                )
            for key in IDENTITY_KEYS:
                if old.get(key) != manifest.get(key):
                    raise StoreError(f"--resume: {key} differs from the stored study in {self.root}")
            if manifest["n"] > old["n"] or "study_hash" not in old:
                old["n"] = max(int(manifest["n"]), int(old["n"]))
                old["study_hash"] = manifest["study_hash"]
                self._write_manifest(old)
            self._expect = old
            return
        self._write_manifest(manifest)
        self._expect = manifest

    def _remove_stale_tmp(self) -> list[str]:
        dirs = [self.root, self.parts_dir, *sorted((self.root / "timeseries").glob("*"))]
        removed = []
        for d in dirs:
            if d.is_dir() and not d.is_symlink():
                for f in d.glob(f"{TMP_PREFIX}*"):
                    if f.is_file() or f.is_symlink():
                        f.unlink()
                        removed.append(str(f.relative_to(self.root)))
        return removed

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        data = json.dumps(manifest, indent=2, default=str).encode()
        atomic_write_bytes(self.root / MANIFEST, data)

    # ------------------------------------------------------------------ parts
    def _identity(self) -> dict[str, Any]:
        if self._expect is None:
            self._expect = self.manifest()
        return {"study_hash": self._expect.get("study_hash") or study_hash(self._expect), **self._expect}

    def write(self, row: dict[str, Any], timeseries: dict[str, pd.DataFrame] | None = None) -> None:
        """Store one replication (time series first, so an ``ok`` part implies its series are there).

        Only the holder of the lock writes (`create` takes it).
        """
        if not self.locked:
            raise StoreError(f"{self.root}: write without the store's lock (call create() first)")
        point, rep = int(row["point"]), int(row["rep"])
        ident = self._identity()
        meta = {"study_hash": ident["study_hash"], "root_seed": ident["root_seed"], "point": point, "rep": rep}
        for name, df in (timeseries or {}).items():
            _atomic_write_parquet(
                df.assign(point=point, rep=rep), self.root / "timeseries" / name / part_name(point, rep), meta
            )
        _atomic_write_parquet(pd.DataFrame([row]), self.parts_dir / part_name(point, rep), meta)

    def _check_part(self, name: str, table: Any, ident: dict[str, Any], points: set[int]) -> str:
        """Why a part does not belong to this study ('' if it does)."""
        m = _PART_RE.fullmatch(name)
        if m is None:
            return "not a part name"
        want = {"point": int(m.group(1)), "rep": int(m.group(2)), "root_seed": ident["root_seed"]}
        raw = (table.schema.metadata or {}).get(META_KEY)
        if raw is not None:  # parts written before the metadata existed carry only their row
            try:
                meta = json.loads(raw)
            except ValueError:
                return "unreadable evgrid metadata"
            if meta.get("study_hash") != ident["study_hash"]:
                return "study hash differs from the manifest's"
            for key, value in want.items():
                if meta.get(key) != value:
                    return f"metadata {key} {meta.get(key)}, expected {value}"
        if table.num_rows != 1:
            return f"{table.num_rows} rows, expected 1"
        for key, value in want.items():
            if key not in table.column_names:
                return f"no column {key}"
            got = table.column(key)[0].as_py()
            if got != value:
                return f"{key} {got}, expected {value}"
        if want["point"] not in points:
            return f"point {want['point']} is not a point of this study"
        return ""

    def done(self) -> set[tuple[int, int]]:
        """(point, rep) pairs with a verified ``ok`` part."""
        df = self.load(columns=["point", "rep", "status"])
        if df.empty:
            return set()
        ok = df[df["status"] == "ok"]
        return set(zip(ok["point"].astype(int), ok["rep"].astype(int)))

    def stored(self) -> set[tuple[int, int]]:
        """(point, rep) pairs with a verified part, ok or failed."""
        df = self.load(columns=["point", "rep"])
        return set(zip(df["point"].astype(int), df["rep"].astype(int))) if len(df) else set()

    def load(self, columns: list[str] | None = None) -> pd.DataFrame:
        """All verified replications as one DataFrame (one row each), sorted by point and replication.

        Parts that fail verification are left out and listed in `rejected` ("parts/NAME: why").
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.rejected = []
        files = sorted(self.parts_dir.glob("p*_r*.parquet"))
        if not files:
            return pd.DataFrame(columns=columns or ["point", "rep", "status"])
        ident = self._identity()
        points = {int(p["index"]) for p in ident["points"]}
        need = None if columns is None else list(dict.fromkeys([*columns, "point", "rep", "root_seed"]))
        tables = []
        for f in files:
            try:
                if f.is_symlink():
                    raise OSError("a symbolic link")
                table = pq.read_table(f, columns=need)
            except (OSError, pa.ArrowException) as err:
                self.rejected.append(f"parts/{f.name}: unreadable ({str(err).splitlines()[0][:80]})")
                continue
            why = self._check_part(f.name, table, ident, points)
            if why:
                self.rejected.append(f"parts/{f.name}: {why}")
                continue
            tables.append(table.replace_schema_metadata(None))
        if not tables:
            return pd.DataFrame(columns=columns or ["point", "rep", "status"])
        # parts may differ in columns (a failed replication has no KPIs): concatenate with schema promotion
        df = pa.concat_tables(tables, promote_options="default").to_pandas()
        df = df.sort_values(["point", "rep"], kind="stable").reset_index(drop=True)
        return df[columns] if columns is not None else df

    def load_timeseries(self, name: str = "steps") -> pd.DataFrame:
        """A stored time series of every replication, with ``point`` and ``rep`` columns (foreign files skipped)."""
        import pyarrow.parquet as pq

        files = sorted((self.root / "timeseries" / name).glob("p*_r*.parquet"))
        if not files:
            raise StoreError(f"{self.root}: no '{name}' time series stored (run with --timeseries {name})")
        want = self._identity()["study_hash"]
        frames = []
        for f in files:
            raw = (pq.read_schema(f).metadata or {}).get(META_KEY)
            if raw is not None and json.loads(raw).get("study_hash") != want:
                self.rejected.append(f"timeseries/{name}/{f.name}: study hash differs from the manifest's")
                continue
            frames.append(pd.read_parquet(f))
        return pd.concat(frames, ignore_index=True)
