"""Key performance indicators of a run, computed from its tables (SPEC.md "Grid and metrics").

Definitions (Δt = step length in hours; sums run over steps):

* energy losses [kWh] = Σ losses·Δt; ``loss_change`` relative to a baseline is computed by the caller.
* ``vmin_bus``: pandapower index of the bus where the lowest voltage occurred (as in the ``bus`` table).
* VDI = mean over buses and steps of |V − 1| (`002_…` eq. 19); VRI = maxᵢ (maxₜ Vᵢ − minₜ Vᵢ) (eq. 20).
* peak, load factor (mean / peak) and load variance (grid stress, [kW²]) of the total demand = non-EV + EV load.
* T–D power factor = |P| / |S| at the external grid; substation loading = |S| / rating.
* costs: grid energy = Σ P_grid·λ·Δt (import at λ, export credited at λ), grid reactive = Σ |Q_grid|·q_price·Δt,
  DG = Σ cost(P_DG)·Δt; total = sum of the three (`002_…` eq. 7, losses priced inside the grid purchase).
* mean step price over the day and over the evening peak 17:00–21:00 (``price_peak_mean``) [$/MWh].
* user cost: what EVs pay at the step price; Gini of spend per EV among EVs that charged; price affordability
  index = base price ÷ mean price paid per kWh (> 1: users pay below the base price).
* waiting: plug-in − arrival for EVs that arrived in the horizon (reneged EVs count until they left).
* energy fulfilment: delivered ÷ needed battery energy, over EVs that depart inside the horizon; unserved EV
  energy [kWh] = Σ max(needed − delivered, 0) over the same EVs.
* V2G (all 0 on a run without V2G): ``v2g_discharged_kwh`` = energy V2G EVs fed back, grid side [kWh];
  ``v2g_revenue_usd`` = what it earned, Σ discharged·λ at the step price [$] (credited in ``cost_usd``);
  ``v2g_degradation_usd`` = battery wear, Σ (discharged ÷ η_dis) · ``degradation_usd_per_kwh`` [$] (charged in
  ``cost_usd``); ``n_v2g_evs`` = V2G-capable EVs that plugged in, and ``v2g_revenue_per_ev_usd`` /
  ``v2g_degradation_per_ev_usd`` the means over them. ``v2g_peak_reduction_kw`` = max over steps of (total demand +
  V2G discharge of the step) − peak demand [kW]: a direct attribution that assumes the EVs would have done
  nothing else in the steps they discharged. The counterfactual is the paired run with every ``v2g_share = 0``
  (same seed), where the mechanism also charges differently; the direct attribution is the lower-effort estimate
  from one run.
* renewable utilisation = renewable energy used ÷ available (renewables are never curtailed in this model, so it
  is 1 unless the power flow fails).
* power-flow failures: ``pf_failed_steps`` counts steps whose power flow found no physical solution even after the
  fast engine's retries and pandapower fallback (``nonconverged_steps`` is the same number, kept for old
  readers); ``pf_fallback_steps`` counts steps that needed a retry or pandapower. **Every grid KPI — voltages
  (Vmin/Vmax/VDI/VRI, violation minutes, undervoltage steps), losses and their cost, line/transformer/substation
  loading, T–D power factor, grid import and its cost — is computed over the converged steps only**; a failed
  step never enters them (the recorder stores NaN there). ``total_cost_usd`` therefore covers converged steps.
* transformer loading: ``max_trafo_loading_percent`` (0 without transformers) and ``trafo_overload_minutes``
  (transformer-steps above ``grid.max_trafo_loading_percent`` × Δt).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.scenario import Scenario


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = equal, → 1 = concentrated)."""
    x = np.sort(np.asarray(x, float))
    if x.size == 0 or x.sum() <= 0:
        return 0.0
    n = x.size
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def vdi(vm: np.ndarray) -> float:
    """Voltage deviation index: mean |V − 1| over all entries [pu]."""
    return float(np.nanmean(np.abs(np.asarray(vm) - 1.0)))


def vri(vm_steps_by_bus: np.ndarray) -> float:
    """Voltage regulation index: max over buses of the bus's voltage range over time [pu]."""
    v = np.asarray(vm_steps_by_bus)
    return float(np.nanmax(np.nanmax(v, axis=0) - np.nanmin(v, axis=0))) if v.size else 0.0


