"""`evgrid papers`: every seed paper's headline numbers beside ours, regenerated from the current code.

Each paper's reproduction runs in full — the same code as `evgrid qubo-dlmp`, `pev-cases`, `run dr-tou-33bus`
(merit-order and AC-OPF dispatch), `study 002-dr-max` / `002-participation`, `qubo-rtp`, `study 003-fdi` and
`run eho-bilevel-10stations` — and writes its own tables into a sub-folder of the output; the headline numbers of
all five papers are collected into one table (``papers.csv``, ``papers.md``, printed). The README's fidelity table
is that block (``python -m experiments.fidelity --readme results/papers`` splices it in; ``--check`` compares),
and ``tests/test_fidelity.py`` runs the command and pins every number to the README's within its 95 % CI
(single seeded runs: within one unit of the last printed digit).

About 6 min of CPU on this machine, most of it the two AC-OPF days, Table 2 of `000_…` and the 003 FDI study.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.doc_blocks import markers, read_block, splice

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = "papers"
PAPERS = ("000", "001", "002", "003", "004")
TITLES = {
    "000": "Suri et al., QUBO DLMP scheduling",
    "001": "the review's PEV cases (DLMP)",
    "002": "Erdanayev et al., TOU demand response",
    "003": "QA real-time pricing and FDI",
    "004": "Priolkar & Kunkolienkar, EHO bilevel",
}


@dataclass(frozen=True)
class Headline:
    """One headline number: the paper's (as the paper states it) and ours.

    ``ci``: half-width of ours' 95 % confidence interval over replications; 0 for one seeded run (deterministic:
    pinned to ``digits`` decimals).
    """

    paper: str
    metric: str
    paper_value: str
    ours: float
    ci: float = 0.0
    digits: int = 1
    source: str = ""

    def ours_text(self) -> str:
        """Ours as printed: signed for a change or difference, the CI's half-width after ±."""
        if not np.isfinite(self.ours):
            return "n/a"
        signed = any(w in self.metric for w in ("change", "deviation", " − "))
        text = f"{self.ours:{'+' if signed else ''}.{self.digits}f}".replace("-", "−")
        return f"{text} ± {self.ci:.{self.digits}f}" if self.ci > 0 else text

    def paper_text(self) -> str:
        """The paper's value as printed (typographic minus)."""
        return re.sub(r"-(?=\d)", "−", self.paper_value)


Part = Callable[[Path, int], list[Headline]]  # (folder for the paper's own tables, study workers) → rows


def _pct(new: float, old: float) -> float:
    return 100.0 * (new / old - 1.0)


def _ci(text: str) -> tuple[float, float]:
    """(mean, half-width) from a report cell "m ± h" (or "m")."""
    m, _, h = str(text).replace("−", "-").partition("±")
    return float(m), float(h) if h.strip() else 0.0


# ---------------------------------------------------------------------------------------------------- the papers
def _paper_000(out: Path, _workers: int) -> list[Headline]:
    from experiments.dlmp_paper import run_contiguity, run_table2, write_table2
    from sim.scenario import load_scenario

    rows = run_table2(bits=(4, 8))
    write_table2(rows, out)
    s1, s2 = (next(r for r in rows if r["scenario"] == f"qubo-dlmp-33bus-{s}" and r["bits"] == 8) for s in ("s1", "s2"))
    p1, p2 = dict(load_scenario("qubo-dlmp-33bus-s1").paper), dict(load_scenario("qubo-dlmp-33bus-s2").paper)
    cont = run_contiguity(bits=(8,), weights=(1.0,), threshold_weights=(), noise_seeds=0)
    pd.DataFrame(cont).to_csv(out / "contiguity.csv", index=False)
    c = next(r for r in cont if r["allocation"] == "contiguous")
    src = "evgrid qubo-dlmp"
    return [
        Headline(
            "000",
            "total system cost, S1 [$] (Table 2, 8 bits)",
            f"{p1['total_cost_usd']:.2f}",
            s1["total_cost_usd"],
            digits=0,
            source=src,
        ),
        Headline(
            "000",
            "total system cost, S2 [$]",
            f"{p2['total_cost_usd']:.2f}",
            s2["total_cost_usd"],
            digits=0,
            source=src,
        ),
        Headline(
            "000",
            "total cost change, S2 vs S1 [%]",
            f"{_pct(p2['total_cost_usd'], p1['total_cost_usd']):.1f}",
            _pct(s2["total_cost_usd"], s1["total_cost_usd"]),
            source=src,
        ),
        Headline("000", "lowest voltage, S2 [pu]", f"{p2['vmin_pu']:.3f}", s2["vmin_pu"], digits=3, source=src),
        Headline(
            "000", "charging interruptions, S2", f"{p2['interruptions']}", s2["interruptions"], digits=0, source=src
        ),
        Headline(
            "000",
            "charging interruptions, S2, contiguous split, switching 1 $/EV",
            f"{p2['interruptions']}",
            c["interruptions"],
            digits=0,
            source="python -m experiments.dlmp_paper contiguity",
        ),
        Headline(
            "000",
            "its total cost change vs S2 as shipped [%]",
            "—",
            c["total_cost_change_pct"],
            source="python -m experiments.dlmp_paper contiguity",
        ),
    ]


