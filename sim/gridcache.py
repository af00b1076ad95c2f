"""On-disk cache of compiled grids, so that a run's set-up does not rebuild the same network every time.

Building a grid — pandapower's network constructor or file reader, the profiles, the fast engine's compile run
(``pp.runpp``), the loss-sensitivity matrix, the base-case check — costs ~1 s of CPU on the 33-bus feeder and more on
larger ones, identical in every run of the same ``[grid]`` table. :func:`cached_grid` stores the built
``(Network, engine)`` pair the first time and loads it afterwards (~10 ms), bit-identical: the objects are pickled
right after the build, in the state a fresh build leaves them in.

What makes an entry valid (all in its key): the grid specification (JSON of ``GridSpec``), the bytes of the network
file for ``grid.case = "file"``, the source of the code that builds grids (``grids/``, this module,
``sim/model.py``), and the versions of Python, numpy, scipy, pandas, pandapower, numba and simbench. Anything else
changes nothing that is cached. Python warnings raised while building (e.g. a placeholder line rating, a zone
fallback) are stored with the entry and raised again on every load, so a cached grid is never quieter than a
fresh one.

Safety: entries are pickles *we* wrote (the same trust as numba's own disk cache, which pandapower's kernels use);
they live in a private folder (``$EVGRID_CACHE_DIR``, else ``$XDG_CACHE_HOME/evgrid``, else ``~/.cache/evgrid``;
``grids/`` inside, mode 0700) and are loaded only when the folder and the file belong to the current user and are
writable by nobody else, and never through a symbolic link. A scenario file cannot name a cache entry. Anything
unexpected (unreadable, corrupt, foreign) means a rebuild, never an error. ``EVGRID_GRID_CACHE=off`` switches the
cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Source files whose code decides what a built grid holds.
_CODE = ("grids", "sim/model.py", "sim/gridcache.py")
_PACKAGES = ("numpy", "scipy", "pandas", "pandapower", "numba", "simbench")
#: Entries above this size are not written (a year of SimBench profiles is a few MB; this is a guard, not a limit).
MAX_BYTES = 512 * 2**20


def enabled() -> bool:
    """False when ``EVGRID_GRID_CACHE`` is ``off`` / ``0`` / ``no`` / ``false``."""
    return os.environ.get("EVGRID_GRID_CACHE", "on").strip().lower() not in ("off", "0", "no", "false")


def cache_dir() -> Path:
    """The folder of the grid cache (not created here)."""
    base = os.environ.get("EVGRID_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "evgrid"
    )
    return Path(base) / "grids"


def _code_fingerprint() -> str:
    h = hashlib.sha256()
    for item in _CODE:
        path = ROOT / item
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": sys.version}
    for name in _PACKAGES:
        mod = sys.modules.get(name)
        version = getattr(mod, "__version__", None) if mod is not None else None
        if version is None:
            from importlib import metadata

            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = "-"
        out[name] = str(version)
    return out


def grid_key(spec_json: str, file: str | None) -> str | None:
    """The cache key of a grid specification, or None when it cannot be cached (network file unreadable: the
    build reports that)."""
    h = hashlib.sha256()
    h.update(json.dumps({"spec": spec_json, "versions": _versions(), "code": _code_fingerprint()}).encode())
    if file is not None:
        from grids.netfile import trust_pickle_from_env

        h.update(b"trust-pickle" if trust_pickle_from_env() else b"")  # a pickle built with it: no hit without it
        try:
            h.update(Path(file).read_bytes())
        except OSError:
            return None
    return h.hexdigest()


def _trusted(st: os.stat_result) -> bool:
    """Owned by us and writable by nobody else."""
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _load(path: Path) -> Any | None:
    try:
        dst = os.stat(path.parent, follow_symlinks=False)
        if not stat.S_ISDIR(dst.st_mode) or not _trusted(dst):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            if not _trusted(os.fstat(fh.fileno())):
                return None
            return pickle.load(fh)  # our own entry in our own private folder (module docstring)
    except Exception:  # corrupt or from an incompatible build: rebuild
        return None


def _store(path: Path, entry: Any) -> None:
    try:
        data = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_BYTES:
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        dst = os.stat(path.parent, follow_symlinks=False)
        if not stat.S_ISDIR(dst.st_mode) or not _trusted(dst):
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pkl")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except Exception:  # no cache (read-only home, full disk, an object that cannot be pickled): just slower
        return


def cached_grid[T](spec_json: str, file: str | None, build: Callable[[], T]) -> T:
    """``build()``'s result for this grid specification, from the disk cache when a valid entry exists.

    Args:
        spec_json: the grid specification as JSON (what decides the build).
        file: the network file of ``grid.case = "file"`` (its bytes enter the key), else None.
        build: builds the grid; its exceptions propagate (a failed build is never cached).
    """
    key = grid_key(spec_json, file) if enabled() else None
    path = cache_dir() / f"{key}.pkl" if key else None
    entry = _load(path) if path is not None and path.is_file() else None
    if isinstance(entry, dict) and entry.get("key") == key:
        for category, message in entry["warnings"]:
            warnings.warn(message, category, stacklevel=2)
        return entry["value"]
    with warnings.catch_warnings(record=True) as caught:  # the filters in force decide what is recorded
        value = build()
    seen = [(w.category, str(w.message)) for w in caught]
    for category, message in seen:  # as they would have surfaced without the recording
        warnings.warn(message, category, stacklevel=2)
    if path is not None:
        _store(path, {"key": key, "value": value, "warnings": seen})
    return value
