"""The on-disk grid cache (sim/gridcache.py): a hit is bit-identical to a build, keeps the build's warnings, and
is never taken from a file someone else could have written, nor for another network file."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandapower as pp
import pandapower.networks as pn
import pytest

import sim.model as model
from sim import gridcache
from sim.scenario import load_scenario

SHORT = ["fleet.n_evs=20", "time.horizon_h=2"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("EVGRID_GRID_CACHE", "on")
    monkeypatch.setenv("EVGRID_CACHE_DIR", str(tmp_path / "cache"))
    model._compiled_grid.cache_clear()
    yield tmp_path / "cache" / "grids"
    model._compiled_grid.cache_clear()


def _forbid_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def no(*a: Any, **k: Any) -> Any:
        raise AssertionError("built although a valid cache entry exists")

    monkeypatch.setattr(model, "_build_grid", no)


def _kpis(overrides: list[str]) -> dict[str, Any]:
    """The run's KPIs but its timings, NaN as a string (so that equal runs compare equal)."""
    kpis = model.CoSimulation(load_scenario("default", [*SHORT, *overrides])).run().kpis
    return {k: "nan" if v != v else v for k, v in kpis.items() if not k.startswith("time_")}


def test_a_hit_is_bit_identical_and_builds_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVGRID_GRID_CACHE", "off")
    fresh = _kpis([])
    model._compiled_grid.cache_clear()
    monkeypatch.setenv("EVGRID_GRID_CACHE", "on")
    first = _kpis([])  # builds and stores
    (entry,) = cache.glob("*.pkl")
    assert entry.stat().st_mode & 0o777 == 0o600 and cache.stat().st_mode & 0o777 == 0o700
    model._compiled_grid.cache_clear()
    _forbid_build(monkeypatch)
    second = _kpis([])  # loads
    assert fresh == first == second
    # another grid specification is another entry (and needs a build)
    model._compiled_grid.cache_clear()
    with pytest.raises(AssertionError, match="built although"):
        _kpis(["grid.load_scale=0.9"])


def test_a_hit_raises_the_builds_warnings_again(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = model._build_grid

    def warning_build(g: Any) -> Any:
        warnings.warn("grid.zones: a notice from the build", RuntimeWarning, stacklevel=1)
        return real(g)

    monkeypatch.setattr(model, "_build_grid", warning_build)
    sc = load_scenario("default", SHORT)
    for _ in range(2):  # build, then hit
        model._compiled_grid.cache_clear()
        with pytest.warns(RuntimeWarning, match="a notice from the build"):
            model.compiled_grid(sc.grid)
        _forbid_build(monkeypatch)


@pytest.mark.parametrize("spoil", ["group-writable", "symlink", "corrupt", "foreign-folder"])
def test_untrusted_or_broken_entries_are_rebuilt(cache: Path, monkeypatch: pytest.MonkeyPatch, spoil: str) -> None:
    sc = load_scenario("default", SHORT)
    model.compiled_grid(sc.grid)
    (entry,) = cache.glob("*.pkl")
    if spoil == "group-writable":
        entry.chmod(0o620)
    elif spoil == "symlink":
        target = cache.parent / "elsewhere.pkl"
        entry.rename(target)
        entry.symlink_to(target)
    elif spoil == "corrupt":
        entry.write_bytes(b"not a pickle")
    else:
        cache.chmod(0o777)
    model._compiled_grid.cache_clear()
    calls = []
    real = model._build_grid

    def counting(g: Any) -> Any:
        calls.append(1)
        return real(g)

    monkeypatch.setattr(model, "_build_grid", counting)
    model.compiled_grid(sc.grid)
    assert calls == [1]


def test_a_changed_network_file_or_code_is_a_miss(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "net.json"
    pp.to_json(pn.case33bw(), str(path))
    over = ["grid.case='file'", f"grid.file='{path}'", "grid.line_max_i_ka=0.4", "grid.substation_mva=8"]
    sc = load_scenario("default", [*SHORT, *over])
    model.compiled_grid(sc.grid)
    key = gridcache.grid_key(sc.grid.model_dump_json(exclude={"volt_var"}), str(path))
    assert (cache / f"{key}.pkl").is_file()
    net = pn.case33bw()
    net.load["p_mw"] *= 1.01
    pp.to_json(net, str(path))
    assert gridcache.grid_key(sc.grid.model_dump_json(exclude={"volt_var"}), str(path)) != key
    monkeypatch.setattr(gridcache, "_code_fingerprint", lambda: "other code")
    pp.to_json(pn.case33bw(), str(path))
    assert gridcache.grid_key(sc.grid.model_dump_json(exclude={"volt_var"}), str(path)) != key


def test_off_switch(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVGRID_GRID_CACHE", "off")
    model.compiled_grid(load_scenario("default", SHORT).grid)
    assert not cache.exists() or not list(cache.glob("*.pkl"))


def test_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVGRID_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
    assert gridcache.cache_dir() == Path("/x/cache/evgrid/grids")
    monkeypatch.setenv("EVGRID_CACHE_DIR", "/y")
    assert gridcache.cache_dir() == Path("/y/grids")
    assert os.environ.get("EVGRID_GRID_CACHE") == "off"  # the suite's default (tests/conftest.py)
