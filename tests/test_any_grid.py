"""Generality matrix (issue 13): every mechanism × six networks × {no attack, station inflation under state
estimation} runs a short horizon of the default scenario, unchanged but for the network, and keeps the invariants.

Networks: the papers' 33-bus feeder, CIGRE MV with its PV and wind, a Kerber LV cable grid, IEEE case118
(meshed, 53 voltage-controlled generators), and one SimBench LV and one MV grid with their own profiles. Checked
on each run: energy balance of every converged step (slack import = load − generation + losses), SOC and target
bounds, station caps, EV counts, finite KPIs, failed power flows flagged and counted (never in a KPI), and the fast
engine against pandapower's Newton–Raphson (≤ 1e-6 pu) on converged snapshots. A mechanism that cannot work on a
network (``qubo-dlmp`` on a meshed one) must refuse it with one clear line before the run.

The elasticity-dr row runs in the fast tier; the whole matrix is marked slow.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
import pytest

from grids.dispatch import with_gen_dispatch
from grids.powerflow import PandapowerPowerFlow
from markets.base import MarketConfigError, available
from sim.model import CoSimulation
from sim.scenario import ScenarioError, load_scenario

NETWORKS: dict[str, list[str]] = {
    "case33bw": [],
    "cigre-mv": ["grid.case='pandapower:create_cigre_network_mv'", "grid.network_args.with_der='pv_wind'"],
    "kerber-lv": ["grid.case='pandapower:create_kerber_landnetz_kabel_2'"],
    "case118": ["grid.case='case118'"],
    "simbench-lv": ["grid.case='simbench:1-LV-rural1--0-sw'", "grid.profile_start_day=172"],
    "simbench-mv": ["grid.case='simbench:1-MV-rural--0-sw'", "grid.profile_start_day=172"],
}
# evening, when home EVs arrive and the public ones are still there; few EVs so the matrix stays quick
SHORT = ["fleet.n_evs=60", "time.start_h=16.0", "time.horizon_h=4"]
ATTACKS: dict[str, list[str]] = {
    "none": [],
    "inflation+se": [
        "detection.enabled=true",
        "detection.state_estimation=true",
        "attacks=[{kind='station-inflation', share=0.3, magnitude=0.5}]",
    ],
}
# where a mechanism refuses a network by design, the refusal (one line) is the expected outcome
REFUSALS = {("qubo-dlmp", "case118"): "gen", ("qubo-dlmp", "simbench-mv"): "meshed"}
#: mechanisms that never read the stations' reports: station inflation against them is refused at validation
NO_STATION_REPORTS = {"uncontrolled", "qubo-dlmp", "qubo-rtp"}


def _scenario(network: str, mechanism: str, attack: str) -> Any:
    return load_scenario("default", [*NETWORKS[network], *SHORT, f"market.mechanism='{mechanism}'", *ATTACKS[attack]])


@cache
def _run(network: str, mechanism: str, attack: str) -> CoSimulation:
    model = CoSimulation(_scenario(network, mechanism, attack))
    model.result = model.run()
    return model


def _check_invariants(m: CoSimulation) -> None:
    res, f = m.result, m.fleet
    s = res.tables["steps"]
    ok = s["converged"].to_numpy(bool)
    # failed power flows are flagged, counted, and carry no grid numbers
    assert res.kpis["pf_failed_steps"] == int((~ok).sum())
    assert s.loc[~ok, ["vmin_pu", "losses_kw", "grid_p_kw"]].isna().all().all()
    assert ok.sum() >= len(s) // 2, f"{(~ok).sum()} of {len(s)} power flows failed"
    # energy balance of every converged step
    gen = s["pv_kw"] + s["wind_kw"] + s["other_gen_kw"] + s["dg_kw"] + s["gen_kw"]
    balance = s["grid_p_kw"] - (s["base_load_kw"] + s["ev_load_kw"] - gen + s["losses_kw"])
    assert np.abs(balance[ok]).max() < 1e-3 * max(1.0, float(s["base_load_kw"].abs().max()) / 1e3)
    # batteries: never below empty, above capacity or above target; energy in = grid energy × efficiency
    assert np.all(f.e_kwh >= -1e-9) and np.all(f.e_kwh <= f.battery_kwh + 1e-9)
    assert np.all(f.e_kwh <= f.e_target_kwh + 1e-6)
    np.testing.assert_allclose(f.e_kwh - f.soc_arrival * f.battery_kwh, f.grid_kwh * f.eta_ch, atol=1e-6)
    assert f.grid_kwh.sum() == pytest.approx(s["ev_load_kw"].sum() * m.dt_min / 60.0, rel=1e-9, abs=1e-9)
    # stations: power within the cap, occupied ports within the ports
    ss = res.tables["station_step"]
    st = m.station_table
    rows = ss["station"].to_numpy()
    cap = np.where(st.cap_kw[rows] > 0, st.cap_kw[rows], np.inf)
    assert np.all(ss["p_kw"].to_numpy() <= cap + 1e-6)
    assert np.all(ss["occupied_ports"].to_numpy() <= st.ports[rows])
    # counts: every EV of the fleet is in the EV table once
    assert res.kpis["n_evs"] == len(f) == len(res.tables["evs"])
    # every numeric KPI is finite; NaN only where the KPI does not apply (documented in docs/results.md)
    n_a = set() if m.network.renewables else {"renewable_utilisation"}
    k = res.kpis
    if not k.get("detected_targets", 0):  # no attacked station caught: no time to detection
        n_a |= {"time_to_detect_min"}
    if not any(a.on_measurements for a in m.spec.attacks):  # the χ² detector's rates need a measurement attack
        n_a |= {"se_detection_rate", "se_time_to_detect_min"}
    bad = {k: v for k, v in res.kpis.items() if isinstance(v, float) and not math.isfinite(v) and k not in n_a}
    assert not bad, f"non-finite KPIs: {bad}"


def _check_against_pandapower(m: CoSimulation, n_snapshots: int = 3) -> None:
    """Re-solve a few converged snapshots with pandapower's Newton–Raphson (same generator dispatch)."""
    s = m.result.tables["steps"]
    steps = np.nonzero(s["converged"].to_numpy(bool))[0]
    steps = steps[np.linspace(0, len(steps) - 1, min(n_snapshots, len(steps))).astype(int)]
    net = m.network.net
    ref = with_gen_dispatch(PandapowerPowerFlow(net), net, m.spec.grid.gen_dispatch)
    rec = m.recorder
    for k in steps:
        pp_res = ref.solve(rec.p_net_bus[k] / 1000.0, rec.q_net_bus[k] / 1000.0)
        assert pp_res.converged
        live = ~np.isnan(pp_res.vm_pu)
        np.testing.assert_allclose(rec.vm[k][live], pp_res.vm_pu[live], atol=1e-6, rtol=0)


