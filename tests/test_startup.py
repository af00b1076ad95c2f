"""Start-up cost of a run (issue 20, "start fast").

Every `evgrid run` used to pay ~10 s of CPU compiling pandapower's numba power-flow kernels (pandapower declares
them ``cache=False``) and ran ``pp.runpp`` twice in the set-up (once for ``Network.sensitivity_r``, once for the
fast engine's compile run). These tests guard the fix:

* the set-up of a run calls ``pp.runpp`` exactly once (the fast engine's compile run); ``sensitivity_r`` takes the
  admittance matrix from that engine, bit-identical to the former pandapower-based computation;
* a second process compiles no numba kernel at all during the set-up (everything comes from numba's disk cache).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandapower as pp
import pytest

from grids.network import Network, build_network
from grids.powerflow import FastPowerFlow

ROOT = Path(__file__).resolve().parent.parent


def _r_by_pandapower(network: Network) -> np.ndarray:
    """The former ``sensitivity_r``: its own ``pp.runpp`` on a copy, then Re(inv(Ybus without slack))."""
    net = copy.deepcopy(network.net)
    pp.runpp(net)
    ybus = net._ppc["internal"]["Ybus"].toarray()
    lookup = net._pd2ppc_lookups["bus"][net.bus.index.values]
    ref = set(np.atleast_1d(net._ppc["internal"]["ref"]).tolist())
    keep = np.array([i for i in range(ybus.shape[0]) if i not in ref])
    z = np.zeros(ybus.shape, complex)
    z[np.ix_(keep, keep)] = np.linalg.inv(ybus[np.ix_(keep, keep)])
    return np.real(z[np.ix_(lookup, lookup)])


@pytest.mark.parametrize("case", ["case33bw-dr", "case118"])
def test_sensitivity_r_from_engine_is_bit_identical_and_runs_no_power_flow(case: str, monkeypatch) -> None:
    network = build_network(case)
    expected = _r_by_pandapower(network)
    engine = FastPowerFlow(network.net)
    calls = []
    monkeypatch.setattr(pp, "runpp", lambda *a, **k: calls.append(1))
    r = network.sensitivity_r(engine)
    assert calls == [], "sensitivity_r ran a power flow of its own"
    assert np.array_equal(r, expected)
    assert not r.flags.writeable
    # without an engine it compiles one (one pp.runpp), same matrix
    monkeypatch.undo()
    assert np.array_equal(build_network(case).sensitivity_r(), expected)


def test_sensitivity_r_rejects_an_engine_of_another_network() -> None:
    other = FastPowerFlow(build_network("case118").net)
    with pytest.raises(ValueError, match="not compiled from network"):
        build_network("case33bw").sensitivity_r(other)


def test_run_setup_calls_runpp_once(monkeypatch) -> None:
    from sim.model import CoSimulation, _compiled_grid
    from sim.scenario import load_scenario

    calls = []
    real = pp.runpp

    def counting(net: Any, **kw: Any) -> Any:
        calls.append(kw)
        return real(net, **kw)

    monkeypatch.setattr(pp, "runpp", counting)
    _compiled_grid.cache_clear()
    try:
        sc = load_scenario("default", ["fleet.n_evs=20", "time.horizon_h=1"])
        assert sc.grid.curtailment  # the path that needs sensitivity_r
        model = CoSimulation(sc)
        assert model.dso._r is not None
        assert len(calls) == 1, f"the set-up ran pp.runpp {len(calls)} times; the fast engine's compile run only"
    finally:
        _compiled_grid.cache_clear()  # do not leave a grid built under the patch to later tests


_CHILD = r"""
import json, sys
from numba.core import event
import sim.model  # imports pandapower and grids.powerflow (which enables the kernel cache)
from sim.scenario import load_scenario
compiled = []
class L(event.Listener):
    def on_start(self, ev):
        compiled.append(str(ev.data.get("dispatcher").py_func.__qualname__) if ev.data else "?")
    def on_end(self, ev):
        pass
event.register("numba:compile", L())
sc = load_scenario(sys.argv[1], sys.argv[2:])
sim.model.CoSimulation(sc)
print(json.dumps(compiled))
"""


def _setup_compiles(env: dict[str, str], args: list[str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["default", "qubo-rtp-118bus"])
def test_second_process_compiles_no_numba_kernel(scenario: str) -> None:
    """The first process on an installation may compile (and fill numba's disk cache); the next one must not.

    Fails if the set-up reaches an uncached JIT kernel again — e.g. pandapower's power-flow kernels without the
    disk cache (``grids.powerflow._cache_pandapower_kernels``), which cost ~10 s of CPU in every run.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    args = [scenario, "time.horizon_h=1"]
    _setup_compiles(env, args)  # warms the cache if it is not yet
    assert _setup_compiles(env, args) == []
