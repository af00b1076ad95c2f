"""Distribution locational marginal prices (DLMPs): AC OPF (pandapower) and linearised branch flow (HiGHS).

Two ways to price active and reactive power per bus and market slot, both usable without a simulation::

    from grids.network import build_network
    from grids.dlmp import dlmp_acopf, dlmp_lindistflow, slot_summary

    nw = build_network("case33bw")
    p, q = nw.base_p_kw[None, :] * 0.5, nw.base_q_kvar[None, :] * 0.5      # one slot, shape (1, 33)
    ac = dlmp_acopf(nw, p, q, price_usd_per_mwh=50.0)
    lp = dlmp_lindistflow(nw, p, q, price_usd_per_mwh=50.0)
    lp[["bus", "lam_p_usd_per_mwh", "energy_usd_per_mwh", "loss_usd_per_mwh", "voltage_usd_per_mwh"]]
    slot_summary(ac)                      # one row per slot: cost, losses, grid import, solve time

**Result table** (tidy, one row per slot × bus, buses in ``net.bus`` order, ``bus`` = pandapower index):
``method``, ``slot``, ``bus``, ``lam_p_usd_per_mwh``, ``lam_q_usd_per_mvarh``, ``vm_pu``, ``gen_p_kw`` /
``gen_q_kvar`` (DG + renewable + ``net.gen`` injection at the bus), ``ev_p_kw`` / ``ev_q_kvar`` (flexible EV
dispatch at the bus, *load* convention: + = charging / absorbing), ``converged``, and the per-slot quantities
repeated on every row of the slot (so they survive filtering and concatenation; :func:`slot_summary` extracts
them): ``total_cost_usd_per_h``, ``losses_kw``, ``grid_p_kw``, ``grid_q_kvar`` (import at the substation),
``solve_time_s``, ``message``. :func:`dlmp_lindistflow` adds the decomposition ``energy_usd_per_mwh``,
``loss_usd_per_mwh``, ``congestion_usd_per_mwh``, ``voltage_usd_per_mwh`` (their sum is ``lam_p``) and the same
four for reactive power (``*_q_usd_per_mvarh``, sum ``lam_q``), ``vm_lp_pu`` (the LP's own voltage),
``iterations`` and ``decomposition_residual`` (largest |sum of components − λ| of the slot, a KKT check).
A slot whose optimisation fails has ``converged = False``, NaN prices and NaN results, and a ``message``; the
other slots are unaffected and no exception is raised for it.

**Market model (both methods).** Loads are fixed (the caller's arrays, constant power). The substation
(``ext_grid``) sells energy at the slot's price λ₀ [$/MWh] (linear cost; reactive power at
``q_price_usd_per_mvarh``, default 0) within a box ``|P|, |Q| ≤ network.substation_mva`` (pandapower cannot
express a circle on an ext_grid; the same box is used in both methods). Its voltage is fixed at its set-point.
DGs (``network.dgs``) are controllable in ``P ∈ [0, P_max]`` with cost ``A·P² + B·P`` [$/h, P in MW] and
``Q ∈ [0, P_max·tan(acos pf)]`` (injection only, as the DSO's power-factor convention) at their linear reactive
cost; the no-load cost ``C`` cannot move a price and is left out of the objectives (no commitment decision) but is
added to ``total_cost_usd_per_h`` for every DG that runs (P > 1 kW). Renewables are curtailable in
``[0, available]`` at zero cost and unity power factor. Flexible EVs (:class:`FlexibleEV`) are boxes in P and Q
with a linear cost on their injection; an apparent-power limit is applied as the largest box inside the circle
(``|Q| ≤ √(S² − P_max²)``; exact when the EV runs at its P rating, as in the four-case study) because pandapower's
OPF knows no circular capability. Bus voltages are kept in ``[v_min_pu, v_max_pu]`` (the network's limits unless
the caller passes others: case33bw at full load sits at 0.913 pu, so with 0.95 pu and no controllable resource the
OPF is infeasible — reported, not raised). Line flows are limited to ``max_i_ka`` × ``max_line_loading_percent``.

**(a) AC OPF** — :func:`dlmp_acopf`: one ``pandapower.runopp`` (PIPS interior point on the full AC equations) per
slot. λP, λQ are ``res_bus.lam_p`` / ``lam_q``, the multipliers of each bus's active/reactive balance; with
``poly_cost`` in $/MW (per hour of operation) they are in $/MWh and $/MVArh. Line limits are pandapower's
current limits (``OPF_FLOW_LIM = 2``, at both ends). Exact up to the interior-point tolerance (prices of
inactive constraints are ~1e-3 $/MWh off zero). About 0.13–0.3 s per slot on the 33-bus feeder and 0.3 s on
case118, against 2–6 ms (up to ~40 ms when a DG settles inside its range) for the LP (``bench/bench_dlmp.py``).

**(b) Linearised branch flow** — :func:`dlmp_lindistflow`: the LinDistFlow LP of Bai et al. (2018) with
linearised losses, solved with HiGHS, per slot. Radial networks only. Variables: sending-end flows ``P_ij``,
``Q_ij`` on each branch, squared voltages ``v_j``, unit outputs. Constraints, with ``ℓ̄ = (P̄² + Q̄²)/v̄_i`` from an
AC base point (bars):

* nodal balance at ``j``: ``(P_ij − loss_ij) − Σ_k P_jk + Σ g_j = d_j`` (dual: λP_j) and the same for Q (λQ_j),
  with the branch losses ``r·ℓ`` and ``x·ℓ`` replaced by their first-order Taylor expansion in ``(P_ij, Q_ij)``
  around the base point (branch loss factors ``2rP̄/v̄``, ``2rQ̄/v̄``, …), i.e. exact in value at the base point;
* voltage drop ``v_j = v_i − 2(r P_ij + x Q_ij) + (r² + x²) ℓ̄`` (LinDistFlow sensitivity; the last term, the
  base point's own loss term, makes the equation exact at the base point) with ``v ∈ [v_min², v_max²]``;
* thermal limit ``|S_ij| ≤ S_max·√v̄_i`` (the AC OPF's current limit at the base voltage) as 16 fixed facets
  tangent to the circle (≤ 2 % overshoot between facets) plus one facet tangent at the base point's flow angle,
  which makes the limit exact at the operating point once the sequential LP has settled;
* DG cost ``A·P² + B·P`` as ``dg_segments`` piecewise-linear secant segments (price error ≤ ``A·P_max/n`` —
  0.001 $/MWh for the 002 DGs).

The base point is an AC power flow (:class:`grids.powerflow.FastPowerFlow`) at an initial dispatch (DGs at full
output if their cheapest segment is below the price, renewables at their availability, EVs at 0 clipped to their
box). The LP is then re-linearised at the AC power flow of its own dispatch (sequential LP, at most ``n_iter``
LPs, stop when no unit moves by more than ``tol_kw``). Linear loss factors make an interior optimum (a DG whose
marginal cost meets its bus price between its limits) oscillate between vertices, so each unit has a trust region:
once its move changes direction its step bound halves every LP (bisection; 10–13 LPs for a DG that settles
inside its range, 1 LP when nothing is flexible). Bus prices are always the network's marginal prices at the
current base point; a binding trust region only affects the unit's own dispatch. ``losses_kw``, ``vm_pu`` and
``total_cost_usd_per_h`` are evaluated with the AC power flow at the final LP dispatch, so they are physical;
``vm_lp_pu`` is the LP's own voltage. A slot that stops at ``n_iter`` says so in ``message``.

**Decomposition** (Bai et al. 2018). Stationarity of the LP with respect to the branch and voltage variables is a
square linear system in (λP_j, λQ_j, β_ij) (β: duals of the voltage-drop rows), driven by three sources: the
substation's prices (λP₀, λQ₀), the line-limit duals, and the voltage-bound duals. Solving it for each source
separately gives, for every bus: ``energy`` = the substation's offer price (λ₀); ``loss`` = what the substation
price becomes through the branch loss factors, minus λ₀ (≈ λ₀·∂losses/∂d_j); ``congestion`` = line-limit duals
(plus a binding substation box, λP₀ − price) propagated to the bus; ``voltage`` = voltage-bound duals propagated
to the bus. Cross terms (a congestion or voltage shadow price carried through upstream loss factors) belong to
congestion/voltage. By linearity the four add up to the nodal-balance dual λP_j; ``decomposition_residual``
reports the check (~1e-13 $/MWh measured).

**Where and why the two differ.**

1. *Losses.* The AC OPF prices the exact marginal loss ``∂losses/∂d_j``, including the way a lower voltage raises
   every current downstream; the LP's loss factors hold ``v̄`` at the base point and are first-order in the
   flows, so they come out slightly low and the gap grows with the voltage drop. Measured on case33bw at 50 $/MWh
   (fixed loads, so both methods dispatch identically): at 0.3 / 0.5 / 0.7 / 1.0 × the Baran–Wu load the largest
   |ΔλP| is 0.03 / 0.08 / 0.16 / 0.38 % of λP, the loss components differ by at most 1.2 / 2.4 / 3.6 / 5.4 % of
   the AC OPF's, and λQ by 1.0 / 2.0 / 2.9 / 4.5 %. ``tests/test_dlmp.py`` holds the light-load slots (0.3, 0.5)
   to 0.25 % on λP, 3 % on the loss component and 3 % (+0.01 $/MVArh) on λQ. With DGs at an interior optimum
   the LP dispatches them slightly differently (e.g. 473 vs 497 kW for the 002 DG33 at 84 $/MWh), total costs
   agree to ~1e-5.
2. *Voltage linearisation.* The LP's voltage sensitivities are LinDistFlow's ``2r``, ``2x`` (they omit the
   ``(r² + x²)∂ℓ`` term and the voltage dependence of the currents), so when a voltage limit binds the voltage
   component — and the re-dispatch it causes — differ from the AC OPF. On the 002 feeder at full load and
   50 $/MWh, with 0.95 pu binding at bus 33 (voltage component up to 24 $/MWh), λP agrees within 0.12 $/MWh
   (0.15 %) and λQ within 0.05 $/MVArh; the test allows 2 %. Re-linearising moves the base point, not the
   sensitivities.
3. *Discretisation.* Piecewise-linear DG costs, the sending-end-only polygon thermal limit at the base voltage
   (the AC OPF limits the current at both ends), the sequential LP's stopping tolerance, and solver tolerances
   (HiGHS ~1e-9, PIPS ~1e-3 $/MWh). With the first line congested (0.1 kA, congestion component up to 33 $/MWh
   at 50 $/MWh) λP agrees within 0.14 $/MWh and λQ within 0.11 $/MVArh; at 84 $/MWh, where a DG's reactive
   output sits at an interior point, λQ differs by up to ~1 $/MVArh.
4. *Scope.* LinDistFlow needs a radial network with one slack, no voltage-controlled ``net.gen`` and nominal
   transformer ratios; line charging and transformer magnetising admittances are neglected (case33bw has none).
   Meshed networks such as case118 raise :class:`NotRadialError`; use :func:`dlmp_acopf` there.

Reference: L. Bai, J. Wang, C. Wang, C. Chen, F. Li, "Distribution Locational Marginal Pricing (DLMP) for
Congestion Management and Voltage Support", IEEE Trans. Power Systems 33(4), 2018.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from grids.network import Network

__all__ = [
    "FlexibleEV",
    "NotRadialError",
    "DLMPInputError",
    "dlmp_acopf",
    "dlmp_lindistflow",
    "slot_summary",
    "SLOT_COLUMNS",
    "COMPONENTS_P",
    "COMPONENTS_Q",
]

#: Per-slot columns, repeated on every bus row of a slot (see :func:`slot_summary`).
SLOT_COLUMNS: tuple[str, ...] = (
    "method", "slot", "converged", "total_cost_usd_per_h", "losses_kw", "grid_p_kw", "grid_q_kvar",
    "solve_time_s", "message",
)
#: Decomposition of λP [$/MWh] returned by :func:`dlmp_lindistflow`.
COMPONENTS_P: tuple[str, ...] = (
    "energy_usd_per_mwh", "loss_usd_per_mwh", "congestion_usd_per_mwh", "voltage_usd_per_mwh",
)
#: Decomposition of λQ [$/MVArh] returned by :func:`dlmp_lindistflow`.
COMPONENTS_Q: tuple[str, ...] = (
    "energy_q_usd_per_mvarh", "loss_q_usd_per_mvarh", "congestion_q_usd_per_mvarh", "voltage_q_usd_per_mvarh",
)

_ON_KW = 1.0  # a DG producing more than this [kW] pays its no-load cost C


class DLMPInputError(ValueError):
    """Bad input to a DLMP function (shape, NaN, unknown bus, inconsistent EV box)."""


class NotRadialError(ValueError):
    """The network is outside LinDistFlow's scope (meshed, several slacks, PV generators, off-nominal taps)."""


