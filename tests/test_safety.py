"""Inputs that cannot run code and outputs that cannot destroy user data.

* A network file named by a scenario is data: a crafted pandapower JSON (``_module`` naming a module of the
  attacker's) or a crafted pickle runs nothing, and the CLI says so in one line with exit 2. Each crafted file is
  first shown to *be* dangerous (pandapower's own reader / `pickle` does run it), so the tests cannot pass vacuously.
* ``run --out`` never replaces a folder it did not create; ``--force`` replaces only an earlier evgrid result;
  scenario names cannot climb out of ``results/``; results appear atomically with the user's umask.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli import app
from sim.result import OutputError, check_output_dir, staging_dir

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent

EVIL_MODULE = "import pathlib, os\npathlib.Path(os.environ['PWNED_PATH']).touch()\nclass x: pass\n"


class _Touch:
    """Unpickling this runs ``touch <path>`` — the classic crafted pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.path}",))


def _cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The real `evgrid` entry point in a fresh interpreter (imports and sys.path as a user gets them)."""
    return subprocess.run(
        [sys.executable, "-c", "from experiments.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _env(tmp_path: Path, pwned: Path) -> dict[str, str]:
    # tmp_path on PYTHONPATH so that the attacker's module *is* importable: only our scan stands in the way
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}", "PWNED_PATH": str(pwned)}


def _scenario(tmp_path: Path, net_file: Path) -> Path:
    """The default scenario with its grid read from ``net_file``."""
    import tomllib

    import tomli_w

    data = tomllib.loads((ROOT / "experiments" / "scenarios" / "default.toml").read_text())
    data.setdefault("grid", {}).update(case="file", file=str(net_file))
    sc = tmp_path / "net.toml"
    sc.write_text(tomli_w.dumps(data))
    return sc


def _one_error_line(stderr: str, needle: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr


@pytest.fixture(scope="module")
def case33_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pandapower as pp
    import pandapower.networks as pn

    path = tmp_path_factory.mktemp("net") / "case33.json"
    pp.to_json(pn.case33bw(), str(path))
    return path


def _crafted_json(case33_json: Path, tmp_path: Path) -> Path:
    (tmp_path / "evilmod.py").write_text(EVIL_MODULE)
    doc = json.loads(case33_json.read_text())
    doc["_object"]["extra"] = {"_module": "evilmod", "_class": "x", "_object": {}}
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps(doc))
    return evil


@pytest.mark.slow
def test_crafted_json_module_is_dangerous_in_pandapower_itself(case33_json: Path, tmp_path: Path) -> None:
    """Guard of the guard: pandapower's reader alone imports the attacker's module (so the test below bites)."""
    evil = _crafted_json(case33_json, tmp_path)
    pwned = tmp_path / "PWNED"
    code = f"import pandapower as pp\ntry:\n    pp.from_json({str(evil)!r})\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path, pwned), timeout=300)
    assert pwned.exists()


@pytest.mark.parametrize("command", ["run", "validate"])
def test_crafted_json_module_runs_nothing(case33_json: Path, tmp_path: Path, command: str) -> None:
    evil = _crafted_json(case33_json, tmp_path)
    pwned = tmp_path / "PWNED"
    out = tmp_path / "out"
    args = [command, str(_scenario(tmp_path, evil))] + (["--out", str(out), "-q"] if command == "run" else [])
    res = _cli(args, tmp_path, _env(tmp_path, pwned))
    assert res.returncode == 2, res.stdout + res.stderr
    _one_error_line(res.stderr, "_module='evilmod'")
    assert not pwned.exists() and not out.exists()


def test_crafted_json_hidden_in_a_nested_string_is_refused(case33_json: Path, tmp_path: Path) -> None:
    """An object tucked inside a DataFrame's JSON string (as pandapower nests them) is found too."""
    from grids.netfile import NetworkFileError, load_network_file

    doc = json.loads(case33_json.read_text())
    bus = doc["_object"]["bus"]
    frame = json.loads(bus["_object"])
    frame["data"][0][0] = {"_module": "subprocess", "_class": "Popen", "_object": "touch x"}
    bus["_object"] = json.dumps(frame)
    evil = tmp_path / "nested.json"
    evil.write_text(json.dumps(doc))
    with pytest.raises(NetworkFileError, match="subprocess"):
        load_network_file(evil)
    # a _module tag the walk cannot see (e.g. inside a string that is not a JSON document) is refused as well
    doc = json.loads(case33_json.read_text())
    doc["_object"]["name"] = 'x {"_module": "os"'
    sneaky = tmp_path / "sneaky.json"
    sneaky.write_text(json.dumps(doc))
    with pytest.raises(NetworkFileError, match="_module"):
        load_network_file(sneaky)


