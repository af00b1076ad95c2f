"""The `evgrid` command line: runs, listings, validation, and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from experiments.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def test_run_writes_tables_kpis_and_scenario(tmp_path: Path) -> None:
    out = tmp_path / "r"
    res = runner.invoke(
        app,
        [
            "run",
            "default",
            "--set",
            "fleet.n_evs=30",
            "--set",
            "time.horizon_h=6",
            "--seed",
            "3",
            "--out",
            str(out),
            "--no-plots",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    kpis = json.loads((out / "kpis.json").read_text())
    assert kpis["n_steps"] == 24
    steps = pd.read_parquet(out / "tables" / "steps.parquet")
    assert len(steps) == 24 and "vmin_pu" in steps
    assert "fleet" in (out / "scenario.toml").read_text()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seed"] == 3 and prov["versions"]["pandapower"]
    assert "results written to" in res.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "fleet.n_evs=-3"], "fleet.n_evs"),
        (["--set", "time.dt_min=0"], "time.dt_min"),
        (["--set", "market.mechanism='qubo-magic'"], "market.mechanism"),
        (["--set", "market.params.elasticity-dr.dr_max=3"], "market.params.elasticity-dr.dr_max"),
        (["--set", "market.params.uncontrolled.bogus=1"], "market.params.uncontrolled.bogus"),
        (["--set", "stations.1.buses=[99]"], "stations.public.buses"),
        (["--set", "nonsense"], "expected key=value"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "never"
    res = runner.invoke(app, ["run", "default", "--out", str(out), "-q", *args])
    assert res.exit_code == 2, res.output
    err = res.stderr if hasattr(res, "stderr") else res.output
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert not out.exists()
    assert not any(tmp_path.iterdir())


def test_bad_file_and_validate(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[time]\ndt_min = "soon"\n')
    res = runner.invoke(app, ["validate", str(bad)])
    assert res.exit_code == 2 and "time.dt_min" in res.output
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [\n")
    res = runner.invoke(app, ["validate", str(broken)])
    assert res.exit_code == 2 and "not valid TOML" in res.output
    res = runner.invoke(app, ["validate", str(ROOT / "experiments" / "scenarios" / "default.toml")])
    assert res.exit_code == 0 and res.output.startswith("ok: default")


def test_validate_rejects_what_run_rejects_for_every_mechanism() -> None:
    """A station on a bus the network lacks was found only by `run` for mechanisms that do not price the grid;
    `validate` now builds what `run` builds, so it says the same line, and prints the warnings a run would."""
    for mechanism in ("uncontrolled", "elasticity-dr"):
        sets = ["--set", "stations.1.buses=[999]", "--set", f"market.mechanism='{mechanism}'"]
        checked = runner.invoke(app, ["validate", "default", *sets])
        assert checked.exit_code == 2, checked.output
        assert "stations.public.buses: bus 999 is not a bus of network 'case33bw'" in checked.output
    kerber = ["--set", "grid.case='pandapower:create_kerber_dorfnetz'", "--set", "market.mechanism='uncontrolled'"]
    res = runner.invoke(app, ["validate", "default", *kerber])
    assert res.exit_code == 0, res.output
    assert "warning: stations.public.buses: zone 'commercial' has no load buses" in res.output


def test_scenarios_lists_names_with_descriptions() -> None:
    res = runner.invoke(app, ["scenarios"])
    assert res.exit_code == 0
    lines = {ln.split()[0]: ln for ln in res.output.splitlines() if ln.strip()}
    assert "default" in lines and "dr-tou-33bus" in lines
    assert all(len(ln.split()) > 1 for ln in lines.values())


def test_help_imports_no_heavy_library() -> None:
    """`evgrid --help` stays quick because the CLI module imports no numerical library (bench/ times it)."""
    code = (
        "import sys, experiments.cli; heavy = {'numpy', 'pandas', 'pandapower', 'mesa', 'simpy', 'scipy'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "run" in res.output and "scenarios" in res.output


@pytest.mark.slow
def test_engine_option(tmp_path: Path) -> None:
    res = runner.invoke(app, ["run", "default", "--engine", "bogus", "--out", str(tmp_path / "x"), "-q"])
    assert res.exit_code == 2 and "--engine" in res.output and not (tmp_path / "x").exists()
    out = tmp_path / "ref"
    res = runner.invoke(
        app,
        [
            "run",
            "default",
            "--engine",
            "pandapower",
            "--set",
            "fleet.n_evs=10",
            "--set",
            "time.horizon_h=2",
            "--out",
            str(out),
            "--no-plots",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert 'engine = "pandapower"' in (out / "scenario.toml").read_text()


def test_paper_scenario_prints_paper_beside_ours(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    res = runner.invoke(app, ["run", "dr-tou-33bus", "--out", str(out), "--no-plots", "-q"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "paper_comparison.csv")
    assert {"metric", "paper", "ours"} <= set(table.columns) and table["ours"].notna().all()
    assert "VRI, coordinated" in res.output and "paper vs ours" in res.output
    for variant in ("no-ev", "dr-no-ev", "uncontrolled", "coordinated"):
        assert (out / variant / "kpis.json").is_file()


def test_compare_scores_mechanisms_against_the_exact_optimum(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    res = runner.invoke(
        app,
        [
            "compare",
            "default",
            "--mechanisms",
            "uncontrolled,elasticity-dr,milp",
            "--set",
            "fleet.n_evs=60",
            "--set",
            "time.horizon_h=12",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "compare.csv").set_index("mechanism")
    assert table.loc["milp", "market_gap"] == pytest.approx(0.0, abs=1e-6)
    assert (table["market_gap"] >= -1e-6).all()  # nothing beats the exact optimum of its own request
    assert table.loc["uncontrolled", "market_gap"] > table.loc["elasticity-dr", "market_gap"]
    res = runner.invoke(app, ["compare", "default", "--mechanisms", "nope", "--out", str(tmp_path / "n")])
    assert res.exit_code == 2 and "allowed" in res.output


@pytest.mark.slow
def test_pev_cases_command(tmp_path: Path) -> None:
    res = runner.invoke(app, ["pev-cases", "--method", "lindistflow", "--out", str(tmp_path / "pev")])
    assert res.exit_code == 0, res.output
    assert "stands in for the review's 5-bus example" in res.output
    assert (tmp_path / "pev" / "pev_cases.csv").is_file()
    res = runner.invoke(app, ["pev-cases", "--method", "dc"])
    assert res.exit_code == 2 and "--method" in res.output


BASE_CASE_MSG = "has no power-flow solution"


@pytest.mark.parametrize("quiet", [True, False])
def test_run_refuses_a_base_case_without_power_flow_solution(tmp_path: Path, quiet: bool) -> None:
    """Issue 14 item 6: 10x the 33-bus load has no solution even at its lightest hour: one line (exit 2) naming the
    network and what to try, before the simulation; nothing written (not a day of failed steps, not a traceback)."""
    out = tmp_path / "r"
    args = ["run", "default", "--set", "grid.load_scale=10", "--set", "fleet.n_evs=5", "--set", "time.horizon_h=1"]
    res = runner.invoke(app, [*args, "--out", str(out), "--no-plots", *(["-q"] if quiet else [])])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.output
    assert BASE_CASE_MSG in errors[0] and "'case33bw'" in errors[0] and "grid.load_scale = 10" in errors[0]
    assert not out.exists()


def test_run_refuses_a_network_file_whose_base_case_has_no_solution(tmp_path: Path) -> None:
    import pandapower as pp
    import pandapower.networks as pn

    net = pn.case33bw()
    net.load["p_mw"] *= 100  # an absurd load: 371 MW on a 12.66 kV feeder
    path = tmp_path / "absurd.json"
    pp.to_json(net, str(path))
    ov = ["grid.case='file'", f"grid.file='{path}'", "grid.load_profile='flat'", "stations.0.buses='all'"]
    ov += ["stations.1.buses='all'", "fleet.n_evs=5", "time.horizon_h=1"]
    res = runner.invoke(app, ["run", "default", *(a for o in ov for a in ("--set", o)), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert BASE_CASE_MSG in res.output and str(path) in res.output and "Traceback" not in res.output


def test_validate_and_study_meet_a_base_case_without_solution(tmp_path: Path) -> None:
    """`validate` says it in one line whatever the mechanism (it builds what `run` builds, not only for mechanisms
    that price the grid); a study stores the replication as failed with that cause."""
    for scenario, mechanism in (("qubo-dlmp-33bus-s1", "qubo-dlmp"), ("default", "uncontrolled")):
        sets = ["--set", "grid.load_scale=10", "--set", f"market.mechanism='{mechanism}'"]
        res = runner.invoke(app, ["validate", scenario, *sets])
        assert res.exit_code == 2 and BASE_CASE_MSG in res.output and "Traceback" not in res.output, res.output

    out = tmp_path / "mc"
    args = ["montecarlo", "default", "-n", "1", "--workers", "1", "--set", "grid.load_scale=10"]
    res = runner.invoke(app, [*args, "--set", "fleet.n_evs=5", "--set", "time.horizon_h=1", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "0 replication(s) ok, 1 failed" in res.output
    from experiments.store import Store

    df = Store(out).load(columns=["status", "error"])
    assert list(df["status"]) == ["failed"]
    assert df["error"].iloc[0].startswith("NetworkError: grid: the base case") and BASE_CASE_MSG in df["error"].iloc[0]


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "default", "--mechanisms", "uncontrolled"],
        ["pev-cases", "--method", "lindistflow"],
        ["qubo-dlmp", "--quick", "--bits", "4"],
        ["qubo-rtp"],
    ],
    ids=lambda a: a[0],
)
def test_every_writing_command_refuses_a_folder_with_foreign_files(tmp_path: Path, args: list[str]) -> None:
    """Issue 20 item 1 for the commands beside `run`: checked before any work, exit 2, the folder untouched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("my own work")
    res = runner.invoke(app, [*args, "--out", str(mine)])
    assert res.exit_code == 2 and "holds no evgrid result" in res.output, res.output
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"] and (mine / "thesis.tex").read_text() == "my own work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left either


