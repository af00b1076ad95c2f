"""dimod samplers by name, as a scenario names them.

=====================  ==========================================================================
name                   sampler
=====================  ==========================================================================
``sa`` (default)       :class:`dwave.samplers.SimulatedAnnealingSampler`
``tabu``               :class:`dwave.samplers.TabuSampler` (``timeout`` is in **milliseconds**)
``steepest-descent``   :class:`dwave.samplers.SteepestDescentSampler`
``exact``              :class:`dimod.ExactSolver` (refuses more than :data:`EXACT_MAX_VARS` variables)
``tree-decomposition`` :class:`dwave.samplers.TreeDecompositionSolver` (exact; treewidth ≤ 25)
``random``             :class:`dwave.samplers.RandomSampler` (a baseline)
``dwave``              :class:`dwave.system.DWaveSampler` in an ``EmbeddingComposite`` (QPU)
``dwave-hybrid``       :class:`dwave.system.LeapHybridSampler`
=====================  ==========================================================================

The two D-Wave samplers need Leap access configured (``DWAVE_API_TOKEN`` or ``dwave config create``); without
it :func:`get` raises :class:`SamplerConfigError` with one line saying so, before any problem is built.

>>> get("sa").__class__.__name__
'SimulatedAnnealingSampler'
>>> get("annealer")
Traceback (most recent call last):
...
markets.qubo.samplers.SamplerConfigError: sampler: must be one of dwave, dwave-hybrid, exact, random, sa, steepest-descent, tabu, tree-decomposition; got 'annealer'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import dimod

__all__ = ["SamplerConfigError", "get", "names", "EXACT_MAX_VARS"]

EXACT_MAX_VARS = 24


class SamplerConfigError(ValueError):
    """A sampler that cannot be used as configured (unknown name, missing credentials, problem too large)."""


class _BoundedExactSolver(dimod.ExactSolver):
    """:class:`dimod.ExactSolver` that refuses problems it would take hours (and all memory) on."""

    def sample(self, bqm: dimod.BinaryQuadraticModel, **kw: Any) -> dimod.SampleSet:
        if bqm.num_variables > EXACT_MAX_VARS:
            raise SamplerConfigError(
                f"sampler 'exact': at most {EXACT_MAX_VARS} variables, "
                f"got {bqm.num_variables} (use 'sa' or 'tree-decomposition')"
            )
        return super().sample(bqm, **kw)


def _sa() -> dimod.Sampler:
    from dwave.samplers import SimulatedAnnealingSampler

    return SimulatedAnnealingSampler()


def _tabu() -> dimod.Sampler:
    from dwave.samplers import TabuSampler

    return TabuSampler()


def _sd() -> dimod.Sampler:
    from dwave.samplers import SteepestDescentSampler

    return SteepestDescentSampler()


def _tree() -> dimod.Sampler:
    from dwave.samplers import TreeDecompositionSolver

    return TreeDecompositionSolver()


def _random() -> dimod.Sampler:
    from dwave.samplers import RandomSampler

    return RandomSampler()


def _leap_token() -> str | None:
    """The Leap API token from the environment or the dwave-cloud-client configuration file, if any."""
    if os.environ.get("DWAVE_API_TOKEN"):
        return os.environ["DWAVE_API_TOKEN"]
    try:
        from dwave.cloud.config import load_config

        return load_config().get("token")
    except Exception:  # noqa: BLE001 - a malformed config file counts as "not configured"
        return None


def _need_leap(name: str) -> None:
    if not _leap_token():
        raise SamplerConfigError(
            f"sampler {name!r}: no D-Wave Leap API token configured (set DWAVE_API_TOKEN or run `dwave config create`)"
        )


def _dwave() -> dimod.Sampler:
    _need_leap("dwave")
    from dwave.system import DWaveSampler, EmbeddingComposite

    return EmbeddingComposite(DWaveSampler())


def _hybrid() -> dimod.Sampler:
    _need_leap("dwave-hybrid")
    from dwave.system import LeapHybridSampler

    return LeapHybridSampler()


_REGISTRY: dict[str, Callable[[], dimod.Sampler]] = {
    "sa": _sa,
    "tabu": _tabu,
    "steepest-descent": _sd,
    "exact": _BoundedExactSolver,
    "tree-decomposition": _tree,
    "random": _random,
    "dwave": _dwave,
    "dwave-hybrid": _hybrid,
}


def read_params(
    name: str, sampler: dimod.Sampler, num_reads: int, num_sweeps: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Sampling keywords for ``sampler`` (registered as ``name``): ``extra`` plus ``num_reads`` where the sampler
    takes it and ``num_sweeps`` for simulated annealing — what every QUBO level passes the same way."""
    params: dict[str, Any] = dict(extra or {})
    if "num_reads" in sampler.parameters:
        params.setdefault("num_reads", num_reads)
    if name == "sa":
        params.setdefault("num_sweeps", num_sweeps)
    return params


def names() -> list[str]:
    """Every sampler name :func:`get` accepts."""
    return sorted(_REGISTRY)


def get(name: str) -> dimod.Sampler:
    """A new sampler instance by ``name`` (see the module table)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise SamplerConfigError(f"sampler: must be one of {', '.join(names())}; got {name!r}") from None
    return factory()
