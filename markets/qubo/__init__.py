"""QUBO toolkit for market clearing on dimod samplers (issue 5).

* :mod:`markets.qubo.encoding` — integer encodings (binary, bounded-coefficient, unary);
* :mod:`markets.qubo.model` — :class:`QuboModel`: integer blocks, objective, penalised constraints → dimod BQM,
  decoding and constraint checks;
* :mod:`markets.qubo.samplers` — dimod samplers by name (``sa``, ``tabu``, ``steepest-descent``, ``exact``, …,
  D-Wave QPU and hybrid when configured);
* :mod:`markets.qubo.composites` — decomposition, post-processing, timing, temperature range, augmented
  Lagrangian, repair;
* :mod:`markets.qubo.eva` — the EVA level of ``000_…`` (clusters × slots, P and Q against DLMPs) as a QUBO, with
  its exact HiGHS reference;
* :mod:`markets.qubo.rtp`, :mod:`markets.qubo.rtp_sampling` — the `qubo-rtp` slot instance, its QUBO and exact
  reference, and the sampler pipeline (the mechanism itself is :mod:`markets.qubo_rtp`).
"""

from markets.qubo import composites, encoding, samplers
from markets.qubo.model import Constraint, IntVar, QuboModel

__all__ = ["QuboModel", "IntVar", "Constraint", "encoding", "samplers", "composites"]
