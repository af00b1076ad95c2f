"""Errors of the state estimator."""

from __future__ import annotations

__all__ = ["EstimationError", "NotObservableError"]


class EstimationError(ValueError):
    """Bad estimator input: unknown/out-of-service element, wrong shape, NaN in a measurement vector."""


class NotObservableError(EstimationError):
    """The measurement set does not determine the state (rank-deficient gain matrix)."""
