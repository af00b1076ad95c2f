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

Layout: :mod:`~grids.dlmp.common` (result columns, input checks, :class:`FlexibleEV`, errors),
:mod:`~grids.dlmp.acopf` (a), :mod:`~grids.dlmp.radial` (the compiled radial model) and
:mod:`~grids.dlmp.lindistflow` (b, with the decomposition). The DSO's per-step DG dispatch: :class:`OpfDispatch` (AC OPF, in
:mod:`~grids.dlmp.acopf`) and :class:`LinDistFlowDispatch` (one LinDistFlow QP per step, in
:mod:`~grids.dlmp.lindist_dispatch`). Everything public is importable from :mod:`grids.dlmp`.
"""

from __future__ import annotations

from grids.dlmp.acopf import OpfDispatch, dlmp_acopf
from grids.dlmp.common import (
    COMPONENTS_P,
    COMPONENTS_Q,
    SLOT_COLUMNS,
    DLMPInputError,
    FlexibleEV,
    NotRadialError,
    slot_summary,
)
from grids.dlmp.lindist_dispatch import LinDistFlowDispatch, radial_problem
from grids.dlmp.lindistflow import dlmp_lindistflow

__all__ = [
    "OpfDispatch",
    "LinDistFlowDispatch",
    "radial_problem",
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
