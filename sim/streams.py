"""Random streams: one `SeedSequence` per run, spawned into named child generators.

The order of ``STREAMS`` is part of the reproducibility contract: new streams are appended, never inserted, so
existing streams keep their numbers.
"""

from __future__ import annotations

import numpy as np

STREAMS = ("arrivals", "needs", "behaviour", "fleet", "noise", "solver", "attack", "mesa")


def spawn_streams(seed: int | np.random.SeedSequence) -> dict[str, np.random.Generator]:
    """Named, independent generators for one run, all derived from ``seed``.

    Example:
        >>> a = spawn_streams(7)["arrivals"].random()
        >>> a == spawn_streams(7)["arrivals"].random()
        True
    """
    if isinstance(seed, (int, np.integer)) and seed < 0:
        raise ValueError(f"seed: must be >= 0, got {seed}")
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, root.spawn(len(STREAMS)))}
