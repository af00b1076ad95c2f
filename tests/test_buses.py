"""One bus identity (pandapower indices in and out), zones from the network, and EV placement by bus load (issue 13).

Networks come from `pandapower.networks`, saved as pandapower JSON and loaded with ``grid.case = "file"``, as a
researcher would bring them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.fleet import build_stations, generate_fleet
from grids.network import build_network
from grids.zones import derive_zones, explicit_zones, name_zone, profile_zone
from sim.model import CoSimulation
from sim.scenario import GridSpec, ScenarioError, load_scenario
from sim.streams import spawn_streams


def _save(net: Any, path: Path) -> str:
    import pandapower as pp

    pp.to_json(net, str(path))
    return str(path)


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """JSON files of the networks the issue names, plus a two-bus toy with a 34 kW and a 20 MW load bus."""
    import pandapower as pp
    import pandapower.networks as pn

    d = tmp_path_factory.mktemp("nets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "cigre": _save(pn.create_cigre_network_mv(with_der=False), d / "cigre.json"),
            "oberrhein": _save(pn.mv_oberrhein(), d / "oberrhein.json"),
            "kerber": _save(pn.create_kerber_landnetz_kabel_1(), d / "kerber.json"),
            "case118": _save(pn.case118(), d / "case118.json"),
        }
        toy = pp.create_empty_network()
        b = [pp.create_bus(toy, vn_kv=20.0, index=i) for i in (10, 20, 30)]  # non-contiguous on purpose
        pp.create_ext_grid(toy, b[0])
        for to in b[1:]:
            pp.create_line_from_parameters(
                toy, b[0], to, 1.0, r_ohm_per_km=0.1, x_ohm_per_km=0.1, c_nf_per_km=0, max_i_ka=1
            )
        pp.create_load(toy, b[1], p_mw=0.034, name="small")
        pp.create_load(toy, b[2], p_mw=20.0, name="large")
        out["toy"] = _save(toy, d / "toy.json")
    return out


def _file_scenario(path: str, extra: list[str] | None = None) -> Any:
    """The default scenario on a network file, short and small (bus numbers: pandapower indices)."""
    base = [
        "grid.case='file'",
        f"grid.file='{path}'",
        "grid.bus_numbering='pandapower'",
        "fleet.n_evs=60",
        "time.horizon_h=1",
    ]
    return load_scenario("default", base + (extra or []))


def test_pandapower_indices_are_the_default_and_paper_only_for_paper_cases(nets: dict[str, str]) -> None:
    assert GridSpec().bus_numbering == "pandapower"
    assert load_scenario("default", ["grid.case='file'", f"grid.file='{nets['cigre']}'"]).grid.case == "file"
    with pytest.raises(ScenarioError, match=r"^grid.bus_numbering: 'paper' .* not grid.case = 'file'"):
        load_scenario("eho-bilevel-10stations", ["grid.case='file'", f"grid.file='{nets['cigre']}'"])
    assert load_scenario("eho-bilevel-10stations").grid.bus_numbering == "paper"  # a paper case keeps it
    with pytest.raises(ScenarioError, match="paper numbering starts at 1"):
        load_scenario("default", ["grid.bus_numbering='paper'", "stations.1.buses=[0, 5]"])


def test_station_lands_on_the_bus_asked_for_on_non_contiguous_indices(nets: dict[str, str]) -> None:
    # mv_oberrhein: 179 buses with indices 0..319; index 100 is position 60 (and position 100 is index 161)
    sc = _file_scenario(nets["oberrhein"], ["stations.1.buses=[100]", "fleet.n_evs=200", "time.horizon_h=2"])
    m = CoSimulation(sc)
    pub = np.nonzero(m.station_table.group == 1)[0]
    assert [int(m.network.bus_ids[b]) for b in m.station_table.bus[pub]] == [100]
    r = m.run()
    st = r.tables["stations"]
    assert st.loc[st.group == "public", "bus"].tolist() == [100]
    assert st.loc[st.group == "public", "name"].tolist() == ["public@100"]
    evs = r.tables["evs"]
    public_evs = evs[evs.group == "public"]
    assert len(public_evs) and (public_evs.bus == 100).all()
    bus = r.tables["bus"]
    assert set(bus.bus) == set(m.network.net.bus.index)  # indices, not positions 0..178
    p_at = bus.groupby("bus").p_ev_kw.sum()
    charged = public_evs.grid_kwh.sum() > 0
    assert not charged or p_at[100] > 0  # the EV power is injected at index 100 …
    elsewhere = p_at[~p_at.index.isin(st.bus)]
    assert (elsewhere == 0).all()  # … and nowhere the station table does not name (e.g. position 100 = index 161)
    worst = bus.loc[bus.vm_pu.idxmin()]
    assert r.kpis["vmin_bus"] == int(worst.bus)


def test_unknown_bus_is_one_clear_error(nets: dict[str, str]) -> None:
    sc = _file_scenario(nets["oberrhein"], ["stations.1.buses=[177]"])  # 177 < n_bus = 179, but not an index there
    with pytest.raises(
        ScenarioError, match=r"stations.public.buses: bus 177 is not a bus of network file 'oberrhein.json'.*gaps"
    ):
        CoSimulation(sc)
    with pytest.raises(ScenarioError, match="listed twice"):
        _file_scenario(nets["oberrhein"], ["stations.1.buses=[100, 100]"])


def test_zones_from_load_names_profiles_and_explicit(nets: dict[str, str]) -> None:
    import pandapower as pp

    cigre = pp.from_json(nets["cigre"])
    z = derive_zones(cigre)
    by_zone = {k: {int(b) for b, zz in zip(cigre.bus.index, z.zone) if zz == k} for k in ("commercial", "industrial")}
    # "Load CI…" dominates its bus at 7, 9, 13, 14; at 1, 3, 10, 12 the residential "Load R…" is larger
    assert by_zone["commercial"] == {7, 9, 13, 14} and not by_zone["industrial"]
    assert "load names" in z.source
    assert [profile_zone(p) for p in ("H0-A", "G1-C", "L2-A", "lv_semiurb4", "mv_comm", "BL-H", None)] == [
        "residential",
        "commercial",
        "residential",
        "residential",
        "commercial",
        None,
        None,
    ]
    assert [name_zone(n) for n in ("Load R11", "Load CI3", "Load C12", "Load I2", "LV Load 4")] == [
        "residential",
        "commercial",
        "commercial",
        "industrial",
        None,
    ]
    ex = explicit_zones(cigre, {"industrial": [3]})
    assert ex.zone[list(cigre.bus.index).index(3)] == "industrial" and (ex.zone == "commercial").sum() == 0
    with pytest.raises(ValueError, match="grid.zones.industrial: bus 99 is not a bus of network"):
        explicit_zones(cigre, {"industrial": [99]}, network_name="file")
    # the default fleet's public stations go to CIGRE's commercial buses, and the zones pick the load curves
    m = CoSimulation(_file_scenario(nets["cigre"]))
    pub = m.station_table.bus[m.station_table.group == 1]
    assert {int(m.network.bus_ids[b]) for b in pub} == {7, 9, 13, 14} and not m.warnings
    assert set(m.network.zone[m.network.base_p_kw > 0]) == {"residential", "commercial"}
    m.close()
    # explicit grid.zones override the names
    m = CoSimulation(_file_scenario(nets["cigre"], ["grid.zones={commercial=[2, 5]}"]))
    assert {int(m.network.bus_ids[b]) for b in m.station_table.bus[m.station_table.group == 1]} == {5}  # 2: no load
    assert (
        m.network.zone[m.network.position(5)] == "commercial" and m.network.zone[m.network.position(7)] != "commercial"
    )
    m.close()


def test_zone_fallback_warns_and_reaches_the_result(nets: dict[str, str], tmp_path: Path) -> None:
    r = CoSimulation(_file_scenario(nets["kerber"], ["fleet.n_evs=20"])).run()
    assert len(r.warnings) == 1
    assert "stations.public.buses: zone 'commercial' has no load buses in network file 'kerber.json'" in r.warnings[0]
    st = r.tables["stations"]
    assert set(st.loc[st.group == "public", "bus"]) == {3, 5, 7, 9, 11, 13, 15, 17}  # every load bus of Kerber
    out = r.write(tmp_path / "r")
    assert json.loads((out / "provenance.json").read_text())["warnings"] == r.warnings
    assert type(r).read(out).warnings == r.warnings


@pytest.mark.parametrize("name", ["cigre", "kerber", "oberrhein", "case118"])
def test_default_fleet_runs_on_other_networks(nets: dict[str, str], name: str) -> None:
    r = CoSimulation(_file_scenario(nets[name], ["time.horizon_h=0.5", "grid.line_max_i_ka=99"])).run()
    assert r.kpis["n_steps"] == 2 and np.isfinite(r.kpis["vmin_pu"])
    assert set(r.tables["stations"].group) == {"home", "public"}


def _toy_fleet(path: str, placement: str, n_evs: int = 400) -> tuple[Any, list[str]]:
    ov = [f"fleet.placement='{placement}'", f"fleet.n_evs={n_evs}", "stations.1.buses='all'", "time.horizon_h=24"]
    sc = _file_scenario(path, ov)
    net = build_network("file", file=path)
    notes: list[str] = []
    st = build_stations(sc, net, notes)
    return (st, generate_fleet(sc, st, spawn_streams(sc.seed), notes)), notes


def test_placement_in_proportion_to_bus_load(nets: dict[str, str]) -> None:
    (st, fleet), notes = _toy_fleet(nets["toy"], "load")
    ids = np.asarray(build_network("file", file=nets["toy"]).bus_ids)
    per_bus = {int(b): int((ids[fleet.bus] == b).sum()) for b in (20, 30)}
    assert per_bus[20] + per_bus[30] == len(fleet) > 300
    # 34 kW against 20 MW: the share is 0.0017, so the small bus gets at most one EV of a few hundred
    assert per_bus[20] <= 1 and per_bus[30] >= len(fleet) - 1
    assert not notes
    (_, uni), _ = _toy_fleet(nets["toy"], "uniform")
    small = int((ids[uni.bus] == 20).sum())
    assert 0.3 * len(uni) < small < 0.7 * len(uni)  # uniform: about half each


def test_placement_warns_about_stations_without_load(nets: dict[str, str]) -> None:
    sc = _file_scenario(nets["toy"], ["fleet.placement='load'", "stations.1.buses=[10, 30]", "time.horizon_h=24"])
    net = build_network("file", file=nets["toy"])
    notes: list[str] = []
    st = build_stations(sc, net, notes)
    fleet = generate_fleet(sc, st, spawn_streams(1), notes)
    public = fleet.group == 1
    assert public.any() and (np.asarray(net.bus_ids)[fleet.bus[public]] == 30).all()
    assert any("public@10" in n and "get no EVs" in n for n in notes)


def test_cli_prints_the_zone_warning(nets: dict[str, str], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from experiments.cli import app

    args = ["run", "default", "--out", str(tmp_path / "r"), "--no-plots", "-q"]
    for s in ("grid.case='file'", f"grid.file='{nets['kerber']}'", "grid.bus_numbering='pandapower'"):
        args += ["--set", s]
    res = CliRunner().invoke(app, [*args, "--set", "fleet.n_evs=20", "--set", "time.horizon_h=1"])
    assert res.exit_code == 0, res.output
    err = res.stderr if hasattr(res, "stderr") else res.output
    assert "warning: stations.public.buses: zone 'commercial' has no load buses" in err


def test_explicit_zones_follow_the_scenario_numbering() -> None:
    import pandapower.networks as pn

    net = pn.case33bw()
    assert explicit_zones(net, {"commercial": [19]}, paper_numbering=True).zone[18] == "commercial"  # paper 19 = 18
    assert explicit_zones(net, {"commercial": [19]}).zone[19] == "commercial"
    with pytest.raises(ScenarioError, match="grid.zones.industrial: bus 5 is also in zone 'commercial'"):
        load_scenario("default", ["grid.zones={commercial=[5], industrial=[5]}"])


@pytest.mark.slow
def test_zones_from_simbench_profiles() -> None:
    import simbench as sb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = sb.get_simbench_net("1-MV-comm--0-sw")  # G… profiles (trade) beside aggregated lv_* grids
    z = derive_zones(net)
    assert "load profiles" in z.source
    loaded = np.isin(net.bus.index, net.load.bus)
    commercial = set(net.bus.index[loaded & (z.zone == "commercial")])
    expected = {int(b) for b, p in zip(net.load.bus, net.load.profile) if str(p).startswith("G")}
    assert commercial and commercial <= expected
