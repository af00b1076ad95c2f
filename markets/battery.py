"""Battery physics shared by the mechanisms and the simulation (`agents.aggregator` dispatches along it): the two-stage charging curve and the energy reserve
that keeps a V2G EV able to leave with its target.

**Two-stage (CC-CV) curve**, as ACN-Sim's ``Linear2StageBattery``: up to the transition state of charge
``soc_t`` the battery takes the charger's full power; above it the maximum power falls linearly to 0 at a full
battery::

    p_lim(e) = min(p_max, p_max·(cap − e)/(cap·(1 − soc_t)))        [kW, grid side]

evaluated at the energy ``e`` at the start of a step (ACN-Sim evaluates it at the start of each period too).
``soc_t = 1`` is the ideal battery (full power up to full). The limit never lets a step overfill the battery: it is
also capped at ``(cap − e)/(η·Δt)``.

**Reserve.** `reserve_kwh` runs the curve backwards from departure: the least energy an EV must hold at the start
of each remaining step so that charging at its limit every step still reaches its target by departure. A V2G EV may
discharge in a step only down to the reserve of the next step — the departure-SOC guarantee (which still fails when
the DSO curtails the recharge; the fulfilment KPIs report it).
"""

from __future__ import annotations

import numpy as np

from markets.compiled import njit_cached


def slope_kw_per_kwh(p_max_kw: np.ndarray, cap_kwh: np.ndarray, transition_soc: np.ndarray) -> np.ndarray:
    """Slope of the taper, ``p_max/(cap·(1 − soc_t))`` [kW per kWh below full]; inf for an ideal battery."""
    denom = cap_kwh * (1.0 - transition_soc)
    ok = (transition_soc < 1.0) & (denom > 0)
    return np.where(ok, p_max_kw / np.where(ok, denom, 1.0), np.inf)


