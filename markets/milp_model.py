"""The HiGHS model of `milp`: the request's data as (EV × slot) matrices, the LP/MILP built from them, and its
solution (status, objective, timing)."""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np

from markets.base import (
    MarketRequest,
    RequestError,
)
from markets.battery import slope_kw_per_kwh

_NEED_EPS_KWH = 1e-9  # needs below this are treated as met (below HiGHS's feasibility tolerance anyway)


_STATUS = {
    "kOptimal": "optimal",
    "kTimeLimit": "time_limit",
    "kInfeasible": "infeasible",
    "kUnbounded": "unbounded",
    "kUnboundedOrInfeasible": "unbounded_or_infeasible",
    "kIterationLimit": "iteration_limit",
    "kSolutionLimit": "solution_limit",
    "kInterrupt": "interrupted",
    "kMemoryLimit": "memory_limit",
    "kObjectiveBound": "objective_bound",
    "kObjectiveTarget": "objective_target",
    "kModelEmpty": "optimal",
    "kModelError": "model_error",
}


# --------------------------------------------------------------------------------------------- request data
def _price_matrix(request: MarketRequest, rho_usd_per_mwh: float) -> np.ndarray:
    """Active-energy price seen by each EV in each slot [$/MWh], shape (n_evs, n_slots)."""
    evs, n = request.evs, request.n_slots
    if request.dlmp_p_usd_per_mwh is not None:
        d = _bus_matrix(request.dlmp_p_usd_per_mwh, request, "dlmp_p_usd_per_mwh")
        return d[:, evs.bus].T.copy()
    price = np.asarray(request.price_usd_per_mwh, float)
    price = np.where(np.isnan(price), float(rho_usd_per_mwh), price)
    return np.broadcast_to(price, (len(evs), n)).copy()


def _q_price_matrix(request: MarketRequest) -> np.ndarray:
    """Reactive price per EV and slot [$/MVArh] (zeros without a reactive DLMP), shape (n_evs, n_slots)."""
    if request.dlmp_q_usd_per_mvarh is None:
        return np.zeros((len(request.evs), request.n_slots))
    d = _bus_matrix(request.dlmp_q_usd_per_mvarh, request, "dlmp_q_usd_per_mvarh")
    return d[:, request.evs.bus].T.copy()


def _bus_matrix(x: Any, request: MarketRequest, name: str) -> np.ndarray:
    a = np.asarray(x, float)
    if a.ndim != 2 or a.shape[0] != request.n_slots:
        raise RequestError(f"{name}: expected shape (n_slots={request.n_slots}, n_bus), got {a.shape}")
    if len(request.evs) and request.evs.bus.max() >= a.shape[1]:
        raise RequestError(f"{name}: has {a.shape[1]} buses but an EV is at bus {request.evs.bus.max()}")
    if not np.all(np.isfinite(a)):
        raise RequestError(f"{name}: contains NaN or inf")
    return a


def _voltage_data(request: MarketRequest) -> dict[str, np.ndarray] | None:
    """The request's voltage forecast as arrays by name (validated by `VoltageForecast`), or None."""
    v = request.voltage
    if v is None:
        return None
    out = {"vm_base_pu": v.vm_base_pu, "dv_dp_pu_per_kw": v.dv_dp_pu_per_kw, "v_min_pu": v.v_min_pu}
    if v.dv_dq_pu_per_kvar is not None:
        out["dv_dq_pu_per_kvar"] = v.dv_dq_pu_per_kvar
    return out


def _s_max(request: MarketRequest) -> np.ndarray:
    """Apparent-power limit per EV [kVA]: ``request.s_max_kva`` or the charger rating."""
    if request.s_max_kva is None:
        return request.evs.p_max_kw.astype(float).copy()
    return np.asarray(request.s_max_kva, float).copy()


def _station_limits(request: MarketRequest) -> np.ndarray | None:
    """Remaining station capacity [kW], shape (n_stations, n_slots) (inf = uncapped), or None."""
    if request.station_cap_kw is None:
        return None
    cap = np.asarray(request.station_cap_kw, float)
    lim = np.broadcast_to(cap[:, None], (cap.size, request.n_slots)).copy()
    if request.committed_station_kw is not None:  # shape checked by MarketRequest
        lim = lim - request.committed_station_kw
    return np.maximum(lim, 0.0)


