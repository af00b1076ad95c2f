"""Tests of grids.powerflow: the compiled Newton–Raphson engine against pandapower (the model of record)."""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from grids.powerflow import (
    FastPowerFlow,
    PandapowerPowerFlow,
    PowerFlowError,
    PowerFlowResult,
    bus_net_load,
    make_engine,
)

VM_TOL = 1e-6  # [pu]
VA_TOL = 1e-6  # [degree]
MW_TOL = 1e-4  # [MW] / [Mvar]
LOADING_TOL = 1e-6  # [%]


# ---------------------------------------------------------------------------------------------------------------
# networks and engines (module scope: compiling and the first runpp are the expensive part)


def _case33bw() -> pp.pandapowerNet:
    net = pn.case33bw()
    net.line["max_i_ka"] = 0.4  # case33bw ships 99999 kA, which makes every loading ~0
    return net


def _topology_net() -> pp.pandapowerNet:
    """Small MV net exercising the bus lookup: fused, out-of-service and isolated buses, PV gen, shunt, ward."""
    net = pn.simple_mv_open_ring_net()
    std = net.line.std_type.iloc[0]
    fused = pp.create_bus(net, 20.0, index=17)  # non-contiguous index, fused to bus 3
    pp.create_switch(net, 3, fused, et="b", closed=True)
    oos = pp.create_bus(net, 20.0, in_service=False, index=8)
    pp.create_line(net, 6, oos, 1.0, std_type=std)  # in service, but its to-bus is not
    pp.create_line(net, 2, 5, 2.0, std_type=std, in_service=False)
    pp.create_bus(net, 20.0, index=9)  # isolated: pandapower drops it
    pp.create_gen(net, 4, p_mw=0.5, vm_pu=1.01)
    pp.create_shunt(net, 5, q_mvar=0.1, p_mw=0.01)
    pp.create_ward(net, 6, ps_mw=0.2, qs_mvar=0.05, pz_mw=0.1, qz_mvar=0.02)
    pp.create_sgen(net, 5, p_mw=0.3)
    pp.create_load(net, fused, p_mw=0.4, q_mvar=0.1)
    pp.create_load(net, oos, p_mw=0.4, q_mvar=0.1)
    return net


@pytest.fixture(scope="module")
def net33() -> pp.pandapowerNet:
    return _case33bw()


@pytest.fixture(scope="module")
def fast33(net33) -> FastPowerFlow:
    return FastPowerFlow(net33)


@pytest.fixture(scope="module")
def ref33(net33) -> PandapowerPowerFlow:
    return PandapowerPowerFlow(net33)


@pytest.fixture(scope="module")
def net118() -> pp.pandapowerNet:
    return pn.case118()


@pytest.fixture(scope="module")
def engines118(net118) -> tuple[FastPowerFlow, PandapowerPowerFlow]:
    return FastPowerFlow(net118), PandapowerPowerFlow(net118)


@pytest.fixture(scope="module")
def net_mv() -> pp.pandapowerNet:
    return pn.mv_oberrhein()


def assert_results_close(a: PowerFlowResult, b: PowerFlowResult, *, loading: bool = True) -> None:
    """Fast result ``a`` agrees with reference ``b`` (NaN where the reference has NaN)."""
    assert a.converged and b.converged
    np.testing.assert_array_equal(np.isnan(a.vm_pu), np.isnan(b.vm_pu))
    np.testing.assert_allclose(a.vm_pu, b.vm_pu, rtol=0, atol=VM_TOL)
    np.testing.assert_allclose(a.va_degree, b.va_degree, rtol=0, atol=VA_TOL)
    np.testing.assert_allclose(a.line_p_from_mw, b.line_p_from_mw, rtol=0, atol=MW_TOL)
    np.testing.assert_allclose(a.line_q_from_mvar, b.line_q_from_mvar, rtol=0, atol=MW_TOL)
    np.testing.assert_allclose(a.line_pl_mw, b.line_pl_mw, rtol=0, atol=MW_TOL)
    if loading:
        np.testing.assert_allclose(a.line_loading_percent, b.line_loading_percent, rtol=0, atol=LOADING_TOL)
        np.testing.assert_allclose(a.trafo_loading_percent, b.trafo_loading_percent, rtol=0, atol=LOADING_TOL)
    assert a.losses_mw == pytest.approx(b.losses_mw, abs=MW_TOL)
    assert a.ext_grid_p_mw == pytest.approx(b.ext_grid_p_mw, abs=MW_TOL)
    assert a.ext_grid_q_mvar == pytest.approx(b.ext_grid_q_mvar, abs=MW_TOL)