def compute_kpis(
    tables: dict[str, pd.DataFrame], scenario: Scenario, *, dt_min: float, timing: dict[str, Any]
) -> dict[str, Any]:
    """All KPIs of one run as a flat dict of floats/ints (units in the key names)."""
    s, evs = tables["steps"], tables["evs"]
    # grid KPIs only from steps whose power flow converged (failed steps hold NaN, see sim.recorder)
    conv = s["converged"].to_numpy(bool) if len(s) else np.zeros(0, bool)
    k: dict[str, Any] = {}
    k["n_steps"] = int(len(s))
    k["dt_min"] = float(dt_min)
    k["n_evs"] = int(len(evs))
    _grid_kpis(k, tables, scenario, conv, dt_min)
    _load_kpis(k, s, dt_min)
    _cost_kpis(k, s, scenario, conv, dt_min)
    _user_kpis(k, tables, scenario, dt_min)
    _v2g_kpis(k, s, evs)
    # solver
    for key, v in timing.items():
        k[f"time_{key}" if not key.startswith("n_") else key] = v
    return k


def _grid_kpis(
    k: dict[str, Any], tables: dict[str, pd.DataFrame], scenario: Scenario, conv: np.ndarray, dt_min: float
) -> None:
    """Grid KPIs into ``k``: power-flow failures, losses, voltages, line/trafo/substation loading, curtailment."""
    dt_h = dt_min / 60.0
    s, bus, line, evs = tables["steps"], tables["bus"], tables["line"], tables["evs"]
    n_bus = len(bus) // len(s) if len(s) else 0  # the bus table is step-major, every bus in every step
    bus_ids = bus["bus"].to_numpy()[:n_bus]  # pandapower indices, in the order of the columns of vm
    vm = bus["vm_pu"].to_numpy().reshape(len(s), n_bus) if len(s) else np.zeros((0, 0))
    if not conv.all():
        vm = vm[conv]
        line = line[conv[line["step"].to_numpy(int)]]
    sc = s[conv]
    g = scenario.grid
    k["pf_failed_steps"] = int((~conv).sum())
    methods = s["pf_method"].to_numpy(str) if "pf_method" in s else np.zeros(0, str)
    # steps the fast engine solved only on a retry or through pandapower (with engine "pandapower" that is normal)
    fallback = ("fast-retry", "pandapower") if scenario.grid.engine == "fast" else ("fast-retry",)
    k["pf_fallback_steps"] = int(np.isin(methods, fallback).sum())
    k["energy_losses_kwh"] = float(sc["losses_kw"].sum() * dt_h)
    k["peak_losses_kw"] = float(sc["losses_kw"].max()) if len(sc) else 0.0
    k["vmin_pu"] = float(np.nanmin(vm)) if vm.size else float("nan")
    k["vmin_bus"] = int(bus_ids[np.unravel_index(np.nanargmin(vm), vm.shape)[1]]) if vm.size else -1
    k["vmax_pu"] = float(np.nanmax(vm)) if vm.size else float("nan")
    k["vavg_pu"] = float(np.nanmean(vm)) if vm.size else float("nan")
    k["vstd_pu"] = float(np.nanstd(vm)) if vm.size else float("nan")
    k["vdi_pu"] = vdi(vm) if vm.size else float("nan")
    k["vri_pu"] = vri(vm) if vm.size else float("nan")
    k["voltage_violation_bus_minutes"] = float(((vm < g.v_min_pu - 1e-6) | (vm > g.v_max_pu + 1e-6)).sum() * dt_min)
    # split of the violation total by side (a feeder can sit above v_max with no bus below v_min)
    k["undervoltage_bus_minutes"] = float((vm < g.v_min_pu - 1e-6).sum() * dt_min)
    k["overvoltage_bus_minutes"] = float((vm > g.v_max_pu + 1e-6).sum() * dt_min)
    k["undervoltage_steps"] = int((np.nanmin(vm, axis=1) < g.v_min_pu - 1e-6).sum()) if vm.size else 0
    ll = line["loading_percent"].to_numpy()
    k["max_line_loading_percent"] = float(ll.max()) if ll.size else 0.0
    k["p95_line_loading_percent"] = float(np.percentile(ll, 95)) if ll.size else 0.0
    k["line_overload_minutes"] = float((ll > g.max_line_loading_percent + 1e-6).sum() * dt_min)
    tr = tables.get("trafo")
    if tr is not None and len(tr):
        tr = tr[conv[tr["step"].to_numpy(int)]]
    tl = tr["loading_percent"].to_numpy() if tr is not None else np.zeros(0)
    k["max_trafo_loading_percent"] = float(tl.max()) if tl.size else 0.0
    k["trafo_overload_minutes"] = float((tl > g.max_trafo_loading_percent + 1e-6).sum() * dt_min)
    k["max_substation_loading_percent"] = float(sc["substation_loading_percent"].max()) if len(sc) else 0.0
    k["td_pf_min"] = float(sc["td_pf"].min()) if len(sc) else 1.0
    k["td_pf_mean"] = float(sc["td_pf"].mean()) if len(sc) else 1.0
    k["nonconverged_steps"] = int((~s["converged"]).sum())
    k["curtailment_steps"] = int(s["curtailed"].sum())
    k["opf_failed_steps"] = int(s["dispatch_failed"].sum()) if "dispatch_failed" in s else 0
    k["ev_curtailed_kwh"] = float(evs["curtailed_kwh"].sum()) if len(evs) else 0.0