def _station_load(request: MarketRequest, p_kw: np.ndarray, n_st: int) -> np.ndarray:
    st = request.evs.station
    inside = (st >= 0) & (st < n_st)
    load = np.zeros((n_st, request.n_slots))
    np.add.at(load, st[inside], np.maximum(p_kw[inside], 0.0))
    return load


def _battery_kwh(request: MarketRequest, p_kw: np.ndarray) -> np.ndarray:
    """Battery energy of each slot's grid power [kWh], (n_evs, n_slots): charging × η_ch, discharging ÷ η_dis."""
    evs = request.evs
    p = np.asarray(p_kw, float)
    return np.where(p > 0, p * evs.eta_ch[:, None], p / evs.eta_dis[:, None]) * request.dt_h


def _unserved_kwh(request: MarketRequest, p_kw: np.ndarray) -> np.ndarray:
    return np.maximum(request.evs.e_need_kwh - _battery_kwh(request, p_kw).sum(axis=1), 0.0)


def _wear_usd(request: MarketRequest, p_kw: np.ndarray) -> float:
    """Battery wear of the discharge in a schedule [$] (`EVFlex.degradation_usd_per_kwh` × battery kWh out)."""
    out = np.maximum(-_battery_kwh(request, p_kw), 0.0)
    return float((out.sum(axis=1) * request.evs.degradation_usd_per_kwh).sum())


class _HighsModel:
    """Builds and solves the HiGHS model of one request (mixed into `MILP`)."""

    name: ClassVar[str]
    params: dict[str, Any]

    # ------------------------------------------------------------------ model
    def _build(self, request: MarketRequest) -> dict[str, Any]:
        """Columns [x | q | u | z] and the sparse rows of the problem, all as numpy arrays (no per-nonzero loop)."""
        p = self.params
        col = _columns(p, request)
        _battery_columns(p, request, col)
        acc = _Rows()
        _energy_rows(acc, request, col)
        _soc_rows(acc, request, col)
        _station_cap_rows(acc, request, col)
        if p["voltage"]:
            _voltage_rows(acc, request, col)
        if col["reactive"] and col["nx"]:
            _polygon_rows(acc, col)
        if col["peak"]:
            _peak_rows(acc, request, col)
        ncol, nrow, nx, nq = col["ncol"], acc.nrow, col["nx"], col["nq"]
        cost, lo, hi, ei, ti, ux = (col[k] for k in ("cost", "lo", "hi", "ei", "ti", "ux"))
        rows, cols, vals, rlo, rhi = acc.rows, acc.cols, acc.vals, acc.rlo, acc.rhi
        milp = p["variant"] == "milp"
        integrality = np.zeros(ncol, np.int32)
        if milp:
            integrality[:nx] = 1
        return {
            "ncol": ncol,
            "nrow": nrow,
            "cost": cost,
            "lo": lo,
            "hi": hi,
            "rows": np.concatenate(rows) if rows else np.zeros(0, int),
            "cols": np.concatenate(cols) if cols else np.zeros(0, int),
            "vals": np.concatenate(vals) if vals else np.zeros(0),
            "rlo": np.concatenate(rlo) if rlo else np.zeros(0),
            "rhi": np.concatenate(rhi) if rhi else np.zeros(0),
            "integrality": integrality,
            "ei": ei,
            "ti": ti,
            "ux": ux,
            "nx": nx,
            "nq": nq,
            "yi": col["yi"],
            "yt": col["yt"],
            "c_y": col["c_y"],
        }

    # ------------------------------------------------------------------ solve
    def _solve(self, model: dict[str, Any]) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Solve with HiGHS; returns (column values or None, solver info)."""
        import highspy
        from scipy.sparse import coo_matrix

        p = self.params
        ncol, nrow = model["ncol"], model["nrow"]
        a = coo_matrix((model["vals"], (model["rows"], model["cols"])), shape=(nrow, ncol)).tocsc()
        a.sum_duplicates()
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        h.setOptionValue("time_limit", float(p["time_limit_s"]))
        h.setOptionValue("mip_rel_gap", float(p["mip_rel_gap"]))
        inf = highspy.kHighsInf
        lo, hi = np.where(np.isinf(model["lo"]), -inf, model["lo"]), np.where(np.isinf(model["hi"]), inf, model["hi"])
        rlo = np.where(np.isinf(model["rlo"]), -inf, model["rlo"])
        rhi = np.where(np.isinf(model["rhi"]), inf, model["rhi"])
        milp = bool(model["integrality"].any())
        passed = h.passModel(
            ncol,
            nrow,
            int(a.nnz),
            int(highspy.MatrixFormat.kColwise),
            int(highspy.ObjSense.kMinimize),
            0.0,
            model["cost"],
            lo,
            hi,
            rlo,
            rhi,
            a.indptr.astype(np.int32),
            a.indices.astype(np.int32),
            a.data.astype(float),
            model["integrality"],
        )
        t = time.perf_counter()
        if passed == highspy.HighsStatus.kError:
            ms, key = None, "kModelError"
        else:
            h.run()
            ms = h.getModelStatus()
            key = str(ms).rsplit(".", 1)[-1]
        solve_s = time.perf_counter() - t
        status = _STATUS.get(key, key.removeprefix("k").lower())
        info = h.getInfo()
        feasible = int(info.primal_solution_status) == int(highspy.SolutionStatus.kSolutionStatusFeasible)
        x: np.ndarray | None = None
        if key == "kModelError":
            feasible = False
        elif key == "kModelEmpty":  # no rows: every column sits at its cheaper bound
            x = np.where(model["cost"] < 0, model["hi"], model["lo"])
            x = np.where(np.isfinite(x), x, 0.0)
            feasible = True
        elif feasible:
            x = np.asarray(h.getSolution().col_value, float)
        gap = float(info.mip_gap) if milp else (0.0 if status == "optimal" else math.nan)
        out = {
            "status": status,
            "highs_status": h.modelStatusToString(ms) if ms is not None else "passModel error",
            "has_solution": x is not None,
            "mip_gap": gap if math.isfinite(gap) else math.nan,
            "solver_objective_usd": float(info.objective_function_value) if x is not None else math.nan,
            "dual_bound_usd": float(info.mip_dual_bound) if milp else math.nan,
            "mip_nodes": int(info.mip_node_count) if milp else 0,
            "n_vars": int(ncol),
            "n_int_vars": int(model["integrality"].sum()),
            "n_rows": int(nrow),
            "n_nonzeros": int(a.nnz),
            "solve_time_s": solve_s,
        }
        return x, out


class _Rows:
    """The sparse rows of the problem as they are added, block by block (row indices offset per block)."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.rlo: list[np.ndarray] = []
        self.rhi: list[np.ndarray] = []
        self.nrow = 0

    def add(self, r: np.ndarray, c: np.ndarray, v: np.ndarray, lo_: np.ndarray, hi_: np.ndarray) -> None:
        self.rows.append(r + self.nrow)
        self.cols.append(c)
        self.vals.append(v)
        self.rlo.append(lo_)
        self.rhi.append(hi_)
        self.nrow += lo_.size


