"""Networks as they are (issue 13, item 1): every source loads, ratings and generation are kept, generators follow
the demand, bad names are one-line errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from grids.dispatch import LoadFollowingGens, with_gen_dispatch
from grids.netfile import NetworkFileError, load_network_file, read_matpower_m
from grids.network import NetworkError, build_network, sgen_kind
from grids.powerflow import make_engine
from sim.scenario import ScenarioError, load_scenario

LV = "simbench:1-LV-rural1--0-sw"
MV = "simbench:1-MV-rural--0-sw"


def _write_m(net: pp.pandapowerNet, path: Path) -> None:
    """A MATPOWER version-2 .m file of ``net`` (pandapower writes only .mat)."""
    from pandapower.converter.matpower import to_mpc

    mpc = to_mpc(net, init="flat")["mpc"]
    out = ["function mpc = testcase", "% a comment", "mpc.version = '2';", f"mpc.baseMVA = {float(mpc['baseMVA'])!r};"]
    for k in ("bus", "gen", "branch", "gencost"):
        out.append(f"mpc.{k} = [")
        out += ["\t" + "\t".join(repr(float(x)) for x in row) + ";" for row in np.atleast_2d(mpc[k])]
        out.append("];")
    out.append("mpc.bus_name = {\n\t'one';\n\t'two';\n};")
    path.write_text("\n".join(out) + "\n")


# ------------------------------------------------------------------------------------------------ sources
def test_json_round_trip_keeps_ratings_and_sgens(tmp_path: Path) -> None:
    src = pn.create_cigre_network_mv(with_der="pv_wind")
    f = tmp_path / "cigre.json"
    pp.to_json(src, str(f))
    nw = build_network("file", file=str(f))
    assert nw.n_bus == len(src.bus)
    np.testing.assert_array_equal(nw.net.line.max_i_ka.to_numpy(), src.line.max_i_ka.to_numpy())  # kept
    assert nw.substation_mva == float("inf")  # no interface limit beyond the transformers' own
    live = src.sgen[src.sgen.in_service]
    assert len(nw.renewables) == len(live)
    assert sorted(d.kind for d in nw.renewables) == sorted(sgen_kind(t) for t in live.type)
    assert {d.kind for d in nw.renewables} == {"pv", "wind"}
    np.testing.assert_allclose(sum(d.p_max_kw for d in nw.renewables), 1000 * (live.p_mw * live.scaling).sum())
    over = build_network("file", file=str(f), line_max_i_ka=0.2, substation_mva=30.0)
    assert (over.net.line.max_i_ka == 0.2).all() and over.substation_mva == 30.0


def test_matpower_mat_and_m_files_load_alike(tmp_path: Path) -> None:
    from pandapower.converter.matpower import to_mpc

    net = pn.case14()
    to_mpc(net, str(tmp_path / "c14.mat"), init="flat")
    _write_m(net, tmp_path / "c14.m")
    a = load_network_file(tmp_path / "c14.mat")
    b = load_network_file(tmp_path / "c14.m")
    for x in (a, b, net):
        pp.runpp(x)
    assert len(b.bus) == 14 and len(b.gen) == len(net.gen)
    np.testing.assert_allclose(b.res_bus.vm_pu.to_numpy(), a.res_bus.vm_pu.to_numpy(), atol=1e-9)
    np.testing.assert_allclose(b.res_bus.vm_pu.to_numpy(), net.res_bus.vm_pu.to_numpy(), atol=1e-6)
    assert len(build_network("file", file=str(tmp_path / "c14.m")).net.bus) == 14


def test_matpower_m_statements_are_refused_not_ignored(tmp_path: Path) -> None:
    _write_m(pn.case9(), tmp_path / "ok.m")
    text = (tmp_path / "ok.m").read_text()
    bad = tmp_path / "bad.m"
    bad.write_text(text + "mpc.branch(:, 6) = 0;\n")
    with pytest.raises(NetworkFileError, match=r"not a plain assignment") as err:
        read_matpower_m(bad)
    assert len(str(err.value).splitlines()) == 1
    bad.write_text(text.replace("mpc.gen = [", "mpc.gen_off = ["))
    with pytest.raises(NetworkFileError, match=r"missing mpc.gen"):
        read_matpower_m(bad)


def test_catalogue_name_with_arguments() -> None:
    nw = build_network("pandapower:create_cigre_network_mv", network_args={"with_der": "all"})
    kinds = {d.kind for d in nw.renewables}
    assert kinds == {"pv", "wind", "other"}  # fuel cells, CHP, ... are kept as "other"
    assert nw.net.line.max_i_ka.min() < 1  # the network's own ratings
    with pytest.raises(NetworkError, match=r"grid.network_args.bogus: not a parameter") as err:
        build_network("pandapower:create_cigre_network_mv", network_args={"bogus": 1})
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(NetworkError, match=r"grid.network_args: pandapower.networks.create_dickert_lv_network"):
        build_network("pandapower:create_dickert_lv_network", network_args={"feeders_range": "nonsense"})


# ------------------------------------------------------------------------------------------------ SimBench
@pytest.fixture(scope="module")
def sb_lv():
    return build_network(LV, profile_start_day=172)


@pytest.mark.slow
def test_simbench_lv_follows_its_own_profiles(sb_lv) -> None:
    import simbench as sb

    net = sb_lv.net  # the SimBench net as built, with its profile tables
    prof = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    row = (172 - 1) * 96 + 13 * 4  # 21 June (day 172), 13:00
    t_h = np.array([13.0, 13.0 + 24.0 * 365])  # 13:00, and 365 days later (the profile year 2016 has 366)
    p, q = sb_lv.load_kw(t_h)
    want_p = np.zeros(sb_lv.n_bus)
    np.add.at(want_p, [sb_lv.position(b) for b in net.load.bus], prof[("load", "p_mw")].iloc[row].to_numpy() * 1e3)
    np.testing.assert_allclose(p[0], want_p, rtol=1e-12)
    assert q[0].sum() == pytest.approx(prof[("load", "q_mvar")].iloc[row].sum() * 1e3)
    ren = sb_lv.renewable_kw(t_h)
    assert ren.shape == (2, len(net.sgen)) and {d.kind for d in sb_lv.renewables} == {"pv"}
    assert ren[0].sum() == pytest.approx(prof[("sgen", "p_mw")].iloc[row].sum() * 1e3) and ren[0].sum() > 0
    np.testing.assert_allclose(ren[1], prof[("sgen", "p_mw")].iloc[(row + 365 * 96) % 35136].to_numpy() * 1e3)
    assert sb_lv.load_profile == "network"
    line = sb_lv.net.line  # ratings kept: each line's rating is its standard type's (0.27 kA), not 0.4
    assert [net.std_types["line"][t]["max_i_ka"] for t in line.std_type] == line.max_i_ka.tolist()


def test_a_saved_simbench_net_keeps_its_profiles(sb_lv, tmp_path: Path) -> None:
    f = tmp_path / "lv.json"
    pp.to_json(sb_lv.net, str(f))
    nw = build_network("file", file=str(f), profile_start_day=172)
    t_h = np.arange(0.0, 48.0, 0.25)
    assert nw.load_profile == "network"
    for a, b in zip(nw.load_kw(t_h), sb_lv.load_kw(t_h), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(nw.renewable_kw(t_h), sb_lv.renewable_kw(t_h))


@pytest.mark.slow
def test_simbench_mv_builds_with_generation() -> None:
    nw = build_network(MV)
    kinds = [d.kind for d in nw.renewables]
    assert kinds.count("wind") == 6 and kinds.count("pv") == 2 and len(kinds) == 102
    assert np.isfinite(nw.load_kw(np.arange(96) / 4)[0]).all()


@pytest.mark.slow
def test_run_on_simbench_subtracts_its_generation() -> None:
    """End to end: slack import = load − generation + losses on every step, and the PV is really there."""
    from sim.model import CoSimulation

    sc = load_scenario(
        "default",
        [
            f"grid.case='{LV}'",
            "grid.profile_start_day=172",
            "stations.0.buses='all'",
            "stations.1.buses='all'",
            "fleet.n_evs=20",
            "time.start_h=10.0",
            "time.horizon_h=4",
        ],
    )
    s = CoSimulation(sc).run().tables["steps"]
    assert s.converged.all() and (s.pv_kw > 1.0).all()
    balance = s.base_load_kw + s.ev_load_kw - s.pv_kw - s.wind_kw - s.dg_kw + s.losses_kw - s.grid_p_kw
    assert np.abs(balance).max() < 1e-3
    assert (s.grid_p_kw < s.base_load_kw + s.ev_load_kw - 1.0).all()  # generation is subtracted, not dropped


# ------------------------------------------------------------------------------------------------ ratings
def test_case33_defaults_and_network_ratings() -> None:
    nw = build_network("case33bw")
    assert (nw.net.line.max_i_ka == 0.4).all() and nw.substation_mva == 8.0
    with pytest.warns(RuntimeWarning, match="placeholder rating"):
        own = build_network("case33bw", line_max_i_ka="network", substation_mva="network")
    assert (own.net.line.max_i_ka > 9999).all() and own.substation_mva == float("inf")
    n118 = build_network("case118")
    assert n118.net.line.max_i_ka.to_numpy() == pytest.approx(pn.case118().line.max_i_ka.to_numpy())
    assert n118.substation_mva == float("inf")


def test_load_profile_hours_wrap_for_daily_profiles() -> None:
    nw = build_network("case33bw")
    t = np.arange(96) / 4
    for a, b in zip(nw.load_kw(t), nw.load_kw(t + 24.0), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------ generators
def test_case118_generators_follow_the_demand() -> None:
    nw = build_network("case118", load_profile="residential")
    eng = make_engine(nw.net, "fast")
    follow = with_gen_dispatch(eng, nw.net, "load-following")
    assert isinstance(follow, LoadFollowingGens) and with_gen_dispatch(eng, nw.net, "fixed") is eng
    p, q = nw.load_kw(np.array([3.0, 19.0]))  # night trough (0.45) and evening peak (1.0)
    fixed_night = eng.solve(p[0] / 1e3, q[0] / 1e3)
    night = follow.solve(p[0] / 1e3, q[0] / 1e3)
    peak = follow.solve(p[1] / 1e3, q[1] / 1e3)
    assert fixed_night.converged and night.converged and peak.converged
    assert fixed_night.ext_grid_p_mw < -1000  # the set-points export > 1 GW at night
    assert 0 < night.ext_grid_p_mw < 400 and night.losses_mw < fixed_night.losses_mw / 2
    # at the file's own demand the generators sit at their set-points
    np.testing.assert_allclose(follow.gen_p_mw(p[1] / 1e3), follow.p_set_mw, rtol=1e-12)
    assert peak.ext_grid_p_mw == pytest.approx(eng.solve(p[1] / 1e3, q[1] / 1e3).ext_grid_p_mw, rel=1e-9)
    # energy balance of the dispatched snapshot: slack = load − generation + losses
    gen_mw = follow.gen_p_mw(p[0] / 1e3).sum()
    assert night.ext_grid_p_mw == pytest.approx(p[0].sum() / 1e3 - gen_mw + night.losses_mw, abs=1e-6)
    # the reference engine dispatches alike
    ref = with_gen_dispatch(make_engine(nw.net, "pandapower"), nw.net, "load-following").solve(p[0] / 1e3, q[0] / 1e3)
    assert ref.ext_grid_p_mw == pytest.approx(night.ext_grid_p_mw, abs=1e-6)
    np.testing.assert_allclose(ref.vm_pu, night.vm_pu, atol=1e-6)


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "override, needle",
    [
        ("grid.case='case9000'", "grid.case: unknown 'case9000'; allowed: case33bw"),
        ("grid.case='pandapower:case9000'", "grid.case: unknown pandapower network 'case9000'"),
        ("grid.case='simbench:1-LV-rural9--0-sw'", "unknown SimBench code '1-LV-rural9--0-sw'"),
        ("grid.network_args.with_der='all'", "takes no arguments"),
        ("grid.line_max_i_ka=-1", "grid.line_max_i_ka: allowed: a number > 0"),
        ("grid.substation_mva='big'", "grid.substation_mva: allowed: a number > 0"),
        ("grid.load_profile='network'", "grid.load_profile: 'network' needs"),
        ("grid.profile_start_day=367", "grid.profile_start_day"),
        ("grid.profile_start_day=100", "grid.profile_start_day: 100 has no effect on 'case33bw'"),
    ],
)
def test_bad_sources_are_one_line_errors(override: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario("default", [override])
    assert needle in str(err.value) and len(str(err.value).splitlines()) == 1


def test_validation_builds_no_grid(monkeypatch) -> None:
    import simbench

    def boom(*a, **k):
        raise AssertionError("validation built a grid")

    def cigre(with_der=False):  # same signature as pandapower's: validation reads it, never calls it
        raise AssertionError("validation built a grid")

    monkeypatch.setattr(simbench, "get_simbench_net", boom)
    monkeypatch.setattr(pn, "create_cigre_network_mv", cigre)
    sc = load_scenario("default", [f"grid.case='{MV}'"])
    assert sc.grid.case == MV and sc.grid.load_profile is None
    load_scenario("default", ["grid.case='pandapower:create_cigre_network_mv'", "grid.network_args.with_der='pv_wind'"])
    with pytest.raises(ScenarioError, match="grid.network_args.wiht_der: not a parameter"):
        load_scenario("default", ["grid.case='pandapower:create_cigre_network_mv'", "grid.network_args.wiht_der=1"])


def test_unmodelled_elements_are_reported() -> None:
    net = pn.create_cigre_network_mv(with_der="all")
    assert len(net.storage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_network("pandapower:create_cigre_network_mv", network_args={"with_der": "all"})
    assert any("storage" in str(w.message) for w in caught)
