"""The DSO agent: owns the grid, dispatches DGs, runs the power flow every step, and curtails EV load.

**DG dispatch rule** (economic dispatch against the step's energy price λ [$/MWh]): a DG with cost
``A·P² + B·P + C`` [$/h, P in MW] produces ``P* = clip((λ − B) / 2A, 0, P_max)`` — it runs whenever its marginal
cost is below the price; the no-load cost ``C`` is paid in every step it runs. Reactive output follows its power
factor. (With `002_…`'s Table 4 price range, 0.75–1.35 × 84 $/MWh, the B = 60 unit therefore always runs and the
B = 85 unit runs above 85 $/MWh; the paper's remark that DGs stop in the early morning holds only for its other,
eq. 4 price range.) **Voltage support**: if the grid violates a limit with the economic dispatch, the DSO first
raises every DG to its rating (the extra cost is counted) before it touches EV load.

**OPF dispatch** (``grid.dispatch = "opf"``): instead, every step the DSO dispatches its DGs with the AC OPF
(`grids.dlmp.OpfDispatch`, pandapower ``runopp`` warm-started from the previous step): least substation energy at the
step's price plus DG cost, within voltage, line, transformer and substation limits, renewables curtailed only where
a limit binds — the network co-optimisation of `002_…`. The load it dispatches against is the step's whole load,
EV load included. ``grid.dispatch = "lindistflow"`` does the same on radial feeders with one convex QP per step on
the LinDistFlow model (`grids.dlmp.LinDistFlowDispatch`, 40–65× cheaper). A step whose OPF or QP has no solution
uses the merit order and is flagged (``GridStep.dispatch_failed``: the step table's ``dispatch_failed``, the KPI
``opf_failed_steps``), never raised. The limit check and curtailment below follow either way.

**Curtailment rule** (documented, deterministic): after the power flow, the DSO checks bus voltages against
``[v_min_pu, v_max_pu]``, line loading against ``max_line_loading_percent``, transformer loading against
``max_trafo_loading_percent`` and the T–D interface against the substation rating. EV load may only be blamed
for what it adds: each limit is relaxed to the value the grid would have without any EV load (one extra power
flow), so a base-load violation never makes EVs stop. If a violation remains, EV load at bus ``i`` is scaled by
``1 − α·w_i`` (floored at 0), where ``w_i`` is bus ``i``'s voltage sensitivity toward the worst bus (mutual
resistance ``Re Z_ki``, clipped at 0, normalised to 1 at the most effective bus), or ``w_i = 1`` for thermal
violations; ``α`` is the smallest value (bisection, 12 power flows at most) that clears the violations. EV buses
with zero sensitivity (another feeder, behind a transformer the approximation does not see) are not curtailed for
a voltage violation; if curtailing every sensitive bus does not clear it, the weights fall back to ``w_i = 1``
(one more power flow). ``α`` is always finite, so the factors are never NaN. A power flow that fails (see
`grids.powerflow`: no physical solution even after its retries) counts as a violation; if it still fails with
all EV charging withheld, the step is returned with that failed power flow and is flagged in the recorder.
Curtailment only ever reduces charging; V2G discharge is left as scheduled.

**Volt/VAr droop** (optional): the chargers at each bus inject or absorb ``Q = curve(V_bus) · S_bus`` clipped
to the headroom ``sqrt(S_bus² − P_bus²)``, where ``S_bus`` is the summed apparent-power rating of the plugged
chargers and ``P_bus`` their power (the bus aggregate stands in for the per-charger sum; they are equal for
identical chargers). The equilibrium of curve and power flow is found by damped fixed-point iteration inside
every power flow, so curtailment sees the grid with its reactive support.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mesa
import numpy as np

from grids.network import Network
from grids.powerflow import FastPowerFlow, PandapowerPowerFlow, PowerFlowResult

if TYPE_CHECKING:  # pragma: no cover
    from sim.model import CoSimulation

_TOL_V = 1e-6
_TOL_LOADING = 1e-6


@dataclass
class GridStep:
    """What the DSO reports for one step."""

    pf: PowerFlowResult
    ev_factor_bus: np.ndarray  # share of each bus's EV charging load that was allowed (1 = none curtailed)
    dg_p_kw: np.ndarray
    dg_q_kvar: np.ndarray
    dg_cost_usd_per_h: float
    renewable_kw: np.ndarray
    n_pf: int
    curtailed: bool
    ev_q_kvar: np.ndarray | None = None  # reactive injection of EV chargers per bus [kVAr] (+ = inject)
    dispatch_failed: bool = False  # grid.dispatch "opf"/"lindistflow": no solution, merit order dispatched the DGs


def dg_cost_usd_per_h(network: Network, dg_p_kw: np.ndarray, dg_q_kvar: np.ndarray) -> float:
    """Cost of a DG dispatch [$/h]: ``A·P² + B·P + C`` (P in MW) for every DG that runs, plus its reactive output
    at ``q_cost_usd_per_mvarh``."""
    cost = 0.0
    for d, p_kw, q_kvar in zip(network.dgs, dg_p_kw, dg_q_kvar, strict=True):
        if p_kw > 1e-6:
            pm = p_kw / 1000.0
            cost += d.cost_a * pm**2 + d.cost_b * pm + d.cost_c + q_kvar / 1000.0 * d.q_cost_usd_per_mvarh
    return cost


def dg_dispatch(
    network: Network, price_usd_per_mwh: float, *, full: bool = False
) -> tuple[np.ndarray, np.ndarray, float]:
    """Economic DG dispatch (see module docstring): (P [kW], Q [kVAr], cost [$/h]) per DG.

    Args:
        network: the grid and its DGs.
        price_usd_per_mwh: energy price of the step [$/MWh].
        full: every DG at its rating (voltage support) instead of the economic output.
    """
    dgs = network.dgs
    p = np.zeros(len(dgs))
    q = np.zeros(len(dgs))
    cost = 0.0
    for j, d in enumerate(dgs):
        pmax = d.p_max_kw / 1000.0
        if full or d.cost_a <= 0:
            pstar = pmax if (full or price_usd_per_mwh > d.cost_b) else 0.0
        else:
            pstar = float(np.clip((price_usd_per_mwh - d.cost_b) / (2 * d.cost_a), 0.0, pmax))
        if pstar > 0:
            p[j] = pstar * 1000.0
            q[j] = p[j] * np.tan(np.arccos(d.pf))
            cost += d.cost_a * pstar**2 + d.cost_b * pstar + d.cost_c + q[j] / 1000.0 * d.q_cost_usd_per_mvarh
    return p, q, cost


class DSO(mesa.Agent):
    """Grid operator: power flow, limits, curtailment (see module docstring)."""

    def __init__(
        self,
        model: CoSimulation,
        network: Network,
        engine: FastPowerFlow | PandapowerPowerFlow,
        *,
        curtail: bool = True,
        volt_var: tuple[np.ndarray, np.ndarray] | None = None,
        dispatch: str = "merit",
    ) -> None:
        super().__init__(model)
        self.network = network
        # grid.dispatch = "opf" / "lindistflow": what dispatches the DGs each step (AC OPF, or one LinDistFlow QP)
        self.opf: Any = None
        if dispatch in ("opf", "lindistflow") and network.dgs:
            from grids.dlmp import LinDistFlowDispatch, OpfDispatch

            self.opf = OpfDispatch(network) if dispatch == "opf" else LinDistFlowDispatch(network)
        self.engine = engine
        self.volt_var = volt_var
        if hasattr(engine, "reset_warm_start"):
            engine.reset_warm_start()  # a run must not depend on what an earlier run left in the engine
        self.curtail = curtail
        self._r = network.sensitivity_r() if curtail else None
        self._dg_bus = np.array([d.bus for d in network.dgs], int)
        self._ren_bus = np.array([d.bus for d in network.renewables], int)
        self.pf_time_s = 0.0
        self.n_pf = 0

    def _solve(self, p_mw: np.ndarray, q_mvar: np.ndarray, *, probe: bool = False) -> PowerFlowResult:
        """One power flow. ``probe``: a bisection trial whose failure only means "curtail more", so the fast
        engine's pandapower fallback (two ``pp.runpp`` of up to 50 iterations, ~60 % of a 100 k-EV day when the
        feeder is overloaded) is skipped; the step's recorded solution always has the full fallback."""
        import time

        t = time.perf_counter()
        fast: Any = getattr(self.engine, "inner", self.engine)  # under the generators' load-following wrapper
        keep = getattr(fast, "fallback", None)
        if probe and keep:
            fast.fallback = False
        try:
            res = self.engine.solve(p_mw, q_mvar)
        finally:
            if probe and keep:
                fast.fallback = keep
        self.pf_time_s += time.perf_counter() - t
        self.n_pf += 1
        return res

    def _limits_ok(
        self,
        res: PowerFlowResult,
        v_lo: np.ndarray,
        v_hi: np.ndarray,
        load_hi: np.ndarray,
        s_hi: float,
        trafo_hi: np.ndarray | None = None,
    ) -> bool:
        """Whether a converged power flow respects the (relaxed) limits: voltages [pu], line and transformer
        loading [%], T–D apparent power [MVA]. A failed power flow never does."""
        if not res.converged:
            return False
        vm = res.vm_pu
        in_band = (vm >= v_lo - _TOL_V) & (vm <= v_hi + _TOL_V)
        # buses pandapower drops (out of service, isolated) have no voltage (NaN) and are not judged; the NaN test
        # only runs when a bus is out of band (this check runs several times a step: the gym's hot path)
        if not (in_band.all() or (in_band | np.isnan(vm)).all()):
            return False
        return bool(
            (res.line_loading_percent <= load_hi + _TOL_LOADING).all()
            and np.hypot(res.ext_grid_p_mw, res.ext_grid_q_mvar) <= s_hi + 1e-9
            and (trafo_hi is None or (res.trafo_loading_percent <= trafo_hi + _TOL_LOADING).all())
        )

    def _fixed_injections(
        self,
        p_base_kw: np.ndarray,
        q_base_kvar: np.ndarray,
        price_usd_per_mwh: float,
        renewable_kw: np.ndarray,
        *,
        full: bool = False,
        opf: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """Net load per bus without EVs (non-EV load − DGs − renewables) and the DG dispatch behind it: merit order
        (`dg_dispatch`), or the OPF's (DG P, DG Q, renewable output) when ``opf`` is given."""
        if opf is None:
            dg_p, dg_q, dg_cost = dg_dispatch(self.network, price_usd_per_mwh, full=full)
        else:
            dg_p, dg_q, renewable_kw = opf
            dg_cost = dg_cost_usd_per_h(self.network, dg_p, dg_q)
        p = p_base_kw.copy()
        q = q_base_kvar.copy()
        np.add.at(p, self._dg_bus, -dg_p)
        np.add.at(q, self._dg_bus, -dg_q)
        np.add.at(p, self._ren_bus, -renewable_kw)
        return p, q, dg_p, dg_q, dg_cost

    def forecast_vm(
        self, p_load_kw: np.ndarray, q_load_kvar: np.ndarray, price_usd_per_mwh: np.ndarray, renewable_kw: np.ndarray
    ) -> np.ndarray:
        """Bus voltages [pu] for forecast slots (rows), DGs at their economic dispatch; NaN → 1 where unsolved.

        Used to give market mechanisms the voltage headroom (LinDistFlow constraint) of future slots.
        """
        import time

        vm = np.ones_like(p_load_kw)
        if not len(p_load_kw):
            return vm
        fixed = [
            self._fixed_injections(p_load_kw[j], q_load_kvar[j], float(price_usd_per_mwh[j]), renewable_kw[j])[:2]
            for j in range(len(p_load_kw))
        ]
        t = time.perf_counter()
        # the slots solved together (grids.powerflow.batch: one shared Jacobian, every snapshot still checked)
        out = self.engine.solve_batch(
            np.stack([p for p, _ in fixed]) / 1000.0, np.stack([q for _, q in fixed]) / 1000.0
        )
        self.pf_time_s += time.perf_counter() - t
        self.n_pf += len(out)
        for j, res in enumerate(out):
            if res.converged:
                vm[j] = np.nan_to_num(res.vm_pu, nan=1.0)
        return vm

    def dlmp(
        self,
        method: str,
        p_load_kw: np.ndarray,
        q_load_kvar: np.ndarray,
        price_usd_per_mwh: np.ndarray,
        q_price_usd_per_mvarh: float,
        renewable_kw: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Active and reactive DLMPs per slot and bus [$/MWh, $/MVArh] for forecast loads (`grids.dlmp`).

        Slots whose OPF/LP fails fall back to the system price (λP) and 0 (λQ); their number is returned, so a
        failure is counted, never hidden.
        """
        from grids.dlmp import dlmp_acopf, dlmp_lindistflow

        fn = dlmp_lindistflow if method == "lindistflow" else dlmp_acopf
        table = fn(
            self.network,
            p_load_kw,
            q_load_kvar,
            price_usd_per_mwh=price_usd_per_mwh,
            q_price_usd_per_mvarh=q_price_usd_per_mvarh,
            renewable_kw=renewable_kw,
        )
        n, nb = p_load_kw.shape
        lam_p = table["lam_p_usd_per_mwh"].to_numpy(float).reshape(n, nb)
        lam_q = table["lam_q_usd_per_mvarh"].to_numpy(float).reshape(n, nb)
        failed = ~table["converged"].to_numpy(bool).reshape(n, nb).all(axis=1)
        lam_p[failed] = np.asarray(price_usd_per_mwh, float)[failed, None]
        lam_q[failed] = 0.0
        return lam_p, lam_q, int(failed.sum())

    def operate(
        self,
        p_base_kw: np.ndarray,
        q_base_kvar: np.ndarray,
        p_ev_kw: np.ndarray,
        price_usd_per_mwh: float,
        renewable_kw: np.ndarray,
        s_ev_kva: np.ndarray | None = None,
        *,
        q_ev_kvar: np.ndarray | None = None,
    ) -> GridStep:
        """Run one step: DGs, power flow, limit check, curtailment. Per bus: ``p_base_kw``/``q_base_kvar`` the non-EV
        load [kW]/[kVAr], ``p_ev_kw`` the EV load [kW] (negative where V2G discharges), ``s_ev_kva`` the plugged
        chargers' rating [kVA] (Volt/VAr droop), ``q_ev_kvar`` the market's reactive injection of the chargers [kVAr]
        (+ = inject; droop: the rest); ``price_usd_per_mwh`` the step's energy price, ``renewable_kw`` each renewable
        DER's available output [kW]."""
        net = self.network
        ev_charge, ev_dis = np.maximum(p_ev_kw, 0.0), np.minimum(p_ev_kw, 0.0)
        ones = np.ones_like(p_ev_kw)
        p_fixed = q_fixed = np.zeros(0)
        q_set = np.zeros_like(p_ev_kw) if q_ev_kvar is None else np.asarray(q_ev_kvar, float)
        opf = self._opf_dispatch(p_base_kw + p_ev_kw, q_base_kvar - q_set, price_usd_per_mwh, renewable_kw)

        def set_dgs(full: bool) -> tuple[np.ndarray, np.ndarray, float]:
            nonlocal p_fixed, q_fixed, renewable_kw
            p_fixed, q_fixed, dg_p, dg_q, dg_cost = self._fixed_injections(
                p_base_kw, q_base_kvar, price_usd_per_mwh, renewable_kw, full=full, opf=None if full else opf
            )
            if opf is not None and not full:
                renewable_kw = opf[2]  # what the OPF let the renewables produce (curtailed only where a limit binds)
            return dg_p, dg_q, dg_cost

        q_ev = q_set.copy()
        droop = self.volt_var is not None and s_ev_kva is not None and s_ev_kva.sum() > 0

        def solve(factor: np.ndarray, probe: bool = False) -> PowerFlowResult:
            nonlocal q_ev
            p = (p_fixed + ev_dis + ev_charge * factor) / 1000.0
            if not droop:
                return self._solve(p, (q_fixed - q_set) / 1000.0, probe=probe)
            assert s_ev_kva is not None, "droop needs the EV ratings"
            p_ev_net_kw = ev_charge * factor - ev_dis
            res, q_ev = self._solve_droop(p, q_fixed, q_set, q_ev, s_ev_kva, p_ev_net_kw, probe)
            return res

        n0 = self.n_pf
        dg_p, dg_q, dg_cost = set_dgs(False)
        # where curtailment can act, an unsolvable full-load snapshot is curtailed like a failed probe, without
        # pp.runpp start points (on overloaded days they all failed too: half a 10 000-EV day's CPU)
        can_curtail = bool(self.curtail and ev_charge.sum() > 0)
        res = solve(ones, probe=can_curtail)
        v_lo, v_hi = np.full(net.n_bus, net.v_min_pu), np.full(net.n_bus, net.v_max_pu)
        l_hi = np.full(len(res.line_loading_percent), net.max_line_loading_percent)
        t_hi = np.full(len(res.trafo_loading_percent), net.max_trafo_loading_percent)
        s_hi = net.substation_mva

        def ok(r: PowerFlowResult) -> bool:
            return self._limits_ok(r, v_lo, v_hi, l_hi, s_hi, t_hi)

        def step(r: PowerFlowResult, f: np.ndarray, curtailed: bool) -> GridStep:
            failed = self.opf is not None and opf is None
            return GridStep(r, f, dg_p, dg_q, dg_cost, renewable_kw, self.n_pf - n0, curtailed, q_ev, failed)

        if ok(res):
            return step(res, ones, False)
        if len(self._dg_bus) and np.any(dg_p < [d.p_max_kw for d in net.dgs]):
            dg_p, dg_q, dg_cost = set_dgs(True)  # voltage support before curtailment
            res = solve(ones, probe=can_curtail)
        if not can_curtail or ok(res):
            return step(res, ones, False)
        # Relax each limit to what the grid would show without EV charging: EVs only answer for what they add.
        v_lo, v_hi, l_hi, t_hi, s_hi = _relaxed_limits(solve(np.zeros_like(p_ev_kw)), v_lo, v_hi, l_hi, t_hi, s_hi)
        if ok(res):
            return step(res, ones, False)
        w, uniform, has_ev = self._curtailment_weights(res, v_lo, ev_charge)
        best, f_best = self._bisect_curtailment(solve, ok, w, uniform, has_ev)
        return step(best, f_best, True)

    def _opf_dispatch(
        self, p_kw: np.ndarray, q_kvar: np.ndarray, price_usd_per_mwh: float, renewable_kw: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The OPF's (DG P, DG Q, renewable output) for the step's whole load per bus (base load and the EVs' P and
        Q), or None without OPF dispatch or where it failed."""
        if self.opf is None:
            return None
        q_price = self.model.spec.prices.q_price_usd_per_mvarh
        return self.opf.solve(p_kw, q_kvar, price_usd_per_mwh, renewable_kw, q_price)

    def _solve_droop(
        self,
        p_mw: np.ndarray,
        q_fixed: np.ndarray,
        q_set: np.ndarray,
        q_ev: np.ndarray,
        s_ev_kva: np.ndarray,
        p_ev_net_kw: np.ndarray,
        probe: bool,
    ) -> tuple[PowerFlowResult, np.ndarray]:
        """Power flow with the EV chargers' Volt/VAr droop iterated to a fixed point.

        ``p_mw`` is the per-bus injection [MW]; ``q_fixed`` the DGs' and base loads' reactive power [kVAr];
        ``q_set`` the market's EV reactive set-point and ``q_ev`` the current EV reactive injection [kVAr];
        ``p_ev_net_kw`` the EV active power actually drawn per bus [kW]. Returns the result and the final ``q_ev``.
        """
        assert self.volt_var is not None, "droop needs the curve"
        headroom = np.sqrt(np.maximum(s_ev_kva**2 - p_ev_net_kw**2, 0.0))
        lo, hi = -headroom - np.minimum(q_set, 0.0), headroom - np.maximum(q_set, 0.0)
        res = self._solve(p_mw, (q_fixed - q_ev) / 1000.0, probe=probe)
        for _ in range(8):
            if not res.converged:
                break
            vm = np.nan_to_num(res.vm_pu, nan=1.0)
            target = q_set + np.clip(np.interp(vm, *self.volt_var) * s_ev_kva, np.minimum(lo, 0), np.maximum(hi, 0))
            if np.max(np.abs(target - q_ev)) < 0.1:  # [kVAr]
                break
            q_ev = q_ev + 0.6 * (target - q_ev)  # damped: the curve's gain times the grid's dV/dQ may exceed 1
            res = self._solve(p_mw, (q_fixed - q_ev) / 1000.0, probe=probe)
        return res, q_ev

    def _curtailment_weights(
        self, res: PowerFlowResult, v_lo: np.ndarray, ev_charge: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-bus curtailment weights (max 1): the worst under-voltage bus's sensitivities, else uniform over the
        charging buses. Returns ``(w, uniform, has_ev)``."""
        net = self.network
        has_ev = ev_charge > 0
        uniform = has_ev.astype(float)
        assert self._r is not None, "curtailment keeps the network's voltage sensitivities (set in __init__)"
        if res.converged and np.any(res.vm_pu < v_lo - _TOL_V):
            worst = int(np.nanargmin(res.vm_pu - v_lo))
            w = np.maximum(np.nan_to_num(self._r[worst], nan=0.0, posinf=0.0, neginf=0.0), 0.0)
        else:
            w = np.ones(net.n_bus)
        w = np.where(has_ev, w, 0.0)
        if w.max() <= 0:
            w = uniform
        w = w / w.max()
        return w, uniform, has_ev

    @staticmethod
    def _bisect_curtailment(
        solve: Callable[..., PowerFlowResult],
        ok: Callable[[PowerFlowResult], bool],
        w: np.ndarray,
        uniform: np.ndarray,
        has_ev: np.ndarray,
    ) -> tuple[PowerFlowResult, np.ndarray]:
        """Smallest curtailment depth α (factor ``1 - α w`` on EV charging) that keeps the limits, by bisection.

        Returns the accepted power flow and its EV charging factor per bus (all EV charging withheld when even that
        fails the limits)."""
        # α that withholds all charging at every EV bus the weights reach (w = 0 there: not curtailed, never NaN)
        alpha_max = 1.0 / w[has_ev & (w > 0)].min()

        def factor(alpha: float) -> np.ndarray:
            return np.clip(1.0 - alpha * w, 0.0, 1.0)

        lo, hi = 0.0, alpha_max
        best = solve(factor(hi))
        if not ok(best) and np.any(w[has_ev] <= 0):
            # the sensitivity weights cannot clear it (zero-sensitivity EV buses left charging): uniform weights
            w, hi = uniform, 1.0
            best = solve(factor(hi))
        if not ok(best):
            # even without EV charging the limits fail (e.g. non-convergence without EVs): curtail all EV load
            return best, factor(hi)
        for _ in range(10):
            mid = 0.5 * (lo + hi)
            trial = solve(factor(mid), probe=True)
            if ok(trial):
                hi, best = mid, trial
            else:
                lo = mid
        return best, factor(hi)


def _relaxed_limits(
    base: PowerFlowResult, v_lo: np.ndarray, v_hi: np.ndarray, l_hi: np.ndarray, t_hi: np.ndarray, s_hi: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Widen the voltage [pu], line and trafo loading [%] and substation [MVA] limits to what the grid shows without
    EV charging (``base``), if that power flow converged; else return them unchanged."""
    if base.converged:
        v_lo = np.minimum(v_lo, base.vm_pu)
        v_hi = np.maximum(v_hi, base.vm_pu)
        l_hi = np.maximum(l_hi, base.line_loading_percent)
        t_hi = np.maximum(t_hi, base.trafo_loading_percent)
        s_hi = max(s_hi, float(np.hypot(base.ext_grid_p_mw, base.ext_grid_q_mvar)))
    return v_lo, v_hi, l_hi, t_hi, s_hi