@pytest.mark.slow
def test_crafted_pickle_runs_nothing_without_opt_in(case33_json: Path, tmp_path: Path) -> None:
    pwned = tmp_path / "PWNED"
    evil = tmp_path / "net.p"
    evil.write_bytes(pickle.dumps(_Touch(pwned)))
    pickle.loads(evil.read_bytes())  # guard of the guard: this file does run code when unpickled
    assert pwned.exists()
    pwned.unlink()
    sc = _scenario(tmp_path, evil)
    for args in (["run", str(sc), "--out", str(tmp_path / "out"), "-q"], ["validate", str(sc)]):
        res = _cli(args, tmp_path, _env(tmp_path, pwned))
        assert res.returncode == 2, res.stdout + res.stderr
        _one_error_line(res.stderr, "--trust-pickle")
        assert not pwned.exists() and not (tmp_path / "out").exists()
    # the explicit opt-in does load it (with a warning): the flag is the only way in
    res = _cli(["validate", str(sc), "--trust-pickle"], tmp_path, _env(tmp_path, pwned))
    assert pwned.exists() and "warning" in res.stderr


def test_pandapower_json_and_matpower_files_load_and_validate(case33_json: Path, tmp_path: Path) -> None:
    from pandapower.converter.matpower.to_mpc import to_mpc

    from grids.netfile import load_network_file
    from grids.network import build_network

    nw = build_network("file", file=case33_json)
    assert len(nw.net.bus) == 33 and nw.base_p_kw.sum() == pytest.approx(3715.0)
    mat = tmp_path / "case33.mat"
    to_mpc(load_network_file(case33_json), str(mat), init="flat")
    assert len(build_network("file", file=mat).net.bus) == 33
    res = runner.invoke(app, ["validate", str(_scenario(tmp_path, case33_json))])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    "content, needle",
    [
        ("{not json", "not valid JSON"),
        ('{"a": 1}', "not a pandapower network"),
        (b"\xff\xfe{}", "byte offset 0"),
    ],
)
def test_broken_network_file_is_one_line(tmp_path: Path, content: str | bytes, needle: str) -> None:
    net = tmp_path / "n.json"
    net.write_bytes(content if isinstance(content, bytes) else content.encode())
    res = runner.invoke(app, ["validate", str(_scenario(tmp_path, net))])
    assert res.exit_code == 2 and needle in res.output, res.output
    missing = runner.invoke(app, ["validate", str(_scenario(tmp_path, tmp_path / "nope.json"))])
    assert missing.exit_code == 2 and "not found" in missing.output


# ------------------------------------------------------------------------------------------------- output folders
def _snapshot(folder: Path) -> dict[str, tuple[int, float, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mode, p.stat().st_mtime, p.read_bytes() if p.is_file() else b"")
        for p in sorted(folder.rglob("*"))
    }


SHORT = ["--set", "fleet.n_evs=20", "--set", "time.horizon_h=2", "--no-plots", "-q"]


def test_run_out_on_a_folder_with_foreign_files_refuses_and_touches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("1,2\n")
    before = _snapshot(out)
    siblings = sorted(p.name for p in tmp_path.iterdir())
    for extra in ([], ["--force"]):
        res = runner.invoke(app, ["run", "default", "--out", str(out), *SHORT, *extra])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and "not empty and holds no evgrid result" in lines[0]
        assert _snapshot(out) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == siblings


