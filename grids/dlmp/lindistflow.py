"""(b) DLMPs and their decomposition from the LinDistFlow LP with linearised losses (HiGHS; see :mod:`grids.dlmp`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from grids.dlmp.common import (
    COMPONENTS_P,
    COMPONENTS_Q,
    DLMPInputError,
    DlmpInputs,
    FlexibleEV,
    dg_cost,
    dg_q_max_mw,
    failed_slot,
    frame,
    read_inputs,
)
from grids.dlmp.radial import RadialModel, radial_model
from grids.network import Network

__all__ = ["dlmp_lindistflow"]


def dlmp_lindistflow(
    network: Network,
    p_load_kw: Any,
    q_load_kvar: Any,
    *,
    price_usd_per_mwh: Any,
    q_price_usd_per_mvarh: Any = 0.0,
    renewable_kw: Any = None,
    ev: Sequence[FlexibleEV] | None = None,
    v_min_pu: float | None = None,
    v_max_pu: float | None = None,
    n_iter: int = 15,
    tol_kw: float = 1.0,
    dg_segments: int = 10,
) -> pd.DataFrame:
    """DLMPs and their decomposition from a linearised branch-flow LP per slot (HiGHS; module docstring).

    Same market model and arguments as :func:`dlmp_acopf`. Radial networks only.

    Args:
        network: a radial grid (not modified; its compiled topology is cached on it).
        p_load_kw: fixed active load per bus [kW], shape (n_slots, n_bus) in ``net.bus`` order (1-D = one slot).
        q_load_kvar: fixed reactive load per bus [kVAr], same shape.
        price_usd_per_mwh: substation energy price per slot [$/MWh], scalar or shape (n_slots,).
        q_price_usd_per_mvarh: substation reactive price [$/MVArh], scalar or shape (n_slots,).
        renewable_kw: renewable availability [kW], shape (n_slots, n_renewables); None = no renewable output.
        ev: flexible EV aggregates, the same in every slot.
        v_min_pu: lower voltage limit [pu]; None = ``network.v_min_pu``.
        v_max_pu: upper voltage limit [pu]; None = ``network.v_max_pu``.
        n_iter: maximum number of LPs per slot (sequential LP: re-linearisation at the AC power flow of the
            last dispatch, with a trust region that halves for a unit whose move changes direction).
        tol_kw: the sequential LP stops when no unit moves by more than this [kW / kVAr].
        dg_segments: piecewise-linear segments per quadratic DG cost.

    Returns:
        The tidy DLMP table with the decomposition columns (module docstring), ``method = "lindistflow"``.

    Raises:
        NotRadialError: meshed network, several slacks, ``net.gen`` generators or off-nominal taps.
        DLMPInputError: bad shapes, NaN, unknown EV bus, inconsistent EV box.
    """
    if int(n_iter) < 1 or int(dg_segments) < 1 or not tol_kw > 0:
        raise DLMPInputError("n_iter and dg_segments must be >= 1 and tol_kw > 0")
    tol = float(tol_kw) / 1e3
    inp = read_inputs(
        network, p_load_kw, q_load_kvar, price_usd_per_mwh, q_price_usd_per_mvarh, renewable_kw, ev, v_min_pu, v_max_pu
    )
    model = radial_model(network)
    extra = COMPONENTS_P + COMPONENTS_Q + ("vm_lp_pu", "iterations", "decomposition_residual")
    rows: list[dict[str, Any]] = []
    n_slots = inp.p_mw.shape[0]
    s_sub = float(network.substation_mva)
    for k in range(n_slots):
        t0 = time.perf_counter()
        units = _units(network, model, inp, k, int(dg_segments), s_sub)
        sol, x_units, it, move_max = _sequential_lp(model, inp, k, units, tol, int(n_iter))
        if sol is None:
            rows += failed_slot(
                "lindistflow",
                k,
                inp,
                "LinDistFlow LP infeasible (limits cannot be met)",
                extra,
                time.perf_counter() - t0,
            )
            continue
        rows += _slot_rows(network, model, inp, k, units, sol, x_units, it, move_max, tol, t0, extra)
    return frame(rows)


def _sequential_lp(
    model: RadialModel, inp: DlmpInputs, k: int, units: _Units, tol: float, n_iter: int
) -> tuple[dict[str, Any] | None, np.ndarray, int, float]:
    """Sequential LP of slot ``k``: re-linearise at the AC power flow of the last dispatch, with per-group trust
    regions that halve once a group's move changes direction.

    Returns:
        (last LP solution or None if infeasible, unit column values, LPs solved, largest last move [MW]).
    """
    x_units = _initial_dispatch(units, float(inp.price[k]))
    g_lo, g_hi = units.group_bounds()
    delta = g_hi - g_lo
    g_base = units.group_total(x_units)
    prev_move = np.zeros_like(g_base)
    bisect = np.zeros(g_base.shape, dtype=bool)
    sol = None
    it = 0
    move_max = np.inf
    for it in range(1, int(n_iter) + 1):  # noqa: B007 (the last value is returned: LPs solved)
        p_u, q_u = _unit_dispatch(units, x_units)
        pl, ql = _net_load_pd(inp, k, units, p_u, q_u)
        pf_res = model.pf.solve(pl, ql)
        Pb, Qb, vb = _base_point(model, pf_res.vm_pu, pf_res.va_degree, pf_res.converged)
        sol = _solve_lp(
            model, inp, k, units, Pb, Qb, vb, np.maximum(g_lo, g_base - delta), np.minimum(g_hi, g_base + delta)
        )
        if sol is None and (delta < g_hi - g_lo).any():  # the trust region cut off every feasible point
            sol = _solve_lp(model, inp, k, units, Pb, Qb, vb, g_lo, g_hi)
        if sol is None:
            break
        g_new = units.group_total(sol["x_units"])
        move = g_new - g_base
        moving = np.abs(move) > tol
        flip = moving & (move * prev_move < 0)
        # a group that reversed has bracketed its optimum: from then on its step bound halves every LP
        delta = np.where(flip, 0.5 * np.abs(move), np.where(bisect, 0.5 * delta, delta))
        bisect |= flip
        prev_move = np.where(moving, move, prev_move)
        x_units, g_base = sol["x_units"], g_new
        move_max = float(np.abs(move).max()) if move.size else 0.0
        if move_max <= tol:
            break
    return sol, x_units, it, move_max


def _slot_rows(
    network: Network,
    model: RadialModel,
    inp: DlmpInputs,
    k: int,
    units: _Units,
    sol: dict[str, Any],
    x_units: np.ndarray,
    it: int,
    move_max: float,
    tol: float,
    t0: float,
    extra: Sequence[str],
) -> list[dict[str, Any]]:
    """Result rows of a solved slot: prices and their decomposition, AC evaluation of the final dispatch.

    ``move_max`` is the sequential LP's last largest move and ``tol`` its stopping tolerance [MW]; ``t0`` the
    slot's start (``time.perf_counter``) for ``solve_time_s``.
    """
    m_pd = model.m_of_pd
    cp, cq = _decompose(model, sol, float(inp.price[k]), float(inp.q_price[k]))
    resid = float(max(np.max(np.abs(cp.sum(axis=1) - sol["lamP"])), np.max(np.abs(cq.sum(axis=1) - sol["lamQ"]))))
    # physical evaluation of the final dispatch
    p_u, q_u = _unit_dispatch(units, x_units)
    pl, ql = _net_load_pd(inp, k, units, p_u, q_u)
    pf_res = model.pf.solve(pl, ql)
    dt = time.perf_counter() - t0
    dg_u = [u for u, kd in enumerate(units.unit_kind) if kd == "dg"]
    cost = dg_cost(network, p_u[dg_u], q_u[dg_u])
    cost += sum(
        float(e.cost_usd_per_mwh) * p_u[u]
        for u, e in zip([u for u, kd in enumerate(units.unit_kind) if kd == "ev"], inp.evs, strict=True)
    )
    if pf_res.converged:
        grid_p, grid_q, losses = pf_res.ext_grid_p_mw, pf_res.ext_grid_q_mvar, pf_res.losses_mw
        cost += inp.price[k] * grid_p + inp.q_price[k] * grid_q
        vm = pf_res.vm_pu
        msg = (
            ""
            if move_max <= tol
            else (f"sequential LP stopped after {it} LPs with a unit still moving by {move_max * 1e3:.3g} kW")
        )
    else:
        grid_p = grid_q = losses = np.nan
        cost = np.nan
        vm = np.full(len(inp.bus_index), np.nan)
        msg = "AC power flow at the LP dispatch did not converge (prices are the LP's)"
    gen_p, gen_q, ev_p, ev_q = _bus_dispatch(units, inp, p_u, q_u)
    slot = dict(
        converged=True,
        total_cost_usd_per_h=float(cost),
        losses_kw=float(losses) * 1e3,
        grid_p_kw=float(grid_p) * 1e3,
        grid_q_kvar=float(grid_q) * 1e3,
        solve_time_s=dt,
        message=msg,
        iterations=it,
        decomposition_residual=resid,
    )
    return _bus_rows(inp, k, m_pd, sol, cp, cq, vm, (gen_p, gen_q, ev_p, ev_q), slot, extra)


def _bus_rows(
    inp: DlmpInputs,
    k: int,
    m_pd: np.ndarray,
    sol: dict[str, Any],
    cp: np.ndarray,
    cq: np.ndarray,
    vm: np.ndarray,
    dispatch: tuple[Any, Any, Any, Any],
    slot: dict[str, Any],
    extra: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per bus of slot ``k``: prices and their components, |V| (AC and LP), the units' dispatch, and the
    slot's columns ``slot``; out-of-service buses get a failed row with the slot's columns."""
    gen_p, gen_q, ev_p, ev_q = dispatch
    rows: list[dict[str, Any]] = []
    v_lp = np.sqrt(np.maximum(sol["v"], 0.0))
    for i, b in enumerate(inp.bus_index):
        m = int(m_pd[i])
        if m < 0:
            row = failed_slot("lindistflow", k, inp, "bus out of service", extra)[i]
            row.update(slot, converged=True)
            rows.append(row)
            continue
        row = dict(
            method="lindistflow",
            slot=k,
            bus=int(b),
            lam_p_usd_per_mwh=float(sol["lamP"][m]),
            lam_q_usd_per_mvarh=float(sol["lamQ"][m]),
            vm_pu=float(vm[i]),
            gen_p_kw=gen_p[i],
            gen_q_kvar=gen_q[i],
            ev_p_kw=ev_p[i],
            ev_q_kvar=ev_q[i],
        )
        for c, v in zip(COMPONENTS_P, cp[m], strict=True):
            row[c] = float(v)
        for c, v in zip(COMPONENTS_Q, cq[m], strict=True):
            row[c] = float(v)
        row["vm_lp_pu"] = float(v_lp[m])
        row.update(slot)
        rows.append(row)
    return rows