@dataclass(frozen=True)
class FlexibleEV:
    """An aggregate of EV chargers at one bus that the OPF may dispatch.

    Load convention: positive ``p`` is charging, negative is V2G discharge; positive ``q`` absorbs reactive power,
    negative supplies it. Fix a quantity by giving equal bounds.

    Attributes:
        bus: pandapower bus index.
        p_min_kw: lower bound of the charging power [kW] (negative = discharge allowed).
        p_max_kw: upper bound of the charging power [kW].
        q_min_kvar: lower bound of the reactive load [kVAr] (negative = reactive supply).
        q_max_kvar: upper bound of the reactive load [kVAr].
        s_max_kva: inverter apparent-power limit of the aggregate [kVA], or None. Applied as the largest box inside
            the circle: ``|q| ≤ √(s_max² − max(|p_min|, |p_max|)²)`` (see module docstring).
        cost_usd_per_mwh: linear cost of the aggregate's *injection* (−p) [$/MWh]: what the DSO pays per MWh of
            V2G energy; for charging (negative injection) it is a credit. 0 = a free resource.
        name: label.
    """

    bus: int
    p_min_kw: float
    p_max_kw: float
    q_min_kvar: float = 0.0
    q_max_kvar: float = 0.0
    s_max_kva: float | None = None
    cost_usd_per_mwh: float = 0.0
    name: str = "ev"

    def injection_box_mw(self) -> tuple[float, float, float, float]:
        """Bounds of the injection (generator convention) in MW / MVAr: (p_min, p_max, q_min, q_max).

        Raises:
            DLMPInputError: inconsistent bounds, or an apparent-power limit below the P rating.
        """
        vals = (self.p_min_kw, self.p_max_kw, self.q_min_kvar, self.q_max_kvar, self.cost_usd_per_mwh)
        if not all(np.isfinite(v) for v in vals):
            raise DLMPInputError(f"FlexibleEV {self.name!r} at bus {self.bus}: bounds and cost must be finite")
        if self.p_min_kw > self.p_max_kw or self.q_min_kvar > self.q_max_kvar:
            raise DLMPInputError(f"FlexibleEV {self.name!r} at bus {self.bus}: min bound above max bound")
        qlo, qhi = self.q_min_kvar, self.q_max_kvar
        if self.s_max_kva is not None:
            pabs = max(abs(self.p_min_kw), abs(self.p_max_kw))
            if not (np.isfinite(self.s_max_kva) and self.s_max_kva >= pabs - 1e-9):
                raise DLMPInputError(f"FlexibleEV {self.name!r} at bus {self.bus}: s_max_kva {self.s_max_kva} "
                                     f"is below the active-power rating {pabs} kW")
            qcap = float(np.sqrt(max(self.s_max_kva**2 - pabs**2, 0.0)))
            qlo, qhi = max(qlo, -qcap), min(qhi, qcap)
            if qlo > qhi:
                raise DLMPInputError(f"FlexibleEV {self.name!r} at bus {self.bus}: the q bounds lie outside "
                                     f"the {self.s_max_kva} kVA capability at full power")
        return -self.p_max_kw / 1e3, -self.p_min_kw / 1e3, -qhi / 1e3, -qlo / 1e3


