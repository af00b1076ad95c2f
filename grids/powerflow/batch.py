"""Many load snapshots of one network at once: chord Newton iterations on a shared Jacobian.

`FastPowerFlow.solve` factorises a fresh Jacobian in every Newton iteration of every snapshot. For a batch (the
steps of a day, the perturbations of a sensitivity table, the trials of a study) the snapshots share the
network, so :func:`solve_batch` iterates them *together*: one mismatch evaluation for all of them (``Y @ V`` on a
bus × snapshot matrix), one LU factorisation of the Jacobian at a shared operating point, and one triangular solve
with a right-hand side per snapshot — the *chord* (simplified Newton) method. The shared Jacobian is refreshed at
the mean voltages of the snapshots still iterating every `REFRESH` iterations, so the linear convergence of the
chord method stays fast over a day's load range.

Nothing is relaxed on the way out: every snapshot converged this way must pass the same acceptance test as
`FastPowerFlow.solve` (finite, plausible magnitudes, operable branch by the sign of its *own* Jacobian's
determinant), and every snapshot that does not converge within `MAX_CHORD` iterations, diverges or fails the
test is solved again by `FastPowerFlow.solve` with its whole safety net (retries, pandapower start points).
Results agree with `solve` to the convergence tolerance (tests/test_powerflow_batch.py).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack, lu_factor, lu_solve
from scipy.sparse.csgraph import reverse_cuthill_mckee
from scipy.sparse.linalg import splu

from grids.powerflow.common import PowerFlowResult

if TYPE_CHECKING:
    from grids.powerflow.fast import FastPowerFlow

MAX_CHORD = 40  # chord iterations before a snapshot is handed to `FastPowerFlow.solve`
REFRESH = 4  # iterations between refactorisations of the shared Jacobian
DIVERGED = 10.0  # a mismatch this many times a snapshot's first one ends its chord attempt


def _specified(engine: FastPowerFlow, P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Specified injections [pu], internal bus order × snapshot (as `FastPowerFlow.solve` builds them)."""
    n, base = engine._n_int, engine._base_mva
    if engine._in_gather is not None:
        g = engine._in_gather
        load = (P[:, g] + 1j * Q[:, g]).T
    else:
        load = np.zeros((n, P.shape[0]), dtype=np.complex128)
        np.add.at(load, engine._bus_dst, (P[:, engine._bus_src] + 1j * Q[:, engine._bus_src]).T)
    return engine._s_fixed[:, None] - load / base


class _SharedJacobian:
    """LU factors of the polar Jacobian at one voltage vector, solving for many right-hand sides at once."""

    def __init__(self, engine: FastPowerFlow, V: np.ndarray) -> None:
        vals = np.empty_like(engine._jvals)
        engine._jacobian_values(vals, V, V * np.conj(engine._Y @ V), np.abs(V))
        if not np.isfinite(vals).all():
            raise np.linalg.LinAlgError("non-finite Jacobian")
        dim = engine._dim
        if engine._dense:
            J = np.zeros((dim, dim), order="F")
            J.T.reshape(-1)[engine._jflat] = vals
            self._lu = lu_factor(J, check_finite=False)
            self._splu = None
        else:
            Js = sp.csc_matrix(engine._J, copy=True)
            Js.data[:] = vals[engine._jperm]
            self._splu = splu(Js)

    def solve(self, F: np.ndarray) -> np.ndarray:
        if self._splu is not None:
            return self._splu.solve(F)
        return lu_solve(self._lu, F, check_finite=False)


