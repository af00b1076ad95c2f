"""The ElaadNL fleet source: drawn sessions match the shipped tables, weekday/weekend by the calendar, bad input.

Tolerance: each comparison is a chi-square goodness-of-fit test of the drawn sessions against the table's
probabilities (arrivals: 24 hourly bins of the 96 quarter-hour shares; connection time and energy: 10 bins between
the table's deciles, expected shares from the table's inverse CDF) and must give p >= 1e-3 (fixed seeds, so the outcome is deterministic).
With ~20 000 sessions per comparison a draw from the wrong table (weekday for weekend, private for public) or a
uniform draw gives p < 1e-30 (asserted too, so the test keeps its power).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from agents import elaadnl
from agents.fleet import StationTable, generate_fleet
from experiments.cli import app
from sim.scenario import Scenario, ScenarioError, validate
from sim.streams import spawn_streams

P_MIN = 1e-3  # chi-square p-value a correct sampler must reach
N_DAY = 20_000  # sessions per simulated day in the distribution tests
DECILES = np.arange(0, 101, 10)


def _scenario(group: dict | None = None, **time: float) -> Scenario:
    g = {
        "name": "ev",
        "share": 1.0,
        "station_group": "s",
        "source": "elaadnl",
        "battery_kwh": {"values": [120.0]},  # > the largest ElaadNL energy (99.9 kWh): nothing is capped
        "soc_target": 1.0,
        **(group or {}),
    }
    return validate(
        {
            "name": "elaadnl-test",
            "time": {"start_h": 0.0, "horizon_h": 48.0, **time},
            "fleet": {"n_evs": N_DAY, "placement": "uniform", "groups": [g]},
            "stations": [{"name": "s", "buses": [1], "ports": 0}],
        }
    )


def _stations() -> StationTable:
    one = np.array([0])
    return StationTable(np.array(["s@1"]), one, one, one, np.array([np.inf]), np.array([False]))


def _fleet(sc: Scenario, seed: int = 7, warnings: list[str] | None = None):  # noqa: ANN202
    return generate_fleet(sc, _stations(), spawn_streams(seed), warnings)


def _hourly(p96: np.ndarray) -> np.ndarray:
    return p96.reshape(24, 4).sum(axis=1)


def _arrival_p(arrival_h: np.ndarray, p96: np.ndarray) -> float:
    counts = np.bincount(np.floor(arrival_h % 24.0).astype(int), minlength=24)
    expected = _hourly(p96) * counts.sum()
    return float(stats.chisquare(counts, expected).pvalue)


def _decile_p(x: np.ndarray, values: np.ndarray) -> float:
    """Chi-square p of ``x`` against a quantile table (value exceeded by 0..100 % of sessions), in 10 bins whose
    edges are the table's deciles.

    The expected share of each bin comes from the table itself: its inverse CDF evaluated on a fine grid of 10^6
    equally likely percentages (not 10 % each: where the table repeats a value, e.g. public connection time 0.6 h
    at 90 % and 91 %, that value carries a point mass).
    """
    edges = values[DECILES][::-1]  # increasing: value exceeded by 100 %, 90 %, …, 0 %
    assert np.all(np.diff(edges) > 0)
    grid = np.interp((np.arange(1_000_000) + 0.5) / 1e4, elaadnl.tables().pct, values)
    expected = np.histogram(grid, bins=edges)[0] / len(grid) * len(x)
    counts = np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)[0]
    return float(stats.chisquare(counts, expected).pvalue)


def test_calendar_day_one_is_a_friday_and_day_two_a_saturday() -> None:
    # SimBench's profile year 2016 began on a Friday; grid.profile_start_day = 1 is that day
    assert [elaadnl.is_weekend(1, c) for c in range(4)] == [False, True, True, False]
    assert elaadnl.is_weekend(172, 0) is False and elaadnl.is_weekend(170, 0) is True  # 18 June 2016: Saturday


@pytest.mark.parametrize("segment", ["public", "private"])
def test_arrivals_follow_the_weekday_table_on_friday_and_the_weekend_table_on_saturday(segment: str) -> None:
    t = elaadnl.tables()
    f = _fleet(_scenario({"segment": segment}))  # 0:00 Friday 1 Jan → 0:00 Sunday 3 Jan: one weekday, one weekend
    arr_h = f.arrival_min / 60.0
    fri, sat = arr_h[arr_h < 24.0], arr_h[arr_h >= 24.0]
    assert len(fri) == len(sat) == N_DAY
    wd, we = t.arrival_weekday[segment], t.arrival_weekend[segment]
    assert _arrival_p(fri, wd) >= P_MIN and _arrival_p(sat, we) >= P_MIN
    # power: the other day's table, the other segment's and a uniform draw are all rejected outright
    other = t.arrival_weekday["private" if segment == "public" else "public"]
    assert _arrival_p(fri, we) < 1e-30 and _arrival_p(sat, wd) < 1e-30 and _arrival_p(fri, other) < 1e-30
    assert _arrival_p(fri, np.full(96, 1 / 96)) < 1e-30


@pytest.mark.parametrize("segment", ["public", "private"])
def test_connection_time_and_energy_follow_their_tables(segment: str) -> None:
    t = elaadnl.tables()
    f = _fleet(_scenario({"segment": segment}, horizon_h=24.0))
    conn_h = (f.departure_min - f.arrival_min) / 60.0
    e_kwh = (f.soc_target - f.soc_arrival) * f.battery_kwh / f.eta_ch  # battery side → metered at the charger
    assert len(conn_h) == N_DAY
    assert _decile_p(conn_h, t.connection_h[segment]) >= P_MIN
    assert _decile_p(e_kwh, t.energy_kwh[segment]) >= P_MIN
    other = "private" if segment == "public" else "public"
    assert _decile_p(conn_h, t.connection_h[other]) < 1e-30 and _decile_p(e_kwh, t.energy_kwh[other]) < 1e-30


def test_day_type_forces_one_table() -> None:
    t = elaadnl.tables()
    arr_h = _fleet(_scenario({"day_type": "weekend"})).arrival_min / 60.0
    assert _arrival_p(arr_h[arr_h < 24.0], t.arrival_weekend["public"]) >= P_MIN  # Friday, but forced weekend
    arr_h = _fleet(_scenario({"day_type": "weekday"})).arrival_min / 60.0
    assert _arrival_p(arr_h[arr_h >= 24.0], t.arrival_weekday["public"]) >= P_MIN  # Saturday, forced weekday


def test_noon_start_keeps_the_window_and_the_seed_reproduces() -> None:
    sc = _scenario(start_h=12.0, horizon_h=24.0)
    a, b = _fleet(sc, seed=3), _fleet(sc, seed=3)
    np.testing.assert_array_equal(a.arrival_min, b.arrival_min)
    np.testing.assert_array_equal(a.soc_arrival, b.soc_arrival)
    assert a.arrival_min.min() >= 0.0 and a.arrival_min.max() < 24 * 60
    assert (a.departure_min >= a.arrival_min).all()
    # Friday afternoon + Saturday morning: about one day's sessions in all (public: 66 % arrive after noon)
    assert 0.8 * N_DAY < len(a) < 1.2 * N_DAY


def test_capped_and_undeliverable_energies_are_reported() -> None:
    warnings: list[str] = []
    sc = _scenario(
        {"battery_kwh": {"values": [40.0]}, "soc_target": 0.9, "charger_kw": {"values": [3.7]}}, horizon_h=24
    )
    f = _fleet(sc, warnings=warnings)
    assert (f.soc_arrival >= 0.0).all() and np.allclose((f.soc_target - f.soc_arrival).max() * 40.0, 36.0)
    capped = [w for w in warnings if "ElaadNL session energies exceed battery_kwh x soc_target" in w]
    short = [w for w in warnings if "need more energy than their charger delivers in their connection time" in w]
    assert len(capped) == 1 and len(short) == 1 and len(warnings) == 2
    # the count in the warning is the number of sessions a 3.7 kW charger cannot fill in their connection time
    need = (f.soc_target - f.soc_arrival) * f.battery_kwh
    n_short = int((need > 3.7 * f.eta_ch * (f.departure_min - f.arrival_min) / 60.0 + 1e-9).sum())
    assert n_short > 0 and short[0].startswith(f"fleet.groups.ev: {n_short} of {len(f)} ElaadNL sessions")
    warnings.clear()
    _fleet(_scenario(horizon_h=24.0), warnings=warnings)  # 120 kWh batteries, 7.2 kW: nothing capped
    assert not any("capped" in w for w in warnings)


def test_settings_the_source_does_not_use_are_errors() -> None:
    with pytest.raises(ScenarioError, match=r"fleet\.groups\.0: arrival: not used with source = 'elaadnl'"):
        _scenario({"arrival": {"process": "uniform", "low_h": 8.0, "high_h": 9.0}})
    with pytest.raises(ScenarioError, match=r"segment: only used with source = 'elaadnl'"):
        _scenario({"source": "parametric", "segment": "public"})


def test_bad_source_is_one_line_naming_the_field_and_the_allowed_values(tmp_path: Path) -> None:
    default = (Path(__file__).resolve().parent.parent / "experiments" / "scenarios" / "default.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(default.replace('name = "public"\n', 'name = "public"\nsource = "elaad"\n'))
    res = CliRunner().invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert "fleet.groups.1.source" in lines[0] and "'parametric' or 'elaadnl'" in lines[0] and "elaad'" in lines[0]
