"""Weighted-least-squares state estimation and bad-data detection for the DSO, compiled once from a pandapower net.

The DSO sees the grid only through measurements. Every market step of a Monte Carlo campaign it estimates the
state from them and tests the result for bad data, so the estimator must be cheap. :class:`StateEstimator` builds
everything from pandapower's internal model *once* (``Ybus``, ``Yf``, ``Yt`` of the compile run, as
:class:`grids.powerflow.FastPowerFlow` does) and then solves each measurement snapshot with Gauss–Newton on plain
numpy arrays::

    ms = MeasurementSet.default(net)                 # V at substation and feeder ends, all injections, trunk flows
    se = StateEstimator(net, ms)
    z = se.measure(pf_result, rng)                   # true values of the power flow + Gaussian noise
    det = se.detect(z)                               # estimate, χ² test, rN identification behind the χ² gate
    det.flagged, det.suspect, det.result.vm_pu

pandapower's estimator (``pandapower.estimation.estimate``, 45–75 ms per call here) stays the reference: the tests
check that both reach the same estimate on the same measurements.

Model and conventions
---------------------
* State ``x = [θ of every non-slack bus (rad), |V| of every bus (pu)]`` in pandapower's internal bus order
  (:attr:`StateEstimator.va_buses` / :attr:`StateEstimator.vm_buses` give the pandapower bus of each entry).
  The slack angle(s) are fixed at the ext_grid set-point; the slack magnitude is estimated.
* Measurement vector, in this order (the order of :meth:`StateEstimator.h`, :meth:`measure` and residuals):
  ``|V|`` at ``v_buses`` [pu]; ``P`` at ``inj_buses`` [MW]; ``Q`` at ``inj_buses`` [MVAr]; ``P`` into each line of
  ``flow_lines`` at its from bus [MW]; ``Q`` likewise [MVAr]. Injections are **net injections into the grid**
  (generator convention: a load is negative), i.e. the opposite sign of a pandapower ``"bus"`` measurement and of
  ``net.res_bus.p_mw``; shunts (``net.shunt``) are part of the network model, not of the injections, as in
  pandapower's estimator. Flows have the sign of ``net.res_line.p_from_mw``.
* Jacobian ``H = ∂h/∂x`` in the same physical units (pu/rad, MW/rad, MW/pu, …); stealthy attacks ``a = H·c`` are
  therefore directly addable to ``z``.
* Weighted residual sum ``J(x̂) = Σ ((z − h(x̂)) / σ)²`` ~ χ²(m − n) on clean data (Gaussian noise, correct model).

Solver: Gauss–Newton ``G Δx = Hᵀ R⁻¹ r`` with ``G = Hᵀ R⁻¹ H``. The Cholesky factor of ``G`` is kept between
iterations and between calls and reused for a step only when that step is small (≤ ``reuse_below``) and contracts
(≤ ``refactor_ratio`` × the previous step); otherwise ``G`` is re-factored at the current iterate. The gradient is
always exact, so the fixed point is the exact WLS estimate (pandapower's to ≤ 1e-9 pu / rad on case33bw). Steps
are limited to 0.35 (pu / rad) as in pandapower. Each call starts from the last converged estimate (initially the
flat start). Convergence: largest state update ≤ ``tol``; a converged state with an implausible ``|V|``
(outside ``vm_plausible_pu``) is reported as not converged.

Two backends run the same algorithm: ``"numba"`` (default when importable — numba is a pinned dependency through
pandapower) runs the whole Gauss–Newton loop as one compiled kernel, with the states in reverse Cuthill–McKee order
so that the gain matrix's Cholesky factor only touches its envelope (≈2 k multiply-adds on case33bw instead of
≈46 k dense); ``"numpy"`` (LAPACK on the dense gain matrix, assembled from the nonzero pairs of each row of ``H``
because a dense ``Hᵀ W H`` product goes to multi-threaded BLAS, 10–30x slower on a busy 2-core machine) is the
fallback and the cross-check. Measured on case33bw (2-core shared dev machine, ``bench/bench_estimation.py``,
medians per 15-min step): fast power flow 160–230 µs, estimate + detect 50–75 µs with numba (≈ 31 % of the
power-flow step), 0.3–0.45 ms with numpy, 45–75 ms with pandapower's ``estimate``; rN identification (only on χ²
alarms) ≈ 0.1 ms more. The first use of the numba kernel in a fresh environment compiles it (≈ 4 s, then cached on
disk in ``grids/__pycache__``).

Detection: the χ² test on ``J`` first; only when it flags, the largest normalised residual
``r_N,i = |r_i| / sqrt(Ω_ii)``, ``Ω = R − H G⁻¹ Hᵀ`` at ``x̂``, identifies the suspect measurement (an rN
threshold of 3 alone flags a large share of clean snapshots when many measurements are tested; the χ² gate keeps
the false-alarm rate at α). Critical measurements (``Ω_ii ≈ 0``) get ``r_N = 0``: an error on them cannot be
detected by any residual test.

What the tests measure on case33bw with the default set (``tests/test_estimation.py``): χ² false alarms 1.7 % at
α = 1 % over 300 clean snapshots (mean J 46.1 for 46 degrees of freedom); ungated ``r_N > 3`` flags 21 % of clean
snapshots, gated 0 %. A stealthy ``a = H·c`` lowering the estimated |V| by 0.5 % at six buses passes χ² exactly as
often as clean data (0.8 % vs 0.8 %), while the same ‖a‖ as a random direction or as a bias on three injections is
detected in 100 % of 250 trials. ``a = H·c`` is stealthy only to first order: at a 2 % shift the AC residual exposes
it in 37 % of trials, while the AC form ``h(x + c) − h(x)`` stays at the clean rate. A single 20σ error is identified
by rN on trunk measurements; injections on a lateral monitored only at its head and end (lateral 25–32:
Ω_ii/σ² ≈ 0.11, nearly collinear residual sensitivities) are detected but blamed on a neighbour of the same lateral.

Limitations: the network model is frozen at construction (topology, parameters); only bus ``|V|``, bus ``P``/``Q``
injections and line from-side ``P``/``Q`` flows are modelled (no current magnitudes, angles/PMUs or trafo flows);
measurements are independent (diagonal ``R``); no zero-injection constraints (measure zero-injection buses as
injections with a small σ instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from scipy.sparse.csgraph import reverse_cuthill_mckee
from scipy.stats import chi2 as _chi2

from pandapower.auxiliary import pandapowerNet
from pandapower.pypower.idx_brch import F_BUS, T_BUS
from pandapower.pypower.idx_bus import VA
from pandapower.pypower.idx_gen import GEN_BUS, VG

from grids.powerflow import PowerFlowResult, _compile_run

__all__ = [
    "MeasurementSet",
    "StateEstimator",
    "EstimateResult",
    "Detection",
    "EstimationError",
    "NotObservableError",
]

#: Largest state update per Gauss–Newton step [pu or rad] (pandapower uses the same cap).
_MAX_STEP = 0.35
#: Ω_ii / σ_i² below this marks a critical measurement (residual identically ~0).
_CRITICAL_REL = 1e-8


class EstimationError(ValueError):
    """Bad estimator input: unknown/out-of-service element, wrong shape, NaN in a measurement vector."""


class NotObservableError(EstimationError):
    """The measurement set does not determine the state (rank-deficient gain matrix)."""


# ---------------------------------------------------------------------------------------------------------------
# compiled Gauss–Newton kernel (numba): one call per estimate, same algorithm as the numpy path

_STATUS_MESSAGE = ("", "no convergence in {max_iter} iterations",
                   "gain matrix singular at iteration {it} (measurement set not observable here)",
                   "diverged at iteration {it} (non-finite update)")

try:  # numba is a pinned dependency (pandapower uses it); the numpy path is the fallback and the cross-check
    import numba as _nb

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    _HAVE_NUMBA = False

if _HAVE_NUMBA:
    @_nb.njit(cache=True, nogil=True)
    def _nb_h(x, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, hx, V, W, S, B):
        """h(x) [pu] into hx; leaves V, W (Ybus terms), S (measured injections), B (flow terms) for the Jacobian."""
        for k in range(ref.shape[0]):
            j = ref[k]
            V[j] = x[nva + j] * np.exp(1j * va_ref[k])
        for k in range(nonref.shape[0]):
            j = nonref[k]
            V[j] = x[nva + j] * np.exp(1j * x[k])
        nv, ni, nf = vb.shape[0], ib.shape[0], fb.shape[0]
        for q in range(ni):
            S[q] = 0.0
        for e in range(er.shape[0]):
            w = V[er[e]] * eyc[e] * np.conj(V[ec[e]])
            W[e] = w
            S[eq[e]] += w
        for k in range(nv):
            hx[k] = x[nva + vb[k]]
        for q in range(ni):
            hx[nv + q] = S[q].real
            hx[nv + ni + q] = S[q].imag
        o = nv + 2 * ni
        for f in range(nf):
            vf = V[fb[f]]
            b = vf * np.conj(yft[f] * V[tb[f]])
            B[f] = b
            sf = (vf.real * vf.real + vf.imag * vf.imag) * np.conj(yff[f]) + b
            hx[o + f] = sf.real
            hx[o + nf + f] = sf.imag

    @_nb.njit(cache=True, nogil=True)
    def _nb_jac(x, nva, vb, ib, er, ec, eq, fb, tb, yff, col_th, H, W, S, B):
        """Jacobian values [pu] into the dense H (every pattern entry is overwritten; V rows are constant)."""
        nv, ni, nf = vb.shape[0], ib.shape[0], fb.shape[0]
        op, oq = nv, nv + ni
        for e in range(er.shape[0]):
            j = ec[e]
            q = eq[e]
            w = W[e]
            ct = col_th[j]
            if ct >= 0:
                H[op + q, ct] = w.imag
                H[oq + q, ct] = -w.real
            iv = 1.0 / x[nva + j]
            H[op + q, nva + j] = w.real * iv
            H[oq + q, nva + j] = w.imag * iv
        for q in range(ni):
            i = ib[q]
            s = S[q]
            ct = col_th[i]
            if ct >= 0:
                H[op + q, ct] -= s.imag
                H[oq + q, ct] += s.real
            iv = 1.0 / x[nva + i]
            H[op + q, nva + i] += s.real * iv
            H[oq + q, nva + i] += s.imag * iv
        opf, oqf = nv + 2 * ni, nv + 2 * ni + nf
        for f in range(nf):
            i, j = fb[f], tb[f]
            b = B[f]
            ci, cj = col_th[i], col_th[j]
            if ci >= 0:
                H[opf + f, ci] = -b.imag
                H[oqf + f, ci] = b.real
            if cj >= 0:
                H[opf + f, cj] = b.imag
                H[oqf + f, cj] = -b.real
            vi, vj = x[nva + i], x[nva + j]
            df = (2.0 * vi * vi * np.conj(yff[f]) + b) / vi
            dt = b / vj
            H[opf + f, nva + i] = df.real
            H[oqf + f, nva + i] = df.imag
            H[opf + f, nva + j] = dt.real
            H[oqf + f, nva + j] = dt.imag

    @_nb.njit(cache=True, nogil=True)
    def _nb_factor(H, w, rowptr, cols, pcols, first, L):
        """Gain ``G = Hᵀ diag(w) H`` in the fill-reducing state order and its envelope Cholesky factor (lower, in L).

        Row ``i`` of the permuted G and of its factor is zero left of ``first[i]`` (the envelope is preserved by
        Cholesky), so only the envelope is touched. Returns False when a pivot is ≤ 1e-12 of its diagonal
        (the measurements do not determine the state at this point).
        """
        n = L.shape[0]
        for i in range(n):
            for j in range(first[i], i + 1):
                L[i, j] = 0.0
        for k in range(H.shape[0]):
            wk = w[k]
            for a in range(rowptr[k], rowptr[k + 1]):
                pa = pcols[a]
                ha = wk * H[k, cols[a]]
                for b in range(rowptr[k], rowptr[k + 1]):
                    pb = pcols[b]
                    if pb <= pa:
                        L[pa, pb] += ha * H[k, cols[b]]
        for j in range(n):
            d = L[j, j]
            g0 = d
            for k in range(first[j], j):
                d -= L[j, k] * L[j, k]
            if not (d > 1e-12 * g0 and np.isfinite(d)):
                return False
            d = np.sqrt(d)
            L[j, j] = d
            for i in range(j + 1, n):
                fi = first[i]
                if fi > j:
                    continue
                s = L[i, j]
                for k in range(max(fi, first[j]), j):
                    s -= L[i, k] * L[j, k]
                L[i, j] = s / d
        return True

    @_nb.njit(cache=True, nogil=True)
    def _nb_solve(L, first, y):
        """In place: y <- (L Lᵀ)⁻¹ y for the envelope factor L."""
        n = L.shape[0]
        for i in range(n):
            s = y[i]
            for k in range(first[i], i):
                s -= L[i, k] * y[k]
            y[i] = s / L[i, i]
        for i in range(n - 1, -1, -1):
            xi = y[i] / L[i, i]
            y[i] = xi
            for k in range(first[i], i):
                y[k] -= L[i, k] * xi

    @_nb.njit(cache=True, nogil=True)
    def _nb_estimate(x, zp, w, tol, max_iter, refactor_ratio, reuse_below, max_step, L, have_L,
                     nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, col_th,
                     rowptr, cols, pcols, perm, first, H, hx, r):
        """Gauss–Newton WLS; returns (status, iterations, have_L, J).

        x (state), r (residuals, pu) and L (gain factor, reused across calls) are updated in place.
        status: 0 converged, 1 iteration limit, 2 singular gain matrix, 3 non-finite update.
        """
        n = x.shape[0]
        m = zp.shape[0]
        nb_ = n - nva
        V = np.empty(nb_, dtype=np.complex128)
        W = np.empty(er.shape[0], dtype=np.complex128)
        S = np.empty(ib.shape[0], dtype=np.complex128)
        B = np.empty(fb.shape[0], dtype=np.complex128)
        g = np.empty(n)
        g0 = np.empty(n)
        it = 0
        prev = np.inf
        while True:
            _nb_h(x, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, hx, V, W, S, B)
            for k in range(m):
                r[k] = zp[k] - hx[k]
            _nb_jac(x, nva, vb, ib, er, ec, eq, fb, tb, yff, col_th, H, W, S, B)
            fresh = False
            if not have_L:
                if not _nb_factor(H, w, rowptr, cols, pcols, first, L):
                    return 2, it, False, np.nan
                have_L = True
                fresh = True
            for c in range(n):
                g0[c] = 0.0
            for k in range(m):
                wr = w[k] * r[k]
                for a in range(rowptr[k], rowptr[k + 1]):
                    g0[pcols[a]] += H[k, cols[a]] * wr
            for c in range(n):
                g[c] = g0[c]
            _nb_solve(L, first, g)
            step = 0.0
            for c in range(n):
                step = max(step, abs(g[c]))
            if not fresh and not (step <= reuse_below and step <= refactor_ratio * prev):
                # the kept gain matrix is not good enough here: re-factor at x and solve again
                if not _nb_factor(H, w, rowptr, cols, pcols, first, L):
                    return 2, it, False, np.nan
                for c in range(n):
                    g[c] = g0[c]
                _nb_solve(L, first, g)
                step = 0.0
                for c in range(n):
                    step = max(step, abs(g[c]))
            if not np.isfinite(step):
                return 3, it, True, np.nan
            if step <= tol:
                # the last (sub-tolerance) update is applied too
                for c in range(n):
                    x[perm[c]] += g[c]
                _nb_h(x, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, hx, V, W, S, B)
                J = 0.0
                for k in range(m):
                    rk = zp[k] - hx[k]
                    r[k] = rk
                    J += w[k] * rk * rk
                return 0, it, True, J
            if it >= max_iter:
                return 1, it, True, np.nan
            sc = max_step / step if step > max_step else 1.0
            for c in range(n):
                x[perm[c]] += sc * g[c]
            it += 1
            prev = step

    @_nb.njit(cache=True, nogil=True)
    def _nb_omega(x, w, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, col_th,
                  rowptr, cols, pcols, first, L, H, hx, omega):
        """Residual variances Ω_kk = σ_k² − h_kᵀ G⁻¹ h_k at x (pu²) into omega; False if G is singular there."""
        n = x.shape[0]
        V = np.empty(n - nva, dtype=np.complex128)
        W = np.empty(er.shape[0], dtype=np.complex128)
        S = np.empty(ib.shape[0], dtype=np.complex128)
        B = np.empty(fb.shape[0], dtype=np.complex128)
        _nb_h(x, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, hx, V, W, S, B)
        _nb_jac(x, nva, vb, ib, er, ec, eq, fb, tb, yff, col_th, H, W, S, B)
        if not _nb_factor(H, w, rowptr, cols, pcols, first, L):
            return False
        y = np.zeros(n)
        for k in range(H.shape[0]):
            lo = n
            for a in range(rowptr[k], rowptr[k + 1]):
                y[pcols[a]] = H[k, cols[a]]
                lo = min(lo, pcols[a])
            q = 0.0
            for i in range(lo, n):          # forward solve L y = h_k (sparse right-hand side starts at lo)
                s = y[i]
                for j in range(max(first[i], lo), i):
                    s -= L[i, j] * y[j]
                s /= L[i, i]
                y[i] = s
                q += s * s
            for i in range(lo, n):
                y[i] = 0.0
            omega[k] = 1.0 / w[k] - q
        return True


# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeasurementSet:
    """Which quantities the DSO measures, and how accurately.

    Attributes:
        v_buses: pandapower bus indices with a voltage-magnitude measurement.
        inj_buses: pandapower bus indices with a net P and Q injection measurement.
        flow_lines: pandapower line indices with P and Q flow measurements at the from-bus end.
        sigma_v_pu: standard deviation of a voltage-magnitude measurement [pu]. Default 0.004 pu (0.4 %), the
            usual figure for SCADA voltage channels in state-estimation studies.
        sigma_p_mw: standard deviation of an active-power injection or flow measurement [MW]. Default 0.005 MW
            (5 kW: about 2–8 % of a case33bw bus load, i.e. metered/aggregated feeder data, not pseudo-measurements).
        sigma_q_mvar: standard deviation of a reactive-power injection or flow measurement [MVAr]. Default 0.005.
    """

    v_buses: np.ndarray
    inj_buses: np.ndarray
    flow_lines: np.ndarray
    sigma_v_pu: float = 0.004
    sigma_p_mw: float = 0.005
    sigma_q_mvar: float = 0.005

    def __post_init__(self) -> None:
        for name in ("v_buses", "inj_buses", "flow_lines"):
            a = np.asarray(getattr(self, name))
            if a.size == 0:
                a = np.zeros(0, dtype=np.int64)
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise EstimationError(f"MeasurementSet.{name} must be a 1-D integer array, got {a!r}")
            if len(np.unique(a)) != len(a):
                raise EstimationError(f"MeasurementSet.{name} has duplicate entries: {a.tolist()}")
            a = a.astype(np.int64)
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        for name in ("sigma_v_pu", "sigma_p_mw", "sigma_q_mvar"):
            s = getattr(self, name)
            if not (np.isfinite(s) and s > 0):
                raise EstimationError(f"MeasurementSet.{name} must be a positive finite number, got {s!r}")
            object.__setattr__(self, name, float(s))

    @property
    def n_meas(self) -> int:
        """Number of scalar measurements m = n_v + 2 n_inj + 2 n_flow."""
        return len(self.v_buses) + 2 * len(self.inj_buses) + 2 * len(self.flow_lines)

    @property
    def sigma(self) -> np.ndarray:
        """Standard deviation of every measurement, in measurement order [pu | MW | MVAr], shape (m,)."""
        ni, nf = len(self.inj_buses), len(self.flow_lines)
        return np.concatenate([np.full(len(self.v_buses), self.sigma_v_pu), np.full(ni, self.sigma_p_mw),
                               np.full(ni, self.sigma_q_mvar), np.full(nf, self.sigma_p_mw),
                               np.full(nf, self.sigma_q_mvar)])

    @property
    def labels(self) -> list[str]:
        """Human-readable name of every measurement, in measurement order (``"P inj bus 7"``, …)."""
        return ([f"V bus {b}" for b in self.v_buses] + [f"P inj bus {b}" for b in self.inj_buses]
                + [f"Q inj bus {b}" for b in self.inj_buses] + [f"P flow line {k}" for k in self.flow_lines]
                + [f"Q flow line {k}" for k in self.flow_lines])

    @classmethod
    def default(cls, net: pandapowerNet, **sigmas: float) -> "MeasurementSet":
        """A redundant, observable measurement set for a radial feeder.

        * ``|V|`` at the substation (ext_grid buses) and at every feeder end (in-service buses with one branch);
        * ``P``/``Q`` injections at every in-service bus (substation: the ext_grid's import);
        * ``P``/``Q`` flows on the main trunk (the in-service lines of the longest path, in branches, from the
          substation) and on the first line of every lateral leaving it.

        On case33bw: 5 V + 66 injection + 40 flow = 111 measurements for 65 states (χ² with 46 degrees of
        freedom). Branch topology uses in-service lines and trafos (a meshed net gets its BFS spanning tree's
        longest path as the "trunk").

        Args:
            net: pandapower network.
            **sigmas: ``sigma_v_pu``, ``sigma_p_mw``, ``sigma_q_mvar`` overrides.

        Returns:
            The measurement set.
        """
        buses = net.bus.index[net.bus["in_service"].astype(bool)].to_numpy(np.int64)
        on = set(buses.tolist())
        edges: list[tuple[int, int, int]] = []       # (from, to, line index or -1 for trafos)
        ln = net.line[net.line["in_service"].astype(bool)]
        for k, f, t in zip(ln.index, ln["from_bus"], ln["to_bus"]):
            if f in on and t in on:
                edges.append((int(f), int(t), int(k)))
        if "trafo" in net and len(net.trafo):
            tr = net.trafo[net.trafo["in_service"].astype(bool)]
            for f, t in zip(tr["hv_bus"], tr["lv_bus"]):
                if f in on and t in on:
                    edges.append((int(f), int(t), -1))
        adj: dict[int, list[tuple[int, int]]] = {b: [] for b in on}
        for f, t, k in edges:
            adj[f].append((t, k))
            adj[t].append((f, k))
        eg = net.ext_grid[net.ext_grid["in_service"].astype(bool)]
        slack = [int(b) for b in eg["bus"] if int(b) in on]
        if not slack:
            raise EstimationError("MeasurementSet.default: the net has no in-service ext_grid (no substation)")
        # BFS spanning tree from the substation(s)
        parent: dict[int, tuple[int, int]] = {}
        depth = {b: 0 for b in slack}
        queue = list(slack)
        for b in queue:
            for nb, k in adj[b]:
                if nb not in depth:
                    depth[nb] = depth[b] + 1
                    parent[nb] = (b, k)
                    queue.append(nb)
        far = max(depth, key=lambda b: (depth[b], -b))
        trunk_buses = [far]
        trunk_lines: list[int] = []
        while trunk_buses[-1] in parent:
            p, k = parent[trunk_buses[-1]]
            if k >= 0:
                trunk_lines.append(k)
            trunk_buses.append(p)
        on_trunk = set(trunk_buses)
        heads = [k for b, (p, k) in parent.items() if p in on_trunk and b not in on_trunk and k >= 0]
        ends = [b for b in on if len(adj[b]) == 1 and b not in slack]
        v_buses = np.array(sorted(set(slack) | set(ends)), dtype=np.int64)
        flow_lines = np.array(sorted(set(trunk_lines) | set(heads)), dtype=np.int64)
        return cls(v_buses=v_buses, inj_buses=np.sort(buses), flow_lines=flow_lines, **sigmas)


@dataclass(frozen=True)
class EstimateResult:
    """One state estimate.

    Attributes:
        converged: whether the largest state update fell below the tolerance within ``max_iter`` iterations.
        iterations: Gauss–Newton iterations performed (state updates).
        vm_pu: estimated voltage magnitudes in ``net.bus.index`` order [pu] (NaN: bus outside the calculation).
        va_rad: estimated voltage angles in ``net.bus.index`` order [rad].
        residuals: ``r = z − h(x̂)`` in measurement order [pu | MW | MVAr], shape (m,) (NaN if not converged).
        objective: ``J(x̂) = Σ (r_i / σ_i)²`` [-] (NaN if not converged).
        x: estimated state vector (see module docstring), shape (n,).
        message: ``""`` when converged, else why not (iteration limit, singular gain matrix, divergence).
    """

    converged: bool
    iterations: int
    vm_pu: np.ndarray
    va_rad: np.ndarray
    residuals: np.ndarray
    objective: float
    x: np.ndarray
    message: str = ""

    @property
    def va_degree(self) -> np.ndarray:
        """Estimated voltage angles in ``net.bus.index`` order [degree]."""
        return np.rad2deg(self.va_rad)


@dataclass(frozen=True)
class Detection:
    """Outcome of :meth:`StateEstimator.detect` for one measurement snapshot.

    Attributes:
        flagged: bad data declared: the χ² test flags, or the estimate did not converge (data the DSO cannot
            validate count as an alarm).
        chi2_flagged: ``J > threshold``.
        objective: ``J(x̂)`` [-] (NaN when not converged).
        threshold: χ² threshold ``chi2.ppf(1 − alpha, m − n)`` [-].
        rn_max: largest normalised residual (NaN unless the χ² test flagged).
        suspect: measurement index with the largest normalised residual when ``rn_max > rn_threshold``, else -1.
        suspect_label: that measurement's label (``""`` when none).
        converged: whether the estimate converged.
        result: the underlying estimate.
    """

    flagged: bool
    chi2_flagged: bool
    objective: float
    threshold: float
    rn_max: float
    suspect: int
    suspect_label: str
    converged: bool
    result: EstimateResult = field(repr=False)


# ---------------------------------------------------------------------------------------------------------------
class StateEstimator:
    """AC weighted-least-squares state estimator with χ² / largest-normalised-residual bad-data tests.

    Construction deep-copies the net, runs pandapower once (loads switched off; only the admittance matrices are
    used) and precomputes index maps of ``h(x)`` and of the Jacobian's sparsity pattern. Observability is checked
    at the flat start: a rank-deficient gain matrix raises :class:`NotObservableError`.
    """

    #: A kept (not freshly factored) gain matrix is used for a step only if that step is at most this factor of
    #: the previous step ...
    refactor_ratio: float = 0.25
    #: ... and at most this large [pu or rad]; otherwise the gain is re-factored at the current iterate.
    reuse_below: float = 1e-3
    #: A converged estimate with any |V| outside this open interval [pu] is reported as not converged (e.g. an
    #: all-zero measurement vector from a dead telemetry feed fits the zero-voltage state exactly).
    vm_plausible_pu: tuple[float, float] = (0.5, 1.5)

    def __init__(self, net: pandapowerNet, ms: MeasurementSet, *, tol: float = 1e-8, max_iter: int = 20,
                 backend: str = "auto") -> None:
        """Compile the estimator.

        Args:
            net: pandapower network (not modified).
            ms: measurement set (pandapower bus/line indices).
            tol: convergence tolerance on the largest state update [pu or rad].
            max_iter: maximum Gauss–Newton iterations per estimate.
            backend: ``"numba"`` (the Gauss–Newton loop as one compiled kernel, ≈10x faster; the first use in a
                process compiles it or loads it from numba's on-disk cache), ``"numpy"`` (plain numpy; reference
                and fallback) or ``"auto"`` (numba when importable).

        Raises:
            EstimationError: invalid tolerance/iterations, unknown or out-of-service measured element, two
                injection measurements on buses fused into one (closed bus-bus switch).
            NotObservableError: fewer measurements than states, or a rank-deficient gain matrix.
        """
        if not (tol > 0 and np.isfinite(tol)):
            raise EstimationError(f"tol must be a positive finite number, got {tol!r}")
        if int(max_iter) < 1:
            raise EstimationError(f"max_iter must be >= 1, got {max_iter!r}")
        if backend not in ("auto", "numba", "numpy"):
            raise EstimationError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
        if backend == "numba" and not _HAVE_NUMBA:
            raise EstimationError("backend='numba' requested but numba is not importable")
        self.backend = "numba" if backend == "auto" and _HAVE_NUMBA else ("numpy" if backend == "auto" else backend)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.ms = ms

        net_c, _ = _compile_run(net, max_iteration=50)
        internal = net_c._ppc["internal"]
        base = float(internal["baseMVA"])
        self._base = base
        nb = int(internal["bus"].shape[0])
        self._nb = nb
        ref = np.unique(np.asarray(internal["ref"], dtype=np.int64))
        nonref = np.setdiff1d(np.arange(nb), ref)
        self._ref, self._nonref = ref, nonref
        nva = len(nonref)
        self._nva = nva
        n = nva + nb
        self._n = n
        col_th = np.full(nb, -1, dtype=np.int64)
        col_th[nonref] = np.arange(nva)
        col_vm = nva + np.arange(nb)

        # slack set-points (angle reference; magnitude is only the flat-start value)
        gen = np.real(internal["gen"])
        bus = np.real(internal["bus"])
        vg = np.ones(nb)
        vg[gen[:, GEN_BUS].astype(np.int64)] = gen[:, VG]
        self._va_ref = np.deg2rad(bus[ref, VA])
        self._flat_vm = np.ones(nb)
        self._flat_vm[ref] = vg[ref]
        self._flat_va = np.zeros(nb)
        self._flat_va[ref] = self._va_ref
        self._flat_va[nonref] = self._va_ref.mean() if len(ref) else 0.0

        # --- bus lookup: net.bus position <-> internal ------------------------------------------------------------
        lookup = np.asarray(net_c._pd2ppc_lookups["bus"], dtype=np.int64)
        bus_idx = net_c.bus.index.to_numpy(np.int64)
        self._bus_index = bus_idx
        lk = np.full(len(bus_idx), -1, dtype=np.int64)
        inside = (bus_idx >= 0) & (bus_idx < len(lookup))
        lk[inside] = lookup[bus_idx[inside]]
        valid = (lk >= 0) & (lk < nb)
        self._bus_src = np.flatnonzero(valid)          # net.bus positions in the calculation
        self._bus_dst = lk[valid]                      # ... their internal bus
        self._bus_identity = (len(bus_idx) == nb and bool(valid.all())
                              and np.array_equal(self._bus_dst, np.arange(nb)))
        first = np.full(nb, -1, dtype=np.int64)        # internal bus -> a pandapower bus index (first mapped)
        for s, d in zip(self._bus_src[::-1], self._bus_dst[::-1]):
            first[d] = bus_idx[s]
        self.va_buses = first[nonref]                  # pandapower bus of each angle state
        self.vm_buses = first.copy()                   # pandapower bus of each magnitude state
        pos_of = {int(b): i for i, b in enumerate(bus_idx)}

        def internal_bus(b: int, what: str) -> int:
            p = pos_of.get(int(b))
            if p is None:
                raise EstimationError(f"{what}: bus {b} is not in net.bus")
            if not valid[p]:
                raise EstimationError(f"{what}: bus {b} is out of service or isolated (not in the calculation)")
            return int(lk[p])

        vb = np.array([internal_bus(b, "v_buses") for b in ms.v_buses], dtype=np.int64)
        ib = np.array([internal_bus(b, "inj_buses") for b in ms.inj_buses], dtype=np.int64)
        if len(np.unique(ib)) != len(ib):
            dup = [int(b) for b, i in zip(ms.inj_buses, ib) if (ib == i).sum() > 1]
            raise EstimationError(f"inj_buses: buses {dup} are fused into one node (closed bus-bus switches); "
                                  "measure the injection of one of them only")
        # --- measured lines -> internal branch rows ----------------------------------------------------------------
        branch = internal["branch"]
        branch_is = np.asarray(internal["branch_is"], dtype=bool)
        ppci_row = np.cumsum(branch_is) - 1
        rng_line = net_c._pd2ppc_lookups["branch"].get("line")
        line_pos = {int(k): i for i, k in enumerate(net_c.line.index)}
        rows = []
        for k in ms.flow_lines:
            p = line_pos.get(int(k))
            if p is None or rng_line is None:
                raise EstimationError(f"flow_lines: line {k} is not in net.line")
            j = rng_line[0] + p
            if not branch_is[j]:
                raise EstimationError(f"flow_lines: line {k} is out of service (or isolated)")
            rows.append(int(ppci_row[j]))
        br = np.array(rows, dtype=np.int64)
        fb = np.real(branch[br, F_BUS]).astype(np.int64) if len(br) else np.zeros(0, np.int64)
        tb = np.real(branch[br, T_BUS]).astype(np.int64) if len(br) else np.zeros(0, np.int64)
        Yf = sp.csr_matrix(internal["Yf"])
        self._yff = np.asarray(Yf[br, fb]).ravel().astype(np.complex128) if len(br) else np.zeros(0, complex)
        self._yft = np.asarray(Yf[br, tb]).ravel().astype(np.complex128) if len(br) else np.zeros(0, complex)
        self._fb, self._tb = fb, tb

        nv, ni, nf = len(vb), len(ib), len(br)
        m = nv + 2 * ni + 2 * nf
        self._vb, self._ib = vb, ib
        self._nv, self._ni, self._nf, self._m = nv, ni, nf, m
        self._o_p, self._o_q = nv, nv + ni
        self._o_pf, self._o_qf = nv + 2 * ni, nv + 2 * ni + nf
        # physical scale of each measurement (pu -> pu/MW/MVAr) and weights in pu
        scale = np.concatenate([np.ones(nv), np.full(2 * ni + 2 * nf, base)])
        self._scale = scale
        self._sigma = ms.sigma
        self._sigma_pu = self._sigma / scale
        self._w = 1.0 / self._sigma_pu ** 2
        self.labels = ms.labels
        if m < n:
            raise NotObservableError(f"{m} measurements cannot determine {n} states (need at least {n}); "
                                     "add measurements")

        # --- injection pattern: Ybus entries of the measured rows (every diagonal included) -------------------------
        Y = sp.csr_matrix(internal["Ybus"]).tocoo()
        Y.sum_duplicates()
        r0, c0, y0 = Y.row.astype(np.int64), Y.col.astype(np.int64), Y.data.astype(np.complex128)
        missing = np.setdiff1d(np.arange(nb), r0[r0 == c0])
        if len(missing):
            r0 = np.concatenate([r0, missing])
            c0 = np.concatenate([c0, missing])
            y0 = np.concatenate([y0, np.zeros(len(missing), complex)])
        qpos = np.full(nb, -1, dtype=np.int64)
        qpos[ib] = np.arange(ni)
        keep = qpos[r0] >= 0
        er, ec, ey = r0[keep], c0[keep], y0[keep]
        eq = qpos[er]
        self._er, self._ec, self._eyc, self._eq = er, ec, np.conj(ey), eq

        # --- Jacobian pattern (dense H, C order): flat positions of every value group -------------------------------
        def flat(row: np.ndarray, col: np.ndarray) -> np.ndarray:
            return (row * n + col).astype(np.int64)

        th_e = np.flatnonzero(col_th[ec] >= 0)          # injection entries with an angle state column
        self._th_e = th_e
        p_rows, q_rows = self._o_p + eq, self._o_q + eq
        pos_inj = np.concatenate([flat(p_rows[th_e], col_th[ec[th_e]]), flat(q_rows[th_e], col_th[ec[th_e]]),
                                  flat(p_rows, col_vm[ec]), flat(q_rows, col_vm[ec])])
        # diagonal corrections: θ_i (if non-ref) and |V_i| of the measured bus i
        d_bus = ib
        d_th = np.flatnonzero(col_th[d_bus] >= 0)
        self._d_th = d_th
        q_ar = np.arange(ni)
        pos_diag = np.concatenate([flat(self._o_p + q_ar[d_th], col_th[d_bus[d_th]]),
                                   flat(self._o_q + q_ar[d_th], col_th[d_bus[d_th]]),
                                   flat(self._o_p + q_ar, col_vm[d_bus]), flat(self._o_q + q_ar, col_vm[d_bus])])
        # flows
        f_ar = np.arange(nf)
        f_th = np.flatnonzero(col_th[fb] >= 0)
        t_th = np.flatnonzero(col_th[tb] >= 0)
        self._f_th, self._t_th = f_th, t_th
        pf_rows, qf_rows = self._o_pf + f_ar, self._o_qf + f_ar
        pos_flow = np.concatenate([
            flat(pf_rows[f_th], col_th[fb[f_th]]), flat(qf_rows[f_th], col_th[fb[f_th]]),
            flat(pf_rows[t_th], col_th[tb[t_th]]), flat(qf_rows[t_th], col_th[tb[t_th]]),
            flat(pf_rows, col_vm[fb]), flat(qf_rows, col_vm[fb]),
            flat(pf_rows, col_vm[tb]), flat(qf_rows, col_vm[tb])])
        self._pos_main = np.concatenate([pos_inj, pos_flow])
        self._pos_diag = pos_diag
        pos_v = flat(np.arange(nv), col_vm[vb])
        self._H = np.zeros((m, n))
        self._H.flat[pos_v] = 1.0   # ∂|V|/∂|V| (constant)
        self._hx = np.empty(m)
        # CSR pattern of H (row pointers, column indices) for the compiled gain matrix and gradient
        pattern = np.zeros(m * n, dtype=bool)
        pattern[np.concatenate([pos_v, self._pos_main, pos_diag])] = True
        pr, pc = np.divmod(np.flatnonzero(pattern), n)
        self._rowptr = np.searchsorted(pr, np.arange(m + 1)).astype(np.int64)
        self._cols = pc.astype(np.int64)
        self._col_th = col_th
        # fill-reducing (reverse Cuthill–McKee) state order for the compiled envelope Cholesky of the gain matrix
        hp = sp.csr_matrix((np.ones(len(pc)), (pr, pc)), shape=(m, n))
        gp = (hp.T @ hp).tocsr()
        perm = np.asarray(reverse_cuthill_mckee(gp, symmetric_mode=True), dtype=np.int64)
        iperm = np.empty(n, dtype=np.int64)
        iperm[perm] = np.arange(n)
        gpc = gp.tocoo()
        first = np.arange(n, dtype=np.int64)
        np.minimum.at(first, iperm[gpc.row], iperm[gpc.col])
        self._perm, self._first, self._pcols = perm, first, iperm[self._cols]
        # numpy path: G = Σ_k w_k h_k h_kᵀ over the nonzero pairs of each row of H (a dense Hᵀ W H product would
        # go to multi-threaded BLAS, which is 10-20x slower than single-threaded on a busy 2-core machine)
        counts = np.diff(self._rowptr)
        pk = np.repeat(np.arange(m), counts ** 2)
        starts = np.repeat(self._rowptr[:-1], counts ** 2)
        within = np.arange(len(pk)) - np.repeat(np.cumsum(counts ** 2) - counts ** 2, counts ** 2)
        ia = starts + within // np.repeat(counts, counts ** 2)
        ib_ = starts + within % np.repeat(counts, counts ** 2)
        ca, cb = self._cols[ia], self._cols[ib_]
        self._g_flat_a = pr[ia] * n + ca                   # flat positions in H of both factors
        self._g_flat_b = pr[ib_] * n + cb
        self._g_w = pk
        self._g_pos = ca * n + cb                           # flat position in G

        self._potrf = lapack.get_lapack_funcs("potrf", (np.zeros((1, 1)),))
        self._potrs = lapack.get_lapack_funcs("potrs", (np.zeros((1, 1)),))
        self._potri = lapack.get_lapack_funcs("potri", (np.zeros((1, 1)),))
        self._chi2_cache: dict[tuple[float, int], float] = {}

        # --- observability at the flat start ------------------------------------------------------------------------
        x_flat = self._x_from_int(self._flat_vm, self._flat_va)
        self._x_flat = x_flat
        cf, H = self._factor(x_flat)
        if cf is None:
            raise NotObservableError(self._unobservable_message((H.T * self._w) @ H))
        self._x_warm = x_flat.copy()
        self._cf: np.ndarray | None = None                    # numpy path: reused gain factor (upper)
        self._L = np.zeros((n, n))                            # numba path: reused gain factor (lower)
        self._have_L = False
        self._r = np.empty(m)
        if self.backend == "numba":
            self._model_args = (nva, ref, self._va_ref, nonref, vb, ib, self._er, self._ec, self._eyc, self._eq,
                                fb, tb, self._yff, self._yft, col_th, self._rowptr, self._cols, self._pcols)
            self._omega = np.empty(m)
            self._nb_buf = (np.empty(nb, complex), np.empty(len(self._er), complex), np.empty(ni, complex),
                            np.empty(nf, complex))

    # ------------------------------------------------------------------------------------------------------------
    def _unobservable_message(self, G: np.ndarray) -> str:
        """Name the states that the measurement set leaves undetermined (null space of the gain matrix)."""
        d = np.sqrt(np.maximum(np.diag(G), 1e-300))
        Gs = G / d[:, None] / d[None, :]
        w, v = np.linalg.eigh(Gs)
        null = v[:, w < 1e-9 * max(w.max(), 1e-300)]
        weak = np.flatnonzero(np.abs(null).max(axis=1) > 1e-3) if null.size else np.arange(0)
        names = [self.state_label(int(k)) for k in weak[:8]]
        return (f"measurement set is not observable: {max(null.shape[1], 1)} undetermined state direction(s); "
                f"states involved: {', '.join(names) or 'unknown'}{' …' if len(weak) > 8 else ''}")

    def state_label(self, k: int) -> str:
        """Name of state entry ``k`` (``"θ bus 5"`` or ``"|V| bus 5"``, pandapower bus indices)."""
        if k < self._nva:
            return f"θ bus {self.va_buses[k]}"
        return f"|V| bus {self.vm_buses[k - self._nva]}"

    @property
    def n_meas(self) -> int:
        """Number of measurements m."""
        return self._m

    @property
    def n_states(self) -> int:
        """Number of states n (non-slack angles + all magnitudes)."""
        return self._n

    @property
    def sigma(self) -> np.ndarray:
        """Measurement standard deviations in measurement order [pu | MW | MVAr] (copy)."""
        return self._sigma.copy()

    def reset_warm_start(self) -> None:
        """Forget the last estimate and gain factor; the next call starts from the flat start."""
        self._x_warm = self._x_flat.copy()
        self._cf = None
        self._have_L = False

    # --- conversions ---------------------------------------------------------------------------------------------
    def _x_from_int(self, vm_int: np.ndarray, va_int: np.ndarray) -> np.ndarray:
        return np.concatenate([va_int[self._nonref], vm_int])

    def _int_from_x(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        va = np.empty(self._nb)
        va[self._ref] = self._va_ref
        va[self._nonref] = x[:self._nva]
        return x[self._nva:], va

    def _int_from_bus(self, vm_pu: Any, va_rad: Any) -> tuple[np.ndarray, np.ndarray]:
        n_bus = len(self._bus_index)
        vm = np.asarray(vm_pu, dtype=np.float64)
        va = np.asarray(va_rad, dtype=np.float64)
        if vm.shape != (n_bus,) or va.shape != (n_bus,):
            raise EstimationError(f"vm_pu and va_rad must have shape ({n_bus},) (net.bus order), "
                                  f"got {vm.shape} and {va.shape}")
        vi = np.empty(self._nb)
        ai = np.empty(self._nb)
        vi[self._bus_dst] = vm[self._bus_src]
        ai[self._bus_dst] = va[self._bus_src]
        if not (np.isfinite(vi).all() and np.isfinite(ai).all()):
            raise EstimationError("vm_pu/va_rad contain NaN/inf at buses in the calculation")
        return vi, ai

    def _bus_from_int(self, vm_int: np.ndarray, va_int: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_bus = len(self._bus_index)
        vm = np.full(n_bus, np.nan)
        va = np.full(n_bus, np.nan)
        vm[self._bus_src] = vm_int[self._bus_dst]
        va[self._bus_src] = va_int[self._bus_dst]
        return vm, va

    def state(self, vm_pu: np.ndarray, va_rad: np.ndarray) -> np.ndarray:
        """State vector of bus voltages given in ``net.bus.index`` order.

        Args:
            vm_pu: voltage magnitudes [pu], shape (n_bus,).
            va_rad: voltage angles [rad], shape (n_bus,) (slack entries are ignored: the reference is fixed).

        Returns:
            ``x = [θ non-slack (rad), |V| (pu)]``, shape (n,).
        """
        vi, ai = self._int_from_bus(vm_pu, va_rad)
        return self._x_from_int(vi, ai)

    def voltages(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bus voltages ``(vm_pu, va_rad)`` in ``net.bus.index`` order of a state vector (inverse of :meth:`state`)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self._n,):
            raise EstimationError(f"state vector must have shape ({self._n},), got {x.shape}")
        vm, va = self._int_from_x(x)
        return self._bus_from_int(vm, va)

    # --- model ---------------------------------------------------------------------------------------------------
    def _h_int(self, x: np.ndarray) -> np.ndarray:
        """h(x) in per unit (internal), with W, S and flow terms cached for the Jacobian of the same x."""
        vm, va = self._int_from_x(x)
        V = vm * np.exp(1j * va)
        W = V[self._er] * self._eyc * np.conj(V[self._ec])
        ni = self._ni
        P = np.bincount(self._eq, weights=W.real, minlength=ni)
        Q = np.bincount(self._eq, weights=W.imag, minlength=ni)
        Vf = V[self._fb]
        B = Vf * np.conj(self._yft * V[self._tb])
        vmf = vm[self._fb]
        A = vmf * vmf * np.conj(self._yff)
        Sf = A + B
        hx = self._hx
        hx[:self._nv] = vm[self._vb]
        hx[self._o_p:self._o_q] = P
        hx[self._o_q:self._o_pf] = Q
        hx[self._o_pf:self._o_qf] = Sf.real
        hx[self._o_qf:] = Sf.imag
        self._cache = (x, vm, W, P, Q, A, B, vmf)
        return hx

    def _jac_int(self, x: np.ndarray) -> np.ndarray:
        """Jacobian of h in per unit at x (dense, shared buffer)."""
        c = getattr(self, "_cache", None)
        if c is None or c[0] is not x:
            self._h_int(x)
            c = self._cache
        _, vm, W, P, Q, A, B, vmf = c
        Wr, Wi = W.real, W.imag
        ivm = 1.0 / vm
        ivj = ivm[self._ec]
        th = self._th_e
        Br, Bi = B.real, B.imag
        ivf = 1.0 / vmf
        ivt = ivm[self._tb]
        Df = (2.0 * A + B) * ivf
        Dt = B * ivt
        ft, tt = self._f_th, self._t_th
        vals = np.concatenate([Wi[th], -Wr[th], Wr * ivj, Wi * ivj,
                               -Bi[ft], Br[ft], Bi[tt], -Br[tt],
                               Df.real, Df.imag, Dt.real, Dt.imag])
        H = self._H
        H.flat[self._pos_main] = vals
        d = self._d_th
        ivb = ivm[self._ib]
        H.flat[self._pos_diag] += np.concatenate([-Q[d], P[d], P * ivb, Q * ivb])
        return H

    def h(self, vm_pu: np.ndarray, va_rad: np.ndarray) -> np.ndarray:
        """Measurement function: the measured quantities at given bus voltages.

        Args:
            vm_pu: voltage magnitudes in ``net.bus.index`` order [pu].
            va_rad: voltage angles in ``net.bus.index`` order [rad].

        Returns:
            ``h(x)`` in measurement order [pu | MW | MVAr], shape (m,).
        """
        x = self.state(vm_pu, va_rad)
        if self.backend == "numba":
            hx = np.empty(self._m)
            _nb_h(x, *self._model_args[:14], hx, *self._nb_buf)
            return hx * self._scale
        return self._h_int(x) * self._scale

    def jacobian(self, vm_pu: np.ndarray, va_rad: np.ndarray) -> np.ndarray:
        """Measurement Jacobian ``H = ∂h/∂x`` at given bus voltages.

        Args:
            vm_pu: voltage magnitudes in ``net.bus.index`` order [pu].
            va_rad: voltage angles in ``net.bus.index`` order [rad].

        Returns:
            ``H``, shape (m, n): rows in measurement order, columns ``[θ non-slack, |V| all]``, in physical units
            (pu/rad, pu/pu, MW/rad, MW/pu, MVAr/rad, MVAr/pu).
        """
        x = self.state(vm_pu, va_rad)
        return self._jac_int(x) * self._scale[:, None]

    def linear_h(self, vm_pu: np.ndarray | None = None, va_rad: np.ndarray | None = None) -> np.ndarray:
        """Linearised measurement model ``H`` for ``a = H·c`` attacks.

        Args:
            vm_pu: operating point magnitudes in ``net.bus.index`` order [pu]; default: flat start.
            va_rad: operating point angles [rad]; default: flat start.

        Returns:
            ``H`` at the operating point (at the flat start — |V| = set-point/1 pu, θ = slack angle — the AC
            Jacobian is the classic linearised/"DC-like" model extended to |V| and Q), shape (m, n), physical units.
        """
        if (vm_pu is None) != (va_rad is None):
            raise EstimationError("give both vm_pu and va_rad, or neither (flat start)")
        if vm_pu is None:
            return self._jac_int(self._x_flat.copy()) * self._scale[:, None]
        return self.jacobian(vm_pu, va_rad)

    # --- measurements and attacks ---------------------------------------------------------------------------------
    def measure(self, pf: PowerFlowResult | tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
                *, noise: bool = True) -> np.ndarray:
        """Measurements of a true operating point: ``h(x_true)`` plus independent Gaussian noise.

        Args:
            pf: a converged :class:`PowerFlowResult`, or ``(vm_pu, va_degree)`` arrays in ``net.bus.index`` order.
            rng: random generator of the noise.
            noise: add noise (``False``: the exact values).

        Returns:
            ``z`` in measurement order [pu | MW | MVAr], shape (m,).

        Raises:
            EstimationError: the power flow did not converge, or wrong shapes / non-finite voltages.
        """
        if isinstance(pf, PowerFlowResult):
            if not pf.converged:
                raise EstimationError("cannot measure a power flow that did not converge")
            vm, va_deg = pf.vm_pu, pf.va_degree
        else:
            vm, va_deg = pf
        z = self.h(np.asarray(vm, float), np.deg2rad(np.asarray(va_deg, float)))
        if noise:
            z = z + rng.standard_normal(self._m) * self._sigma
        return z

    def stealthy_attack(self, vm_pu: np.ndarray, va_rad: np.ndarray, c: np.ndarray, *,
                        form: str = "ac") -> np.ndarray:
        """False-data vector that shifts the estimate by ``c`` without changing the residuals (to first order).

        Args:
            vm_pu: operating point the attacker knows, magnitudes in ``net.bus.index`` order [pu].
            va_rad: its angles [rad].
            c: state shift, shape (n,) in state order ``[θ non-slack (rad), |V| (pu)]``.
            form: ``"linear"``: ``a = H(x)·c`` (stealthy for the linearised model; against the AC estimator the
                residuals grow with ``‖c‖²``); ``"ac"``: ``a = h(x + c) − h(x)`` (exactly consistent with the AC
                model: the estimate moves by ``c`` and the residuals are those of clean data).

        Returns:
            ``a`` in measurement order [pu | MW | MVAr], shape (m,), to be added to ``z``.
        """
        c = np.asarray(c, dtype=np.float64)
        if c.shape != (self._n,):
            raise EstimationError(f"c must have shape ({self._n},) (state order), got {c.shape}")
        x = self.state(vm_pu, va_rad)
        if form == "linear":
            return (self._jac_int(x) @ c) * self._scale
        if form == "ac":
            h0 = self._h_int(x).copy()
            return (self._h_int(x + c) - h0) * self._scale
        raise EstimationError(f"form must be 'ac' or 'linear', got {form!r}")

    # --- estimation ------------------------------------------------------------------------------------------------
    def _factor(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Cholesky factor (upper) of the gain matrix at x, or None when a pivot is ≤ 1e-12 of its diagonal."""
        H = self._jac_int(x)
        Hf = H.ravel()
        G = np.bincount(self._g_pos, weights=self._w[self._g_w] * Hf[self._g_flat_a] * Hf[self._g_flat_b],
                        minlength=self._n * self._n).reshape(self._n, self._n)
        dg = np.diag(G).copy()
        cf, info = self._potrf(G, lower=False, overwrite_a=True)
        if info != 0 or not np.all(np.diag(cf) ** 2 > 1e-12 * np.maximum(dg, 1e-300)):
            return None, H
        return cf, H

    def estimate(self, z: np.ndarray, *, x0: np.ndarray | None = None) -> EstimateResult:
        """Weighted-least-squares estimate by Gauss–Newton.

        Args:
            z: measurements in measurement order [pu | MW | MVAr], shape (m,).
            x0: optional start state (see :meth:`state`); default: the last converged estimate (flat start at
                first).

        Returns:
            The estimate. ``converged=False`` (no exception) with a ``message`` when the iteration limit is hit,
            the gain matrix is singular at an iterate, or the iteration diverges: residuals and objective are then
            NaN, the voltages are the last iterate, and the last converged estimate stays the next warm start.

        Raises:
            EstimationError: wrong shape or non-finite values in ``z`` or ``x0``.
        """
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (self._m,):
            raise EstimationError(f"z must have shape ({self._m},) (measurement order), got {z.shape}")
        if not np.isfinite(z).all():
            bad = np.flatnonzero(~np.isfinite(z))[:5].tolist()
            raise EstimationError(f"z contains NaN/inf at measurement positions {bad}")
        if x0 is None:
            x = self._x_warm.copy()
        else:
            x = np.array(x0, dtype=np.float64)
            if x.shape != (self._n,) or not np.isfinite(x).all():
                raise EstimationError(f"x0 must be a finite state vector of shape ({self._n},)")
        zp = z / self._scale
        if self.backend == "numba":
            status, it, self._have_L, obj = _nb_estimate(
                x, zp, self._w, self.tol, self.max_iter, self.refactor_ratio, self.reuse_below, _MAX_STEP,
                self._L, self._have_L,
                *self._model_args, self._perm, self._first, self._H, self._hx, self._r)
            self._cache = None
            converged = status == 0
            if converged:
                message = ""
                res = self._r * self._scale
            else:
                message = _STATUS_MESSAGE[status].format(it=it, max_iter=self.max_iter)
        else:
            converged, it, r, x, message = self._estimate_numpy(zp, x)
            if converged:
                res = r * self._scale
                obj = float(np.dot(self._w * r, r))
        if converged:
            lo, hi = self.vm_plausible_pu
            vmx = x[self._nva:]
            if not (vmx.min() > lo and vmx.max() < hi):
                k = int(np.argmin(vmx)) if vmx.min() <= lo else int(np.argmax(vmx))
                converged = False
                message = (f"converged to a non-physical state: |V| = {vmx[k]:.3g} pu at bus {self.vm_buses[k]} "
                           f"(plausible range {lo}–{hi} pu); the measurements are inconsistent with any operating "
                           "point")
        if converged:
            self._x_warm = x
        else:
            self._have_L, self._cf = False, None       # never reuse a gain matrix from a failed iterate
            res = np.full(self._m, np.nan)
            obj = float("nan")
        vm_i, va_i = self._int_from_x(x)
        if self._bus_identity:
            vm, va = vm_i.copy(), va_i
        else:
            vm, va = self._bus_from_int(vm_i, va_i)
        return EstimateResult(converged, it, vm, va, res, float(obj), x.copy(), message)

    def _estimate_numpy(self, zp: np.ndarray, x: np.ndarray) -> tuple[bool, int, np.ndarray, np.ndarray, str]:
        """Gauss–Newton loop in numpy (same algorithm as the compiled kernel); returns (ok, it, r_pu, x, msg)."""
        w = self._w
        it = 0
        prev = np.inf
        while True:
            r = zp - self._h_int(x)
            fresh = False
            if self._cf is None:
                self._cf, H = self._factor(x)
                if self._cf is None:
                    return False, it, r, x, _STATUS_MESSAGE[2].format(it=it)
                fresh = True
            else:
                H = self._jac_int(x)
            g = H.T @ (w * r)
            dx, _ = self._potrs(self._cf, g)
            step = float(np.abs(dx).max()) if dx.size else 0.0
            if not fresh and not (step <= self.reuse_below and step <= self.refactor_ratio * prev):
                self._cf, H = self._factor(x)
                if self._cf is None:
                    return False, it, r, x, _STATUS_MESSAGE[2].format(it=it)
                dx, _ = self._potrs(self._cf, g)
                step = float(np.abs(dx).max()) if dx.size else 0.0
            if not np.isfinite(step):
                return False, it, r, x, _STATUS_MESSAGE[3].format(it=it)
            if step <= self.tol:
                # the last (sub-tolerance) update is applied too: x then satisfies the normal equations to ~tol
                x = x + dx
                return True, it, zp - self._h_int(x), x, ""
            if it >= self.max_iter:
                return False, it, r, x, _STATUS_MESSAGE[1].format(max_iter=self.max_iter)
            if step > _MAX_STEP:
                dx *= _MAX_STEP / step
            x = x + dx
            it += 1
            prev = step

    # --- bad-data tests --------------------------------------------------------------------------------------------
    def chi2_threshold(self, alpha: float = 0.01) -> float:
        """χ² detection threshold ``chi2.ppf(1 − alpha, m − n)`` (cached per alpha).

        Raises:
            EstimationError: ``alpha`` outside (0, 1), or no redundancy (m = n).
        """
        if not (0.0 < alpha < 1.0):
            raise EstimationError(f"alpha must be in (0, 1), got {alpha!r}")
        dof = self._m - self._n
        if dof < 1:
            raise EstimationError(f"no redundancy: {self._m} measurements for {self._n} states, the χ² test "
                                  "needs m > n")
        key = (float(alpha), dof)
        t = self._chi2_cache.get(key)
        if t is None:
            t = float(_chi2.ppf(1.0 - alpha, dof))
            self._chi2_cache[key] = t
        return t

    def chi2_test(self, result: EstimateResult, alpha: float = 0.01) -> tuple[bool, float, float]:
        """χ² bad-data detection on the weighted residual sum.

        Args:
            result: a converged estimate.
            alpha: false-alarm probability on clean data.

        Returns:
            ``(flagged, J, threshold)``.

        Raises:
            EstimationError: the estimate did not converge, bad alpha, or no redundancy.
        """
        if not result.converged:
            raise EstimationError(f"χ² test on a non-converged estimate ({result.message})")
        t = self.chi2_threshold(alpha)
        return bool(result.objective > t), result.objective, t

    def normalized_residuals(self, result: EstimateResult) -> np.ndarray:
        """Normalised residuals ``|r_i| / sqrt(Ω_ii)``, ``Ω = R − H G⁻¹ Hᵀ`` at the estimate.

        Args:
            result: a converged estimate.

        Returns:
            ``r_N`` in measurement order, shape (m,); 0 for critical measurements (``Ω_ii ≈ 0``).

        Raises:
            EstimationError: the estimate did not converge or the gain matrix is singular there.
        """
        if not result.converged:
            raise EstimationError(f"normalised residuals of a non-converged estimate ({result.message})")
        x = result.x
        var = self._sigma_pu ** 2
        if self.backend == "numba":
            omega = self._omega
            L = np.empty_like(self._L)
            if not _nb_omega(x, self._w, *self._model_args, self._first, L, self._H, self._hx, omega):
                raise EstimationError("gain matrix singular at the estimate")
            self._cache = None
        else:
            self._h_int(x)
            cf, H = self._factor(x)
            if cf is None:
                raise EstimationError("gain matrix singular at the estimate")
            ginv, info = self._potri(cf, lower=False)              # upper triangle of G⁻¹
            if info != 0:
                raise EstimationError("gain matrix singular at the estimate")
            ginv = np.triu(ginv) + np.triu(ginv, 1).T
            Hf = H.ravel()
            q = np.bincount(self._g_w, weights=Hf[self._g_flat_a] * ginv.ravel()[self._g_pos] * Hf[self._g_flat_b],
                            minlength=self._m)                       # h_k G⁻¹ h_kᵀ over the row's nonzeros
            omega = var - q
        crit = omega <= _CRITICAL_REL * var
        rn = np.zeros(self._m)
        ok = ~crit
        rn[ok] = np.abs(result.residuals[ok] / self._scale[ok]) / np.sqrt(omega[ok])
        return rn

    def largest_normalized_residual(self, result: EstimateResult) -> tuple[int, float]:
        """Largest normalised residual.

        Args:
            result: a converged estimate.

        Returns:
            ``(index, r_N max)``: measurement index (measurement order) and its normalised residual [-].
        """
        rn = self.normalized_residuals(result)
        k = int(np.argmax(rn))
        return k, float(rn[k])

    def detect(self, z: np.ndarray, alpha: float = 0.01, rn_threshold: float = 3.0) -> Detection:
        """Estimate and test one snapshot: χ² first, largest normalised residual only when χ² flags.

        Args:
            z: measurements [pu | MW | MVAr], shape (m,).
            alpha: χ² false-alarm probability.
            rn_threshold: identification threshold on the largest normalised residual.

        Returns:
            The detection outcome (a non-converged estimate is an alarm with no suspect).
        """
        t = self.chi2_threshold(alpha)
        res = self.estimate(z)
        if not res.converged:
            return Detection(True, False, float("nan"), t, float("nan"), -1, "", False, res)
        flagged = res.objective > t
        rn_max, suspect, label = float("nan"), -1, ""
        if flagged:
            k, rn_max = self.largest_normalized_residual(res)
            if rn_max > rn_threshold:
                suspect, label = k, self.labels[k]
        return Detection(bool(flagged), bool(flagged), res.objective, t, rn_max, suspect, label, True, res)
