"""V2G KPIs, the SOC tables and the battery plots (issue 21, part 4), on a small real V2G run (milp, objective peak,
30 % V2G-capable EVs, 100 EVs, one day) and its twin without V2G.

Every expectation is recomputed from something the KPI code does not read: the fleet's arrays, the step table's
price, and the fleet's state captured after every step through the model's ``progress`` hook.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import experiments.plotting.common as plots
from agents.fleet import PLUGGED
from experiments.plots import RUN_FILES, plot_run
from sim.model import CoSimulation
from sim.recorder import SOC_PERCENTILES, SOC_TRAJECTORIES
from sim.scenario import load_scenario

SMALL = ["market.mechanism=milp", "market.params.milp.objective=peak", "fleet.n_evs=100", "time.horizon_h=24"]
V2G = ["fleet.groups.0.v2g_share=0.3", "fleet.groups.1.v2g_share=0.3"]
V2G_KPIS = (
    "n_v2g_evs",
    "v2g_discharged_kwh",
    "v2g_revenue_usd",
    "v2g_degradation_usd",
    "v2g_revenue_per_ev_usd",
    "v2g_degradation_per_ev_usd",
    "v2g_peak_reduction_kw",
)


def _run(overrides: list[str]) -> SimpleNamespace:
    """The run, its model, and every EV's SOC and plugged flag after each step (captured, not recorded)."""
    m = CoSimulation(load_scenario("default", SMALL + overrides))
    soc = np.full((m.n_steps, len(m.fleet)), np.nan)
    plugged = np.zeros((m.n_steps, len(m.fleet)), bool)

    def after_step(k: int, _n: int) -> None:  # called right after the step's settle and record
        soc[k - 1] = m.fleet.soc
        plugged[k - 1] = m.fleet.state == PLUGGED

    m.progress = after_step
    r = m.run()
    return SimpleNamespace(r=r, m=m, k=r.kpis, soc=soc, plugged=plugged, dt_h=m.dt_min / 60.0)


@pytest.fixture(scope="module")
def runs() -> dict[str, SimpleNamespace]:
    return {"v2g": _run(V2G), "none": _run([])}


def test_discharged_energy_is_the_fleets_and_the_step_tables(runs: dict[str, SimpleNamespace]) -> None:
    v = runs["v2g"]
    steps, evs, f = v.r.tables["steps"], v.r.tables["evs"], v.m.fleet
    assert v.k["v2g_discharged_kwh"] > 1.0  # the run does discharge
    assert v.k["v2g_discharged_kwh"] == pytest.approx(f.discharged_kwh.sum(), rel=1e-12)
    assert v.k["v2g_discharged_kwh"] == pytest.approx(steps.ev_discharge_kw.sum() * v.dt_h, rel=1e-9)
    # the step column is the V2G part of the net EV load: never negative, and the net load never below minus it
    assert (steps.ev_discharge_kw >= 0).all() and (steps.ev_load_kw >= -steps.ev_discharge_kw - 1e-9).all()
    assert (steps.ev_load_kw < 0).any() or (steps.ev_discharge_kw > 0).any()
    assert (evs.loc[~evs.v2g.astype(bool), "discharged_kwh"] == 0).all()  # only V2G EVs feed back
    np.testing.assert_array_equal(evs.discharged_kwh, f.discharged_kwh)


def test_revenue_is_the_discharge_at_the_step_price(runs: dict[str, SimpleNamespace]) -> None:
    v = runs["v2g"]
    steps, evs = v.r.tables["steps"], v.r.tables["evs"]
    want = float((steps.ev_discharge_kw * v.dt_h * steps.price_usd_per_mwh / 1000.0).sum())
    assert want > 0.01
    assert v.k["v2g_revenue_usd"] == pytest.approx(want, rel=1e-9)
    assert evs.v2g_revenue_usd.sum() == pytest.approx(want, rel=1e-9)
    # the users' cost is the net EV energy at the step price (revenue credited) plus the wear
    paid = float((steps.ev_load_kw * v.dt_h * steps.price_usd_per_mwh / 1000.0).sum())
    assert v.k["user_cost_usd"] == pytest.approx(paid + v.k["v2g_degradation_usd"], rel=1e-9)


