"""Plots of a run and of a comparison, on a small synthetic result (no simulator run)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from experiments.plots import COMPARISON_FILES, RUN_FILES, plot_comparison, plot_run

PNG = b"\x89PNG\r\n\x1a\n"


def fake_result(n_steps: int = 8, n_bus: int = 5, n_line: int = 4, n_st: int = 2, n_ev: int = 6, *,
                start_h: float = 12.0, dt_min: float = 15.0, seed: int = 0, name: str = "t",
                ev_scale: float = 1.0) -> SimpleNamespace:
    """A RunResult look-alike with the tables of `sim.recorder.Recorder.tables` (same names and columns)."""
    rng = np.random.default_rng(seed)
    k = np.arange(n_steps)
    t_min = k * dt_min
    tod = (start_h + t_min / 60.0) % 24.0
    daily = 0.6 + 0.4 * np.exp(-(((tod - 19.0) % 24.0) ** 2) / 8.0)
    base_orig = 3000.0 * daily
    dr = -0.05 * base_orig * (daily > 0.8) + 0.03 * base_orig * (daily <= 0.8)
    base = base_orig + dr
    ev_req = ev_scale * 400.0 * np.exp(-(((tod - 20.0) % 24.0) ** 2) / 6.0)
    ev_curt = np.where(ev_req > 0.8 * ev_req.max(), 0.15 * ev_req, 0.0) if ev_scale else np.zeros(n_steps)
    ev = ev_req - ev_curt
    pv = np.clip(600.0 * np.sin(np.pi * (tod - 6.0) / 12.0), 0, None)
    wind = 150.0 + 50.0 * rng.random(n_steps)
    dg = np.where(daily > 0.8, 300.0, 0.0)
    total = base + ev
    losses = 0.04 * total
    grid_p = total + losses - pv - wind - dg
    vmin = 1.0 - 0.09 * total / total.max()
    steps = pd.DataFrame({
        "step": k, "t_min": t_min, "time_h": t_min / 60.0, "tod_h": tod,
        "price_usd_per_mwh": 84.0 * (0.75 + 0.6 * (total - total.min()) / max(np.ptp(total), 1e-9)),
        "base_load_kw": base, "base_load_orig_kw": base_orig, "dr_shift_kw": dr, "ev_load_kw": ev,
        "ev_requested_kw": ev_req, "ev_curtailed_kw": ev_curt, "pv_kw": pv, "wind_kw": wind, "dg_kw": dg,
        "dg_kvar": 0.3 * dg, "dg_cost_usd_per_h": 0.1 * dg, "grid_p_kw": grid_p, "grid_q_kvar": 0.5 * grid_p,
        "losses_kw": losses, "vmin_pu": vmin, "vmax_pu": np.full(n_steps, 1.0), "vmean_pu": (1.0 + vmin) / 2,
        "max_line_loading_percent": 60.0 + 50.0 * total / total.max(), "converged": np.ones(n_steps, bool),
        "curtailed": ev_curt > 0, "n_pf": np.ones(n_steps, int), "n_plugged": rng.integers(0, n_ev + 1, n_steps),
        "n_waiting": rng.integers(0, 2, n_steps), "total_load_kw": total, "td_pf": np.full(n_steps, 0.9),
        "substation_loading_percent": 40.0 + 30.0 * total / total.max(),
    })
    depth = np.linspace(0.0, 1.0, n_bus)
    bus = pd.DataFrame({
        "step": np.repeat(k, n_bus), "bus": np.tile(np.arange(n_bus), n_steps),
        "vm_pu": (1.0 - np.outer((1.0 - vmin), depth)).ravel(),
        "p_ev_kw": np.outer(ev, np.ones(n_bus) / n_bus).ravel(),
        "p_net_kw": np.outer(total, np.ones(n_bus) / n_bus).ravel(),
    })
    line_scale = np.linspace(1.1, 0.3, n_line)
    line = pd.DataFrame({
        "step": np.repeat(k, n_line), "line": np.tile(np.arange(n_line), n_steps),
        "loading_percent": (np.outer(steps["max_line_loading_percent"], line_scale)
                            * (1 + 0.05 * rng.standard_normal((n_steps, n_line)))).ravel(),
        "pl_kw": np.outer(losses, line_scale / line_scale.sum()).ravel(),
    })
    st_groups = np.array(["home", "public"])[np.arange(n_st) % 2]
    station_step = pd.DataFrame({
        "step": np.repeat(k, n_st), "station": np.tile(np.arange(n_st), n_steps),
        "p_kw": np.outer(ev, np.ones(n_st) / n_st).ravel(), "occupied_ports": rng.integers(0, 3, n_steps * n_st),
        "queue": rng.integers(0, 2, n_steps * n_st),
    })
    stations = pd.DataFrame({
        "station": np.arange(n_st), "name": [f"{g}@{b}" for g, b in zip(st_groups, np.arange(n_st) % n_bus + 1)],
        "group": st_groups, "bus": np.arange(n_st) % n_bus, "ports": np.full(n_st, 4),
        "cap_kw": np.where(st_groups == "public", 50.0, np.inf), "utilisation": rng.uniform(0.1, 0.9, n_st),
        "energy_kwh": rng.uniform(50, 500, n_st), "n_arrived": rng.integers(1, 20, n_st),
        "n_reneged": rng.integers(0, 2, n_st), "mean_wait_min": rng.uniform(0, 20, n_st),
        "max_queue": rng.integers(0, 3, n_st),
    })
    horizon = n_steps * dt_min
    arrival = rng.uniform(0, horizon * 0.6, n_ev)
    departure = arrival + rng.uniform(horizon * 0.2, horizon * 0.8, n_ev)
    wait = np.where(rng.random(n_ev) < 0.5, rng.uniform(1, 40, n_ev), 0.0)
    battery = rng.choice([40.0, 60.0, 75.0], n_ev)
    soc_a = rng.uniform(0.2, 0.5, n_ev)
    soc_t = np.full(n_ev, 0.9)
    need = (soc_t - soc_a) * battery
    delivered = need * rng.uniform(0.4, 1.0, n_ev)
    evs = pd.DataFrame({
        "ev": np.arange(n_ev), "group": np.array(["home", "public"])[np.arange(n_ev) % 2],
        "station": np.arange(n_ev) % n_st, "bus": np.arange(n_ev) % n_bus, "arrival_min": arrival,
        "departure_min": departure, "plugin_min": arrival + wait, "unplug_min": np.minimum(departure, horizon),
        "wait_min": wait, "state": np.where(departure <= horizon, "departed", "plugged"),
        "departs_in_horizon": departure <= horizon, "battery_kwh": battery, "soc_arrival": soc_a,
        "soc_target": soc_t, "soc_end": soc_a + delivered / battery, "e_need_kwh": need,
        "e_delivered_kwh": delivered, "grid_kwh": delivered / 0.92, "cost_usd": delivered * 0.1,
        "curtailed_kwh": np.zeros(n_ev), "p_max_kw": np.full(n_ev, 7.2), "eta_ch": np.full(n_ev, 0.92),
        "v2g": np.zeros(n_ev, bool), "participates": np.ones(n_ev, bool), "elasticity": np.full(n_ev, -0.3),
        "income_group": np.array(["low", "high"])[np.arange(n_ev) % 2], "fulfilment": delivered / need,
    })
    if ev_scale == 0:
        evs = evs.iloc[:0]
    lsf = pd.DataFrame({"bus": np.arange(n_bus), "lsf": depth * 0.05, "step": int(np.argmax(total))})
    tables = {"steps": steps, "bus": bus, "line": line, "station_step": station_step, "stations": stations,
              "evs": evs, "lsf": lsf}
    grid = SimpleNamespace(v_min_pu=0.95, v_max_pu=1.05, max_line_loading_percent=100, bus_numbering="paper")
    return SimpleNamespace(tables=tables, kpis={}, scenario=SimpleNamespace(name=name, grid=grid))


def _check_png(p: Path) -> None:
    assert p.is_file(), p
    assert p.read_bytes()[:8] == PNG, p
    assert p.stat().st_size > 5_000, (p, p.stat().st_size)


def test_plot_run_writes_every_plot(tmp_path: Path) -> None:
    paths = plot_run(fake_result(), tmp_path / "plots", strict=True)
    assert sorted(p.name for p in paths) == sorted(RUN_FILES)
    for name in RUN_FILES:
        _check_png(tmp_path / "plots" / name)


def test_plot_run_multi_day_and_pandapower_numbering(tmp_path: Path) -> None:
    r = fake_result(n_steps=3 * 24, dt_min=60.0, start_h=6.0)
    r.scenario.grid.bus_numbering = "pandapower"
    paths = plot_run(r, tmp_path, strict=True)
    assert sorted(p.name for p in paths) == sorted(RUN_FILES)


def test_plot_run_without_evs_and_bus_table(tmp_path: Path) -> None:
    r = fake_result(ev_scale=0.0)
    del r.tables["bus"]
    paths = plot_run(r, tmp_path, strict=True)
    names = {p.name for p in paths}
    assert names == set(RUN_FILES) - {"voltage_heatmap.png", "voltage_profile.png", "fulfilment.png"}
    for p in paths:
        _check_png(p)
    # nobody waited: the stations plot falls back to queue length over time
    assert (tmp_path / "stations.png").is_file()


def test_plot_run_minimal_tables(tmp_path: Path) -> None:
    r = fake_result()
    r.tables = {"steps": r.tables["steps"], "line": r.tables["line"].iloc[:0]}
    paths = plot_run(r, tmp_path, strict=True)
    assert {p.name for p in paths} == {"load_profile.png", "price_ev_load.png"}


def test_plot_run_never_raises_when_not_strict(tmp_path: Path) -> None:
    r = fake_result()
    r.tables["bus"] = r.tables["bus"].drop(columns="vm_pu")  # broken table: warned and skipped
    with pytest.warns(RuntimeWarning) as caught:
        paths = plot_run(r, tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    assert "voltage_heatmap.png" in messages and "voltage_profile.png" in messages
    assert {p.name for p in paths} == set(RUN_FILES) - {"voltage_heatmap.png", "voltage_profile.png"}


def test_plot_comparison(tmp_path: Path) -> None:
    frames = {"no EVs": fake_result(ev_scale=0.0, name="cmp-no EVs"),
              "uncontrolled": fake_result(ev_scale=1.5, name="cmp-uncontrolled"),
              "elasticity-dr": fake_result(ev_scale=1.0, name="cmp-elasticity-dr")}
    paths = plot_comparison(frames, tmp_path / "cmp", strict=True)
    assert sorted(p.name for p in paths) == sorted(COMPARISON_FILES)
    for p in paths:
        _check_png(p)
    assert plot_comparison({}, tmp_path / "empty") == []
