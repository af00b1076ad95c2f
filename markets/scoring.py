"""`Scored`: a composite mechanism that scores any mechanism against the exact optimum of every request it clears.

In the spirit of dimod's composites: ``Scored(child)`` is itself a `Mechanism`. Its ``clear`` clears the child
and, for a request with EVs, also solves the exact reference of the same request (:func:`markets.milp.reference`,
the LP or the discretised MILP) and returns the child's result scored by :func:`markets.milp.score` (its
``reference_objective`` and ``gap`` filled in). The running totals a study reports (the child's objective
re-evaluated on the reference's objective, the reference's, the gaps, the reference's wall time) are kept on the
composite::

    mech = Scored(markets.get("elasticity-dr")(), variant="lp")
    result = mech.clear(request)          # result.gap: (cost − optimum) / |optimum|

The composite declares what its child declares (``replans``, ``discharges``, ``announced_elasticity``,
`check_network`) and needs what the child needs plus what the reference reads (DLMPs, the stations' committed
load). The voltage forecast is scored only when the child asks for it, so the reference sees the grid the child
sees.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from markets.base import Elasticity, MarketRequest, MarketResult, Mechanism


class Scored(Mechanism):
    """Wraps ``child`` and scores each of its clearings against the exact optimum (see module docstring).

    Args:
        child: the mechanism to clear with.
        variant: ``"lp"`` (continuous optimum) or ``"milp"`` (optimum on a ``bits``-bit power grid).
        bits: bit depth of the ``"milp"`` reference (ignored for ``"lp"``).
    """

    name = "scored"
    parameters = {
        "variant": ("lp", "exact reference: 'lp' or 'milp' (discretised)"),
        "bits": (4, "bit depth of the discretised reference (variant 'milp' only)"),
    }

    def __init__(self, child: Mechanism, *, variant: str = "lp", bits: int = 4) -> None:
        super().__init__(variant=variant, bits=bits)
        self.child = child
        self.needs = frozenset(child.needs | {"dlmp", "committed_station_kw"})
        self.replans = bool(child.replans)
        self.discharges = bool(child.discharges)
        #: keyword arguments of :func:`markets.milp.reference` and :func:`markets.milp.score`
        self.reference_params: dict[str, Any] = {"variant": variant}
        if variant == "milp":
            self.reference_params["bits"] = bits
        self.objective_usd = 0.0  # the child's schedules on the reference's objective, summed [$]
        self.reference_usd = 0.0  # the reference's optimal objectives, summed [$]
        self.gaps: list[float] = []
        self.reference_time_s = 0.0

    def _validate(self) -> None:
        from markets.base import MarketConfigError

        if self.params["variant"] not in ("lp", "milp"):
            raise MarketConfigError(f"market.reference_variant: got {self.params['variant']!r}; allowed 'lp', 'milp'")

    @property
    def announced_elasticity(self) -> Elasticity | None:
        return self.child.announced_elasticity

    def check_network(self, network: Any) -> None:
        """The child's network requirements."""
        self.child.check_network(network)

    def clear(self, request: MarketRequest) -> MarketResult:
        """The child's result (its own ``wall_time_s``), scored when the request has EVs."""
        result = self.child.clear(request)
        if len(request.evs):
            result = self._score(request, result)
        return result

    def _clear(self, request: MarketRequest) -> MarketResult:  # pragma: no cover - `clear` is overridden
        return self.clear(request)

    def _score(self, request: MarketRequest, result: MarketResult) -> MarketResult:
        from markets.milp import reference, score

        t = time.perf_counter()
        ref, _ = reference(request, **self.reference_params)
        self.reference_time_s += time.perf_counter() - t
        scored = score(request, result, reference_objective=ref, **self.reference_params)
        assert scored.gap is not None
        self.objective_usd += ref + scored.gap * abs(ref) if np.isfinite(scored.gap) else ref
        self.reference_usd += ref
        self.gaps.append(float(scored.gap))
        return scored

    def __repr__(self) -> str:
        return f"Scored({self.child!r}, {', '.join(f'{k}={v!r}' for k, v in self.reference_params.items())})"
