"""Weighted-least-squares state estimation by Gauss–Newton: :class:`WlsEstimator` and :class:`EstimateResult`.

The solver (kept gain factor, step cap, warm start, plausibility check) is described in the package docstring
(:mod:`grids.estimation`); bad-data tests are added by :class:`grids.estimation.StateEstimator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pandapower.auxiliary import pandapowerNet
from scipy.linalg import lapack

from grids.estimation.errors import EstimationError, NotObservableError
from grids.estimation.kernels import HAVE_NUMBA, STATUS_MESSAGE
from grids.estimation.measurement import MeasurementSet
from grids.estimation.model import MeasurementModel
from grids.estimation.observability import unobservable_message

if HAVE_NUMBA:
    from grids.estimation.kernels import nb_estimate

__all__ = ["EstimateResult", "WlsEstimator", "MAX_STEP"]

#: Largest state update per Gauss–Newton step [pu or rad] (pandapower uses the same cap).
MAX_STEP = 0.35


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


class WlsEstimator(MeasurementModel):
    """AC weighted-least-squares state estimator (Gauss–Newton) on a compiled :class:`MeasurementModel`.

    Observability is checked at the flat start: a rank-deficient gain matrix raises :class:`NotObservableError`.
    """

    #: A kept (not freshly factored) gain matrix is used for a step only if that step is at most this factor of
    #: the previous step ...
    refactor_ratio: float = 0.25
    #: ... and at most this large [pu or rad]; otherwise the gain is re-factored at the current iterate.
    reuse_below: float = 1e-3
    #: A converged estimate with any |V| outside this open interval [pu] is reported as not converged (e.g. an
    #: all-zero measurement vector from a dead telemetry feed fits the zero-voltage state exactly).
    vm_plausible_pu: tuple[float, float] = (0.5, 1.5)

    def __init__(
        self, net: pandapowerNet, ms: MeasurementSet, *, tol: float = 1e-8, max_iter: int = 20, backend: str = "auto"
    ) -> None:
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
        super().__init__(net, ms, backend=backend)
        self.tol = float(tol)
        self.max_iter = int(max_iter)

        self._potrf = lapack.get_lapack_funcs("potrf", (np.zeros((1, 1)),))
        self._potrs = lapack.get_lapack_funcs("potrs", (np.zeros((1, 1)),))
        self._potri = lapack.get_lapack_funcs("potri", (np.zeros((1, 1)),))

        # --- observability at the flat start ------------------------------------------------------------------------
        x_flat = self._x_flat
        cf, H = self._factor(x_flat)
        if cf is None:
            raise NotObservableError(unobservable_message((H.T * self._w) @ H, self.state_bus))
        self._x_warm = x_flat.copy()
        self._cf: np.ndarray | None = None  # numpy path: reused gain factor (upper)
        self._L = np.zeros((self._n, self._n))  # numba path: reused gain factor (lower)
        self._have_L = False
        self._r = np.empty(self._m)

    def reset_warm_start(self) -> None:
        """Forget the last estimate and gain factor; the next call starts from the flat start."""
        self._x_warm = self._x_flat.copy()
        self._cf = None
        self._have_L = False

    # --- estimation ------------------------------------------------------------------------------------------------
    def _factor(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Cholesky factor (upper) of the gain matrix at x, or None when a pivot is ≤ 1e-12 of its diagonal."""
        H = self._jac_int(x)
        Hf = H.ravel()
        G = np.bincount(
            self._g_pos,
            weights=self._w[self._g_w] * Hf[self._g_flat_a] * Hf[self._g_flat_b],
            minlength=self._n * self._n,
        ).reshape(self._n, self._n)
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
        z, x = self._checked_inputs(z, x0)
        zp = z / self._scale
        if self.backend == "numba":
            status, it, self._have_L, obj = nb_estimate(
                x,
                zp,
                self._w,
                self.tol,
                self.max_iter,
                self.refactor_ratio,
                self.reuse_below,
                MAX_STEP,
                self._L,
                self._have_L,
                *self._model_args,
                self._perm,
                self._first,
                self._H,
                self._hx,
                self._r,
            )
            self._cache = None
            converged = status == 0
            if converged:
                message = ""
                res = self._r * self._scale
            else:
                message = STATUS_MESSAGE[status].format(it=it, max_iter=self.max_iter)
        else:
            converged, it, r, x, message = self._estimate_numpy(zp, x)
            if converged:
                res = r * self._scale
                obj = float(np.dot(self._w * r, r))
        if converged:
            lo, hi = self.vm_plausible_pu
            vmx = x[self._nva :]
            if not (vmx.min() > lo and vmx.max() < hi):
                k = int(np.argmin(vmx)) if vmx.min() <= lo else int(np.argmax(vmx))
                converged = False
                message = (
                    f"converged to a non-physical state: |V| = {vmx[k]:.3g} pu at bus {self.vm_buses[k]} "
                    f"(plausible range {lo}–{hi} pu); the measurements are inconsistent with any operating "
                    "point"
                )
        if converged:
            self._x_warm = x
        else:
            self._have_L, self._cf = False, None  # never reuse a gain matrix from a failed iterate
            res = np.full(self._m, np.nan)
            obj = float("nan")
        vm_i, va_i = self._int_from_x(x)
        if self._bus_identity:
            vm, va = vm_i.copy(), va_i
        else:
            vm, va = self._bus_from_int(vm_i, va_i)
        return EstimateResult(converged, it, vm, va, res, float(obj), x.copy(), message)

    def _checked_inputs(self, z: np.ndarray, x0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``z`` as float64 and the start state (``x0``, or a copy of the warm start), checked for shape and NaN."""
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
        return z, x

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
                    return False, it, r, x, STATUS_MESSAGE[2].format(it=it)
                fresh = True
            else:
                H = self._jac_int(x)
            g = H.T @ (w * r)
            dx, _ = self._potrs(self._cf, g)
            step = float(np.abs(dx).max()) if dx.size else 0.0
            if not fresh and not (step <= self.reuse_below and step <= self.refactor_ratio * prev):
                self._cf, H = self._factor(x)
                if self._cf is None:
                    return False, it, r, x, STATUS_MESSAGE[2].format(it=it)
                dx, _ = self._potrs(self._cf, g)
                step = float(np.abs(dx).max()) if dx.size else 0.0
            if not np.isfinite(step):
                return False, it, r, x, STATUS_MESSAGE[3].format(it=it)
            if step <= self.tol:
                # the last (sub-tolerance) update is applied too: x then satisfies the normal equations to ~tol
                x = x + dx
                return True, it, zp - self._h_int(x), x, ""
            if it >= self.max_iter:
                return False, it, r, x, STATUS_MESSAGE[1].format(max_iter=self.max_iter)
            if step > MAX_STEP:
                dx *= MAX_STEP / step
            x = x + dx
            it += 1
            prev = step