def test_pev_cases_output_is_staged_and_replaceable_with_force(tmp_path: Path) -> None:
    out = tmp_path / "pev"
    args = ["pev-cases", "--method", "lindistflow", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["pev_cases.csv", "pev_cases.md", "provenance.json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--force" in res.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pev"]


def test_unwritable_out_is_refused_before_the_simulation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root every folder is writable, so the permission check is patched to say no: the refusal comes first
    (no simulation), one line, exit 2."""
    import sim.model
    import sim.result

    monkeypatch.setattr(sim.result.os, "access", lambda *a, **k: False)
    monkeypatch.setattr(sim.model.CoSimulation, "run", lambda self: pytest.fail("simulated before checking --out"))
    res = runner.invoke(app, ["run", "default", "--out", str(tmp_path / "new" / "r")])
    assert res.exit_code == 2 and "is not a writable folder" in res.output, res.output
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_a_file_system_that_refuses_even_root_is_found_up_front(tmp_path: Path) -> None:
    """sysfs refuses new folders even to root, for whom `os.access` says yes: `validate --out` and `run --out` find
    it before simulating (it used to end the whole run in a PermissionError traceback)."""
    for cmd in (["validate", "default"], ["run", "default", "--set", "time.horizon_h=1", "-q", "--no-plots"]):
        res = runner.invoke(app, [*cmd, "--out", "/sys/evgrid-out"])
        assert res.exit_code == 2 and "'/sys' is not a writable folder" in res.output, res.output
        assert "Traceback" not in res.output and not Path("/sys/evgrid-out").exists()
    res = runner.invoke(app, ["montecarlo", "default", "-n", "1", "-q", "--out", "/sys/evgrid-out"])
    assert res.exit_code == 2 and "cannot create the study folder '/sys/evgrid-out'" in res.output, res.output


def test_version_and_defaults_in_help() -> None:
    """`--version` exists; help texts keep their '[default: …]' (rich markup used to swallow them)."""
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("evgrid ")
    res = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "[default: results/<scenario>]" in res.output


def test_unreachable_scheduler_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """Issue 20: an unreachable --scheduler used to be a traceback after 30 s and a manifest forcing --resume."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "mc"
    for cmd in (["montecarlo", "default", "-n", "1", "--out", str(out)], ["validate", "default"]):
        res = runner.invoke(app, [*cmd, "--scheduler", f"tcp://127.0.0.1:{port}"])
        assert res.exit_code == 2 and "--scheduler: cannot reach" in res.output and "Traceback" not in res.output
    assert not out.exists()
    res = runner.invoke(app, ["validate", "default", "--scheduler", "nonsense"])
    assert res.exit_code == 2 and "--scheduler: got 'nonsense'" in res.output
    res = runner.invoke(app, ["validate", "default", "--out", str(tmp_path)])
    assert res.exit_code == 0  # an empty folder may be written
    (tmp_path / "x").write_text("mine")
    res = runner.invoke(app, ["validate", "default", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "holds no evgrid result" in res.output


def test_mechanisms_lists_each_and_its_parameters() -> None:
    """`evgrid mechanisms` (which the schema reference points to) lists every mechanism; with a name, its parameters
    with defaults, what it reads and whether it discharges; an unknown name is one line, exit 2."""
    from markets.base import available, get

    res = runner.invoke(app, ["mechanisms"])
    assert res.exit_code == 0 and [line.split()[0] for line in res.output.splitlines()] == available()
    assert "see the module docstring" not in res.output
    res = runner.invoke(app, ["mechanisms", "elasticity-dr"])
    assert res.exit_code == 0, res.output
    for key, (default, _) in get("elasticity-dr").parameters.items():  # type: ignore[attr-defined]
        assert f"  {key:<30} {default!r:<12} " in res.output
    assert "discharges V2G EVs: yes, with the defaults above" in res.output
    assert "discharges V2G EVs: no" in runner.invoke(app, ["mechanisms", "uncontrolled"]).output
    res = runner.invoke(app, ["mechanisms", "nope"])
    assert res.exit_code == 2 and res.output.startswith("error: market.mechanism: unknown 'nope'")
