"""The exact upper-level optimum of `eho-bilevel` on small instances (the bound every search is tested against)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from markets.eho_bilevel.kernel import _TOL
from markets.eho_bilevel.model import BilevelProblem, Response


# ----------------------------------------------------------------------------------------------- exact optimum
def exact_upper_level(problem: BilevelProblem, *, max_lps: int = 200_000) -> dict[str, Any]:
    """The exact optimum of the upper level of a *small* instance, by enumerating lower-level response regions.

    Given the upper-level prices, every follower's answer is a cheapest-first fill of its window, so it depends
    only on (a) the order of the slot prices and (b) each EV's choice of its last charging slot — and with them
    the port queue, the load profile, ``F2``, ``F3`` and the penalties are fixed. Over the closure of such a region
    ``F1`` is linear in the multipliers and the conditions "this order" and "this last slot is each EV's best
    response" are linear inequalities. So: for every permutation of the slots, walk the EVs in arrival order,
    branch on every distinct best-response candidate, and solve one LP (HiGHS via SciPy) per leaf that maximises
    ``F1`` in the region; the best leaf is the optimum. On ties the follower is assumed to answer in the leader's
    favour (the optimistic bilevel solution), so the value is the supremum of what any search evaluating the
    kernel can reach — an upper bound that can be approached but, on a boundary, not always attained.

    Requires: every EV follows, no ``alternatives``, station caps that cannot bind (``min(cap, lowest limit)`` ≥
    the sum of the ratings at the station), no booked load, no grid limit. The station-limit half of ``x`` is then
    inert and returned at its upper bound. Cost grows as ``T! × Π (choices per EV)``: keep ``T ≤ 6``, ≤ 3 EVs.

    Returns:
        dict with ``objective`` (sup ``J``), ``x`` (an optimal upper-level vector), ``objective_at_x`` (``J`` the
        kernel gives at ``x``), ``n_lp`` (LPs solved), ``n_feasible`` (non-empty regions).
    """
    from itertools import permutations

    s = problem._s
    T = problem.n_slots
    if not np.all(s.follows):
        raise ValueError("exact_upper_level: every EV must follow (no elastic users)")
    if np.any(problem.n_alt > 1):
        raise ValueError("exact_upper_level: no alternatives (station choice) supported")
    load_at = np.bincount(s.station, weights=s.p_max_kw, minlength=problem.n_stations)
    if np.any(np.minimum(problem.cap, problem.limit_bounds[0]) < load_at - 1e-9) or np.any(problem.booked0 != 0):
        raise ValueError("exact_upper_level: station caps/limits must not bind and nothing may be booked")
    if np.isfinite(problem.grid_max_kw):
        raise ValueError("exact_upper_level: no grid connection limit supported")
    n = len(s)
    regions = _Regions(problem, max_lps)
    best = regions.best

    free0 = [list(problem.port_free0[k, : problem.ports[k]]) for k in range(problem.n_stations)]
    for order in permutations(range(T)):
        rank = np.empty(T, int)
        rank[list(order)] = np.arange(T)
        regions.walk(0, order, rank, free0, [], [], np.zeros((n, T)), np.zeros(n))
    if best["m"] is None:
        raise RuntimeError("exact_upper_level: no feasible region (should not happen)")
    x = np.r_[best["m"], np.full(problem.n_stations, problem.limit_bounds[1])]
    j_at, _ = problem.evaluate(x)
    return {
        "objective": float(best["objective"]),
        "x": x,
        "objective_at_x": float(j_at),
        "n_lp": best["n_lp"],
        "n_feasible": best["n_feasible"],
    }


class _Regions:
    """The enumeration of :func:`exact_upper_level`: a depth-first walk over the EVs' best-response candidates
    (``walk``) with one LP per leaf (``leaf``); the best leaf so far is kept in ``best``."""

    def __init__(self, problem: BilevelProblem, max_lps: int) -> None:
        self.problem = problem
        self.max_lps = max_lps
        self.s = problem._s
        self.T, self.dt, self.P = problem.n_slots, problem.dt_h, problem.n_price
        self.bp, self.per = problem.base_price, problem.slot_period
        self.delta, self.eps = problem.delta, problem.epsilon
        self.n = len(self.s)
        self.lo_m, self.hi_m = problem.price_bounds
        self.best: dict[str, Any] = {"objective": -np.inf, "m": None, "n_lp": 0, "n_feasible": 0}

    def coef(self, x_kwh: np.ndarray) -> np.ndarray:
        """Row such that row @ m = Σ_k π_k x_k (π_k = BP_k m_per(k))."""
        r = np.zeros(self.P)
        np.add.at(r, self.per, self.bp * x_kwh)
        return r

    def leaf(
        self, order: tuple[int, ...], rows: list[np.ndarray], rhs: list[float], p: np.ndarray, plug: np.ndarray
    ) -> None:
        """Maximise ``F1`` over the region of one leaf (LP) and keep it if it is the best so far."""
        from scipy.optimize import linprog

        problem, best, s, n = self.problem, self.best, self.s, self.n
        P, bp, per, dt, lo_m, hi_m = self.P, self.bp, self.per, self.dt, self.lo_m, self.hi_m
        coef = self.coef
        if best["n_lp"] >= self.max_lps:
            raise RuntimeError("exact_upper_level: max_lps exceeded; use a smaller instance")
        A = list(rows)
        bb = list(rhs)
        for u, v in zip(order[:-1], order[1:]):  # π_u ≤ π_v
            r = np.zeros(P)
            r[per[u]] += bp[u]
            r[per[v]] -= bp[v]
            A.append(r)
            bb.append(0.0)
        ev = p.sum(axis=0)
        c = -coef(ev * dt)
        best["n_lp"] += 1
        res = linprog(
            c,
            A_ub=np.array(A) if A else None,
            b_ub=np.array(bb) if bb else None,
            bounds=[(lo_m, hi_m)] * P,
            method="highs",
        )
        if res.status != 0:
            return
        best["n_feasible"] += 1
        m = np.asarray(res.x)
        price = bp * m[per]
        # objective() only reads schedules, prices and plug-in times, in the problem's (caller's) session order
        inv = np.empty_like(problem.order)
        inv[problem.order] = np.arange(n)
        resp = Response(
            p_kw=p[inv],
            station=s.station.astype(np.int64)[inv],
            plugin_h=plug[inv],
            start_h=plug[inv],
            release_h=plug[inv],
            reneged=np.zeros(n, bool),
            price_usd_per_kwh=price,
            limit_kw=problem.cap,
        )
        j, _ = problem.objective(resp)
        if j > best["objective"] + 1e-12:
            best.update(objective=j, m=m)

    def walk(
        self,
        i: int,
        order: tuple[int, ...],
        rank: np.ndarray,
        port_free: list[list[float]],
        rows: list[np.ndarray],
        rhs: list[float],
        p: np.ndarray,
        plug: np.ndarray,
    ) -> None:
        """Branch EV ``i`` (arrival order) on each of its distinct best-response candidates, then EV ``i + 1``."""
        problem, s, n, dt = self.problem, self.s, self.n, self.dt
        delta, eps, coef, walk = self.delta, self.eps, self.coef, self.walk
        if i == n:
            self.leaf(order, rows, rhs, p, plug)
            return
        d, c = s.departure_h[i], int(s.station[i])
        e_need = problem._e_grid[i]
        pf = port_free[c]
        j = int(np.argmin(pf))
        g = max(s.arrival_h[i], pf[j])
        if g >= d:
            plug2 = plug.copy()
            plug2[i] = d
            walk(i + 1, order, rank, port_free, rows, rhs, p, plug2)
            return
        cands = self._candidates(i, g, rank)
        for ci, (x, t_end) in enumerate(cands):
            rows2, rhs2 = list(rows), list(rhs)
            for cj, (y, t_y) in enumerate(cands):
                if cj != ci:  # δ·π·x + ε·t_x ≤ δ·π·y + ε·t_y
                    rows2.append(delta * (coef(x) - coef(y)))
                    rhs2.append(eps * (t_y - t_end))
            p2 = p.copy()
            p2[i] = x / dt
            plug2 = plug.copy()
            plug2[i] = g
            full = x.sum() >= e_need - 1e-6
            rel = (t_end if x.sum() > 1e-12 else g) if (full and problem.release_full[c]) else d
            pf2 = [list(q) for q in port_free]
            pf2[c][j] = rel
            walk(i + 1, order, rank, pf2, rows2, rhs2, p2, plug2)

    def _candidates(self, i: int, g: float, rank: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """EV ``i``'s distinct cheapest-first fills (energy per slot [kWh], end of charging [h]), one per last
        charging slot, for the slot-price order ``rank``, plugged in at ``g`` [h]."""
        problem, s, T, dt = self.problem, self.s, self.T, self.dt
        d = s.departure_h[i]
        e_need = problem._e_grid[i]
        k0 = int(math.ceil(g / dt - 1e-9))
        kd = int(math.ceil(d / dt - 1e-9))
        kend = min(kd, T)
        frac = min(d / dt - (kend - 1), 1.0) if kd <= T else 1.0
        caps = np.zeros(T)
        for k in range(k0, kend):
            caps[k] = s.p_max_kw[i] * (frac if k == kend - 1 else 1.0)
        target = min(e_need, caps.sum() * dt)
        cands: list[tuple[np.ndarray, float]] = []
        if target > _TOL:
            win = sorted(range(k0, kend), key=lambda k: (rank[k], k))
            for e in range(k0, kend):
                if caps[k0 : e + 1].sum() * dt < target - 1e-7 * max(1.0, target):
                    continue
                x = np.zeros(T)
                rem = target
                for k in win:
                    if k > e:
                        continue
                    take = min(caps[k] * dt, rem)
                    x[k] = take
                    rem -= take
                    if rem <= _TOL:
                        break
                last = int(np.nonzero(x > 1e-12)[0].max())
                t_end = min((last + 1) * dt, d)
                if not any(np.array_equal(x, y) for y, _ in cands):
                    cands.append((x, t_end))
        else:
            cands.append((np.zeros(T), g))
        return cands