def _paper_001(out: Path, _workers: int) -> list[Headline]:
    from experiments.pev_cases import format_pev_cases, run_pev_cases

    df = run_pev_cases()
    df.to_csv(out / "pev_cases.csv", index=False)
    (out / "pev_cases.md").write_text(format_pev_cases(df, [1, 6, 12, 18, 25, 33]) + "\n")
    at = df[df["bus"] == 18].set_index("case")
    lam_p, lam_q = at["lam_p_usd_per_mwh"], at["lam_q_usd_per_mvarh"]
    src = "evgrid pev-cases"
    return [
        Headline("001", "DLMP at bus 18, EVs as loads − no EVs [$/MWh]", "higher", lam_p[2] - lam_p[1], 0, 2, src),
        Headline("001", "DLMP at bus 18, V2G (P and Q) − no EVs [$/MWh]", "lower", lam_p[3] - lam_p[1], 0, 2, src),
        Headline(
            "001",
            "reactive DLMP at bus 18, EVs supplying Q − EVs as loads [$/MVArh]",
            "lower",
            lam_q[4] - lam_q[2],
            0,
            2,
            src,
        ),
    ]


# (label, the comparison table's metric, the scenario's [paper] key) of the dr-tou rows, and their dispatch modes
_DR_TOU = (
    (
        "cost change, coordinated vs uncontrolled EVs [%]",
        "daily cost change, coordinated vs uncontrolled EVs [%]",
        "cost_change_coordinated_vs_uncontrolled_percent",
        ("merit",),
    ),
    (
        "loss change, uncontrolled EVs vs none [%]",
        "loss change, uncontrolled EVs vs no EVs [%]",
        "loss_change_uncontrolled_vs_no_ev_percent",
        ("merit", "opf"),
    ),
    (
        "loss change, coordinated EVs vs none [%]",
        "loss change, coordinated EVs vs no EVs [%]",
        "loss_change_coordinated_vs_no_ev_percent",
        ("merit", "opf"),
    ),
    ("loss change from DR, no EVs [%] (Table 5)", "", "", ("merit", "opf")),
    (
        "VDI change, coordinated vs uncontrolled [%]",
        "VDI change, coordinated vs uncontrolled [%]",
        "vdi_change_coordinated_vs_uncontrolled_percent",
        ("merit",),
    ),
)
# (label, study, point, its paper-table metric, the paper's value) of the 002 sensitivity rows
_TABLES_7_8 = (
    ("peak reduction vs no DR, DR_max 15 % [%] (Table 7)", "002-dr-max", 0.15, "peak load reduction vs no DR [%]",
     "8.9"),
    ("loss change vs no DR, DR_max 15 % [%] (Table 7)", "002-dr-max", 0.15, "change in losses vs no DR [%]", "−10.1"),
    ("VDI change, 60 % vs 0 % DR participation [%] (Table 8)", "002-participation", 0.6,
     "VDI change vs participation 0 [%]", "−11.3"),
)  # fmt: skip


def _paper_002(out: Path, workers: int) -> list[Headline]:
    from experiments.papers import run_paper
    from sim.scenario import load_scenario

    tables = {}
    for mode in ("merit", "opf"):
        sc = load_scenario("dr-tou-33bus", [f"grid.dispatch='{mode}'"])
        tables[mode] = run_paper(sc, out / f"dr-tou-{mode}", plots=False, quiet=True).set_index("metric")["ours"]
    paper = dict(load_scenario("dr-tou-33bus").paper)
    src = "evgrid run dr-tou-33bus [--set grid.dispatch=opf]"
    rows = []
    for label, metric, key, modes in _DR_TOU:
        for mode in modes:
            t = tables[mode]
            if metric:
                ours, theirs = float(t[metric]), float(paper[key])
            else:  # the loss change from DR without EVs, from Table 5's two loss figures
                ours = _pct(float(t["energy losses, no EVs, with DR [kWh] (Table 5)"]),
                            float(t["energy losses, no EVs, no DR [kWh] (Table 5)"]))  # fmt: skip
                theirs = _pct(paper["loss_no_ev_with_dr_kwh"], paper["loss_no_ev_no_dr_kwh"])
            shown = "AC OPF dispatch" if mode == "opf" else "merit order"
            rows.append(Headline("002", f"{label} ({shown})", f"{theirs:+.1f}", ours, source=src))
    studies = {name: _study(name, out, workers) for name in ("002-dr-max", "002-participation")}
    for label, name, point, metric, stated in _TABLES_7_8:
        t = studies[name]
        cell = t.loc[(t.iloc[:, 0] == point) & (t["metric"] == metric), "ours"].iloc[0]
        rows.append(Headline("002", label, stated, *_ci(cell), source=f"evgrid study {name}"))
    return rows


