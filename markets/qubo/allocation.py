"""Individual EV allocation of cluster schedules (``000_…`` eqs. 9–10), solved exactly as an LP in HiGHS.

For every cluster ``c`` and slot ``t`` the cluster power ``P[c,t]`` is split over the cluster's EVs::

    min  ω1 Σ_{c,t} |δ[c,t]|·Δt  +  ω2 Σ_{n,t} |p[n,t] − p[n,t+1]|·Δt  +  ω3 Σ_n (E_n − Σ_t p[n,t]·Δt)
    s.t. Σ_{n∈c} p[n,t] − P[c,t] = δ[c,t]                    (tracking, eq. 10 first row)
         0 ≤ p[n,t] ≤ P_n^rated · a[n,t]                      (rated power; ``a`` = share of the slot plugged in)
         Σ_t p[n,t]·Δt ≤ E_n                                  (never more than the EV needs)

Eqs. 9–10 are linear in absolute values, so the LP with the usual split variables is their exact solution; the
paper's QUBO of the same (eq. 11–12) squares every term. The paper states ``Σ_t p = E_n`` as an equality; with
integer-level cluster schedules the cluster total can differ from Σ E_n by up to one level, so we keep "≤ E_n"
hard and price the shortfall (``ω3 > ω1``: the EV's energy wins over tracking the last fraction of a level).
Interruptions are counted as the number of times an EV stops and later resumes charging (on → off → on).
The L1 term ω2 smooths each EV's power but does not count stops; a second lexicographic stage per cluster (a small
MILP with on/off binaries, :func:`_fewest_interruptions`) keeps the LP's cluster powers — so tracking and
energy are unchanged — and re-splits them over the EVs with the fewest interruptions. Interruptions the cluster
schedule itself forces (a cluster that charges, pauses, and charges again with EVs that need more than one run
can hold) remain.

``contiguous=True`` replaces that stage by one that works on the cluster's runs (blocks of slots with power):
a node-limited MILP chooses which runs each EV charges in, with the fewest EVs in more than one
(:func:`_run_participation`, only for a cluster that pauses), then an LP keeps every EV on in every slot of its
runs at the largest common share of its rating (:func:`_widest_split`). An EV then pauses only where its
cluster does — unless no such split exists (a cluster at full power in more slots than its smaller-need EVs can
take; the LP's split is kept). The share can be small: a slot where the cluster draws little is shared by all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from markets.qubo import highs

__all__ = ["Allocation", "allocate", "count_interruptions"]


@dataclass(frozen=True)
class Allocation:
    """Per-EV schedule and how well it follows the clusters.

    Attributes:
        p_mw: power per EV and slot [MW], shape (N, T).
        tracking_error_mwh: Σ |δ|·Δt over clusters and slots [MWh].
        shortfall_mwh: energy the EVs do not get, Σ_n (E_n − Σ_t p·Δt) [MWh].
        interruptions: number of stop-and-resume events over all EVs.
        wall_s: HiGHS wall time [s].
        lp_interruptions: the same count after the LP stage alone (before the second stage).
    """

    p_mw: np.ndarray
    tracking_error_mwh: float
    shortfall_mwh: float
    interruptions: int
    wall_s: float
    lp_interruptions: int = 0


def count_interruptions(p: np.ndarray, tol: float = 1e-9) -> int:
    """Stop-and-resume events: per EV, the number of charging runs minus one (0 for EVs that never charge)."""
    on = np.asarray(p) > tol
    starts = on & ~np.concatenate([np.zeros((on.shape[0], 1), bool), on[:, :-1]], axis=1)
    runs = starts.sum(axis=1)
    return int(np.maximum(runs - 1, 0).sum())


def allocate(
    cluster_p_mw: np.ndarray,
    labels: np.ndarray,
    p_cap_mw: np.ndarray,
    e_need_mwh: np.ndarray,
    dt_h: float,
    *,
    w_track: float = 1.0,
    w_smooth: float = 0.05,
    w_energy: float = 1.5,
    min_interruptions: bool = True,
    max_nodes: int = 50,
    contiguous: bool = False,
) -> Allocation:
    """Split cluster schedules over EVs (see module docstring).

    Args:
        cluster_p_mw: cluster schedules ``P[c,t]`` [MW], shape (C, T).
        labels: cluster of each EV, shape (N,).
        p_cap_mw: per-EV, per-slot power cap ``P_n^rated · a[n,t]`` [MW], shape (N, T).
        e_need_mwh: grid-side energy each EV needs [MWh], shape (N,).
        dt_h: slot length [h].
        w_track: ω1 [$/MWh of tracking error].
        w_smooth: ω2 [$/MWh of power change between consecutive slots].
        w_energy: ω3 [$/MWh of shortfall]; must exceed ``w_track``.
        min_interruptions: a second lexicographic stage per cluster (:func:`_fewest_interruptions`, a small
            MILP) that keeps the LP's cluster powers and re-splits them with the fewest stop-and-resume events.
        max_nodes: HiGHS branch-and-bound node limit per cluster of that stage (a work limit, not a wall-clock one,
            so the result does not depend on the machine's load); the LP's split is kept if it finds nothing better.
        contiguous: that stage is :func:`_resplit_contiguous` instead (fewest pauses between the cluster's runs,
            none inside a run: an EV is interrupted only where its cluster's schedule pauses).

    Returns:
        The allocation.
    """
    cp = np.asarray(cluster_p_mw, float)
    cap = np.asarray(p_cap_mw, float)
    need = np.asarray(e_need_mwh, float)
    labels = np.asarray(labels, np.int64)
    n, t = cap.shape
    c = cp.shape[0]
    if n == 0:
        return Allocation(np.zeros((0, t)), float(np.abs(cp).sum() * dt_h), 0.0, 0, 0.0)
    if w_energy <= w_track:
        raise ValueError(f"w_energy: must be > w_track ({w_track}), got {w_energy}")
    p, secs = _allocation_lp(cp, labels, cap, need, dt_h, w_track, w_smooth, w_energy)
    got = np.zeros((c, t))
    np.add.at(got, labels, p)
    lp_interruptions = count_interruptions(p)
    if min_interruptions and t > 2 and lp_interruptions > 0:
        resplit = _resplit_contiguous if contiguous else _resplit_fewest_interruptions
        p, got, stage2_s = resplit(p, got, labels, cap, need, dt_h, max_nodes)
        secs += stage2_s
    return Allocation(
        p,
        float(np.abs(got - cp).sum() * dt_h),
        float(np.maximum(need - p.sum(axis=1) * dt_h, 0).sum()),
        count_interruptions(p),
        secs,
        lp_interruptions,
    )


def _allocation_lp(
    cp: np.ndarray,
    labels: np.ndarray,
    cap: np.ndarray,
    need: np.ndarray,
    dt_h: float,
    w_track: float,
    w_smooth: float,
    w_energy: float,
) -> tuple[np.ndarray, float]:
    """The first stage: the LP split of the cluster schedules ``cp`` [MW] over the EVs.

    Returns:
        Per-EV power ``p`` [MW], shape (N, T), clipped to ``cap`` and scaled to never exceed ``need``, and the
        HiGHS time [s].
    """
    n, t = cap.shape
    c = cp.shape[0]
    # columns: p (n·t), δ+ (c·t), δ− (c·t), u (n·(t−1))
    n_p, n_d, n_u = n * t, c * t, n * max(t - 1, 0)
    n_col = n_p + 2 * n_d + n_u
    p_idx = np.arange(n_p).reshape(n, t)
    dp_idx = n_p + np.arange(n_d).reshape(c, t)
    dm_idx = n_p + n_d + np.arange(n_d).reshape(c, t)
    u_idx = n_p + 2 * n_d + np.arange(n_u).reshape(n, max(t - 1, 0))
    rows, cols, vals, lo, hi = [], [], [], [], []
    r0 = 0
    # tracking rows (c, t): Σ_n p − δ+ + δ− = P
    rr = labels[:, None] * t + np.arange(t)[None, :]
    rows += [
        rr.ravel(),
        (np.arange(c)[:, None] * t + np.arange(t)).ravel(),
        (np.arange(c)[:, None] * t + np.arange(t)).ravel(),
    ]
    cols += [p_idx.ravel(), dp_idx.ravel(), dm_idx.ravel()]
    vals += [np.ones(n_p), -np.ones(n_d), np.ones(n_d)]
    lo.append(cp.ravel())
    hi.append(cp.ravel())
    r0 += c * t
    # energy rows (n): Σ_t p·Δt ≤ E
    rows.append(r0 + np.repeat(np.arange(n), t))
    cols.append(p_idx.ravel())
    vals.append(np.full(n_p, dt_h))
    lo.append(np.full(n, -np.inf))
    hi.append(need)
    r0 += n
    if t > 1:
        # smoothness: u ≥ p_t − p_{t+1} and u ≥ p_{t+1} − p_t
        k = np.arange(n_u)
        for sign in (1.0, -1.0):
            rows += [r0 + k, r0 + k, r0 + k]
            cols += [p_idx[:, :-1].ravel(), p_idx[:, 1:].ravel(), u_idx.ravel()]
            vals += [np.full(n_u, sign), np.full(n_u, -sign), -np.ones(n_u)]
            lo.append(np.full(n_u, -np.inf))
            hi.append(np.zeros(n_u))
            r0 += n_u
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r0, n_col))
    cost = np.concatenate(
        [np.full(n_p, -w_energy * dt_h), np.full(2 * n_d, w_track * dt_h), np.full(n_u, w_smooth * dt_h)]
    )
    h, secs = highs.run(
        cost,
        0.0,
        np.concatenate([np.maximum(cap, 0).ravel(), np.full(2 * n_d + n_u, np.inf)]),
        a,
        np.concatenate(lo),
        np.concatenate(hi),
    )
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"allocation: HiGHS status {h.modelStatusToString(h.getModelStatus())}")
    x = np.asarray(h.getSolution().col_value)
    p = np.clip(x[:n_p].reshape(n, t), 0.0, np.maximum(cap, 0))
    # numerical safety: never above the need
    e = p.sum(axis=1) * dt_h
    over = e > need
    p[over] *= (need[over] / e[over])[:, None]
    return p, secs


def _resplit_fewest_interruptions(
    p: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray,
    cap: np.ndarray,
    need: np.ndarray,
    dt_h: float,
    max_nodes: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The second stage: per cluster with interruptions, re-split its powers ``got`` [MW] with the fewest
    stop-and-resume events (:func:`_fewest_interruptions`); ``p`` [MW] is updated in place.

    Returns:
        ``p``, the cluster totals it gives [MW], and the time spent [s].
    """
    c, t = got.shape
    t0 = time.perf_counter()
    for k in np.unique(labels[(p > 1e-9).any(axis=1)]):
        members = np.flatnonzero(labels == k)
        if count_interruptions(p[members]) == 0:
            continue
        q = _fewest_interruptions(got[k], cap[members], need[members], p[members], dt_h, max_nodes)
        if q is not None:
            p[members] = q
    secs = time.perf_counter() - t0
    # the MILP meets "energy ≤ need" only to HiGHS's feasibility tolerance: never deliver above the need
    e = p.sum(axis=1) * dt_h
    over = e > need
    p[over] *= (need[over] / e[over])[:, None]
    got = np.zeros((c, t))
    np.add.at(got, labels, p)
    return p, got, secs


def _fewest_interruptions(
    total_mw: np.ndarray, cap_mw: np.ndarray, need_mwh: np.ndarray, p_lp: np.ndarray, dt_h: float, max_nodes: int
) -> np.ndarray | None:
    """Second lexicographic stage for one cluster: keep the LP's cluster power per slot (so tracking and total
    energy are unchanged) and each EV's rating and need, and re-split it with the fewest stop-and-resume events.

    MILP (HiGHS): ``z[n,t]`` on/off, ``p ≤ cap·z``, ``s[n,t] ≥ z[n,t] − z[n,t−1]`` (a start), ``y[n] ≤ Σ_t z``
    (the EV charges at all); minimise ``Σ s − Σ y`` = interruptions (+ 1e-3 × Σ s so that EVs start once). Returns
    None when HiGHS finds nothing better than the LP's split within ``max_nodes`` nodes.
    """
    n, t = cap_mw.shape
    n_p = n * t
    ip = np.arange(n_p).reshape(n, t)
    iz = n_p + ip
    i_s = 2 * n_p + ip
    iy = 3 * n_p + np.arange(n)
    n_col = 3 * n_p + n
    rows, cols, vals, lo, hi = [], [], [], [], []
    r = 0

    def add(cc: list[np.ndarray], vv: list[np.ndarray], nrow: int, lo_: np.ndarray, hi_: np.ndarray) -> None:
        nonlocal r
        for c_, v_ in zip(cc, vv):
            rows.append(r + np.arange(nrow).repeat(c_.size // nrow))
            cols.append(c_.reshape(-1))
            vals.append(np.broadcast_to(v_, c_.shape).reshape(-1))
        lo.append(lo_)
        hi.append(hi_)
        r += nrow

    add([ip.T], [np.ones((t, n))], t, total_mw, total_mw)  # Σ_n p[n,t] = cluster power of the LP
    add([ip], [np.full((n, t), dt_h)], n, np.full(n, -np.inf), need_mwh + 1e-9)  # energy ≤ need
    add(
        [ip.reshape(-1, 1), iz.reshape(-1, 1)],
        [np.ones((n_p, 1)), -cap_mw.reshape(-1, 1)],
        n_p,
        np.full(n_p, -np.inf),
        np.zeros(n_p),
    )  # p ≤ cap·z
    prev = np.concatenate([np.full((n, 1), -1), iz[:, :-1]], axis=1)  # z[n,t−1] (none at t = 0)
    first = np.zeros((n, t), bool)
    first[:, 0] = True
    cc = [i_s.reshape(-1, 1), iz.reshape(-1, 1)]
    vv = [np.ones((n_p, 1)), -np.ones((n_p, 1))]
    add(cc, vv, n_p, np.zeros(n_p), np.full(n_p, np.inf))  # s − z ≥ 0 … then + z[t−1] below
    rows.append((r - n_p) + np.flatnonzero(~first.reshape(-1)))
    cols.append(prev.reshape(-1)[~first.reshape(-1)])
    vals.append(np.ones(int((~first).sum())))
    add([iy.reshape(-1, 1), iz], [np.ones((n, 1)), -np.ones((n, t))], n, np.full(n, -np.inf), np.zeros(n))  # y ≤ Σz
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, n_col))
    h, _ = highs.run(
        np.concatenate([np.zeros(2 * n_p), np.full(n_p, 1.001), -np.ones(n)]),
        0.0,
        np.concatenate([np.maximum(cap_mw, 0).reshape(-1), np.ones(2 * n_p + n)]),
        a,
        np.concatenate(lo),
        np.concatenate(hi),
        integer=np.arange(n_col) >= n_p,
        mip_max_nodes=int(max_nodes),
        mip_rel_gap=1e-4,
        random_seed=0,
    )
    sol = h.getSolution()
    if not sol.value_valid:
        return None
    q = np.clip(np.asarray(sol.col_value)[:n_p].reshape(n, t), 0.0, np.maximum(cap_mw, 0))
    q[q < 1e-9] = 0.0
    ok = np.abs(q.sum(axis=0) - total_mw).max(initial=0.0) < 1e-6 and np.all(q.sum(axis=1) * dt_h <= need_mwh + 1e-6)
    return q if ok and count_interruptions(q) < count_interruptions(p_lp) else None


# ------------------------------------------------------------------------------------- contiguous second stage
def _support_runs(total_mw: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Run index of each slot of a cluster's power ``total_mw`` (T,): maximal blocks of slots above ``tol``
    numbered 0, 1, …; −1 where the cluster draws nothing."""
    on = np.asarray(total_mw) > tol
    starts = on & ~np.concatenate([[False], on[:-1]])
    return np.where(on, np.cumsum(starts) - 1, -1)


def _resplit_contiguous(
    p: np.ndarray,
    got: np.ndarray,
    labels: np.ndarray,
    cap: np.ndarray,
    need: np.ndarray,
    dt_h: float,
    max_nodes: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The contiguous second stage: per cluster with interruptions, keep its powers ``got`` [MW] and re-split
    them so that each EV charges in as few of the cluster's runs (blocks of slots with power) as a node-limited
    MILP finds (:func:`_run_participation`, only when the cluster has more than one run), and without a pause
    inside any run it takes part in (:func:`_widest_split`: every EV on in every slot of its runs it is plugged
    in, at the largest common share of its rating). An EV is then interrupted only between two runs of its
    cluster, i.e. where the cluster's own schedule pauses. ``p`` [MW] is updated in place.

    Returns:
        ``p``, the cluster totals it gives [MW], and the time spent [s].
    """
    c, t = got.shape
    t0 = time.perf_counter()
    for k in np.unique(labels[(p > 1e-9).any(axis=1)]):
        members = np.flatnonzero(labels == k)
        before = count_interruptions(p[members])
        if before == 0:
            continue
        run = _support_runs(got[k])
        m = int(run.max()) + 1
        onehot = (run[:, None] == np.arange(m)[None, :]).astype(float)  # (T, m)
        part = (p[members] > 1e-9) @ onehot > 0  # (N_k, m): the runs each EV charges in
        if m > 1:
            better = _run_participation(got[k], cap[members], need[members], run, dt_h, max_nodes)
            if better is not None and _pauses(better) < _pauses(part):
                part = better
        q = _widest_split(got[k], cap[members], need[members], (part @ onehot.T) > 0, dt_h)
        if q is not None and count_interruptions(q) < before:
            p[members] = q
    secs = time.perf_counter() - t0
    e = p.sum(axis=1) * dt_h
    over = e > need
    p[over] *= (need[over] / e[over])[:, None]
    got = np.zeros((c, t))
    np.add.at(got, labels, p)
    return p, got, secs


def _pauses(part: np.ndarray) -> int:
    """Pauses between runs of a participation ``part`` (N, m): Σ_n (runs taken − 1), 0 for an EV taking none."""
    return int(np.maximum(np.asarray(part).sum(axis=1) - 1, 0).sum())


def _run_participation(
    total_mw: np.ndarray, cap_mw: np.ndarray, need_mwh: np.ndarray, run: np.ndarray, dt_h: float, max_nodes: int
) -> np.ndarray | None:
    """Which of the cluster's runs each EV charges in, with the fewest EV-run pairs beyond one per EV.

    MILP (HiGHS): ``u[n,r]`` ∈ {0, 1}, ``p[n,t] ≤ cap·u[n, run(t)]``, ``Σ_n p[n,t] = total[t]``,
    ``Σ_t p·Δt ≤ need``, ``y[n] ≤ Σ_r u[n,r]``, ``y ≤ 1``; minimise ``Σ u − Σ y`` (the EVs' pauses between runs).
    Returns ``u`` as bool (N, m), or None when HiGHS finds no solution within ``max_nodes`` nodes.
    """
    n, t = cap_mw.shape
    m = int(run.max()) + 1
    n_p, n_u = n * t, n * m
    ip = np.arange(n_p).reshape(n, t)
    iu = n_p + np.arange(n_u).reshape(n, m)
    iy = n_p + n_u + np.arange(n)
    sup = np.flatnonzero(run >= 0)
    rows = [np.repeat(np.arange(t), n), np.arange(n).repeat(t) + t]
    cols = [ip.T.ravel(), ip.ravel()]
    vals = [np.ones(n_p), np.full(n_p, dt_h)]
    r0 = t + n
    k = r0 + np.arange(n * sup.size)  # p − cap·u ≤ 0, for the slots with power
    rows += [k, k]
    cols += [ip[:, sup].ravel(), iu[:, run[sup]].ravel()]
    vals += [np.ones(k.size), -cap_mw[:, sup].ravel()]
    r0 += k.size
    rows += [r0 + np.arange(n), (r0 + np.arange(n)).repeat(m)]  # y − Σ_r u ≤ 0
    cols += [iy, iu.ravel()]
    vals += [np.ones(n), -np.ones(n_u)]
    r0 += n
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r0, iy[-1] + 1))
    lo = np.concatenate([total_mw, np.full(r0 - t, -np.inf)])
    hi = np.concatenate([total_mw, need_mwh + 1e-9, np.zeros(r0 - t - n)])
    h, _ = highs.run(
        np.concatenate([np.zeros(n_p), np.ones(n_u), -np.ones(n)]),
        0.0,
        np.concatenate([np.where(run[None, :] >= 0, np.maximum(cap_mw, 0), 0.0).ravel(), np.ones(n_u + n)]),
        a,
        lo,
        hi,
        integer=(np.arange(iy[-1] + 1) >= n_p) & (np.arange(iy[-1] + 1) < n_p + n_u),
        mip_max_nodes=int(max_nodes),
        mip_rel_gap=1e-4,
        random_seed=0,
    )
    sol = h.getSolution()
    if not sol.value_valid:
        return None
    return np.asarray(sol.col_value)[n_p : n_p + n_u].reshape(n, m) > 0.5


def _widest_split(
    total_mw: np.ndarray, cap_mw: np.ndarray, need_mwh: np.ndarray, on: np.ndarray, dt_h: float
) -> np.ndarray | None:
    """Split a cluster's power ``total_mw`` (T,) over its EVs with each EV charging in exactly the slots ``on``
    (N, T) where it is plugged in, at the largest common share ``ε`` of its rating (LP: maximise ε s.t.
    ``p ≥ ε·cap`` on those slots, ``p = 0`` elsewhere, ``Σ_n p = total``, ``Σ_t p·Δt ≤ need``). None when the LP
    has no solution (the slots ``on`` cannot carry the power) or ``ε`` is 0.
    """
    n, t = cap_mw.shape
    on = on & (cap_mw > 0)
    n_p = n * t
    ip = np.arange(n_p).reshape(n, t)
    i_on = ip[on]
    k = t + n + np.arange(i_on.size)
    rows = [np.repeat(np.arange(t), n), np.arange(n).repeat(t) + t, k, k]
    cols = [ip.T.ravel(), ip.ravel(), i_on, np.full(i_on.size, n_p)]
    vals = [np.ones(n_p), np.full(n_p, dt_h), np.ones(i_on.size), -cap_mw[on]]
    a = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(k.size + t + n, n_p + 1)
    )
    h, _ = highs.run(
        np.concatenate([np.zeros(n_p), [-1.0]]),
        0.0,
        np.concatenate([np.where(on, cap_mw, 0.0).ravel(), [1.0]]),
        a,
        np.concatenate([total_mw, np.full(n, -np.inf), np.zeros(i_on.size)]),
        np.concatenate([total_mw, need_mwh + 1e-9, np.full(i_on.size, np.inf)]),
    )
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    x = np.asarray(h.getSolution().col_value)
    if x[n_p] <= 1e-9:
        return None
    q = np.clip(x[:n_p].reshape(n, t), 0.0, np.maximum(cap_mw, 0))
    q[q < 1e-12] = 0.0
    ok = np.abs(q.sum(axis=0) - total_mw).max(initial=0.0) < 1e-6 and np.all(q.sum(axis=1) * dt_h <= need_mwh + 1e-6)
    return q if ok else None
