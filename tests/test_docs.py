"""Every command in the README and in docs/ is executed here, so the documentation cannot drift from the code.

What counts as a command:

* each line of a fenced ``sh`` block (``\\`` continues a line; ``#`` starts a comment) — run as written, in order,
  in one fresh folder per document, and expected to exit 0. ``make …`` and ``source …`` lines are the set-up that
  CI itself runs (``.ci/run`` → ``make test``), so they are not re-run here;
* each ``$ command`` of a fenced ``console`` block — run, and its output must equal the lines that follow it; an
  output starting with ``error:`` means exit code 2 (the CLI's bad-input contract);
* each fenced ``python`` block — run as a script.

Fenced ``text`` blocks are illustrations (e.g. a command that needs a Dask cluster) and are not run.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\s*\n(.*?)^```\s*$", re.S | re.M)
TIMEOUT_S = 1200


def blocks(path: Path) -> list[tuple[str, str]]:
    """The fenced blocks of a Markdown file as (language, body)."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def sh_commands(body: str) -> list[list[str]]:
    """The commands of an ``sh`` block as argument lists (continuations joined, comments dropped)."""
    out, line = [], ""
    for raw in body.splitlines():
        line += raw.rstrip()
        if line.endswith("\\"):
            line = line[:-1] + " "
            continue
        argv = shlex.split(line, comments=True)
        line = ""
        if argv and argv[0] not in ("make", "source"):
            out.append(argv)
    return out


def _argv(argv: list[str]) -> list[str]:
    """Resolve the executable in the test's own environment, and scripts relative to the repository."""
    if argv[0] == "evgrid":
        return [str(BIN / "evgrid"), *argv[1:]]
    if argv[0] in ("python", "python3"):
        script = [str(ROOT / a) if a.endswith(".py") and (ROOT / a).exists() else a for a in argv[1:]]
        return [sys.executable, *script]
    raise AssertionError(f"documented command with an unknown executable: {shlex.join(argv)}")


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _argv(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={
            "PYTHONPATH": str(ROOT),
            "PATH": f"{BIN}:/usr/bin:/bin",
            "HOME": str(cwd),
            "COLUMNS": "120",
            "MPLBACKEND": "Agg",
        },
    )


def _docs_with_commands() -> list[Path]:
    return [p for p in DOCS if any(lang in ("sh", "console", "python") for lang, _ in blocks(p))]


def test_the_collector_sees_the_readme_commands() -> None:
    """Guards the harness itself: a README without commands found would make every test below vacuous."""
    cmds = [c for lang, body in blocks(ROOT / "README.md") if lang == "sh" for c in sh_commands(body)]
    assert [c[:2] for c in cmds][:3] == [["evgrid", "scenarios"], ["evgrid", "mechanisms"], ["evgrid", "run"]]
    assert sh_commands("evgrid run a \\\n  --set x=1  # note\nmake test\n") == [["evgrid", "run", "a", "--set", "x=1"]]


@pytest.mark.slow
@pytest.mark.parametrize("doc", _docs_with_commands(), ids=lambda p: p.name)
def test_every_documented_command_runs(doc: Path, tmp_path: Path) -> None:
    for lang, body in blocks(doc):
        if lang == "sh":
            for argv in sh_commands(body):
                r = _run(argv, tmp_path)
                assert r.returncode == 0, f"{doc.name}: `{shlex.join(argv)}` exited {r.returncode}:\n{r.stderr[-2000:]}"
        elif lang == "console":
            lines = body.splitlines()
            for i, line in enumerate(lines):
                if not line.startswith("$ "):
                    continue
                expected = []
                for nxt in lines[i + 1 :]:
                    if nxt.startswith("$ "):
                        break
                    expected.append(nxt)
                r = _run(shlex.split(line[2:]), tmp_path)
                got = (r.stdout + r.stderr).strip().splitlines()
                assert got == expected, f"{doc.name}: `{line[2:]}` printed {got}, documented {expected}"
                if expected and expected[0].startswith("error:"):
                    assert r.returncode == 2
        elif lang == "python":
            script = tmp_path / "snippet.py"
            script.write_text(body, encoding="utf-8")
            r = _run(["python", str(script)], tmp_path)
            assert r.returncode == 0, f"{doc.name}: python block failed:\n{r.stderr[-2000:]}"
