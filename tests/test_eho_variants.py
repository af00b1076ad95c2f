"""Issue 17, part 3: EHO's matriarch variant in the `eho-bilevel` search, redirection of users who do not follow
(`BilevelProblem(redirect="all")`), and the generator of docs/eho.md's tables (experiments/eho_paper/variants.py)."""

from __future__ import annotations

import numpy as np
import pytest

from markets.base import MarketConfigError
from markets.eho_bilevel import BilevelProblem, EHOBilevel, Sessions, solve


@pytest.fixture(scope="module")
def shipped() -> dict[str, BilevelProblem]:
    """The bilevel problem of the shipped `eho-bilevel-10stations` day (seed 2026), users of a station may use it
    and its 2 nearest: only followers redirected, and everybody."""
    from experiments.eho_paper import problem_from_scenario
    from sim.scenario import load_scenario

    sc = load_scenario("eho-bilevel-10stations")
    return {r: problem_from_scenario(sc, reach=2, redirect=r)[0] for r in ("followers", "all")}


def _waits_at_busiest(prob: BilevelProblem, x: np.ndarray) -> tuple[float, float]:
    """(longest wait, longest wait of a user who does not follow) among the users of the busiest station [h]."""
    s = prob.sessions
    at = s.station == np.bincount(s.station).argmax()
    w = prob.respond(x).plugin_h - s.arrival_h
    return float(w[at].max()), float(w[at & ~s.follows].max())


# ----------------------------------------------------------------------------------------------- redirection
def test_redirecting_non_followers_lowers_the_longest_wait_at_the_busiest_station(shipped) -> None:
    """Station 10 (9 of the 50 EVs, 3 of whom do not follow) is the busiest. At each decision EHO finds (paper
    settings, seeds 2026–2027, with and without redirection in the model) the station's longest wait is lower when
    the users who do not follow are redirected too (measured 9.77 → 9.44, 9.77 → 5.77, 9.77 → 9.44, 11.77 →
    8.77 h), and theirs by ≥ 1 h; over 40 random decisions it is lower on average (82 % lower, 2 % higher of 200).
    """
    fol, every = shipped["followers"], shipped["all"]
    for sd in (2026, 2027):
        for prob in (fol, every):
            x = solve(prob, n_elephants=50, n_iter=50, seed=sd)["x"]
            (w0, nf0), (w1, nf1) = _waits_at_busiest(fol, x), _waits_at_busiest(every, x)
            assert w1 < w0 - 0.25 and nf1 < nf0 - 1.0, (sd, prob.redirect, w0, w1, nf0, nf1)
    X = np.random.default_rng(0).uniform(fol.lower, fol.upper, (40, fol.n_dim))
    w = np.array([[_waits_at_busiest(p, xi)[0] for p in (fol, every)] for xi in X])
    assert w[:, 1].mean() < w[:, 0].mean() - 0.5, w.mean(axis=0)
    assert (w[:, 1] < w[:, 0] - 1e-9).sum() > 2 * (w[:, 1] > w[:, 0] + 1e-9).sum()


def test_only_redirect_all_moves_non_followers_and_they_still_charge_from_plug_in(shipped) -> None:
    fol, every = shipped["followers"], shipped["all"]
    s = fol.sessions
    x = np.r_[np.full(fol.n_price, 1.3), np.full(fol.n_stations, 100.0)]
    rf, ra = fol.respond(x), every.respond(x)
    assert np.all(rf.station[~s.follows] == s.station[~s.follows])
    moved = ~s.follows & (ra.station != s.station)
    assert moved.any()
    # a redirected non-follower is not a follower: it charges from its plug-in slot on, without gaps
    dt = fol.dt_h
    for i in np.flatnonzero(moved):
        on = np.flatnonzero(ra.p_kw[i] > 1e-9)
        assert on[0] == int(np.ceil(ra.plugin_h[i] / dt - 1e-9)) and np.all(np.diff(on) == 1)


