"""The OPF-dispatching DSO (issue 17, part 1): ``grid.dispatch = "opf"`` dispatches the DGs by AC OPF each step,
never costs more than merit order where merit order keeps the limits, keeps the limits where merit order does not,
and falls back to merit order — counted, never raised — where the OPF fails."""

from __future__ import annotations

import numpy as np
import pytest

from agents.dso import dg_cost_usd_per_h, dg_dispatch
from grids.dlmp import OpfDispatch
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
