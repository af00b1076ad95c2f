"""DLMPs: AC OPF (pandapower) vs LinDistFlow LP (HiGHS) on case33bw, the decomposition, failures, the PEV cases.

Tolerances (documented in grids/dlmp.py, measured values in brackets):

* light load (0.3 and 0.5 × the Baran–Wu load, no DERs): |λP_LP − λP_AC| ≤ 0.25 % of λP [0.08 %];
  loss components (λP − λ₀) within 3 % of the AC OPF's [1.4 %]; |λQ_LP − λQ_AC| ≤ 3 % of λQ_AC + 0.01 $/MVArh
  [1.3 %]; the physical cost and losses of the (identical) dispatch to 1e-6 relative;
* decomposition identity: energy + loss + congestion + voltage = λ to 1e-6 $/MWh [~1e-13];
* AC OPF prices are marginal costs: a 10 kW load step changes the cost by λP · 10 kW to 0.5 % [0.02 %].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grids.dlmp import (
    COMPONENTS_P,
    COMPONENTS_Q,
    DLMPInputError,
    FlexibleEV,
    NotRadialError,
    dlmp_acopf,
    dlmp_lindistflow,
    slot_summary,
)
from grids.network import build_network

PRICE = 50.0  # [$/MWh]
SCALES = (0.3, 0.5, 0.7)  # load levels of the three slots
V_MIN = 0.90  # 0.7 × load sits at 0.94 pu: a band the plain feeder can meet
MAIN_FEEDER = list(range(18))  # paper buses 1 → 18 (pandapower 0 … 17)
END = 17  # paper bus 18
REL_P = 0.0025
REL_LOSS = 0.03
REL_Q, ABS_Q = 0.03, 0.01


@pytest.fixture(scope="module")
def nw33():
    return build_network("case33bw")


@pytest.fixture(scope="module")
def loads(nw33):
    s = np.array(SCALES)[:, None]
    return nw33.base_p_kw[None, :] * s, nw33.base_q_kvar[None, :] * s


@pytest.fixture(scope="module")
def ac(nw33, loads):
    return dlmp_acopf(nw33, *loads, price_usd_per_mwh=PRICE, v_min_pu=V_MIN)


@pytest.fixture(scope="module")
def lp(nw33, loads):
    return dlmp_lindistflow(nw33, *loads, price_usd_per_mwh=PRICE, v_min_pu=V_MIN)


def _slot(df: pd.DataFrame, k: int) -> pd.DataFrame:
    return df[df.slot == k].sort_values("bus")


def test_tables_are_tidy_and_converged(ac, lp, nw33):
    for df, method in ((ac, "acopf"), (lp, "lindistflow")):
        assert len(df) == len(SCALES) * nw33.n_bus
        assert set(df.method) == {method}
        assert df.converged.all()
        assert np.isfinite(df[["lam_p_usd_per_mwh", "lam_q_usd_per_mvarh", "vm_pu"]].to_numpy()).all()
        summary = slot_summary(df)
        assert list(summary.slot) == list(range(len(SCALES)))
        assert (summary.losses_kw > 0).all() and (summary.total_cost_usd_per_h > 0).all()
    assert set(COMPONENTS_P + COMPONENTS_Q) <= set(lp.columns)


@pytest.mark.parametrize("k", [0, 1])  # the light-load slots
def test_acopf_and_lindistflow_agree_at_light_load(ac, lp, k):
    a, b = _slot(ac, k), _slot(lp, k)
    lam_ac, lam_lp = a.lam_p_usd_per_mwh.to_numpy(), b.lam_p_usd_per_mwh.to_numpy()
    assert np.abs(lam_lp - lam_ac).max() <= REL_P * lam_ac.max()
    loss_ac = lam_ac - PRICE
    far = loss_ac > 0.1  # buses with a loss component worth comparing
    assert far.sum() > 20
    assert np.all(np.abs(b.loss_usd_per_mwh.to_numpy()[far] - loss_ac[far]) <= REL_LOSS * loss_ac[far])
    q_ac, q_lp = a.lam_q_usd_per_mvarh.to_numpy(), b.lam_q_usd_per_mvarh.to_numpy()
    assert np.all(np.abs(q_lp - q_ac) <= REL_Q * np.abs(q_ac) + ABS_Q)
    sa, sb = slot_summary(a).iloc[0], slot_summary(b).iloc[0]
    for col in ("total_cost_usd_per_h", "losses_kw", "grid_p_kw"):
        assert sb[col] == pytest.approx(sa[col], rel=1e-6)


@pytest.mark.parametrize("which", ["ac", "lp"])
def test_prices_rise_toward_the_feeder_end(which, request):
    df = request.getfixturevalue(which)
    for k in range(len(SCALES)):
        s = _slot(df, k).set_index("bus")
        lam_p = s.loc[MAIN_FEEDER, "lam_p_usd_per_mwh"].to_numpy()
        lam_q = s.loc[MAIN_FEEDER, "lam_q_usd_per_mvarh"].to_numpy()
        assert np.all(np.diff(lam_p) > 0), f"λP not rising along buses 1→18 in slot {k}: {lam_p}"
        assert np.all(np.diff(lam_q) > 0), f"λQ not rising along buses 1→18 in slot {k}: {lam_q}"
        assert lam_p[0] == pytest.approx(PRICE, abs=1e-3)


@pytest.mark.parametrize("which", ["ac", "lp"])
def test_prices_rise_with_load(which, request):
    df = request.getfixturevalue(which)
    end = df[df.bus == END].sort_values("slot")
    assert np.all(np.diff(end.lam_p_usd_per_mwh.to_numpy()) > 0)
    assert np.all(np.diff(end.lam_q_usd_per_mvarh.to_numpy()) > 0)
    assert np.all(np.diff(slot_summary(df).losses_kw.to_numpy()) > 0)


def test_energy_component_is_the_substation_price(nw33, loads):
    prices = np.array([40.0, 55.0, 70.0])
    df = dlmp_lindistflow(nw33, *loads, price_usd_per_mwh=prices, q_price_usd_per_mvarh=2.0, v_min_pu=V_MIN)
    for k, price in enumerate(prices):
        s = _slot(df, k)
        assert np.allclose(s.energy_usd_per_mwh, price)
        assert np.allclose(s.energy_q_usd_per_mvarh, 2.0)
        root = s[s.bus == 0].iloc[0]
        assert root.lam_p_usd_per_mwh == pytest.approx(price, abs=1e-9)
        # no limit binds: the rest is loss
        assert np.allclose(s.congestion_usd_per_mwh, 0, atol=1e-9)
        assert np.allclose(s.voltage_usd_per_mwh, 0, atol=1e-9)
        assert (s[s.bus != 0].loss_usd_per_mwh > 0).all()


def _identity(df: pd.DataFrame) -> None:
    ok = df[df.converged]
    assert np.allclose(ok[list(COMPONENTS_P)].sum(axis=1), ok.lam_p_usd_per_mwh, atol=1e-6, rtol=0)
    assert np.allclose(ok[list(COMPONENTS_Q)].sum(axis=1), ok.lam_q_usd_per_mvarh, atol=1e-6, rtol=0)
    assert (slot_summary(df).decomposition_residual < 1e-6).all()


def test_decomposition_sums_to_lambda_light_load(lp):
    _identity(lp)


def test_lp_voltage_is_exact_at_its_base_point(lp):
    """The LP's voltage-drop rows (with the base point's (r² + x²)·ℓ̄) and its balance rows (with the base point's
    losses r·ℓ̄ moved to the right-hand side) are exact where they were linearised: with nothing flexible the final
    dispatch is the base point, so the LP's own voltage equals the AC power flow's [measured ~1e-13 pu]. Dropping the
    constant loss term from the P balance moves it by up to 1e-3 pu (no other test sees that)."""
    gap = (lp.vm_lp_pu - lp.vm_pu).abs()
    assert lp.converged.all() and gap.max() < 1e-9, gap.groupby(lp.slot).max()


@pytest.mark.slow
@pytest.mark.parametrize("binding", ["voltage", "congestion"])
def test_decomposition_with_binding_limits(binding):
    # the 002 feeder (DGs at 11 and 33, PV at 18) at full load: with the 0.4 kA default rating the 0.95 pu floor
    # binds at the lateral end (DG33 supports it); a 0.1 kA rating congests the first line instead
    nw = build_network("case33bw-dr", line_max_i_ka=0.4 if binding == "voltage" else 0.1)
    kw = dict(price_usd_per_mwh=50.0, renewable_kw=[[400.0]])
    df = dlmp_lindistflow(nw, nw.base_p_kw, nw.base_q_kvar, **kw)
    assert df.converged.all()
    _identity(df)
    if binding == "voltage":
        assert df.voltage_usd_per_mwh.max() > 1.0
        assert df[df.bus == 32].voltage_usd_per_mwh.iloc[0] > 0  # under-voltage raises the price
        assert np.allclose(df.congestion_usd_per_mwh, 0, atol=1e-9)
    else:
        assert df.congestion_usd_per_mwh.abs().max() > 0.5
        assert np.allclose(df.voltage_usd_per_mwh, 0, atol=1e-9)
    # the AC OPF on the same case: prices within 2 %, the same most expensive bus
    ac = dlmp_acopf(nw, nw.base_p_kw, nw.base_q_kvar, **kw)
    assert ac.converged.all()
    both = ac.merge(df, on=["slot", "bus"], suffixes=("_ac", "_lp"))
    assert np.allclose(both.lam_p_usd_per_mwh_lp, both.lam_p_usd_per_mwh_ac, rtol=0.02)
    assert both.lam_p_usd_per_mwh_ac.idxmax() == both.lam_p_usd_per_mwh_lp.idxmax()


def test_acopf_price_is_the_marginal_cost(nw33):
    p = np.repeat(nw33.base_p_kw[None, :] * 0.5, 2, axis=0)
    q = np.repeat(nw33.base_q_kvar[None, :] * 0.5, 2, axis=0)
    p[1, END] += 10.0  # +10 kW at paper bus 18
    df = dlmp_acopf(nw33, p, q, price_usd_per_mwh=PRICE)
    cost = slot_summary(df).total_cost_usd_per_h.to_numpy()
    lam = df[(df.slot == 0) & (df.bus == END)].lam_p_usd_per_mwh.iloc[0]
    assert (cost[1] - cost[0]) / 0.010 == pytest.approx(lam, rel=0.005)


def test_failed_opf_is_reported_per_slot(nw33):
    # full load sits at 0.913 pu: with a 0.95 pu floor and nothing to control, no dispatch is feasible
    p = nw33.base_p_kw[None, :] * np.array([[0.3], [1.0]])
    q = nw33.base_q_kvar[None, :] * np.array([[0.3], [1.0]])
    for f in (dlmp_acopf, dlmp_lindistflow):
        df = f(nw33, p, q, price_usd_per_mwh=PRICE, v_min_pu=0.95)
        ok, bad = _slot(df, 0), _slot(df, 1)
        assert ok.converged.all() and np.isfinite(ok.lam_p_usd_per_mwh).all()
        assert not bad.converged.any()
        assert bad.lam_p_usd_per_mwh.isna().all() and bad.lam_q_usd_per_mvarh.isna().all()
        assert bad.total_cost_usd_per_h.isna().all()
        assert (bad.message.str.len() > 0).all()


def test_lindistflow_rejects_meshed_networks():
    nw = build_network("case118")
    with pytest.raises(NotRadialError, match="dlmp_acopf"):
        dlmp_lindistflow(nw, nw.base_p_kw, nw.base_q_kvar, price_usd_per_mwh=PRICE)


def test_bad_input_is_an_error(nw33):
    with pytest.raises(DLMPInputError, match="p_load_kw"):
        dlmp_lindistflow(nw33, np.zeros((1, 5)), np.zeros((1, 5)), price_usd_per_mwh=PRICE)
    with pytest.raises(DLMPInputError, match="price"):
        dlmp_acopf(nw33, nw33.base_p_kw, nw33.base_q_kvar, price_usd_per_mwh=[PRICE, PRICE])
    with pytest.raises(DLMPInputError, match="s_max_kva"):
        FlexibleEV(bus=17, p_min_kw=0, p_max_kw=10, s_max_kva=8).injection_box_mw()


def test_flexible_ev_box_inside_the_inverter_circle():
    ev = FlexibleEV(bus=17, p_min_kw=-350.0, p_max_kw=0.0, q_min_kvar=-500.0, q_max_kvar=500.0, s_max_kva=400.0)
    plo, phi, qlo, qhi = ev.injection_box_mw()
    assert (plo, phi) == (0.0, 0.35)
    assert qhi == pytest.approx(np.sqrt(0.4**2 - 0.35**2)) and qlo == pytest.approx(-qhi)
    assert np.hypot(phi, qhi) <= 0.4 + 1e-12


@pytest.mark.slow
def test_four_pev_cases():
    from experiments.pev_cases import format_pev_cases, run_pev_cases

    df = run_pev_cases()
    assert df.converged.all()
    assert sorted(df.case.unique()) == [1, 2, 3, 4]
    assert df.note.str.contains("33-bus").all() and df.note.str.contains("5-bus").all()
    per = df.drop_duplicates("case").set_index("case")
    at = df.set_index(["case", "bus"])
    for bus in (18, 33):  # the EV buses (paper numbering)
        assert at.loc[(4, bus), "lam_q_usd_per_mvarh"] < at.loc[(2, bus), "lam_q_usd_per_mvarh"]
        assert at.loc[(2, bus), "lam_p_usd_per_mwh"] > at.loc[(1, bus), "lam_p_usd_per_mwh"]
        assert at.loc[(4, bus), "ev_q_kvar"] < 0  # the inverters supply reactive power
    assert per.loc[4, "losses_kw"] < per.loc[2, "losses_kw"]
    assert per.loc[3, "losses_kw"] < per.loc[1, "losses_kw"]  # V2G feeds the feeder end locally
    assert per.loc[4, "total_cost_usd_per_h"] < per.loc[2, "total_cost_usd_per_h"]
    assert per.loc[1, "ev_cost_usd_per_h"] == 0.0
    text = format_pev_cases(df, buses=[1, 18, 33])
    assert "| 18 |" in text and "V2G" in text and "5-bus" in text