def charge_limit_kw(
    e_kwh: np.ndarray,
    cap_kwh: np.ndarray,
    p_max_kw: np.ndarray,
    transition_soc: np.ndarray,
    eta_ch: np.ndarray,
    dt_h: float,
    avail: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Largest grid-side charging power for one step starting at ``e_kwh`` [kW] (module docstring), for an EV
    plugged in the share ``avail`` of the step: ``min(p_max, taper)·avail``, and never more than fills the battery."""
    room = np.maximum(cap_kwh - e_kwh, 0.0)
    s = slope_kw_per_kwh(p_max_kw, cap_kwh, transition_soc)
    taper = np.where(np.isinf(s), np.inf, np.where(np.isinf(s), 0.0, s) * room)
    return np.minimum(np.minimum(p_max_kw, taper) * avail, room / (eta_ch * dt_h))


def reserve_kwh(
    e_target_kwh: np.ndarray,
    cap_kwh: np.ndarray,
    p_max_kw: np.ndarray,
    transition_soc: np.ndarray,
    eta_ch: np.ndarray,
    dt_h: float,
    avail: np.ndarray,
) -> np.ndarray:
    """Least energy at the start of each slot from which the target is still reachable [kWh], shape (n, n_slots + 1).

    Args:
        e_target_kwh: battery energy wanted at departure [kWh].
        cap_kwh, p_max_kw, transition_soc, eta_ch: the battery and charger (`charge_limit_kw`).
        dt_h: slot length [h].
        avail: share of each slot the EV is plugged in, shape (n, n_slots) (`markets.base.EVFlex.availability`).

    Column ``n_slots`` is the target itself; column ``t`` the least ``e`` with ``e + η·Δt·p_lim(e)·avail[t] ≥``
    column ``t + 1`` (the step map is non-decreasing in ``e``, so it inverts piecewise). A reserve above the capacity
    means the target cannot be reached from any energy (said by ``> cap``, never clipped).
    """
    n, n_slots = avail.shape
    out = np.empty((n, n_slots + 1))
    out[:, n_slots] = e_target_kwh
    s = slope_kw_per_kwh(p_max_kw, cap_kwh, transition_soc)
    for t in range(n_slots - 1, -1, -1):
        nxt = out[:, t + 1]
        a = eta_ch * dt_h * avail[:, t]
        full = nxt - a * p_max_kw  # needed if the whole step is at full power
        # on the taper: e + a·s·(cap − e) ≥ nxt  ⇔  e ≥ (nxt − a·s·cap)/(1 − a·s) when a·s < 1 (else any e ≤ cap)
        with np.errstate(invalid="ignore", divide="ignore"):
            a_s = np.where(np.isinf(s), 0.0, a * s)
            tapered = np.where(a_s < 1.0, (nxt - a_s * cap_kwh) / np.maximum(1.0 - a_s, 1e-12), -np.inf)
        tapered = np.where(np.isinf(s), -np.inf, tapered)
        out[:, t] = np.where(nxt > cap_kwh + 1e-9, nxt, np.maximum(full, tapered))
    return out


def follow_curve(
    p_kw: np.ndarray,
    e_kwh: np.ndarray,
    e_need_kwh: np.ndarray,
    cap_kwh: np.ndarray,
    p_max_kw: np.ndarray,
    transition_soc: np.ndarray,
    eta_ch: np.ndarray,
    eta_dis: np.ndarray,
    dt_h: float,
    avail: np.ndarray,
) -> np.ndarray:
    """A schedule made to follow the charging curve [kW], shape of ``p_kw`` (n, n_slots).

    The goal is the energy the schedule itself delivers (net of discharge, at most ``e_need_kwh``): the repair
    reshapes a schedule, it never adds energy its mechanism did not plan. Slot by slot from the energy ``e_kwh`` now:
    charging power is cut to the curve (`charge_limit_kw`); where the schedule would fall below the reserve
    (`reserve_kwh`, the least energy from which the goal is still reachable along the curve), the slot charges more —
    within the curve — so the energy the taper removes from late slots is pulled forward instead of lost; and no
    slot takes the battery past the goal. Discharge (negative power) is kept.
    """
    arr = [np.ascontiguousarray(a, np.float64) for a in (p_kw, e_kwh, e_need_kwh, cap_kwh, p_max_kw, transition_soc)]
    eta = [np.ascontiguousarray(a, np.float64) for a in (eta_ch, eta_dis)]
    return _follow_curve_kernel(*arr, *eta, float(dt_h), np.ascontiguousarray(avail, np.float64))


@njit_cached
def _mn(a: float, b: float) -> float:
    return a if (a < b or a != a) else b  # np.minimum: NaN propagates, b on ties (the sign of a zero included)


@njit_cached
def _mx(a: float, b: float) -> float:
    return a if (a > b or a != a) else b


@njit_cached
def _follow_curve_kernel(
    p: np.ndarray,
    e0: np.ndarray,
    need: np.ndarray,
    cap: np.ndarray,
    pmax: np.ndarray,
    tsoc: np.ndarray,
    eta: np.ndarray,
    eta_dis: np.ndarray,
    dt_h: float,
    avail: np.ndarray,
) -> np.ndarray:
    """`follow_curve` per EV: its goal (the schedule's net battery energy summed slot by slot, clipped to [0, need]),
    `reserve_kwh` and the slot loop, with the arithmetic of the
    numpy code (`slope_kw_per_kwh`, `charge_limit_kw`: same operations in the same order, ``_mn``/``_mx`` as
    ``np.minimum``/``np.maximum``), so the schedule is bit-identical; numpy's ~25 calls per slot and EV group made
    this the costliest part of a re-planning step (5 ms of a gym step over a 96-slot horizon)."""
    n, n_slots = p.shape
    out = np.zeros((n, n_slots))
    res = np.empty(n_slots + 1)
    for i in range(n):
        # Only the slots from the first to the last one that is available or scheduled can change anything: in a
        # slot with neither, the reserve carries over unchanged and the schedule stays 0 (the formulas give exactly
        # that), so the loops skip them — most of a long horizon for most EVs.
        t0, t1 = n_slots, -1
        for t in range(n_slots):
            if avail[i, t] != 0.0 or p[i, t] != 0.0:
                t0 = min(t0, t)
                t1 = t
        if t1 < 0:
            continue
        planned = 0.0
        for t in range(t0, t1 + 1):
            planned += (p[i, t] * eta[i] if p[i, t] > 0 else p[i, t] / eta_dis[i]) * dt_h
        top = e0[i] + _mn(_mx(planned, 0.0), need[i])  # the goal: never above the target
        denom = cap[i] * (1.0 - tsoc[i])
        ok = tsoc[i] < 1.0 and denom > 0
        s = pmax[i] / denom if ok else np.inf
        inf_s = np.isinf(s)
        res[t1 + 1] = top
        for t in range(t1, t0 - 1, -1):
            nxt = res[t + 1]
            a = eta[i] * dt_h * avail[i, t]
            full = nxt - a * pmax[i]
            a_s = 0.0 if inf_s else a * s
            tapered = (nxt - a_s * cap[i]) / _mx(1.0 - a_s, 1e-12) if a_s < 1.0 else -np.inf
            if inf_s:
                tapered = -np.inf
            res[t] = nxt if nxt > cap[i] + 1e-9 else _mx(full, tapered)
        e = e0[i]
        for t in range(t0, t1 + 1):
            room = _mx(cap[i] - e, 0.0)
            taper = np.inf if inf_s else s * room
            lim = _mn(_mn(pmax[i], taper) * avail[i, t], room / (eta[i] * dt_h))
            catch_up = (_mn(res[t + 1], top) - e) / (eta[i] * dt_h)
            q = _mn(_mn(_mx(p[i, t], catch_up), lim), _mx(top - e, 0.0) / (eta[i] * dt_h))
            q = p[i, t] if p[i, t] < 0 else _mx(q, 0.0)
            out[i, t] = q
            e = e + (q * eta[i] if q > 0 else q / eta_dis[i]) * dt_h
    return out


@njit_cached
def charge_along_curve_kernel(
    e0: np.ndarray,
    need: np.ndarray,
    cap: np.ndarray,
    pmax: np.ndarray,
    tsoc: np.ndarray,
    eta: np.ndarray,
    p_lim: np.ndarray,
    dt_h: float,
    avail: np.ndarray,
    n_slots: int,
    out: np.ndarray,
) -> None:
    """`markets.base.charge_along_curve` into ``out``: slot by slot, every EV at the least of its curve
    (`charge_limit_kw`, the same operations in the same order), its limit ``p_lim`` and what is left, until no EV
    needs more than 1e-12 kWh after a slot — the numpy reference's loop (``charge_along_curve_numpy``), compiled:
    ~20 numpy calls per slot were 0.5 s of ten simulated days."""
    n = e0.shape[0]
    e = e0.copy()
    left = need.copy()
    s = np.empty(n)
    for i in range(n):  # slope_kw_per_kwh
        denom = cap[i] * (1.0 - tsoc[i])
        s[i] = pmax[i] / denom if (tsoc[i] < 1.0 and denom > 0) else np.inf
    for t in range(n_slots):
        busy = False
        for i in range(n):
            a = avail[i, t]
            room = _mx(cap[i] - e[i], 0.0)
            taper = np.inf if np.isinf(s[i]) else s[i] * room
            lim = _mn(_mn(pmax[i], taper) * a, room / (eta[i] * dt_h))
            q = _mn(_mn(lim, p_lim[i] * a), left[i] / (eta[i] * dt_h))
            out[i, t] = q
            e[i] += q * eta[i] * dt_h
            left[i] = _mx(left[i] - q * eta[i] * dt_h, 0.0)
            if left[i] > 1e-12:
                busy = True
        if not busy:
            break
