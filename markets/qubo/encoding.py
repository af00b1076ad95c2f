"""Integer encodings onto binary variables: ``value = offset + step · Σ_j c_j · x_j``.

Three families, all with integer coefficients ``c_j`` whose sum is exactly the largest level ``upper`` (so every
bit pattern decodes into ``[0, upper]`` and no range penalty is needed):

* :func:`binary` — ``1, 2, 4, …`` with the last coefficient cut so the sum is ``upper`` (⌈log2(upper + 1)⌉ bits);
* :func:`bounded` — binary up to ``mu``, then coefficients of at most ``mu`` (Karimi & Ronagh's
  bounded-coefficient encoding): more bits, but no single flip moves the value by more than ``mu`` levels, which
  keeps penalty walls low for an annealer;
* :func:`unary` — ``upper`` coefficients of 1 (a thermometer when decoded in order): any function of the level is
  linear in the bits of a *monotone* pattern, at the price of ``upper`` variables.

Encodings are plain data (numpy arrays); building the QUBO is :mod:`markets.qubo.model`'s job.

>>> e = binary(10)
>>> e.coefficients.tolist(), e.n_bits
([1, 2, 4, 3], 4)
>>> int(e.level(e.encode(7)))
7
>>> bounded(20, mu=4).coefficients.tolist()
[1, 2, 4, 4, 4, 4, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IntegerEncoding", "binary", "bounded", "unary", "make"]


@dataclass(frozen=True)
class IntegerEncoding:
    """An integer level ``k = Σ_j c_j x_j ∈ [0, upper]`` and its value ``offset + step · k``.

    ``step`` and ``offset`` carry the unit of the encoded quantity (MW, $/kWh, …).
    """

    coefficients: np.ndarray  # int64, shape (n_bits,), every c_j ≥ 1, Σ c_j = upper
    step: float = 1.0
    offset: float = 0.0
    kind: str = "binary"

    @property
    def n_bits(self) -> int:
        return int(self.coefficients.size)

    @property
    def upper(self) -> int:
        """Largest level ``Σ c_j``."""
        return int(self.coefficients.sum())

    @property
    def weights(self) -> np.ndarray:
        """Value per bit, ``step · c_j``."""
        return self.step * self.coefficients.astype(float)

    def level(self, bits: np.ndarray) -> np.ndarray:
        """Integer level of bit patterns ``bits[..., n_bits]``."""
        return np.asarray(bits, dtype=np.int64) @ self.coefficients

    def value(self, bits: np.ndarray) -> np.ndarray:
        """Decoded value ``offset + step · level`` of bit patterns ``bits[..., n_bits]``."""
        return self.offset + self.step * self.level(bits)

    def encode(self, level: np.ndarray | int) -> np.ndarray:
        """A bit pattern for each integer ``level`` (shape ``level.shape + (n_bits,)``).

        Greedy from the largest coefficient; exact for all three families (every coefficient is at most one more
        than the sum of the smaller ones). Raises ``ValueError`` outside ``[0, upper]``.
        """
        lv = np.asarray(level, dtype=np.int64)
        if np.any(lv < 0) or np.any(lv > self.upper):
            raise ValueError(f"level: must be in [0, {self.upper}], got {lv.min()}..{lv.max()}")
        rest = lv.copy()
        out = np.zeros(lv.shape + (self.n_bits,), dtype=np.int8)
        for j in np.argsort(-self.coefficients, kind="stable"):
            take = rest >= self.coefficients[j]
            out[..., j] = take
            rest = rest - take * self.coefficients[j]
        assert not np.any(rest), "encoding is not complete"  # guaranteed by construction
        return out

    def nearest_level(self, value: np.ndarray | float) -> np.ndarray:
        """The level whose value is nearest to ``value``, clipped to ``[0, upper]``."""
        return np.clip(np.rint((np.asarray(value, float) - self.offset) / self.step), 0, self.upper).astype(np.int64)


def _check_upper(upper: int) -> int:
    upper = int(upper)
    if upper < 1:
        raise ValueError(f"upper: must be an integer ≥ 1, got {upper}")
    return upper


def binary(upper: int, step: float = 1.0, offset: float = 0.0) -> IntegerEncoding:
    """Binary encoding of ``[0, upper]``: ``1, 2, …, 2^(m−1)`` and a last coefficient closing the range."""
    upper = _check_upper(upper)
    c: list[int] = []
    total = 0
    while total < upper:
        nxt = min(1 << len(c), upper - total)
        c.append(nxt)
        total += nxt
    return IntegerEncoding(np.asarray(c, dtype=np.int64), float(step), float(offset), "binary")


def bounded(upper: int, mu: int, step: float = 1.0, offset: float = 0.0) -> IntegerEncoding:
    """Bounded-coefficient encoding: binary ``1 … 2^m ≤ mu``, then coefficients ``mu`` and one remainder."""
    upper = _check_upper(upper)
    mu = int(mu)
    if mu < 1:
        raise ValueError(f"mu: must be an integer ≥ 1, got {mu}")
    c: list[int] = []
    total = 0
    while total < upper and (1 << len(c)) <= mu:
        nxt = min(1 << len(c), upper - total)
        c.append(nxt)
        total += nxt
    while total < upper:
        nxt = min(mu, upper - total)
        c.append(nxt)
        total += nxt
    return IntegerEncoding(np.asarray(c, dtype=np.int64), float(step), float(offset), "bounded")


def unary(upper: int, step: float = 1.0, offset: float = 0.0) -> IntegerEncoding:
    """Unary encoding of ``[0, upper]``: ``upper`` bits of weight 1."""
    upper = _check_upper(upper)
    return IntegerEncoding(np.ones(upper, dtype=np.int64), float(step), float(offset), "unary")


def make(kind: str, upper: int, step: float = 1.0, offset: float = 0.0, mu: int | None = None) -> IntegerEncoding:
    """An encoding by name: ``binary``, ``bounded`` (needs ``mu``) or ``unary``."""
    if kind == "binary":
        return binary(upper, step, offset)
    if kind == "bounded":
        if mu is None:
            raise ValueError("mu: required for the bounded encoding")
        return bounded(upper, mu, step, offset)
    if kind == "unary":
        return unary(upper, step, offset)
    raise ValueError(f"encoding: must be one of binary, bounded, unary; got {kind!r}")