def _chord(engine: FastPowerFlow, s_spec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Iterate every snapshot from the warm start; returns (V, S, converged, iterations) per snapshot."""
    m, npv, dim = engine._m, engine._npv, engine._dim
    tol_pu = engine.tol_mva / engine._base_mva
    k = s_spec.shape[1]
    V = np.repeat(engine._v_warm[:, None], k, axis=1)
    Va, Vm = np.angle(V), np.abs(V)
    its = np.zeros(k, dtype=np.int64)
    done = np.zeros(k, dtype=bool)
    alive = np.ones(k, dtype=bool)
    S = V * np.conj(engine._Y @ V)
    jac: _SharedJacobian | None = None
    first = np.zeros(k)
    for it in range(MAX_CHORD + 1):
        mis = S - s_spec
        F = np.concatenate([mis.real[:m], mis.imag[npv:m]]) if dim else np.zeros((0, k))
        norm = np.abs(F).max(axis=0) if dim else np.zeros(k)
        if it == 0:
            first = np.maximum(norm, tol_pu)
        finite = np.isfinite(norm)
        done |= alive & finite & (norm < tol_pu)
        alive &= finite & (norm < DIVERGED * first) & ~done
        if not alive.any() or it == MAX_CHORD:
            break
        act = np.flatnonzero(alive)
        # refreshed after each of the first steps (the warm start may be far from the batch), then every REFRESH
        if jac is None or it % REFRESH == 0:
            try:
                jac = _SharedJacobian(engine, V[:, act].mean(axis=1))
            except (np.linalg.LinAlgError, RuntimeError, ValueError):
                break  # what is left goes to `solve`
        dx = jac.solve(F[:, act])
        Va[:m, act] -= dx[:m]
        Vm[npv:m, act] -= dx[m:]
        V[:, act] = Vm[:, act] * np.exp(1j * Va[:, act])
        S[:, act] = V[:, act] * np.conj(engine._Y @ V[:, act])
        its[act] += 1
    return V, S, done, its


DENSE_SIGN_MAX_DIM = 400  # up to this Jacobian dimension the branch signs come from banded LUs


def _acceptable(engine: FastPowerFlow, V: np.ndarray, S: np.ndarray) -> np.ndarray:
    """`FastPowerFlow._acceptable` for every column of ``V`` (with its injections ``S``): finite, magnitudes in
    the plausible band, and the sign of det(J) at the column equal to the operable branch's. Up to
    `DENSE_SIGN_MAX_DIM` the signs come from one banded LU per snapshot (LAPACK ``gbtrf`` on the Jacobian in
    reverse Cuthill–McKee order, which keeps det; 3× cheaper than a dense LU on case118); above it from the engine's
    own test, column by column."""
    from grids.powerflow.common import VM_PLAUSIBLE_PU

    lo, hi = VM_PLAUSIBLE_PU
    vm = np.abs(V)
    ok = np.isfinite(V).all(axis=0) & np.isfinite(S).all(axis=0)
    ok &= (np.nan_to_num(vm, nan=0.0).min(axis=0) >= lo) & (np.nan_to_num(vm, nan=np.inf).max(axis=0) <= hi)
    dim, want = engine._dim, engine._branch_sign
    if want == 0 or dim == 0 or not ok.any():
        return ok
    cols = np.flatnonzero(ok)
    if dim > DENSE_SIGN_MAX_DIM:
        ok[cols] = [engine._acceptable(V[:, j]) for j in cols]
        return ok
    vals = np.empty((len(engine._jvals), len(cols)))
    engine._jacobian_values(vals, V[:, cols], S[:, cols], vm[:, cols])
    ok[cols] = np.isfinite(vals).all(axis=0)
    band = _band(engine)
    ab = np.zeros((2 * band.kl + band.ku + 1, dim), order="F")
    for i, j in enumerate(cols):
        if ok[j]:
            ab.fill(0.0)
            ab[band.rows, band.cols] = vals[:, i]
            lu, piv, info = band.gbtrf(ab, band.kl, band.ku, overwrite_ab=True)
            d = lu[band.kl + band.ku]  # U's diagonal; piv: 0-based row interchanges
            neg = np.count_nonzero(d < 0) + np.count_nonzero(piv != band.eye)
            ok[j] = info == 0 and (-1 if neg % 2 else 1) == want
    return ok


class _Band(NamedTuple):
    """The Jacobian pattern in LAPACK band storage after a symmetric reverse Cuthill–McKee reordering."""

    kl: int  # sub-diagonals
    ku: int  # super-diagonals
    rows: np.ndarray  # band-storage row of each pattern entry (``engine._jvals`` order)
    cols: np.ndarray  # its column
    eye: np.ndarray  # arange(dim): LU pivots that interchange nothing
    gbtrf: Any


_bands: weakref.WeakKeyDictionary[FastPowerFlow, _Band] = weakref.WeakKeyDictionary()


def _band(engine: FastPowerFlow) -> _Band:
    """The engine's `_Band`, made once (a permutation P applied to rows and columns keeps det: det(P)² = 1)."""
    if engine not in _bands:
        dim = engine._dim
        if engine._dense:
            r, c = np.unravel_index(engine._jflat, (dim, dim), order="F")
        else:
            Jc = sp.coo_matrix(engine._J)  # the CSC pattern built in FastPowerFlow.__init__
            order = np.argsort(engine._jperm)  # pattern entry i sits at CSC data position jperm[i]
            r, c = Jc.row[order], Jc.col[order]
        A = sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(dim, dim))
        perm = reverse_cuthill_mckee((A + A.T).tocsr(), symmetric_mode=True)
        inv = np.empty(dim, dtype=np.int64)
        inv[perm] = np.arange(dim)
        pr, pc = inv[r], inv[c]
        kl, ku = int(max(0, (pr - pc).max())), int(max(0, (pc - pr).max()))
        gbtrf = lapack.get_lapack_funcs("gbtrf", (np.zeros(1),))
        _bands[engine] = _Band(kl, ku, kl + ku + pr - pc, pc, np.arange(dim), gbtrf)
    return _bands[engine]


_blas: Any = None  # threadpoolctl's controller of the loaded BLAS libraries, made on first use (~40 ms)


def _one_blas_thread() -> Any:
    """A context in which BLAS/LAPACK run on one thread. The batch's dense products and factorisations are small
    (dimension ≤ a few hundred): OpenBLAS's threads cost more than they give, and on a shared machine their
    spin-waiting made a case118 snapshot 69 ms instead of 0.37 ms (measured)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def solve_batch(engine: FastPowerFlow, P: np.ndarray, Q: np.ndarray) -> list[PowerFlowResult]:
    """Solve snapshots ``P``, ``Q`` (net load [MW] / [Mvar], shape (n_snap, n_bus), checked by the caller) together.

    Every snapshot starts from the engine's warm start; snapshots are accepted in order, so the warm start after
    the call is the last accepted snapshot's solution, as with a loop over `FastPowerFlow.solve`. A snapshot the
    chord iterations do not settle is solved by `FastPowerFlow.solve` (its ``method`` says which attempt won).
    """
    if P.shape[0] == 0:
        return []
    s_spec = _specified(engine, P, Q)
    with _one_blas_thread():
        V, S, done, its = _chord(engine, s_spec)
        good = np.zeros_like(done)
        if done.any():
            good[done] = _acceptable(engine, V[:, done], S[:, done])
    out: list[PowerFlowResult] = []
    for j in range(P.shape[0]):
        if good[j]:
            out.append(engine._accept(V[:, j], S[:, j], s_spec[:, j], int(its[j]), "fast"))
        else:
            engine.n_rejected += int(done[j])
            out.append(engine.solve(P[j], Q[j]))
    return out
