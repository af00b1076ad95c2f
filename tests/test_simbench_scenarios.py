"""The shipped SimBench scenarios: their stations follow the documented rule, they run through `evgrid run` with
the grids' own profiles driving load and generation, and an element without a profile is one line naming it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandapower as pp
import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.cli import app
from grids.profiles import feeders, station_buses_by_energy
from grids.sources import Source, load_source
from sim.scenario import load_scenario

# heavy (whole-module fixtures): left out of `make test-fast`, run by `make test`
pytestmark = pytest.mark.slow

runner = CliRunner()
LV, MV = "simbench-lv-rural", "simbench-mv-rural"


def _source(case: str) -> Source:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_source(case)


@pytest.fixture(scope="module")
def lv_source() -> Source:
    return _source(load_scenario(LV).grid.case)


def _check_stations(name: str, src: Source) -> None:
    sc = load_scenario(name)
    assert src.load_p_mw is not None and src.load_index is not None
    for sg in sc.stations:
        assert isinstance(sg.buses, list)
        assert sg.buses == station_buses_by_energy(src.net, src.load_p_mw, src.load_index, len(sg.buses))


def test_lv_stations_follow_the_documented_rule(lv_source: Source) -> None:
    _check_stations(LV, lv_source)
    chosen = load_scenario(LV).stations[0].buses
    assert isinstance(chosen, list)
    feeder = feeders(lv_source.net)
    assert {feeder[b] for b in chosen} == {0, 1, 2, 3}  # every feeder of the village gets a station


@pytest.mark.slow
def test_mv_stations_follow_the_documented_rule() -> None:
    _check_stations(MV, _source(load_scenario(MV).grid.case))


def _run(name: str, out: Path) -> tuple[dict, pd.DataFrame]:
    res = runner.invoke(app, ["run", name, "--out", str(out), "--no-plots", "-q"])
    assert res.exit_code == 0, res.output
    return json.loads((out / "kpis.json").read_text()), pd.read_parquet(out / "tables" / "steps.parquet")


def _own_profiles(src: Source, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The grid's own total load and generation [kW] at every step of the shipped scenario."""
    sc = load_scenario(name)
    rows = (sc.grid.profile_start_day - 1) * 96 + int(sc.time.start_h * 4) + np.arange(sc.time.n_steps)
    assert src.load_p_mw is not None and src.sgen_p_mw is not None
    return src.load_p_mw[rows].sum(axis=1) * 1e3, src.sgen_p_mw[rows].sum(axis=1) * 1e3


def test_lv_runs_on_its_own_profiles(tmp_path: Path, lv_source: Source) -> None:
    kpis, steps = _run(LV, tmp_path / "lv")
    assert steps.converged.all() and len(steps) == 7 * 96
    # the run's own scenario.toml (every default spelled out) validates again, to the same scenario
    assert load_scenario(tmp_path / "lv" / "scenario.toml").digest() == load_scenario(LV).digest()
    load_kw, gen_kw = _own_profiles(lv_source, LV)
    np.testing.assert_allclose(steps.base_load_orig_kw, load_kw, rtol=1e-9)  # SimBench's loads, not zone curves
    np.testing.assert_allclose(steps.pv_kw, gen_kw, rtol=1e-9)  # SimBench's PV, not the synthetic shape
    assert steps.ev_load_kw.sum() > 0 and kpis["energy_fulfilment"] > 0.75


@pytest.mark.slow
def test_mv_runs_on_its_own_profiles(tmp_path: Path) -> None:
    src = _source(load_scenario(MV).grid.case)
    kpis, steps = _run(MV, tmp_path / "mv")
    assert steps.converged.all()
    load_kw, gen_kw = _own_profiles(src, MV)
    np.testing.assert_allclose(steps.base_load_orig_kw, load_kw, rtol=1e-9)
    np.testing.assert_allclose(steps.pv_kw + steps.wind_kw + steps.other_gen_kw, gen_kw, rtol=1e-9)
    assert steps.wind_kw.max() > 1000 and kpis["energy_fulfilment"] > 0.75


@pytest.mark.parametrize(
    ("element", "profile", "needle"),
    [
        ("load", None, "load 3 'LV1.101 Load 4' at bus 12 has no element profile"),
        ("load", "H0-Z", "names profile 'H0-Z' but net.profiles['load'] has no column 'H0-Z_pload', 'H0-Z_qload'"),
        ("sgen", None, "sgen 2 'LV1.101 SGen 4' at bus"),
    ],
)
def test_an_element_without_its_profile_is_one_line_naming_it(
    tmp_path: Path, lv_source: Source, element: str, profile: str | None, needle: str
) -> None:
    net = pp.from_json_string(pp.to_json(lv_source.net))
    idx = 3 if element == "load" else 2
    net[element]["profile"] = net[element]["profile"].astype(object)
    net[element].loc[idx, "profile"] = profile if profile is not None else np.nan
    f = tmp_path / "net.json"
    pp.to_json(net, str(f))
    out = tmp_path / "r"
    res = runner.invoke(
        app, ["run", LV, "--set", "grid.case='file'", "--set", f"grid.file='{f}'", "--out", str(out), "-q"]
    )
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.output
    assert "has no element profile" in lines[0] or "names profile" in lines[0]
    assert not out.exists()
