"""Compiled Gauss–Newton kernels (numba) of the WLS state estimator: one call per estimate.

Same algorithm as the numpy path of :class:`grids.estimation.StateEstimator` (see the package docstring); all
quantities in per unit. ``HAVE_NUMBA`` says whether the kernels exist (numba importable).
"""

from __future__ import annotations

import numpy as np

__all__ = ["HAVE_NUMBA", "STATUS_MESSAGE", "nb_h", "nb_jac", "nb_factor", "nb_solve", "nb_estimate", "nb_omega"]

#: Why a Gauss–Newton run stopped, by kernel status (0 converged, 1 iteration limit, 2 singular, 3 diverged).
STATUS_MESSAGE = (
    "",
    "no convergence in {max_iter} iterations",
    "gain matrix singular at iteration {it} (measurement set not observable here)",
    "diverged at iteration {it} (non-finite update)",
)

try:  # numba is a pinned dependency (pandapower uses it); the numpy path is the fallback and the cross-check
    import numba as _nb

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

if HAVE_NUMBA:

    @_nb.njit(cache=True, nogil=True)
    def nb_h(x, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, hx, V, W, S, B):
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
    def nb_jac(x, nva, vb, ib, er, ec, eq, fb, tb, yff, col_th, H, W, S, B):
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
    def nb_factor(H, w, rowptr, cols, pcols, first, L):
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
    def nb_solve(L, first, y):
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
    def nb_estimate(
        x,
        zp,
        w,
        tol,
        max_iter,
        refactor_ratio,
        reuse_below,
        max_step,
        L,
        have_L,
        nva,
        ref,
        va_ref,
        nonref,
        vb,
        ib,
        er,
        ec,
        eyc,
        eq,
        fb,
        tb,
        yff,
        yft,
        col_th,
        rowptr,
        cols,
        pcols,
        perm,
        first,
        H,
        hx,
        r,
    ):
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
            nb_h(x, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, hx, V, W, S, B)
            for k in range(m):
                r[k] = zp[k] - hx[k]
            nb_jac(x, nva, vb, ib, er, ec, eq, fb, tb, yff, col_th, H, W, S, B)
            fresh = False
            if not have_L:
                if not nb_factor(H, w, rowptr, cols, pcols, first, L):
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
            nb_solve(L, first, g)
            step = 0.0
            for c in range(n):
                step = max(step, abs(g[c]))
            if not fresh and not (step <= reuse_below and step <= refactor_ratio * prev):
                # the kept gain matrix is not good enough here: re-factor at x and solve again
                if not nb_factor(H, w, rowptr, cols, pcols, first, L):
                    return 2, it, False, np.nan
                for c in range(n):
                    g[c] = g0[c]
                nb_solve(L, first, g)
                step = 0.0
                for c in range(n):
                    step = max(step, abs(g[c]))
            if not np.isfinite(step):
                return 3, it, True, np.nan
            if step <= tol:
                # the last (sub-tolerance) update is applied too
                for c in range(n):
                    x[perm[c]] += g[c]
                nb_h(x, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, hx, V, W, S, B)
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
    def nb_omega(
        x,
        w,
        nva,
        ref,
        va_ref,
        nonref,
        vb,
        ib,
        er,
        ec,
        eyc,
        eq,
        fb,
        tb,
        yff,
        yft,
        col_th,
        rowptr,
        cols,
        pcols,
        first,
        L,
        H,
        hx,
        omega,
    ):
        """Residual variances Ω_kk = σ_k² − h_kᵀ G⁻¹ h_k at x (pu²) into omega; False if G is singular there."""
        n = x.shape[0]
        V = np.empty(n - nva, dtype=np.complex128)
        W = np.empty(er.shape[0], dtype=np.complex128)
        S = np.empty(ib.shape[0], dtype=np.complex128)
        B = np.empty(fb.shape[0], dtype=np.complex128)
        nb_h(x, nva, ref, va_ref, nonref, vb, ib, er, ec, eyc, eq, fb, tb, yff, yft, hx, V, W, S, B)
        nb_jac(x, nva, vb, ib, er, ec, eq, fb, tb, yff, col_th, H, W, S, B)
        if not nb_factor(H, w, rowptr, cols, pcols, first, L):
            return False
        y = np.zeros(n)
        for k in range(H.shape[0]):
            lo = n
            for a in range(rowptr[k], rowptr[k + 1]):
                y[pcols[a]] = H[k, cols[a]]
                lo = min(lo, pcols[a])
            q = 0.0
            for i in range(lo, n):  # forward solve L y = h_k (sparse right-hand side starts at lo)
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
