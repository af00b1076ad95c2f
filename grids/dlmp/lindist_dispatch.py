"""The DSO's per-step DG dispatch on the LinDistFlow model (``grid.dispatch = "lindistflow"``): one convex QP per step.

The fast alternative to :class:`grids.dlmp.OpfDispatch` (AC OPF, ``grid.dispatch = "opf"``), with the same
``solve`` contract, so the DSO uses either through the same slot. It reuses the branch-flow model of
:func:`grids.dlmp.dlmp_lindistflow` (:mod:`grids.dlmp.lindistflow`: the unit columns, the constraint matrix with
the linearised losses, the right-hand sides and bounds; :mod:`grids.dlmp.radial`: the compiled radial topology) and
solves it once per step with HiGHS:

* **base point**: an AC power flow (the radial model's :class:`grids.powerflow.FastPowerFlow`) of the step's load
  with the DGs at merit order (full output where their linear cost ``B`` is below the price, no reactive output)
  and the renewables at their availability — the initial point of the DLMP's sequential LP;
* **constraints** (all from :mod:`grids.dlmp.lindistflow`, around that base point): nodal P/Q balances with the
  branch losses ``r·ℓ``, ``x·ℓ`` linearised (first-order Taylor in the branch flows, exact in value at the base
  point); LinDistFlow voltage drops with the base point's loss term, squared voltages in
  ``[v_min_pu², v_max_pu²]`` (the substation at its set-point); thermal limits ``|S_ij| ≤ S_max·√v̄_i`` (the
  ratings × ``max_line_loading_percent`` as the AC OPF's current limit at the base voltage) as 16 fixed facets
  tangent to the circle plus one tangent at the base point's flow angle; the substation a box
  ``|P|, |Q| ≤ substation_mva``; each DG ``P ∈ [0, P_max]``, ``Q ∈ [0, P_max·tan(acos pf)]``; each renewable
  ``P ∈ [0, available]`` at unity power factor (it costs nothing, so it is curtailed only where a limit binds);
* **objective**: substation energy at the step's price and reactive power at ``q_price`` (linear), DG cost
  ``A·P² + B·P`` **exactly** (a diagonal Hessian, not piecewise-linear segments) and reactive output at its
  ``q_cost``, plus the **curvature of the losses**: ``Σ (λ·r + λ_q·x)/v̄_i · ((P_ij − P̄_ij)² + (Q_ij − Q̄_ij)²)``,
  the second-order term the linearised balances leave out (losses ``r(P² + Q²)/v̄`` are quadratic at fixed
  voltage, so with it the loss cost is exact in the flows up to pricing them at the substation's λ). This makes the
  problem a convex QP (HiGHS's active-set QP solver), solved once per step.

Why a QP: with linear loss factors alone an LP puts every unit at a bound (a DG whose marginal cost meets its bus
price between its limits, or reactive output that trades losses against its cost, has no interior LP optimum), so
a single LP swings a DG between 0 and its rating from one base point to the next — on the 002 day it missed the AC
OPF's dispatch by up to the full 1.5 MW in a step (−2.1 % DG energy over the day); the sequential LP of the DLMP
code fixes it with 10–13 LPs and power flows. One QP with the loss curvature lands within ~35 kW of the AC OPF
(``tests/test_opf_dispatch.py``; ``docs/dlmp.md``).

As the OPF: a DG at or below ``ON_KW`` is stopped (P = Q = 0, no no-load cost), renewables are clipped to
``[0, available]``; an infeasible or failed QP returns None (the DSO then dispatches by merit order and flags the
step ``dispatch_failed``). Radial networks only (one slack, no ``net.gen``, nominal transformer ratios):
:func:`radial_problem` says why a network is not one (the scenario check refuses ``grid.dispatch = "lindistflow"``
there).
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np

from grids.dlmp.common import ON_KW, DlmpInputs, NotRadialError, read_inputs
from grids.dlmp.lindistflow import (
    _balance_rhs,
    _base_point,
    _column_bounds,
    _constraint_matrix,
    _initial_dispatch,
    _loss_factors,
    _net_load_pd,
    _unit_dispatch,
    _Units,
    _units,
)
from grids.dlmp.radial import RadialModel, radial_model
from grids.network import Network

__all__ = ["LinDistFlowDispatch", "radial_problem"]

#: Largest row or column violation [MW, MVAr, pu²] accepted from a QP that HiGHS ends with a solve error after
#: claiming optimality (0.1 kW in a balance: far below the linearisation's own error of tens of kW).
_ACCEPT_INFEASIBILITY = 1e-4


def radial_problem(network: Network) -> str | None:
    """Why LinDistFlow cannot model ``network`` (meshed or split, several slacks, voltage-controlled ``net.gen``,
    off-nominal transformer ratios), as a phrase to follow the network's name ("has 37 in-service branches for 33
    buses (a tree has 32); it is meshed or split"), or None when it can. Compiles (and caches) the radial model."""
    try:
        radial_model(network)
    except NotRadialError as err:
        # the radial model's message without its DLMP framing: prefix, the network's name, the advice
        why = str(err).split(" — ")[0]
        why = re.sub(r"^LinDistFlow DLMPs( need a radial network)?:\s*(network\s+)?'[^']*'\s*", "", why)
        return re.split(r"[.;] LinDistFlow (?:models|does not apply)", why)[0]
    return None


