"""Benchmark: DLMP computation time per market step, AC OPF (pandapower) vs LinDistFlow LP (HiGHS).

Prints, measured in this run (after one warm-up slot per method and network, so imports, numba compilation and
the compiled radial topology are not counted):

* ``case33bw`` (Baran & Wu, no DERs; voltage band 0.90–1.05 pu as in the default scenario) and ``case33bw-dr``
  (the 002 feeder: 2 DGs with quadratic costs, PV) over the 24 hourly zonal load levels of one day at the
  002 base price with the load-shaped tariff: wall milliseconds per slot for both methods, their ratio, and the
  largest |ΔλP| / |ΔλQ| between them;
* ``case118`` (IEEE 118-bus, meshed, 54 generators): AC OPF milliseconds per slot over ``--slots-118`` load levels;
  LinDistFlow does not apply to a meshed network (:class:`grids.dlmp.NotRadialError`), which is printed;
* the DSO's DG dispatch per simulated step on ``dr-tou-33bus``: merit order vs AC OPF vs the LinDistFlow QP
  (``grid.dispatch``), wall and CPU per day, the dispatch's own milliseconds per step (wall and CPU: the OPF's
  ``runopp``, the QP's whole ``solve`` with its base-point power flow) and how many steps fell back to merit order.

Usage: ``python bench/bench_dlmp.py [--slots-118 4]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots-118", type=int, default=4)
    args = ap.parse_args()

    import numpy as np

    from grids.dlmp import NotRadialError, dlmp_acopf, dlmp_lindistflow
    from grids.network import build_network

    hours = np.arange(24) + 0.5
    rho = 84.0

    def tariff(p_total: np.ndarray) -> np.ndarray:
        # load-shaped price 0.75–1.35 × rho (002 Table 4 range)
        lo, hi = p_total.min(), p_total.max()
        return rho * (0.75 + 0.6 * (p_total - lo) / max(hi - lo, 1e-9))

    print("DLMP time per market step (wall ms per slot, median), same slots for both methods")
    print(
        f"{'network':<13} {'slots':>5} {'AC OPF':>9} {'LinDistFlow':>12} {'ratio':>7} {'LP iters':>9} "
        f"{'max|dλP| $/MWh':>15} {'max|dλQ| $/MVArh':>17} {'conv AC/LP':>11}"
    )
    for case in ("case33bw", "case33bw-dr"):
        nw = build_network(case, v_min_pu=0.90)
        p, q = nw.load_kw(hours)
        ren = nw.renewable_kw(hours)
        price = tariff(p.sum(axis=1))
        kw = dict(price_usd_per_mwh=price, renewable_kw=ren)
        dlmp_acopf(nw, p[:1], q[:1], price_usd_per_mwh=price[0], renewable_kw=ren[:1])  # warm-up
        dlmp_lindistflow(nw, p[:1], q[:1], price_usd_per_mwh=price[0], renewable_kw=ren[:1])  # warm-up
        t = time.perf_counter()
        ac = dlmp_acopf(nw, p, q, **kw)
        t_ac = (time.perf_counter() - t) / len(p)
        t = time.perf_counter()
        lp = dlmp_lindistflow(nw, p, q, **kw)
        t_lp = (time.perf_counter() - t) / len(p)
        med_ac = statistics.median(ac.drop_duplicates("slot").solve_time_s) * 1e3
        med_lp = statistics.median(lp.drop_duplicates("slot").solve_time_s) * 1e3
        both = ac.merge(lp, on=["slot", "bus"], suffixes=("_ac", "_lp"))
        ok = both.converged_ac & both.converged_lp
        dp = float((both.lam_p_usd_per_mwh_ac - both.lam_p_usd_per_mwh_lp)[ok].abs().max())
        dq = float((both.lam_q_usd_per_mvarh_ac - both.lam_q_usd_per_mvarh_lp)[ok].abs().max())
        iters = lp.drop_duplicates("slot").iterations
        print(
            f"{case:<13} {len(p):>5} {med_ac:>9.1f} {med_lp:>12.1f} {med_ac / med_lp:>6.0f}x "
            f"{iters.mean():>5.1f}/{int(iters.max()):<3} {dp:>15.3f} {dq:>17.3f} "
            f"{int(ac.drop_duplicates('slot').converged.sum()):>5}/{int(lp.drop_duplicates('slot').converged.sum())}"
        )
        print(
            f"{'':<13} mean incl. table building: AC OPF {t_ac * 1e3:.1f} ms, LinDistFlow {t_lp * 1e3:.1f} ms "
            f"per slot (x{t_ac / t_lp:.0f})"
        )

    # the case's own ratings and voltage band (0.94–1.06 pu; with 0.95 a generator set-point lies outside it)
    nw = build_network("case118", line_max_i_ka=None, v_min_pu=0.94, v_max_pu=1.06)
    levels = np.linspace(0.8, 1.0, max(args.slots_118, 1))
    p = nw.base_p_kw[None, :] * levels[:, None]
    q = nw.base_q_kvar[None, :] * levels[:, None]
    dlmp_acopf(nw, p[:1], q[:1], price_usd_per_mwh=rho)  # warm-up
    ac = dlmp_acopf(nw, p, q, price_usd_per_mwh=rho)
    med_ac = statistics.median(ac.drop_duplicates("slot").solve_time_s) * 1e3
    try:
        dlmp_lindistflow(nw, p[:1], q[:1], price_usd_per_mwh=rho)
        lp_txt = "ran (unexpected)"
    except NotRadialError as err:
        lp_txt = f"n/a — {err}"
    print(
        f"{'case118':<13} {len(p):>5} {med_ac:>9.1f} {'n/a':>12} {'—':>7}   "
        f"(AC OPF converged {int(ac.drop_duplicates('slot').converged.sum())}/{len(p)})"
    )
    print(f"{'':<13} LinDistFlow: {lp_txt}")
    _dispatch_cost()


def _dispatch_cost() -> None:
    """The DSO's DG dispatch per simulated step on dr-tou-33bus: merit order vs AC OPF vs LinDistFlow QP
    (``grid.dispatch``), all runs in this process, after a warm-up run of each; CPU beside wall."""
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    print("\nDSO dispatch per simulated step, dr-tou-33bus (24 hourly steps, 167 EVs), same run")
    print(
        f"{'dispatch':<12} {'wall s/day':>10} {'CPU s/day':>10} {'ms/step':>8} {'dispatch ms/step wall':>21} "
        f"{'CPU':>6} {'failed':>7}"
    )
    modes = ("merit", "opf", "lindistflow")
    out = {}
    for mode in modes + modes:  # the first round warms up imports and caches
        m = CoSimulation(load_scenario("dr-tou-33bus", [f"grid.dispatch='{mode}'"]))
        t, c = time.perf_counter(), time.process_time()
        m.run()
        out[mode] = (time.perf_counter() - t, time.process_time() - c, m.dso.opf)
    for mode, (wall, cpu, disp) in out.items():
        if disp is not None:
            n = max(disp.n_solved + disp.n_failed, 1)
            per = f"{disp.time_s / n * 1e3:>21.1f} {disp.cpu_s / n * 1e3:>6.1f} {disp.n_failed:>7}"
        else:
            per = f"{'—':>21} {'—':>6} {'—':>7}"
        print(f"{mode:<12} {wall:>10.2f} {cpu:>10.2f} {wall / 24 * 1e3:>8.1f} {per}")
    print(
        f"CPU per day against merit order: OPF x{out['opf'][1] / out['merit'][1]:.1f}, "
        f"LinDistFlow x{out['lindistflow'][1] / out['merit'][1]:.1f}; "
        f"dispatch CPU per step, OPF / LinDistFlow: x{out['opf'][2].cpu_s / out['lindistflow'][2].cpu_s:.0f}"
    )


if __name__ == "__main__":
    main()
