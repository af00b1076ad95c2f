"""Composable steps around any dimod sampler, in the style of dimod composites.

* :class:`DecomposedSampler` — samples a BQM made of independent blocks (the EVA level separates by cluster) in one
  call of its child and recombines the best read of *each block*: with ``R`` reads it returns the ``R``
  block-wise ranked combinations, so read 0 is the best the child found for every block at once.
* :class:`PostprocessComposite` — a classical steepest-descent pass from every read of its child
  (:class:`dwave.samplers.SteepestDescentSolver`); the child's own reads stay in ``info["raw"]`` so the annealer's
  result and the post-processed one are reported apart.
* :class:`TimingComposite` — wall time of the child's ``sample`` call in ``info["timing_s"]``.
* :func:`beta_range` — a simulated-annealing temperature range from the BQM's flip energies (the sampler's own
  default is set by the largest penalty and becomes extreme; it is also slow to compute on large models).
* :func:`augmented_lagrangian` — outer iterations that update the multipliers and weights of a
  :class:`~markets.qubo.model.QuboModel`'s constraints from the violations of the best read.
* :func:`greedy_repair` — a classical repair (single-bit flips, least objective increase per unit of violation
  removed) that makes a decoded read feasible; callers report its effect separately.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import dimod
import numpy as np
import scipy.sparse as sp
from dimod.typing import LabelledBQMVectors

from markets.qubo.model import QuboModel

__all__ = [
    "DecomposedSampler",
    "PostprocessComposite",
    "TimingComposite",
    "beta_range",
    "samples_matrix",
    "augmented_lagrangian",
    "ALResult",
    "greedy_repair",
]


def samples_matrix(sampleset: dimod.SampleSet, n_vars: int) -> np.ndarray:
    """Reads of a sampleset over variables ``0 … n_vars − 1`` as an int8 array ``(S, n_vars)``."""
    arr = sampleset.record.sample
    labels = np.asarray(sampleset.variables, dtype=np.int64)
    out = np.zeros((len(arr), n_vars), dtype=np.int8)
    out[:, labels] = arr
    return out


def _sparse_q(bqm: dimod.BinaryQuadraticModel) -> tuple[np.ndarray, sp.csr_matrix, float, list]:
    vectors = bqm.to_numpy_vectors(return_labels=True)
    assert isinstance(vectors, LabelledBQMVectors), "return_labels=True yields the labelled vectors"
    lin, (r, c, q), off, labels = vectors
    n = len(lin)
    m = sp.coo_matrix((q, (r, c)), shape=(n, n)).tocsr()
    return np.asarray(lin, float), m, float(off), list(labels)


def beta_range(
    bqm: dimod.BinaryQuadraticModel,
    hot_energy: float | None = None,
    cold_energy: float | None = None,
    hot_accept: float = 0.5,
    cold_accept: float = 0.01,
) -> tuple[float, float]:
    """``(β_hot, β_cold)`` for simulated annealing: at ``β_hot`` an uphill flip of ``hot_energy`` is accepted with
    probability ``hot_accept``, at ``β_cold`` one of ``cold_energy`` with ``cold_accept``.

    The energies are the problem's own scales — the largest move worth making early, the smallest cost difference
    that must be resolved at the end — and callers that know them should pass them. Left out, they are taken from
    the BQM: the median single-flip scale ``|h_i| + Σ_j |J_ij|`` (hot) and the 5 % quantile of the non-zero
    ``|h_i|`` (cold). The sampler's own default uses the extremes, which one large penalty row makes so hot and
    one tiny coefficient so cold that most sweeps are wasted.
    """
    lin, m, _, _ = _sparse_q(bqm)
    if hot_energy is None or cold_energy is None:
        a = abs(m)
        scale = np.abs(lin) + np.asarray(a.sum(axis=0)).ravel() + np.asarray(a.sum(axis=1)).ravel()
        scale = scale[scale > 0]
        small = np.abs(lin[np.abs(lin) > 1e-12])
        if hot_energy is None:
            hot_energy = float(np.median(scale)) if scale.size else 1.0
        if cold_energy is None:
            cold_energy = float(np.quantile(small, 0.05)) if small.size else hot_energy / 100.0
    hot = np.log(1.0 / hot_accept) / max(hot_energy, 1e-300)
    cold = np.log(1.0 / cold_accept) / max(cold_energy, 1e-300)
    return float(hot), float(max(cold, hot * 10.0))


class TimingComposite(dimod.ComposedSampler):
    """Records the child's wall time in ``info["timing_s"]``."""

    def __init__(self, child: dimod.Sampler) -> None:
        self._children = [child]

    @property
    def children(self) -> list[dimod.Sampler]:
        return self._children

    @property
    def parameters(self) -> dict[str, list]:
        return dict(self.child.parameters)

    @property
    def properties(self) -> dict[str, Any]:
        return {"child_properties": dict(self.child.properties)}

    def sample(self, bqm: dimod.BinaryQuadraticModel, **params: Any) -> dimod.SampleSet:
        t0 = time.perf_counter()
        ss = self.child.sample(bqm, **params)
        ss.resolve()
        ss.info["timing_s"] = time.perf_counter() - t0
        return ss


