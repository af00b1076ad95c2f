"""Recorder: per-step arrays filled by the step loop, turned into tidy tables and KPIs at the end.

A step whose power flow failed (``converged`` False, ``pf_method`` ``"failed"``: no physical solution even after
the engine's retries and fallback, see `grids.powerflow`) keeps its inputs (loads, EV power, prices) but every
quantity the power flow would have given — voltages, line and transformer loading, losses, grid import — is
recorded as NaN, so no table, KPI or plot can use a non-physical snapshot by accident.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from agents.fleet import PLUGGED, STATE_NAMES, WAITING, FleetState
from grids.dispatch import gen_output_kw

if TYPE_CHECKING:  # pragma: no cover
    from agents.dso import GridStep
    from sim.model import CoSimulation
    from sim.result import RunResult

#: Percentiles of the plugged EVs' SOC recorded every step (table ``soc_fleet``).
SOC_PERCENTILES = (5, 25, 50, 75, 95)
#: EVs whose SOC trajectory is recorded (table ``soc_evs``), and how many candidates are followed to find them.
SOC_TRAJECTORIES = 6
_SOC_CANDIDATES = 4 * SOC_TRAJECTORIES

STEP_COLUMNS = (
    "price_usd_per_mwh",
    "base_load_kw",
    "base_load_orig_kw",
    "dr_shift_kw",
    "ev_load_kw",
    "ev_requested_kw",
    "ev_curtailed_kw",
    "ev_discharge_kw",
    "ev_q_kvar",
    "pv_kw",
    "wind_kw",
    "other_gen_kw",
    "gen_kw",
    "dg_kw",
    "dg_kvar",
    "dg_cost_usd_per_h",
    "grid_p_kw",
    "grid_q_kvar",
    "losses_kw",
    "vmin_pu",
    "vmax_pu",
    "vmean_pu",
    "max_line_loading_percent",
    "max_trafo_loading_percent",
    "converged",
    "curtailed",
    "dispatch_failed",
    "n_pf",
    "n_plugged",
    "n_waiting",
)


def soc_candidates(fleet: FleetState, horizon_min: float) -> np.ndarray:
    """EVs whose SOC the recorder follows: of those arriving within the run, V2G-capable first, then by battery
    energy needed at arrival (largest first), then by number; the first `_SOC_CANDIDATES`. The trajectories table keeps
    the first `SOC_TRAJECTORIES` of them that plugged in (a few more are followed since some never get a port)."""
    rows = np.nonzero(fleet.arrival_min < horizon_min)[0]
    need = np.maximum(fleet.soc_target[rows] - fleet.soc_arrival[rows], 0.0) * fleet.battery_kwh[rows]
    order = np.lexsort((rows, -need, ~fleet.v2g[rows].astype(bool)))
    return rows[order[:_SOC_CANDIDATES]]


class Recorder:
    """Collects one row per step (and per step × bus/line/station) in preallocated arrays."""

    def __init__(self, model: CoSimulation) -> None:
        self.model = model
        n, nb, nl, ns = model.n_steps, model.network.n_bus, model.network.n_line, len(model.station_table)
        self._kinds = np.array([d.kind for d in model.network.renewables])  # per renewable unit, read every step
        self.cols = {c: np.zeros(n) for c in STEP_COLUMNS}
        self.vm = np.zeros((n, nb))
        self.p_ev_bus = np.zeros((n, nb))
        self.line_loading = np.zeros((n, nl))
        self.line_pl_kw = np.zeros((n, nl))
        self.trafo_loading = np.zeros((n, len(model.network.net.trafo)))
        self.pf_method = np.full(n, "", dtype=object)  # how each step's power flow was obtained (METHODS)
        self.st_p = np.zeros((n, ns))
        self.st_occ = np.zeros((n, ns))
        self.st_queue = np.zeros((n, ns))
        self.p_net_bus = np.zeros((n, nb))
        self.q_net_bus = np.zeros((n, nb))
        # SOC at the end of each step: percentiles over the plugged EVs, and a few EVs' trajectories (O(steps))
        self.soc_pct = np.full((n, len(SOC_PERCENTILES)), np.nan)
        self._soc_q = np.asarray(SOC_PERCENTILES, float) / 100.0
        self.soc_pool = soc_candidates(model.fleet, n * model.dt_min)
        self.soc_pool_traj = np.full((n, len(self.soc_pool)), np.nan)

    def record(
        self,
        k: int,
        grid: GridStep,
        p_base_kw: np.ndarray,
        *,
        p_ev_bus_final: np.ndarray,
        p_ev_requested_kw: float,
        p_ev_curtailed_kw: float,
        ev_idx: np.ndarray,
        p_ev: np.ndarray,
        price: float,
        shift_kw: float,
    ) -> None:
        m = self.model
        net = m.network
        pf = grid.pf
        c = self.cols
        ren = grid.renewable_kw
        kinds = self._kinds
        c["price_usd_per_mwh"][k] = price
        c["base_load_kw"][k] = p_base_kw.sum()
        c["base_load_orig_kw"][k] = m.base_p_kw[k].sum()
        c["dr_shift_kw"][k] = shift_kw
        c["ev_load_kw"][k] = p_ev_bus_final.sum()
        c["ev_requested_kw"][k] = p_ev_requested_kw
        c["ev_curtailed_kw"][k] = p_ev_curtailed_kw  # withheld by the DSO (station caps are not curtailment)
        c["ev_discharge_kw"][k] = np.maximum(-p_ev, 0.0).sum()  # V2G fed back, grid side (ev_load_kw is net of it)
        c["ev_q_kvar"][k] = 0.0 if grid.ev_q_kvar is None else grid.ev_q_kvar.sum()
        c["pv_kw"][k] = ren[kinds == "pv"].sum() if len(kinds) else 0.0
        c["wind_kw"][k] = ren[kinds == "wind"].sum() if len(kinds) else 0.0
        c["other_gen_kw"][k] = ren[kinds == "other"].sum() if len(kinds) else 0.0
        c["dg_kw"][k] = grid.dg_p_kw.sum()
        # the network's own generators (net.gen) follow the demand the power flow serves (grids.dispatch)
        demand_kw = p_base_kw.sum() + p_ev_bus_final.sum() - ren.sum() - grid.dg_p_kw.sum()
        c["gen_kw"][k] = gen_output_kw(m.dso.engine, net.net, demand_kw)
        c["dg_kvar"][k] = grid.dg_q_kvar.sum()
        c["dg_cost_usd_per_h"][k] = grid.dg_cost_usd_per_h
        ok = pf.converged
        nan = np.nan
        c["grid_p_kw"][k] = pf.ext_grid_p_mw * 1000.0 if ok else nan
        c["grid_q_kvar"][k] = pf.ext_grid_q_mvar * 1000.0 if ok else nan
        c["losses_kw"][k] = pf.losses_mw * 1000.0 if ok else nan
        c["vmin_pu"][k] = np.nanmin(pf.vm_pu) if ok else nan
        c["vmax_pu"][k] = np.nanmax(pf.vm_pu) if ok else nan
        c["vmean_pu"][k] = np.nanmean(pf.vm_pu) if ok else nan
        ll, tl = pf.line_loading_percent, pf.trafo_loading_percent
        c["max_line_loading_percent"][k] = (ll.max() if len(ll) else 0.0) if ok else nan
        c["max_trafo_loading_percent"][k] = (tl.max() if len(tl) else 0.0) if ok else nan
        c["converged"][k] = pf.converged
        self.pf_method[k] = getattr(pf, "method", "fast" if ok else "failed")
        c["curtailed"][k] = grid.curtailed
        c["dispatch_failed"][k] = grid.dispatch_failed
        c["n_pf"][k] = grid.n_pf
        f = m.fleet
        c["n_plugged"][k] = (f.state == PLUGGED).sum()
        c["n_waiting"][k] = (f.state == WAITING).sum()
        self.vm[k] = pf.vm_pu if ok else nan
        self.p_ev_bus[k] = p_ev_bus_final
        self.line_loading[k] = ll if ok else nan
        self.line_pl_kw[k] = pf.line_pl_mw * 1000.0 if ok else nan
        self.trafo_loading[k] = tl if ok else nan
        ns = len(m.station_table)
        self.st_p[k] = np.bincount(f.station[ev_idx], weights=p_ev, minlength=ns)
        self.st_occ[k] = np.bincount(f.station[ev_idx], minlength=ns)
        self.st_queue[k] = np.bincount(f.station[f.state == WAITING], minlength=ns)
        # net injections used by the power flow (for loss sensitivity and attacks on measurements)
        p_net = p_base_kw + p_ev_bus_final
        q_net = m.base_q_kvar[k].copy()
        if grid.ev_q_kvar is not None:
            q_net -= grid.ev_q_kvar
        np.add.at(p_net, np.array([d.bus for d in net.dgs], int), -grid.dg_p_kw)
        np.add.at(q_net, np.array([d.bus for d in net.dgs], int), -grid.dg_q_kvar)
        np.add.at(p_net, np.array([d.bus for d in net.renewables], int), -ren)
        self.p_net_bus[k] = p_net
        self.q_net_bus[k] = q_net
        self._record_soc(k, ev_idx)

    def _record_soc(self, k: int, ev_idx: np.ndarray) -> None:
        """SOC after step ``k`` of the EVs plugged in during it (``ev_idx``): percentiles, and the candidates'."""
        f = self.model.fleet
        if len(ev_idx):  # np.percentile's linear interpolation, without its overhead (every step of a year-long run)
            soc = np.sort(f.e_kwh[ev_idx] / f.battery_kwh[ev_idx])
            pos = self._soc_q * (len(soc) - 1)
            lo = pos.astype(np.int64)
            hi = np.minimum(lo + 1, len(soc) - 1)
            self.soc_pct[k] = soc[lo] + (soc[hi] - soc[lo]) * (pos - lo)
        pool = self.soc_pool
        if len(pool):
            self.soc_pool_traj[k] = np.where(f.state[pool] == PLUGGED, f.e_kwh[pool] / f.battery_kwh[pool], np.nan)

    # ------------------------------------------------------------------ tables
    def tables(self) -> dict[str, pd.DataFrame]:
        """The run's tables: steps, bus, line (and trafo), station_step, evs, stations, soc_fleet, soc_evs."""
        n, nb = self.vm.shape
        steps = self._steps_table(n)
        bus, line, trafo = self._grid_tables(n, nb)
        out = {
            "steps": steps,
            "bus": bus,
            "line": line,
            "station_step": self._station_step_table(n),
            "evs": self._evs_table(n),
            "stations": self._stations_table(n),
        }
        if trafo is not None:
            out["trafo"] = trafo
        out["soc_fleet"], out["soc_evs"] = self._soc_tables(n)
        return out

    def _soc_tables(self, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """SOC after each step: percentiles over the EVs plugged in during it (NaN when none was), one row per step;
        and the trajectories of up to `SOC_TRAJECTORIES` EVs (`soc_candidates` that plugged in; NaN while not
        plugged), step × EV, with their target and V2G floor."""
        f = self.model.fleet
        fleet = pd.DataFrame({"step": np.arange(n)})
        for j, q in enumerate(SOC_PERCENTILES):
            fleet[f"soc_p{q}"] = self.soc_pct[:n, j]
        keep = np.nonzero(np.isfinite(f.plugin_min[self.soc_pool]))[0][:SOC_TRAJECTORIES]
        ev = self.soc_pool[keep]
        ne = len(ev)
        evs = pd.DataFrame(
            {
                "step": np.repeat(np.arange(n), ne),
                "ev": np.tile(ev, n).astype(int),
                "soc": self.soc_pool_traj[:n, keep].ravel(),
                "soc_target": np.tile(f.soc_target[ev], n),
                "soc_floor": np.tile(f.soc_floor[ev], n),
                "v2g": np.tile(f.v2g[ev].astype(bool), n),
            }
        )
        return fleet, evs

    def _steps_table(self, n: int) -> pd.DataFrame:
        """One row per step: the recorded columns, derived load and power factor, estimation and attack labels."""
        m = self.model
        steps = pd.DataFrame({"step": np.arange(n), "t_min": m.t_min, "time_h": m.t_min / 60.0, "tod_h": m.tod_h})
        for c, v in self.cols.items():
            steps[c] = v.astype(bool) if c in ("converged", "curtailed", "dispatch_failed") else v
        steps["n_pf"] = steps["n_pf"].astype(int)
        steps["pf_method"] = self.pf_method.astype(str)
        steps["total_load_kw"] = steps["base_load_kw"] + steps["ev_load_kw"]
        s = np.hypot(steps["grid_p_kw"], steps["grid_q_kvar"])
        steps["td_pf"] = np.where(s > 0, np.abs(steps["grid_p_kw"]) / np.where(s > 0, s, 1.0), 1.0)
        steps["substation_loading_percent"] = s / (m.network.substation_mva * 10.0)
        if m.estimator is not None:
            attacked = np.zeros(n, bool)
            for kk, hit in m.taps.labels.get("dso_measurements", []):
                attacked[kk] |= hit
            steps["se_objective"] = m.se_objective
            steps["se_flagged"] = m.se_flag
            steps["se_converged"] = m.se_converged
            steps["measurements_attacked"] = attacked
        if m.attacker is not None:  # ground truth for detector scoring: any channel falsified in the step
            any_hit = np.zeros(n, bool)
            for labels in m.taps.labels.values():
                for kk, hit in labels:
                    any_hit[kk] |= hit
            steps["attacked"] = any_hit
        return steps

    def _grid_tables(self, n: int, nb: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
        """Per bus, per in-service line and per transformer (None without transformers) and step; DLMPs per bus."""
        m = self.model
        step_col = np.repeat(np.arange(n), nb)
        bus_ids = m.network.bus_ids  # tables speak pandapower bus indices; arrays here are by position
        bus = pd.DataFrame(
            {
                "step": step_col,
                "bus": np.tile(bus_ids, n),
                "vm_pu": self.vm.ravel(),
                "p_ev_kw": self.p_ev_bus.ravel(),
                "p_net_kw": self.p_net_bus.ravel(),
            }
        )
        # out-of-service lines (the 33-bus feeder's five open tie lines) carry nothing: leave them out
        live = np.nonzero(m.network.net.line["in_service"].to_numpy(bool))[0]
        nl = len(live)
        line = pd.DataFrame(
            {
                "step": np.repeat(np.arange(n), nl),
                "line": np.tile(m.network.net.line.index.to_numpy()[live], n),
                "loading_percent": self.line_loading[:, live].ravel(),
                "pl_kw": self.line_pl_kw[:, live].ravel(),
            }
        )
        trafo = None
        nt = self.trafo_loading.shape[1]
        if nt:  # per transformer and step (networks with transformers only)
            trafo = pd.DataFrame(
                {
                    "step": np.repeat(np.arange(n), nt),
                    "trafo": np.tile(m.network.net.trafo.index.to_numpy(), n),
                    "loading_percent": self.trafo_loading.ravel(),
                }
            )
        mo = m.market_operator
        if mo.dlmp_p is not None:
            assert mo.dlmp_q is not None, "the DSO prices P and Q together"
            bus["lam_p_usd_per_mwh"] = mo.dlmp_p.ravel()
            bus["lam_q_usd_per_mvarh"] = mo.dlmp_q.ravel()
        return bus, line, trafo

    def _station_step_table(self, n: int) -> pd.DataFrame:
        """Per station and step: power, occupied ports, queue."""
        m = self.model
        st = m.station_table
        ns = len(st)
        station_step = pd.DataFrame(
            {
                "step": np.repeat(np.arange(n), ns),
                "station": np.tile(np.arange(ns), n),
                "p_kw": self.st_p.ravel(),
                "occupied_ports": self.st_occ.ravel().astype(int),
                "queue": self.st_queue.ravel().astype(int),
            }
        )
        return station_step

    def _evs_table(self, n: int) -> pd.DataFrame:
        """One row per EV: session times, wait, state, energy, cost, fulfilment."""
        m = self.model
        bus_ids = m.network.bus_ids
        f = m.fleet
        horizon_min = n * m.dt_min
        wait = m.wait_min()
        need0 = np.maximum(f.soc_target - f.soc_arrival, 0.0) * f.battery_kwh
        delivered = f.e_kwh - f.soc_arrival * f.battery_kwh
        evs = pd.DataFrame(
            {
                "ev": np.arange(len(f)),
                "group": np.array([g.name for g in m.spec.fleet.groups])[f.group.astype(int)] if len(f) else [],
                "station": f.station.astype(int),
                "bus": bus_ids[f.bus.astype(int)] if len(f) else np.zeros(0, int),
                "arrival_min": f.arrival_min,
                "departure_min": f.departure_min,
                "plugin_min": f.plugin_min,
                "unplug_min": f.unplug_min,
                "wait_min": wait,
                "state": STATE_NAMES[f.state.astype(int)] if len(f) else [],
                "departs_in_horizon": f.departure_min <= horizon_min,
                "battery_kwh": f.battery_kwh,
                "soc_arrival": f.soc_arrival,
                "soc_target": f.soc_target,
                "soc_end": f.e_kwh / f.battery_kwh if len(f) else [],
                "e_need_kwh": need0,
                "e_delivered_kwh": delivered,
                "grid_kwh": f.grid_kwh,
                "cost_usd": f.cost_usd,
                "curtailed_kwh": f.curtailed_kwh,
                "p_max_kw": f.p_max_kw,
                "eta_ch": f.eta_ch,
                "v2g": f.v2g,
                "soc_floor": f.soc_floor,
                "discharged_kwh": f.discharged_kwh,
                "v2g_revenue_usd": f.v2g_revenue_usd,
                "degradation_usd": f.degradation_usd,
                "participates": f.participates,
                "elasticity": f.elasticity,
                "income_group": f.income_group,
            }
        )
        evs["fulfilment"] = np.where(need0 > 0, np.clip(delivered / np.where(need0 > 0, need0, 1), 0, None), 1.0)
        return evs

    def _stations_table(self, n: int) -> pd.DataFrame:
        """One row per station: ports, cap, utilisation, energy, arrivals, reneging, waits, longest queue."""
        m = self.model
        bus_ids = m.network.bus_ids
        st = m.station_table
        ns = len(st)
        f = m.fleet
        horizon_min = n * m.dt_min
        end = np.where(np.isnan(f.unplug_min), horizon_min, np.minimum(f.unplug_min, horizon_min))
        wait = m.wait_min()
        plugged_min = np.where(np.isnan(f.plugin_min), 0.0, end - np.nan_to_num(f.plugin_min, nan=0.0))
        busy = np.bincount(f.station.astype(int), weights=np.maximum(plugged_min, 0), minlength=ns)
        wait_sum = np.bincount(f.station.astype(int), weights=np.nan_to_num(wait, nan=0.0), minlength=ns)
        arrived = np.bincount(f.station.astype(int), weights=(f.arrival_min < horizon_min).astype(float), minlength=ns)
        stations = pd.DataFrame(
            {
                "station": np.arange(ns),
                "name": st.name,
                "group": np.array([g.name for g in m.spec.stations])[st.group],
                "bus": bus_ids[st.bus],
                "ports": st.ports,
                "cap_kw": st.cap_kw,
                "utilisation": busy / (st.ports * horizon_min),
                "energy_kwh": self.st_p.sum(axis=0) * m.dt_min / 60.0,
                "n_arrived": arrived.astype(int),
                "n_reneged": np.bincount(f.station[f.state == 4].astype(int), minlength=ns),
                "mean_wait_min": np.where(arrived > 0, wait_sum / np.maximum(arrived, 1), 0.0),
                "max_queue": self.st_queue.max(axis=0).astype(int) if n else np.zeros(ns, int),
            }
        )
        return stations

    def loss_sensitivity(self, steps: pd.DataFrame, delta_kw: float = 10.0) -> pd.DataFrame:
        """Loss sensitivity factor per bus at the peak-loss step (`002_…` eq. 21): ΔP_loss/ΔP_i [kW/kW]."""
        m = self.model
        if not len(steps) or not steps["converged"].any():  # failed steps have no losses to start from
            return pd.DataFrame(columns=["bus", "lsf"])
        k = int(steps["losses_kw"].idxmax())
        p, q = self.p_net_bus[k] / 1000.0, self.q_net_bus[k] / 1000.0
        ids = m.network.bus_ids
        slack = np.isin(ids, np.atleast_1d(m.network.net.ext_grid.bus.values))
        bus = np.flatnonzero(~slack)
        # the base snapshot and one with delta_kw more at each non-slack bus, solved as one batch
        P = np.repeat(p[None, :], len(bus) + 1, axis=0)
        P[np.arange(1, len(bus) + 1), bus] += delta_kw / 1000.0
        base, *moved = m.dso.engine.solve_batch(P, np.repeat(q[None, :], len(P), axis=0))
        lsf = np.where(slack, 0.0, np.nan)
        if base.converged:
            for i, r in zip(bus, moved, strict=True):
                if r.converged:
                    lsf[i] = (r.losses_mw - base.losses_mw) * 1000.0 / delta_kw
        return pd.DataFrame({"bus": ids, "lsf": lsf, "step": k})

    def _attack_kpis(self) -> dict[str, Any]:
        """Attack and detection KPIs: attacked steps, targets detected, false alarms, time to detect."""
        m = self.model
        out: dict[str, Any] = {}
        if m.attacker is None and m.monitor is None and m.estimator is None:
            return out
        labels = [lab for ch in m.taps.labels.values() for lab in ch]
        attacked_steps = sorted({k for k, hit in labels if hit})
        out["attack_steps"] = len(attacked_steps)
        if m.estimator is not None:
            flags = m.se_flag
            meas_attacked = np.zeros(len(flags), bool)
            for k, hit in m.taps.labels.get("dso_measurements", []):
                meas_attacked[k] |= hit
            out["se_alarm_steps"] = int(flags.sum())
            # steps whose estimate did not converge (power flow converged) are counted apart, not in the rates
            est = m.se_converged
            out["se_nonconverged_steps"] = int((~est & self.cols["converged"].astype(bool)).sum())
            att, clean = meas_attacked & est, ~meas_attacked & est
            out["se_detection_rate"] = float(flags[att].mean()) if att.any() else float("nan")
            out["se_false_alarm_rate"] = float(flags[clean].mean()) if clean.any() else float("nan")
            first = np.nonzero(meas_attacked)[0]
            hits = np.nonzero(flags & (np.arange(len(flags)) >= (first[0] if len(first) else 0)))[0]
            out["se_time_to_detect_min"] = (
                float((hits[0] - first[0]) * m.dt_min) if len(first) and len(hits) else float("nan")
            )
            out["se_vm_error_max_pu"] = (
                float(np.nanmax(m.se_vm_error)) if np.isfinite(m.se_vm_error).any() else float("nan")
            )
            out["se_vm_rmse_pu"] = (
                float(np.sqrt(np.nanmean(m.se_vm_sq))) if np.isfinite(m.se_vm_sq).any() else float("nan")
            )
        if m.monitor is None:
            return out
        targets = np.zeros(len(m.station_table), bool)
        if m.attacker is not None:
            for spec, tg in zip(m.attacker.specs, m.attacker.targets):
                if spec.kind == "station-inflation" and attacked_steps:
                    targets[tg] = True
        mon = m.monitor
        out["detected_targets"] = int((mon.flagged & targets).sum())
        out["detection_rate"] = float((mon.flagged & targets).sum() / targets.sum()) if targets.any() else float("nan")
        clean = ~targets
        out["false_alarm_rate"] = float((mon.flagged & clean).sum() / clean.sum()) if clean.any() else float("nan")
        caught = mon.flagged & targets
        if caught.any() and attacked_steps:
            out["time_to_detect_min"] = float((mon.flag_step[caught] - attacked_steps[0]).mean() * m.dt_min)
        else:
            out["time_to_detect_min"] = float("nan")
        return out

    def result(self, *, wall_s: float, cpu_s: float) -> RunResult:
        from sim.kpis import compute_kpis
        from sim.result import RunResult, provenance

        m = self.model
        tables = self.tables()
        tables["lsf"] = self.loss_sensitivity(tables["steps"])
        timing = {
            "wall_s": wall_s,
            "cpu_s": cpu_s,
            "build_s": m.t_build,
            "powerflow_s": m.dso.pf_time_s,
            "n_powerflows": m.dso.n_pf,
            "market_s": m.market_operator.wall_time_s,
            "n_clearings": m.market_operator.n_clearings,
        }
        mo = m.market_operator
        if mo.reference is not None:
            timing["reference_s"] = mo.reference_time_s
        market: dict[str, Any] = self._attack_kpis()
        if mo.dlmp_p is not None:
            assert mo.dlmp_q is not None, "the DSO prices P and Q together"
            market.update(
                dlmp_p_mean_usd_per_mwh=float(mo.dlmp_p.mean()),
                dlmp_p_max_usd_per_mwh=float(mo.dlmp_p.max()),
                dlmp_q_mean_usd_per_mvarh=float(mo.dlmp_q.mean()),
                dlmp_failed_slots=mo.dlmp_failed_slots,
            )
        if mo.reference is not None:
            market |= {
                "market_objective_usd": mo.objective_usd,
                "market_reference_usd": mo.reference_usd,
                "market_gap": (mo.objective_usd - mo.reference_usd) / max(abs(mo.reference_usd), 1e-9),
                "market_gap_max": max(mo.gaps) if mo.gaps else 0.0,
                "n_scored_clearings": len(mo.gaps),
            }
        kpis = {**compute_kpis(tables, m.spec, dt_min=m.dt_min, timing=timing), **market}
        return RunResult(
            scenario=m.spec,
            seed=m.seed if isinstance(m.seed, int) else str(m.seed),
            tables=tables,
            kpis=kpis,
            provenance=provenance(m.spec),
            warnings=list(getattr(m, "warnings", [])),
        )
