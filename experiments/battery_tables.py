"""The battery and V2G tables of docs/v2g.md (and the README's one-line summary), computed from the current code.

    python -m experiments.battery_tables           # (re)write the tables in docs/v2g.md; print the README line
    python -m experiments.battery_tables --check   # exit 1 if docs/v2g.md or the README line is stale

Runs the default study (seed 2026, one day, 1000 EVs): the ideal vs the two-stage battery under `uncontrolled` and
`elasticity-dr`, and 30 % V2G-capable EVs (both groups) vs none under `milp` (objective ``peak``) and
`elasticity-dr`. tests/test_v2g.py runs ``--check``, so the documented figures cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from experiments.doc_blocks import markers, splice
from sim.model import CoSimulation
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "v2g.md"
README = ROOT / "README.md"
START, END = markers("battery-tables")
MILP_PEAK = ["market.mechanism=milp", "market.params.milp.objective='peak'"]


def _both(key: str, value: str) -> list[str]:
    return [f"fleet.groups.0.{key}={value}", f"fleet.groups.1.{key}={value}"]


def _run(overrides: list[str]) -> dict[str, float]:
    m = CoSimulation(load_scenario("default", overrides))
    k = dict(m.run().kpis)
    k["discharged_kwh"] = float(m.fleet.discharged_kwh.sum())
    k["wear_usd"] = float(m.fleet.degradation_usd.sum())
    k["n_v2g"] = float(m.fleet.v2g.sum())
    return k


def _n(x: float, nd: int = 0) -> str:
    return f"{x:,.{nd}f}".replace(",", " ")


def battery_table(run: Callable[[list[str]], dict[str, float]] = _run) -> list[str]:
    rows = [
        "| mechanism | battery | EV peak [kW] | peak load [kW] | fulfilment | mean / max wait [min] | EV energy [kWh] |"
    ]
    rows.append("|---|---|---:|---:|---:|---:|---:|")
    for mech in ("uncontrolled", "elasticity-dr"):
        for model in ("ideal", "two-stage"):
            k = run([f"market.mechanism={mech}", *_both("battery.model", f"'{model}'")])
            rows.append(
                f"| `{mech}` | {model} | {_n(k['ev_peak_kw'])} | {_n(k['peak_load_kw'])} | "
                f"{k['energy_fulfilment']:.3f} | {k['mean_wait_min']:.1f} / {k['max_wait_min']:.0f} | "
                f"{_n(k['ev_energy_kwh'])} |"
            )
    return rows


def v2g_table(run: Callable[[list[str]], dict[str, float]] = _run) -> tuple[list[str], str]:
    rows = [
        "| mechanism | V2G-capable EVs | peak load [kW] | EV peak [kW] | discharged [kWh] | battery wear [$] | "
        "fulfilment |"
    ]
    rows.append("|---|---:|---:|---:|---:|---:|---:|")
    summary = []
    for label, mech in (
        ("`milp` (objective `peak`)", MILP_PEAK),
        ("`elasticity-dr`", ["market.mechanism=elasticity-dr"]),
    ):
        ks = [run([*mech, *_both("v2g_share", share)]) for share in ("0.0", "0.3")]
        for k in ks:
            rows.append(
                f"| {label} | {_n(k['n_v2g'])} | {_n(k['peak_load_kw'])} | {_n(k['ev_peak_kw'])} | "
                f"{_n(k['discharged_kwh'])} | {_n(k['wear_usd'])} | {k['energy_fulfilment']:.3f} |"
            )
        cut = ks[0]["peak_load_kw"] - ks[1]["peak_load_kw"]
        summary.append(f"{label.split(' ')[0]} {_n(cut)} kW ({_n(ks[1]['wear_usd'])} $ of battery wear)")
    line = (
        "On the default study, 30 % V2G-capable EVs lower the peak load beyond charge-only scheduling by "
        + " and ".join(summary)
        + "."
    )
    return rows, line


def render() -> tuple[str, str]:
    """(the block between the markers of docs/v2g.md, the README's summary line)."""
    bt = battery_table()
    vt, line = v2g_table()
    block = "\n".join([START, "", *bt, "", *vt, "", END])
    return block, line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/v2g.md or the README line is stale")
    args = ap.parse_args(argv)
    block, line = render()
    doc, new = splice(DOC, "battery-tables", block)
    readme_ok = line in README.read_text(encoding="utf-8")
    if args.check:
        if new != doc or not readme_ok:
            print(f"stale: {'docs/v2g.md ' if new != doc else ''}{'README.md' if not readme_ok else ''}")
            print(line)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    print(f"wrote {DOC}; the README line:\n{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
