"""A QUBO builder: integer variables on binary encodings, linear constraints as (augmented-Lagrangian) penalties.

Everything is built from numpy/scipy arrays — one sparse product per constraint block, no Python loop per term —
and handed to dimod as a :class:`dimod.BinaryQuadraticModel` over variables ``0 … n−1``.

A constraint block is ``lo ≤ A·x ≤ hi`` over the *bits* ``x`` (rows of ``A`` are usually built with
:meth:`QuboModel.rows`, which maps integer levels to bit coefficients). Its penalty is, per row ``k``::

    w_k · (a_k·x − s_k − lo_k)²  +  λ_k · (a_k·x − s_k − lo_k)

with a slack integer ``s_k ∈ [0, hi_k − lo_k]`` (none for equalities). ``w`` is the penalty weight and ``λ`` a
Lagrange multiplier estimate (from LP duals or augmented-Lagrangian updates, :mod:`markets.qubo.composites`).
Every feasible assignment — constraint met, slack equal to the surplus — has penalty 0 at ``λ = 0``; every
infeasible one has penalty ≥ ``w_k · (distance to the range)²`` > 0 (tested as a hypothesis property).
Constraint rows and bounds must be integer-valued for a slack of step 1 to represent the surplus exactly; the
builder checks this.

>>> import numpy as np
>>> from markets.qubo import encoding
>>> m = QuboModel()
>>> v = m.integer("n", (3,), encoding.binary(3))         # three integers in [0, 3]
>>> m.add_objective_levels(v, np.array([1.0, 2.0, 3.0]))  # cost per level
>>> _ = m.add_constraint("total", m.rows(v, np.ones((1, 3))), lo=4, hi=4, weight=10.0)
>>> x = m.encode({"n": np.array([3, 1, 0])})
>>> float(m.objective(x)), float(m.energy(x)), m.is_feasible(x)
(5.0, 5.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dimod
import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from markets.qubo import encoding as enc

__all__ = ["IntVar", "SlackView", "Constraint", "QuboModel"]


@dataclass(frozen=True)
class IntVar:
    """A block of integer variables: ``index[..., j]`` is the QUBO variable of bit ``j`` of each element."""

    name: str
    index: np.ndarray  # int64, shape + (n_bits,)
    encoding: enc.IntegerEncoding

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.index.shape[:-1])

    def levels(self, x: np.ndarray) -> np.ndarray:
        """Integer levels of this block in samples ``x[S, n]`` → shape ``(S, *shape)``."""
        return np.asarray(x)[:, self.index] @ self.encoding.coefficients

    def values(self, x: np.ndarray) -> np.ndarray:
        """Decoded values (``offset + step · level``) in samples ``x[S, n]``."""
        return self.encoding.offset + self.encoding.step * self.levels(x)


class SlackView:
    """The slack integers of one constraint (one block per row with a range), addressed as a whole."""

    def __init__(self, k: int, blocks: list[tuple[int, IntVar]]) -> None:
        self.k = k
        self.blocks = blocks

    def levels(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), self.k))
        for r, sv in self.blocks:
            out[:, r] = sv.levels(x)
        return out


@dataclass
class Constraint:
    """``lo ≤ A·x ≤ hi`` over the model's bits, with its penalty weights, multipliers and slack block."""

    name: str
    a: sp.csr_matrix  # (K, n) over the non-slack bits
    lo: np.ndarray
    hi: np.ndarray
    weight: np.ndarray
    multiplier: np.ndarray
    slack: SlackView | None = None
    slack_rows: list[np.ndarray] = field(default_factory=list)  # bit indices of each row's slack

    def activity(self, x: np.ndarray) -> np.ndarray:
        """``A·x`` for samples ``x[S, n]`` → ``(S, K)``."""
        x = np.asarray(x, dtype=float)[:, : self.a.shape[1]]  # variables added later sit beyond A's width
        return (self.a @ x.T).T

    def violation(self, x: np.ndarray) -> np.ndarray:
        """Distance of ``A·x`` to ``[lo, hi]`` (0 where satisfied), ``(S, K)``."""
        ax = self.activity(x)
        return np.maximum(self.lo - ax, 0.0) + np.maximum(ax - self.hi, 0.0)

    def residual(self, x: np.ndarray) -> np.ndarray:
        """The penalised expression ``A·x − s − lo`` (slack included), ``(S, K)``."""
        r = self.activity(x) - self.lo
        if self.slack is not None:
            r = r - self.slack.levels(x).reshape(r.shape)
        return r


