"""The measurement model ``h(x)`` and its Jacobian, compiled once from pandapower's internal model.

:class:`MeasurementModel` holds everything :class:`grids.estimation.StateEstimator` needs that depends only on the
network and the measurement set: the state layout, the bus and branch maps, the admittance entries of the measured
rows, the sparsity pattern of the Jacobian ``H`` and the fill-reducing state order of the gain matrix. It evaluates
``h``, ``H``, noisy measurements and stealthy false-data vectors; conventions and units are those of the package
docstring (:mod:`grids.estimation`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from pandapower.auxiliary import pandapowerNet
from pandapower.pypower.idx_brch import F_BUS, T_BUS
from pandapower.pypower.idx_bus import VA
from pandapower.pypower.idx_gen import GEN_BUS, VG
from scipy.sparse.csgraph import reverse_cuthill_mckee

from grids.estimation.errors import EstimationError
from grids.estimation.kernels import HAVE_NUMBA
from grids.estimation.measurement import MeasurementSet
from grids.estimation.observability import require_enough_measurements
from grids.powerflow import PowerFlowResult, compile_run

if HAVE_NUMBA:
    from grids.estimation.kernels import nb_h

__all__ = ["MeasurementModel"]


class MeasurementModel:
    """Measurement function ``h(x)`` and Jacobian ``H`` of a measurement set on a network (frozen at construction).

    Construction deep-copies the net, runs pandapower once (loads switched off; only the admittance matrices are
    used) and precomputes index maps of ``h(x)`` and of the Jacobian's sparsity pattern.
    """

    def __init__(self, net: pandapowerNet, ms: MeasurementSet, *, backend: str = "auto") -> None:
        """Compile the model.

        Args:
            net: pandapower network (not modified).
            ms: measurement set (pandapower bus/line indices).
            backend: ``"numba"``, ``"numpy"`` or ``"auto"`` (numba when importable); see
                :class:`grids.estimation.StateEstimator`.

        Raises:
            EstimationError: bad backend, unknown or out-of-service measured element, two injection measurements
                on buses fused into one (closed bus-bus switch).
            NotObservableError: fewer measurements than states.
        """
        if backend not in ("auto", "numba", "numpy"):
            raise EstimationError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
        if backend == "numba" and not HAVE_NUMBA:
            raise EstimationError("backend='numba' requested but numba is not importable")
        self.backend = "numba" if backend == "auto" and HAVE_NUMBA else ("numpy" if backend == "auto" else backend)
        self.ms = ms

        net_c, converged = compile_run(net, max_iteration=50)
        internal = self._eliminate_aux_buses(net_c, net_c._ppc["internal"])
        self._compile_states(internal, converged)
        lk, valid = self._compile_bus_maps(net_c)
        vb, ib = self._map_measured_buses(ms, lk, valid)
        br = self._map_flow_lines(ms, net_c, internal)
        self._compile_layout(ms, vb, ib, br)
        self._compile_injection_pattern(internal)
        pr, pc = self._compile_jacobian_pattern()
        self._compile_gain_order(pr, pc)
        self._compile_gain_pairs(pr)
        self._x_flat = self._x_from_int(self._flat_vm, self._flat_va)
        #: (x, |V|, Ybus terms, P, Q, flow terms) of the last numpy h(x), reused by the Jacobian at the same x
        self._cache: tuple[Any, ...] | None = None

        def gain() -> np.ndarray:
            H = self._jac_int(self._x_flat.copy())
            return (H.T * self._w) @ H

        require_enough_measurements(self._m, self._n, gain, self.state_bus)
        if self.backend == "numba":
            self._model_args = (
                self._nva,
                self._ref,
                self._va_ref,
                self._nonref,
                vb,
                ib,
                self._er,
                self._ec,
                self._eyc,
                self._eq,
                self._fb,
                self._tb,
                self._yff,
                self._yft,
                self._col_th,
                self._rowptr,
                self._cols,
                self._pcols,
            )
            self._nb_buf = (
                np.empty(self._nb, complex),
                np.empty(len(self._er), complex),
                np.empty(self._ni, complex),
                np.empty(self._nf, complex),
            )

    # --- compilation (construction helpers, in call order) ---------------------------------------------------------
    def _eliminate_aux_buses(self, net_c: pandapowerNet, internal: Any) -> dict[str, Any]:
        """Kron-reduce pandapower's auxiliary buses out of the model; returns the internal model on the kept buses.

        pandapower adds an internal bus without a ``net.bus`` entry at the open end of every line with an open line
        switch (and star points of 3-winding trafos). Such a bus has no injection, no measurement and no place in a
        :class:`grids.powerflow.PowerFlowResult`: kept as a state, its voltage is only weakly determined (through
        the line's charging current) and the true measurements cannot be computed. Eliminating it exactly,
        ``Y_red = Y_RR − Y_RA Y_AA⁻¹ Y_AR`` (its zero injection makes this exact), keeps the open line's charging
        at the closed end. An auxiliary bus with a voltage source (``xward``) is not zero-injection and no
        measurement sees it: it is refused with a clear error (replace the xward by internal elements first).

        Raises:
            EstimationError: the net has an ``xward`` (or another element with an auxiliary voltage source).

        Sets ``self._new_of_old`` (kept internal index of every pandapower internal bus, −1 when eliminated) and
        ``self.n_eliminated_buses``.
        """
        nb0 = int(internal["bus"].shape[0])
        lookup = np.asarray(net_c._pd2ppc_lookups["bus"], dtype=np.int64)
        idx = net_c.bus.index.to_numpy(np.int64)
        lk = lookup[idx[(idx >= 0) & (idx < len(lookup))]]  # only net.bus entries (indices may have gaps)
        lk = lk[(lk >= 0) & (lk < nb0)]
        mapped = np.zeros(nb0, dtype=bool)
        mapped[lk] = True
        gen_bus = np.real(internal["gen"][:, GEN_BUS]).astype(np.int64)
        if not mapped[gen_bus].all():  # an aux bus with a voltage source: not zero-injection, never measured
            aux = net_c._pd2ppc_lookups.get("aux", {})
            xw = np.asarray(aux.get("xward", []), dtype=np.int64)
            names = ""
            if len(xw) == len(net_c.xward):
                hit = np.isin(lookup[xw], gen_bus[~mapped[gen_bus]])
                names = f" {net_c.xward.index[hit].tolist()}"
            raise EstimationError(
                f"xward{names}: state estimation does not model extended wards (their internal bus holds a "
                "voltage source no measurement sees); replace them first, e.g. with "
                "pandapower.toolbox.replace_xward_by_internal_elements(net)"
            )
        keep = np.flatnonzero(mapped)
        drop = np.flatnonzero(~mapped)
        new_of_old = np.full(nb0, -1, dtype=np.int64)
        new_of_old[keep] = np.arange(len(keep))
        self._new_of_old = new_of_old
        self.n_eliminated_buses = len(drop)
        if not len(drop):
            return dict(internal)
        Y = sp.csr_matrix(internal["Ybus"])
        Y_aa = Y[drop][:, drop].tocsc()
        Y_ar = Y[drop][:, keep].toarray()
        Y_ra = Y[keep][:, drop].tocsc()
        try:
            corr = Y_ra @ spla.splu(Y_aa).solve(Y_ar.astype(complex))
        except RuntimeError as err:  # a dangling aux bus without any admittance to the rest
            raise EstimationError(f"cannot eliminate pandapower's auxiliary buses: {err}") from err
        y_red = sp.csr_matrix(Y[keep][:, keep] - corr)
        red = dict(internal)
        red["Ybus"] = y_red
        red["bus"] = internal["bus"][keep]
        red["ref"] = new_of_old[np.asarray(internal["ref"], dtype=np.int64)]
        gen = np.array(internal["gen"], copy=True)
        gen[:, GEN_BUS] = new_of_old[np.real(gen[:, GEN_BUS]).astype(np.int64)]
        red["gen"] = gen
        return red

    def _compile_states(self, internal: Any, no_load_converged: bool) -> None:
        """State layout (non-slack angles, all magnitudes), slack set-points and the flat start.

        The "flat" start is the no-load power flow of the compile run when it converged: it carries the
        transformers' phase shifts (30° per Dyn transformer on CIGRE MV; a 0° start lies 0.5 rad off on the MV side,
        and Gauss–Newton from there does not converge) and tap ratios. On a single-voltage-level feeder without
        shunts it is the classic flat start (slack |V| and angle everywhere).
        """
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
        self._col_th = col_th
        self._col_vm = nva + np.arange(nb)

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
        v0 = np.asarray(internal.get("V", np.zeros(0)), dtype=np.complex128)
        if no_load_converged and len(v0) == len(self._new_of_old):
            v0 = v0[self._new_of_old >= 0]
            if np.isfinite(v0).all() and np.all((np.abs(v0) > 0.5) & (np.abs(v0) < 1.5)):
                self._flat_vm = np.abs(v0)
                self._flat_va = np.angle(v0)
                self._flat_va[ref] = self._va_ref

    def _compile_bus_maps(self, net_c: pandapowerNet) -> tuple[np.ndarray, np.ndarray]:
        """net.bus position <-> internal bus; returns (internal bus of each net.bus position, in the calculation)."""
        nb = self._nb
        lookup = np.asarray(net_c._pd2ppc_lookups["bus"], dtype=np.int64)
        n_old = len(self._new_of_old)
        lookup = np.where((lookup >= 0) & (lookup < n_old), self._new_of_old[np.clip(lookup, 0, n_old - 1)], -1)
        bus_idx = net_c.bus.index.to_numpy(np.int64)
        self._bus_index = bus_idx
        lk = np.full(len(bus_idx), -1, dtype=np.int64)
        inside = (bus_idx >= 0) & (bus_idx < len(lookup))
        lk[inside] = lookup[bus_idx[inside]]
        valid = (lk >= 0) & (lk < nb)
        self._bus_src = np.flatnonzero(valid)  # net.bus positions in the calculation
        self._bus_dst = lk[valid]  # ... their internal bus
        self._bus_identity = len(bus_idx) == nb and bool(valid.all()) and np.array_equal(self._bus_dst, np.arange(nb))
        first = np.full(nb, -1, dtype=np.int64)  # internal bus -> a pandapower bus index (first mapped)
        for s, d in zip(self._bus_src[::-1], self._bus_dst[::-1], strict=True):
            first[d] = bus_idx[s]
        self.va_buses = first[self._nonref]  # pandapower bus of each angle state
        self.vm_buses = first.copy()  # pandapower bus of each magnitude state
        return lk, valid

    def _map_measured_buses(
        self, ms: MeasurementSet, lk: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Internal buses of the voltage and of the injection measurements."""
        pos_of = {int(b): i for i, b in enumerate(self._bus_index)}

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
            dup = [int(b) for b, i in zip(ms.inj_buses, ib, strict=True) if (ib == i).sum() > 1]
            raise EstimationError(
                f"inj_buses: buses {dup} are fused into one node (closed bus-bus switches); "
                "measure the injection of one of them only"
            )
        return vb, ib

    def _map_flow_lines(self, ms: MeasurementSet, net_c: pandapowerNet, internal: Any) -> np.ndarray:
        """Internal branch rows of the measured lines, their end buses and from-side admittances; returns the rows."""
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
        fb, tb = self._new_of_old[fb], self._new_of_old[tb]
        if len(br) and (fb.min() < 0 or tb.min() < 0):
            bad = [int(k) for k, f, t in zip(ms.flow_lines, fb, tb, strict=True) if f < 0 or t < 0]
            raise EstimationError(f"flow_lines: lines {bad} have an open switch at one end (no flow to measure)")
        self._fb, self._tb = fb, tb
        return br

    def _compile_layout(self, ms: MeasurementSet, vb: np.ndarray, ib: np.ndarray, br: np.ndarray) -> None:
        """Measurement vector layout, physical scales and weights; at least as many measurements as states."""
        nv, ni, nf = len(vb), len(ib), len(br)
        m = nv + 2 * ni + 2 * nf
        self._vb, self._ib = vb, ib
        self._nv, self._ni, self._nf, self._m = nv, ni, nf, m
        self._o_p, self._o_q = nv, nv + ni
        self._o_pf, self._o_qf = nv + 2 * ni, nv + 2 * ni + nf
        # physical scale of each measurement (pu -> pu/MW/MVAr) and weights in pu
        scale = np.concatenate([np.ones(nv), np.full(2 * ni + 2 * nf, self._base)])
        self._scale = scale
        self._sigma = ms.sigma
        self._sigma_pu = self._sigma / scale
        self._w = 1.0 / self._sigma_pu**2
        self.labels = ms.labels

    def _compile_injection_pattern(self, internal: Any) -> None:
        """Ybus entries of the measured injection rows (every diagonal included)."""
        nb, ni, ib = self._nb, self._ni, self._ib
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

    def _compile_jacobian_pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat positions of every value group of the dense H (C order) and its CSR pattern; returns (rows, cols)."""
        n, m, nv, ni, nf = self._n, self._m, self._nv, self._ni, self._nf
        col_th, col_vm = self._col_th, self._col_vm
        ec, eq, ib, fb, tb, vb = self._ec, self._eq, self._ib, self._fb, self._tb, self._vb

        def flat(row: np.ndarray, col: np.ndarray) -> np.ndarray:
            return (row * n + col).astype(np.int64)

        th_e = np.flatnonzero(col_th[ec] >= 0)  # injection entries with an angle state column
        self._th_e = th_e
        p_rows, q_rows = self._o_p + eq, self._o_q + eq
        pos_inj = np.concatenate(
            [
                flat(p_rows[th_e], col_th[ec[th_e]]),
                flat(q_rows[th_e], col_th[ec[th_e]]),
                flat(p_rows, col_vm[ec]),
                flat(q_rows, col_vm[ec]),
            ]
        )
        # diagonal corrections: θ_i (if non-ref) and |V_i| of the measured bus i
        d_bus = ib
        d_th = np.flatnonzero(col_th[d_bus] >= 0)
        self._d_th = d_th
        q_ar = np.arange(ni)
        pos_diag = np.concatenate(
            [
                flat(self._o_p + q_ar[d_th], col_th[d_bus[d_th]]),
                flat(self._o_q + q_ar[d_th], col_th[d_bus[d_th]]),
                flat(self._o_p + q_ar, col_vm[d_bus]),
                flat(self._o_q + q_ar, col_vm[d_bus]),
            ]
        )
        # flows
        f_ar = np.arange(nf)
        f_th = np.flatnonzero(col_th[fb] >= 0)
        t_th = np.flatnonzero(col_th[tb] >= 0)
        self._f_th, self._t_th = f_th, t_th
        pf_rows, qf_rows = self._o_pf + f_ar, self._o_qf + f_ar
        pos_flow = np.concatenate(
            [
                flat(pf_rows[f_th], col_th[fb[f_th]]),
                flat(qf_rows[f_th], col_th[fb[f_th]]),
                flat(pf_rows[t_th], col_th[tb[t_th]]),
                flat(qf_rows[t_th], col_th[tb[t_th]]),
                flat(pf_rows, col_vm[fb]),
                flat(qf_rows, col_vm[fb]),
                flat(pf_rows, col_vm[tb]),
                flat(qf_rows, col_vm[tb]),
            ]
        )
        self._pos_main = np.concatenate([pos_inj, pos_flow])
        self._pos_diag = pos_diag
        pos_v = flat(np.arange(nv), col_vm[vb])
        self._H = np.zeros((m, n))
        self._H.flat[pos_v] = 1.0  # ∂|V|/∂|V| (constant)
        self._hx = np.empty(m)
        # CSR pattern of H (row pointers, column indices) for the compiled gain matrix and gradient
        pattern = np.zeros(m * n, dtype=bool)
        pattern[np.concatenate([pos_v, self._pos_main, pos_diag])] = True
        pr, pc = np.divmod(np.flatnonzero(pattern), n)
        self._rowptr = np.searchsorted(pr, np.arange(m + 1)).astype(np.int64)
        self._cols = pc.astype(np.int64)
        return pr, pc

    def _compile_gain_order(self, pr: np.ndarray, pc: np.ndarray) -> None:
        """Fill-reducing (reverse Cuthill–McKee) state order and envelope of the gain matrix (compiled path)."""
        n, m = self._n, self._m
        hp = sp.csr_matrix((np.ones(len(pc)), (pr, pc)), shape=(m, n))
        gp = (hp.T @ hp).tocsr()
        perm = np.asarray(reverse_cuthill_mckee(gp, symmetric_mode=True), dtype=np.int64)
        iperm = np.empty(n, dtype=np.int64)
        iperm[perm] = np.arange(n)
        gpc = gp.tocoo()
        first = np.arange(n, dtype=np.int64)
        np.minimum.at(first, iperm[gpc.row], iperm[gpc.col])
        self._perm, self._first, self._pcols = perm, first, iperm[self._cols]

    def _compile_gain_pairs(self, pr: np.ndarray) -> None:
        """numpy path: G = Σ_k w_k h_k h_kᵀ over the nonzero pairs of each row of H.

        (A dense Hᵀ W H product would go to multi-threaded BLAS, which is 10-20x slower than single-threaded on a
        busy 2-core machine.)
        """
        n, m = self._n, self._m
        counts = np.diff(self._rowptr)
        pk = np.repeat(np.arange(m), counts**2)
        starts = np.repeat(self._rowptr[:-1], counts**2)
        within = np.arange(len(pk)) - np.repeat(np.cumsum(counts**2) - counts**2, counts**2)
        ia = starts + within // np.repeat(counts, counts**2)
        ib_ = starts + within % np.repeat(counts, counts**2)
        ca, cb = self._cols[ia], self._cols[ib_]
        self._g_flat_a = pr[ia] * n + ca  # flat positions in H of both factors
        self._g_flat_b = pr[ib_] * n + cb
        self._g_w = pk
        self._g_pos = ca * n + cb  # flat position in G

    # --- sizes and names -----------------------------------------------------------------------------------------
    def state_bus(self, k: int) -> int:
        """pandapower bus of state entry ``k`` (angle or magnitude)."""
        return int(self.va_buses[k] if k < self._nva else self.vm_buses[k - self._nva])

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

    # --- conversions ---------------------------------------------------------------------------------------------
    def _x_from_int(self, vm_int: np.ndarray, va_int: np.ndarray) -> np.ndarray:
        return np.concatenate([va_int[self._nonref], vm_int])

    def _int_from_x(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        va = np.empty(self._nb)
        va[self._ref] = self._va_ref
        va[self._nonref] = x[: self._nva]
        return x[self._nva :], va

    def _int_from_bus(self, vm_pu: Any, va_rad: Any) -> tuple[np.ndarray, np.ndarray]:
        n_bus = len(self._bus_index)
        vm = np.asarray(vm_pu, dtype=np.float64)
        va = np.asarray(va_rad, dtype=np.float64)
        if vm.shape != (n_bus,) or va.shape != (n_bus,):
            raise EstimationError(
                f"vm_pu and va_rad must have shape ({n_bus},) (net.bus order), got {vm.shape} and {va.shape}"
            )
        vi = np.full(self._nb, np.nan)  # an internal bus no net.bus maps to must not pass unnoticed
        ai = np.full(self._nb, np.nan)
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
        hx[: self._nv] = vm[self._vb]
        hx[self._o_p : self._o_q] = P
        hx[self._o_q : self._o_pf] = Q
        hx[self._o_pf : self._o_qf] = Sf.real
        hx[self._o_qf :] = Sf.imag
        self._cache = (x, vm, W, P, Q, A, B, vmf)
        return hx

    def _jac_int(self, x: np.ndarray) -> np.ndarray:
        """Jacobian of h in per unit at x (dense, shared buffer)."""
        c = self._cache
        if c is None or c[0] is not x:
            self._h_int(x)
            c = self._cache
            assert c is not None  # set by _h_int
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
        vals = np.concatenate(
            [Wi[th], -Wr[th], Wr * ivj, Wi * ivj, -Bi[ft], Br[ft], Bi[tt], -Br[tt], Df.real, Df.imag, Dt.real, Dt.imag]
        )
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
            nb_h(x, *self._model_args[:14], hx, *self._nb_buf)
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
        if vm_pu is None or va_rad is None:
            return self._jac_int(self._x_flat.copy()) * self._scale[:, None]
        return self.jacobian(vm_pu, va_rad)

    # --- measurements and attacks ---------------------------------------------------------------------------------
    def measure(
        self, pf: PowerFlowResult | tuple[np.ndarray, np.ndarray], rng: np.random.Generator, *, noise: bool = True
    ) -> np.ndarray:
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

    def stealthy_attack(self, vm_pu: np.ndarray, va_rad: np.ndarray, c: np.ndarray, *, form: str = "ac") -> np.ndarray:
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
