"""`qubo-rtp`: prices on the level grid, gap to the HiGHS one-hot optimum, seeds, ExactSolver, bad parameters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markets.base import MarketConfigError, MarketRequest
from markets.qubo import composites, samplers
from markets.qubo_rtp import QuboRTP, build_qubo, evaluate, gap, reference, solve


def _instance(n: int, seed: int, coupled: bool = True, prev: bool = False, **params):
    rng = np.random.default_rng(seed)
    nb = max(n // 4, 1)
    bus = rng.integers(0, nb, n)
    d0 = rng.uniform(20.0, 400.0, n)
    caps = np.bincount(bus, weights=d0, minlength=nb) * 0.85 if coupled else np.zeros(0)
    return QuboRTP(**params).instance(
        d0_kw=d0,
        elasticity=rng.uniform(0.05, 0.5, n),
        cap_kw=rng.uniform(350.0, 600.0, n),
        renewable_kw=0.3 * d0,
        bus=bus if coupled else np.full(n, -1),
        bus_cap_kw=caps,
        prev_level=rng.integers(5, 20, n) if prev else None,
        cost_usd_per_kwh=0.2,
        dt_h=0.25,
    )


def _request(
    n_ev: int, seed: int, n_slots: int = 6, station_cap_kw: float = 200.0, bus_scale: float = 1.0, n_stations: int = 4
) -> MarketRequest:
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_slots - 1, n_ev)
    return MarketRequest.from_sessions(
        dt_min=15,
        n_slots=n_slots,
        base_load_kw=np.full(n_slots, 500.0),
        arrival_slot=start,
        departure_slot=np.minimum(start + rng.integers(1, n_slots, n_ev), n_slots),
        e_need_kwh=rng.uniform(1.0, 30.0, n_ev),
        p_max_kw=rng.choice([7.2, 150.0], n_ev),
        station=rng.integers(0, n_stations, n_ev),
        bus=rng.integers(0, 2, n_ev),
        elasticity=rng.uniform(-0.5, -0.1, n_ev),
        price_usd_per_mwh=np.linspace(80.0, 260.0, n_slots),
        renewable_kw=np.full(n_slots, 50.0),
        station_cap_kw=np.full(n_stations, station_cap_kw),
        bus_ev_cap_kw={0: 150.0 * bus_scale, 1: 400.0 * bus_scale},
    )


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_ev=st.integers(1, 15), bits=st.sampled_from([3, 5]))
def test_prices_within_bounds_and_on_the_grid(seed: int, n_ev: int, bits: int) -> None:
    mech = QuboRTP(bits=bits, seed=seed)
    res = mech.clear(_request(n_ev, seed, station_cap_kw=1e4, bus_scale=1e3))
    prices = res.info["station_price_usd_per_kwh"]
    assert np.all(prices >= 0.05 - 1e-12) and np.all(prices <= 0.35 + 1e-12)
    level = (prices - 0.05) / (0.30 / ((1 << bits) - 1))
    np.testing.assert_allclose(level, np.rint(level), atol=1e-9)
    # the ramp limit holds between consecutive intervals (only capacity may override it: none binds here)
    assert np.all(np.abs(np.diff(prices, axis=0)) <= 0.05 + 1e-9)


def test_gap_to_the_milp_is_small_and_rows_hold() -> None:
    for seed, prev in ((1, False), (2, True), (3, True)):
        inst = _instance(60, seed, prev=prev)
        sol = solve(inst, seed=seed)
        ref = reference(inst)
        assert ref.status == "Optimal"
        assert sol.bus_violations == 0
        assert gap(sol.objective_usd, ref.objective_usd) <= 0.02
        assert gap(sol.objective_usd, ref.objective_usd) >= -1e-9  # never below the proven optimum
        assert sol.fit_error_usd < 1e-6  # the QUBO carries the cost exactly


def test_same_seed_same_prices_and_mechanism_reports_the_gap() -> None:
    req = _request(12, 5)
    a = QuboRTP(seed=11, reference=True).clear(req)
    b = QuboRTP(seed=11, reference=True).clear(req)
    np.testing.assert_array_equal(a.info["station_price_usd_per_kwh"], b.info["station_price_usd_per_kwh"])
    np.testing.assert_array_equal(a.p_kw, b.p_kw)
    assert a.gap is not None and -1e-9 <= a.gap <= 0.02
    assert a.violations["bus_cap_avoidable_kw"] <= 1e-6  # overloads only where the ramp limit forces them


def test_exact_solver_agrees_with_the_toolkit_on_a_tiny_instance() -> None:
    inst = _instance(3, 7, coupled=False, bits=3)
    lo, hi, _, _ = inst.windows()
    kb = inst.base_level
    target = inst.flat_target(lo, hi)
    flat = (hi <= kb) | (inst.d0_kw <= 0) | (inst.elasticity <= 0)
    qlo = np.where(flat, target, np.maximum(lo, kb))
    hi = np.where(flat, target, hi)
    d = inst.demand_table()
    table = inst.cost_table(d)
    model, blocks, err = build_qubo(inst, qlo, hi, np.zeros(0), table, d)
    assert 0 < model.n_vars <= samplers.EXACT_MAX_VARS and err < 1e-9
    bqm = model.to_bqm()
    ss = samplers.get("exact").sample(bqm)
    x = composites.samples_matrix(ss, model.n_vars)
    energy = np.asarray(ss.record.energy)
    # every bit pattern's QUBO energy is the true cost of the levels it decodes to (up to one constant)
    levels = np.stack([qlo.copy() for _ in range(len(x))])
    for b in blocks:
        levels[:, b.stations] = b.qlo + b.var.levels(x)
    true = np.array([evaluate(inst, lv)["objective_usd"] for lv in levels])
    np.testing.assert_allclose(energy - energy.min(), true - true.min(), atol=1e-9)
    # and the ground state is the brute-force optimum of the window
    best = min(
        evaluate(inst, np.array(c))["objective_usd"]
        for c in itertools.product(*[range(a, b + 1) for a, b in zip(qlo, hi)])
    )
    assert true[int(np.argmin(energy))] == pytest.approx(best, abs=1e-12)
    assert solve(inst, seed=1).objective_usd == pytest.approx(reference(inst).objective_usd, abs=1e-9)


def test_feeder_capacity_wins_over_the_price_ramp() -> None:
    from dataclasses import replace

    inst = QuboRTP().instance(
        d0_kw=np.array([100.0]),
        elasticity=np.array([0.5]),
        cap_kw=np.array([np.inf]),
        renewable_kw=np.zeros(1),
        bus=np.zeros(1, int),
        bus_cap_kw=np.array([80.0]),
        prev_level=np.array([0]),
        cost_usd_per_kwh=0.12,
        dt_h=0.25,
    )
    sol = solve(inst, seed=1)
    assert sol.ramp_broken == 1 and sol.bus_violations == 0
    assert evaluate(inst, sol.levels)["bus_over_physical_kw"].max() <= 1e-9
    assert inst.price(sol.levels)[0] - inst.price(0) > inst.ramp_max_usd_per_kwh
    keep_ramp = replace(inst, ramp_bus_rows=False)
    sol2 = solve(keep_ramp, seed=1)
    assert sol2.levels[0] == keep_ramp.ramp_levels  # as high as the ramp allows
    assert evaluate(keep_ramp, sol2.levels)["bus_over_physical_kw"].max() > 0  # the overload it could not avoid


@pytest.mark.parametrize(
    "params, field",
    [
        ({"bits": 0}, "bits"),
        ({"bits": 11}, "bits"),
        ({"price_min_usd_per_kwh": 0.4}, "price_max_usd_per_kwh"),
        ({"base_price_usd_per_kwh": 0.5}, "base_price_usd_per_kwh"),
        ({"ramp_max_usd_per_kwh": 0.0}, "ramp_max_usd_per_kwh"),
        ({"urgency_floor": 1.5}, "urgency_floor"),
        ({"sampler": "annealer"}, "sampler"),
        ({"num_reads": 0}, "num_reads"),
        ({"w_ren_usd_per_kwh": -1.0}, "w_ren_usd_per_kwh"),
        ({"bitz": 5}, "bitz"),
    ],
)
def test_bad_parameters_are_one_line_errors(params: dict, field: str) -> None:
    with pytest.raises(MarketConfigError) as err:
        QuboRTP(**params)
    msg = str(err.value)
    assert f"market.params.{field}" in msg and ("allowed" in msg) and len(msg.splitlines()) == 1


class _Net118:
    """Stand-in for the 118-bus `grids.network.Network` (loading pandapower's case118 takes seconds)."""

    n_bus = 118

    def zone_buses(self, zone: str) -> np.ndarray:
        return np.arange(0, 118, 2)

    def load_kw(self, tod_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape = 1.0 + 0.4 * np.sin(np.asarray(tod_h) / 24.0 * 2 * np.pi)
        return np.outer(shape, np.ones(self.n_bus)), np.zeros((np.size(tod_h), self.n_bus))


@pytest.mark.slow
def test_cli_study_small(tmp_path, monkeypatch) -> None:
    """`evgrid qubo-rtp` end to end at a tiny size: the table beside the paper's, and the repeatability line."""
    from typer.testing import CliRunner

    import experiments.rtp_paper as rp
    from experiments.cli import app

    monkeypatch.setattr(rp, "build_network", lambda *a, **k: _Net118())

    res = CliRunner().invoke(
        app,
        [
            "qubo-rtp",
            "--runs",
            "2",
            "--seed",
            "3",
            "--out",
            str(tmp_path),
            "--set",
            "paper.n_stations=8",
            "--set",
            "fleet.n_evs=120",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "paper vs ours" in res.output and "2 annealer runs" in res.output
    assert (tmp_path / "paper_comparison.md").exists() and (tmp_path / "runs.csv").exists()
    bad = CliRunner().invoke(app, ["qubo-rtp", "--runs", "0"])
    assert bad.exit_code == 2 and "--runs" in bad.output


def test_sampler_that_cannot_run_is_a_config_error() -> None:
    with pytest.raises(MarketConfigError, match="market.params.sampler: .*at most 24 variables"):
        QuboRTP(sampler="exact").clear(_request(60, 1, n_stations=12))
    # a few stations fit: the brute-force sampler then clears the market like the annealer
    small = _request(10, 2, n_stations=3)
    exact = QuboRTP(sampler="exact", reference=True).clear(small)
    assert exact.gap is not None and exact.gap <= 1e-9


def test_realised_station_load_is_the_load_the_prices_were_chosen_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """EVs with different elasticities at one station draw, together, exactly the modelled D[s, level]."""
    import markets.qubo_rtp as m
    from markets.base import MarketRequest

    rng = np.random.default_rng(3)
    n_ev, n_slots, n_st = 60, 6, 3
    req = MarketRequest.from_sessions(
        dt_min=15,
        n_slots=n_slots,
        base_load_kw=np.full(n_slots, 500.0),
        arrival_slot=rng.integers(0, 2, n_ev),
        departure_slot=np.full(n_ev, n_slots),
        e_need_kwh=rng.uniform(20, 60, n_ev),
        p_max_kw=np.full(n_ev, 7.2),
        station=rng.integers(0, n_st, n_ev),
        bus=np.zeros(n_ev, int),
        elasticity=rng.uniform(-0.9, -0.05, n_ev),
        price_usd_per_mwh=np.full(n_slots, 300.0),
        renewable_kw=np.zeros(n_slots),
        station_cap_kw=np.full(n_st, 1e4),
        bus_ev_cap_kw={0: 200.0},
    )
    seen = []
    orig = m.solve

    def spy(inst, **kw):  # type: ignore[no-untyped-def]
        sol = orig(inst, **kw)
        seen.append((inst, sol))
        return sol

    monkeypatch.setattr(m, "solve", spy)
    res = m.QuboRTP(seed=1).clear(req)
    assert len(seen) == n_slots
    for t, (inst, sol) in enumerate(seen):
        model = inst.demand_table()[np.arange(inst.n_stations), sol.levels]
        real = np.bincount(req.evs.station, weights=res.p_kw[:, t], minlength=n_st)
        np.testing.assert_allclose(real, model, rtol=1e-9, atol=1e-9)
    assert np.all(res.p_kw <= req.evs.p_max_kw[:, None] + 1e-9)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("elasticity", np.array([0.1, 0.2]), "elasticity: needs shape"),
        ("d0_kw", np.array([10.0, -1.0, 5.0]), "d0_kw: must be finite"),
        ("bus", np.array([0, 0, 3]), "bus: must be"),
    ],
)
def test_rtp_instance_validation_names_the_field(field: str, value: np.ndarray, match: str) -> None:
    from markets.qubo_rtp import RTPInstance

    kw = dict(
        d0_kw=np.array([10.0, 20.0, 5.0]),
        elasticity=np.full(3, 0.3),
        cap_kw=np.full(3, np.inf),
        renewable_kw=np.zeros(3),
        bus=np.array([0, 0, -1]),
        bus_cap_kw=np.array([25.0]),
        prev_level=None,
        cost_usd_per_kwh=0.1,
    )
    RTPInstance(**kw)  # the valid one builds
    kw[field] = value
    with pytest.raises(ValueError, match=match):
        RTPInstance(**kw)


def test_previous_station_prices_bound_the_first_interval() -> None:
    """``prev_station_price_usd_per_kwh`` starts the ramp: slot 0 stays within ramp_max of it (NaN: of the base price)."""
    from dataclasses import replace

    req = _request(8, 4, station_cap_kw=1e4, bus_scale=1e3)
    prev = np.array([0.35, 0.05, np.nan, 0.20])
    res = QuboRTP(seed=1).clear(replace(req, prev_station_price_usd_per_kwh=prev))
    first = res.info["station_price_usd_per_kwh"][0]
    bound = ~np.isnan(prev)
    assert np.all(np.abs(first[bound] - prev[bound]) <= 0.05 + 1e-9)
    free = QuboRTP(seed=1).clear(req).info["station_price_usd_per_kwh"][0]
    assert np.any(np.abs(free[bound] - prev[bound]) > 0.05 + 1e-9)  # without it the first interval goes elsewhere


def test_the_003_day_names_a_bad_paper_number() -> None:
    """`[paper]` numbers the 003 market day reads are checked with the key named (a string in feeder_factor was a
    ValueError traceback from run, and from validate once it built the day); validate says it in one line."""
    from typer.testing import CliRunner

    from experiments.cli import app

    for value, allowed in (("''", "a finite number in [0, inf]"), ("-1", "[0, inf]"), ("1e9", "[1, 10000]")):
        key = "n_stations" if value == "1e9" else "feeder_factor"
        res = CliRunner().invoke(app, ["validate", "qubo-rtp-118bus", "--set", f"paper.{key}={value}"])
        assert res.exit_code == 2 and res.output.startswith(f"error: paper.{key}: got "), res.output
        assert allowed in res.output and "Traceback" not in res.output