def _columns(p: dict[str, Any], request: MarketRequest) -> dict[str, Any]:
    """The columns [x | q | u | z]: which (EV, slot) pairs get an x, units, bounds and costs, column offsets."""
    evs, n, dt = request.evs, request.n_slots, request.dt_h
    milp = p["variant"] == "milp"
    levels = 2 ** int(p["bits"]) - 1
    avail = evs.availability(n)
    pmax = np.maximum(evs.p_max_kw, 0.0)
    v2g = evs.discharges & (p["variant"] == "lp")  # a V2G EV at its target may still discharge and recharge
    ok_ev = (pmax > 0) & ((evs.e_need_kwh > _NEED_EPS_KWH) | v2g)
    mask = (avail > 0) & ok_ev[:, None]
    ei, ti = np.nonzero(mask)
    nx = ei.size
    unit = pmax / levels if milp else np.ones(len(evs))  # kW per unit of x
    ux = unit[ei]
    if milp:
        x_ub = np.floor(avail[ei, ti] * levels + 1e-9)
    else:
        x_ub = pmax[ei] * avail[ei, ti]
    reactive = bool(p["reactive"])
    nq = nx if reactive else 0
    need_ev = np.nonzero((evs.e_need_kwh > _NEED_EPS_KWH) | (v2g & ok_ev))[0]
    nu = need_ev.size
    peak = p["objective"] == "peak"
    nz = 1 if peak else 0
    ncol = nx + nq + nu + nz
    c_x, c_q, c_u, c_z = 0, nx, nx + nq, nx + nq + nu

    cost = np.zeros(ncol)
    lo = np.zeros(ncol)
    hi = np.zeros(ncol)
    hi[:nx] = x_ub
    if not peak:
        cost[:nx] = _price_matrix(request, p["rho_usd_per_mwh"])[ei, ti] * ux * dt / 1000.0
    m = int(p["polygon_sides"])
    s_max = _s_max(request) if reactive else np.zeros(0)  # read only when reactive
    if reactive:
        qb = s_max[ei] * avail[ei, ti] * math.cos(math.pi / m)
        lo[c_q:c_u], hi[c_q:c_u] = -qb, qb
        cost[c_q:c_u] = _q_price_matrix(request)[ei, ti] * dt / 1000.0
    lo[c_u:c_z], hi[c_u:c_z] = 0.0, np.inf
    cost[c_u:c_z] = float(p["unserved_penalty_usd_per_kwh"])
    if peak:
        lo[c_z], hi[c_z] = -np.inf, np.inf
        cost[c_z] = float(p["peak_usd_per_kw"])
    return {
        **{"ei": ei, "ti": ti, "ux": ux, "x_ub": x_ub, "nx": nx, "nq": nq, "nu": nu, "need_ev": need_ev},
        **{"ncol": ncol, "c_x": c_x, "c_q": c_q, "c_u": c_u, "c_z": c_z, "cost": cost, "lo": lo, "hi": hi},
        **{"s_max": s_max, "avail": avail, "m": m, "reactive": reactive, "peak": peak},
    }


