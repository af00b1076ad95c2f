"""docs/schema.md is generated from sim/scenario.py's models and must match them: a field added, renamed, re-ranged or
re-described without regenerating the reference fails here (fix: ``python -m experiments.schema_doc`` or
``make docs``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments import schema_doc
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]


def test_schema_md_is_current() -> None:
    current = schema_doc.SCHEMA_MD.read_text(encoding="utf-8")
    assert current == schema_doc.render(), (
        "docs/schema.md is stale: run 'python -m experiments.schema_doc' (or 'make docs') and commit it"
    )


def test_check_mode_exit_codes(tmp_path: Path) -> None:
    out = tmp_path / "schema.md"
    assert schema_doc.main(["--check", "--out", str(out)]) == 1  # missing
    assert schema_doc.main(["--out", str(out)]) == 0
    assert schema_doc.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("market step", "market stride"), encoding="utf-8")
    assert schema_doc.main(["--check", "--out", str(out)]) == 1


def _all_keys() -> list[tuple[str, str]]:
    return [(model.__name__, name) for _, model in schema_doc._sections() for name in model.model_fields]


def test_every_section_and_field_is_documented() -> None:
    text = schema_doc.render()
    sections = {m for _, m in schema_doc._sections()}
    # every model reachable from Scenario has a section, every field a row in it
    for model in sections:
        assert f'<a id="{model.__name__.lower()}"></a>' in text, model.__name__
    for section in text.split('<a id="')[1:]:
        anchor = section.split('"', 1)[0]
        model = next(m for m in sections if m.__name__.lower() == anchor)
        for name in model.model_fields:
            assert f"| `{name}` |" in section, f"{model.__name__}.{name} has no row"
    assert len(_all_keys()) > 80
    assert {"grid", "fleet", "stations", "attacks", "detection"} <= set(Scenario.model_fields)


def test_rows_carry_default_range_and_choices() -> None:
    text = schema_doc.render()
    assert "| `dt_min` | number | `15` | [1, 1440] | market step Δt [min] (a year of 1-min steps: 527 040) |" in text
    assert '| `engine` | string | `"fast"` | `"fast"`, `"pandapower"` |' in text
    assert "| `fleet` | [FleetSpec](#fleetspec) | required |" in text


def test_every_field_has_a_description() -> None:
    missing = schema_doc.missing_descriptions()
    assert not missing, f"fields without Field(description=...) in sim/scenario.py (say what, and the unit): {missing}"


def test_linked_from_nav_and_scenarios_page() -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    assert any("schema.md" in item.values() for item in nav)
    assert "(schema.md)" in (ROOT / "docs" / "scenarios.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", ["docs/schema.md"])
def test_no_executable_blocks(path: str) -> None:
    # tests/test_docs.py runs every fenced sh/console/python block of docs/: the reference must hold none
    assert "```" not in (ROOT / path).read_text(encoding="utf-8")
