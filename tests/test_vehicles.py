"""Vehicle models from EV2Gym's published specifications (`agents.vehicles`, ``[fleet.groups.vehicles]``): the
tables, the weighted draw, what a fleet group takes from its models, and the one-line errors of bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import chisquare
from typer.testing import CliRunner

from agents import vehicles
from agents.fleet import FleetState, build_stations, generate_fleet
from experiments.cli import app
from sim.model import compiled_grid
from sim.scenario import validate
from sim.scenario_files import read_toml, resolve_path
from sim.streams import spawn_streams

runner = CliRunner()


def test_both_tables_load_with_positive_capacities_and_limits() -> None:
    for table, n, discharges in (("ev2gym", 13, False), ("ev2gym-v2g", 8, True)):
        t = vehicles.load(table)
        assert len(t.name) == len(set(t.name)) == n
        for a in (t.battery_kwh, t.ac_charge_kw, t.ac_discharge_kw, t.registrations):
            assert a.shape == (n,) and np.isfinite(a).all()
        assert (t.battery_kwh > 0).all() and (t.ac_charge_kw > 0).all() and (t.registrations > 0).all()
        assert (
            bool((t.ac_discharge_kw > 0).all()) is discharges and bool((t.ac_discharge_kw == 0).all()) is not discharges
        )


@pytest.mark.parametrize("table", ["ev2gym", "ev2gym-v2g"])
def test_draw_by_registrations_matches_the_registration_shares(table: str) -> None:
    """Chi-square goodness of fit of 20 000 draws (fixed seed) against the registration shares: p > 0.001 (a wrong
    weighting, e.g. equal weights, gives p < 1e-100 at this size)."""
    t = vehicles.load(table)
    n = 20_000
    pick, battery, ac, dis = vehicles.draw(np.random.default_rng(7), table, "all", "registrations", n)
    counts = np.bincount(pick, minlength=len(t.name))
    expected = t.registrations / t.registrations.sum() * n
    assert chisquare(counts, expected).pvalue > 1e-3
    assert chisquare(counts, np.full(len(t.name), n / len(t.name))).pvalue < 1e-10  # the test can tell
    np.testing.assert_array_equal(battery, t.battery_kwh[pick])
    np.testing.assert_array_equal(ac, t.ac_charge_kw[pick])
    np.testing.assert_array_equal(dis, t.ac_discharge_kw[pick])
    # 'equal' weights: uniform over the named models only
    models = [t.name[1], t.name[3], t.name[4]]
    pick, *_ = vehicles.draw(np.random.default_rng(7), table, models, "equal", 3000)
    rows = [t.name.index(m) for m in models]
    assert set(pick.tolist()) == set(rows)
    assert chisquare(np.bincount(pick, minlength=len(t.name))[rows]).pvalue > 1e-3


def _fleet(public: dict[str, Any], n_evs: int = 400) -> tuple[FleetState, np.ndarray]:
    """The default scenario's fleet with the public group changed by ``public`` (its battery_kwh removed); returns
    the fleet and the mask of its public EVs."""
    data = read_toml(resolve_path("default"))
    data["fleet"]["n_evs"] = n_evs
    data["market"]["mechanism"] = "milp"
    group = data["fleet"]["groups"][1]
    del group["battery_kwh"]
    group.update(public)
    s = validate(data)
    network, _ = compiled_grid(s.grid)
    fleet = generate_fleet(s, build_stations(s, network), spawn_streams(s.seed))
    return fleet, fleet.group == 1


def test_a_group_with_vehicles_draws_only_its_models_and_caps_the_charger_at_their_ac_limit() -> None:
    models = ["Renault Zoe", "Nissan Leaf", "Peugeot 208"]  # 22, 3.6 and 7.4 kW AC
    f, pub = _fleet({"vehicles": {"table": "ev2gym", "models": models}})
    t = vehicles.load("ev2gym")
    rows = f.vehicle[pub]
    assert pub.sum() > 50 and set(rows.tolist()) == {t.name.index(m) for m in models}
    assert (f.vehicle[~pub] == -1).all()  # the home group has no vehicles
    np.testing.assert_array_equal(f.battery_kwh[pub], t.battery_kwh[rows])
    assert (f.p_max_kw[pub] <= t.ac_charge_kw[rows]).all()
    chargers = [7.2, 11.0, 22.0]  # the group's charger_kw values: the EV draws min(charger, model limit)
    ok = [np.isclose(f.p_max_kw[pub], np.minimum(c, t.ac_charge_kw[rows])) for c in chargers]
    assert np.logical_or.reduce(ok).all()
    assert (f.p_max_kw[pub][rows == t.name.index("Nissan Leaf")] == 3.6).all()
    # the drawn energy need (5 to 15 kWh) is kept within the model's capacity
    need = (f.soc_target - f.soc_arrival) * f.battery_kwh
    assert (need[pub] >= 5.0 - 1e-9).all() and (need[pub] <= 15.0 + 1e-9).all()


def test_no_ev_discharges_with_the_table_whose_models_cannot() -> None:
    f, pub = _fleet({"vehicles": {"table": "ev2gym"}, "v2g_share": 1.0})
    assert pub.sum() > 50 and not f.v2g[pub].any() and (f.p_dis_kw[pub] == 0).all()


def test_v2g_models_discharge_within_their_limit() -> None:
    f, pub = _fleet({"vehicles": {"table": "ev2gym-v2g"}, "v2g_share": 1.0, "discharge_kw": 10.0})
    t = vehicles.load("ev2gym-v2g")
    rows = f.vehicle[pub]
    assert pub.sum() > 50 and f.v2g[pub].all()
    p_dis = f.p_dis_kw[pub]
    assert (p_dis > 0).all()
    assert (p_dis <= t.ac_discharge_kw[rows]).all() and (p_dis <= 10.0).all() and (p_dis <= f.p_max_kw[pub]).all()
    assert (p_dis[rows == t.name.index("Peugeot 208")] <= 7.4).all()


@pytest.mark.parametrize(
    "sets, says",
    [
        (
            ["fleet.groups.0.vehicles.models=['Tesla Model 4']"],
            "model 'Tesla Model 4' is not in table 'ev2gym'; allowed: Tesla Model 3,",
        ),
        (["fleet.groups.1.vehicles.table='ev2gym'"], "battery_kwh: not used with vehicles"),
        (
            ["fleet.groups.0.v2g_soc_floor=0.95", "fleet.groups.0.v2g_share=0.5", "market.mechanism=milp"],
            "v2g_soc_floor: got 0.95, above soc_target 0.9",
        ),
        (["fleet.groups.0.degradation_usd_per_kwh=-0.1"], "fleet.groups.0.degradation_usd_per_kwh"),
    ],
)
def test_bad_vehicle_and_v2g_input_is_one_line_exit_2_no_traceback(sets: list[str], says: str) -> None:
    args = [a for s in sets for a in ("--set", s)]
    res = runner.invoke(app, ["validate", "default", *args])
    out = res.output.strip()
    assert res.exit_code == 2, res.output
    assert "\n" not in out and "Traceback" not in out, out
    assert out.startswith("error: ") and says in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit)
