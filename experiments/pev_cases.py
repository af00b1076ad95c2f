"""The review's four PEV cases (`001_…`, Part 3) as a DLMP study on the 33-bus feeder.

The review prices active and reactive power per bus for four ways of connecting plug-in EVs:

1. **no EVs** — the base load only;
2. **EVs as loads** — every EV a fixed load of ``p_ev_kw`` (7 kW) drawing the rest of its inverter's apparent
   power as reactive load: ``√(8² − 7²) = 3.87`` kVAr per EV at 8 kVA;
3. **V2G (P and Q)** — the EVs are a resource the DSO may dispatch: discharge ``P ∈ [0, 7]`` kW per EV, paid
   ``discharge_price_ratio`` × the substation price, and reactive power ``Q ∈ [−3.87, 3.87]`` kVAr per EV;
4. **charging P, supplying Q** — the EVs charge at 7 kW (fixed) and their inverters' spare capacity,
   ``|Q| ≤ 3.87`` kVAr per EV, is dispatched by the DSO at no cost.

In cases 3 and 4 the EVs of a bus form one :class:`grids.dlmp.FlexibleEV` with the inverter limit ``n · 8`` kVA;
the box ``|P| ≤ 7``, ``|Q| ≤ 3.87`` per EV touches that circle at full active power and lies inside it elsewhere
(pandapower's OPF has no circular capability; see :mod:`grids.dlmp`).

**Data.** The review's 5-bus example is incomplete (line data and loads are missing), so the IEEE 33-bus feeder
(Baran & Wu) stands in for it; every output row says so in ``note``. The EVs sit at the two feeder ends, paper
buses 18 and 33 (pandapower 17 and 32), where they matter most. Defaults, and why:

* ``n_evs_per_bus = 50``: 350 kW and 194 kVAr per bus, 700 kW in all — a fifth of the 3.7 MW feeder, enough to
  move the end-of-feeder prices and the losses visibly (case 2 raises losses by about 150 %);
* ``load_scale = 0.6``: an evening/night shoulder level (the 002 profiles span 0.52–1.0 of the peak), when EVs
  charge. At the full Baran–Wu load 50 EVs at each end would pull case 2 to 0.862 pu, outside any usual band, and
  case 2 has no flexible resource that could restore it (its OPF would be infeasible);
* ``v_min_pu = 0.90`` (the repository's default band, ``v_max_pu`` 1.05); case 2 then sits at 0.902 pu, so no
  voltage limit binds in any case and the price differences between the cases are loss (and reactive) effects;
* ``price_usd_per_mwh = 84`` (the base price of `002_…`), no reactive price at the substation.

Costs are per hour of the single market slot: ``total_cost_usd_per_h`` is the OPF objective (substation energy +
V2G payments); ``ev_cost_usd_per_h`` settles the EVs' own P and Q at the bus DLMPs (negative = the EVs are paid).

Run ``python -m experiments.pev_cases`` (``--method lindistflow`` for the LP, ``--all-buses`` for every bus).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import pandas as pd

from grids.dlmp import FlexibleEV, dlmp_acopf, dlmp_lindistflow
from grids.network import build_network

__all__ = ["CASES", "NOTE", "run_pev_cases", "format_pev_cases"]

CASES: dict[int, str] = {
    1: "no EVs",
    2: "EVs as loads",
    3: "V2G (P and Q)",
    4: "charging P, supplying Q",
}
NOTE = (
    "IEEE 33-bus feeder (Baran & Wu) stands in for the review's 5-bus example, whose data are incomplete; "
    "bus numbers are the papers' 1-based numbers"
)


#: the columns `run_pev_cases` returns first, in this order (LinDistFlow's price components follow)
FIRST_COLUMNS = (
    "case",
    "case_name",
    "bus",
    "bus_pp",
    "lam_p_usd_per_mwh",
    "lam_q_usd_per_mvarh",
    "vm_pu",
    "ev_p_kw",
    "ev_q_kvar",
    "converged",
    "total_cost_usd_per_h",
    "ev_cost_usd_per_h",
    "losses_kw",
    "grid_p_kw",
    "grid_q_kvar",
    "vmin_pu",
    "method",
    "note",
)


def _case_evs(
    case: int,
    buses: list[int],
    n: int,
    p_ev_kw: float,
    q_ev_kvar: float,
    s_ev_kva: float,
    v2g_price_usd_per_mwh: float,
) -> list[FlexibleEV]:
    """The flexible EV aggregates of a case at each EV bus: V2G discharge (case 3), charging at full power with
    reactive support (case 4), none otherwise."""
    ev: list[FlexibleEV] = []
    if case == 3:
        ev = [
            FlexibleEV(
                bus=b,
                p_min_kw=-n * p_ev_kw,
                p_max_kw=0.0,
                q_min_kvar=-n * q_ev_kvar,
                q_max_kvar=n * q_ev_kvar,
                s_max_kva=n * s_ev_kva,
                cost_usd_per_mwh=v2g_price_usd_per_mwh,
                name=f"V2G{b + 1}",
            )
            for b in buses
        ]
    elif case == 4:
        ev = [
            FlexibleEV(
                bus=b,
                p_min_kw=n * p_ev_kw,
                p_max_kw=n * p_ev_kw,
                q_min_kvar=-n * q_ev_kvar,
                q_max_kvar=n * q_ev_kvar,
                s_max_kva=n * s_ev_kva,
                cost_usd_per_mwh=0.0,
                name=f"EVQ{b + 1}",
            )
            for b in buses
        ]
    return ev


def _case_frame(df: pd.DataFrame, case: int, fixed_p: np.ndarray, fixed_q: np.ndarray, method: str) -> pd.DataFrame:
    """A case's DLMP rows in the paper's shape: fixed EV load added, case and 1-based bus columns, EV cost."""
    df = df.drop(columns=["slot", "method"])
    df["ev_p_kw"] = df["ev_p_kw"].to_numpy() + fixed_p
    df["ev_q_kvar"] = df["ev_q_kvar"].to_numpy() + fixed_q
    ev_cost = float(
        np.nansum(df["lam_p_usd_per_mwh"] * df["ev_p_kw"] + df["lam_q_usd_per_mvarh"] * df["ev_q_kvar"]) / 1e3
    )
    converged = bool(df["converged"].all())
    df.insert(0, "case", case)
    df.insert(1, "case_name", CASES[case])
    df = df.rename(columns={"bus": "bus_pp"})
    df.insert(2, "bus", df["bus_pp"] + 1)
    df["ev_cost_usd_per_h"] = ev_cost if converged else np.nan
    df["vmin_pu"] = float(df["vm_pu"].min()) if converged else np.nan
    df["method"] = method
    df["note"] = NOTE
    return df


def run_pev_cases(
    *,
    n_evs_per_bus: int = 50,
    ev_buses: Sequence[int] = (18, 33),
    p_ev_kw: float = 7.0,
    s_ev_kva: float = 8.0,
    price_usd_per_mwh: float = 84.0,
    discharge_price_ratio: float = 0.98,
    load_scale: float = 0.6,
    v_min_pu: float = 0.90,
    v_max_pu: float = 1.05,
    method: str = "acopf",
) -> pd.DataFrame:
    """Run the four PEV cases and return the paper's table shape (long format).

    Args:
        n_evs_per_bus: EVs at each EV bus.
        ev_buses: EV buses in the papers' 1-based numbering (default: the feeder ends 18 and 33).
        p_ev_kw: charging / discharging power per EV [kW].
        s_ev_kva: inverter apparent-power rating per EV [kVA] (reactive capability ``√(s² − p²)`` at full P).
        price_usd_per_mwh: substation energy price [$/MWh].
        discharge_price_ratio: V2G energy is paid this share of the substation price (case 3).
        load_scale: multiplies the feeder's base load (Baran & Wu, 3.715 MW / 2.3 MVAr).
        v_min_pu: lower voltage limit [pu].
        v_max_pu: upper voltage limit [pu].
        method: ``"acopf"`` (pandapower AC OPF) or ``"lindistflow"`` (HiGHS LP with the decomposition).

    Returns:
        One row per case and bus: ``case``, ``case_name``, ``bus`` (1-based), ``bus_pp`` (pandapower index),
        ``lam_p_usd_per_mwh``, ``lam_q_usd_per_mvarh``, ``vm_pu``, ``ev_p_kw`` / ``ev_q_kvar`` (EV load at the
        bus, + = consumption), and per case (repeated on its rows) ``converged``, ``total_cost_usd_per_h``,
        ``ev_cost_usd_per_h``, ``losses_kw``, ``grid_p_kw``, ``grid_q_kvar``, ``vmin_pu``, ``note``
        (LinDistFlow adds its price components).

    Raises:
        ValueError: bad arguments (unknown method, bus outside 1..33, s_ev_kva < p_ev_kw, negative counts).
    """
    if method not in ("acopf", "lindistflow"):
        raise ValueError(f"method must be 'acopf' or 'lindistflow', got {method!r}")
    if n_evs_per_bus < 0 or p_ev_kw < 0 or s_ev_kva < p_ev_kw:
        raise ValueError("need n_evs_per_bus >= 0, p_ev_kw >= 0 and s_ev_kva >= p_ev_kw")
    if not (0 < discharge_price_ratio and load_scale >= 0):
        raise ValueError("discharge_price_ratio must be > 0 and load_scale >= 0")
    nw = build_network("case33bw", v_min_pu=v_min_pu, v_max_pu=v_max_pu)
    n_bus = nw.n_bus
    buses = [int(b) - 1 for b in ev_buses]
    if any(b < 0 or b >= n_bus for b in buses) or len(set(buses)) != len(buses):
        raise ValueError(f"ev_buses must be distinct paper bus numbers in 1..{n_bus}, got {tuple(ev_buses)}")
    n = int(n_evs_per_bus)
    q_ev_kvar = float(np.sqrt(s_ev_kva**2 - p_ev_kw**2))
    p0 = nw.base_p_kw * load_scale
    q0 = nw.base_q_kvar * load_scale
    solve = dlmp_acopf if method == "acopf" else dlmp_lindistflow

    frames = []
    for case in CASES:
        p = p0.copy()
        q = q0.copy()
        ev: list[FlexibleEV] = []
        fixed_p = np.zeros(n_bus)
        fixed_q = np.zeros(n_bus)
        if case == 2:
            fixed_p[buses] = n * p_ev_kw
            fixed_q[buses] = n * q_ev_kvar
            p += fixed_p
            q += fixed_q
        elif n > 0:
            ev = _case_evs(case, buses, n, p_ev_kw, q_ev_kvar, s_ev_kva, discharge_price_ratio * price_usd_per_mwh)
        df = solve(
            nw, p[None, :], q[None, :], price_usd_per_mwh=price_usd_per_mwh, ev=ev, v_min_pu=v_min_pu, v_max_pu=v_max_pu
        )
        frames.append(_case_frame(df, case, fixed_p, fixed_q, method))
    out = pd.concat(frames, ignore_index=True)
    first = list(FIRST_COLUMNS)
    drop = {"gen_p_kw", "gen_q_kvar", "solve_time_s", "message"}
    rest = [c for c in out.columns if c not in first and c not in drop]
    return out[first + rest]


def _fmt(v: float) -> str:
    return f"{round(float(v), 2) + 0.0:.2f}"  # no "-0.00"


def format_pev_cases(df: pd.DataFrame, buses: Sequence[int] | None = None) -> str:
    """Markdown tables of a :func:`run_pev_cases` result in the paper's shape.

    Args:
        df: the result of :func:`run_pev_cases`.
        buses: 1-based buses to list (default: every bus).

    Returns:
        Two markdown tables — per bus λP and λQ for each case, then per case total cost, EV cost, losses and
        lowest voltage — followed by the note on the stand-in feeder.
    """
    cases = sorted(df["case"].unique())
    names = df.drop_duplicates("case").set_index("case")["case_name"]
    sel = sorted(df["bus"].unique()) if buses is None else [int(b) for b in buses]
    lines = [
        "| bus | " + " | ".join(f"{c}. {names[c]}: λP [$/MWh] / λQ [$/MVArh]" for c in cases) + " |",
        "|---:|" + "---:|" * len(cases),
    ]
    by = df.set_index(["case", "bus"])
    for b in sel:
        cells = []
        for c in cases:
            lp, lq = by.loc[(c, b), "lam_p_usd_per_mwh"], by.loc[(c, b), "lam_q_usd_per_mvarh"]
            cells.append("—" if not np.isfinite(lp) else f"{_fmt(lp)} / {_fmt(lq)}")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    per = df.drop_duplicates("case").set_index("case")
    lines += [
        "",
        "| case | total cost [$/h] | EV cost at DLMPs [$/h] | losses [kW] | grid import [kW] | "
        "EV P / Q [kW / kVAr] | Vmin [pu] | converged |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in cases:
        r = per.loc[c]
        evp = df.loc[df["case"] == c, "ev_p_kw"].sum()
        evq = df.loc[df["case"] == c, "ev_q_kvar"].sum()
        lines.append(
            f"| {c}. {names[c]} | {r.total_cost_usd_per_h:.2f} | {r.ev_cost_usd_per_h:.2f} | "
            f"{r.losses_kw:.1f} | {r.grid_p_kw:.1f} | {evp:.0f} / {evq:.0f} | {r.vmin_pu:.4f} | "
            f"{bool(r.converged)} |"
        )
    lines += ["", f"Method: {per.iloc[0]['method']}. Note: {NOTE}."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="The review's four PEV cases on the 33-bus feeder (DLMP table)")
    ap.add_argument("--method", choices=("acopf", "lindistflow"), default="acopf")
    ap.add_argument("--n-evs", type=int, default=50, help="EVs per EV bus")
    ap.add_argument("--load-scale", type=float, default=0.6)
    ap.add_argument("--price", type=float, default=84.0, help="substation price [$/MWh]")
    ap.add_argument("--all-buses", action="store_true", help="list every bus (default: a selection)")
    args = ap.parse_args(argv)
    df = run_pev_cases(
        n_evs_per_bus=args.n_evs, load_scale=args.load_scale, price_usd_per_mwh=args.price, method=args.method
    )
    buses = None if args.all_buses else [1, 2, 3, 6, 9, 12, 15, 18, 19, 22, 23, 25, 26, 30, 33]
    print(format_pev_cases(df, buses))


if __name__ == "__main__":
    main()
