"""The EVA and DSO levels of `qubo-dlmp` (`000_…`): the EV aggregators' QUBO schedules against DLMPs and the
DSO's dispatch and AC check, as methods of :class:`markets.qubo_dlmp.QuboDLMP`."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from markets.base import MarketRequest, MarketResult
from markets.qubo import allocation, clustering, dso, eva

PAPER_LAM_P = (40.0, 50.0, 60.0, 70.0, 100.0, 60.0)  # $/MWh, Table 1


PAPER_LAM_Q = (4.0, 5.0, 6.0, 7.0, 10.0, 6.0)  # $/MVArh: Table 1 gives the range 4–10 only; shaped like λP


def _slot_mean(profile24: np.ndarray, tod_h: np.ndarray, dt_h: float) -> np.ndarray:
    """Mean of an hourly profile over each slot ``[tod, tod + dt)`` (hour ``h`` holds over ``[h, h+1)``)."""
    fine = np.arange(0.0, dt_h, 0.25)[None, :] + np.asarray(tod_h, float)[:, None]
    return np.asarray(profile24)[(np.floor(fine) % 24).astype(int)].mean(axis=-1)


def _table(values: Any, n: int) -> np.ndarray:
    """A per-slot table from a list: used as is if its length is ``n``, else stretched (nearest) onto ``n`` slots."""
    v = np.asarray(values, float).ravel()
    if v.size == n:
        return v
    return v[np.minimum((np.arange(n) * v.size) // n, v.size - 1)]


class _Levels:
    """The two lower levels of the tri-level model and the result they assemble (mixed into `QuboDLMP`)."""

    name: ClassVar[str]
    params: dict[str, Any]
    _compiled: tuple[Any, Any, np.ndarray] | None
    _timing: dict[str, float]
    _reads: int
    _sweeps: int
    _passes: int
    _shrink: int

    def _q_feedback(
        self, q_on: np.ndarray, q_mvar: np.ndarray, p_td_mw: np.ndarray, q_td_mvar: np.ndarray, r_c: np.ndarray
    ) -> bool:
        """Withdraw or restore λQ per cluster and slot so the T–D interface neither exports reactive power nor
        imports more than ``tan(acos pf_min)·P_TD``; edits ``q_on`` (C, T) in place, returns whether it changed.

        A slot exporting ``X`` MVAr needs ``X + margin`` [MVAr] less EV injection (``margin`` =
        ``q_margin`` × |P_TD|): the injecting clusters nearest the substation (smallest driving-point resistance
        — their Q supports the voltage least) lose their λQ first, until the injection removed covers it. A slot
        importing beyond the power-factor limit gets λQ back, one cluster per round, farthest first. The EVA's Q is
        bang-bang in λQ (linear cost), so this is the graded control the EVA level can act on.
        """
        prm = self.params
        tanphi = float(np.tan(np.arccos(prm["pf_min"])))
        changed = False
        near_first = np.argsort(r_c, kind="stable")
        for k in range(q_on.shape[1]):
            need = -q_td_mvar[k] + prm["q_margin"] * abs(p_td_mw[k])  # MVAr of injection to remove (> 0)
            if need > 1e-3:
                for c_ in near_first:
                    if need <= 0:
                        break
                    if q_on[c_, k] > 0 and q_mvar[c_, k] < -1e-9:
                        q_on[c_, k] = 0.0
                        need += q_mvar[c_, k]
                        changed = True
            elif q_td_mvar[k] > tanphi * abs(p_td_mw[k]) + 1e-3:
                off = [c_ for c_ in near_first[::-1] if q_on[c_, k] == 0]
                if off:  # one cluster per round: its injection is only known once the EVA re-solves
                    q_on[off[0], k] = 1.0
                    changed = True
        return changed

    # ------------------------------------------------------------------------------------------------ levels
    def _eva(
        self,
        lam_p: np.ndarray,
        lam_q: np.ndarray,
        p_max: np.ndarray,
        s_max: np.ndarray,
        e_c: np.ndarray,
        cap_c: np.ndarray,
        dt: float,
        seed: int,
        switch_usd: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Cluster schedules [MW, MVAr] (C, T): flat without demand response, else the EVA QUBO against the prices
        ``lam_p``, ``lam_q``; ``switch_usd`` (C,) [$ per interruption] is its switching penalty (None or 0: none)."""
        prm = self.params
        c, t = lam_p.shape
        p = np.zeros((c, t))
        q = np.zeros((c, t))
        info: dict[str, Any] = {"annealer_violations": 0, "n_vars": 0, "n_interactions": 0, "sample_s": 0.0}
        active = (e_c > 1e-12) & (p_max > 0)
        if not prm["demand_response"]:
            tot = cap_c.sum(axis=1)
            p = np.divide(e_c[:, None] * cap_c, tot[:, None] * dt, out=np.zeros_like(cap_c), where=tot[:, None] > 0)
        elif active.any():
            idx = np.flatnonzero(active)
            unit = p_max[idx] / ((1 << prm["bits"]) - 1) * dt
            inst = eva.EVAInstance(
                lam_p_usd_per_mwh=lam_p[idx],
                lam_q_usd_per_mvarh=lam_q[idx],
                p_max_mw=p_max[idx],
                s_max_mva=s_max[idx],
                q_max_mvar=s_max[idx],
                e_min_mwh=np.maximum(e_c[idx] - unit, 0.0),
                e_max_mwh=e_c[idx],
                dt_h=dt,
                bits=prm["bits"],
                reactive=bool(prm["reactive"]),
                switch_usd=None if switch_usd is None or not np.any(switch_usd > 0) else switch_usd[idx],
                on_share=float(prm["min_on_share"]),
            )
            sol = eva.solve(
                inst,
                sampler=prm["sampler"],
                num_reads=self._reads,
                num_sweeps=self._sweeps,
                passes=self._passes,
                seed=seed,
            )
            if hasattr(self, "_timing"):
                self._timing["eva_sample_s"] += float(sol.sample_s)
            ev = eva.evaluate(inst, sol.repaired_n)
            p[idx], q[idx] = ev["p_mw"], ev["q_mvar"]
            info = {
                "annealer_violations": int(sol.violations),
                "annealer_cost_usd": float(sol.cost_usd),
                "n_vars": int(sol.n_vars),
                "n_interactions": int(sol.n_interactions),
                "sample_s": sol.sample_s,
                "wall_s": sol.wall_s,
                "repaired": bool(sol.violations),
                "cluster_interruptions": int(ev["interruptions"]),
                "instance": inst,  # the EVA problem of this round (its prices include the feedback's adders)
                "n": sol.repaired_n,
            }
        cost = float(np.sum(dt * (lam_p * p + lam_q * q)))
        return {"p_mw": p, "q_mvar": q, "cost_usd": cost, "violations": 0, "info": info}

    def _units(self, net: Any, tod: np.ndarray, dt: float, renewable_kw: np.ndarray | None) -> dict[str, Any]:
        """DGs (params) then renewables (the network's; availability ``renewable_kw`` [kW] (T, n_renewables) when
        given, else their profiles averaged over each slot): buses [positions], availability (T, U), costs."""
        buses, pmax, cost = [], [], []
        qmax, qcost = [], []
        for d in self.params["dgs"]:
            buses.append(net.position(int(d["bus"]) - 1))
            pmax.append(np.full(len(tod), d["p_max_kw"] / 1000.0))
            cost.append(float(d["cost_usd_per_mwh"]))
            qmax.append(d["q_max_kvar"] / 1000.0)
            qcost.append(float(d["q_cost_usd_per_mvarh"]))
        by_bus: dict[tuple[str, int], np.ndarray] = {}
        for j, d in enumerate(net.renewables):  # units of one kind at one bus are dispatched together
            key = (d.kind, d.bus)
            avail = renewable_kw[:, j] if renewable_kw is not None else _slot_mean(d.profile, tod, dt) * d.p_max_kw
            by_bus[key] = by_bus.get(key, 0.0) + avail / 1000.0
        for (_kind, bus), avail in by_bus.items():
            buses.append(bus)
            pmax.append(avail)
            cost.append(0.0)
        return {
            "bus": np.asarray(buses, np.int64),
            "p_max": np.column_stack(pmax) if pmax else np.zeros((len(tod), 0)),
            "cost": np.asarray(cost, float),
            "q_max": np.asarray(qmax, float),
            "q_cost": np.asarray(qcost, float),
        }

    def _pf(self, load_p: np.ndarray, load_q: np.ndarray) -> list[Any]:
        assert self._compiled is not None  # `_plan` compiled the request's network
        pf = self._compiled[1]
        return [pf.solve(load_p[k], load_q[k]) for k in range(load_p.shape[0])]

    def _dso(
        self,
        units: dict[str, Any],
        load_p: np.ndarray,
        load_q: np.ndarray,
        lam_p: np.ndarray,
        lam_q: np.ndarray,
        dt: float,
        losses: np.ndarray,
        lossq: np.ndarray,
        seed: int,
    ) -> dict[str, Any]:
        prm = self.params
        assert self._compiled is not None  # `_plan` compiled the request's network
        net = self._compiled[0]
        t, n_bus = load_p.shape
        u, g = len(units["bus"]), len(units["q_max"])
        ub = units["bus"]

        def net_load(pu: np.ndarray, qg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return _net_load(load_p, load_q, ub, g, pu, qg)

        # linearisation point: renewables at their forecast, DGs off
        p0 = units["p_max"].copy()
        p0[:, :g] = 0.0
        q0 = np.zeros((t, g))
        res0 = self._pf(*net_load(p0, q0))
        v0, sp_, sq_, active = self._voltage_sensitivities(load_p, load_q, ub, g, p0, res0)
        if not np.any(losses):
            losses = np.array([r.losses_mw for r in res0])
            lossq = np.array([r.ext_grid_q_mvar for r in res0]) - (load_q.sum(axis=1) - 0.0)
        inst = dso.DSOInstance(
            demand_mw=load_p.sum(axis=1) + losses,
            demand_q_mvar=load_q.sum(axis=1) + lossq,
            p_max_mw=units["p_max"],
            cost_usd_per_mwh=units["cost"],
            q_max_mvar=units["q_max"],
            q_cost_usd_per_mvarh=units["q_cost"],
            td_price_usd_per_mwh=lam_p,
            td_q_price_usd_per_mvarh=lam_q,
            s_td_max_mva=net.substation_mva,
            dt_h=dt,
            bits=prm["bits"],
            pf_min=prm["pf_min"],
            v_min_pu=prm["v_min_pu"],
            v0_pu=v0,
            v_sens_p=sp_,
            v_sens_q=sq_,
            p0_mw=p0,
            q0_mvar=q0,
            v_active=active,
        )
        disp = self._dispatch(inst, u, seed)
        out: dict[str, Any] = {"dso": disp, "dso_cost_usd": disp.cost_usd, "dso_inst": inst}
        self._timing["dso_sample_s"] += float(disp.info.get("sample_s", 0.0))
        if prm["reference"]:
            t_ref = time.perf_counter()
            ref = dso.reference(inst) if u else disp
            self._timing["reference_s"] += time.perf_counter() - t_ref
            out["dso_ref"] = ref
            out["dso_gap"] = (disp.cost_usd - ref.cost_usd) / max(abs(ref.cost_usd), 1e-9)
        out.update(self._grid_check(disp, net_load(disp.p_mw, disp.q_mvar), net.substation_mva))
        return out

    def _voltage_sensitivities(
        self, load_p: np.ndarray, load_q: np.ndarray, ub: np.ndarray, g: int, p0: np.ndarray, res0: list[Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Weakest-bus voltage at the linearisation point ``p0`` [MW] (DGs off) and its finite-difference
        sensitivity [pu/MW, pu/MVAr] to each unit's P and each DG's Q, probed only in slots near the voltage floor.

        Returns:
            ``v0`` [pu] (T,), ``sp_`` (T, U), ``sq_`` (T, G), and the probed slots (T,) bool.
        """
        prm = self.params
        assert self._compiled is not None  # `_plan` compiled the request's network
        engine = self._compiled[1]
        t = load_p.shape[0]
        u = len(ub)
        v0 = np.array([r.vm_pu.min() for r in res0])
        weak = np.array([int(np.nanargmin(r.vm_pu)) for r in res0])
        sp_, sq_ = np.zeros((t, u)), np.zeros((t, g))
        h = 0.05  # MW / MVAr probe
        active = v0 < prm["v_min_pu"] + 0.01
        for k in np.flatnonzero(active):
            for j in range(u):
                lp, lq = load_p[k].copy(), load_q[k].copy()
                np.add.at(lp, ub, -p0[k])
                lp[ub[j]] -= h
                r = engine.solve(lp, lq)
                sp_[k, j] = (r.vm_pu[weak[k]] - v0[k]) / h
            for j in range(g):
                lp, lq = load_p[k].copy(), load_q[k].copy()
                np.add.at(lp, ub, -p0[k])
                lq[ub[j]] -= h
                r = engine.solve(lp, lq)
                sq_[k, j] = (r.vm_pu[weak[k]] - v0[k]) / h
        return v0, sp_, sq_, active

    def _dispatch(self, inst: dso.DSOInstance, u: int, seed: int) -> dso.DSODispatch:
        """The DSO's unit dispatch for ``inst``: sampled, or exact (all from the interface) when there is no unit."""
        prm = self.params
        t = inst.n_slots
        if u == 0:  # a network without PV/wind and no DGs: nothing to dispatch, the interface supplies all (exact)
            disp = dso.evaluate(inst, np.zeros((t, 0), np.int64))
            disp.info.update({"sample_s": 0.0, "nothing_to_dispatch": True})
        else:
            disp = dso.solve(
                inst,
                sampler=prm["sampler"],
                num_reads=self._reads,
                num_sweeps=self._sweeps,
                passes=self._passes,
                shrink=self._shrink,
                polish_radius=0 if self._passes == 1 else 2,
                seed=seed,
            )
        return disp

    def _grid_check(
        self, disp: dso.DSODispatch, loads: tuple[np.ndarray, np.ndarray], substation_mva: float
    ) -> dict[str, Any]:
        """Power flow of the net bus loads ``loads`` [MW, MVAr] left by dispatch ``disp``: voltages [pu], interface
        flows [MW, MVAr], losses, line loading [%] and the grid violations counted per slot."""
        prm = self.params
        t = loads[0].shape[0]
        res = self._pf(*loads)
        vm = np.array([r.vm_pu for r in res])
        p_td = np.array([r.ext_grid_p_mw for r in res])
        q_td = np.array([r.ext_grid_q_mvar for r in res])
        s_td = np.hypot(p_td, q_td)
        pf_td = np.divide(np.abs(p_td), s_td, out=np.ones(t), where=s_td > 0)
        conv = np.array([r.converged for r in res])
        lq_fin = loads[1]
        viol = {
            "voltage_slots": int(np.sum(vm.min(axis=1) < prm["v_min_pu"] - 1e-4)),
            "td_power_factor_slots": int(np.sum(pf_td < prm["pf_min"] - 1e-4)),
            "substation_slots": int(np.sum(s_td > substation_mva + 1e-6)),
            "nonconverged_slots": int(np.sum(~conv)),
            "dso_qubo_rows": int(disp.n_violations),
        }
        return {
            "vm": vm,
            "p_td_mw": p_td,
            "q_td_mvar": q_td,
            "pf_td": pf_td,
            "losses_mw": np.array([r.losses_mw for r in res]),
            "lossq_mvar": q_td - lq_fin.sum(axis=1),
            "line_loading": np.array([r.line_loading_percent for r in res]),
            "grid_viol": viol,
            "grid_violations": sum(v for k, v in viol.items() if k != "dso_qubo_rows"),
        }

    # ------------------------------------------------------------------------------------------------ result
    def _result(
        self,
        request: MarketRequest,
        rec: dict[str, Any],
        cl: clustering.Clustering,
        history: list,
        lam_p_c: np.ndarray,
        lam_q_c: np.ndarray,
        evs: Any,
        dt: float,
        wall: float,
    ) -> MarketResult:
        al, out = rec["alloc"], rec["eva"]
        p_kw = al.p_mw * 1000.0
        q_kvar = rec["q_ev"] * 1000.0
        objective = {
            "eva_cost_usd": out["cost_usd"],
            "eva_reactive_usd": float(np.sum(dt * lam_q_c * out["q_mvar"])),
            "dso_cost_usd": float(rec.get("dso_cost_usd", 0.0)),
        }
        objective["total_cost_usd"] = objective["eva_cost_usd"] + objective["dso_cost_usd"]
        violations: dict[str, float] = {
            "eva_annealer_rows": float(out["info"]["annealer_violations"]),
            "allocation_shortfall_mwh": al.shortfall_mwh,
        }
        info: dict[str, Any] = {
            "silhouette": cl.silhouette,
            "n_clusters": cl.n_clusters,
            "clustering": cl.method,
            "rounds": len(history),
            "history": history,
            "round_kept": rec["round"],
            "eva": out["info"],
            "tracking_error_mwh": al.tracking_error_mwh,
            "interruptions": al.interruptions,
            "interruptions_at_min_share": _paused_below(al.p_mw, evs.p_max_kw, self.params["min_on_share"]),
            "min_on_share_reached": _min_share(al.p_mw, evs.p_max_kw),
            "interruptions_lp_stage": al.lp_interruptions,
            "cluster_p_mw": out["p_mw"],
            "cluster_q_mvar": out["q_mvar"],
            "cluster_labels": cl.labels,
            "reactive_energy_mvarh": float(np.abs(out["q_mvar"]).sum() * dt),
            "plan_s": wall,
            # wall time split: HiGHS reference MILPs (only for the reported gap), annealing (EVA + DSO samplers)
            **dict(getattr(self, "_timing", {})),
            "bits": self.params["bits"],
            "mode": self.params["mode"],
        }
        price: np.ndarray = np.asarray(request.price_usd_per_mwh, float)
        if not np.all(np.isfinite(price)):
            price = _table(PAPER_LAM_P, request.n_slots)
        if "dso" in rec:
            violations.update({k: float(v) for k, v in rec["grid_viol"].items()})
            info.update(_dso_info(rec, dt))
        if request.dlmp_p_usd_per_mwh is not None:
            price = np.asarray(request.dlmp_p_usd_per_mwh, float)
        gap = rec.get("dso_gap")
        ref = rec["dso_ref"].cost_usd if "dso_ref" in rec else None
        return MarketResult(
            self.name,
            price,
            p_kw,
            q_kvar,
            objective=objective,
            violations=violations,
            info=info,
            reference_objective=ref,
            gap=gap,
        )


def _paused_below(p_mw: np.ndarray, p_max_kw: np.ndarray, share: float) -> int:
    """Interruptions of the EV schedules ``p_mw`` (N, T) counting a slot below ``share`` of the EV's rating
    ``p_max_kw`` as paused (any power above 1 mW with ``share`` 0, as ``interruptions``)."""
    if share <= 0:
        return allocation.count_interruptions(p_mw)
    ratio = np.divide(p_mw * 1000.0, p_max_kw[:, None], out=np.zeros_like(p_mw), where=p_max_kw[:, None] > 0)
    return allocation.count_interruptions(ratio, tol=share - 1e-9)


def _min_share(p_mw: np.ndarray, p_max_kw: np.ndarray) -> float:
    """The smallest power an EV draws in a slot it charges in (above 1 mW), as a share of its rating (nan: none)."""
    ratio = np.divide(p_mw * 1000.0, p_max_kw[:, None], out=np.zeros_like(p_mw), where=p_max_kw[:, None] > 0)
    on = p_mw > 1e-9
    return float(ratio[on].min()) if on.any() else float("nan")


def _net_load(
    load_p: np.ndarray, load_q: np.ndarray, ub: np.ndarray, g: int, pu: np.ndarray, qg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bus loads [MW, MVAr] (T, B) net of unit powers ``pu`` (T, U) at buses ``ub`` and the reactive power
    ``qg`` (T, G) of the first ``g`` units (the DGs)."""
    lp, lq = load_p.copy(), load_q.copy()
    np.add.at(lp.T, ub, -pu.T)
    np.add.at(lq.T, ub[:g], -qg.T)
    return lp, lq


def _dso_info(rec: dict[str, Any], dt: float) -> dict[str, Any]:
    """What the DSO level adds to the result's info: its dispatch and instance, reference and gap, losses,
    voltages, the T–D interface's P, Q and power factor, the largest line loading."""
    disp = rec["dso"]
    vm = rec["vm"]
    return {
        "dso": {**disp.info, "p_mw": disp.p_mw, "q_mvar": disp.q_mvar},
        "dso_instance": rec["dso_inst"],
        "dso_gap": rec.get("dso_gap"),
        "dso_reference_cost_usd": rec["dso_ref"].cost_usd if "dso_ref" in rec else None,
        "dso_reference_s": rec["dso_ref"].info["milp_s"] if "dso_ref" in rec else None,
        "losses_mwh": float(rec["losses_mw"].sum() * dt),
        "vmin_pu": float(vm.min()),
        "vavg_pu": float(vm.mean()),
        "vstd_pu": float(vm.std()),
        "pf_td_min": float(rec["pf_td"].min()),
        "pf_td_mean": float(
            np.sum(np.abs(rec["p_td_mw"])) / max(np.hypot(rec["p_td_mw"], rec["q_td_mvar"]).sum(), 1e-12)
        ),
        "p_td_mw": rec["p_td_mw"],
        "q_td_mvar": rec["q_td_mvar"],
        "vm_pu": vm,
        "max_line_loading_percent": float(np.nanmax(rec["line_loading"])),
    }
