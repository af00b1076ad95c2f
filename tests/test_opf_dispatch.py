"""The OPF-dispatching DSO (issue 17, part 1): ``grid.dispatch = "opf"`` dispatches the DGs by AC OPF each step,
never costs more than merit order where merit order keeps the limits, keeps the limits where merit order does not,
and falls back to merit order — counted, never raised — where the OPF fails. ``grid.dispatch = "lindistflow"``
(one LinDistFlow QP per step) follows the AC OPF's dispatch closely and much faster, keeps the limits where the OPF
does, falls back the same way, and is refused on a meshed network."""

from __future__ import annotations

import numpy as np
import pytest

from agents.dso import dg_cost_usd_per_h, dg_dispatch
from grids.dlmp import LinDistFlowDispatch, OpfDispatch
from grids.network import build_network
from grids.powerflow.reference import PandapowerPowerFlow
from sim.model import CoSimulation
from sim.scenario import load_scenario

DR = "dr-tou-33bus"


def _objective(network, engine, p_load_kw, q_load_kvar, price, dg_p, dg_q, ren_kw) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """Substation energy at the price + DG cost [$/h] of a dispatch, from an AC power flow, and that power flow."""
    p = p_load_kw.copy()
    q = q_load_kvar.copy()
    for d, pk, qk in zip(network.dgs, dg_p, dg_q, strict=True):
        p[network.position(d.bus)] -= pk
        q[network.position(d.bus)] -= qk
    for d, rk in zip(network.renewables, ren_kw, strict=True):
        p[network.position(d.bus)] -= rk
    res = engine.solve(p / 1000.0, q / 1000.0)
    return float(res.ext_grid_p_mw) * price + dg_cost_usd_per_h(network, dg_p, dg_q), res


@pytest.mark.parametrize("hour", [2, 13, 19])
def test_opf_dispatch_is_no_dearer_than_merit_order_and_keeps_the_limits(hour: int) -> None:
    m = CoSimulation(load_scenario(DR, ["fleet.n_evs=0"]))
    network = m.network
    engine = PandapowerPowerFlow(network.net)
    price = float(m.market_operator.price_usd_per_mwh[hour])
    p_load, q_load, ren = m.base_p_kw[hour], m.base_q_kvar[hour], m.renewable_kw[hour]
    opf = OpfDispatch(network).solve(p_load, q_load, price, ren)
    assert opf is not None
    dg_p, dg_q, ren_used = opf
    assert np.all(dg_p >= 0) and np.all(dg_p <= [d.p_max_kw + 1e-6 for d in network.dgs])
    assert np.all(ren_used <= ren + 1e-9)
    cost_opf, res = _objective(network, engine, p_load, q_load, price, dg_p, dg_q, ren_used)
    assert res.converged and np.nanmin(res.vm_pu) >= network.v_min_pu - 1e-4
    assert np.nanmax(res.vm_pu) <= network.v_max_pu + 1e-4
    mp, mq, _ = dg_dispatch(network, price)
    cost_merit, res_m = _objective(network, engine, p_load, q_load, price, mp, mq, ren)
    merit_feasible = network.v_min_pu <= np.nanmin(res_m.vm_pu) and np.nanmax(res_m.vm_pu) <= network.v_max_pu
    if merit_feasible:
        assert cost_opf <= cost_merit + 1e-3 * abs(cost_merit) + 0.5


def test_a_failed_opf_falls_back_to_merit_order_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    short = ["time.horizon_h=6", "fleet.n_evs=20"]
    merit = CoSimulation(load_scenario(DR, short)).run().kpis
    import grids.dlmp.acopf as acopf

    monkeypatch.setattr(acopf, "_run_opf", lambda net, init: (False, "forced failure"))
    m = CoSimulation(load_scenario(DR, [*short, "grid.dispatch='opf'"]))
    r = m.run()
    k = r.kpis
    assert m.dso.opf.n_failed == 6 and m.dso.opf.n_solved == 0
    assert k["opf_failed_steps"] == 6 and r.tables["steps"]["dispatch_failed"].all() and merit["opf_failed_steps"] == 0
    for key in ("energy_losses_kwh", "dg_energy_kwh", "total_cost_usd"):
        assert k[key] == pytest.approx(merit[key], rel=1e-12)