# ---------------------------------------------------------------------------------------------------------------
# case33bw: literature values and pandapower's own run


def test_case33bw_baran_wu_and_pandapower(net33, fast33):
    p, q = bus_net_load(net33)
    res = fast33.solve(p, q)
    assert res.converged
    assert res.losses_mw * 1e3 == pytest.approx(202.68, abs=0.5)  # Baran & Wu 1989: 202.7 kW
    assert int(np.argmin(res.vm_pu)) == 17  # paper bus 18
    assert res.vm_pu[17] == pytest.approx(0.9131, abs=5e-4)

    net = _case33bw()  # pandapower on the original loads
    pp.runpp(net, tolerance_mva=1e-9 / net.sn_mva)
    np.testing.assert_allclose(res.vm_pu, net.res_bus.vm_pu.to_numpy(), rtol=0, atol=VM_TOL)
    np.testing.assert_allclose(res.va_degree, net.res_bus.va_degree.to_numpy(), rtol=0, atol=VA_TOL)
    np.testing.assert_allclose(
        res.line_loading_percent, net.res_line.loading_percent.to_numpy(), rtol=0, atol=LOADING_TOL
    )
    assert res.line_loading_percent.max() > 50  # max_i_ka=0.4 makes loading meaningful
    np.testing.assert_allclose(res.line_pl_mw, net.res_line.pl_mw.to_numpy(), rtol=0, atol=MW_TOL)
    np.testing.assert_allclose(res.line_p_from_mw, net.res_line.p_from_mw.to_numpy(), rtol=0, atol=MW_TOL)
    np.testing.assert_allclose(res.line_q_from_mvar, net.res_line.q_from_mvar.to_numpy(), rtol=0, atol=MW_TOL)
    assert res.ext_grid_p_mw == pytest.approx(net.res_ext_grid.p_mw.sum(), abs=MW_TOL)
    assert res.ext_grid_q_mvar == pytest.approx(net.res_ext_grid.q_mvar.sum(), abs=MW_TOL)
    assert res.losses_mw == pytest.approx(net.res_line.pl_mw.sum(), abs=MW_TOL)
    # 5 tie lines are open (out of service): zero flow, zero loading, no NaN
    off = ~net33.line.in_service.to_numpy()
    assert off.sum() == 5
    assert np.all(res.line_loading_percent[off] == 0) and np.all(res.line_p_from_mw[off] == 0)
    assert res.trafo_loading_percent.shape == (0,)


def _tables(net: pp.pandapowerNet) -> dict:
    """Deep copies of every table of a net (element, result and lookup tables alike)."""
    import pandas as pd

    return {k: v.copy(deep=True) for k, v in net.items() if isinstance(v, pd.DataFrame)}


def test_engine_does_not_modify_net():
    """Building either engine and solving with it (single, warm-started and batch) leaves every table of the
    caller's net — element data, results, everything — exactly as it was."""
    import pandas as pd

    net = _case33bw()
    before = _tables(net)
    p, q = bus_net_load(net)
    for engine in (FastPowerFlow(net), PandapowerPowerFlow(net)):
        assert engine.solve(1.3 * p, 1.3 * q).converged
        assert engine.solve(0.7 * p, 0.7 * q).converged
        assert all(r.converged for r in engine.solve_batch(np.vstack([p, 0.5 * p]), np.vstack([q, 0.5 * q])))
    after = _tables(net)
    assert after.keys() == before.keys()
    for name, table in before.items():
        pd.testing.assert_frame_equal(after[name], table, check_exact=True, obj=f"net.{name}")
    assert net.res_bus.empty or net.res_bus.vm_pu.isna().all()


