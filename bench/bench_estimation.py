"""Benchmark: DSO state estimation + bad-data detection per market step vs the power-flow step, case33bw.

Measured in this run, step by step over ``--days`` days of 15-minute steps (zonal load profile of the default
feeder, each bus ±10 % random per step so that every step is a new operating point):

* the fast power flow (:class:`grids.powerflow.FastPowerFlow`, warm-started) — the step the DSO already pays;
* ``StateEstimator.detect`` (WLS estimate + χ² test; rN only when χ² flags) with the numba backend (default) and
  the numpy backend, both warm-started from the previous step's estimate, default measurement set (111
  measurements, 65 states);
* the normalised-residual identification alone (what a flagged step adds);
* pandapower's ``estimation.estimate`` on the same measurements every ``--pp-every`` steps (only the call is timed;
  the measurement table is filled beforehand), and the largest |Δ|V|| / |Δθ| between it and the fast estimate.

Times are wall-clock per step (median and mean over the steps) after a warm-up step (imports, numba compilation or
cache load, pandapower's first run). Prints the ratio "detection adds X % to a step".

Usage: ``python bench/bench_estimation.py [--days 3] [--pp-every 24] [--seed 1]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--pp-every", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import pandapower as pp
    from pandapower.estimation import estimate

    from grids.estimation import MeasurementSet, StateEstimator
    from grids.network import build_network
    from grids.powerflow import FastPowerFlow

    nw = build_network("case33bw")
    net = nw.net
    tod = (np.arange(96 * args.days) * 0.25) % 24
    p_kw, q_kvar = nw.load_kw(tod)
    rng = np.random.default_rng(args.seed)
    P = p_kw / 1000 * (0.9 + 0.2 * rng.random(p_kw.shape))
    Q = q_kvar / 1000 * (0.9 + 0.2 * rng.random(q_kvar.shape))

    pf = FastPowerFlow(net)
    ms = MeasurementSet.default(net)
    se = StateEstimator(net, ms)  # numba when available
    se_np = StateEstimator(net, ms, backend="numpy")

    # pandapower reference: one measurement table, values overwritten every compared step
    net_pp = copy.deepcopy(net)
    nv, ni, nf = len(ms.v_buses), len(ms.inj_buses), len(ms.flow_lines)
    sig = ms.sigma
    for k, b in enumerate(ms.v_buses):
        pp.create_measurement(net_pp, "v", "bus", 1.0, sig[k], int(b))
    for k, b in enumerate(ms.inj_buses):
        pp.create_measurement(net_pp, "p", "bus", 0.0, sig[nv + k], int(b))
        pp.create_measurement(net_pp, "q", "bus", 0.0, sig[nv + ni + k], int(b))
    for k, line in enumerate(ms.flow_lines):
        pp.create_measurement(net_pp, "p", "line", 0.0, sig[nv + 2 * ni + k], int(line), side="from")
        pp.create_measurement(net_pp, "q", "line", 0.0, sig[nv + 2 * ni + nf + k], int(line), side="from")
    meas = net_pp.measurement
    sign = np.concatenate([np.ones(nv), -np.ones(2 * ni), np.ones(2 * nf)])  # bus P/Q in load convention
    order = np.concatenate(
        [
            np.arange(nv),  # table order -> z order
            np.ravel(np.column_stack([nv + np.arange(ni), nv + ni + np.arange(ni)])),
            np.ravel(np.column_stack([nv + 2 * ni + np.arange(nf), nv + 2 * ni + nf + np.arange(nf)])),
        ]
    )

    def pp_estimate(z: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        meas["value"] = (z * sign)[order]
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = estimate(net_pp, init="flat", tolerance=1e-8, maximum_iterations=50, zero_injection=None)
        dt = time.perf_counter() - t
        if not ok["success"]:
            raise RuntimeError("pandapower estimate did not converge")
        return dt, net_pp.res_bus_est["vm_pu"].to_numpy(), np.deg2rad(net_pp.res_bus_est["va_degree"].to_numpy())

    # warm-up (imports, numba compile/cache load, pandapower's first run)
    res = pf.solve(P[0], Q[0])
    z = se.measure(res, rng)
    se.detect(z)
    se_np.detect(z)
    se.largest_normalized_residual(se.estimate(z))
    pp_estimate(z)

    t_pf, t_meas, t_det, t_det_np, t_rn, t_pp = [], [], [], [], [], []
    flags, iters, dvm, dva = 0, [], [], []
    for k in range(len(tod)):
        t0 = time.perf_counter()
        res = pf.solve(P[k], Q[k])
        t1 = time.perf_counter()
        z = se.measure(res, rng)
        t2 = time.perf_counter()
        det = se.detect(z)
        t3 = time.perf_counter()
        se_np.detect(z)
        t4 = time.perf_counter()
        if not (res.converged and det.converged):
            raise RuntimeError(f"step {k}: power flow or estimate did not converge")
        t_pf.append(t1 - t0)
        t_meas.append(t2 - t1)
        t_det.append(t3 - t2)
        t_det_np.append(t4 - t3)
        flags += det.flagged
        iters.append(det.result.iterations)
        if k % 8 == 0:
            t5 = time.perf_counter()
            se.largest_normalized_residual(det.result)
            t_rn.append(time.perf_counter() - t5)
        if k % args.pp_every == 0:
            dt, vm_ref, va_ref = pp_estimate(z)
            t_pp.append(dt)
            dvm.append(np.abs(det.result.vm_pu - vm_ref).max())
            dva.append(np.abs(det.result.va_rad - va_ref).max())

    def row(name: str, ts: list[float]) -> None:
        print(f"  {name:<44} {statistics.median(ts) * 1e6:>10.1f} {statistics.mean(ts) * 1e6:>10.1f} {len(ts):>6}")

    n = len(tod)
    print(
        f"case33bw, default measurement set: {se.n_meas} measurements, {se.n_states} states, "
        f"{n} steps of 15 min ({args.days} days), backend of the fast estimator: {se.backend}"
    )
    print(f"  {'per step':<44} {'median µs':>10} {'mean µs':>10} {'steps':>6}")
    row("fast power flow (FastPowerFlow.solve)", t_pf)
    row("measurement synthesis (measure: h + noise)", t_meas)
    row(f"estimate + detect, {se.backend} (fast)", t_det)
    row("estimate + detect, numpy backend", t_det_np)
    row("rN identification (only on χ² alarms)", t_rn)
    row("pandapower estimation.estimate", t_pp)
    med_pf, med_det = statistics.median(t_pf), statistics.median(t_det)
    print(
        f"detection adds {100 * med_det / med_pf:.0f} % to a step (median; mean "
        f"{100 * statistics.mean(t_det) / statistics.mean(t_pf):.0f} %); numpy backend "
        f"{100 * statistics.median(t_det_np) / med_pf:.0f} %; pandapower's estimator "
        f"{100 * statistics.median(t_pp) / med_pf:.0f} %"
    )
    print(
        f"fast vs pandapower estimator: {statistics.median(t_pp) / med_det:.0f}x faster; "
        f"max |Δ|V|| {max(dvm):.1e} pu, max |Δθ| {max(dva):.1e} rad over {len(t_pp)} compared steps"
    )
    print(
        f"Gauss–Newton iterations per step: mean {statistics.mean(iters):.2f}; "
        f"χ² alarms on clean data: {flags}/{n} ({100 * flags / n:.1f} %, alpha 1 %)"
    )


if __name__ == "__main__":
    main()
