"""The lower-level kernel of `eho-bilevel`: port queues and best-response charging of one upper-level decision
(numba-compiled when available, the same code interpreted otherwise)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

_TOL = 1e-9


# ----------------------------------------------------------------------------------------------- lower level
def _respond_kernel(
    arr,
    dep,
    e_grid,
    pmax,
    follows,
    elast,
    home,
    alt,
    n_alt,
    port_free0,
    n_ports,
    release_full,
    cap_eff,
    booked0,
    price,
    base_price,
    dt,
    delta,
    eps,
    uncontrolled,
    redirect_all,
    p_out,
    station_out,
    plugin_out,
    start_out,
    release_out,
    reneged_out,
):  # pragma: no cover - jit
    """The lower level and the port queues, EV by EV in arrival order (see module docstring).

    Written in plain loops over arrays so that numba compiles it unchanged; the Python original is the fallback.
    Outputs are written into ``p_out`` (n, T) [kW], ``station_out``, ``plugin_out``, ``start_out``, ``release_out``
    [h] and ``reneged_out``. A following user picks, among its station's alternatives, the most energy, then the
    smallest ``H``; with ``redirect_all`` a non-following user is redirected too, to the station that gives it the
    most energy, then the earliest port (its queue wait), own station on ties.
    """
    n = arr.shape[0]
    T = price.shape[0]
    port_free = port_free0.copy()
    booked = booked0.copy()
    caps = np.zeros(T)
    cand = np.zeros(T)
    best = np.zeros(T)
    for i in range(n):
        a = arr[i]
        d = dep[i]
        e_need = e_grid[i]
        h = home[i]
        n_c = 1
        if (not uncontrolled) and (follows[i] or redirect_all):
            n_c = n_alt[h]
        best_e = -1.0
        best_h = np.inf
        best_c = h
        best_port = -1
        best_plug = d
        best_start = d
        best_ren = True
        for ci in range(n_c):
            c = alt[h, ci]
            # FIFO: the first port to free (all EVs that arrived earlier already hold theirs)
            j = 0
            for q in range(1, n_ports[c]):
                if port_free[c, q] < port_free[c, j]:
                    j = q
            g = max(a, port_free[c, j])
            for k in range(T):
                cand[k] = 0.0
            if g >= d:
                e_got = 0.0
                h_val = eps * (d - a)
                plug = d
                start = d
                ren = True
            else:
                plug = g
                ren = False
                k0 = int(math.ceil(g / dt - 1e-9))
                kd = int(math.ceil(d / dt - 1e-9))
                kend = min(kd, T)
                frac = 1.0
                if kd <= T:
                    frac = d / dt - (kend - 1)
                    if frac > 1.0:
                        frac = 1.0
                cost = 0.0
                if k0 < kend:
                    room = 0.0
                    for k in range(k0, kend):
                        av = frac if k == kend - 1 else 1.0
                        r = cap_eff[c] - booked[c, k]
                        cp = pmax[i] * av
                        if r < cp:
                            cp = r
                        if cp < 0.0:
                            cp = 0.0
                        caps[k] = cp
                        room += cp * dt
                    target = min(e_need, room)
                    if uncontrolled or not follows[i]:
                        rem = target
                        for k in range(k0, kend):
                            if rem <= _TOL:
                                break
                            cp = caps[k]
                            if (not uncontrolled) and base_price[k] > 0:
                                f = 1.0 + elast[i] * (price[k] - base_price[k]) / base_price[k]
                                if f < 0.0:
                                    f = 0.0
                                if f > 1.0:
                                    f = 1.0
                                av = frac if k == kend - 1 else 1.0
                                lim = pmax[i] * av * f
                                if lim < cp:
                                    cp = lim
                            take = min(cp * dt, rem)
                            cand[k] = take / dt
                            rem -= take
                            cost += take * price[k]
                    elif target > _TOL:
                        # exact best response: for every possible last charging slot e, the cheapest fill of
                        # slots k0..e (a continuous knapsack); keep the e with the smallest δ·cost + ε·(t_end − a)
                        m = kend - k0
                        order = np.argsort(price[k0:kend], kind="mergesort")
                        e_best = -1
                        h_best = np.inf
                        room_e = 0.0
                        for e in range(k0, kend):
                            room_e += caps[e] * dt
                            if room_e < target - 1e-7 * max(1.0, target):
                                continue
                            rem = target
                            cs = 0.0
                            for oi in range(m):
                                k = k0 + order[oi]
                                if k > e:
                                    continue
                                take = min(caps[k] * dt, rem)
                                cs += take * price[k]
                                rem -= take
                                if rem <= _TOL:
                                    break
                            hv = delta * cs + eps * (min((e + 1) * dt, d) - a)
                            if hv < h_best - 1e-12:
                                h_best = hv
                                e_best = e
                        rem = target
                        for oi in range(m):
                            k = k0 + order[oi]
                            if k > e_best:
                                continue
                            take = min(caps[k] * dt, rem)
                            cand[k] = take / dt
                            cost += take * price[k]
                            rem -= take
                            if rem <= _TOL:
                                break
                e_got = 0.0
                first = -1
                last = -1
                for k in range(T):
                    if cand[k] > 1e-12:
                        e_got += cand[k] * dt
                        last = k
                        if first < 0:
                            first = k
                start = first * dt if first >= 0 else g
                t_end = min((last + 1) * dt, d) if last >= 0 else g
                h_val = delta * cost + eps * (t_end - a)
            if follows[i] or uncontrolled:
                better = h_val < best_h - 1e-12
            else:  # a redirected non-follower: the earliest port
                better = plug < best_plug - 1e-12
            if e_got > best_e + 1e-9 or (abs(e_got - best_e) <= 1e-9 and better):
                best_e = e_got
                best_h = h_val
                best_c = c
                best_port = j
                best_plug = plug
                best_start = start
                best_ren = ren
                for k in range(T):
                    best[k] = cand[k]
        # commit the choice: book the station's capacity and the port
        station_out[i] = best_c
        plugin_out[i] = best_plug
        start_out[i] = best_start
        reneged_out[i] = best_ren
        last = -1
        for k in range(T):
            p_out[i, k] = best[k]
            booked[best_c, k] += best[k]
            if best[k] > 1e-12:
                last = k
        if best_ren:
            release_out[i] = d
        else:
            rel = d
            if release_full[best_c] and best_e >= e_need - 1e-6:
                rel = best_plug if last < 0 else min((last + 1) * dt, d)
            release_out[i] = rel
            port_free[best_c, best_port] = rel


_KERNEL: Callable[..., None] | None = None


def _kernel() -> Callable[..., None]:
    """The compiled kernel (numba, cached on disk), or the Python original when numba is unavailable/disabled."""
    global _KERNEL
    if _KERNEL is None:
        fn: Callable[..., None] = _respond_kernel
        if os.environ.get("EVGRID_NO_NUMBA", "") not in ("1", "true"):
            try:
                import numba

                fn = numba.njit(cache=True)(_respond_kernel)
            except Exception:  # pragma: no cover - numba missing or broken: the same code, interpreted
                fn = _respond_kernel
        _KERNEL = fn
    return _KERNEL