def test_wear_is_the_discharged_battery_energy_at_the_degradation_rate(runs: dict[str, SimpleNamespace]) -> None:
    v = runs["v2g"]
    f, evs = v.m.fleet, v.r.tables["evs"]
    per_ev = f.discharged_kwh / f.eta_dis * f.degradation_usd_per_kwh  # battery side = grid side / η_dis
    assert per_ev.sum() > 0.01
    np.testing.assert_allclose(evs.degradation_usd, per_ev, rtol=1e-9, atol=1e-12)
    assert v.k["v2g_degradation_usd"] == pytest.approx(per_ev.sum(), rel=1e-9)


def test_per_ev_means_are_over_the_v2g_evs_that_plugged_in(runs: dict[str, SimpleNamespace]) -> None:
    v = runs["v2g"]
    evs = v.r.tables["evs"]
    sel = evs.v2g.astype(bool) & np.isfinite(evs.plugin_min)
    n = int(sel.sum())
    assert 0 < n < int(np.isfinite(evs.plugin_min).sum())
    assert v.k["n_v2g_evs"] == n
    assert v.k["v2g_revenue_per_ev_usd"] == pytest.approx(evs.v2g_revenue_usd[sel].sum() / n, rel=1e-9)
    assert v.k["v2g_degradation_per_ev_usd"] == pytest.approx(evs.degradation_usd[sel].sum() / n, rel=1e-9)
    assert v.k["v2g_revenue_per_ev_usd"] * n == pytest.approx(v.k["v2g_revenue_usd"], rel=1e-9)


def test_peak_reduction_adds_the_discharge_back(runs: dict[str, SimpleNamespace]) -> None:
    v = runs["v2g"]
    steps = v.r.tables["steps"]
    total = (steps.base_load_kw + steps.ev_load_kw).to_numpy()
    # V2G discharge per step from the fleet as captured after each step: battery energy lost × η_dis, per hour
    f = v.m.fleet
    e = np.vstack([f.soc_arrival, v.soc]) * f.battery_kwh
    fed_kw = (np.maximum(-np.diff(e, axis=0), 0.0) * f.eta_dis).sum(axis=1) / v.dt_h
    np.testing.assert_allclose(steps.ev_discharge_kw, fed_kw, rtol=1e-9, atol=1e-6)
    want = float((total + fed_kw).max() - total.max())
    assert want > 0.1, "the small V2G run discharges at its peak step"
    assert v.k["v2g_peak_reduction_kw"] == pytest.approx(want, rel=1e-6)
    assert v.k["peak_load_kw"] == pytest.approx(total.max(), rel=1e-12)  # the actual peak is the one subtracted


def test_v2g_kpis_are_zero_without_v2g(runs: dict[str, SimpleNamespace]) -> None:
    k, evs = runs["none"].k, runs["none"].r.tables["evs"]
    assert not evs.v2g.any() and (runs["none"].r.tables["steps"].ev_discharge_kw == 0).all()
    for name in V2G_KPIS:
        assert k[name] == 0 and not np.isnan(k[name]), name
    assert isinstance(k["n_v2g_evs"], int)
    assert all(name in runs["v2g"].k and runs["v2g"].k[name] > 0 for name in V2G_KPIS)


def test_soc_percentiles_per_step(runs: dict[str, SimpleNamespace]) -> None:
    for v in runs.values():
        table, steps = v.r.tables["soc_fleet"], v.r.tables["steps"]
        assert len(table) == v.m.n_steps and list(table.step) == list(range(v.m.n_steps))
        p = table[[f"soc_p{q}" for q in SOC_PERCENTILES]].to_numpy()
        none = steps.n_plugged.to_numpy() == 0
        assert np.isnan(p[none]).all() and np.isfinite(p[~none]).all() and (~none).sum() > 10
        assert ((p[~none] >= 0) & (p[~none] <= 1)).all()
        assert (np.diff(p[~none], axis=1) >= 0).all()  # p5 ≤ p25 ≤ … ≤ p95
        for k in np.nonzero(~none)[0]:  # the fleet as captured after each step
            want = np.percentile(v.soc[k][v.plugged[k]], SOC_PERCENTILES)
            np.testing.assert_allclose(p[k], want, rtol=0, atol=1e-12, err_msg=f"step {k}")


