"""The batched power flow (issue 15 item 2): many snapshots at once, the same answers as `pp.runpp` and as
`FastPowerFlow.solve`, the same acceptance test, and the full safety net for what the batch does not settle."""

from __future__ import annotations

import numpy as np
import pandapower.networks as pn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grids.powerflow import FastPowerFlow, PandapowerPowerFlow, bus_net_load
from grids.powerflow import batch as pfb

VM_TOL = 1e-6  # [pu], the agreement with pp.runpp


def _day(net: object, lo: float, hi: float, k: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` snapshots: the net's loads scaled along a daily curve from ``lo`` to ``hi``, ±10 % per bus."""
    p, q = bus_net_load(net)
    rng = np.random.default_rng(seed)
    curve = lo + (hi - lo) * (0.5 - 0.5 * np.cos(np.linspace(0, 2 * np.pi, k)))
    scale = curve[:, None] * rng.uniform(0.9, 1.1, (k, len(p)))
    return p * scale, q * scale


@pytest.mark.parametrize(("case", "lo", "hi"), [("case33bw", 0.3, 1.3), ("case118", 0.5, 1.1)])
def test_batch_agrees_with_pandapower_and_with_solve(case: str, lo: float, hi: float) -> None:
    net = getattr(pn, case)()
    P, Q = _day(net, lo, hi)
    eng = FastPowerFlow(net)

    def one_by_one(*_a: object, **_k: object) -> None:
        pytest.fail("a snapshot of an ordinary day left to FastPowerFlow.solve: the batch did not do the work")

    setattr(eng, "solve", one_by_one)  # noqa: B010
    batch = eng.solve_batch(P, Q)
    ref, one = PandapowerPowerFlow(net), FastPowerFlow(net)
    assert all(r.converged and r.method == "fast" for r in batch)
    for k in range(len(P)):
        want, loop = ref.solve(P[k], Q[k]), one.solve(P[k], Q[k])
        np.testing.assert_allclose(batch[k].vm_pu, want.vm_pu, rtol=0, atol=VM_TOL)
        np.testing.assert_allclose(batch[k].va_degree, want.va_degree, rtol=0, atol=1e-4)
        np.testing.assert_allclose(batch[k].vm_pu, loop.vm_pu, rtol=0, atol=1e-9)
        assert batch[k].losses_mw == pytest.approx(loop.losses_mw, rel=1e-8, abs=1e-12)
        np.testing.assert_allclose(batch[k].line_loading_percent, loop.line_loading_percent, rtol=1e-7)


@settings(max_examples=25, deadline=None)
@given(scales=st.lists(st.floats(0.0, 4.5), min_size=1, max_size=12))
def test_any_batch_equals_solving_one_by_one(scales: list[float]) -> None:
    """Up to 4.5× case33bw's load: past the nose (~3.6×) there is no solution. Every snapshot is converged or
    flagged exactly as `solve` from the same warm start says, and converged ones agree."""
    net = pn.case33bw()
    p, q = bus_net_load(net)
    s = np.array(scales)[:, None]
    eng = FastPowerFlow(net, fallback=False)
    out = eng.solve_batch(p * s, q * s)
    for k, r in enumerate(out):
        alone = FastPowerFlow(net, fallback=False).solve(p * s[k, 0], q * s[k, 0])
        assert r.converged == alone.converged, scales[k]
        if r.converged:
            np.testing.assert_allclose(r.vm_pu, alone.vm_pu, rtol=0, atol=1e-8)
            assert 0.4 < np.nanmin(r.vm_pu) <= 1.0 + 1e-9


def test_batched_acceptance_test_is_the_engines() -> None:
    """The branch test of the batch (one LU per snapshot, no Python per entry) says what `FastPowerFlow` says, on
    an operable point and on the low-voltage solution of a Kerber cable feeder (Vmin 0.44 pu, inside the
    plausible band: only the sign of det J tells it apart)."""
    net = pn.create_kerber_landnetz_kabel_1()
    fast, ref = FastPowerFlow(net), PandapowerPowerFlow(net)
    p = np.zeros(fast.n_bus)
    p[17] = 0.3
    q = np.zeros(fast.n_bus)
    want = ref.solve(p, q)
    v_up = want.vm_pu * np.exp(1j * np.deg2rad(want.va_degree))
    drop = (1 - v_up) / (1 - v_up[17])
    low_start = 1 - drop * (1 - 0.3 * np.exp(1j * np.angle(v_up[17])))
    raw = FastPowerFlow(net, fallback=False)
    setattr(raw, "_acceptable", lambda V, newton=False: True)  # noqa: B010  (accept anything, as before issue 13)
    low = raw.solve(p, q, v0=low_start)
    cols = []
    for r in (want, low):
        V = fast._v_warm.copy()
        v = r.vm_pu * np.exp(1j * np.deg2rad(r.va_degree))
        V[fast._bus_dst] = v[fast._bus_src]
        cols.append(V)
    V = np.stack(cols, axis=1)
    S = V * np.conj(fast._Y @ V)
    got = pfb._acceptable(fast, V, S)
    assert got.tolist() == [fast._acceptable(V[:, 0]), fast._acceptable(V[:, 1])] == [True, False]


def test_a_snapshot_the_chord_cannot_settle_goes_to_the_safety_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no chord iterations allowed, every snapshot is solved by `solve` and the answers stay the same."""
    net = pn.case33bw()
    P, Q = _day(net, 0.3, 1.3, k=6)
    quick = FastPowerFlow(net).solve_batch(P, Q)
    monkeypatch.setattr(pfb, "MAX_CHORD", 0)
    slow_engine = FastPowerFlow(net)
    slow = slow_engine.solve_batch(P, Q)
    assert all(r.iterations > 0 for r in slow[1:]) and slow_engine.method_counts["fast"] == 6
    for a, b in zip(quick, slow, strict=True):
        np.testing.assert_allclose(a.vm_pu, b.vm_pu, rtol=0, atol=1e-9)


def test_batch_input_errors() -> None:
    from grids.powerflow import PowerFlowError

    net = pn.case33bw()
    eng = FastPowerFlow(net)
    p, q = bus_net_load(net)
    with pytest.raises(PowerFlowError, match="finite"):
        eng.solve_batch(np.vstack([p, p * np.nan]), np.vstack([q, q]))
    assert eng.solve_batch(np.zeros((0, eng.n_bus)), np.zeros((0, eng.n_bus))) == []
