"""Compiled kernels' decorator, shared by markets and agents (numba with its on-disk cache)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba


def njit_cached(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit`` with the on-disk cache where numba can write one (else compiled per process)."""
    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError:  # pragma: no cover - no writable cache location (numba raises at decoration)
        return numba.njit(fn)