@settings(max_examples=25, deadline=None)
@given(factors=arrays(np.float64, 33, elements=st.floats(-0.5, 2.0, allow_nan=False)), q_factor=st.floats(0.0, 1.5))
def test_case33bw_random_snapshots_match_pandapower(fast33, ref33, net33, factors, q_factor):
    p0, q0 = bus_net_load(net33)
    p, q = p0 * factors, q0 * factors * q_factor
    a = fast33.solve(p, q)
    b = ref33.solve(p, q)
    assert_results_close(a, b)
    assert a.method == "fast" and b.method == "pandapower"  # no retry, no fallback on the feeder's own range
    # active power balance: slack import = load + losses (no gens, no shunts in case33bw)
    assert a.ext_grid_p_mw == pytest.approx(p.sum() + a.losses_mw, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# case118 (PV buses, trafos), mv_oberrhein (2 ext_grids, sgens, open switches), odd topologies


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_case118_random_snapshots_match_pandapower(net118, engines118, seed):
    fast, ref = engines118
    rng = np.random.default_rng(seed)
    p0, q0 = bus_net_load(net118)
    f = rng.uniform(0.8, 1.2, len(p0))
    a, b = fast.solve(p0 * f, q0 * f), ref.solve(p0 * f, q0 * f)
    assert_results_close(a, b)
    assert a.method == "fast"  # the branch test (sparse path, PV buses) accepts the operating point
    assert len(a.trafo_loading_percent) == len(net118.trafo) > 0
    # active power balance with PV generators (shunts of case118 are purely reactive)
    assert np.all(net118.shunt.p_mw == 0)
    gen_p = net118.gen.loc[net118.gen.in_service, "p_mw"].sum()
    assert a.ext_grid_p_mw == pytest.approx((p0 * f).sum() - gen_p + a.losses_mw, abs=1e-6)


@pytest.mark.slow
def test_case118_pv_buses_hold_their_setpoints(net118, engines118):
    fast, _ = engines118
    p0, q0 = bus_net_load(net118)
    res = fast.solve(p0 * 1.1, q0 * 1.1)
    pos = net118.bus.index.get_indexer(net118.gen.bus)
    np.testing.assert_allclose(res.vm_pu[pos], net118.gen.vm_pu.to_numpy(), atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_mv_oberrhein_with_trafos_matches_pandapower(net_mv, seed):
    rng = np.random.default_rng(seed)
    fast, ref = FastPowerFlow(net_mv), PandapowerPowerFlow(net_mv)
    p_load, q_load = bus_net_load(net_mv)
    assert len(net_mv.trafo) == 2 and len(net_mv.ext_grid) == 2
    f = rng.uniform(0.5, 1.5, len(p_load))
    p, q = p_load * f, q_load * f
    a, b = fast.solve(p, q), ref.solve(p, q)
    assert_results_close(a, b)
    assert np.all(a.trafo_loading_percent > 1)


@pytest.mark.parametrize("trafo_loading", ["current", "power"])
def test_topology_edge_cases_match_pandapower(trafo_loading):
    net = _topology_net()
    fast = FastPowerFlow(net, trafo_loading=trafo_loading)
    ref = PandapowerPowerFlow(net, trafo_loading=trafo_loading)
    p, q = bus_net_load(net)
    a, b = fast.solve(p, q), ref.solve(p, q)
    assert_results_close(a, b)
    pos = {bus: i for i, bus in enumerate(net.bus.index)}
    assert np.isnan(a.vm_pu[pos[8]]) and np.isnan(a.vm_pu[pos[9]])  # out of service / isolated
    assert a.vm_pu[pos[17]] == a.vm_pu[pos[3]]  # fused by a closed switch
    assert a.vm_pu[pos[4]] == pytest.approx(1.01, abs=1e-12)  # PV bus
    # out-of-service line: zero, finite; the line to the out-of-service bus stays energised from one end
    # (pandapower keeps it, its charging current gives a small loading - compared above)
    assert a.line_loading_percent[7] == 0 and a.line_pl_mw[7] == 0 and a.line_p_from_mw[7] == 0
    assert 0 < a.line_loading_percent[6] < 1
    # v0 from a previous result (NaN at dropped buses is accepted) converges at once
    v_prev = a.vm_pu * np.exp(1j * np.deg2rad(a.va_degree))
    c = fast.solve(p * 1.1, q * 1.1, v0=v_prev)
    assert_results_close(c, ref.solve(p * 1.1, q * 1.1))


def test_sparse_and_dense_linear_solvers_agree(net33, monkeypatch):
    p, q = bus_net_load(net33)
    dense = FastPowerFlow(net33)
    monkeypatch.setattr(FastPowerFlow, "dense_max_dim", 0)
    sparse = FastPowerFlow(net33)
    assert dense._dense and not sparse._dense
    a, b = dense.solve(p * 1.3, q * 1.3), sparse.solve(p * 1.3, q * 1.3)
    assert a.iterations == b.iterations
    np.testing.assert_allclose(a.vm_pu, b.vm_pu, rtol=0, atol=1e-12)
    assert a.losses_mw == pytest.approx(b.losses_mw, abs=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# warm start, batch, non-convergence


def test_warm_start_and_batch(net33):
    fast = FastPowerFlow(net33)
    p, q = bus_net_load(net33)
    first = fast.solve(p, q)
    again = fast.solve(p, q)
    assert again.converged and again.iterations == 0
    np.testing.assert_allclose(again.vm_pu, first.vm_pu, atol=1e-12)
    scale = np.linspace(0.5, 1.5, 6)[:, None]
    batch = fast.solve_batch(p * scale, q * scale)
    assert len(batch) == 6 and all(r.converged for r in batch)
    fresh = FastPowerFlow(net33)
    for k, r in enumerate(batch):
        np.testing.assert_allclose(r.vm_pu, fresh.solve(p * scale[k], q * scale[k]).vm_pu, atol=1e-9)
    assert batch[-1].vm_pu.min() < batch[0].vm_pu.min()


def test_non_convergence_is_data_and_does_not_poison_warm_start(net33):
    fast = FastPowerFlow(net33)
    p, q = bus_net_load(net33)
    good = fast.solve(p, q)
    bad = fast.solve(50 * p, 50 * q)  # far beyond the nose of the PV curve: no solution exists
    assert not bad.converged and bad.method == "failed"
    assert bad.iterations >= fast.max_iter  # every attempt (warm, no-load, flat start) ran to max_iter
    assert fast.method_counts["failed"] == 1
    for name in ("vm_pu", "va_degree", "line_loading_percent", "line_p_from_mw", "line_pl_mw"):
        assert np.all(np.isfinite(getattr(bad, name))), name
    assert np.isfinite([bad.losses_mw, bad.ext_grid_p_mw, bad.ext_grid_q_mvar]).all()
    after = fast.solve(p, q)
    assert after.converged and after.iterations <= 1  # warm start is still the good solution
    np.testing.assert_allclose(after.vm_pu, good.vm_pu, atol=1e-10)
    # the reference engine reports the same verdict without raising
    ref = PandapowerPowerFlow(net33)
    assert not ref.solve(50 * p, 50 * q).converged


# ---------------------------------------------------------------------------------------------------------------
# bad input, factory, speed


@pytest.mark.parametrize("engine", ["fast", "pandapower"])
def test_bad_input_raises_power_flow_error(net33, fast33, ref33, engine):
    eng = fast33 if engine == "fast" else ref33
    p, q = bus_net_load(net33)
    with pytest.raises(PowerFlowError, match="p_load_mw"):
        eng.solve(p[:-1], q)
    with pytest.raises(PowerFlowError, match="q_load_mvar"):
        eng.solve(p, q.reshape(1, -1))
    q_nan = q.copy()
    q_nan[3] = np.nan
    with pytest.raises(PowerFlowError, match="q_load_mvar"):
        eng.solve(p, q_nan)
    p_inf = p.copy()
    p_inf[0] = np.inf
    with pytest.raises(PowerFlowError, match="p_load_mw"):
        eng.solve(p_inf, q)
    with pytest.raises(PowerFlowError, match="v0"):
        eng.solve(p, q, v0=np.full(len(p), np.nan))
    with pytest.raises(PowerFlowError, match="p_load_mw"):
        eng.solve_batch(p, q)  # 1-D instead of (n_snap, n_bus)
    assert issubclass(PowerFlowError, RuntimeError)


def test_make_engine(net33):
    assert isinstance(make_engine(net33), FastPowerFlow)
    assert isinstance(make_engine(net33, "pandapower", max_iter=10), PandapowerPowerFlow)
    with pytest.raises(ValueError, match="fast") as exc:
        make_engine(net33, "nope")
    assert "pandapower" in str(exc.value) and "nope" in str(exc.value)
    with pytest.raises(ValueError):
        FastPowerFlow(net33, tol_mva=0)
    assert make_engine(net33).n_bus == 33


def test_fast_engine_never_calls_pandapower(net33, fast33, monkeypatch):
    """The step loop's engine must not fall back on pp.runpp (speed is measured in bench/, not here)."""
    import pandapower as pp

    def forbidden(*args, **kw):
        raise AssertionError("pp.runpp called by the fast engine")

    monkeypatch.setattr(pp, "runpp", forbidden)
    p, q = bus_net_load(net33)
    rng = np.random.default_rng(0)
    for _ in range(20):
        f = rng.uniform(0.9, 1.1, len(p))
        assert fast33.solve(p * f, q * f).converged


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 600), cycle=st.booleans())
def test_permutation_parity_counts_cycles(seed: int, n: int, cycle: bool) -> None:
    """The vectorised transposition count behind the det-sign test equals n − cycles found by walking each cycle
    (random permutations and single long cycles, the pointer-jumping worst case)."""
    from grids.powerflow.common import _perm_swaps

    perm = np.roll(np.arange(n), 1) if cycle else np.random.default_rng(seed).permutation(n)
    seen, cycles = np.zeros(n, bool), 0
    for i in range(n):
        if not seen[i]:
            cycles += 1
            j = i
            while not seen[j]:
                seen[j] = True
                j = int(perm[j])
    assert _perm_swaps(perm) == n - cycles
