"""Compare market mechanisms on one scenario, side by side, each scored against the exact optimum.

Every mechanism runs with the same seed (so the same EVs arrive) and ``market.reference = true``: at every
clearing the exact optimum of the same request (`markets.milp.reference`) is solved and the mechanism's schedule
is scored with the same objective (`markets.milp.evaluate_cost`: energy cost at the request's prices plus a
penalty on unserved energy). The gap is ``(Σ objective − Σ optimum) / |Σ optimum|`` over the run's clearings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from experiments.console import ZERO_TOL, fmt_number
from sim.scenario import Scenario, validate

if TYPE_CHECKING:  # pragma: no cover
    from sim.result import RunResult

COLUMNS = {
    "market_objective_usd": "objective [$]",
    "market_reference_usd": "exact optimum [$]",
    "market_gap": "gap",
    "market_gap_max": "worst clearing gap",
    "time_market_s": "market wall time [s]",
    "time_reference_s": "reference wall time [s]",
    "vmin_pu": "Vmin [pu]",
    "vmax_pu": "Vmax [pu]",
    "voltage_violation_bus_minutes": "voltage violations [bus·min]",
    "overvoltage_bus_minutes": "of which overvoltage [bus·min]",
    "line_overload_minutes": "line overload [min]",
    "ev_curtailed_kwh": "EV curtailed [kWh]",
    "peak_load_kw": "peak load [kW]",
    "energy_losses_kwh": "losses [kWh]",
    "total_cost_usd": "total cost [$]",
    "energy_fulfilment": "energy fulfilment",
}


def compare(
    scenario: Scenario,
    mechanisms: list[str],
    *,
    reference_variant: str = "lp",
    bits: int = 4,
    run: Callable[[Scenario], RunResult] | None = None,
) -> pd.DataFrame:
    """Run ``scenario`` once per mechanism with exact-optimum scoring; one row per mechanism."""
    from sim.model import CoSimulation

    rows = []
    for name in mechanisms:
        data = scenario.model_dump(mode="json")
        data["market"].update(mechanism=name, reference=True, reference_variant=reference_variant, reference_bits=bits)
        data["paper"] = {}
        sc = validate(data)
        result = run(sc) if run is not None else CoSimulation(sc).run()
        rows.append({"mechanism": name, **{k: result.kpis.get(k, float("nan")) for k in COLUMNS}})
    return pd.DataFrame(rows)


def write(table: pd.DataFrame, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "compare.csv", index=False)
    lines = ["| mechanism | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for r in table.itertuples(index=False):
        vals = [fmt_number(v) for v in r[1:]]  # |v| < ZERO_TOL as 0 (stated below the table), NaN as n/a
        lines.append(f"| {r[0]} | " + " | ".join(vals) + " |")
    lines.append(f"\n4 significant digits; |value| < {ZERO_TOL:g} shown as 0; n/a: does not apply.")
    (out_dir / "compare.md").write_text("\n".join(lines) + "\n")
    return out_dir