def _load_kpis(k: dict[str, Any], s: pd.DataFrame, dt_min: float) -> None:
    """Load-shape KPIs into ``k``: peak, load factor, EV energy, DR shift, prices."""
    dt_h = dt_min / 60.0
    total = s["total_load_kw"].to_numpy()
    price = s["price_usd_per_mwh"].to_numpy()
    k["peak_load_kw"] = float(total.max()) if total.size else 0.0
    k["peak_time_h"] = float(s["tod_h"].iloc[int(np.argmax(total))]) if total.size else float("nan")
    k["load_factor"] = float(total.mean() / total.max()) if total.size and total.max() > 0 else 0.0
    k["load_variance_kw2"] = float(total.var()) if total.size else 0.0
    k["ev_peak_kw"] = float(s["ev_load_kw"].max()) if len(s) else 0.0
    k["ev_energy_kwh"] = float(s["ev_load_kw"].sum() * dt_h)
    k["dr_shifted_kwh"] = float(np.clip(s["dr_shift_kw"], 0, None).sum() * dt_h)
    k["price_mean_usd_per_mwh"] = float(price.mean()) if price.size else float("nan")
    k["price_max_usd_per_mwh"] = float(price.max()) if price.size else float("nan")
    # Evening peak 17:00–21:00 (003's "at peak"): where peak-time attacks on the tariff show undiluted.
    peak_h = (s["tod_h"].to_numpy() >= 17.0) & (s["tod_h"].to_numpy() < 21.0) if len(s) else np.zeros(0, bool)
    k["price_peak_mean_usd_per_mwh"] = float(price[peak_h].mean()) if peak_h.any() else float("nan")


def _cost_kpis(k: dict[str, Any], s: pd.DataFrame, scenario: Scenario, conv: np.ndarray, dt_min: float) -> None:
    """Cost KPIs into ``k``: grid energy and reactive cost, DG cost, losses, renewables."""
    dt_h = dt_min / 60.0
    sc = s[conv]
    price = s["price_usd_per_mwh"].to_numpy()
    grid_e = sc["grid_p_kw"].to_numpy() * dt_h / 1000.0
    price_c = price[conv]
    k["grid_energy_cost_usd"] = float((grid_e * price_c).sum())
    k["grid_reactive_cost_usd"] = float(
        (np.abs(sc["grid_q_kvar"]) * dt_h / 1000.0).sum() * scenario.prices.q_price_usd_per_mvarh
    )
    k["dg_cost_usd"] = float(s["dg_cost_usd_per_h"].sum() * dt_h)
    k["total_cost_usd"] = k["grid_energy_cost_usd"] + k["grid_reactive_cost_usd"] + k["dg_cost_usd"]
    k["loss_cost_usd"] = float((sc["losses_kw"].to_numpy() * dt_h / 1000.0 * price_c).sum())
    k["renewable_energy_kwh"] = float((s["pv_kw"] + s["wind_kw"]).sum() * dt_h)
    used = ((s["pv_kw"] + s["wind_kw"]) * s["converged"]).sum() * dt_h
    k["renewable_utilisation"] = (
        float(used / k["renewable_energy_kwh"]) if k["renewable_energy_kwh"] > 0 else float("nan")
    )
    k["dg_energy_kwh"] = float(s["dg_kw"].sum() * dt_h)