def test_soc_trajectories_of_a_few_plugged_evs(runs: dict[str, SimpleNamespace]) -> None:
    v = runs["v2g"]
    traj, evs, n = v.r.tables["soc_evs"], v.r.tables["evs"], v.m.n_steps
    chosen = traj.ev.unique()
    assert len(chosen) == SOC_TRAJECTORIES and len(traj) == n * SOC_TRAJECTORIES
    # V2G-capable first, then the largest energy need, among the EVs that plugged in
    came = evs[np.isfinite(evs.plugin_min)]
    ranked = came.assign(nv=~came.v2g.astype(bool)).sort_values(["nv", "e_need_kwh", "ev"], ascending=[1, 0, 1])
    assert sorted(chosen) == sorted(ranked.ev.to_numpy()[:SOC_TRAJECTORIES])
    assert evs.set_index("ev").loc[chosen, "v2g"].all()
    for ev, g in traj.groupby("ev"):
        g = g.sort_values("step")
        want = np.where(v.plugged[:, ev], v.soc[:, ev], np.nan)
        np.testing.assert_allclose(g.soc.to_numpy(), want, rtol=0, atol=1e-12, err_msg=f"EV {ev}")
        assert (g.soc_target == v.m.fleet.soc_target[ev]).all() and (g.soc_floor == v.m.fleet.soc_floor[ev]).all()


def _captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """file name → the figure's lines (label → y data) at save time."""
    seen: dict[str, Any] = {}
    save = plots._save

    def capture(fig: Any, path: Path) -> Path:
        lines = {ln.get_label(): np.asarray(ln.get_ydata(), float) for ax in fig.axes for ln in ax.get_lines()}
        seen[Path(path).name] = lines
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    return seen


def test_plots_and_tables_written(
    tmp_path: Path, runs: dict[str, SimpleNamespace], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _captured(monkeypatch)
    v = runs["v2g"]
    out = v.r.write(tmp_path / "v2g", plots=lambda r, d: plot_run(r, d, strict=True))
    for name in ("soc_fleet", "soc_evs"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / "tables" / f"{name}.parquet"), v.r.tables[name])
    for name in ("soc.png", "v2g_value.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG", name
    np.testing.assert_allclose(seen["soc.png"]["median"], v.r.tables["soc_fleet"].soc_p50, rtol=0, atol=1e-12)
    evs = v.r.tables["evs"]
    sel = evs[evs.v2g.astype(bool) & np.isfinite(evs.plugin_min)]
    net = np.sort((sel.v2g_revenue_usd - sel.degradation_usd).to_numpy())[::-1]
    np.testing.assert_allclose(seen["v2g_value.png"]["net (revenue − wear)"], net, rtol=0, atol=1e-12)
    # without V2G: the SOC plot, no V2G plot; the standard set is exactly RUN_FILES
    names = {p.name for p in plot_run(runs["none"].r, tmp_path / "none", strict=True)}
    assert names == set(RUN_FILES) and "soc.png" in names and "v2g_value.png" not in names


def test_soc_plot_only_up_to_a_week(tmp_path: Path) -> None:
    def days(n_days: int) -> Any:  # a RunResult look-alike: steps and soc_fleet only
        n = n_days * 24
        t_h = np.arange(n, dtype=float)
        steps = pd.DataFrame({"step": np.arange(n), "time_h": t_h, "tod_h": t_h % 24, "n_plugged": np.full(n, 3)})
        soc = pd.DataFrame({"step": np.arange(n)} | {f"soc_p{q}": np.full(n, q / 100) for q in SOC_PERCENTILES})
        return SimpleNamespace(tables={"steps": steps, "soc_fleet": soc}, kpis={}, scenario=None)

    assert "soc.png" in {p.name for p in plot_run(days(7), tmp_path / "week", strict=True)}
    assert "soc.png" not in {p.name for p in plot_run(days(10), tmp_path / "long", strict=True)}