def test_opf_dispatch_changes_the_dispatch_of_the_002_day() -> None:
    """The OPF is not merit order in disguise: on the 002 feeder it changes the DGs' output (the day is short)."""
    short = ["time.horizon_h=4", "fleet.n_evs=30"]
    kpis = {d: CoSimulation(load_scenario(DR, [*short, f"grid.dispatch='{d}'"])).run().kpis for d in ("merit", "opf")}
    assert kpis["opf"]["dg_energy_kwh"] != pytest.approx(kpis["merit"]["dg_energy_kwh"], rel=1e-6)


# --- grid.dispatch = "lindistflow" ---------------------------------------------------------------------------------

#: Hours of the 002 day (noon to noon) covering every regime: the upper voltage limit binding with the PV high
#: (0, 20, 22: DG11 held inside its range, DG33's reactive output cut), DG33 at an interior optimum near its cost
#: (10, 18), DG11 inside its range at the cheapest price (15), reactive outputs inside their ranges (9, 15).
LDF_HOURS = [0, 9, 10, 15, 18, 20, 22]


def test_lindistflow_dispatch_follows_the_ac_opf_and_is_faster() -> None:
    """Per step the QP's DG output is within 60 kW (4 % of the 1.5 MW ratings; measured 35 kW over the 24 hours)
    and 60 kVAr (measured 38) of the AC OPF's, their DG energy over these hours within 1 % (measured −0.61 %; the
    QP sits slightly low wherever a DG is inside its range; −0.20 % over all 24 hours), its
    voltages after the AC power flow inside the limits wherever the OPF's are, and it is at least 10× faster
    (measured 40–65× in CPU). Merit order misses by up to 320 kW here (hour 0), so this fails if it is swapped in."""
    m = CoSimulation(load_scenario(DR, ["fleet.n_evs=0"]))
    network = m.network
    engine = PandapowerPowerFlow(network.net)
    q_price = m.spec.prices.q_price_usd_per_mvarh
    opf, ldf = OpfDispatch(network), LinDistFlowDispatch(network)
    e_opf = e_ldf = 0.0
    for hour in LDF_HOURS:
        price = float(m.market_operator.price_usd_per_mwh[hour])
        args = (m.base_p_kw[hour], m.base_q_kvar[hour], price, m.renewable_kw[hour], q_price)
        o, lp = opf.solve(*args), ldf.solve(*args)
        assert o is not None and lp is not None
        np.testing.assert_allclose(lp[0], o[0], atol=60.0, err_msg=f"DG P at hour {hour}")
        np.testing.assert_allclose(lp[1], o[1], atol=60.0, err_msg=f"DG Q at hour {hour}")
        assert np.all(lp[2] <= m.renewable_kw[hour] + 1e-9) and np.all(lp[2] >= 0)
        e_opf, e_ldf = e_opf + o[0].sum(), e_ldf + lp[0].sum()
        _, res_o = _objective(network, engine, m.base_p_kw[hour], m.base_q_kvar[hour], price, *o)
        _, res_l = _objective(network, engine, m.base_p_kw[hour], m.base_q_kvar[hour], price, *lp)
        assert res_l.converged
        if np.nanmin(res_o.vm_pu) >= network.v_min_pu - 1e-4:
            assert np.nanmin(res_l.vm_pu) >= network.v_min_pu - 1e-4, f"hour {hour}"
        if np.nanmax(res_o.vm_pu) <= network.v_max_pu + 1e-4:
            assert np.nanmax(res_l.vm_pu) <= network.v_max_pu + 1e-4, f"hour {hour}"
    assert e_ldf == pytest.approx(e_opf, rel=1e-2)
    assert ldf.n_solved == len(LDF_HOURS) and ldf.n_failed == 0
    assert 0 < ldf.cpu_s and ldf.time_s * 10 < opf.time_s


def test_an_infeasible_lindistflow_step_returns_none_and_is_counted() -> None:
    """Twice the 002 base load cannot be served within 0.95 pu: no optimum, None, counted."""
    network = build_network("case33bw-dr")
    ldf = LinDistFlowDispatch(network)
    no_ren = np.zeros(len(network.renewables))
    assert ldf.solve(network.base_p_kw, network.base_q_kvar, 84.0, no_ren, 7.0) is not None
    assert ldf.solve(2 * network.base_p_kw, 2 * network.base_q_kvar, 84.0, no_ren, 7.0) is None
    assert (ldf.n_solved, ldf.n_failed) == (1, 1)


