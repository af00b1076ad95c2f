"""`evgrid papers` (issue 17, part 4): one command regenerates every paper's headline numbers, and the README's
fidelity table is pinned to its output — within the documented 95 % CI for Monte Carlo numbers, within one unit
of the last printed digit for single seeded runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments.fidelity import PAPERS, README, Headline, documented, drift, render

EVGRID = Path(sys.executable).parent / "evgrid"


def _df(rows: list[Headline]) -> pd.DataFrame:
    from dataclasses import asdict

    return pd.DataFrame([asdict(r) for r in rows])


def _readme(tmp_path: Path, rows: list[Headline]) -> Path:
    path = tmp_path / "README.md"
    path.write_text("# x\n\n" + render(_df(rows)) + "\n\nmore\n", encoding="utf-8")
    return path


ROWS = [
    Headline("002", "loss change, uncontrolled EVs vs none [%] (merit)", "+19.4", -2.572, digits=1),
    Headline("003", "FDI: evening tariff change, 15 % of stations inflating [%]", "+12.6", 1.02, 0.14, 2),
    Headline("000", "charging interruptions, S2", "2", 1000, digits=0),
]


def test_documented_reads_back_what_render_writes(tmp_path: Path) -> None:
    doc = documented(_readme(tmp_path, ROWS))
    assert doc[("002", ROWS[0].metric)] == (pytest.approx(-2.6), 0.0)
    assert doc[("003", ROWS[1].metric)] == (pytest.approx(1.02), pytest.approx(0.14))
    assert drift(_df(ROWS), _readme(tmp_path, ROWS)) == []


def test_drift_names_numbers_outside_their_ci_or_digits(tmp_path: Path) -> None:
    path = _readme(tmp_path, ROWS)
    moved = [
        Headline(ROWS[0].paper, ROWS[0].metric, "+19.4", -2.44, digits=1),  # 0.16 > one unit of 0.1
        Headline(ROWS[1].paper, ROWS[1].metric, "+12.6", 1.15, 0.14, 2),  # inside the documented ± 0.14
        Headline(ROWS[2].paper, ROWS[2].metric, "2", 1001, digits=0),  # one unit: rounding, allowed
        Headline("004", "a new number", "—", 1.0),
    ]
    said = drift(_df(moved), path)
    assert len(said) == 2, said
    assert "loss change" in said[0] and "a new number" in said[1]
    assert drift(_df(moved[:2]), path)[-1].startswith("000 'charging interruptions, S2': in README.md, no longer")


def test_bad_only_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run([EVGRID, "papers", "--only", "000,999", "--out", tmp_path / "p"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--only" in r.stderr, r.stderr
    assert not (tmp_path / "p").exists()


def test_readme_has_every_paper() -> None:
    assert {p for p, _ in documented(README)} == set(PAPERS)


@pytest.mark.slow
def test_papers_regenerates_the_readme_numbers(tmp_path: Path) -> None:
    """The whole command (about 6 min of CPU): every headline number of the README within its CI or digits."""
    out = tmp_path / "papers"
    r = subprocess.run([EVGRID, "papers", "--out", out, "--workers", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    df = pd.read_csv(out / "papers.csv", dtype={"paper": str, "paper_value": str})
    assert set(df["paper"]) == set(PAPERS)
    assert drift(df) == []
    for sub in ("000/table2.md", "001/pev_cases.md", "002/dr-tou-opf/paper_comparison.md", "003/003-fdi/summary.md"):
        assert (out / sub).is_file(), sub