def _bus_dispatch(
    units: _Units, inp: DlmpInputs, p_u: np.ndarray, q_u: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generation and EV dispatch per bus [kW, kVAr] (``net.bus`` order; EVs in load convention)."""
    gen_p = np.zeros(len(inp.bus_index))
    gen_q = np.zeros(len(inp.bus_index))
    ev_p = np.zeros(len(inp.bus_index))
    ev_q = np.zeros(len(inp.bus_index))
    for u, (kd, i) in enumerate(zip(units.unit_kind, units.unit_pd, strict=True)):
        if kd == "ev":
            ev_p[i] -= p_u[u] * 1e3
            ev_q[i] -= q_u[u] * 1e3
        elif kd in ("dg", "ren"):
            gen_p[i] += p_u[u] * 1e3
            gen_q[i] += q_u[u] * 1e3
    return gen_p, gen_q, ev_p, ev_q


# --- per-slot building blocks ----------------------------------------------------------------------------------


@dataclass
class _Units:
    """Every dispatchable quantity of a slot as LP columns (generator convention)."""

    bus_m: np.ndarray  # model bus per column
    kind: np.ndarray  # 0 = P column, 1 = Q column
    lo: np.ndarray
    hi: np.ndarray
    cost: np.ndarray
    owner: np.ndarray  # unit id per column
    group: np.ndarray  # trust-region group per column (one per unit and kind; -1 = the substation)
    unit_kind: list[str]  # per unit: "slack", "dg", "ren", "ev"
    unit_pd: list[int]  # per unit: pandapower bus position (-1 for the substation)

    @property
    def n_groups(self) -> int:
        return int(self.group.max()) + 1 if self.group.size else 0

    def group_total(self, x: np.ndarray) -> np.ndarray:
        g = self.group >= 0
        return np.bincount(self.group[g], weights=x[g], minlength=self.n_groups)

    def group_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        g = self.group >= 0
        return (
            np.bincount(self.group[g], weights=self.lo[g], minlength=self.n_groups),
            np.bincount(self.group[g], weights=self.hi[g], minlength=self.n_groups),
        )


def _units(network: Network, model: RadialModel, inp: DlmpInputs, k: int, n_seg: int, s_sub: float) -> _Units:
    bus_m, kind, lo, hi, cost, owner, group = [], [], [], [], [], [], []
    unit_kind: list[str] = []
    unit_pd: list[int] = []
    n_group = [0]

    def unit(kd: str, i: int) -> None:
        unit_kind.append(kd)
        unit_pd.append(i)

    def col(m: int, kd: int, a: float, b: float, c: float, new_group: bool = True) -> None:
        bus_m.append(m)
        kind.append(kd)
        lo.append(a)
        hi.append(b)
        cost.append(c)
        owner.append(len(unit_kind))
        if new_group:
            n_group[0] += 1
        group.append(n_group[0] - 1)

    bus_m += [0, 0]
    kind += [0, 1]
    lo += [-s_sub, -s_sub]
    hi += [s_sub, s_sub]
    cost += [float(inp.price[k]), float(inp.q_price[k])]
    owner += [0, 0]
    group += [-1, -1]
    unit("slack", -1)
    for d in network.dgs:
        i = inp.pos[int(d.bus)]
        m = int(model.m_of_pd[i])
        pmax = d.p_max_kw / 1e3
        edges = np.linspace(0.0, pmax, n_seg + 1)
        for s_, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            col(m, 0, 0.0, b - a, d.cost_b + d.cost_a * (a + b), new_group=(s_ == 0))  # secant of A·P² + B·P
        col(m, 1, 0.0, dg_q_max_mw(d), d.q_cost_usd_per_mvarh)
        unit("dg", i)
    for j, d in enumerate(network.renewables):
        i = inp.pos[int(d.bus)]
        m = int(model.m_of_pd[i])
        col(m, 0, 0.0, float(inp.ren_mw[k, j]), 0.0)
        unit("ren", i)
    for e in inp.evs:
        i = inp.pos[int(e.bus)]
        m = int(model.m_of_pd[i])
        plo, phi, qlo, qhi = e.injection_box_mw()
        col(m, 0, plo, phi, float(e.cost_usd_per_mwh))
        col(m, 1, qlo, qhi, 0.0)
        unit("ev", i)
    for i in unit_pd:
        if i >= 0 and model.m_of_pd[i] < 0:
            raise DLMPInputError("a DER or EV sits on a bus that is out of service")
    return _Units(
        np.array(bus_m, dtype=np.int64),
        np.array(kind, dtype=np.int64),
        np.array(lo, float),
        np.array(hi, float),
        np.array(cost, float),
        np.array(owner, dtype=np.int64),
        np.array(group, dtype=np.int64),
        unit_kind,
        unit_pd,
    )


def _unit_dispatch(units: _Units, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_units = len(units.unit_kind)
    p = np.bincount(units.owner, weights=np.where(units.kind == 0, x, 0.0), minlength=n_units)
    q = np.bincount(units.owner, weights=np.where(units.kind == 1, x, 0.0), minlength=n_units)
    return p, q


def _initial_dispatch(units: _Units, price: float) -> np.ndarray:
    """Column values of a first guess: DGs at the economic rule, renewables at availability, EVs at 0 clipped."""
    x = np.clip(0.0, units.lo, units.hi)
    ren = (units.kind == 0) & np.isin(units.owner, [u for u, kd in enumerate(units.unit_kind) if kd == "ren"])
    x[ren] = units.hi[ren]
    dg_cols = (units.kind == 0) & np.isin(units.owner, [u for u, kd in enumerate(units.unit_kind) if kd == "dg"])
    x[dg_cols] = np.where(units.cost[dg_cols] < price, units.hi[dg_cols], 0.0)
    return x


def _net_load_pd(
    inp: DlmpInputs, k: int, units: _Units, p_u: np.ndarray, q_u: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p = inp.p_mw[k].copy()
    q = inp.q_mvar[k].copy()
    for u, i in enumerate(units.unit_pd):
        if i >= 0:
            p[i] -= p_u[u]
            q[i] -= q_u[u]
    return p, q


def _base_point(
    model: RadialModel, vm: np.ndarray, va_deg: np.ndarray, base_ok: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sending-end flows P̄, Q̄ [MW, MVAr] per branch (indexed by child) and v̄ = |V|² per model bus."""
    n = model.n
    if not base_ok:
        return np.zeros(n), np.zeros(n), np.full(n, model.v_ref**2)
    V = vm[model.pd_of_m] * np.exp(1j * np.deg2rad(va_deg[model.pd_of_m]))
    P = np.zeros(n)
    Q = np.zeros(n)
    ch = np.arange(1, n)
    par = model.parent[ch]
    z = model.r[ch] + 1j * model.x[ch]
    S = V[par] * np.conj((V[par] - V[ch]) / z)  # MVA with z in "1 MVA base" units
    P[ch], Q[ch] = S.real, S.imag
    return P, Q, np.abs(V) ** 2


#: Fixed facets of the thermal-limit polygon (plus one tangent at the base point).
_K_POLY = 16


def _solve_lp(
    model: RadialModel,
    inp: DlmpInputs,
    k: int,
    units: _Units,
    Pb: np.ndarray,
    Qb: np.ndarray,
    vb: np.ndarray,
    tr_lo: np.ndarray,
    tr_hi: np.ndarray,
) -> dict[str, Any] | None:
    """Build and solve one slot's LP around the base point; None if HiGHS finds no optimum.

    ``tr_lo``/``tr_hi`` bound each unit group's total (the trust region of the sequential LP).
    """
    import highspy

    n = model.n
    nb = n - 1
    vpar, ell, aP, bP, aQ, bQ = _loss_factors(model, Pb, Qb, vb)
    # columns
    cP = np.arange(nb)
    cQ = nb + np.arange(nb)
    cV = 2 * nb + np.arange(n)
    cU = 3 * nb + 1 + np.arange(len(units.lo))
    n_col = int(cU[-1]) + 1 if len(cU) else 3 * nb + 1
    rP, rQ, rV = 0, n, 2 * n
    A, lim, n_fac, theta, poly_ub, n_row_base, n_row_tr = _constraint_matrix(
        model, units, Pb, Qb, (vpar, aP, bP, aQ, bQ), (cP, cQ, cV, cU), n_col
    )
    rhsP, rhsQ, rhsV = _balance_rhs(model, inp, k, ell)
    inf = highspy.kHighsInf
    col_lo, col_hi, cost = _column_bounds(model, inp, units, n_col, cV, cU, inf)
    row_lo = np.concatenate([rhsP, rhsQ, rhsV, np.full(poly_ub.size, -inf), tr_lo])
    row_hi = np.concatenate([rhsP, rhsQ, rhsV, poly_ub, tr_hi])

    out = _run_highs(A, cost, col_lo, col_hi, row_lo, row_hi)
    if out is None:
        return None
    xs, y, z = out
    return dict(
        x_units=xs[cU],
        v=xs[cV],
        lamP=y[rP : rP + n],
        lamQ=y[rQ : rQ + n],
        beta=y[rV : rV + nb],
        eta=y[n_row_base:n_row_tr].reshape(len(lim), n_fac),
        lim=lim,
        theta=theta,
        z_v=z[cV],
        aP=aP,
        bP=bP,
        aQ=aQ,
        bQ=bQ,
    )


def _constraint_matrix(
    model: RadialModel, units: _Units, Pb: np.ndarray, Qb: np.ndarray, loss: tuple, columns: tuple, n_col: int
) -> tuple[Any, np.ndarray, int, np.ndarray, np.ndarray, int, int]:
    """The LP's sparse constraint matrix: branch-flow balances, voltage drops, thermal polygons, trust-region rows.

    ``loss`` holds ``_loss_factors``'s ``(vpar, aP, bP, aQ, bQ)``, ``columns`` the column indices ``(cP, cQ, cV, cU)``.
    Returns ``(A, lim, n_fac, theta, poly_ub, n_row_base, n_row_tr)``: the limited branches, facets per branch,
    facet angles [rad], facet bounds and the first polygon and trust-region rows."""
    import scipy.sparse as sp

    vpar, aP, bP, aQ, bQ = loss
    cP, cQ, cV, cU = columns
    n = model.n
    nb = n - 1
    ch = np.arange(1, n)
    par = model.parent[ch]
    r, x = model.r[ch], model.x[ch]
    # rows: balP (n), balQ (n), vdrop (nb), polygons
    rP, rQ, rV = 0, n, 2 * n
    rows, cols, vals = [], [], []

    def add(rr: Any, cc: Any, vv: Any) -> None:
        rr, cc, vv = np.broadcast_arrays(np.asarray(rr), np.asarray(cc), np.asarray(vv, dtype=float))
        rows.append(rr.ravel())
        cols.append(cc.ravel())
        vals.append(vv.ravel())

    add(rP + ch, cP, 1 - aP)
    add(rP + ch, cQ, -bP)
    add(rQ + ch, cQ, 1 - aQ)
    add(rQ + ch, cP, -bQ)
    add(rP + par, cP, -1.0)
    add(rQ + par, cQ, -1.0)
    add(rV + cP, cV[ch], 1.0)
    add(rV + cP, cV[par], -1.0)
    add(rV + cP, cP, 2 * r)
    add(rV + cP, cQ, 2 * x)
    # units
    isP = units.kind == 0
    add(np.where(isP, rP, rQ) + units.bus_m, cU, 1.0)
    # thermal polygons
    # thermal limits: 16 fixed facets plus one tangent at the base point's flow angle (exact there)
    lim = np.nonzero(np.isfinite(model.s_max[ch]))[0]
    n_fac = _K_POLY + 1
    theta = np.hstack(
        [
            np.tile(2 * np.pi * np.arange(_K_POLY) / _K_POLY, (len(lim), 1)),
            np.arctan2(Qb[ch][lim], Pb[ch][lim])[:, None],
        ]
    )
    n_row_base = 2 * n + nb
    if len(lim):
        poly_rows = n_row_base + np.arange(len(lim) * n_fac).reshape(len(lim), n_fac)
        add(poly_rows, cP[lim][:, None], np.cos(theta))
        add(poly_rows, cQ[lim][:, None], np.sin(theta))
        poly_ub = np.repeat(model.s_max[ch][lim] * np.sqrt(vpar[lim]), n_fac)
    else:
        poly_ub = np.zeros(0)
    # trust region: one row per unit group (a DG's P segments form one group)
    g_cols = units.group >= 0
    n_row_tr = n_row_base + poly_ub.size
    add(n_row_tr + units.group[g_cols], cU[g_cols], 1.0)
    n_row = n_row_tr + units.n_groups
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_row, n_col))
    return A, lim, n_fac, theta, poly_ub, n_row_base, n_row_tr


