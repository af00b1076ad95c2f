"""The mutation check (bench/mutation_check.py) in its fast form: each broken variant of an algorithm — EHO as
random search, EHO without clan updating, a χ² detector that never flags, a power-flow engine that writes into the
caller's net — makes at least one of its guarding tests fail, and the unmutated guarding tests pass."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "mutation_check.py"


@pytest.mark.slow
def test_every_mutation_is_caught_by_a_guarding_test() -> None:
    spec = importlib.util.spec_from_file_location("mutation_check", BENCH)
    mc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mc)
    names = ["eho-random", "eho-no-clan", "detector-silent", "pf-mutates-net"]
    ok, rows = mc.check(names, fast=True)
    by = {r["mutation"]: r["failed"] for r in rows}
    assert by["(none)"] == [], by  # the guarding tests pass on the real code ...
    for m in names:
        assert by[m], (m, mc._table(rows))  # ... and each mutation breaks at least one
    assert ok