def _user_kpis(k: dict[str, Any], tables: dict[str, pd.DataFrame], scenario: Scenario, dt_min: float) -> None:
    """User KPIs into ``k``: spend, affordability, waits, reneging, station use, energy fulfilment."""
    s, evs, st = tables["steps"], tables["evs"], tables["stations"]
    charged = evs[evs["grid_kwh"] > 1e-9] if len(evs) else evs
    k["user_cost_usd"] = float(evs["cost_usd"].sum()) if len(evs) else 0.0
    # undefined (NaN, never 0) when no EV drew energy from the grid
    k["user_price_usd_per_kwh"] = (
        float(charged["cost_usd"].sum() / charged["grid_kwh"].sum()) if len(charged) else float("nan")
    )
    k["gini_user_spend"] = gini(charged["cost_usd"].clip(lower=0).to_numpy()) if len(charged) else 0.0
    rho_kwh = scenario.prices.rho_usd_per_mwh / 1000.0
    k["price_affordability_index"] = (
        float(rho_kwh / k["user_price_usd_per_kwh"]) if k["user_price_usd_per_kwh"] > 0 else float("nan")
    )
    arrived = evs[evs["arrival_min"] < len(s) * dt_min] if len(evs) else evs
    w = arrived["wait_min"].dropna().to_numpy() if len(arrived) else np.zeros(0)
    k["mean_wait_min"] = float(w.mean()) if w.size else 0.0
    k["p95_wait_min"] = float(np.percentile(w, 95)) if w.size else 0.0
    k["max_wait_min"] = float(w.max()) if w.size else 0.0
    k["share_waited"] = float((w > 1e-9).mean()) if w.size else 0.0
    k["n_reneged"] = int((arrived["state"] == "reneged").sum()) if len(arrived) else 0
    k["station_utilisation_mean"] = float(st["utilisation"].mean()) if len(st) else 0.0
    k["station_utilisation_max"] = float(st["utilisation"].max()) if len(st) else 0.0
    done = evs[evs["departs_in_horizon"]] if len(evs) else evs
    k["n_evs_departed_in_horizon"] = int(len(done))
    k["energy_fulfilment"] = (
        float(done["e_delivered_kwh"].sum() / done["e_need_kwh"].sum())
        if len(done) and done["e_need_kwh"].sum() > 0
        else float("nan")  # no departing EV needed energy: undefined, not "all served"
    )
    k["ev_unserved_kwh"] = (
        float((done["e_need_kwh"] - done["e_delivered_kwh"]).clip(lower=0).sum()) if len(done) else 0.0
    )
    k["share_evs_at_target"] = (
        float((done["soc_end"] >= done["soc_target"] - 1e-6).mean()) if len(done) else float("nan")
    )
    k["soc_departure_mean"] = float(done["soc_end"].mean()) if len(done) else float("nan")


def _v2g_kpis(k: dict[str, Any], s: pd.DataFrame, evs: pd.DataFrame) -> None:
    """V2G KPIs into ``k`` (all 0 on a run without V2G): energy fed back, its revenue and wear, per-EV means, and
    the peak reduction attributed to it directly (see the module docstring)."""

    def col(df: pd.DataFrame, name: str) -> np.ndarray:  # tables of results written before V2G lack the columns
        return df[name].to_numpy(float) if name in df and len(df) else np.zeros(len(df))

    v2g = evs["v2g"].to_numpy(bool) if "v2g" in evs and len(evs) else np.zeros(len(evs), bool)
    plugged = np.isfinite(col(evs, "plugin_min")) if "plugin_min" in evs else np.zeros(len(evs), bool)
    revenue, wear = col(evs, "v2g_revenue_usd"), col(evs, "degradation_usd")
    n = int((v2g & plugged).sum())
    k["n_v2g_evs"] = n
    k["v2g_discharged_kwh"] = float(col(evs, "discharged_kwh").sum())
    k["v2g_revenue_usd"] = float(revenue.sum())
    k["v2g_degradation_usd"] = float(wear.sum())
    k["v2g_revenue_per_ev_usd"] = float(revenue[v2g & plugged].sum() / n) if n else 0.0
    k["v2g_degradation_per_ev_usd"] = float(wear[v2g & plugged].sum() / n) if n else 0.0
    total = col(s, "total_load_kw")
    k["v2g_peak_reduction_kw"] = float((total + col(s, "ev_discharge_kw")).max() - total.max()) if len(s) else 0.0
