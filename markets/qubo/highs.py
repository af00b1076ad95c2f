"""One place to hand a sparse (MI)LP to HiGHS: the exact references and LP relaxations of the QUBO levels."""

from __future__ import annotations

import time
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

__all__ = ["run"]


def run(
    cost: np.ndarray,
    col_lower: np.ndarray | float,
    col_upper: np.ndarray | float,
    a: sp.spmatrix,
    row_lower: np.ndarray | float,
    row_upper: np.ndarray | float,
    integer: np.ndarray | bool | None = None,
    **options: Any,
) -> tuple[highspy.Highs, float]:
    """Solve ``min cost·x`` s.t. ``row_lower ≤ a·x ≤ row_upper``, ``col_lower ≤ x ≤ col_upper``.

    Bounds are arrays or scalars (broadcast to every column/row); infinite ones become HiGHS's infinity;
    ``integer`` marks integer columns (a bool mask, or True for all); ``options`` are HiGHS options
    (``output_flag`` is off unless given). Returns the solved ``Highs`` (status, solution and duals are read
    from it) and the solver's wall time [s].
    """
    inf = highspy.kHighsInf
    a = sp.csc_matrix(a)
    n_row, n_col = a.shape
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_col, n_row
    lp.col_cost_ = np.asarray(cost, float)
    clip = lambda v, s: np.where(np.isfinite(v), v, s * inf)  # noqa: E731
    lp.col_lower_ = clip(np.broadcast_to(np.asarray(col_lower, float), (n_col,)), -1)
    lp.col_upper_ = clip(np.broadcast_to(np.asarray(col_upper, float), (n_col,)), 1)
    lp.row_lower_ = clip(np.broadcast_to(np.asarray(row_lower, float), (n_row,)), -1)
    lp.row_upper_ = clip(np.broadcast_to(np.asarray(row_upper, float), (n_row,)), 1)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr
    lp.a_matrix_.index_ = a.indices
    lp.a_matrix_.value_ = a.data
    if integer is not None and integer is not False:
        mask = np.ones(n_col, bool) if integer is True else np.asarray(integer, bool)
        lp.integrality_ = [highspy.HighsVarType.kInteger if m else highspy.HighsVarType.kContinuous for m in mask]
    h = highspy.Highs()
    h.setOptionValue("output_flag", bool(options.pop("output_flag", False)))
    for key, value in options.items():
        h.setOptionValue(key, value)
    h.passModel(lp)
    t0 = time.perf_counter()
    h.run()
    return h, time.perf_counter() - t0
