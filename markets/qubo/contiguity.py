"""Contiguous charging: a switching penalty for the EVA QUBO (``000_…``; issue 17, part 2).

A cluster's schedule is *on* in slot ``t`` when its power level ``n[c,t] > 0``. Its number of charging runs
(maximal blocks of on slots) is, for binary on-indicators ``z[t]``, exactly quadratic::

    runs(z) = ½ · (z[0] + z[T−1] + Σ_t |z[t] − z[t+1]|),     |a − b| = a + b − 2ab   for a, b ∈ {0, 1}

(every run contributes one rise and one fall; the two ends of the horizon close the runs that touch them). The
penalty ``w · (runs(z) − 1)`` is therefore ``w`` × the cluster's interruptions (on → off → on) for every pattern
with at least one on slot — linear + pairwise in the bits, a QUBO term. The ``− w`` is a constant, added only for
clusters that must charge (energy window above zero), so for them the penalty is 0 exactly on contiguous
schedules; a cluster allowed to stay off pays ``w`` per run.

In the domain-wall windows of :func:`markets.qubo.eva.build_window_qubo` a slot's level is
``n = lo + step · Σ_j y[j]`` with ordered bits, so ``z = y[0]`` where the window starts at ``lo = 0`` and
``z = 1`` (a constant) where it starts above. The EVA's cluster schedules are what force EV interruptions: a
cluster that charges, pauses (zero power) and charges again interrupts every EV that cannot finish within one of
its runs (``markets.qubo.allocation`` splits what is left over the EVs without needless ones).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from markets.qubo.model import IntVar, QuboModel

__all__ = ["runs", "interruptions", "add_switch_penalty", "switch_usd", "one_hot_terms"]


def runs(n: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """Charging runs of each row of ``n[..., T]`` (maximal blocks of entries ``> tol``)."""
    on = np.asarray(n) > tol
    if on.shape[-1] == 0:
        return np.zeros(on.shape[:-1], np.int64)
    rises = on[..., 1:] & ~on[..., :-1]
    return (on[..., 0] + rises.sum(axis=-1)).astype(np.int64)


def interruptions(n: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """Interruptions (runs − 1, 0 for a row that never charges) of each row of ``n[..., T]``."""
    return np.maximum(runs(n, tol) - 1, 0)


def switch_usd(n: np.ndarray, weight_usd: np.ndarray, must_charge: np.ndarray) -> float:
    """The penalty :func:`add_switch_penalty` adds, for level schedules ``n`` (C, T): Σ_c w_c · (runs_c − [must])."""
    r = runs(n)
    return float(np.sum(np.asarray(weight_usd, float) * (r - np.asarray(must_charge, bool))))


def add_switch_penalty(
    model: QuboModel,
    y: IntVar,
    lo: np.ndarray,
    step: int,
    on_level: int,
    weight_usd: np.ndarray,
    must_charge: np.ndarray,
) -> None:
    """Add ``Σ_c w_c · (runs_c(z) − [must_charge_c])`` to ``model`` (see the module docstring).

    Args:
        model: the window QUBO.
        y: its domain-wall block, shape (C, T, width): slot ``(c, t)`` is at level ``lo + step · Σ_j y[j]``, so
            ``z = [level ≥ on_level] = y[j* − 1]`` with ``j* = ⌈(on_level − lo) / step⌉`` (a constant 1 where
            ``j* ≤ 0``, 0 where the window cannot reach ``on_level``).
        lo: lowest level of each slot's window (C, T).
        step: levels per bit.
        on_level: the smallest level at which a slot counts as charging (≥ 1).
        weight_usd: ``w_c`` [$ per interruption] (C,).
        must_charge: clusters whose energy window excludes zero (C,); they get the constant ``− w_c``.
    """
    c, t, width = y.index.shape
    w = np.broadcast_to(np.asarray(weight_usd, float), (c,))
    need = -(-(int(on_level) - np.asarray(lo, np.int64)) // int(step))  # j*: bits needed to reach on_level
    # z[t] = alpha + beta·x[bit]: (1, 0) where already on, (0, 0) where out of reach, (0, 1) on bit j* − 1
    alpha = (need <= 0).astype(float)
    beta = ((need >= 1) & (need <= width)).astype(float)
    bit = np.take_along_axis(y.index, np.clip(need - 1, 0, width - 1)[:, :, None], axis=2)[:, :, 0]
    half = 0.5 * w[:, None]
    # ½·w·(z[0] + z[T−1])
    lin = np.zeros((c, t))
    const = 0.0
    for k in (0, t - 1):
        lin[:, k] += half[:, 0] * beta[:, k]
        const += float(np.sum(half[:, 0] * alpha[:, k]))
    # ½·w·Σ (z[t] + z[t+1] − 2 z[t] z[t+1])
    if t > 1:
        a0, a1, b0, b1 = alpha[:, :-1], alpha[:, 1:], beta[:, :-1], beta[:, 1:]
        const += float(np.sum(half * (a0 + a1 - 2.0 * a0 * a1)))
        lin[:, :-1] += half * (b0 - 2.0 * a1 * b0)
        lin[:, 1:] += half * (b1 - 2.0 * a0 * b1)
        both = (b0 * b1) > 0
        model.add_quadratic(bit[:, :-1][both], bit[:, 1:][both], (-2.0 * half * b0 * b1)[both])
    model.add_linear(bit[beta > 0], lin[beta > 0])
    model.offset += const - float(np.sum(w * np.asarray(must_charge, bool)))


def one_hot_terms(
    c: int, t: int, kk: int, on_level: int, weight_usd: np.ndarray, must_charge: np.ndarray
) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray, float]:
    """The same penalty in the one-hot MILP of the EVA (columns ``x[c,t,k]``, ``k < kk``;
    ``z = 1 − Σ_{k < on_level} x[c,t,k]``), with a continuous ``u[c,t] ≥ |z[t] − z[t+1]|`` per cluster and slot
    pair appended after the ``c·t·kk`` columns.

    Returns the cost to add to the ``x`` columns, the rows ``[x | u]`` (each ``≥ 0``), the cost of the ``u``
    columns and the objective constant [$].
    """
    w = np.broadcast_to(np.asarray(weight_usd, float), (c,))
    n_x = c * t * kk
    low = np.arange(min(int(on_level), kk))  # the levels below on_level: "off"
    off = (np.arange(c)[:, None, None] * t + np.arange(t)[None, :, None]) * kk + low  # (C, T, L) columns
    dx = np.zeros(n_x)
    np.add.at(dx, off[:, 0].ravel(), np.repeat(-0.5 * w, low.size))  # ½w·z[0] = ½w − ½w·Σ x[c,0,<L]
    np.add.at(dx, off[:, t - 1].ravel(), np.repeat(-0.5 * w, low.size))
    const = float(np.sum(w) - np.sum(w * np.asarray(must_charge, bool)))
    n_u = c * (t - 1)
    u = n_x + np.arange(n_u)
    a, b = off[:, :-1].reshape(n_u, -1), off[:, 1:].reshape(n_u, -1)  # (pairs, L)
    rows, cols, vals = [], [], []
    for r0, sign in ((0, 1.0), (n_u, -1.0)):  # u + s·(Σ x[t,<L] − Σ x[t+1,<L]) ≥ 0, for s = ±1
        k = r0 + np.arange(n_u)
        rows += [k, np.repeat(k, low.size), np.repeat(k, low.size)]
        cols += [u, a.ravel(), b.ravel()]
        vals += [np.ones(n_u), np.full(a.size, sign), np.full(b.size, -sign)]
    block = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(2 * n_u, n_x + n_u)
    )
    return dx, block, np.repeat(0.5 * w, t - 1), const
