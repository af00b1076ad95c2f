"""Bad-data detection: χ² test on the WLS objective and largest normalised residual; :class:`StateEstimator`.

:class:`StateEstimator` is the WLS estimator (:class:`grids.estimation.wls.WlsEstimator`) with the bad-data tests
of the package docstring (:mod:`grids.estimation`): χ² first, rN identification only behind the χ² gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pandapower.auxiliary import pandapowerNet
from scipy.stats import chi2 as _chi2

from grids.estimation.errors import EstimationError
from grids.estimation.kernels import HAVE_NUMBA
from grids.estimation.measurement import MeasurementSet
from grids.estimation.wls import EstimateResult, WlsEstimator

if HAVE_NUMBA:
    from grids.estimation.kernels import nb_omega

__all__ = ["Detection", "StateEstimator", "CRITICAL_REL"]

#: Ω_ii / σ_i² below this marks a critical measurement (residual identically ~0).
CRITICAL_REL = 1e-8


@dataclass(frozen=True)
class Detection:
    """Outcome of :meth:`StateEstimator.detect` for one measurement snapshot.

    Attributes:
        flagged: bad data declared: the χ² test flags, or the estimate did not converge (data the DSO cannot
            validate count as an alarm). Callers that count χ² alarms check ``converged`` as well: the
            co-simulation counts non-converged steps apart (``se_nonconverged_steps``), not as alarms.
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


class StateEstimator(WlsEstimator):
    """AC weighted-least-squares state estimator with χ² / largest-normalised-residual bad-data tests.

    Construction deep-copies the net, runs pandapower once (loads switched off; only the admittance matrices are
    used) and precomputes index maps of ``h(x)`` and of the Jacobian's sparsity pattern. Observability is checked
    at the flat start: a rank-deficient gain matrix raises :class:`NotObservableError`.
    """

    def __init__(
        self, net: pandapowerNet, ms: MeasurementSet, *, tol: float = 1e-8, max_iter: int = 20, backend: str = "auto"
    ) -> None:
        """Compile the estimator (arguments and errors as `WlsEstimator`) and the detection buffers."""
        super().__init__(net, ms, tol=tol, max_iter=max_iter, backend=backend)
        self._chi2_cache: dict[tuple[float, int], float] = {}
        if self.backend == "numba":
            self._omega = np.empty(self._m)

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
            raise EstimationError(
                f"no redundancy: {self._m} measurements for {self._n} states, the χ² test needs m > n"
            )
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
        var = self._sigma_pu**2
        if self.backend == "numba":
            omega = self._omega
            L = np.empty_like(self._L)
            if not nb_omega(x, self._w, *self._model_args, self._first, L, self._H, self._hx, omega):
                raise EstimationError("gain matrix singular at the estimate")
            self._cache = None
        else:
            self._h_int(x)
            cf, H = self._factor(x)
            if cf is None:
                raise EstimationError("gain matrix singular at the estimate")
            ginv, info = self._potri(cf, lower=False)  # upper triangle of G⁻¹
            if info != 0:
                raise EstimationError("gain matrix singular at the estimate")
            ginv = np.triu(ginv) + np.triu(ginv, 1).T
            Hf = H.ravel()
            q = np.bincount(
                self._g_w,
                weights=Hf[self._g_flat_a] * ginv.ravel()[self._g_pos] * Hf[self._g_flat_b],
                minlength=self._m,
            )  # h_k G⁻¹ h_kᵀ over the row's nonzeros
            omega = var - q
        crit = omega <= CRITICAL_REL * var
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