def _energy_rows(acc: _Rows, request: MarketRequest, col: dict[str, Any]) -> None:
    """Energy: Σ_t unit·x·Δt·η + u = need (one row per EV with a need)."""
    evs, dt = request.evs, request.dt_h
    ei, ux, nx, nu, need_ev, c_x, c_u = (col[k] for k in ("ei", "ux", "nx", "nu", "need_ev", "c_x", "c_u"))
    row_of_ev = np.full(len(evs), -1)
    row_of_ev[need_ev] = np.arange(nu)
    need = evs.e_need_kwh[need_ev]
    yi, c_y = col["yi"], col["c_y"]
    acc.add(
        np.concatenate([row_of_ev[ei], np.arange(nu), row_of_ev[yi]]),
        np.concatenate([c_x + np.arange(nx), c_u + np.arange(nu), c_y + np.arange(yi.size)]),
        np.concatenate([ux * dt * evs.eta_ch[ei], np.ones(nu), -dt / evs.eta_dis[yi]]),
        need,
        need,
    )


def _station_cap_rows(acc: _Rows, request: MarketRequest, col: dict[str, Any]) -> None:
    """Station caps: Σ unit·x at a station and slot ≤ its limit, for the (station, slot) pairs that can bind."""
    evs, n = request.evs, request.n_slots
    ei, ti, ux, x_ub, nx, c_x = (col[k] for k in ("ei", "ti", "ux", "x_ub", "nx", "c_x"))
    lim = _station_limits(request)
    if lim is not None and nx:
        n_st = lim.shape[0]
        st = evs.station[ei]
        inside = (st >= 0) & (st < n_st)
        key = st[inside] * n + ti[inside]
        ub_sum = np.bincount(key, weights=ux[inside] * x_ub[inside], minlength=n_st * n)
        flat = lim.ravel()
        binding = np.nonzero(np.isfinite(flat) & (ub_sum > flat + 1e-12))[0]
        rid = np.full(n_st * n, -1)
        rid[binding] = np.arange(binding.size)
        r = rid[key]
        keep = r >= 0
        acc.add(
            r[keep],
            (c_x + np.arange(nx))[inside][keep],
            ux[inside][keep],
            np.full(binding.size, -np.inf),
            flat[binding],
        )