# --------------------------------------------------------------------------------------------------------------
# input handling shared by both methods

@dataclass
class _Inputs:
    p_mw: np.ndarray          # (n_slots, n_bus) fixed load
    q_mvar: np.ndarray
    price: np.ndarray         # (n_slots,) $/MWh
    q_price: np.ndarray       # (n_slots,) $/MVArh
    ren_mw: np.ndarray        # (n_slots, n_ren) availability
    evs: list[FlexibleEV]
    v_min: float
    v_max: float
    bus_index: np.ndarray     # pandapower bus indices in net.bus order
    pos: dict[int, int]       # pandapower bus index -> position


def _per_slot(value: Any, n_slots: int, name: str) -> np.ndarray:
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        a = np.full(n_slots, float(a))
    if a.shape != (n_slots,) or not np.isfinite(a).all():
        raise DLMPInputError(f"{name} must be a finite scalar or have shape ({n_slots},), got {np.shape(value)}")
    return a


def _inputs(network: Network, p_load_kw: Any, q_load_kvar: Any, price_usd_per_mwh: Any, q_price: Any,
            renewable_kw: Any, ev: Sequence[FlexibleEV] | None, v_min_pu: float | None,
            v_max_pu: float | None) -> _Inputs:
    n_bus = len(network.net.bus)
    arrs = []
    for name, a in (("p_load_kw", p_load_kw), ("q_load_kvar", q_load_kvar)):
        a = np.asarray(a, dtype=float)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != n_bus or a.shape[0] < 1:
            raise DLMPInputError(f"{name} must have shape (n_slots, {n_bus}), got {np.shape(a)}")
        if not np.isfinite(a).all():
            raise DLMPInputError(f"{name} contains NaN or inf")
        arrs.append(a)
    p, q = arrs
    if p.shape != q.shape:
        raise DLMPInputError(f"p_load_kw {p.shape} and q_load_kvar {q.shape} differ in shape")
    n_slots = p.shape[0]
    price = _per_slot(price_usd_per_mwh, n_slots, "price_usd_per_mwh")
    qprice = _per_slot(q_price, n_slots, "q_price_usd_per_mvarh")
    n_ren = len(network.renewables)
    if renewable_kw is None:
        ren = np.zeros((n_slots, n_ren))
    else:
        ren = np.asarray(renewable_kw, dtype=float)
        if ren.ndim == 1:
            ren = ren[None, :]
        if ren.shape != (n_slots, n_ren) or not np.isfinite(ren).all() or (ren < 0).any():
            raise DLMPInputError(f"renewable_kw must be finite, >= 0, shape ({n_slots}, {n_ren}), got {ren.shape}")
    bus_index = network.net.bus.index.to_numpy()
    pos = {int(b): i for i, b in enumerate(bus_index)}
    evs = list(ev or [])
    for e in evs:
        if not isinstance(e, FlexibleEV):
            raise DLMPInputError(f"ev must hold FlexibleEV objects, got {type(e).__name__}")
        if int(e.bus) not in pos:
            raise DLMPInputError(f"FlexibleEV {e.name!r}: bus {e.bus} is not in the network")
        e.injection_box_mw()
    v_min = network.v_min_pu if v_min_pu is None else float(v_min_pu)
    v_max = network.v_max_pu if v_max_pu is None else float(v_max_pu)
    if not (0 < v_min < v_max):
        raise DLMPInputError(f"voltage band must satisfy 0 < v_min_pu < v_max_pu, got [{v_min}, {v_max}]")
    return _Inputs(p / 1e3, q / 1e3, price, qprice, ren / 1e3, evs, v_min, v_max, bus_index, pos)


def _dg_q_max_mw(d: Any) -> float:
    pf = float(d.pf)
    return d.p_max_kw / 1e3 * (np.tan(np.arccos(pf)) if 0 < pf < 1 else 0.0)


def _dg_cost(network: Network, p_mw: np.ndarray, q_mvar: np.ndarray) -> float:
    """Cost of the DGs' dispatch [$/h], including the no-load cost of the units that run."""
    cost = 0.0
    for d, p, q in zip(network.dgs, p_mw, q_mvar):
        cost += d.cost_a * p**2 + d.cost_b * p + d.q_cost_usd_per_mvarh * q
        if p * 1e3 > _ON_KW:
            cost += d.cost_c
    return float(cost)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    first = ["method", "slot", "bus"]
    return df[first + [c for c in df.columns if c not in first]]


def _failed_slot(method: str, k: int, inp: _Inputs, message: str, extra: Sequence[str] = (),
                 seconds: float = np.nan) -> list[dict[str, Any]]:
    nan = np.nan
    out = []
    for b in inp.bus_index:
        row = dict(method=method, slot=k, bus=int(b), lam_p_usd_per_mwh=nan, lam_q_usd_per_mvarh=nan, vm_pu=nan,
                   gen_p_kw=nan, gen_q_kvar=nan, ev_p_kw=nan, ev_q_kvar=nan, converged=False,
                   total_cost_usd_per_h=nan, losses_kw=nan, grid_p_kw=nan, grid_q_kvar=nan,
                   solve_time_s=seconds, message=message)
        for c in extra:
            row[c] = nan
        out.append(row)
    return out