def test_a_failed_lindistflow_step_falls_back_to_merit_order_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    short = ["time.horizon_h=6", "fleet.n_evs=20"]
    merit = CoSimulation(load_scenario(DR, short)).run().kpis
    monkeypatch.setattr(LinDistFlowDispatch, "_run", lambda self, *a: None)
    m = CoSimulation(load_scenario(DR, [*short, "grid.dispatch='lindistflow'"]))
    assert isinstance(m.dso.opf, LinDistFlowDispatch)
    r = m.run()
    k = r.kpis
    assert m.dso.opf.n_failed == 6 and m.dso.opf.n_solved == 0
    assert k["opf_failed_steps"] == 6 and r.tables["steps"]["dispatch_failed"].all()
    for key in ("energy_losses_kwh", "dg_energy_kwh", "total_cost_usd"):
        assert k[key] == pytest.approx(merit[key], rel=1e-12)


def test_lindistflow_dispatch_runs_the_002_day_close_to_the_opf() -> None:
    """In a simulation (EVs included) the QP changes the DGs' output from merit order, as the OPF does, and lands near
    the OPF's: DG energy within 2 % (measured −0.92 % on these four noon hours, where the upper voltage limit binds
    and LinDistFlow's voltage sensitivities keep the DGs a little low; −0.17 % over the full day), losses within
    1 %."""
    short = ["time.horizon_h=4", "fleet.n_evs=30"]
    modes = ("merit", "opf", "lindistflow")
    runs = {d: CoSimulation(load_scenario(DR, [*short, f"grid.dispatch='{d}'"])) for d in modes}
    kpis = {d: m.run().kpis for d, m in runs.items()}
    assert kpis["lindistflow"]["opf_failed_steps"] == 0 and runs["lindistflow"].dso.opf.n_solved == 4
    assert kpis["lindistflow"]["dg_energy_kwh"] != pytest.approx(kpis["merit"]["dg_energy_kwh"], rel=1e-3)
    assert kpis["lindistflow"]["dg_energy_kwh"] == pytest.approx(kpis["opf"]["dg_energy_kwh"], rel=2e-2)
    assert kpis["lindistflow"]["energy_losses_kwh"] == pytest.approx(kpis["opf"]["energy_losses_kwh"], rel=1e-2)


def test_lindistflow_dispatch_solves_every_step_of_the_002_dr_day() -> None:
    """The demand-response day without EVs of the paper comparison: at 03:00 HiGHS's QP solver stops at its optimum
    with two balance rows 5.8e-5 MW off and reports a solve error; that point is accepted (checked residual
    <= 1e-4), so no step falls back to merit order."""
    m = CoSimulation(load_scenario(DR, ["fleet.n_evs=0", "grid.dispatch='lindistflow'"]))
    k = m.run().kpis
    assert k["opf_failed_steps"] == 0 and m.dso.opf.n_solved == 24


def test_validate_refuses_lindistflow_dispatch_on_a_meshed_network(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """case33bw with its five tie lines closed is meshed: one line naming the field, the value and what is allowed."""
    import pandapower as pp
    import pandapower.networks as pn
    from typer.testing import CliRunner

    from experiments.cli import app

    net = pn.case33bw()
    net.line["in_service"] = True
    path = tmp_path / "meshed33.json"
    pp.to_json(net, str(path))
    sets = ["grid.case='file'", f"grid.file='{path}'", "grid.line_max_i_ka=0.4", "fleet.n_evs=10", "time.horizon_h=2"]
    args = ["validate", "default", *[a for s_ in sets for a in ("--set", s_)]]
    assert CliRunner().invoke(app, args).exit_code == 0
    res = CliRunner().invoke(app, [*args, "--set", "grid.dispatch='lindistflow'"])
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "grid.dispatch" in line and "'lindistflow'" in line and "meshed" in line
    assert "allowed: 'merit' or 'opf'" in line