class DecomposedSampler(dimod.ComposedSampler):
    """Samples independent blocks jointly and recombines reads block by block.

    ``components`` (a list of index arrays over the BQM's integer labels) names the blocks; without it the
    connected components of the interaction graph are used. The BQM must have no interaction across blocks
    (checked). Every returned read is feasible for the child's energy function (it is a product of the child's
    reads), and its energy is the sum of the block energies.
    """

    def __init__(self, child: dimod.Sampler) -> None:
        self._children = [child]

    @property
    def children(self) -> list[dimod.Sampler]:
        return self._children

    @property
    def parameters(self) -> dict[str, list]:
        p = dict(self.child.parameters)
        p["components"] = []
        return p

    @property
    def properties(self) -> dict[str, Any]:
        return {"child_properties": dict(self.child.properties)}

    def sample(
        self, bqm: dimod.BinaryQuadraticModel, components: list[np.ndarray] | None = None, **params: Any
    ) -> dimod.SampleSet:
        lin, m, off, labels = _sparse_q(bqm)
        n = len(lin)
        if labels != list(range(n)):
            raise ValueError("DecomposedSampler: BQM variables must be labelled 0 … n−1")
        comp = np.full(n, -1, dtype=np.int64)
        if components is None:
            _, comp = sp.csgraph.connected_components(m + m.T, directed=False)
            components = [np.flatnonzero(comp == k) for k in range(comp.max() + 1)]
        else:
            for k, idx in enumerate(components):
                comp[np.asarray(idx, dtype=np.int64)] = k
            if np.any(comp < 0):
                raise ValueError("DecomposedSampler: components must cover every variable")
        coo = m.tocoo()
        if np.any(comp[coo.row] != comp[coo.col]):
            raise ValueError("DecomposedSampler: interactions cross components")
        ss = self.child.sample(bqm, **params)
        x = samples_matrix(ss, n).astype(float)
        # Block energies of every read: linear part + quadratic part, summed per block.
        n_comp = len(components)
        member = sp.csr_matrix((np.ones(n), (np.arange(n), comp)), shape=(n, n_comp))
        qx = (m @ x.T).T  # (S, n): Σ_j Q_ij x_j with Q upper-triangular as stored
        e_block = np.asarray(member.T @ (x * (lin + qx)).T).T  # (S, n_comp): linear + quadratic per block
        order = np.argsort(e_block, axis=0, kind="stable")  # per block, reads from best to worst
        # variable i of combined read r comes from read order[r, comp[i]] (one gather, no loop over blocks)
        out = x[order[:, comp], np.arange(n)[None, :]].astype(np.int8)
        res = dimod.SampleSet.from_samples_bqm((out, list(range(n))), bqm)
        res.info.update(dict(ss.info))
        res.info["n_components"] = n_comp
        return res


class PostprocessComposite(dimod.ComposedSampler):
    """Steepest descent from every read of the child; the child's reads are kept in ``info["raw"]``."""

    def __init__(self, child: dimod.Sampler) -> None:
        self._children = [child]

    @property
    def children(self) -> list[dimod.Sampler]:
        return self._children

    @property
    def parameters(self) -> dict[str, list]:
        return dict(self.child.parameters)

    @property
    def properties(self) -> dict[str, Any]:
        return {"child_properties": dict(self.child.properties)}

    def sample(self, bqm: dimod.BinaryQuadraticModel, **params: Any) -> dimod.SampleSet:
        from dwave.samplers import SteepestDescentSolver

        raw = self.child.sample(bqm, **params)
        raw.resolve()
        t0 = time.perf_counter()
        out = SteepestDescentSolver().sample(bqm, initial_states=raw)
        out.resolve()
        out.info["raw"] = raw
        out.info["postprocess_s"] = time.perf_counter() - t0
        return out


@dataclass
class ALResult:
    """Outcome of :func:`augmented_lagrangian`: best feasible read (or the least violated one) and its history."""

    x: np.ndarray
    feasible: bool
    objective: float
    iterations: int
    history: list[dict[str, float]] = field(default_factory=list)
    sample_s: float = 0.0