def slot_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, slot) with the per-slot columns of a DLMP table (see module docstring).

    Args:
        df: a table from :func:`dlmp_acopf` or :func:`dlmp_lindistflow` (or a concatenation of several).

    Returns:
        Columns of :data:`SLOT_COLUMNS` present in ``df`` (plus ``iterations`` and ``decomposition_residual``
        for LinDistFlow tables), sorted by method and slot.
    """
    cols = [c for c in SLOT_COLUMNS + ("iterations", "decomposition_residual") if c in df.columns]
    return (df[cols].drop_duplicates(subset=["method", "slot"]).sort_values(["method", "slot"])
            .reset_index(drop=True))


# --------------------------------------------------------------------------------------------------------------
# (a) AC OPF

def dlmp_acopf(
    network: Network,
    p_load_kw: Any,
    q_load_kvar: Any,
    *,
    price_usd_per_mwh: Any,
    q_price_usd_per_mvarh: Any = 0.0,
    renewable_kw: Any = None,
    ev: Sequence[FlexibleEV] | None = None,
    v_min_pu: float | None = None,
    v_max_pu: float | None = None,
    init: str = "pf",
) -> pd.DataFrame:
    """DLMPs from one pandapower AC OPF per slot (see the module docstring for the market model).

    ``net.load``, ``net.sgen`` and ``net.storage`` of the network are ignored (the arrays and ``network.ders``
    replace them); ``net.gen`` and its costs are kept (case118). The ext_grid's own cost is replaced by the price.

    Args:
        network: the grid (not modified).
        p_load_kw: fixed active load per bus [kW], shape (n_slots, n_bus) in ``net.bus`` order (1-D = one slot).
        q_load_kvar: fixed reactive load per bus [kVAr], same shape.
        price_usd_per_mwh: substation energy price per slot [$/MWh], scalar or shape (n_slots,).
        q_price_usd_per_mvarh: substation reactive price [$/MVArh], scalar or shape (n_slots,).
        renewable_kw: available output of each renewable (``network.renewables`` order) [kW], shape
            (n_slots, n_renewables); None = no renewable output (pass ``network.renewable_kw(tod_h)`` for the
            profiles).
        ev: flexible EV aggregates, the same in every slot.
        v_min_pu: lower voltage limit [pu]; None = ``network.v_min_pu``.
        v_max_pu: upper voltage limit [pu]; None = ``network.v_max_pu``.
        init: pandapower OPF initialisation (``"pf"``, ``"flat"``; ``"results"`` warm-starts from the
            previous slot).

    Returns:
        The tidy DLMP table (module docstring), ``method = "acopf"``.

    Raises:
        DLMPInputError: bad shapes, NaN, unknown EV bus, inconsistent EV box.
    """
    import pandapower as pp

    inp = _inputs(network, p_load_kw, q_load_kvar, price_usd_per_mwh, q_price_usd_per_mvarh, renewable_kw, ev,
                  v_min_pu, v_max_pu)
    net = copy.deepcopy(network.net)
    for element in ("load", "sgen", "storage"):
        if element in net and len(net[element]):
            net[element] = net[element].iloc[0:0]
            res = "res_" + element
            if res in net:
                net[res] = net[res].iloc[0:0]
    for table in ("poly_cost", "pwl_cost"):
        if table in net and len(net[table]):
            keep = ~net[table]["et"].isin(["ext_grid", "load", "sgen", "storage"])
            net[table] = net[table][keep]
    net.bus["min_vm_pu"] = inp.v_min
    net.bus["max_vm_pu"] = inp.v_max
    if len(net.line):
        net.line["max_loading_percent"] = float(network.max_line_loading_percent)
    if len(net.trafo):
        net.trafo["max_loading_percent"] = float(network.max_line_loading_percent)
    s_sub = float(network.substation_mva)
    net.ext_grid["min_p_mw"], net.ext_grid["max_p_mw"] = -s_sub, s_sub
    net.ext_grid["min_q_mvar"], net.ext_grid["max_q_mvar"] = -s_sub, s_sub
    eg_cost = [pp.create_poly_cost(net, int(e), "ext_grid", cp1_eur_per_mw=0.0) for e in net.ext_grid.index]

    load_idx = pp.create_loads(net, buses=inp.bus_index, p_mw=np.zeros(len(inp.bus_index)),
                               q_mvar=np.zeros(len(inp.bus_index)), controllable=False)
    dg_idx = []
    for d in network.dgs:
        qmax = _dg_q_max_mw(d)
        s = pp.create_sgen(net, d.bus, p_mw=0.0, q_mvar=0.0, controllable=True, min_p_mw=0.0,
                           max_p_mw=d.p_max_kw / 1e3, min_q_mvar=0.0, max_q_mvar=qmax, name=d.name)
        pp.create_poly_cost(net, s, "sgen", cp1_eur_per_mw=d.cost_b, cp2_eur_per_mw2=d.cost_a,
                            cq1_eur_per_mvar=d.q_cost_usd_per_mvarh)
        dg_idx.append(s)
    ren_idx = []
    for d in network.renewables:
        s = pp.create_sgen(net, d.bus, p_mw=0.0, q_mvar=0.0, controllable=True, min_p_mw=0.0, max_p_mw=0.0,
                           min_q_mvar=0.0, max_q_mvar=0.0, name=d.name)
        ren_idx.append(s)
    ev_idx = []
    for e in inp.evs:
        plo, phi, qlo, qhi = e.injection_box_mw()
        s = pp.create_sgen(net, e.bus, p_mw=float(np.clip(0.0, plo, phi)), q_mvar=float(np.clip(0.0, qlo, qhi)),
                           controllable=True, min_p_mw=plo, max_p_mw=phi, min_q_mvar=qlo, max_q_mvar=qhi,
                           name=e.name)
        pp.create_poly_cost(net, s, "sgen", cp1_eur_per_mw=float(e.cost_usd_per_mwh))
        ev_idx.append(s)
    ev_set = set(ev_idx)

    rows: list[dict[str, Any]] = []
    n_slots = inp.p_mw.shape[0]
    had_result = False
    for k in range(n_slots):
        net.load.loc[load_idx, "p_mw"] = inp.p_mw[k]
        net.load.loc[load_idx, "q_mvar"] = inp.q_mvar[k]
        for j, s in enumerate(ren_idx):
            net.sgen.loc[s, "max_p_mw"] = inp.ren_mw[k, j]
            net.sgen.loc[s, "p_mw"] = inp.ren_mw[k, j]
        net.poly_cost.loc[eg_cost, "cp1_eur_per_mw"] = inp.price[k]
        net.poly_cost.loc[eg_cost, "cq1_eur_per_mvar"] = inp.q_price[k]
        t0 = time.perf_counter()
        this_init = init if (init != "results" or had_result) else "pf"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp.runopp(net, init=this_init, verbose=False)
            ok, msg = bool(net.OPF_converged), ""
        except pp.OPFNotConverged:
            ok, msg = False, "AC OPF did not converge (infeasible limits or numerical failure)"
        except Exception as err:  # pandapower raises several types for numerical trouble; report, don't abort
            ok, msg = False, f"AC OPF failed: {type(err).__name__}: {err}"
        dt = time.perf_counter() - t0
        if not ok:
            rows += _failed_slot("acopf", k, inp, msg or "AC OPF did not converge", seconds=dt)
            had_result = False
            continue
        had_result = True
        rb = net.res_bus
        gen_p = np.zeros(len(inp.bus_index))
        gen_q = np.zeros(len(inp.bus_index))
        ev_p = np.zeros(len(inp.bus_index))
        ev_q = np.zeros(len(inp.bus_index))
        for s, row in net.res_sgen.iterrows():
            i = inp.pos[int(net.sgen.at[s, "bus"])]
            if s in ev_set:
                ev_p[i] -= row.p_mw * 1e3
                ev_q[i] -= row.q_mvar * 1e3
            else:
                gen_p[i] += row.p_mw * 1e3
                gen_q[i] += row.q_mvar * 1e3
        if len(net.gen):
            for g, row in net.res_gen.iterrows():
                if bool(net.gen.at[g, "in_service"]):
                    i = inp.pos[int(net.gen.at[g, "bus"])]
                    gen_p[i] += row.p_mw * 1e3
                    gen_q[i] += row.q_mvar * 1e3
        dg_p = np.array([net.res_sgen.at[s, "p_mw"] for s in dg_idx])
        no_load = sum(d.cost_c for d, p in zip(network.dgs, dg_p) if p * 1e3 > _ON_KW)
        losses = float(net.res_line.pl_mw.sum()) if len(net.line) else 0.0
        if len(net.trafo):
            losses += float(net.res_trafo.pl_mw.sum())
        slot = dict(converged=True, total_cost_usd_per_h=float(net.res_cost) + float(no_load),
                    losses_kw=losses * 1e3, grid_p_kw=float(net.res_ext_grid.p_mw.sum()) * 1e3,
                    grid_q_kvar=float(net.res_ext_grid.q_mvar.sum()) * 1e3, solve_time_s=dt, message="")
        lam_p = rb["lam_p"].to_numpy(float)
        lam_q = rb["lam_q"].to_numpy(float)
        vm = rb["vm_pu"].to_numpy(float)
        for i, b in enumerate(inp.bus_index):
            rows.append(dict(method="acopf", slot=k, bus=int(b), lam_p_usd_per_mwh=lam_p[i],
                             lam_q_usd_per_mvarh=lam_q[i], vm_pu=vm[i], gen_p_kw=gen_p[i], gen_q_kvar=gen_q[i],
                             ev_p_kw=ev_p[i], ev_q_kvar=ev_q[i], **slot))
    return _frame(rows)


# --------------------------------------------------------------------------------------------------------------
# (b) linearised branch flow (LinDistFlow with linearised losses)

class _RadialModel:
    """Topology and impedances of a radial network, compiled once (cached on the Network object)."""

    def __init__(self, network: Network) -> None:
        import pandapower as pp
        from pandapower.pypower.idx_brch import BR_R, BR_STATUS, BR_X, F_BUS, RATE_A, SHIFT, T_BUS, TAP
        from pandapower.pypower.idx_bus import BUS_TYPE, NONE

        from grids.powerflow import FastPowerFlow

        src = network.net
        name = network.name
        if "gen" in src and len(src.gen) and src.gen["in_service"].astype(bool).any():
            raise NotRadialError(f"LinDistFlow DLMPs: network {name!r} has voltage-controlled generators "
                                 "(net.gen); LinDistFlow models a radial feeder with one slack — use dlmp_acopf")
        eg = src.ext_grid[src.ext_grid["in_service"].astype(bool)]
        if len(eg) != 1:
            raise NotRadialError(f"LinDistFlow DLMPs: network {name!r} needs exactly one in-service ext_grid, "
                                 f"has {len(eg)} — use dlmp_acopf")
        net = copy.deepcopy(src)
        for element in ("load", "sgen", "storage"):
            if element in net and len(net[element]):
                net[element]["in_service"] = False
        if len(net.line):
            net.line["max_loading_percent"] = float(network.max_line_loading_percent)
        if len(net.trafo):
            net.trafo["max_loading_percent"] = float(network.max_line_loading_percent)
        pp.runpp(net)
        ppc = net._ppc
        base = float(ppc["baseMVA"])
        bus = ppc["bus"]
        br = ppc["branch"]
        n_ppc = bus.shape[0]
        active = bus[:, BUS_TYPE] != NONE
        on = (np.real(br[:, BR_STATUS]) > 0)
        fb = np.real(br[:, F_BUS]).astype(int)
        tb = np.real(br[:, T_BUS]).astype(int)
        on &= active[fb] & active[tb]
        fb, tb = fb[on], tb[on]
        tap = np.real(br[on, TAP])
        shift = np.real(br[on, SHIFT])
        if (np.abs(np.where(tap == 0, 1.0, tap) - 1.0) > 1e-9).any() or (np.abs(shift) > 1e-9).any():
            raise NotRadialError(f"LinDistFlow DLMPs: network {name!r} has off-nominal transformer ratios or "
                                 "phase shifts, which LinDistFlow does not model — use dlmp_acopf")
        lookup = np.asarray(net._pd2ppc_lookups["bus"], dtype=np.int64)
        pd_idx = net.bus.index.to_numpy()
        ppc_of_pd = lookup[pd_idx]
        root_ppc = int(lookup[int(eg.bus.iloc[0])])
        n_act = int(active.sum())
        if len(fb) != n_act - 1:
            raise NotRadialError(
                f"LinDistFlow DLMPs need a radial network: {name!r} has {len(fb)} in-service branches for "
                f"{n_act} buses (a tree has {n_act - 1}); it is meshed or split. LinDistFlow does not apply to "
                "meshed networks — use dlmp_acopf")
        adj: list[list[tuple[int, int]]] = [[] for _ in range(n_ppc)]
        for e, (a, b) in enumerate(zip(fb, tb)):
            adj[a].append((b, e))
            adj[b].append((a, e))
        order = [root_ppc]
        parent_ppc = {root_ppc: -1}
        edge_of = {}
        head = 0
        while head < len(order):
            a = order[head]
            head += 1
            for b, e in adj[a]:
                if b not in parent_ppc:
                    parent_ppc[b] = a
                    edge_of[b] = e
                    order.append(b)
        if len(order) != n_act:
            raise NotRadialError(f"LinDistFlow DLMPs: {name!r} is not connected to its slack "
                                 f"({n_act - len(order)} buses unreachable) — use dlmp_acopf")
        m_of_ppc = np.full(n_ppc, -1, dtype=np.int64)
        m_of_ppc[np.array(order)] = np.arange(len(order))
        n = len(order)
        parent = np.full(n, -1, dtype=np.int64)
        r = np.zeros(n)
        x = np.zeros(n)
        s_max = np.full(n, np.inf)
        on_rows = np.nonzero(on)[0]
        for m in range(1, n):
            p = order[m]
            e = edge_of[p]
            parent[m] = m_of_ppc[parent_ppc[p]]
            row = on_rows[e]
            # series impedance in "1 MVA base" units, so that P, Q in MW/MVAr and v in pu² combine directly
            r[m] = float(np.real(br[row, BR_R])) / base
            x[m] = float(np.real(br[row, BR_X])) / base
            rate = float(np.real(br[row, RATE_A]))
            s_max[m] = rate if 0 < rate < 1e9 else np.inf
        self.n = n
        self.parent = parent
        self.r, self.x, self.s_max = r, x, s_max
        self.children: list[list[int]] = [[] for _ in range(n)]
        for m in range(1, n):
            self.children[parent[m]].append(m)
        self.m_of_pd = np.where(ppc_of_pd >= 0, m_of_ppc[np.clip(ppc_of_pd, 0, n_ppc - 1)], -1)
        self.m_of_pd[(ppc_of_pd < 0) | ~active[np.clip(ppc_of_pd, 0, n_ppc - 1)]] = -1
        self.v_ref = float(eg.vm_pu.iloc[0])
        self.pf = FastPowerFlow(src)
        # one pandapower bus per model bus, to read voltages from the power-flow result
        self.pd_of_m = np.zeros(n, dtype=np.int64)
        for i, m in enumerate(self.m_of_pd):
            if m >= 0:
                self.pd_of_m[m] = i


def _radial_model(network: Network) -> _RadialModel:
    """The compiled radial model of a network, cached on it (rebuilt if the net object or the line limit changes;
    like the power-flow engine, it does not notice in-place edits of the net's tables)."""
    key = (id(network.net), float(network.max_line_loading_percent))
    model = getattr(network, "_dlmp_radial_model", None)
    if model is None or getattr(model, "_key", None) != key:
        model = _RadialModel(network)
        model._key = key  # type: ignore[attr-defined]
        network._dlmp_radial_model = model  # type: ignore[attr-defined]
    return model


@dataclass
class _Units:
    """Every dispatchable quantity of a slot as LP columns (generator convention)."""

    bus_m: np.ndarray      # model bus per column
    kind: np.ndarray       # 0 = P column, 1 = Q column
    lo: np.ndarray
    hi: np.ndarray
    cost: np.ndarray
    owner: np.ndarray      # unit id per column
    group: np.ndarray      # trust-region group per column (one per unit and kind; -1 = the substation)
    unit_kind: list[str]   # per unit: "slack", "dg", "ren", "ev"
    unit_pd: list[int]     # per unit: pandapower bus position (-1 for the substation)

    @property
    def n_groups(self) -> int:
        return int(self.group.max()) + 1 if self.group.size else 0

    def group_total(self, x: np.ndarray) -> np.ndarray:
        g = self.group >= 0
        return np.bincount(self.group[g], weights=x[g], minlength=self.n_groups)

    def group_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        g = self.group >= 0
        return (np.bincount(self.group[g], weights=self.lo[g], minlength=self.n_groups),
                np.bincount(self.group[g], weights=self.hi[g], minlength=self.n_groups))


def _units(network: Network, model: _RadialModel, inp: _Inputs, k: int, n_seg: int, s_sub: float) -> _Units:
    bus_m, kind, lo, hi, cost, owner, group = [], [], [], [], [], [], []
    unit_kind: list[str] = []
    unit_pd: list[int] = []
    n_group = [0]

    def unit(kd: str, i: int) -> None:
        unit_kind.append(kd)
        unit_pd.append(i)

    def col(m: int, kd: int, a: float, b: float, c: float, new_group: bool = True) -> None:
        bus_m.append(m), kind.append(kd), lo.append(a), hi.append(b), cost.append(c), owner.append(len(unit_kind))
        if new_group:
            n_group[0] += 1
        group.append(n_group[0] - 1)

    bus_m += [0, 0]
    kind += [0, 1]
    lo += [-s_sub, -s_sub]
    hi += [s_sub, s_sub]
    cost += [float(inp.price[k]), float(inp.q_price[k])]
    owner += [0, 0]
    group += [-1, -1]
    unit("slack", -1)
    for d in network.dgs:
        i = inp.pos[int(d.bus)]
        m = int(model.m_of_pd[i])
        pmax = d.p_max_kw / 1e3
        edges = np.linspace(0.0, pmax, n_seg + 1)
        for s_, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            col(m, 0, 0.0, b - a, d.cost_b + d.cost_a * (a + b), new_group=(s_ == 0))  # secant of A·P² + B·P
        col(m, 1, 0.0, _dg_q_max_mw(d), d.q_cost_usd_per_mvarh)
        unit("dg", i)
    for j, d in enumerate(network.renewables):
        i = inp.pos[int(d.bus)]
        m = int(model.m_of_pd[i])
        col(m, 0, 0.0, float(inp.ren_mw[k, j]), 0.0)
        unit("ren", i)
    for e in inp.evs:
        i = inp.pos[int(e.bus)]
        m = int(model.m_of_pd[i])
        plo, phi, qlo, qhi = e.injection_box_mw()
        col(m, 0, plo, phi, float(e.cost_usd_per_mwh))
        col(m, 1, qlo, qhi, 0.0)
        unit("ev", i)
    for i in unit_pd:
        if i >= 0 and model.m_of_pd[i] < 0:
            raise DLMPInputError("a DER or EV sits on a bus that is out of service")
    return _Units(np.array(bus_m, dtype=np.int64), np.array(kind, dtype=np.int64), np.array(lo, float),
                  np.array(hi, float), np.array(cost, float), np.array(owner, dtype=np.int64),
                  np.array(group, dtype=np.int64), unit_kind, unit_pd)


def _unit_dispatch(units: _Units, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_units = len(units.unit_kind)
    p = np.bincount(units.owner, weights=np.where(units.kind == 0, x, 0.0), minlength=n_units)
    q = np.bincount(units.owner, weights=np.where(units.kind == 1, x, 0.0), minlength=n_units)
    return p, q


def _initial_dispatch(units: _Units, price: float) -> np.ndarray:
    """Column values of a first guess: DGs at the economic rule, renewables at availability, EVs at 0 clipped."""
    x = np.clip(0.0, units.lo, units.hi)
    ren = (units.kind == 0) & np.isin(units.owner, [u for u, kd in enumerate(units.unit_kind) if kd == "ren"])
    x[ren] = units.hi[ren]
    dg_cols = (units.kind == 0) & np.isin(units.owner, [u for u, kd in enumerate(units.unit_kind) if kd == "dg"])
    x[dg_cols] = np.where(units.cost[dg_cols] < price, units.hi[dg_cols], 0.0)
    return x


def _net_load_pd(inp: _Inputs, k: int, units: _Units, p_u: np.ndarray, q_u: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    p = inp.p_mw[k].copy()
    q = inp.q_mvar[k].copy()
    for u, i in enumerate(units.unit_pd):
        if i >= 0:
            p[i] -= p_u[u]
            q[i] -= q_u[u]
    return p, q


def _base_point(model: _RadialModel, vm: np.ndarray, va_deg: np.ndarray, base_ok: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sending-end flows P̄, Q̄ [MW, MVAr] per branch (indexed by child) and v̄ = |V|² per model bus."""
    n = model.n
    if not base_ok:
        return np.zeros(n), np.zeros(n), np.full(n, model.v_ref**2)
    V = vm[model.pd_of_m] * np.exp(1j * np.deg2rad(va_deg[model.pd_of_m]))
    P = np.zeros(n)
    Q = np.zeros(n)
    ch = np.arange(1, n)
    par = model.parent[ch]
    z = model.r[ch] + 1j * model.x[ch]
    S = V[par] * np.conj((V[par] - V[ch]) / z)          # MVA with z in "1 MVA base" units
    P[ch], Q[ch] = S.real, S.imag
    return P, Q, np.abs(V) ** 2


_K_POLY = 16


def _solve_lp(model: _RadialModel, inp: _Inputs, k: int, units: _Units, Pb: np.ndarray, Qb: np.ndarray,
              vb: np.ndarray, tr_lo: np.ndarray, tr_hi: np.ndarray) -> dict[str, Any] | None:
    """Build and solve one slot's LP around the base point; None if HiGHS finds no optimum.

    ``tr_lo``/``tr_hi`` bound each unit group's total (the trust region of the sequential LP).
    """
    import highspy
    import scipy.sparse as sp

    n = model.n
    nb = n - 1
    ch = np.arange(1, n)
    par = model.parent[ch]
    r, x = model.r[ch], model.x[ch]
    vpar = vb[par]
    ell = (Pb[ch] ** 2 + Qb[ch] ** 2) / vpar
    aP = 2 * r * Pb[ch] / vpar
    bP = 2 * r * Qb[ch] / vpar
    aQ = 2 * x * Qb[ch] / vpar
    bQ = 2 * x * Pb[ch] / vpar
    # columns
    cP = np.arange(nb)
    cQ = nb + np.arange(nb)
    cV = 2 * nb + np.arange(n)
    cU = 3 * nb + 1 + np.arange(len(units.lo))
    n_col = int(cU[-1]) + 1 if len(cU) else 3 * nb + 1
    # rows: balP (n), balQ (n), vdrop (nb), polygons
    rP, rQ, rV = 0, n, 2 * n
    rows, cols, vals = [], [], []

    def add(rr: Any, cc: Any, vv: Any) -> None:
        rr, cc, vv = np.broadcast_arrays(np.asarray(rr), np.asarray(cc), np.asarray(vv, dtype=float))
        rows.append(rr.ravel()), cols.append(cc.ravel()), vals.append(vv.ravel())

    add(rP + ch, cP, 1 - aP)
    add(rP + ch, cQ, -bP)
    add(rQ + ch, cQ, 1 - aQ)
    add(rQ + ch, cP, -bQ)
    add(rP + par, cP, -1.0)
    add(rQ + par, cQ, -1.0)
    add(rV + cP, cV[ch], 1.0)
    add(rV + cP, cV[par], -1.0)
    add(rV + cP, cP, 2 * r)
    add(rV + cP, cQ, 2 * x)
    m_of_pd = model.m_of_pd
    ok = m_of_pd >= 0
    inp_bal = np.bincount(m_of_pd[ok], weights=inp.p_mw[k][ok], minlength=n)
    inq_bal = np.bincount(m_of_pd[ok], weights=inp.q_mvar[k][ok], minlength=n)
    rhsP = inp_bal.copy()
    rhsQ = inq_bal.copy()
    rhsP[ch] -= r * ell
    rhsQ[ch] -= x * ell
    rhsV = (r**2 + x**2) * ell
    # units
    isP = units.kind == 0
    add(np.where(isP, rP, rQ) + units.bus_m, cU, 1.0)
    # thermal polygons
    # thermal limits: 16 fixed facets plus one tangent at the base point's flow angle (exact there)
    lim = np.nonzero(np.isfinite(model.s_max[ch]))[0]
    n_fac = _K_POLY + 1
    theta = np.hstack([np.tile(2 * np.pi * np.arange(_K_POLY) / _K_POLY, (len(lim), 1)),
                       np.arctan2(Qb[ch][lim], Pb[ch][lim])[:, None]])
    n_row_base = 2 * n + nb
    if len(lim):
        poly_rows = n_row_base + np.arange(len(lim) * n_fac).reshape(len(lim), n_fac)
        add(poly_rows, cP[lim][:, None], np.cos(theta))
        add(poly_rows, cQ[lim][:, None], np.sin(theta))
        poly_ub = np.repeat(model.s_max[ch][lim] * np.sqrt(vpar[lim]), n_fac)
    else:
        poly_ub = np.zeros(0)
    # trust region: one row per unit group (a DG's P segments form one group)
    g_cols = units.group >= 0
    n_row_tr = n_row_base + poly_ub.size
    add(n_row_tr + units.group[g_cols], cU[g_cols], 1.0)
    n_row = n_row_tr + units.n_groups
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_row, n_col))
    inf = highspy.kHighsInf
    col_lo = np.full(n_col, -inf)
    col_hi = np.full(n_col, inf)
    col_lo[cV] = inp.v_min**2
    col_hi[cV] = inp.v_max**2
    col_lo[cV[0]] = col_hi[cV[0]] = model.v_ref**2
    col_lo[cU] = units.lo
    col_hi[cU] = units.hi
    cost = np.zeros(n_col)
    cost[cU] = units.cost
    row_lo = np.concatenate([rhsP, rhsQ, rhsV, np.full(poly_ub.size, -inf), tr_lo])
    row_hi = np.concatenate([rhsP, rhsQ, rhsV, poly_ub, tr_hi])

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    lp = highspy.HighsLp()
    lp.num_col_ = n_col
    lp.num_row_ = n_row
    lp.col_cost_ = cost
    lp.col_lower_ = col_lo
    lp.col_upper_ = col_hi
    lp.row_lower_ = row_lo
    lp.row_upper_ = row_hi
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    sol = h.getSolution()
    xs = np.asarray(sol.col_value)
    y = np.asarray(sol.row_dual)
    z = np.asarray(sol.col_dual)
    return dict(x_units=xs[cU], v=xs[cV], lamP=y[rP:rP + n], lamQ=y[rQ:rQ + n], beta=y[rV:rV + nb],
                eta=y[n_row_base:n_row_tr].reshape(len(lim), n_fac),
                lim=lim, theta=theta, z_v=z[cV], aP=aP, bP=bP, aQ=aQ, bQ=bQ)


def _decompose(model: _RadialModel, sol: dict[str, Any], price: float, q_price: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Components of λP and λQ per model bus: arrays (n, 4) in the order energy, loss, congestion, voltage."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu

    n = model.n
    nb = n - 1
    ch = np.arange(1, n)
    par = model.parent[ch]
    b_of = np.full(n, -1)
    b_of[ch] = ch - 1
    r, x = model.r[ch], model.x[ch]
    aP, bP, aQ, bQ = sol["aP"], sol["bP"], sol["aQ"], sol["bQ"]
    iP, iQ, iB = np.arange(nb), nb + np.arange(nb), 2 * nb + np.arange(nb)
    rows, cols, vals = [], [], []

    def add(rr: Any, cc: Any, vv: Any) -> None:
        rr, cc, vv = np.broadcast_arrays(np.asarray(rr), np.asarray(cc), np.asarray(vv, dtype=float))
        rows.append(rr.ravel()), cols.append(cc.ravel()), vals.append(vv.ravel())

    # stationarity of P_ij:  (1−aP)λP_j − bQ λQ_j − λP_i + 2r β_ij + Σ cos θ η = 0
    add(iP, iP, 1 - aP)
    add(iP, iQ, -bQ)
    add(iP, iB, 2 * r)
    # stationarity of Q_ij:  (1−aQ)λQ_j − bP λP_j − λQ_i + 2x β_ij + Σ sin θ η = 0
    add(iQ, iQ, 1 - aQ)
    add(iQ, iP, -bP)
    add(iQ, iB, 2 * x)
    nonroot_par = par > 0
    add(iP[nonroot_par], iP[b_of[par[nonroot_par]]], -1.0)
    add(iQ[nonroot_par], iQ[b_of[par[nonroot_par]]], -1.0)
    # stationarity of v_j (j not the root):  β_ij − Σ_k β_jk = −z_j
    add(iB, iB, 1.0)
    add(iB[b_of[par[nonroot_par]]], iB[nonroot_par], -1.0)
    M = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(3 * nb, 3 * nb))
    lu = splu(M)

    lamP0 = float(sol["lamP"][0])
    lamQ0 = float(sol["lamQ"][0])
    at_root = ~nonroot_par

    def root_rhs(p0: float, q0: float) -> np.ndarray:
        rhs = np.zeros(3 * nb)
        rhs[iP[at_root]] = p0
        rhs[iQ[at_root]] = q0
        return rhs

    rhs_line = np.zeros(3 * nb)
    if len(sol["lim"]):
        eta = sol["eta"]
        rhs_line[iP[sol["lim"]]] = -(eta * np.cos(sol["theta"])).sum(axis=1)
        rhs_line[iQ[sol["lim"]]] = -(eta * np.sin(sol["theta"])).sum(axis=1)
    rhs_volt = np.zeros(3 * nb)
    rhs_volt[iB] = -sol["z_v"][ch]
    u_energy = lu.solve(root_rhs(price, q_price))
    u_cong = lu.solve(root_rhs(lamP0 - price, lamQ0 - q_price) + rhs_line)
    u_volt = lu.solve(rhs_volt)
    cp = np.zeros((n, 4))
    cq = np.zeros((n, 4))
    cp[:, 0], cq[:, 0] = price, q_price
    cp[ch, 1] = u_energy[iP] - price
    cq[ch, 1] = u_energy[iQ] - q_price
    cp[0, 2], cq[0, 2] = lamP0 - price, lamQ0 - q_price
    cp[ch, 2], cq[ch, 2] = u_cong[iP], u_cong[iQ]
    cp[ch, 3], cq[ch, 3] = u_volt[iP], u_volt[iQ]
    return cp, cq


def dlmp_lindistflow(
    network: Network,
    p_load_kw: Any,
    q_load_kvar: Any,
    *,
    price_usd_per_mwh: Any,
    q_price_usd_per_mvarh: Any = 0.0,
    renewable_kw: Any = None,
    ev: Sequence[FlexibleEV] | None = None,
    v_min_pu: float | None = None,
    v_max_pu: float | None = None,
    n_iter: int = 15,
    tol_kw: float = 1.0,
    dg_segments: int = 10,
) -> pd.DataFrame:
    """DLMPs and their decomposition from a linearised branch-flow LP per slot (HiGHS; module docstring).

    Same market model and arguments as :func:`dlmp_acopf`. Radial networks only.

    Args:
        network: a radial grid (not modified; its compiled topology is cached on it).
        p_load_kw: fixed active load per bus [kW], shape (n_slots, n_bus) in ``net.bus`` order (1-D = one slot).
        q_load_kvar: fixed reactive load per bus [kVAr], same shape.
        price_usd_per_mwh: substation energy price per slot [$/MWh], scalar or shape (n_slots,).
        q_price_usd_per_mvarh: substation reactive price [$/MVArh], scalar or shape (n_slots,).
        renewable_kw: renewable availability [kW], shape (n_slots, n_renewables); None = no renewable output.
        ev: flexible EV aggregates, the same in every slot.
        v_min_pu: lower voltage limit [pu]; None = ``network.v_min_pu``.
        v_max_pu: upper voltage limit [pu]; None = ``network.v_max_pu``.
        n_iter: maximum number of LPs per slot (sequential LP: re-linearisation at the AC power flow of the
            last dispatch, with a trust region that halves for a unit whose move changes direction).
        tol_kw: the sequential LP stops when no unit moves by more than this [kW / kVAr].
        dg_segments: piecewise-linear segments per quadratic DG cost.

    Returns:
        The tidy DLMP table with the decomposition columns (module docstring), ``method = "lindistflow"``.

    Raises:
        NotRadialError: meshed network, several slacks, ``net.gen`` generators or off-nominal taps.
        DLMPInputError: bad shapes, NaN, unknown EV bus, inconsistent EV box.
    """
    if int(n_iter) < 1 or int(dg_segments) < 1 or not tol_kw > 0:
        raise DLMPInputError("n_iter and dg_segments must be >= 1 and tol_kw > 0")
    tol = float(tol_kw) / 1e3
    inp = _inputs(network, p_load_kw, q_load_kvar, price_usd_per_mwh, q_price_usd_per_mvarh, renewable_kw, ev,
                  v_min_pu, v_max_pu)
    model = _radial_model(network)
    extra = COMPONENTS_P + COMPONENTS_Q + ("vm_lp_pu", "iterations", "decomposition_residual")
    rows: list[dict[str, Any]] = []
    n_slots = inp.p_mw.shape[0]
    s_sub = float(network.substation_mva)
    m_pd = model.m_of_pd
    for k in range(n_slots):
        t0 = time.perf_counter()
        units = _units(network, model, inp, k, int(dg_segments), s_sub)
        x_units = _initial_dispatch(units, float(inp.price[k]))
        g_lo, g_hi = units.group_bounds()
        delta = g_hi - g_lo
        g_base = units.group_total(x_units)
        prev_move = np.zeros_like(g_base)
        bisect = np.zeros(g_base.shape, dtype=bool)
        sol = None
        it = 0
        move_max = np.inf
        for it in range(1, int(n_iter) + 1):
            p_u, q_u = _unit_dispatch(units, x_units)
            pl, ql = _net_load_pd(inp, k, units, p_u, q_u)
            pf_res = model.pf.solve(pl, ql)
            Pb, Qb, vb = _base_point(model, pf_res.vm_pu, pf_res.va_degree, pf_res.converged)
            sol = _solve_lp(model, inp, k, units, Pb, Qb, vb, np.maximum(g_lo, g_base - delta),
                            np.minimum(g_hi, g_base + delta))
            if sol is None and (delta < g_hi - g_lo).any():   # the trust region cut off every feasible point
                sol = _solve_lp(model, inp, k, units, Pb, Qb, vb, g_lo, g_hi)
            if sol is None:
                break
            g_new = units.group_total(sol["x_units"])
            move = g_new - g_base
            moving = np.abs(move) > tol
            flip = moving & (move * prev_move < 0)
            # a group that reversed has bracketed its optimum: from then on its step bound halves every LP
            delta = np.where(flip, 0.5 * np.abs(move), np.where(bisect, 0.5 * delta, delta))
            bisect |= flip
            prev_move = np.where(moving, move, prev_move)
            x_units, g_base = sol["x_units"], g_new
            move_max = float(np.abs(move).max()) if move.size else 0.0
            if move_max <= tol:
                break
        if sol is None:
            rows += _failed_slot("lindistflow", k, inp, "LinDistFlow LP infeasible (limits cannot be met)",
                                 extra, time.perf_counter() - t0)
            continue
        cp, cq = _decompose(model, sol, float(inp.price[k]), float(inp.q_price[k]))
        resid = float(max(np.max(np.abs(cp.sum(axis=1) - sol["lamP"])), np.max(np.abs(cq.sum(axis=1) - sol["lamQ"]))))
        # physical evaluation of the final dispatch
        p_u, q_u = _unit_dispatch(units, x_units)
        pl, ql = _net_load_pd(inp, k, units, p_u, q_u)
        pf_res = model.pf.solve(pl, ql)
        dt = time.perf_counter() - t0
        dg_u = [u for u, kd in enumerate(units.unit_kind) if kd == "dg"]
        cost = _dg_cost(network, p_u[dg_u], q_u[dg_u])
        cost += sum(float(e.cost_usd_per_mwh) * p_u[u] for u, e in
                    zip([u for u, kd in enumerate(units.unit_kind) if kd == "ev"], inp.evs))
        if pf_res.converged:
            grid_p, grid_q, losses = pf_res.ext_grid_p_mw, pf_res.ext_grid_q_mvar, pf_res.losses_mw
            cost += inp.price[k] * grid_p + inp.q_price[k] * grid_q
            vm = pf_res.vm_pu
            msg = "" if move_max <= tol else (f"sequential LP stopped after {it} LPs with a unit still moving by "
                                              f"{move_max * 1e3:.3g} kW")
        else:
            grid_p = grid_q = losses = np.nan
            cost = np.nan
            vm = np.full(len(inp.bus_index), np.nan)
            msg = "AC power flow at the LP dispatch did not converge (prices are the LP's)"
        gen_p = np.zeros(len(inp.bus_index))
        gen_q = np.zeros(len(inp.bus_index))
        ev_p = np.zeros(len(inp.bus_index))
        ev_q = np.zeros(len(inp.bus_index))
        for u, (kd, i) in enumerate(zip(units.unit_kind, units.unit_pd)):
            if kd == "ev":
                ev_p[i] -= p_u[u] * 1e3
                ev_q[i] -= q_u[u] * 1e3
            elif kd in ("dg", "ren"):
                gen_p[i] += p_u[u] * 1e3
                gen_q[i] += q_u[u] * 1e3
        slot = dict(converged=True, total_cost_usd_per_h=float(cost), losses_kw=float(losses) * 1e3,
                    grid_p_kw=float(grid_p) * 1e3, grid_q_kvar=float(grid_q) * 1e3, solve_time_s=dt, message=msg,
                    iterations=it, decomposition_residual=resid)
        v_lp = np.sqrt(np.maximum(sol["v"], 0.0))
        for i, b in enumerate(inp.bus_index):
            m = int(m_pd[i])
            if m < 0:
                row = _failed_slot("lindistflow", k, inp, "bus out of service", extra)[i]
                row.update(slot, converged=True)
                rows.append(row)
                continue
            row = dict(method="lindistflow", slot=k, bus=int(b), lam_p_usd_per_mwh=float(sol["lamP"][m]),
                       lam_q_usd_per_mvarh=float(sol["lamQ"][m]), vm_pu=float(vm[i]), gen_p_kw=gen_p[i],
                       gen_q_kvar=gen_q[i], ev_p_kw=ev_p[i], ev_q_kvar=ev_q[i])
            for c, v in zip(COMPONENTS_P, cp[m]):
                row[c] = float(v)
            for c, v in zip(COMPONENTS_Q, cq[m]):
                row[c] = float(v)
            row["vm_lp_pu"] = float(v_lp[m])
            row.update(slot)
            rows.append(row)
    return _frame(rows)
