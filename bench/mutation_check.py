"""Mutation check: swap in broken variants of the algorithms and expect the tests that guard them to fail.

Each mutation is installed by monkeypatching at test time (no source file is edited) in a fresh pytest process,
before the test modules are imported, and re-applied to every module that imported the original by name. The
guarding tests are then run; a mutation that leaves all of them green means those tests cannot see the breakage.

Mutations:

* ``eho-random``       — `markets.eho.eho_minimize` replaced by uniform random search at the same number of
  evaluations (whole generations, ``max_evals`` respected).
* ``eho-no-clan``      — EHO with the clan-updating operator (eq. 21) switched off: α forced to the smallest
  positive double, so every non-matriarch stays where it is (matriarch update and separating still run).
* ``detector-silent``  — `StateEstimator.detect` and `chi2_test` never flag (the estimate is still computed).
* ``pf-mutates-net``   — both power-flow engines keep the caller's net and, on every solve, cache their results in
  its ``res_bus`` and rewrite its external-grid set point column.
* ``plot-off-by-one``  — every series the plots read from a table is drawn one step late (``np.roll``).
* ``plot-blank``       — the plots write their PNGs after clearing the figure.

Usage::

    python bench/mutation_check.py            # every mutation, full guarding tests; prints the table
    python bench/mutation_check.py --fast     # only the cheap guarding tests (what tests/test_mutation_check runs)
    python bench/mutation_check.py --only eho-random detector-silent

Exit status 0 when every mutation makes at least one guarding test fail and the unmutated guarding tests pass.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# guarding tests per mutation: (node id, cheap?) — the cheap ones run in --fast mode
GUARDS: dict[str, list[tuple[str, bool]]] = {
    "eho-random": [
        ("tests/test_eho.py::test_defaults_converge_on_the_centred_sphere", True),
        ("tests/test_eho.py::test_beats_random_search_at_equal_evaluations", True),
        ("tests/test_eho.py::test_not_worse_than_mealpy_at_equal_evaluations", False),
        ("tests/test_eho_bilevel.py::test_exact_optimum_bounds_every_search_on_a_small_instance", True),
        ("tests/test_eho_bilevel.py::test_paper_run_quick", False),
    ],
    "eho-no-clan": [
        ("tests/test_eho.py::test_defaults_converge_on_the_centred_sphere", True),
        ("tests/test_eho.py::test_clan_updating_is_what_converges", True),
        ("tests/test_eho.py::test_not_worse_than_mealpy_at_equal_evaluations", False),
    ],
    "detector-silent": [
        ("tests/test_estimation.py::test_chi2_false_alarm_rate_is_alpha", True),
        ("tests/test_estimation.py::test_rn_needs_the_chi2_gate", True),
    ],
    "pf-mutates-net": [
        ("tests/test_powerflow.py::test_engine_does_not_modify_net", True),
    ],
    "plot-off-by-one": [
        ("tests/test_plots.py::test_plot_run_draws_the_recorded_run", False),
        ("tests/test_plots.py::test_plot_comparison", False),
    ],
    "plot-blank": [
        ("tests/test_plots.py::test_plot_run_draws_the_recorded_run", False),
        ("tests/test_plots.py::test_plot_run_minimal_tables", False),
    ],
}


# ------------------------------------------------------------------------------------------------ mutations
def _eho_random() -> list[tuple[Any, str, Any]]:
    from markets import eho

    original = eho.eho_minimize

    @functools.wraps(original)
    def eho_as_random_search(
        fun,
        lower,
        upper,
        *,
        n_elephants: int = 50,
        n_iter: int = 50,
        seed=None,
        vectorized: bool = False,
        max_evals: int | None = None,
        **_: Any,
    ):
        gens = n_iter if max_evals is None else max(0, min(n_iter, (max_evals - n_elephants) // n_elephants))
        return eho.random_search(fun, lower, upper, n_evals=n_elephants * (gens + 1), seed=seed, vectorized=vectorized)

    return [(eho, "eho_minimize", eho_as_random_search)]


def _eho_no_clan() -> list[tuple[Any, str, Any]]:
    from markets import eho

    original = eho.eho_minimize

    @functools.wraps(original)
    def eho_without_clan_updating(*args: Any, **kwargs: Any):
        kwargs["alpha"] = 5e-324  # x + α·(x_best − x)·r == x: no elephant moves towards its matriarch
        return original(*args, **kwargs)

    return [(eho, "eho_minimize", eho_without_clan_updating)]


def _detector_silent() -> list[tuple[Any, str, Any]]:
    import dataclasses

    from grids import estimation

    cls = estimation.StateEstimator
    detect, chi2_test = cls.detect, cls.chi2_test

    def silent_detect(self, z, alpha: float = 0.01, rn_threshold: float = 3.0):
        d = detect(self, z, alpha, rn_threshold)
        return dataclasses.replace(
            d, flagged=False, chi2_flagged=False, rn_max=float("nan"), suspect=-1, suspect_label=""
        )

    def silent_chi2_test(self, result, alpha: float = 0.01):
        _, J, t = chi2_test(self, result, alpha)
        return False, J, t

    return [(cls, "detect", silent_detect), (cls, "chi2_test", silent_chi2_test)]


def _pf_mutates_net() -> list[tuple[Any, str, Any]]:
    import pandas as pd

    from grids import powerflow

    out = []
    for cls in (powerflow.FastPowerFlow, powerflow.PandapowerPowerFlow):
        init, solve = cls.__init__, cls.solve

        def keeping_init(self, net, *args: Any, __init=init, **kwargs: Any) -> None:
            __init(self, net, *args, **kwargs)
            self._mutant_net = net  # keeps the caller's net ...

        def caching_solve(self, *args: Any, __solve=solve, **kwargs: Any):
            res = __solve(self, *args, **kwargs)
            net = self._mutant_net  # ... and caches results in it while solving
            net.res_bus = pd.DataFrame({"vm_pu": res.vm_pu, "va_degree": res.va_degree})
            return res

        out += [(cls, "__init__", keeping_init), (cls, "solve", caching_solve)]
    return out


def _plot_off_by_one() -> list[tuple[Any, str, Any]]:
    import numpy as np

    from experiments.plotting import common as plots  # every run plot reads its columns through common._col

    col = plots._col

    def shifted_col(df, name: str, default: float = 0.0):
        return np.roll(col(df, name, default), 1)  # every series drawn one step late

    return [(plots, "_col", shifted_col)]


def _plot_blank() -> list[tuple[Any, str, Any]]:
    from experiments.plotting import common as plots  # every run plot is saved through common._save

    save = plots._save

    def blank_save(fig, path):
        fig.clf()  # the file is written, the drawing is lost
        return save(fig, path)

    return [(plots, "_save", blank_save)]


MUTATIONS: dict[str, Callable[[], list[tuple[Any, str, Any]]]] = {
    "eho-random": _eho_random,
    "eho-no-clan": _eho_no_clan,
    "detector-silent": _detector_silent,
    "pf-mutates-net": _pf_mutates_net,
    "plot-off-by-one": _plot_off_by_one,
    "plot-blank": _plot_blank,
}


def install(name: str) -> list[tuple[Any, str, Any]]:
    """Apply mutation ``name``; returns ``(owner, attribute, original)`` for every patched attribute."""
    patched = []
    for owner, attr, new in MUTATIONS[name]():
        original = getattr(owner, attr)
        setattr(owner, attr, new)
        patched.append((owner, attr, original, new))
    _rebind(patched)
    return [(o, a, orig) for o, a, orig, _ in patched]


def _rebind(patched: list) -> None:
    """Point every loaded module's name for an original (``from x import f``) at its mutant."""
    for mod in list(sys.modules.values()):
        d = getattr(mod, "__dict__", None)
        if not d:
            continue
        for _, _, original, new in patched:
            for key, value in list(d.items()):
                if value is original:
                    d[key] = new


