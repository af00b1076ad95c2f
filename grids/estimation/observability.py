"""Observability checks of a measurement set: enough measurements, and which states a singular gain leaves open."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from grids.estimation.errors import NotObservableError

__all__ = ["require_enough_measurements", "unobservable_message"]


def require_enough_measurements(
    m: int,
    n: int,
    gain: Callable[[], np.ndarray] | None = None,
    state_bus: Callable[[int], int] | None = None,
) -> None:
    """Raise :class:`NotObservableError` when ``m`` measurements cannot determine ``n`` states (``m < n``).

    Args:
        m: number of measurements.
        n: number of states.
        gain: returns the gain matrix at the start point; with ``state_bus``, the error also names the buses left
            undetermined (see :func:`unobservable_message`).
        state_bus: pandapower bus of state entry ``k``.
    """
    if m < n:
        where = ""
        if gain is not None and state_bus is not None:
            where = "; " + unobservable_message(gain(), state_bus)
        raise NotObservableError(f"{m} measurements cannot determine {n} states (need at least {n}){where}")


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
    # buses by their share of the undetermined directions (largest first): the unmeasured ones lead the list
    energy = np.zeros(len(G))
    if null.size:
        energy = np.sum(null**2, axis=1)
    order = np.argsort(-energy, kind="stable")
    buses: list[int] = []
    for k in order[energy[order] > 1e-6]:
        b = int(state_bus(int(k)))
        if b not in buses:
            buses.append(b)
    more = f" and {len(buses) - 12} more" if len(buses) > 12 else ""
    return (
        f"measurement set is not observable: {max(null.shape[1], 1)} undetermined state direction(s) at bus(es) "
        f"{', '.join(map(str, buses[:12])) or 'unknown'}{more}; add |V|, P/Q injection or flow measurements there"
    )