def _study(name: str, out: Path, workers: int) -> pd.DataFrame:
    """Run a ready study into ``out/<name>`` and return its paper table."""
    from experiments.engine import load_study_file, run_study
    from experiments.report import report
    from experiments.store import Store

    study, _ = load_study_file(name)
    run_study(study, Store(out / name), workers=workers, notice=lambda _msg: None)
    return report(out / name, plots=False, print_tables=False)["paper"]


def _paper_003(out: Path, workers: int) -> list[Headline]:
    from experiments.attack_study import PAPER_003 as f
    from experiments.rtp_paper import run_study, write
    from sim.scenario import load_scenario

    sc = load_scenario("qubo-rtp-118bus")
    table, o, per_run = run_study(sc)
    write(table, o, per_run, out / "qubo-rtp", sc.paper.get("source", ""))
    p = dict(sc.paper)
    fdi = _study("003-fdi", out, workers).set_index(["case", "metric"])["ours"]
    tariff = _ci(fdi[("inflation 15 %", "tariff deviation, 17–21 h [%]")])
    elastic = _ci(fdi[("elasticity -10 %", "peak reduction vs uncontrolled [%]")])
    clean = _ci(fdi[("clean", "peak reduction vs uncontrolled [%]")])

    rtp, fdi_src = "evgrid qubo-rtp", "evgrid study 003-fdi"
    gap_paper, users = (
        f"< {p['cost_gap_percent']:.0f}",
        (p["user_cost_change_percent_low"], p["user_cost_change_percent_high"]),
    )
    return [
        Headline("003", "peak reduction, system EV load [%] (100 stations / 2 000 EVs)",
                 f"{p['peak_reduction_percent']:.1f}", o["peak_reduction_system_percent"], source=rtp),
        Headline("003", "renewable utilisation change [%]", f"{p['renewable_utilisation_gain_percent']:+.1f}",
                 o["renewable_utilisation_gain_percent"], source=rtp),
        Headline("003", "user cost change [%]", f"{users[0]:.0f} … {users[1]:.0f}", o["user_cost_change_percent"],
                 source=rtp),
        Headline("003", "cost gap to the MILP optimum, worst interval [%]", gap_paper, o["gap_percent_max_interval"],
                 digits=2, source=rtp),
        Headline("003", "FDI: peak reduction, clean [%] (study 003-fdi, n = 20)",
                 f"{f['peak_reduction_clean_pct']:.1f}", *clean, source=fdi_src),
        Headline("003", "FDI: evening tariff change, 15 % of stations inflating [%]",
                 f"{f['tariff_deviation_pct']:+.1f}", *tariff, digits=2, source=fdi_src),
        Headline("003", "FDI: peak reduction with elasticity −10 % [%]", f"{f['peak_reduction_elasticity_pct']:.1f}",
                 *elastic, source=fdi_src),
    ]  # fmt: skip


def _paper_004(out: Path, _workers: int) -> list[Headline]:
    from experiments.eho_paper.problem import problem_from_scenario
    from experiments.eho_paper.variants import SEARCHES, compare_bilevel
    from experiments.papers import run_paper
    from sim.scenario import load_scenario

    sc = load_scenario("eho-bilevel-10stations")
    t = run_paper(sc, out / "eho-bilevel", plots=False, quiet=True).set_index("metric")
    ours, paper = t["ours"], t["paper"]
    src = "evgrid run eho-bilevel-10stations"
    rows = [
        Headline(
            "004", f"{m} (co-simulation, users redirected)", f"{paper[m]:.{d}f}", float(ours[m]), digits=d, source=src
        )
        for m, d in (("peak demand, optimised [kW]", 0), ("load factor, optimised", 3), ("mean wait, optimised [h]", 2))
    ]
    choice, _ = problem_from_scenario(sc, reach=2)
    searches = ("EHO, paper (β·centre, β 0.3)", "EHO, variant (best, β 1)", "SciPy DE")
    runs = compare_bilevel({"choice": choice}, [sc.seed + i for i in range(5)])
    runs = runs[runs["search"].isin(searches)]
    runs.to_csv(out / "searches.csv", index=False)
    for label in searches:
        j = float(np.median(runs.loc[runs["search"] == label, "value"]))
        rows.append(
            Headline(
                "004",
                f"bilevel J, median of 5 seeds, {label}",
                "—",
                j,
                digits=3,
                source="python -m experiments.eho_paper.variants",
            )
        )
    assert set(SEARCHES) >= set(searches)
    return rows


