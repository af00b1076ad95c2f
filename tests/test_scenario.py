"""Scenario schema: shipped files validate, bad input is one clear line per problem, overrides work."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.scenario import ScenarioError, apply_overrides, list_scenarios, load_scenario, read_toml, resolve_path


def test_shipped_scenarios_validate() -> None:
    names = list_scenarios()
    assert "default" in names and "dr-tou-33bus" in names
    for name in names:
        sc = load_scenario(name)
        assert sc.name == name
        assert sc.time.n_steps >= 1


def test_default_is_the_issue_study() -> None:
    sc = load_scenario("default")
    assert sc.grid.case.startswith("case33bw") and sc.time.horizon_h == 24 and sc.time.dt_min == 15
    assert sc.fleet.n_evs == 1000 and sc.market.mechanism == "elasticity-dr"


def test_overrides_are_typed_and_validated() -> None:
    sc = load_scenario(
        "default",
        [
            "fleet.n_evs=10",
            "market.params.elasticity-dr.dr_max=0.2",
            "fleet.groups.0.share=0.5",
            "fleet.groups.1.share=0.5",
            "grid.engine=pandapower",
        ],
        seed=9,
    )
    assert sc.fleet.n_evs == 10 and sc.market.active_params["dr_max"] == 0.2 and sc.seed == 9
    assert sc.fleet.groups[0].share == 0.5 and sc.grid.engine == "pandapower"


@pytest.mark.parametrize(
    "override, field, allowed",
    [
        ("time.dt_min=-5", "time.dt_min", "greater than or equal to 1"),
        ("fleet.n_evs=-1", "fleet.n_evs", "greater than or equal to 0"),
        ("grid.case=case9000", "grid.case", "case33bw"),
        ("grid.v_min_pu=1.2", "grid.v_min_pu", "less than 1"),
        ("fleet.groups.0.share=0.9", "fleet", "sum to 1"),
        ("time.horizon_h=1.1", "time", "whole number"),
        ("grid.nonsense=1", "grid.nonsense", "unknown key; allowed: bus_numbering, case"),
    ],
)
def test_bad_values_name_field_and_allowed(override: str, field: str, allowed: str) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario("default", [override])
    msg = str(err.value)
    assert field in msg and allowed in msg
    assert len(msg.splitlines()) == 1


def test_override_syntax_errors() -> None:
    data = read_toml(resolve_path("default"))
    with pytest.raises(ScenarioError, match="expected key=value"):
        apply_overrides(data, ["fleet.n_evs"])
    with pytest.raises(ScenarioError, match="list index"):
        apply_overrides(data, ["fleet.groups.7.share=1"])


def test_unknown_scenario_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match="allowed: .*default"):
        load_scenario("does-not-exist")


def test_bus_numbering_converted_once() -> None:
    sc = load_scenario("eho-bilevel-10stations")
    assert sc.grid.bus_numbering == "paper" and sc.bus_index(18) == 17
    sc0 = load_scenario("default")
    assert sc0.grid.bus_numbering == "pandapower" and sc0.bus_index(17) == 17


def test_digest_changes_with_content() -> None:
    a = load_scenario("default")
    assert a.digest() == load_scenario("default").digest()
    assert a.digest() != load_scenario("default", ["fleet.n_evs=5"]).digest()


def test_a_folder_named_like_a_shipped_scenario_does_not_hide_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evgrid run default --out default`, then `evgrid run default` again: the folder is not the scenario."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    assert load_scenario("default").name == "default"
    (tmp_path / "mine").mkdir()
    with pytest.raises(ScenarioError, match="'mine' is not a file"):
        load_scenario("mine")


def test_an_unknown_key_lists_the_allowed_ones_and_the_nearest() -> None:
    """Issue 20 item 3: a misspelt key names what is allowed in its table and the nearest spelling."""
    with pytest.raises(ScenarioError) as err:
        load_scenario("default", ["fleet.groups.0.batery_kwh={values=[40.0]}"])
    msg = str(err.value)
    assert msg.startswith("fleet.groups.0.batery_kwh: unknown key; allowed: arrival, battery, battery_kwh,")
    assert msg.endswith("did you mean 'battery_kwh'?") and "\n" not in msg
    # a key of another table (or a mechanism's parameter) is named by its full path
    for key, path in (("horizon_h=1", "time.horizon_h"), ("fleet.share=0.5", "fleet.groups.0.share")):
        with pytest.raises(ScenarioError, match=f"did you mean '{path}'"):
            load_scenario("default", [key])
    with pytest.raises(ScenarioError, match="did you mean 'market.params.elasticity-dr.dr_max'"):
        load_scenario("default", ["grid.dr_max=0.1"])
    with pytest.raises(ScenarioError) as err:  # nothing near: no guess
        load_scenario("default", ["zzz=1"])
    assert "did you mean" not in str(err.value)