def test_redirect_without_alternatives_changes_nothing_and_is_validated() -> None:
    s = Sessions(arrival_h=[0.0, 0.2, 0.4], departure_h=[6.0] * 3, need_kwh=[14.0, 7.0, 10.0], follows=[1, 0, 0])
    kw = dict(dt_h=1.0, base_price_usd_per_kwh=np.linspace(0.17, 0.12, 6), base_load_kw=50.0, station_cap_kw=100.0)
    x = np.r_[np.full(6, 1.5), 100.0]
    a = BilevelProblem(s, ports=[1], **kw).respond(x)
    b = BilevelProblem(s, ports=[1], redirect="all", **kw).respond(x)
    np.testing.assert_array_equal(a.p_kw, b.p_kw)
    np.testing.assert_array_equal(a.plugin_h, b.plugin_h)
    # two stations, station 1 empty: with "all" the queued non-followers go there, with "followers" they queue
    two = dict(ports=[1, 1], alternatives=[[1], [0]], **{**kw, "station_cap_kw": [100.0, 100.0]})
    x2 = np.r_[np.full(6, 1.5), 100.0, 100.0]
    rf = BilevelProblem(s, **two).respond(x2)
    ra = BilevelProblem(s, redirect="all", **two).respond(x2)
    assert rf.station.tolist() == [0, 0, 0] and ra.station.tolist() == [0, 1, 0]
    assert (ra.plugin_h - s.arrival_h).max() < (rf.plugin_h - s.arrival_h).max()
    with pytest.raises(ValueError, match="redirect: got 'everyone'; allowed 'followers' or 'all'"):
        BilevelProblem(s, ports=[1], redirect="everyone", **kw)


# ----------------------------------------------------------------------------------------------- the variant
def test_mechanism_selects_and_validates_the_matriarch_update() -> None:
    from test_eho_bilevel import _request  # tests/ is on sys.path (pytest prepends the test folder)

    req = _request(np.random.default_rng(0), 12, caps=np.array([30.0, 60.0, 90.0]), day_ahead=True)
    kw = {"n_elephants": 10, "n_clans": 2, "n_iter": 6, "seed": 3}
    a = EHOBilevel(**kw).clear(req)
    b = EHOBilevel(eho_matriarch="origin", **kw).clear(req)
    c = EHOBilevel(eho_matriarch="best", eho_beta=1.0, **kw).clear(req)
    np.testing.assert_array_equal(a.price_usd_per_mwh, b.price_usd_per_mwh)  # the default is the paper's
    assert not np.array_equal(a.price_usd_per_mwh, c.price_usd_per_mwh)
    with pytest.raises(
        MarketConfigError, match=r"market.params.eho_matriarch: got 'centre'; allowed 'origin' or 'best'"
    ):
        EHOBilevel(eho_matriarch="centre")


def test_variant_beats_the_paper_settings_on_the_bilevel_problem(shipped) -> None:
    """At 2 550 evaluations on the 004 problem (followers redirected) the variant (β 1) ends above the paper's EHO on
    every seed tried (measured: paper 0.117–0.134, variant 0.163–0.363 on seeds 2026–2030)."""
    prob = shipped["followers"]
    for sd in (2026, 2027):
        paper = solve(prob, n_elephants=50, n_iter=50, seed=sd)["objective"]
        variant = solve(prob, n_elephants=50, n_iter=50, seed=sd, matriarch="best", beta=1.0)["objective"]
        assert variant > paper + 0.02, (sd, paper, variant)


# ----------------------------------------------------------------------------------------------- the generator
def test_benchmark_functions_are_zero_at_their_optimum_and_shifted_away_from_it() -> None:
    from experiments.eho_paper.variants import benchmark_functions

    fns = benchmark_functions(10)
    assert len(fns) == 8
    for name, f, lo, hi, opt in fns:
        assert np.all(lo < opt) and np.all(opt < hi)
        assert abs(float(f(opt))) < 1e-12, name
        assert float(f(opt + 0.1)) > 0
        if name.endswith("shifted"):
            assert np.abs(opt - np.round(opt)).max() > 0.01  # not at 0 (nor 1)


def test_search_table_compares_at_equal_evaluations() -> None:
    from experiments.eho_paper import variants

    runs = variants.compare_functions([0, 1])
    assert set(runs.n_evals) == {variants.BUDGET}
    assert len(runs) == 8 * len(variants.SEARCHES) * 2
    lines = variants.search_table(runs)
    assert len(lines) == 2 + 8 and all(line.count("[") == len(variants.SEARCHES) for line in lines[2:])
    med = runs[runs.problem == "Sphere, shifted"].groupby("search")["value"].median()
    assert med["EHO, variant (best, β 1)"] < 0.01 * med["EHO, paper (β·centre, β 0.3)"]


@pytest.mark.slow
def test_documented_variant_tables_match_the_code() -> None:
    from experiments.eho_paper import variants

    assert variants.main(["--check"]) == 0, "run 'python -m experiments.eho_paper.variants' and commit docs/eho.md"
