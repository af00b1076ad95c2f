"""The attacker agent: applies declarative false-data-injection specs at the simulation's taps.

No other agent knows about attacks: the attacker registers transforms on named channels (`sim.taps`) and every
transform reports whether it changed the data, so each step is labelled attacked or clean for detector scoring.
Targets drawn at random come from the run's ``attack`` stream only, so adding an attacker never changes any other
random draw: a run with an attacker whose window never opens is identical to a run without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import mesa
import numpy as np

from sim.attack_kinds import KINDS
from sim.scenario import AttackSpec

if TYPE_CHECKING:  # pragma: no cover
    from sim.model import CoSimulation
    from sim.taps import Transform


def _weights(spec: AttackSpec, t_h: np.ndarray) -> np.ndarray:
    """Attack intensity in [0, 1] at times ``t_h`` [h since start]: window, with a linear ramp-in."""
    inside = (t_h >= spec.start_h) & (t_h < spec.end_h)
    ramp = np.clip((t_h - spec.start_h) / spec.ramp_h, 0.0, 1.0) if spec.ramp_h > 0 else np.ones_like(t_h)
    return np.where(inside, ramp, 0.0)


def transform_builder(kind: str) -> str:
    """Name of the `Attacker` method that builds the transform of an attack ``kind`` (declared in
    `sim.attack_kinds`): ``load-redistribution`` → ``_load_redistribution``."""
    return "_" + kind.replace("-", "_")


class Attacker(mesa.Agent):
    """Registers one transform per attack spec on the model's taps."""

    def __init__(self, model: CoSimulation, specs: list[AttackSpec]) -> None:
        super().__init__(model)
        self.specs = specs
        rng = model.streams["attack"]
        self.targets: list[np.ndarray] = []
        for spec in specs:
            kind = KINDS[spec.kind]
            # what a target is (declared per kind): a station row, a measurement index, a (non-slack) bus or an EV
            if kind.targets == "measurement":
                assert model.estimator is not None, "measurement attacks need detection.state_estimation (Scenario)"
                n_t, first, what = model.estimator.n_meas, 0, "measurement"
            elif kind.targets == "bus":
                n_t, first, what = model.network.n_bus, 1, "bus"
            elif kind.targets == "EV":
                n_t, first, what = len(model.fleet), 0, "EV"
            elif kind.targets == "none":
                n_t, first, what = 0, 0, "none"
            else:
                n_t, first, what = len(model.station_table), 0, "station"
            if what == "none":  # replay: the whole message of the channel is replayed
                tg = np.zeros(0, int)
            elif spec.targets is not None:
                bad = [t for t in spec.targets if not first <= t < n_t]
                if bad:
                    from sim.scenario import ScenarioError

                    raise ScenarioError(f"attacks.targets: {what} {bad[0]} out of range; allowed {first}..{n_t - 1}")
                tg = np.asarray(spec.targets, int)
            else:
                size = int(round(spec.share * n_t))
                if what not in ("station", "EV"):
                    size = max(size, 1)
                tg = np.sort(rng.choice(np.arange(first, n_t), size=min(size, n_t - first), replace=False))
            self.targets.append(tg)
            model.taps.register(kind.channel_of(spec.channel), self._transform(spec, tg))

    def _slot_hours(self, k: int, n: int) -> np.ndarray:
        return (k + np.arange(n)) * self.model.dt_min / 60.0

    def _transform(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """The transform of ``spec``, built by the method named after its kind (``_station_inflation``, ...)."""
        build: Callable[[AttackSpec, np.ndarray], Transform] = getattr(self, transform_builder(spec.kind))
        return build(spec, targets)

    def _station_inflation(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """Target stations report ``1 + magnitude·w`` times their committed EV load."""

        def station_inflation(reports: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
            w = _weights(spec, self._slot_hours(k, reports.shape[1]))
            if not w.any() or not len(targets):
                return reports, False
            out = reports.copy()
            out[targets] *= 1.0 + spec.magnitude * w
            return out, bool(np.any(out != reports))

        return station_inflation

    def _elasticity(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """The DR elasticities the market uses are scaled by ``1 + magnitude·w``."""

        def elasticity(params: dict[str, Any], k: int) -> tuple[dict[str, Any], bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            if w == 0:
                return params, False
            return {key: v * (1.0 + spec.magnitude * w) for key, v in params.items()}, True

        return elasticity

    def _price_scale(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """The prices a clearing returns are scaled by ``1 + magnitude·w`` on their way to the EVs."""

        def price_scale(result: Any, k: int) -> tuple[Any, bool]:
            from dataclasses import replace

            price = np.asarray(result.price_usd_per_mwh, float)
            w = _weights(spec, self._slot_hours(k, len(price)))
            if not w.any():
                return result, False
            return replace(result, price_usd_per_mwh=price * (1.0 + spec.magnitude * w)), True

        return price_scale

    def _measurement_bias(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """Target measurements are offset by ``magnitude·w`` of their standard deviation."""

        def measurement_bias(z: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            if w == 0:
                return z, False
            out = z.copy()
            out[targets] += spec.magnitude * w * self.model.estimator.sigma[targets]
            return out, True

        return measurement_bias

    def _measurement_stealth(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """The AC-consistent attack that lowers the estimated |V| of the target buses by ``magnitude·w`` pu."""

        def measurement_stealth(z: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            pf = self.model.last_pf
            if w == 0 or pf is None:
                return z, False
            est = self.model.estimator
            dvm = np.zeros(self.model.network.n_bus)
            dvm[targets] = -spec.magnitude * w
            c = est.state(dvm, np.zeros_like(dvm))
            return z + est.stealthy_attack(pf.vm_pu, np.deg2rad(pf.va_degree), c, form="ac"), True

        return measurement_stealth

    def _load_redistribution(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """Move measured load between the target buses (total unchanged, per-bus bound ``|magnitude|``).

        The targets are split once into a "gain" half and a "lose" half (alternating in the order drawn or given;
        a negative magnitude swaps them). Loads are read from the true state, ``P_load = −P_inj`` of ``h(x)``
        (buses with net generation count as zero load). Naive form: only the P injection measurements of the
        target buses change. Stealthy form: ``x'`` solves the AC power-flow equations (Newton on the estimator's
        own ``h``) for the redistributed injections, and every measurement moves by ``h(x') − h(x)``.
        """
        est = self.model.estimator
        ms = est.ms
        n_bus = self.model.network.n_bus
        gain = np.zeros(n_bus, bool)
        lose = np.zeros(n_bus, bool)
        gain[targets[0::2]] = True
        lose[targets[1::2]] = True
        if spec.magnitude < 0:
            gain, lose = lose, gain
        n_v, n_i = len(ms.v_buses), len(ms.inj_buses)
        # the measurement set names buses by pandapower index; targets and these rows are internal positions
        inj_pos = np.array([self.model.network.position(b) for b in ms.inj_buses], int)
        row_p = np.full(n_bus, -1)
        row_p[inj_pos] = n_v + np.arange(n_i)
        row_q = np.full(n_bus, -1)
        row_q[inj_pos] = n_v + n_i + np.arange(n_i)
        if (row_p[targets] < 0).any():
            from sim.scenario import ScenarioError

            raise ScenarioError(
                "attacks.targets: load-redistribution needs P/Q injection measurements at every target bus"
            )

        def transform(z: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            pf = self.model.last_pf
            if w == 0 or pf is None or not len(targets):
                return z, False
            va = np.deg2rad(pf.va_degree)
            hx = est.h(pf.vm_pu, va)
            p_load_mw = np.maximum(-hx[row_p[targets]], 0.0)
            load = np.zeros(n_bus)
            load[targets] = p_load_mw
            dp_mw = redistribute(load, gain, lose, abs(spec.magnitude) * w)
            if not np.any(dp_mw):
                return z, False
            if not spec.stealth:
                out = z.copy()
                out[row_p[targets]] -= dp_mw[targets]  # injection = −load
                return out, True
            x = est.state(pf.vm_pu, va)
            x_new = self._solve_injections(x, hx, -dp_mw, row_p, row_q)
            if x_new is None:  # no AC-consistent state: the attacker holds back rather than be caught
                return z, False
            return z + est.stealthy_attack(pf.vm_pu, va, x_new - x, form="ac"), True

        return transform

    def _solve_injections(
        self, x: np.ndarray, hx: np.ndarray, dp_inj_mw: np.ndarray, row_p: np.ndarray, row_q: np.ndarray
    ) -> np.ndarray | None:
        """State whose non-slack P injections are those of ``x`` plus ``dp_inj_mw`` [MW] (Q injections and the
        slack |V| unchanged): Newton–Raphson on the estimator's measurement function. None if it fails."""
        est = self.model.estimator
        network = self.model.network
        slack_ids = set(int(b) for b in network.net.ext_grid["bus"])
        slack = {network.position(b) for b in slack_ids}  # row_p is indexed by position
        buses = np.array([b for b in range(len(row_p)) if b not in slack and row_p[b] >= 0])
        v_rows = [i for i, b in enumerate(est.ms.v_buses) if int(b) in slack_ids]
        rows = np.concatenate([row_p[buses], row_q[buses], np.asarray(v_rows, int)])
        if len(rows) != est.n_states:
            return None
        target = hx[rows].copy()
        target[: len(buses)] += dp_inj_mw[buses]
        xk = x.copy()
        for _ in range(10):
            vm, va = est.voltages(xk)
            mis = target - est.h(vm, va)[rows]
            if np.max(np.abs(mis)) < 1e-9:
                return xk
            xk = xk + np.linalg.solve(est.jacobian(vm, va)[rows], mis)
        return None

    def _replay(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """Replay the channel's values of ``delay_steps`` earlier (or, with ``freeze``, of the last step before the
        window opened). Every value passing through is recorded (the true one, not the replayed one). A replayed
        array keeps its slot positions: slot 0 of the old message is presented as slot 0 now (cut or zero-padded
        to the current length)."""
        history: dict[int, np.ndarray] = {}
        frozen: list[np.ndarray] = []

        def transform(data: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            if w == 0:
                history[k] = np.array(data, copy=True)
                frozen.clear()
                return data, False
            if spec.freeze:
                if not frozen:
                    past = [j for j in history if j < k]
                    if not past:
                        return data, False
                    frozen.append(history[max(past)])
                old = frozen[0]
            else:
                history[k] = np.array(data, copy=True)
                past = [j for j in history if j <= k - spec.delay_steps]
                if not past:
                    return data, False
                old = history[max(past)]
            out = np.zeros_like(data)
            if data.ndim == 1:
                out = old.copy() if old.shape == data.shape else data
            else:
                m = min(old.shape[1], data.shape[1])
                out[:, :m] = old[:, :m]
            return out, not np.array_equal(out, data)

        return transform

    def _soc_falsification(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """Target EVs report an energy need scaled by ``1 + magnitude·w`` (kept within [0, battery capacity])."""
        from dataclasses import replace

        mask = np.zeros(len(self.model.fleet), bool)
        mask[targets] = True

        def transform(flex: Any, k: int) -> tuple[Any, bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            hit = mask[flex.ev_id]
            if w == 0 or not hit.any():
                return flex, False
            need = flex.e_need_kwh.copy()
            cap = self.model.fleet.battery_kwh[flex.ev_id]
            need[hit] = np.clip(need[hit] * (1.0 + spec.magnitude * w), 0.0, cap[hit])
            return replace(flex, e_need_kwh=need), bool(np.any(need != flex.e_need_kwh))

        return transform

    def _price_delay(self, spec: AttackSpec, targets: np.ndarray) -> Transform:
        """Target EVs get the price signal of a clearing (and the schedule that answers it) ``delay_steps`` late:
        for its first ``delay_steps`` slots they keep acting on what they had (their previous schedule, or
        nothing for an EV that just plugged in). Needs the clearing's EV ids in ``result.info["ev_id"]``."""
        from dataclasses import replace

        mask = np.zeros(len(self.model.fleet), bool)
        mask[targets] = True
        d = spec.delay_steps

        def transform(result: Any, k: int) -> tuple[Any, bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            ev_id = result.info.get("ev_id")
            if w == 0 or ev_id is None or not len(ev_id):
                return result, False
            rows = np.nonzero(mask[ev_id])[0]
            if not len(rows):
                return result, False
            p = np.array(result.p_kw, float, copy=True)
            m = min(d, p.shape[1])
            old = self.model.aggregator.kw.window(ev_id[rows], k, m)
            p[rows, : old.shape[1]] = old
            if np.array_equal(p, result.p_kw):
                return result, False
            return replace(result, p_kw=p), True

        return transform


def redistribute(load_kw: np.ndarray, gain: np.ndarray, lose: np.ndarray, bound: float) -> np.ndarray:
    """Load change per bus that moves load from the ``lose`` buses to the ``gain`` buses [same unit as load].

    The transfer is as large as the per-bus bound allows on both sides, ``T = bound · min(Σ_gain L, Σ_lose L)``;
    it is spread in proportion to the loads, so every bus changes by the same relative amount within its side:
    ``|ΔL_i| ≤ bound · L_i`` and ``Σ ΔL = 0`` (to rounding). Buses in neither set (or in both) are unchanged.

    Example:
        >>> redistribute(np.array([100.0, 50.0, 50.0]), np.array([True, False, False]),
        ...              np.array([False, True, True]), 0.2).tolist()
        [20.0, -10.0, -10.0]
    """
    load = np.maximum(np.asarray(load_kw, float), 0.0)
    g = np.asarray(gain, bool) & ~np.asarray(lose, bool)
    lo = np.asarray(lose, bool) & ~np.asarray(gain, bool)
    sg, sl = load[g].sum(), load[lo].sum()
    out = np.zeros_like(load)
    if sg <= 0 or sl <= 0 or bound <= 0:
        return out
    t = bound * min(sg, sl)
    out[g] = t * load[g] / sg
    out[lo] = -t * load[lo] / sl
    return out