def _case(network: str, mechanism: str, attack: str) -> None:
    refusal = REFUSALS.get((mechanism, network))
    if attack == "inflation+se" and mechanism in NO_STATION_REPORTS:
        # an inert attack is refused at validation, before the grid is built (sim/interface.check_fit)
        refusal = "does not read"
    if refusal is not None:
        with pytest.raises((ScenarioError, MarketConfigError, ValueError)) as err:
            _run(network, mechanism, attack)
        msg = str(err.value)
        assert "\n" not in msg and refusal in msg
        return
    m = _run(network, mechanism, attack)
    _check_invariants(m)
    if attack == "none":
        _check_against_pandapower(m)
    else:  # the attack ran and the detector looked at every step with a converged estimate
        assert m.result.kpis["se_nonconverged_steps"] <= 1


# the SimBench rows take ~3 s each: kept for `make test`, out of the fast tier
@pytest.mark.parametrize(
    "network", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("simbench") else n for n in NETWORKS]
)
def test_default_dr_row_on_every_network(network: str) -> None:
    _case(network, "elasticity-dr", "none")


@pytest.mark.slow
@pytest.mark.parametrize("attack", list(ATTACKS))
# `external` is a controller's interface (tests/test_gym.py): without a controller nothing charges
@pytest.mark.parametrize("mechanism", [m for m in available() if m != "external"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_matrix(network: str, mechanism: str, attack: str) -> None:
    _case(network, mechanism, attack)
