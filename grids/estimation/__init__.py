"""Weighted-least-squares state estimation and bad-data detection for the DSO, compiled once from a pandapower net.

The DSO sees the grid only through measurements. Every market step of a Monte Carlo campaign it estimates the
state from them and tests the result for bad data, so the estimator must be cheap. :class:`StateEstimator` builds
everything from pandapower's internal model *once* (``Ybus``, ``Yf``, ``Yt`` of the compile run, as
:class:`grids.powerflow.FastPowerFlow` does) and then solves each measurement snapshot with Gauss–Newton on plain
numpy arrays::

    ms = MeasurementSet.default(net)                 # all node injections, V at substations/feeder ends, trunk flows
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
  The slack angle(s) are fixed at the ext_grid set-point; the slack magnitude is estimated. pandapower's auxiliary
  buses (open end of a line with an open switch, 3-winding star points) are eliminated exactly by Kron reduction
  of their zero injection (:attr:`StateEstimator.n_eliminated_buses`); ``xward`` is refused (its auxiliary bus holds
  a voltage source no measurement sees). Out-of-service and isolated buses are outside the model (NaN in results).
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
"flat" start: the no-load power flow, which carries transformer phase shifts and tap ratios; on a feeder without
transformers or shunts it is the classic flat start). Convergence: largest state update ≤ ``tol``; a converged state with an implausible ``|V|``
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
disk in ``grids/estimation/__pycache__``).

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
measurements are independent (diagonal ``R``); no zero-injection constraints on ``net.bus`` buses (measure
zero-injection buses as injections with a small σ instead); measurement accuracies are absolute (same σ at every
voltage level). Networks beyond case33bw (CIGRE MV, MV Oberrhein, SimBench MV, a trafo3w network, out-of-service
buses) are covered by ``tests/test_estimation_grids.py``.

Layout: :mod:`~grids.estimation.measurement` (what is measured), :mod:`~grids.estimation.model` (``h``, ``H``,
measurements and attacks), :mod:`~grids.estimation.observability`, :mod:`~grids.estimation.wls` (Gauss–Newton),
:mod:`~grids.estimation.detection` (χ² / rN tests and :class:`StateEstimator`), :mod:`~grids.estimation.kernels`
(the compiled loop). Everything public is importable from :mod:`grids.estimation`.
"""

from __future__ import annotations

from grids.estimation.detection import Detection, StateEstimator
from grids.estimation.errors import EstimationError, NotObservableError
from grids.estimation.kernels import HAVE_NUMBA
from grids.estimation.measurement import MeasurementSet
from grids.estimation.model import MeasurementModel
from grids.estimation.wls import EstimateResult, WlsEstimator

#: Whether the compiled (numba) backend is available; the old private name, kept for callers and tests.
_HAVE_NUMBA = HAVE_NUMBA

__all__ = [
    "MeasurementSet",
    "StateEstimator",
    "EstimateResult",
    "Detection",
    "EstimationError",
    "NotObservableError",
    "MeasurementModel",
    "WlsEstimator",
    "HAVE_NUMBA",
]
