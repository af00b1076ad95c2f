"""V2G in the valley-filling mechanisms: participating V2G EVs level the load with charge *and* discharge.

`elasticity-dr` schedules a participant by filling the valley of the load it sees (`markets.elasticity_dr`); a V2G
EV's best response to the same load-following price also discharges into the peak. `level_with_v2g` re-plans each
participating V2G EV (earliest departure first, on top of the EVs before it, as the valley fill does):

* its own schedule is taken out of the load ``L``; its net power becomes ``x_t = clip(W − L_t, lo_t, hi_t)`` with
  ``lo = −p_dis·a`` (grid side, ``a`` = share of the slot plugged in) and ``hi = min(p_max·a, station headroom)``;
* the level ``W`` is found by bisection so that the battery energy ``Σ (x>0: x·η_ch; x<0: x/η_dis)·Δt`` equals what
  its charge-only schedule delivered — the EV gets the same energy, never less;
* where the state of charge would cross the floor, that slot's discharge shrinks to the energy above it and the
  level is found again (at most `_ROUNDS` times); the re-plan is kept only if it discharges at all, reaches that
  energy and stays within ``[e_floor, min(e_cap, target)]`` in every slot (the dispatch never charges past the
  target); otherwise the charge-only schedule stays.

The level ignores the round-trip loss and the battery wear (``degradation_usd_per_kwh``) in choosing *where* to
discharge — it is the load-levelling rule of the valley fill, not a cost optimum (``milp`` is that). The wear is
charged to the EV in the simulation's settlement and KPIs. One bisection per V2G participant (a Python loop over
those EVs, each vectorised over its window): V2G participants are a minority of a fleet.
"""

from __future__ import annotations

import numpy as np

from markets.parts import EVFlex

_BISECTIONS = 60  # halves the level's bracket (a few MW wide) to far below a watt
_ROUNDS = 4  # levels tried while the floor keeps cutting discharge; then the charge-only plan stays


def _battery(x_kw: np.ndarray, eta_ch: float, eta_dis: float) -> np.ndarray:
    return np.where(x_kw > 0, x_kw * eta_ch, x_kw / eta_dis)


def level_with_v2g(
    evs: EVFlex,
    p_kw: np.ndarray,
    rows: np.ndarray,
    load_kw: np.ndarray,
    dt_h: float,
    station_cap_kw: np.ndarray | None = None,
    station_load_kw: np.ndarray | None = None,
) -> np.ndarray:
    """Schedules ``p_kw`` (n_evs, n_slots) with the V2G EVs ``rows`` re-planned to level ``load_kw`` (module docs).

    Args:
        evs: the request's EVs.
        p_kw: their charge-only schedules [kW]; not modified.
        rows: the EVs to re-plan (participating, `EVFlex.discharges`).
        load_kw: system load per slot including every EV of ``p_kw`` [kW].
        dt_h: slot length [h].
        station_cap_kw: power cap per station [kW] (inf = none), or None.
        station_load_kw: charging load per station and slot including ``p_kw`` [kW], with ``station_cap_kw``.

    Returns:
        The new schedules [kW] (negative = discharge).
    """
    p = np.array(p_kw, dtype=float)
    load = np.array(load_kw, dtype=float)
    st_load = None if station_load_kw is None else np.array(station_load_kw, dtype=float)
    avail = evs.availability(p.shape[1])
    for i in rows[np.argsort(evs.end_slot[rows], kind="stable")]:
        s, e = int(evs.start_slot[i]), int(evs.end_slot[i])
        old = p[i, s:e]
        rest = load[s:e] - old
        a = avail[i, s:e]
        hi = evs.p_max_kw[i] * a
        if station_cap_kw is not None and st_load is not None:
            k = int(evs.station[i])
            hi = np.minimum(hi, np.maximum(station_cap_kw[k] - (st_load[k, s:e] - np.maximum(old, 0.0)), 0.0))
        lo = np.minimum(evs.p_min_kw[i], 0.0) * a
        x = _level(rest, lo, hi, float(_battery(old, evs.eta_ch[i], evs.eta_dis[i]).sum()), evs, i, dt_h)
        if x is None:
            continue
        p[i, s:e] = x
        load[s:e] = rest + x
        if st_load is not None:
            k = int(evs.station[i])
            st_load[k, s:e] += np.maximum(x, 0.0) - np.maximum(old, 0.0)
    return p


def _level(
    rest: np.ndarray, lo: np.ndarray, hi: np.ndarray, e_slots: float, evs: EVFlex, i: int, dt_h: float
) -> np.ndarray | None:
    """Net power levelling ``rest`` with battery energy ``e_slots·Δt``, or None where it does not discharge, cannot
    reach the energy, or leaves ``[e_floor, e_cap]``."""
    eta_ch, eta_dis = float(evs.eta_ch[i]), float(evs.eta_dis[i])
    w_lo, w_hi = float((rest + lo).min()) - 1.0, float((rest + hi).max()) + 1.0

    def energy(w: float) -> float:
        return float(_battery(np.clip(w - rest, lo, hi), eta_ch, eta_dis).sum())

    lo = lo.copy()
    for _ in range(_ROUNDS):
        if energy(w_hi) < e_slots - 1e-9:
            return None
        a, b = w_lo, w_hi
        for _ in range(_BISECTIONS):
            mid = 0.5 * (a + b)
            if energy(mid) < e_slots:
                a = mid
            else:
                b = mid
        x = np.clip(b - rest, lo, hi)
        if not (x < -1e-9).any():
            return None
        # the floor: where the path would cross it, the discharge of that slot shrinks to what is above it, and
        # the level is found again (less discharge, so no more charging than before)
        e = float(evs.e_kwh[i])
        capped = x.copy()
        for t in range(len(x)):
            if capped[t] < 0:
                capped[t] = max(capped[t], -max(e - float(evs.e_floor_kwh[i]), 0.0) * eta_dis / dt_h)
            e += float(_battery(capped[t : t + 1], eta_ch, eta_dis)[0]) * dt_h
        if np.array_equal(capped, x):
            path = evs.e_kwh[i] + np.cumsum(_battery(x, eta_ch, eta_dis)) * dt_h
            top = min(float(evs.e_cap_kwh[i]), float(evs.e_kwh[i] + evs.e_need_kwh[i]))  # the dispatch stops there
            return x if path.max() <= top + 1e-9 and path.min() >= evs.e_floor_kwh[i] - 1e-9 else None
        lo = np.maximum(lo, np.minimum(capped, 0.0))
    return None