PARTS: dict[str, Part] = {"000": _paper_000, "001": _paper_001, "002": _paper_002, "003": _paper_003, "004": _paper_004}


def run_papers(
    out: Path, only: tuple[str, ...] = PAPERS, *, workers: int = 1, say: Callable[[str], None] | None = None
) -> pd.DataFrame:
    """Run each paper of ``only`` into ``out/<paper>/`` (its own tables) and return the headline rows (one per
    `Headline`, columns as its fields). What the reproductions print is held back; ``say`` hears one line per
    paper with its wall time."""
    rows: list[Headline] = []
    for key in only:
        folder = out / key
        folder.mkdir(parents=True, exist_ok=True)
        w = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            rows += PARTS[key](folder, workers)
        if say is not None:
            say(f"{key} ({TITLES[key]}): {time.perf_counter() - w:.0f} s")
    return pd.DataFrame([asdict(r) for r in rows])


def _headlines(df: pd.DataFrame) -> list[Headline]:
    """The rows of a headline table (as `run_papers` returns it, or read back from ``papers.csv``)."""
    return [
        Headline(str(r["paper"]), str(r["metric"]), str(r["paper_value"]), float(r["ours"]), float(r["ci"]),
                 int(r["digits"]), str(r["source"]))
        for r in df.to_dict("records")
    ]  # fmt: skip


def render(df: pd.DataFrame) -> str:
    """The README block: one row per headline number, paper beside ours, markers included."""
    start, end = markers(BLOCK)
    lines = [start, "", "| paper | headline | paper's | ours |", "|---|---|---:|---:|"]
    lines += [f"| `{h.paper}` | {h.metric} | {h.paper_text()} | {h.ours_text()} |" for h in _headlines(df)]
    return "\n".join([*lines, "", end])


def documented(path: Path = README) -> dict[tuple[str, str], tuple[float, float]]:
    """(paper, metric) → (ours, CI half-width) as the block of ``path`` states them."""
    rows = {}
    for line in read_block(path, BLOCK).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[(cells[0].strip("`"), cells[1])] = _ci(cells[3]) if cells[3] != "n/a" else (np.nan, 0.0)
    return rows


def drift(df: pd.DataFrame, path: Path = README) -> list[str]:
    """Where the numbers of ``df`` leave the documented ones: beyond the documented 95 % CI half-width, or, for a
    single seeded run, by more than one unit of its last printed digit; rows missing on either side."""
    doc = documented(path)
    said, seen = [], set()
    for h in _headlines(df):
        seen.add((h.paper, h.metric))
        if (h.paper, h.metric) not in doc:
            said.append(f"{h.paper} '{h.metric}': not in {path.name}")
            continue
        value, half = doc[(h.paper, h.metric)]
        tol = half if half > 0 else 1.01 * 10.0**-h.digits
        if not (abs(h.ours - value) <= tol or (np.isnan(h.ours) and np.isnan(value))):
            said.append(f"{h.paper} '{h.metric}': {h.ours_text()} now, {path.name} says {value:g} (± {tol:g})")
    said += [f"{p} '{m}': in {path.name}, no longer computed" for p, m in doc if (p, m) not in seen]
    return said


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.fidelity --readme DIR`` splices DIR/papers.csv (from `evgrid papers --out DIR`)
    into the README; ``--check DIR`` exits 1 naming each number that drifted."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--readme", type=Path, help="write the README block from DIR/papers.csv")
    mode.add_argument("--check", type=Path, help="exit 1 if DIR/papers.csv leaves the README's numbers")
    args = ap.parse_args(argv)
    df = pd.read_csv((args.readme or args.check) / "papers.csv", dtype={"paper": str, "paper_value": str})
    if args.check:
        said = drift(df)
        print("\n".join(said) or "README numbers match", file=sys.stderr if said else sys.stdout)
        return 1 if said else 0
    _, new = splice(README, BLOCK, render(df))
    README.write_text(new, encoding="utf-8")
    print(f"wrote the papers block of {README}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