def test_force_replaces_a_previous_result_only(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert runner.invoke(app, ["run", "default", "--out", str(out), *SHORT]).exit_code == 0
    first = json.loads((out / "provenance.json").read_text())
    res = runner.invoke(app, ["run", "default", "--out", str(out), *SHORT, "--seed", "5"])
    assert res.exit_code == 2 and "--force" in res.output
    assert json.loads((out / "provenance.json").read_text()) == first
    res = runner.invoke(app, ["run", "default", "--out", str(out), *SHORT, "--seed", "5", "--force"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "provenance.json").read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging or old folder left beside it
    # an empty folder is fine without --force
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(app, ["run", "default", "--out", str(empty), *SHORT]).exit_code == 0
    assert (empty / "kpis.json").is_file()


def test_out_never_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for target in (".", str(work), "..", str(Path.home())):
        res = runner.invoke(app, ["run", "default", "--out", target, *SHORT, "--force"])
        assert res.exit_code == 2 and "working directory" in res.output, (target, res.output)
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("name", ["../../x", "/abs/dir", ".", "..", ".hidden", "a\\b", "nul\x00here", ""])
def test_scenario_names_are_names(tmp_path: Path, name: str) -> None:
    sc = tmp_path / "s.toml"
    sc.write_text((ROOT / "experiments" / "scenarios" / "default.toml").read_text())
    res = runner.invoke(app, ["run", str(sc), "--set", f"name={json.dumps(name)}", "-q"])
    assert res.exit_code == 2 and "name:" in res.output, res.output
    assert not (ROOT / "results" / "x").exists() and not Path("/abs").exists()


def test_write_is_atomic_and_follows_the_umask(tmp_path: Path) -> None:
    from sim.model import CoSimulation
    from sim.scenario import load_scenario

    result = CoSimulation(load_scenario("default", ["fleet.n_evs=10", "time.horizon_h=1"])).run()

    def broken_plots(_res: object, _folder: Path) -> None:
        raise RuntimeError("plotting failed")

    out = tmp_path / "r"
    with pytest.raises(RuntimeError):
        result.write(out, plots=broken_plots)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no staging folder

    # a staging folder of a killed run (its process is gone) is cleared by the next write
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".r.evgrid-tmp-{int(dead.stdout)}-abc"
    (stale / "tables").mkdir(parents=True)
    old = os.umask(0o027)
    try:
        result.write(out)
    finally:
        os.umask(old)
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "kpis.json").stat().st_mode) == 0o640
    # a live process's staging folder is left alone
    live = tmp_path / f".r.evgrid-tmp-{os.getpid()}-xyz"
    live.mkdir()
    result.write(out, replace=True)
    assert live.exists()


def test_check_output_dir_refuses_files_and_symlinks(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_dir(f)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(OutputError, match="symbolic link"):
        check_output_dir(link)
    assert staging_dir(tmp_path / "new").parent == tmp_path


def test_sigterm_leaves_no_staging_folder(tmp_path: Path) -> None:
    """A run stopped with SIGTERM mid-way (the paper runner stages four runs) leaves nothing beside --out."""
    import signal
    import time

    out = tmp_path / "paper"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from experiments.cli import main; main()",
            "run",
            "dr-tou-33bus",
            "--out",
            str(out),
            "--no-plots",
            "-q",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(tmp_path.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None and any(tmp_path.iterdir()), "the run never staged anything"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "override, field",
    [
        ("prices.table_usd_per_mwh=[nan, 80.0]", "prices.table_usd_per_mwh.0"),
        ("grid.load_scale=inf", "grid.load_scale"),
        ("fleet.groups.0.share=nan", "fleet.groups.0.share"),
        ("market.params.elasticity-dr.dr_max=nan", "market.params.elasticity-dr.dr_max"),
        ("paper.peak=-inf", "paper.peak"),
    ],
)
def test_nan_and_inf_are_rejected_with_the_field_named(tmp_path: Path, override: str, field: str) -> None:
    for cmd in (["validate", "default"], ["run", "default", "--out", str(tmp_path / "o"), "-q"]):
        res = runner.invoke(app, [*cmd, "--set", override])
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {field}: ") and "finite" in lines[0], res.output
    assert not (tmp_path / "o").exists()


def test_invalid_utf8_scenario_is_one_line_with_the_byte_offset(tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_bytes(b'name = "x"\ndescription = "caf\xe9"\n')
    res = runner.invoke(app, ["validate", str(sc)])
    assert res.exit_code == 2
    assert res.output.strip() == "error: s.toml: not UTF-8 text (invalid byte 0xe9 at byte offset 29)"


def test_arrows_point_one_way() -> None:
    """Nothing below experiments imports it, and no experiments module imports the CLI (#19)."""
    import ast

    def imports(path: Path) -> set[str]:
        mods: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods.add(node.module)
        return mods

    for layer in ("sim", "agents", "markets", "grids"):
        for f in (ROOT / layer).rglob("*.py"):
            up = {m for m in imports(f) if m.split(".")[0] == "experiments"}
            assert not up, f"{f.relative_to(ROOT)} imports {up}"
    for f in (ROOT / "experiments").rglob("*.py"):
        if f.name not in ("cli.py", "cli_studies.py"):  # the CLI's own two modules
            assert "experiments.cli" not in imports(f), f"{f.relative_to(ROOT)} imports the CLI"
    assert "experiments.console" in imports(ROOT / "experiments" / "papers.py")