def _voltage_rows(acc: _Rows, request: MarketRequest, col: dict[str, Any]) -> None:
    """LinDistFlow voltage: Σ_j dV/dP[b, bus_j]·P[j,t] (+ dV/dQ·Q) ≤ headroom[t, b], rows that can bind only."""
    evs, n = request.evs, request.n_slots
    ei, ti, ux, x_ub, nx, c_x, c_q, c_u, hi, reactive = (
        col[k] for k in ("ei", "ti", "ux", "x_ub", "nx", "c_x", "c_q", "c_u", "hi", "reactive")
    )
    vd = _voltage_data(request)
    if vd is not None and nx:
        nb = vd["vm_base_pu"].shape[1]
        head = np.maximum(vd["vm_base_pu"] - vd["v_min_pu"][None, :], 0.0)  # (n, nb)
        coef = vd["dv_dp_pu_per_kw"][:, evs.bus[ei]] * ux[None, :]  # (nb, nx)
        coef_q = None
        if reactive and "dv_dq_pu_per_kvar" in vd:
            coef_q = vd["dv_dq_pu_per_kvar"][:, evs.bus[ei]]
        # largest possible left-hand side per (b, t): rows that cannot bind are left out
        worst = np.zeros((nb, n))
        np.add.at(worst.T, ti, (np.maximum(coef, 0.0) * x_ub[None, :]).T)
        if coef_q is not None:
            np.add.at(worst.T, ti, (np.abs(coef_q) * hi[c_q:c_u][None, :]).T)
        binding = worst > head.T + 1e-12  # (nb, n)
        rid = np.full((nb, n), -1)
        bb, tt = np.nonzero(binding)
        rid[bb, tt] = np.arange(bb.size)
        r_parts, c_parts, v_parts = [], [], []
        for c0, cf in ((c_x, coef), (c_q, coef_q)):
            if cf is None:
                continue
            b_i, k_i = np.nonzero((cf != 0) & binding[:, ti])
            r_parts.append(rid[b_i, ti[k_i]])
            c_parts.append(c0 + k_i)
            v_parts.append(cf[b_i, k_i])
        acc.add(
            np.concatenate(r_parts),
            np.concatenate(c_parts),
            np.concatenate(v_parts),
            np.full(bb.size, -np.inf),
            head.T[bb, tt],
        )


def _polygon_rows(acc: _Rows, col: dict[str, Any]) -> None:
    """P–Q polygon (inscribed, facets with normals in (−90°, 90°)) of every charger."""
    ei, ti, ux, nx, c_x, c_q, s_max, avail, m = (
        col[k] for k in ("ei", "ti", "ux", "nx", "c_x", "c_q", "s_max", "avail", "m")
    )
    ang = 2 * np.pi * np.arange(m) / m
    ang = ang[np.cos(ang) > 1e-12]
    rad = s_max[ei] * avail[ei, ti] * math.cos(math.pi / m)
    k_idx = np.repeat(np.arange(ang.size), nx)
    v_idx = np.tile(np.arange(nx), ang.size)
    r = np.arange(ang.size * nx)
    acc.add(
        np.concatenate([r, r]),
        np.concatenate([c_x + v_idx, c_q + v_idx]),
        np.concatenate([np.cos(ang)[k_idx] * ux[v_idx], np.sin(ang)[k_idx]]),
        np.full(r.size, -np.inf),
        rad[v_idx],
    )


def _peak_rows(acc: _Rows, request: MarketRequest, col: dict[str, Any]) -> None:
    """Peak: Σ_i unit·x[i,t] − z ≤ −(base + committed)[t]."""
    n = request.n_slots
    ti, ux, nx, c_x, c_z = (col[k] for k in ("ti", "ux", "nx", "c_x", "c_z"))
    load = request.base_load_kw + request.committed_ev_kw
    yt, c_y = col["yt"], col["c_y"]
    acc.add(
        np.concatenate([ti, np.arange(n), yt]),
        np.concatenate([c_x + np.arange(nx), np.full(n, c_z), c_y + np.arange(yt.size)]),
        np.concatenate([ux, -np.ones(n), -np.ones(yt.size)]),
        np.full(n, -np.inf),
        -load,
    )