class LinDistFlowDispatch:
    """The DSO's per-step DG dispatch by one LinDistFlow QP (``grid.dispatch = "lindistflow"``; module docstring).

    Args:
        network: a radial grid (not modified; its compiled radial model is cached on it).

    Attributes:
        time_s: wall time spent in :meth:`solve` [s]; ``cpu_s`` the process CPU time [s].
        n_solved: steps with an optimal QP; ``n_failed`` steps without one (None returned).

    Raises:
        NotRadialError: the network is not radial (see :func:`radial_problem`).
    """

    def __init__(self, network: Network) -> None:
        import highspy

        self.network = network
        self._model: RadialModel = radial_model(network)
        self._model.pf.reset_warm_start()  # the cached model's engine: a run must not depend on an earlier one
        self._s_sub_mva = float(network.substation_mva)
        self._cost_a = np.array([d.cost_a for d in network.dgs], float)  # [$/h per MW²]
        self._cost_b = np.array([d.cost_b for d in network.dgs], float)  # [$/MWh]
        self._highs = highspy.Highs()  # one solver instance for the run (a new one costs ~0.3 ms per step)
        self._highs.setOptionValue("output_flag", False)
        self.time_s = 0.0
        self.cpu_s = 0.0
        self.n_solved = 0
        self.n_failed = 0

    def solve(
        self,
        p_load_kw: np.ndarray,
        q_load_kvar: np.ndarray,
        price_usd_per_mwh: float,
        renewable_kw: np.ndarray,
        q_price_usd_per_mvarh: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(DG P [kW], DG Q [kVAr], renewable output [kW]) in ``network.dgs`` / ``network.renewables`` order for the
        step's fixed load per bus (``net.bus`` order, [kW] / [kVAr]), or None where the QP has no optimum (the caller
        falls back to merit order and records it). Reactive energy from the grid is priced at
        ``q_price_usd_per_mvarh``; ``renewable_kw`` is the renewables' availability [kW]."""
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            out = self._dispatch(p_load_kw, q_load_kvar, float(price_usd_per_mwh), renewable_kw, q_price_usd_per_mvarh)
        finally:
            self.time_s += time.perf_counter() - t0
            self.cpu_s += time.process_time() - c0
        if out is None:
            self.n_failed += 1
        else:
            self.n_solved += 1
        return out

    def _dispatch(
        self, p_load_kw: Any, q_load_kvar: Any, price: float, renewable_kw: Any, q_price: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Base point, QP and the units' output (see :meth:`solve`)."""
        network, model = self.network, self._model
        ren_avail_kw = np.asarray(renewable_kw, float).reshape(-1)
        inp = read_inputs(network, p_load_kw, q_load_kvar, price, q_price, ren_avail_kw[None, :], None, None, None)
        units = _units(network, model, inp, 0, 1, self._s_sub_mva)  # one P column per DG: its cost is the Hessian's
        kinds = np.array(units.unit_kind)
        dg_u, ren_u = np.nonzero(kinds == "dg")[0], np.nonzero(kinds == "ren")[0]
        dg_p_col = np.nonzero((units.kind == 0) & np.isin(units.owner, dg_u))[0]  # in network.dgs order
        units.cost[dg_p_col] = self._cost_b
        x0 = _initial_dispatch(units, price)
        p_u, q_u = _unit_dispatch(units, x0)
        pl, ql = _net_load_pd(inp, 0, units, p_u, q_u)
        pf_res = model.pf.solve(pl, ql)
        Pb, Qb, vb = _base_point(model, pf_res.vm_pu, pf_res.va_degree, pf_res.converged)
        x_units = self._solve_qp(inp, units, dg_p_col, (Pb, Qb, vb), price, q_price)
        if x_units is None:
            return None
        p_u, q_u = _unit_dispatch(units, x_units)
        dg_p, dg_q = p_u[dg_u] * 1e3, q_u[dg_u] * 1e3
        off = dg_p <= ON_KW  # stopped, as the OPF's dispatch: no output, no no-load cost
        ren_kw = np.clip(p_u[ren_u] * 1e3, 0.0, ren_avail_kw)
        return np.where(off, 0.0, dg_p), np.where(off, 0.0, dg_q), ren_kw

    def _solve_qp(
        self,
        inp: DlmpInputs,
        units: _Units,
        dg_p_col: np.ndarray,
        base: tuple[np.ndarray, np.ndarray, np.ndarray],
        price: float,
        q_price: float,
    ) -> np.ndarray | None:
        """The QP around the base point ``(P̄, Q̄, v̄)`` (flows [MW, MVAr] per branch by child, |V|² per model bus):
        the DLMP LP's rows and bounds, the DGs' ``A·P²`` and the loss curvature as a diagonal Hessian. Returns the
        unit columns' values, or None without an optimum."""
        import highspy

        model = self._model
        Pb, Qb, vb = base
        n = model.n
        nb = n - 1
        vpar, ell, aP, bP, aQ, bQ = _loss_factors(model, Pb, Qb, vb)
        # the column layout of grids.dlmp.lindistflow._solve_lp: P, Q per branch, v per bus, the units
        cP = np.arange(nb)
        cQ = nb + cP
        cV = 2 * nb + np.arange(n)
        cU = 3 * nb + 1 + np.arange(len(units.lo))
        n_col = int(cU[-1]) + 1
        A, _, _, _, poly_ub, _, _ = _constraint_matrix(
            model, units, Pb, Qb, (vpar, aP, bP, aQ, bQ), (cP, cQ, cV, cU), n_col
        )
        rhsP, rhsQ, rhsV = _balance_rhs(model, inp, 0, ell)
        inf = highspy.kHighsInf
        col_lo, col_hi, cost = _column_bounds(model, inp, units, n_col, cV, cU, inf)
        g_lo, g_hi = units.group_bounds()  # the DLMP's trust-region rows, here at the units' full range
        row_lo = np.concatenate([rhsP, rhsQ, rhsV, np.full(poly_ub.size, -inf), g_lo])
        row_hi = np.concatenate([rhsP, rhsQ, rhsV, poly_ub, g_hi])
        ch = np.arange(1, n)
        w = np.maximum(price * model.r[ch] + q_price * model.x[ch], 0.0) / vpar  # loss curvature [$/h per MVA²]
        hess = np.zeros(n_col)
        hess[cU[dg_p_col]] = 2.0 * self._cost_a
        hess[cP] += 2.0 * w
        hess[cQ] += 2.0 * w
        cost[cP] -= 2.0 * w * Pb[ch]
        cost[cQ] -= 2.0 * w * Qb[ch]
        x = self._run(A, cost, hess, (col_lo, col_hi), (row_lo, row_hi))
        return None if x is None else x[cU]

    def _run(
        self,
        A: Any,
        cost: np.ndarray,
        hess_diag: np.ndarray,
        col_bounds: tuple[np.ndarray, np.ndarray],
        row_bounds: tuple[np.ndarray, np.ndarray],
    ) -> np.ndarray | None:
        """``min cost·x + ½ xᵀ diag(hess_diag) x`` s.t. row and column bounds (A: scipy CSC) with HiGHS; the column
        values, or None when HiGHS finds no optimum."""
        import highspy

        n_row, n_col = A.shape
        lp = highspy.HighsLp()
        lp.num_col_ = n_col
        lp.num_row_ = n_row
        lp.col_cost_ = cost
        lp.col_lower_, lp.col_upper_ = col_bounds
        lp.row_lower_, lp.row_upper_ = row_bounds
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = A.indptr.astype(np.int32)
        lp.a_matrix_.index_ = A.indices.astype(np.int32)
        lp.a_matrix_.value_ = A.data
        qp = highspy.HighsModel()
        qp.lp_ = lp
        nz = np.nonzero(hess_diag)[0]
        if nz.size:
            hessian = highspy.HighsHessian()
            hessian.dim_ = n_col
            hessian.format_ = highspy.HessianFormat.kTriangular
            start = np.zeros(n_col + 1, dtype=np.int32)
            start[1:] = np.cumsum(hess_diag != 0)
            hessian.start_ = start
            hessian.index_ = nz.astype(np.int32)
            hessian.value_ = hess_diag[nz]
            qp.hessian_ = hessian
        h = self._highs
        h.passModel(qp)
        h.run()
        status = h.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            return np.asarray(h.getSolution().col_value)
        x = np.asarray(h.getSolution().col_value)
        if status != highspy.HighsModelStatus.kSolveError or x.shape != (n_col,) or not np.isfinite(x).all():
            return None
        # The active-set QP solver sometimes stops at its optimum with balance rows off by more than HiGHS's 1e-7
        # and then reports a solve error, its point marked invalid (1 step in 96 of the 002 comparison: 5.8e-5 MW).
        # Accept that point when every row and column is within _ACCEPT_INFEASIBILITY (checked here); the AC power
        # flow evaluates the dispatch anyway.
        act = A @ x
        worst = max(
            float(np.max(np.maximum(row_bounds[0] - act, act - row_bounds[1]), initial=0.0)),
            float(np.max(np.maximum(col_bounds[0] - x, x - col_bounds[1]), initial=0.0)),
        )
        return x if worst <= _ACCEPT_INFEASIBILITY else None
