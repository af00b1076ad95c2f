"""Attack taps: named channels that data between agents passes through.

Every exchange that an attacker could falsify goes through :meth:`Taps.apply` under one of ``CHANNELS``. With no
transforms registered a tap is the identity. An attacker agent registers transforms (callables taking
``(data, step)`` and returning the possibly falsified data plus an "attacked" flag), so no agent contains attack
special cases; the labels let a detector be scored against the truth.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

CHANNELS = ("ev_reports", "station_reports", "bids", "price_signal", "elasticity", "dso_measurements")

Transform = Callable[[Any, int], tuple[Any, bool]]


class Taps:
    """Registry of transforms per channel, and the per-step attacked/clean labels they produce."""

    def __init__(self) -> None:
        self._transforms: dict[str, list[Transform]] = defaultdict(list)
        self.labels: dict[str, list[tuple[int, bool]]] = defaultdict(list)

    def register(self, channel: str, transform: Transform) -> None:
        """Add a transform to a channel (applied in registration order)."""
        if channel not in CHANNELS:
            raise ValueError(f"channel: unknown '{channel}'; allowed: {', '.join(CHANNELS)}")
        self._transforms[channel].append(transform)

    def apply(self, channel: str, data: Any, step: int) -> Any:
        """Pass ``data`` through the channel's transforms; identity when none are registered."""
        transforms = self._transforms.get(channel)
        if not transforms:
            return data
        attacked = False
        for tf in transforms:
            data, hit = tf(data, step)
            attacked = attacked or hit
        self.labels[channel].append((step, attacked))
        return data