def _loss_factors(
    model: RadialModel, Pb: np.ndarray, Qb: np.ndarray, vb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per branch (by child): sending-end v̄, ℓ̄ = (P̄² + Q̄²)/v̄ and the loss factors 2rP̄/v̄, 2rQ̄/v̄, 2xQ̄/v̄, 2xP̄/v̄."""
    ch = np.arange(1, model.n)
    par = model.parent[ch]
    r, x = model.r[ch], model.x[ch]
    vpar = vb[par]
    ell = (Pb[ch] ** 2 + Qb[ch] ** 2) / vpar
    aP = 2 * r * Pb[ch] / vpar
    bP = 2 * r * Qb[ch] / vpar
    aQ = 2 * x * Qb[ch] / vpar
    bQ = 2 * x * Pb[ch] / vpar
    return vpar, ell, aP, bP, aQ, bQ


def _balance_rhs(
    model: RadialModel, inp: DlmpInputs, k: int, ell: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-hand sides of the P and Q balance rows (load per model bus minus the base point's losses r·ℓ̄, x·ℓ̄)
    and of the voltage-drop rows ((r² + x²)·ℓ̄)."""
    n = model.n
    ch = np.arange(1, n)
    r, x = model.r[ch], model.x[ch]
    m_of_pd = model.m_of_pd
    ok = m_of_pd >= 0
    inp_bal = np.bincount(m_of_pd[ok], weights=inp.p_mw[k][ok], minlength=n)
    inq_bal = np.bincount(m_of_pd[ok], weights=inp.q_mvar[k][ok], minlength=n)
    rhsP = inp_bal.copy()
    rhsQ = inq_bal.copy()
    rhsP[ch] -= r * ell
    rhsQ[ch] -= x * ell
    rhsV = (r**2 + x**2) * ell
    return rhsP, rhsQ, rhsV


def _column_bounds(
    model: RadialModel, inp: DlmpInputs, units: _Units, n_col: int, cV: np.ndarray, cU: np.ndarray, inf: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column bounds (v in [v_min², v_max²], root fixed at v_ref², unit boxes) and costs of the LP."""
    col_lo = np.full(n_col, -inf)
    col_hi = np.full(n_col, inf)
    col_lo[cV] = inp.v_min**2
    col_hi[cV] = inp.v_max**2
    col_lo[cV[0]] = col_hi[cV[0]] = model.v_ref**2
    col_lo[cU] = units.lo
    col_hi[cU] = units.hi
    cost = np.zeros(n_col)
    cost[cU] = units.cost
    return col_lo, col_hi, cost


def _run_highs(
    A: Any, cost: np.ndarray, col_lo: np.ndarray, col_hi: np.ndarray, row_lo: np.ndarray, row_hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Solve ``min cost·x`` s.t. ``row_lo <= A x <= row_hi``, ``col_lo <= x <= col_hi`` (A: scipy CSC) with HiGHS.

    Returns:
        (column values, row duals, column duals), or None when HiGHS finds no optimum.
    """
    import highspy

    n_row, n_col = A.shape
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    lp = highspy.HighsLp()
    lp.num_col_ = n_col
    lp.num_row_ = n_row
    lp.col_cost_ = cost
    lp.col_lower_ = col_lo
    lp.col_upper_ = col_hi
    lp.row_lower_ = row_lo
    lp.row_upper_ = row_hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    sol = h.getSolution()
    return np.asarray(sol.col_value), np.asarray(sol.row_dual), np.asarray(sol.col_dual)


def _decompose(model: RadialModel, sol: dict[str, Any], price: float, q_price: float) -> tuple[np.ndarray, np.ndarray]:
    """Components of λP and λQ per model bus: arrays (n, 4) in the order energy, loss, congestion, voltage."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    n = model.n
    nb = n - 1
    ch = np.arange(1, n)
    par = model.parent[ch]
    b_of = np.full(n, -1)
    b_of[ch] = ch - 1
    r, x = model.r[ch], model.x[ch]
    aP, bP, aQ, bQ = sol["aP"], sol["bP"], sol["aQ"], sol["bQ"]
    iP, iQ, iB = np.arange(nb), nb + np.arange(nb), 2 * nb + np.arange(nb)
    rows, cols, vals = [], [], []

    def add(rr: Any, cc: Any, vv: Any) -> None:
        rr, cc, vv = np.broadcast_arrays(np.asarray(rr), np.asarray(cc), np.asarray(vv, dtype=float))
        rows.append(rr.ravel())
        cols.append(cc.ravel())
        vals.append(vv.ravel())

    # stationarity of P_ij:  (1−aP)λP_j − bQ λQ_j − λP_i + 2r β_ij + Σ cos θ η = 0
    add(iP, iP, 1 - aP)
    add(iP, iQ, -bQ)
    add(iP, iB, 2 * r)
    # stationarity of Q_ij:  (1−aQ)λQ_j − bP λP_j − λQ_i + 2x β_ij + Σ sin θ η = 0
    add(iQ, iQ, 1 - aQ)
    add(iQ, iP, -bP)
    add(iQ, iB, 2 * x)
    nonroot_par = par > 0
    add(iP[nonroot_par], iP[b_of[par[nonroot_par]]], -1.0)
    add(iQ[nonroot_par], iQ[b_of[par[nonroot_par]]], -1.0)
    # stationarity of v_j (j not the root):  β_ij − Σ_k β_jk = −z_j
    add(iB, iB, 1.0)
    add(iB[b_of[par[nonroot_par]]], iB[nonroot_par], -1.0)
    M = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(3 * nb, 3 * nb))
    lu = splu(M)

    lamP0 = float(sol["lamP"][0])
    lamQ0 = float(sol["lamQ"][0])
    at_root = ~nonroot_par

    def root_rhs(p0: float, q0: float) -> np.ndarray:
        rhs = np.zeros(3 * nb)
        rhs[iP[at_root]] = p0
        rhs[iQ[at_root]] = q0
        return rhs

    rhs_line = np.zeros(3 * nb)
    if len(sol["lim"]):
        eta = sol["eta"]
        rhs_line[iP[sol["lim"]]] = -(eta * np.cos(sol["theta"])).sum(axis=1)
        rhs_line[iQ[sol["lim"]]] = -(eta * np.sin(sol["theta"])).sum(axis=1)
    rhs_volt = np.zeros(3 * nb)
    rhs_volt[iB] = -sol["z_v"][ch]
    u_energy = lu.solve(root_rhs(price, q_price))
    u_cong = lu.solve(root_rhs(lamP0 - price, lamQ0 - q_price) + rhs_line)
    u_volt = lu.solve(rhs_volt)
    cp = np.zeros((n, 4))
    cq = np.zeros((n, 4))
    cp[:, 0], cq[:, 0] = price, q_price
    cp[ch, 1] = u_energy[iP] - price
    cq[ch, 1] = u_energy[iQ] - q_price
    cp[0, 2], cq[0, 2] = lamP0 - price, lamQ0 - q_price
    cp[ch, 2], cq[ch, 2] = u_cong[iP], u_cong[iQ]
    cp[ch, 3], cq[ch, 3] = u_volt[iP], u_volt[iQ]
    return cp, cq
