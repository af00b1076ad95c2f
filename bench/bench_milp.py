"""Benchmark: the `milp` mechanism's exact LP optimum against its discretised (QUBO-grid) MILP optimum.

One synthetic day-ahead request shaped like the default study (15-min slots from noon, 70 % home EVs arriving
around 18 h and leaving 06–08 h, 30 % public top-ups at 6 stations capped at 50 kW, TOU tariff following the
load shape) is cleared with ``variant="lp"`` and ``variant="milp"`` at each bit depth. Prints, measured in this
run: model size, HiGHS status, build and solve time, objective, the MILP/LP objective ratio and the gap of the
`uncontrolled` and `elasticity-dr` heuristics to the LP optimum (`markets.milp.score`: the schedule as the
aggregator would dispatch it, scored by `evaluate_cost`). The objective includes the unserved-energy penalty
(10 $/kWh): on a coarse grid the MILP cannot match every EV's need exactly, which is most of its excess.

Usage: ``python bench/bench_milp.py [--evs 200] [--slots 96] [--bits 4 8] [--time-limit 60] [--seed 1]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_request(n_evs: int, n_slots: int, seed: int) -> object:
    """A day-ahead request like the default study's (see module docstring)."""
    import numpy as np

    from markets.base import EVFlex, MarketRequest
    from markets.elasticity_dr import tou_price

    rng = np.random.default_rng(seed)
    dt_min = 24 * 60 / n_slots
    tod = (12.0 + np.arange(n_slots) * dt_min / 60.0) % 24.0
    base = 2500 + 1200 * np.exp(-((tod - 19.0) ** 2) / 6.0) - 900 * np.exp(-((tod - 4.0) ** 2) / 8.0)
    home = rng.random(n_evs) < 0.7

    def slot(h: np.ndarray) -> np.ndarray:  # hour of day → slot index in a noon-to-noon horizon
        return np.clip(np.floor(((h - 12.0) % 24.0) * 60.0 / dt_min), 0, n_slots - 1).astype(int)

    arr_h = np.where(home, rng.normal(18.0, 1.5, n_evs), rng.uniform(13.0, 19.0, n_evs))
    dep_h = np.where(home, rng.uniform(6.0, 8.0, n_evs), arr_h + rng.uniform(1.0, 4.0, n_evs))
    start = slot(arr_h)
    end = np.maximum(np.minimum(slot(dep_h) + 1, n_slots), start + 1)
    p_max = np.where(home, rng.choice([3.6, 7.2, 11.0], n_evs), 22.0)
    n_pub = 6
    station = np.where(home, n_pub + np.arange(n_evs), rng.integers(0, n_pub, n_evs))
    caps = np.concatenate([np.full(n_pub, 50.0), np.full(n_evs, np.inf)])
    evs = EVFlex(
        ev_id=np.arange(n_evs),
        bus=rng.integers(1, 33, n_evs),
        station=station,
        start_slot=start,
        end_slot=end,
        end_frac=np.ones(n_evs),
        e_need_kwh=np.where(home, rng.uniform(8, 40, n_evs), rng.uniform(5, 25, n_evs)),
        p_max_kw=p_max,
        p_min_kw=np.zeros(n_evs),
        eta_ch=np.full(n_evs, 0.92),
        participates=np.ones(n_evs, bool),
        elasticity=np.full(n_evs, -0.3),
    )
    return MarketRequest(
        t0_min=0.0,
        dt_min=dt_min,
        n_slots=n_slots,
        evs=evs,
        base_load_kw=base,
        price_usd_per_mwh=tou_price(base, 84.0, 0.75, 1.35, "affine"),
        station_cap_kw=caps,
        tod_h=tod,
        day_ahead=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evs", type=int, default=200)
    ap.add_argument("--slots", type=int, default=96)
    ap.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from importlib.metadata import version

    from markets.base import get
    from markets.milp import MILP, check_schedule, score

    req = make_request(args.evs, args.slots, args.seed)
    print(
        f"request: {args.evs} EVs x {args.slots} slots of {req.dt_min:g} min, "
        f"{int(req.evs.availability(req.n_slots).astype(bool).sum())} plugged EV-slots; highspy {version('highspy')}"
    )
    MILP().clear(make_request(5, 8, 0))  # warm-up: imports, HiGHS library load

    rows = []
    for variant, bits in [("lp", None)] + [("milp", b) for b in args.bits]:
        kw = {"variant": variant, "time_limit_s": args.time_limit}
        if bits is not None:
            kw["bits"] = bits
        t = time.perf_counter()
        res = MILP(**kw).clear(req)
        wall = time.perf_counter() - t
        worst = max(check_schedule(req, res.p_kw).values())
        rows.append((variant if bits is None else f"milp-{bits}bit", res, wall, worst))

    lp_obj = rows[0][1].objective["objective_usd"]
    print(
        f"{'variant':<12}{'status':<12}{'vars':>8}{'int':>8}{'rows':>8}{'build s':>9}{'solve s':>9}{'wall s':>9}"
        f"{'objective $':>13}{'/ LP':>9}{'energy $':>10}{'mip gap':>10}{'unserved kWh':>14}{'max viol':>10}"
    )
    for name, res, wall, worst in rows:
        i, o = res.info, res.objective
        print(
            f"{name:<12}{i['status']:<12}{i['n_vars']:>8}{i['n_int_vars']:>8}{i['n_rows']:>8}{i['build_time_s']:>9.3f}"
            f"{i['solve_time_s']:>9.3f}{wall:>9.3f}{o['objective_usd']:>13.4f}{o['objective_usd'] / lp_obj:>9.5f}"
            f"{o['energy_cost_usd']:>10.3f}"
            f"{i['mip_gap']:>10.2e}{o['unserved_kwh']:>14.4f}{worst:>10.1e}"
        )
    for name in ("uncontrolled", "elasticity-dr"):
        res = score(req, get(name)().clear(req), reference_objective=lp_obj)
        cost = lp_obj * (1 + res.gap)
        print(
            f"heuristic {name:<14} objective {cost:10.4f} $  gap to LP optimum {res.gap:+.2%}"
            f"  (scored as dispatched: up to {res.info['score_removed_kw']:.2f} kW removed to meet caps)"
        )


if __name__ == "__main__":
    main()
