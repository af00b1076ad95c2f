"""The fast engine: bus admittance matrix compiled once from a pandapower net, Newton-Raphson on it, warm starts
and the safety checks that decide whether a solution is accepted."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from pandapower.auxiliary import pandapowerNet
from pandapower.pypower.idx_brch import F_BUS, T_BUS
from pandapower.pypower.idx_bus import BASE_KV, PD, QD, VA
from pandapower.pypower.idx_gen import GEN_BUS, PG, VG
from scipy.linalg import lapack
from scipy.sparse.linalg import splu, spsolve

from grids.powerflow.common import (
    _SQRT3,
    METHODS,
    VM_PLAUSIBLE_PU,
    PowerFlowError,
    PowerFlowResult,
    _branch_map,
    _check_loads,
    _check_v0,
    _perm_swaps,
    _split_branch_admittance,
    compile_run,
)
from grids.powerflow.reference import PandapowerPowerFlow


class FastPowerFlow:
    """Newton-Raphson AC power flow on arrays compiled from a pandapower net.

    Construction deep-copies the net, switches off ``net.load``/``net.sgen``/``net.storage``, runs
    ``pp.runpp`` once and keeps pandapower's internal admittance matrices, bus types and set-points. Each
    :meth:`solve` then only needs the per-bus net load. Internally buses are reordered as [PV, PQ, slack] so
    that all Jacobian blocks are contiguous; the Jacobian sparsity pattern and all index maps are precomputed.
    Jacobians of dimension up to ``dense_max_dim`` (2·n_pq + n_pv) are solved densely (LAPACK ``dgesv`` called
    directly: ``np.linalg.solve`` was 10-20x slower for dim >= 100 on the 2-core dev machine), larger ones with
    SuperLU (measured: dense 17 µs vs sparse 37 µs at dim 64 (case33bw), dense 150 µs vs sparse 85 µs at dim
    181 (case118)).

    The last accepted voltage vector is used as the warm start of the next solve (initially the no-load
    solution of the compile run). Non-converged and suspect solutions never replace the warm start.

    **A power flow that cannot silently lie** (:meth:`solve`): Newton–Raphson may converge onto the *low-voltage*
    solution (the lower branch of the PV curve, ≈ 0.5 pu on a heavily loaded LV feeder) when it starts far from
    the operating point; used as the next warm start, that solution drags the following steps into divergence.
    A converged solution is therefore *accepted* only if it is finite, every live bus lies in
    :data:`VM_PLAUSIBLE_PU`, and it lies on the operable branch: the sign of the power-flow Jacobian's
    determinant equals its sign at the no-load solution. Along the branch that grows from the no-load point the
    Jacobian is non-singular up to the nose of the PV curve (the saddle-node bifurcation where one eigenvalue
    crosses zero), so every operable point, however heavily loaded, keeps the no-load sign, and a point past the
    nose has the opposite sign (an odd number of crossings; a solution with an even number would also need to
    pass the voltage band). A rejected or failed attempt is retried from the no-load solution and from a flat
    start, then ``pp.runpp`` (``init="dc"``, then ``"flat"``) is asked for a start point that the fast engine
    confirms (``fallback=True``); each result carries its ``method`` (:data:`METHODS`).

    Q limits of ``net.gen`` are ignored (PV buses stay PV), as with pandapower's default
    ``enforce_q_lims=False``.
    """

    #: Above this Jacobian dimension the sparse linear solver is used.
    dense_max_dim: int = 128

    def __init__(
        self,
        net: pandapowerNet,
        *,
        tol_mva: float = 1e-9,
        max_iter: int = 30,
        trafo_loading: str = "current",
        fallback: bool = True,
    ) -> None:
        """Compile the engine.

        Args:
            net: pandapower network (not modified).
            tol_mva: convergence tolerance on the largest bus power mismatch [MVA].
            max_iter: maximum number of Newton–Raphson iterations.
            trafo_loading: ``"current"`` (pandapower's default) or ``"power"``: definition of
                ``trafo_loading_percent``, as pandapower's ``runpp(trafo_loading=...)``.
            fallback: when the fast attempts fail, ask ``pp.runpp`` for a start point (see class docstring);
                False stops after the fast retries.

        Raises:
            ValueError: invalid tolerance, iteration count or trafo_loading.
            pandapower.LoadflowNotConverged: pandapower could not even build its internal model.
        """
        if not (tol_mva > 0 and np.isfinite(tol_mva)):
            raise ValueError(f"tol_mva must be a positive finite number, got {tol_mva!r}")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")
        if trafo_loading not in ("current", "power"):
            raise ValueError(f"trafo_loading must be 'current' or 'power', got {trafo_loading!r}")
        self.tol_mva = float(tol_mva)
        self.max_iter = int(max_iter)
        self.trafo_loading = trafo_loading
        self.fallback = bool(fallback)
        self._fallback_engine: PandapowerPowerFlow | None = None
        #: Solves per method (diagnostics: how often the safety net was needed) and suspect solutions rejected.
        self.method_counts: dict[str, int] = dict.fromkeys(METHODS, 0)
        self.n_rejected = 0

        base_mva = float(net.sn_mva)
        net_c, ok = compile_run(
            net, tolerance_mva=min(1e-8, self.tol_mva / base_mva), max_iteration=50, trafo_loading=trafo_loading
        )
        self._net = net_c
        internal = net_c._ppc["internal"]
        self._base_mva = float(internal["baseMVA"])
        bus = np.real(internal["bus"])
        gen = np.real(internal["gen"])
        ref = np.asarray(internal["ref"], dtype=np.int64)
        pv = np.asarray(internal["pv"], dtype=np.int64)
        pq = np.asarray(internal["pq"], dtype=np.int64)
        n = bus.shape[0]
        self._n_int = n
        self._npv, self._npq, self._nref = len(pv), len(pq), len(ref)
        self._m = self._npv + self._npq

        # --- internal bus order [pv, pq, ref] --------------------------------------------------------------
        perm = np.concatenate([pv, pq, ref])
        if len(perm) != n or len(np.unique(perm)) != n:
            raise RuntimeError("pandapower's ref/pv/pq sets do not partition the internal buses")
        inv = np.empty(n, dtype=np.int64)
        inv[perm] = np.arange(n)
        Y = sp.csr_matrix(internal["Ybus"])[perm][:, perm].tocsr()
        Y.sum_duplicates()

        self._map_buses(net_c, internal, ref, inv)
        self._fixed_injections(bus, gen, internal, perm)
        self._start_vectors(bus, gen, internal, perm, ok)
        self._jacobian_pattern(Y)
        self._compile_branches(net_c, internal, perm, inv, trafo_loading)
        if self._dense:
            self._getrf = lapack.get_lapack_funcs("getrf", (self._J,))
        self._last_lu: tuple[np.ndarray, np.ndarray] | None = None  # LU of the last dense Newton step
        flat = np.ones(n, dtype=np.complex128)
        flat[: self._npv] = self._v_set
        flat[self._m :] = self._v_ref
        self._v_flat = flat
        # sign of det(J) on the operable branch (0: singular at no load, the branch test is then skipped)
        self._branch_sign = self._jacobian_sign(self._v_start)

    def _map_buses(self, net_c: pandapowerNet, internal: dict, ref: np.ndarray, inv: np.ndarray) -> None:
        """Bus lookup: net.bus position -> internal position (and the fast gather paths when the map is a bijection)."""
        n = len(inv)
        lookup = np.asarray(net_c._pd2ppc_lookups["bus"], dtype=np.int64)
        bus_idx = net_c.bus.index.to_numpy(np.int64)
        self._bus_index = bus_idx.copy()
        self._n_bus = len(bus_idx)
        lk = np.full(len(bus_idx), -1, dtype=np.int64)
        inside = (bus_idx >= 0) & (bus_idx < len(lookup))
        lk[inside] = lookup[bus_idx[inside]]
        valid = (lk >= 0) & (lk < n)
        self._bus_valid = valid
        self._bus_all_valid = bool(valid.all())
        self._bus_src = np.flatnonzero(valid)  # net.bus positions that take part
        self._bus_dst = inv[lk[valid]]  # ... and their internal position
        # pandapower's own (unpermuted) admittance matrix and slack set, for driving_point_resistance()
        self._bus_ppci = lk[valid]
        self._ybus_ppci = internal["Ybus"]
        self._ref_ppci = ref
        self._r_pu: np.ndarray | None = None
        # fast paths: every net bus has an internal bus (output gather), and the map is a bijection (input)
        self._out_gather = self._bus_dst.copy() if self._bus_all_valid else None
        self._in_gather = None
        if self._bus_all_valid and len(self._bus_dst) == n and len(np.unique(self._bus_dst)) == n:
            g = np.empty(n, dtype=np.int64)
            g[self._bus_dst] = self._bus_src
            self._in_gather = g

    def _fixed_injections(self, bus: np.ndarray, gen: np.ndarray, internal: dict, perm: np.ndarray) -> None:
        """Fixed injections (gens, wards, ...) without the caller's loads and the slack [pu], in internal order."""
        s_fixed = -(bus[:, PD] + 1j * bus[:, QD]) / self._base_mva
        ref_gens = np.asarray(internal.get("ref_gens", []), dtype=np.int64)
        non_ref = np.ones(gen.shape[0], dtype=bool)
        non_ref[ref_gens] = False
        gbus = gen[non_ref, GEN_BUS].astype(np.int64)
        np.add.at(s_fixed, gbus, gen[non_ref, PG] / self._base_mva)
        self._s_fixed = s_fixed[perm].astype(np.complex128)

    def _start_vectors(self, bus: np.ndarray, gen: np.ndarray, internal: dict, perm: np.ndarray, ok: bool) -> None:
        """Voltage set-points and the start vector (the no-load solution when pandapower's run converged)."""
        n = bus.shape[0]
        # magnitudes from the generator/ext_grid set-points, slack angle from the bus (pandapower's V0 convention)
        vg = np.ones(n)
        vg[gen[:, GEN_BUS].astype(np.int64)] = gen[:, VG]
        self._v_set = vg[perm[: self._npv]].copy()
        self._v_ref = vg[perm[self._m :]] * np.exp(1j * np.deg2rad(bus[perm[self._m :], VA]))
        V_run = np.asarray(internal["V"], dtype=np.complex128)[perm]
        if ok and np.isfinite(V_run).all():
            start = V_run.copy()  # no-load solution (includes trafo phase shifts)
        else:
            start = np.ones(n, dtype=np.complex128)  # flat start
            start[: self._npv] = self._v_set
            start[self._m :] = self._v_ref
        self._v_start = start
        self._v_warm = start.copy()

    def _jacobian_pattern(self, Y: sp.csr_matrix) -> None:
        """Matrices for the mismatch and the Jacobian: sparsity pattern, block offsets, diagonals, dense or sparse LU."""
        m, npv, npq = self._m, self._npv, self._npq
        dim = m + npq
        self._dense = dim <= self.dense_max_dim
        self._Y = Y.toarray() if self._dense else Y
        Ys = Y[:m, :m].tocoo()
        r, c, y = Ys.row.astype(np.int64), Ys.col.astype(np.int64), Ys.data.astype(np.complex128)
        missing = np.setdiff1d(np.arange(m), r[r == c])
        if len(missing):  # make sure every diagonal entry is part of the pattern
            r = np.concatenate([r, missing])
            c = np.concatenate([c, missing])
            y = np.concatenate([y, np.zeros(len(missing), dtype=np.complex128)])
        self._jr, self._jc, self._jyc = r, c, np.conj(y)
        nnz = len(r)
        k12 = np.flatnonzero(c >= npv)
        k21 = np.flatnonzero(r >= npv)
        k22 = np.flatnonzero((r >= npv) & (c >= npv))
        self._k12, self._k21, self._k22 = k12, k21, k22
        self._c12 = c[k12]
        self._c22 = c[k22]
        # positions of all Jacobian values: blocks [J11 | J12; J21 | J22]
        rows = np.concatenate([r, r[k12], m + r[k21] - npv, m + r[k22] - npv])
        cols = np.concatenate([c, m + c[k12] - npv, c[k21], m + c[k22] - npv])
        o12, o21, o22 = nnz, nnz + len(k12), nnz + len(k12) + len(k21)
        self._o = (o12, o21, o22, o22 + len(k22))
        diag = np.flatnonzero(r == c)
        d_bus = r[diag]
        order = np.argsort(d_bus)
        diag = diag[order]  # entry index of the diagonal of bus i, i < m
        self._d11 = diag
        pq_diag = diag[npv:]  # diagonals of pq buses
        pos12 = np.full(nnz, -1, dtype=np.int64)
        pos12[k12] = np.arange(len(k12))
        pos21 = np.full(nnz, -1, dtype=np.int64)
        pos21[k21] = np.arange(len(k21))
        pos22 = np.full(nnz, -1, dtype=np.int64)
        pos22[k22] = np.arange(len(k22))
        self._d12 = o12 + pos12[pq_diag]
        self._d21 = o21 + pos21[pq_diag]
        self._d22 = o22 + pos22[pq_diag]
        self._dim = dim
        self._jvals = np.empty(len(rows))
        self._F = np.empty(dim)
        if self._dense:
            self._J = np.zeros((dim, dim), order="F")
            self._jflat = np.ravel_multi_index((rows, cols), (dim, dim), order="F")
            self._gesv = lapack.get_lapack_funcs("gesv", (self._J,))
        else:
            pattern = sp.csc_matrix((np.arange(1, len(rows) + 1, dtype=np.float64), (rows, cols)), shape=(dim, dim))
            pattern.sort_indices()
            self._jperm = pattern.data.astype(np.int64) - 1
            self._J = pattern

    def _compile_branches(
        self, net_c: pandapowerNet, internal: dict, perm: np.ndarray, inv: np.ndarray, trafo_loading: str
    ) -> None:
        """Branches: from/to admittances, base currents, line and trafo maps and the loading scales."""
        bus = np.real(internal["bus"])
        branch = internal["branch"]
        Yf = sp.csr_matrix(internal["Yf"])[:, perm].tocoo()
        Yt = sp.csr_matrix(internal["Yt"])[:, perm].tocoo()
        fb = inv[np.real(branch[:, F_BUS]).astype(np.int64)]
        tb = inv[np.real(branch[:, T_BUS]).astype(np.int64)]
        self._fb, self._tb = fb, tb
        self._yff, self._yft = self._split_branch_admittance(Yf, fb, tb)
        self._ytf, self._ytt = self._split_branch_admittance(Yt, fb, tb)
        base_kv = np.real(bus[:, BASE_KV])[perm]
        self._ibase_f = self._base_mva / (_SQRT3 * base_kv[fb])  # [kA per pu current]
        self._ibase_t = self._base_mva / (_SQRT3 * base_kv[tb])

        branch_is = np.asarray(internal["branch_is"], dtype=bool)
        ppci_row = np.cumsum(branch_is) - 1
        lookups = net_c._pd2ppc_lookups["branch"]
        self._line = self._branch_map(lookups.get("line"), branch_is, ppci_row, len(net_c.line))
        self._trafo = self._branch_map(lookups.get("trafo"), branch_is, ppci_row, len(net_c.trafo))
        self._n_line = len(net_c.line)
        self._n_trafo = len(net_c.trafo)
        line = net_c.line
        i_max = (
            (line["max_i_ka"].to_numpy(float) * line["df"].to_numpy(float) * line["parallel"].to_numpy(float))
            if len(line)
            else np.zeros(0)
        )
        self._line_i_max = i_max
        self._line_i_max_zero = bool(np.any(i_max == 0))
        trafo = net_c.trafo
        if len(trafo):
            sn = trafo["sn_mva"].to_numpy(float)
            denom = trafo["parallel"].to_numpy(float) * trafo["df"].to_numpy(float)
            if trafo_loading == "current":
                self._tr_scale_f = trafo["vn_hv_kv"].to_numpy(float) * _SQRT3 / sn * 100.0 / denom
                self._tr_scale_t = trafo["vn_lv_kv"].to_numpy(float) * _SQRT3 / sn * 100.0 / denom
            else:
                self._tr_scale_f = 100.0 / sn / denom
                self._tr_scale_t = self._tr_scale_f

    # ------------------------------------------------------------------------------------------------------------
    # branch helpers live in common (module-level functions; kept here under their old names)
    _split_branch_admittance = staticmethod(_split_branch_admittance)
    _branch_map = staticmethod(_branch_map)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def n_bus(self) -> int:
        """Number of buses of the net (length of the load arrays)."""
        return self._n_bus

    @property
    def bus_index(self) -> np.ndarray:
        """pandapower bus indices in the order of the load/voltage arrays (copy)."""
        return self._bus_index.copy()

    def driving_point_resistance(self) -> np.ndarray:
        """Mutual driving-point resistance ``Re(Z_ki)`` between buses [pu], slack removed, shape (n_bus, n_bus).

        ``Z`` is the inverse of the bus admittance matrix with the slack rows and columns removed (``Z`` is 0 on
        the slack buses); rows and columns follow ``net.bus.index``. Computed from the admittance matrix of the
        compile run (no further power flow) and cached; buses outside the calculation (out of service or
        isolated) have zero rows and columns — an injection there reaches no other bus. The returned array is
        read-only.
        """
        if self._r_pu is None:
            ybus = self._ybus_ppci.toarray()
            ref = set(np.atleast_1d(self._ref_ppci).tolist())
            keep = np.array([i for i in range(ybus.shape[0]) if i not in ref], dtype=np.int64)
            z = np.zeros(ybus.shape, complex)
            z[np.ix_(keep, keep)] = np.linalg.inv(ybus[np.ix_(keep, keep)])
            r = np.real(z[np.ix_(self._bus_ppci, self._bus_ppci)])
            if not self._bus_all_valid:
                full = np.zeros((self._n_bus, self._n_bus))
                full[np.ix_(self._bus_src, self._bus_src)] = r
                r = full
            r.setflags(write=False)
            self._r_pu = r
        return self._r_pu

    def reset_warm_start(self) -> None:
        """Forget the last solution; the next solve starts from the compile run's no-load voltages."""
        self._v_warm = self._v_start.copy()

    # ------------------------------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Picklable state (the grid cache, sim/gridcache.py): LAPACK routines are looked up again on load."""
        state = dict(self.__dict__)
        state.pop("_gesv", None)
        state.pop("_getrf", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._dense:
            self._gesv = lapack.get_lapack_funcs("gesv", (self._J,))
            self._getrf = lapack.get_lapack_funcs("getrf", (self._J,))

    def solve(self, p_load_mw: np.ndarray, q_load_mvar: np.ndarray, *, v0: np.ndarray | None = None) -> PowerFlowResult:
        """Solve one load snapshot; never returns an unflagged suspect solution (see the class docstring).

        Order of attempts: Newton–Raphson from ``v0`` or the warm start (``method="fast"``); from the no-load
        solution, then from a flat start (``"fast-retry"``); from ``pp.runpp``'s solution with ``init="dc"``,
        then ``"flat"`` (``"pandapower"``, only with ``fallback=True``). Each converged attempt must pass the
        acceptance test (finite, :data:`VM_PLAUSIBLE_PU`, operable branch) before it is returned and becomes the
        next warm start.

        Args:
            p_load_mw: net active load per bus in ``net.bus.index`` order [MW], positive = consumption.
            q_load_mvar: net reactive load per bus [Mvar].
            v0: optional start voltages, complex [pu] in ``net.bus.index`` order (slack and PV magnitudes are
                reset to their set-points, the slack angle to its set-point); default: last accepted solution.

        Returns:
            The power-flow result. When every attempt fails: ``converged=False``, ``method="failed"`` (no
            exception); the arrays then hold the first attempt's last iterate if it is finite, else its start
            voltages – finite, but not a physical operating point (treat as "no solution", typically voltage
            collapse under too much load). ``iterations`` counts the Newton–Raphson iterations of all attempts.

        Raises:
            PowerFlowError: wrong shape or non-finite values in the inputs.
        """
        p, q = _check_loads(p_load_mw, q_load_mvar, self._n_bus)
        base = self._base_mva
        n = self._n_int
        # specified injections in internal order [pu]
        if self._in_gather is not None:
            g = self._in_gather
            s_spec = self._s_fixed - (p[g] + 1j * q[g]) / base
        else:
            pl = np.bincount(self._bus_dst, weights=p[self._bus_src], minlength=n)
            ql = np.bincount(self._bus_dst, weights=q[self._bus_src], minlength=n)
            s_spec = self._s_fixed - (pl + 1j * ql) / base

        V0 = self._v_warm.copy() if v0 is None else self._start_from(v0)
        V, S, converged, it = self._newton(V0, s_spec)
        if converged and self._acceptable(V, newton=True):
            return self._accept(V, S, s_spec, it, "fast")
        self.n_rejected += int(converged)
        first = (V, S, V0)
        total = it
        for start in (self._v_start, self._v_flat):
            if np.array_equal(start, V0):
                continue  # the same attempt again gives the same answer
            V, S, converged, it = self._newton(start.copy(), s_spec)
            total += it
            if converged and self._acceptable(V, newton=True):
                return self._accept(V, S, s_spec, total, "fast-retry")
            self.n_rejected += int(converged)
        if self.fallback:
            for init in ("dc", "flat"):
                vin = self._pandapower_start(p, q, init)
                if vin is None:
                    continue
                V, S, converged, it = self._newton(self._start_from(vin), s_spec)
                total += it
                if converged and self._acceptable(V, newton=True):
                    return self._accept(V, S, s_spec, total, "pandapower")
                self.n_rejected += int(converged)
        V, S, V0 = first
        if not (np.isfinite(V).all() and np.isfinite(S).all()):
            V = V0
            S = V * np.conj(self._Y @ V)
        self.method_counts["failed"] += 1
        return self._results(V, S, s_spec, False, total, "failed")

    def _start_from(self, v0: Any) -> np.ndarray:
        """Internal start vector from caller voltages (net.bus order); set-points of PV and slack buses kept."""
        vin = _check_v0(v0, self._n_bus, self._bus_valid)
        V0 = self._v_warm.copy()
        V0[self._bus_dst] = vin[self._bus_src]
        npv, m = self._npv, self._m
        if npv:
            V0[:npv] = self._v_set * V0[:npv] / np.abs(V0[:npv])
        V0[m:] = self._v_ref
        return V0

    def _accept(self, V: np.ndarray, S: np.ndarray, s_spec: np.ndarray, it: int, method: str) -> PowerFlowResult:
        """Record an accepted solution as the next warm start and build its result."""
        self._v_warm = V.copy()
        self.method_counts[method] += 1
        return self._results(V, S, s_spec, True, it, method)

    def _pandapower_start(self, p: np.ndarray, q: np.ndarray, init: str) -> np.ndarray | None:
        """Complex bus voltages (net.bus order) of ``pp.runpp(init=init)``, or None when it does not converge."""
        if self._fallback_engine is None:
            self._fallback_engine = PandapowerPowerFlow(
                self._net, tol_mva=self.tol_mva, max_iter=max(self.max_iter, 50), trafo_loading=self.trafo_loading
            )
        res = self._fallback_engine.solve(p, q, init=init)
        if not res.converged:
            return None
        v = res.vm_pu * np.exp(1j * np.deg2rad(res.va_degree))
        return np.where(self._bus_valid, v, 1.0 + 0.0j)

    def is_operable(self, vm_pu: np.ndarray, va_degree: np.ndarray) -> bool:
        """Whether bus voltages (net.bus order, [pu], [degree]) pass the acceptance test of :meth:`solve`.

        Used to check solutions from elsewhere (e.g. :class:`PandapowerPowerFlow`) against the same criterion.
        """
        v = np.asarray(vm_pu, float) * np.exp(1j * np.deg2rad(np.asarray(va_degree, float)))
        V = self._v_warm.copy()
        V[self._bus_dst] = v[self._bus_src]
        return self._acceptable(V)

    def _acceptable(self, V: np.ndarray, *, newton: bool = False) -> bool:
        """Acceptance test of a converged internal voltage vector (see the class docstring).

        With ``newton=True`` (``V`` is what :meth:`_newton` just returned) the branch test reuses the LU factors
        of the last Newton step — the Jacobian at the last iterate, which differs from ``V`` by less than the
        tolerance — instead of factorising again (dense path; a fresh factorisation otherwise).
        """
        if not np.isfinite(V).all():
            return False
        vm = np.abs(V)
        lo, hi = VM_PLAUSIBLE_PU
        if vm.min() < lo or vm.max() > hi:
            return False
        if self._branch_sign == 0:
            return True
        lu = self._last_lu if newton else None
        sign = self._lu_sign(*lu) if lu is not None else self._jacobian_sign(V)
        return sign == self._branch_sign

    @staticmethod
    def _lu_sign(lu: np.ndarray, piv: np.ndarray) -> int:
        """Sign of det from LAPACK LU factors (unit-diagonal L, 0-based row interchanges ``piv``); 0 if singular."""
        d = lu.diagonal()  # a view: this runs after every accepted solve
        if not d.all():
            return 0
        neg = int(np.count_nonzero(d < 0)) + int(np.count_nonzero(piv != np.arange(len(piv))))
        return -1 if neg % 2 else 1

    def _jacobian_values(self, vals: np.ndarray, V: np.ndarray, S: np.ndarray, Vm: np.ndarray) -> None:
        """Write the polar Jacobian's values on the precomputed sparsity pattern into ``vals`` (internal voltages
        ``V``, their magnitudes ``Vm`` and complex injections ``S``; 2-D arrays: one column per snapshot)."""
        m, npv = self._m, self._npv
        o12, o21, o22, o_end = self._o
        jyc = self._jyc if V.ndim == 1 else self._jyc[:, None]
        W = V[self._jr] * jyc * np.conj(V[self._jc])
        Wr, Wi = W.real, W.imag
        vals[:o12] = Wi
        vals[o12:o21] = Wr[self._k12] / Vm[self._c12]
        vals[o21:o22] = -Wr[self._k21]
        vals[o22:o_end] = Wi[self._k22] / Vm[self._c22]
        P, Q = S.real[:m], S.imag[:m]
        vals[self._d11] -= Q
        Ppq, Qpq, Vpq = P[npv:], Q[npv:], Vm[npv:m]
        vals[self._d12] += Ppq / Vpq
        vals[self._d21] += Ppq
        vals[self._d22] += Qpq / Vpq

    def _jacobian_sign(self, V: np.ndarray) -> int:
        """Sign of det(J) of the polar power-flow Jacobian at internal voltages ``V`` (0 if singular)."""
        dim = self._dim
        if dim == 0:
            return 1
        vals = np.empty_like(self._jvals)
        self._jacobian_values(vals, V, V * np.conj(self._Y @ V), np.abs(V))
        if not np.isfinite(vals).all():
            return 0
        if self._dense:
            J = np.zeros((dim, dim), order="F")
            J.T.flat[self._jflat] = vals
            lu, piv, info = self._getrf(J)
            return 0 if info != 0 else self._lu_sign(lu, piv)
        else:
            Js = sp.csc_matrix(self._J, copy=True)  # the CSC pattern built in __init__
            Js.data[:] = vals[self._jperm]
            try:
                f = splu(Js)
            except RuntimeError:  # exactly singular
                return 0
            d = f.U.diagonal()
            swaps = _perm_swaps(f.perm_r) + _perm_swaps(f.perm_c)
        if not np.all(d != 0):
            return 0
        neg = int(np.count_nonzero(d < 0)) + swaps
        return -1 if neg % 2 else 1

    def solve_batch(self, p_load_mw: np.ndarray, q_load_mvar: np.ndarray) -> list[PowerFlowResult]:
        """Solve many snapshots together (chord iterations on a shared Jacobian, :mod:`grids.powerflow.batch`); a
        snapshot they do not settle is solved by :meth:`solve`, and every one passes its acceptance test.

        Args:
            p_load_mw: net active load [MW], shape (n_snap, n_bus).
            q_load_mvar: net reactive load [Mvar], shape (n_snap, n_bus).

        Returns:
            One :class:`PowerFlowResult` per snapshot.

        Raises:
            PowerFlowError: wrong shape or non-finite values.
        """
        P = np.asarray(p_load_mw, dtype=np.float64)
        Q = np.asarray(q_load_mvar, dtype=np.float64)
        for name, a in (("p_load_mw", P), ("q_load_mvar", Q)):
            if a.ndim != 2 or a.shape[1] != self._n_bus:
                raise PowerFlowError(f"{name} must have shape (n_snap, {self._n_bus}), got {a.shape}")
        if P.shape != Q.shape:
            raise PowerFlowError(f"p_load_mw {P.shape} and q_load_mvar {Q.shape} differ in shape")
        from grids.powerflow.batch import solve_batch

        if not (np.isfinite(P).all() and np.isfinite(Q).all()):
            raise PowerFlowError("p_load_mw and q_load_mvar must be finite")
        return solve_batch(self, P, Q)

    # ------------------------------------------------------------------------------------------------------------
    def _newton(self, V0: np.ndarray, s_spec: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool, int]:
        """Polar Newton–Raphson in the internal bus order; returns (V, S_calc, converged, iterations)."""
        Y = self._Y
        m, npv, dim = self._m, self._npv, self._dim
        tol_pu = self.tol_mva / self._base_mva
        F = self._F
        V = V0.copy()
        Va = np.angle(V)
        Vm = np.abs(V)
        vals = self._jvals
        it = 0
        self._last_lu = None
        while True:
            S = V * np.conj(Y @ V)
            mis = S - s_spec
            F[:m] = mis.real[:m]
            F[m:] = mis.imag[npv:m]
            norm = np.abs(F).max() if dim else 0.0
            if not np.isfinite(norm):
                return V, S, False, it
            if norm < tol_pu:
                return V, S, True, it
            if it >= self.max_iter:
                return V, S, False, it
            # Jacobian values on the precomputed pattern
            self._jacobian_values(vals, V, S, Vm)
            try:
                if self._dense:
                    J = self._J
                    J.T.reshape(-1, copy=False)[self._jflat] = vals  # J.T: C-ordered view (.flat: 3x slower)
                    lu, piv, dx, info = self._gesv(J, F)
                    if info != 0:
                        return V, S, False, it
                    self._last_lu = (lu, piv)  # for the branch test at convergence (no copy, no extra work)
                else:
                    J = self._J
                    J.data[:] = vals[self._jperm]
                    dx = spsolve(J, F)
            except (np.linalg.LinAlgError, RuntimeError, ValueError):
                return V, S, False, it
            it += 1
            Va[:m] -= dx[:m]
            Vm[npv:m] -= dx[m:]
            V = Vm * np.exp(1j * Va)

    def _results(
        self, V: np.ndarray, S: np.ndarray, s_spec: np.ndarray, converged: bool, it: int, method: str
    ) -> PowerFlowResult:
        """Assemble a :class:`PowerFlowResult` from internal voltages."""
        base = self._base_mva
        vm_i = np.abs(V)
        va_i = np.angle(V, deg=True)
        if self._out_gather is not None:
            vm = vm_i[self._out_gather]
            va = va_i[self._out_gather]
        else:
            vm = np.full(self._n_bus, np.nan)
            va = np.full(self._n_bus, np.nan)
            vm[self._bus_src] = vm_i[self._bus_dst]
            va[self._bus_src] = va_i[self._bus_dst]

        Vf = V[self._fb]
        Vt = V[self._tb]
        If = self._yff * Vf + self._yft * Vt
        It = self._ytf * Vf + self._ytt * Vt
        Sf = Vf * np.conj(If) * base
        St = Vt * np.conj(It) * base
        i_f = np.abs(If) * self._ibase_f
        i_t = np.abs(It) * self._ibase_t
        pl = Sf.real + St.real

        pos, rows, all_on = self._line
        if all_on:
            lp, lq, lpl = Sf.real[rows], Sf.imag[rows], pl[rows]
            li = np.maximum(i_f[rows], i_t[rows])
        else:
            lp, lq, lpl, li = (np.zeros(self._n_line) for _ in range(4))
            lp[pos], lq[pos], lpl[pos] = Sf.real[rows], Sf.imag[rows], pl[rows]
            li[pos] = np.maximum(i_f[rows], i_t[rows])
        if self._line_i_max_zero:
            loading = np.full(self._n_line, np.inf)
            np.divide(li, self._line_i_max, where=self._line_i_max != 0, out=loading)
            loading *= 100.0
            if not all_on:
                off = np.ones(self._n_line, dtype=bool)
                off[pos] = False
                loading[off] = 0.0
        else:
            loading = li / self._line_i_max * 100.0

        tpos, trows, t_all_on = self._trafo
        if self._n_trafo:
            if self.trafo_loading == "current":
                af, at = i_f[trows], i_t[trows]
            else:
                af, at = np.abs(Sf[trows]), np.abs(St[trows])
            tl = np.maximum(af * self._tr_scale_f[tpos], at * self._tr_scale_t[tpos])
            if t_all_on:
                tr_loading = tl
            else:
                tr_loading = np.zeros(self._n_trafo)
                tr_loading[tpos] = tl
        else:
            tr_loading = np.zeros(0)

        m = self._m
        s_slack = (S[m:] - s_spec[m:]).sum() * base
        return PowerFlowResult(
            converged=bool(converged),
            iterations=int(it),
            vm_pu=vm,
            va_degree=va,
            line_loading_percent=loading,
            line_p_from_mw=lp,
            line_q_from_mvar=lq,
            line_pl_mw=lpl,
            trafo_loading_percent=tr_loading,
            losses_mw=float(pl.sum()),
            ext_grid_p_mw=float(s_slack.real),
            ext_grid_q_mvar=float(s_slack.imag),
            method=method,
        )