def augmented_lagrangian(
    model: QuboModel,
    sampler: dimod.Sampler,
    iterations: int = 5,
    growth: float = 2.0,
    select: str = "objective",
    **params: Any,
) -> ALResult:
    """Sample ``model`` up to ``iterations`` times, updating multipliers ``λ ← λ + 2 w r`` and growing the weights
    of still-violated rows by ``growth``, from the best read's residuals ``r``. Stops at the first round whose
    best read is feasible and whose multipliers did not change; returns the best feasible read seen (lowest
    objective), else the read with the fewest violations. ``params`` go to ``sampler.sample``.
    """
    best: np.ndarray | None = None
    best_key: tuple[float, float] | None = None
    hist: list[dict[str, float]] = []
    sample_s = 0.0
    for it in range(1, iterations + 1):
        bqm = model.to_bqm()
        t0 = time.perf_counter()
        ss = sampler.sample(bqm, **params)
        ss.resolve()
        sample_s += time.perf_counter() - t0
        x = samples_matrix(ss, model.n_vars)
        nv = model.n_violated(x)
        obj = model.objective(x)
        energy = model.energy(x)
        pick = int(np.lexsort((energy, nv))[0]) if select == "energy" else int(np.lexsort((obj, nv))[0])
        key = (float(nv[pick]), float(obj[pick]))
        if best_key is None or key < best_key:
            best, best_key = x[pick].copy(), key
        hist.append({"iteration": it, "violated_rows": float(nv[pick]), "objective": float(obj[pick])})
        changed = False
        for con in model.constraints.values():
            r = con.residual(x[pick : pick + 1])[0]
            if np.any(np.abs(r) > 1e-9):
                changed = True
                con.multiplier = con.multiplier + 2.0 * con.weight * r
                viol = con.violation(x[pick : pick + 1])[0] > 1e-9
                con.weight = np.where(viol, con.weight * growth, con.weight)
        if nv[pick] == 0 and not changed:
            break
    assert best is not None and best_key is not None
    return ALResult(best, best_key[0] == 0, best_key[1], it, hist, sample_s)


def _widen(a: sp.spmatrix, n: int) -> sp.csr_matrix:
    out = sp.csr_matrix(a, copy=True)
    out.resize((out.shape[0], n))
    return out


def greedy_repair(model: QuboModel, x: np.ndarray, max_flips: int | None = None) -> np.ndarray:
    """Make ``x`` feasible by single-bit flips of non-slack bits, each time the flip that removes violation at the
    least objective increase per unit removed. Returns the repaired copy (``x`` itself if already feasible);
    raises ``RuntimeError`` if no flip reduces the violation any more.
    """
    x = np.asarray(x, dtype=np.int8).copy()
    cons = list(model.constraints.values())
    if not cons:
        return x
    a = sp.vstack([_widen(c.a, model.n_vars) for c in cons]).tocsc()
    lo = np.concatenate([c.lo for c in cons])
    hi = np.concatenate([c.hi for c in cons])
    lin, r, c, v = model.objective_arrays()
    q = sp.coo_matrix((v, (r, c)), shape=(model.n_vars, model.n_vars)).tocsr()
    q = q + q.T
    ax = a @ x.astype(float)
    limit = max_flips if max_flips is not None else 10 * model.n_vars
    for _ in range(limit):
        viol = np.maximum(lo - ax, 0) + np.maximum(ax - hi, 0)
        if viol.sum() <= 1e-9:
            return x
        d = 1.0 - 2.0 * x  # +1 turns a bit on, −1 off
        # Violation after flipping each bit: rows change by d_i · A[:, i].
        dax = a.multiply(d[None, :]).tocsc()
        new_viol = np.asarray(
            viol.sum()
            + (
                np.maximum(lo[:, None] - (ax[:, None] + dax.toarray()), 0)
                + np.maximum((ax[:, None] + dax.toarray()) - hi[:, None], 0)
                - viol[:, None]
            ).sum(axis=0)
        ).ravel()
        gain = viol.sum() - new_viol
        dobj = d * (lin + q @ x.astype(float))
        cand = gain > 1e-9
        if not cand.any():
            raise RuntimeError("greedy_repair: no single flip reduces the violation")
        score = np.where(cand, dobj / np.where(cand, gain, 1.0), np.inf)
        i = int(np.argmin(score))
        x[i] ^= 1
        ax = ax + d[i] * a[:, i].toarray().ravel()
    raise RuntimeError(f"greedy_repair: still infeasible after {limit} flips")