class QuboModel:
    """Builds a QUBO from integer blocks, a linear/quadratic objective and penalised linear constraints."""

    def __init__(self) -> None:
        self.n_vars = 0
        self.vars: dict[str, IntVar] = {}
        self.constraints: dict[str, Constraint] = {}
        self._lin: list[tuple[np.ndarray, np.ndarray]] = []
        self._quad: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.offset = 0.0

    # ------------------------------------------------------------------ variables
    def integer(self, name: str, shape: tuple[int, ...], encoding: enc.IntegerEncoding) -> IntVar:
        """A new block of integers of ``shape``, each on its own ``encoding.n_bits`` bits."""
        if name in self.vars:
            raise ValueError(f"variable block {name!r} already exists")
        size = int(np.prod(shape, dtype=np.int64)) * encoding.n_bits
        index = (self.n_vars + np.arange(size, dtype=np.int64)).reshape(tuple(shape) + (encoding.n_bits,))
        self.n_vars += size
        var = IntVar(name, index, encoding)
        self.vars[name] = var
        return var

    def rows(self, var: IntVar, coef: np.ndarray) -> sp.csr_matrix:
        """Constraint rows ``Σ_e coef[k, e] · level(var[e])`` as a sparse ``(K, n_vars)`` matrix over bits.

        ``coef`` has shape ``(K, var.size)`` (elements in C order), dense or sparse.
        """
        c = sp.csr_matrix(coef)
        n_el = int(np.prod(var.shape, dtype=np.int64))
        if c.shape[1] != n_el:
            raise ValueError(f"coef: needs {n_el} columns (elements of {var.name!r}), got {c.shape[1]}")
        # Kronecker with the bit coefficients: element e → its bits, scaled by c_j.
        expand = sp.kron(sp.identity(n_el, format="csr"), sp.csr_matrix(var.encoding.coefficients[None, :]))
        out = (c @ expand).tocoo()
        cols = var.index.reshape(-1)[out.col]
        return sp.csr_matrix((out.data, (out.row, cols)), shape=(c.shape[0], self.n_vars))

    # ------------------------------------------------------------------ objective
    def add_linear(self, index: np.ndarray, coef: np.ndarray) -> None:
        """Objective ``Σ coef · x[index]``."""
        i = np.asarray(index, dtype=np.int64).reshape(-1)
        self._lin.append((i, np.broadcast_to(np.asarray(coef, float), np.shape(index)).reshape(-1).copy()))

    def add_quadratic(self, i: np.ndarray, j: np.ndarray, coef: np.ndarray) -> None:
        """Objective ``Σ coef · x[i] · x[j]`` (``i == j`` terms are linear, since ``x² = x``)."""
        shape = np.shape(i)
        i = np.asarray(i, dtype=np.int64).reshape(-1)
        j = np.asarray(j, dtype=np.int64).reshape(-1)
        q = np.broadcast_to(np.asarray(coef, float), shape).reshape(-1).copy()
        diag = i == j
        if diag.any():
            self._lin.append((i[diag], q[diag]))
        self._quad.append((i[~diag], j[~diag], q[~diag]))

    def add_objective_levels(self, var: IntVar, cost_per_level: np.ndarray) -> None:
        """Objective ``Σ_e cost_per_level[e] · level(var[e])`` (linear in the bits)."""
        cost = np.broadcast_to(np.asarray(cost_per_level, float), var.shape)
        self.add_linear(var.index, cost[..., None] * var.encoding.coefficients)

    def add_objective_table(self, var: IntVar, table: np.ndarray) -> np.ndarray:
        """Objective ``Σ_e table[e, level(var[e])]`` for an arbitrary cost per level, fitted by least squares.

        A function of an integer's level is a polynomial of degree up to ``n_bits`` in its bits; this keeps its
        best quadratic approximation (linear + pairwise bit terms, fitted over all ``2^n_bits`` patterns) — exact
        for any table that is affine or quadratic in the level. Returns the fit's largest absolute error per
        element, so callers can report how far the QUBO energy is from the true cost. ``n_bits ≤ 12``.
        """
        nb = var.encoding.n_bits
        if nb > 12:
            raise ValueError(f"{var.name}: table fits need ≤ 12 bits per integer, got {nb}")
        table = np.asarray(table, float).reshape(-1, var.encoding.upper + 1)
        patterns = ((np.arange(1 << nb)[:, None] >> np.arange(nb)) & 1).astype(float)  # (2^nb, nb)
        ii, jj = np.triu_indices(nb, 1)
        design = np.hstack([np.ones((len(patterns), 1)), patterns, patterns[:, ii] * patterns[:, jj]])
        target = table[:, patterns.astype(np.int64) @ var.encoding.coefficients].T  # (2^nb, n_el)
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)  # (1 + nb + pairs, n_el)
        err = np.abs(design @ coef - target).max(axis=0)
        idx = var.index.reshape(-1, nb)
        self.offset += float(coef[0].sum())
        self.add_linear(idx, coef[1 : 1 + nb].T)
        self.add_quadratic(idx[:, ii], idx[:, jj], coef[1 + nb :].T)
        return err

    # ------------------------------------------------------------------ constraints
    def add_constraint(
        self,
        name: str,
        a: sp.spmatrix,
        lo: np.ndarray | float,
        hi: np.ndarray | float,
        weight: np.ndarray | float,
        multiplier: np.ndarray | float = 0.0,
        slack: str = "binary",
        mu: int | None = None,
    ) -> Constraint:
        """Penalised rows ``lo ≤ a·x ≤ hi``; equalities where ``lo == hi``, a slack integer elsewhere.

        ``hi = inf`` is replaced by the largest value ``a·x`` can take. ``slack`` is the slack's encoding
        (``binary``, ``bounded`` with ``mu``, or ``unary``).
        """
        if name in self.constraints:
            raise ValueError(f"constraint {name!r} already exists")
        a = sp.csr_matrix(a, dtype=float)
        k = a.shape[0]
        lo_k: NDArray[np.float64] = np.broadcast_to(np.asarray(lo, float), (k,)).copy()
        hi_k: NDArray[np.float64] = np.broadcast_to(np.asarray(hi, float), (k,)).copy()
        amax = np.asarray(a.maximum(0).sum(axis=1)).ravel()
        hi_k = np.minimum(hi_k, amax)
        bad = [nm for nm, v in (("a", a.data), ("lo", lo_k), ("hi", hi_k)) if np.any(np.abs(v - np.rint(v)) > 1e-9)]
        if bad:
            raise ValueError(f"constraint {name!r}: {', '.join(bad)} must be integer-valued for an exact slack")
        if np.any(hi_k < lo_k):
            raise ValueError(f"constraint {name!r}: infeasible rows (hi < lo) at {np.flatnonzero(hi_k < lo_k)[:5]}")
        width = np.rint(hi_k - lo_k).astype(np.int64)
        con = Constraint(
            name,
            a,
            lo_k,
            hi_k,
            np.broadcast_to(np.asarray(weight, float), (k,)).copy(),
            np.broadcast_to(np.asarray(multiplier, float), (k,)).copy(),
        )
        if np.any(width > 0):
            # One slack integer per row, all on the encoding of the widest row; narrower rows get their
            # unused high bits fixed out by a bound row (cheaper: give each row its own block).
            slack_vars: list[tuple[int, IntVar]] = []
            for r in np.flatnonzero(width > 0).tolist():
                sv = self.integer(f"{name}.slack{r}", (), enc.make(slack, int(width[r]), mu=mu))
                slack_vars.append((r, sv))
            con.slack_rows = [np.empty(0, np.int64)] * k
            for r, sv in slack_vars:
                con.slack_rows[r] = sv.index.reshape(-1)
            con.slack = SlackView(k, slack_vars)
        self.constraints[name] = con
        return con

    def _penalty_arrays(self, con: Constraint) -> tuple[sp.coo_matrix, np.ndarray, float]:
        """Quadratic (upper triangle), linear and offset of ``Σ w (A'x − lo)² + λ (A'x − lo)``, slack in ``A'``."""
        a = con.a.copy()
        a.resize((a.shape[0], self.n_vars))
        if con.slack is not None:
            blocks = con.slack.blocks
            r = np.concatenate([np.full(sv.encoding.n_bits, k) for k, sv in blocks])
            c = np.concatenate([sv.index.reshape(-1) for _, sv in blocks])
            v = np.concatenate([-sv.encoding.coefficients.astype(float) for _, sv in blocks])
            a = (a + sp.csr_matrix((v, (r, c)), shape=a.shape)).tocsr()
        w, lam, lo = con.weight, con.multiplier, con.lo
        m = (a.T @ sp.diags(w) @ a).tocoo()
        lin = a.T @ (lam - 2.0 * w * lo)
        lin = np.asarray(lin).ravel() + m.diagonal()
        upper = m.row < m.col
        quad = sp.coo_matrix((2.0 * m.data[upper], (m.row[upper], m.col[upper])), shape=m.shape)
        off = float(np.sum(w * lo * lo) - np.sum(lam * lo))
        return quad, lin, off

    # ------------------------------------------------------------------ build / evaluate
    def objective_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The objective (no penalties) as ``(linear[n], rows, cols, quad)``."""
        lin = np.zeros(self.n_vars)
        for i, c in self._lin:
            np.add.at(lin, i, c)
        if self._quad:
            r = np.concatenate([q[0] for q in self._quad])
            c = np.concatenate([q[1] for q in self._quad])
            v = np.concatenate([q[2] for q in self._quad])
        else:
            r = c = np.empty(0, np.int64)
            v = np.empty(0)
        return lin, r, c, v

    def to_bqm(self) -> dimod.BinaryQuadraticModel:
        """The QUBO (objective + every penalty) as a dimod BQM over variables ``0 … n_vars − 1``."""
        lin, r, c, v = self.objective_arrays()
        rows, cols, vals, off = [r], [c], [v], self.offset
        for con in self.constraints.values():
            quad, pl, po = self._penalty_arrays(con)
            lin = lin + pl
            rows.append(quad.row.astype(np.int64))
            cols.append(quad.col.astype(np.int64))
            vals.append(quad.data)
            off += po
        return dimod.BinaryQuadraticModel.from_numpy_vectors(
            lin, (np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)), off, dimod.BINARY
        )

    def objective(self, x: np.ndarray) -> np.ndarray:
        """Objective value (offset included, no penalties) of samples ``x[S, n]`` (or one sample)."""
        x2 = np.atleast_2d(np.asarray(x, dtype=float))
        lin, r, c, v = self.objective_arrays()
        out = x2 @ lin + self.offset
        if v.size:
            out = out + (x2[:, r] * x2[:, c]) @ v
        return out if np.ndim(x) == 2 else out[0]

    def energy(self, x: np.ndarray) -> np.ndarray:
        """Full QUBO energy (objective + penalties) of samples ``x[S, n]`` (or one sample)."""
        x2 = np.atleast_2d(np.asarray(x, dtype=float))
        e = np.atleast_1d(self.objective(x2))
        for con in self.constraints.values():
            res = con.residual(x2)
            e = e + (con.weight * res**2 + con.multiplier * res).sum(axis=1)
        return e if np.ndim(x) == 2 else e[0]

    def violations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Per constraint, the distance of each row to its range, ``(S, K)`` (slack ignored)."""
        x2 = np.atleast_2d(np.asarray(x, dtype=float))
        return {n: c.violation(x2) for n, c in self.constraints.items()}

    def n_violated(self, x: np.ndarray) -> np.ndarray:
        """Number of violated constraint rows per sample."""
        x2 = np.atleast_2d(np.asarray(x, dtype=float))
        out = np.zeros(len(x2), dtype=np.int64)
        for v in self.violations(x2).values():
            out += (v > 1e-9).sum(axis=1)
        return out if np.ndim(x) == 2 else out[0]

    def is_feasible(self, x: np.ndarray) -> bool | np.ndarray:
        """Whether every constraint row is met (slack ignored)."""
        nv = self.n_violated(x)
        return nv == 0 if np.ndim(nv) else bool(nv == 0)

    def encode(self, levels: dict[str, np.ndarray], fill_slack: bool = True) -> np.ndarray:
        """A sample with the given integer levels per block (others 0; slacks set to the surplus when possible)."""
        x = np.zeros(self.n_vars, dtype=np.int8)
        for name, lv in levels.items():
            var = self.vars[name]
            x[var.index] = var.encoding.encode(np.broadcast_to(lv, var.shape))
        if fill_slack:
            for con in self.constraints.values():
                if con.slack is None:
                    continue
                ax = con.activity(x[None, :])[0]
                for r, sv in con.slack.blocks:
                    surplus = int(np.clip(np.rint(ax[r] - con.lo[r]), 0, sv.encoding.upper))
                    x[sv.index] = sv.encoding.encode(surplus)
        return x