class _Plugin:
    """Installs the mutation before collection, re-binds after it, records failures."""

    def __init__(self, name: str | None) -> None:
        self.patched: list = []
        if name:
            self.patched = [(o, a, orig, getattr(o, a)) for o, a, orig in install(name)]
        self.failed: list[str] = []
        self.passed: list[str] = []

    def pytest_collection_finish(self, session: Any) -> None:
        _rebind(self.patched)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or report.outcome == "failed":
            (self.failed if report.outcome == "failed" else self.passed).append(report.nodeid)


def _child(name: str | None, nodeids: list[str], report: str) -> int:
    import pytest

    os.chdir(ROOT)
    plugin = _Plugin(name)
    rc = pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=", *nodeids], plugins=[plugin])
    Path(report).write_text(json.dumps({"failed": plugin.failed, "passed": plugin.passed, "rc": int(rc)}))
    return 0


def run(name: str | None, nodeids: list[str]) -> dict[str, Any]:
    """Run ``nodeids`` under mutation ``name`` (None: unmutated) in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        t = time.perf_counter()
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            name or "",
            "--report",
            str(report),
            "--",
            *nodeids,
        ]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if not report.is_file():
            raise RuntimeError(f"mutation run {name!r} crashed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        out = json.loads(report.read_text())
        out["seconds"] = time.perf_counter() - t
        out["log"] = proc.stdout
        return out


def check(names: list[str], fast: bool = False, baseline: bool = True) -> tuple[bool, list[dict[str, Any]]]:
    """Run every mutation in ``names``; ok when each makes ≥ 1 guarding test fail (and the baseline passes)."""
    rows = []
    ok = True
    if baseline:
        nodes = sorted({n for m in names for n, cheap in GUARDS[m] if cheap or not fast})
        base = run(None, nodes)
        rows.append({"mutation": "(none)", "tests": len(nodes), "failed": base["failed"], "seconds": base["seconds"]})
        ok &= not base["failed"] and base["rc"] == 0
    for m in names:
        nodes = [n for n, cheap in GUARDS[m] if cheap or not fast]
        res = run(m, nodes)
        rows.append({"mutation": m, "tests": len(nodes), "failed": res["failed"], "seconds": res["seconds"]})
        ok &= bool(res["failed"])
    return ok, rows


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| mutation | guarding tests | failing tests | s |", "|---|---|---|---|"]
    for r in rows:
        failing = ", ".join(f.split("::", 1)[1] for f in r["failed"]) or "none"
        verdict = (
            ("caught" if r["failed"] else "NOT CAUGHT")
            if r["mutation"] != "(none)"
            else ("baseline green" if not r["failed"] else "BASELINE FAILS")
        )
        lines.append(f"| {r['mutation']} ({verdict}) | {r['tests']} | {failing} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fast", action="store_true", help="only the cheap guarding tests")
    ap.add_argument("--only", nargs="+", choices=sorted(MUTATIONS), help="these mutations only")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--report", help=argparse.SUPPRESS)
    ap.add_argument("nodeids", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        return _child(a.child or None, a.nodeids, a.report)
    ok, rows = check(a.only or list(MUTATIONS), fast=a.fast, baseline=not a.no_baseline)
    print(_table(rows))
    print("mutation check:", "OK — every mutation is caught" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