def _battery_columns(p: dict[str, Any], request: MarketRequest, col: dict[str, Any]) -> None:
    """Discharge columns y (V2G EVs, ``lp`` variant) and state-of-charge columns s, appended after [x | q | u | z].

    ``y[i,t] ≥ 0`` is grid-side discharge [kW] (≤ −p_min·a), priced at −λ and charged the battery wear.
    ``s[i,t]`` is the battery energy at the end of slot t [kWh] in ``[e_floor, e_cap]``, for EVs that discharge or
    whose two-stage curve can bind (their energy can pass the transition SOC). A discharging EV's is never above its
    target (``e_kwh + e_need``): the dispatch never charges beyond what an EV still needs, so a plan that stores
    energy above the target to discharge it later is cut at the target and then discharges below it. (A charge-only
    EV never passes its target anyway; its bound stays ``e_cap``, the model unchanged.)
    """
    evs, dt = request.evs, request.dt_h
    avail, ei = col["avail"], col["ei"]
    has_x = np.zeros(len(evs), bool)
    has_x[ei] = True
    dis = evs.discharges & has_x & (p["variant"] == "lp")
    window = avail > 0
    yi, yt = np.nonzero(window & dis[:, None])
    taper = (evs.transition_soc < 1.0) & has_x
    taper &= dis | (evs.e_kwh + evs.e_need_kwh > evs.transition_soc * evs.e_cap_kwh + 1e-9)
    si, st = np.nonzero(window & (dis | taper)[:, None])
    ny, ns = yi.size, si.size
    c_y = col["ncol"]
    c_s = c_y + ny
    price = _price_matrix(request, p["rho_usd_per_mwh"])[yi, yt] if ny and not col["peak"] else np.zeros(ny)
    wear = evs.degradation_usd_per_kwh[yi] * dt / evs.eta_dis[yi]
    col["cost"] = np.concatenate([col["cost"], -price * dt / 1000.0 + wear, np.zeros(ns)])
    col["lo"] = np.concatenate([col["lo"], np.zeros(ny), evs.e_floor_kwh[si]])
    top = np.where(dis, np.minimum(evs.e_cap_kwh, evs.e_kwh + evs.e_need_kwh), evs.e_cap_kwh)[si]  # (see above)
    col["hi"] = np.concatenate([col["hi"], -np.minimum(evs.p_min_kw[yi], 0.0) * avail[yi, yt], top])
    col.update(yi=yi, yt=yt, c_y=c_y, si=si, st=st, c_s=c_s, ncol=c_s + ns, taper=taper)


def _soc_rows(acc: _Rows, request: MarketRequest, col: dict[str, Any]) -> None:
    """State of charge: ``s[t] − s[t−1] − η·P[t]·Δt + Y[t]·Δt/η_dis = 0`` (``s[−1]`` = the energy now), and on
    two-stage batteries the curve ``P[t] ≤ slope·a[t]·(cap − s[t−1])`` (`markets.battery`)."""
    evs, n, dt = request.evs, request.n_slots, request.dt_h
    si, st, c_s, ei, ti, ux, c_x = (col[k] for k in ("si", "st", "c_s", "ei", "ti", "ux", "c_x"))
    if not si.size:
        return
    yi, yt, c_y, avail, taper = (col[k] for k in ("yi", "yt", "c_y", "avail", "taper"))
    m = len(evs)
    xid = np.full((m, n), -1)
    xid[ei, ti] = c_x + np.arange(ei.size)
    yid = np.full((m, n), -1)
    yid[yi, yt] = c_y + np.arange(yi.size)
    sid = np.full((m, n), -1)
    sid[si, st] = c_s + np.arange(si.size)
    first = st == evs.start_slot[si]  # s[−1] is the energy now: a constant on the right-hand side
    prev = np.where(first, -1, sid[si, np.maximum(st - 1, 0)])
    r = np.arange(si.size)
    x_here, y_here = xid[si, st], yid[si, st]
    hx, hy = x_here >= 0, y_here >= 0
    rows = [r, r[~first], r[hx], r[hy]]
    cols = [sid[si, st], prev[~first], x_here[hx], y_here[hy]]
    vals = [
        np.ones(r.size),
        -np.ones(int((~first).sum())),
        -evs.eta_ch[si[hx]] * dt * ux[x_here[hx] - c_x],
        dt / evs.eta_dis[si[hy]],
    ]
    rhs = np.where(first, evs.e_kwh[si], 0.0)
    acc.add(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), rhs, rhs)
    # the curve: ux·x[t] + slope·a[t]·s[t−1] ≤ slope·a[t]·cap (first slot: ux·x ≤ slope·a·(cap − e_now))
    on = taper[si] & hx
    if on.any():
        slope = slope_kw_per_kwh(evs.p_max_kw, evs.e_cap_kwh, evs.transition_soc)[si[on]]
        a = avail[si[on], st[on]]
        f_on = first[on]
        r2 = np.arange(int(on.sum()))
        rhs2 = slope * a * (evs.e_cap_kwh[si[on]] - np.where(f_on, evs.e_kwh[si[on]], 0.0))
        acc.add(
            np.concatenate([r2, r2[~f_on]]),
            np.concatenate([x_here[on], prev[on][~f_on]]),
            np.concatenate([ux[x_here[on] - c_x], (slope * a)[~f_on]]),
            np.full(r2.size, -np.inf),
            rhs2,
        )
