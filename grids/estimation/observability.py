"""Observability checks of a measurement set: enough measurements, and which states a singular gain leaves open."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from grids.estimation.errors import NotObservableError

__all__ = ["require_enough_measurements", "unobservable_message"]


def require_enough_measurements(m: int, n: int) -> None:
    """Raise :class:`NotObservableError` when ``m`` measurements cannot determine ``n`` states (``m < n``)."""
    if m < n:
        raise NotObservableError(f"{m} measurements cannot determine {n} states (need at least {n}); add measurements")


def unobservable_message(G: np.ndarray, state_bus: Callable[[int], int]) -> str:
    """Name the buses whose states the measurement set leaves undetermined (null space of the gain matrix ``G``).

    Args:
        G: gain matrix ``Hᵀ R⁻¹ H`` at the point where its factorisation failed, shape (n, n).
        state_bus: pandapower bus of state entry ``k`` (e.g. :meth:`grids.estimation.StateEstimator.state_bus`).

    Returns:
        One line: the number of undetermined directions and (up to twelve of) the buses involved.
    """
    d = np.sqrt(np.maximum(np.diag(G), 1e-300))
    Gs = G / d[:, None] / d[None, :]
    w, v = np.linalg.eigh(Gs)
    null = v[:, w < 1e-9 * max(w.max(), 1e-300)]
    weak = np.flatnonzero(np.abs(null).max(axis=1) > 1e-3) if null.size else np.arange(0)
    buses = sorted({int(state_bus(int(k))) for k in weak})
    more = f" and {len(buses) - 12} more" if len(buses) > 12 else ""
    return (
        f"measurement set is not observable: {max(null.shape[1], 1)} undetermined state direction(s) at bus(es) "
        f"{', '.join(map(str, buses[:12])) or 'unknown'}{more}; add |V|, P/Q injection or flow measurements there"
    )
