"""The attacker agent: applies declarative false-data-injection specs at the simulation's taps.

No other agent knows about attacks: the attacker registers transforms on named channels (`sim.taps`) and every
transform reports whether it changed the data, so each step is labelled attacked or clean for detector scoring.
Targets drawn at random come from the run's ``attack`` stream only, so adding an attacker never changes any other
random draw: a run with an attacker whose window never opens is identical to a run without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mesa
import numpy as np

from sim.scenario import AttackSpec

if TYPE_CHECKING:  # pragma: no cover
    from sim.model import CoSimulation


def _weights(spec: AttackSpec, t_h: np.ndarray) -> np.ndarray:
    """Attack intensity in [0, 1] at times ``t_h`` [h since start]: window, with a linear ramp-in."""
    inside = (t_h >= spec.start_h) & (t_h < spec.end_h)
    ramp = np.clip((t_h - spec.start_h) / spec.ramp_h, 0.0, 1.0) if spec.ramp_h > 0 else np.ones_like(t_h)
    return np.where(inside, ramp, 0.0)


class Attacker(mesa.Agent):
    """Registers one transform per attack spec on the model's taps."""

    def __init__(self, model: "CoSimulation", specs: list[AttackSpec]) -> None:
        super().__init__(model)
        self.specs = specs
        rng = model.streams["attack"]
        self.targets: list[np.ndarray] = []
        for spec in specs:
            # what a target is: a station row, a measurement index, or a (non-slack) bus
            if spec.kind == "measurement-bias":
                n_t, first, what = model.estimator.n_meas, 0, "measurement"
            elif spec.kind == "measurement-stealth":
                n_t, first, what = model.network.n_bus, 1, "bus"
            else:
                n_t, first, what = len(model.station_table), 0, "station"
            if spec.targets is not None:
                bad = [t for t in spec.targets if not first <= t < n_t]
                if bad:
                    from sim.scenario import ScenarioError

                    raise ScenarioError(f"attacks.targets: {what} {bad[0]} out of range; allowed {first}..{n_t - 1}")
                tg = np.asarray(spec.targets, int)
            else:
                size = int(round(spec.share * n_t))
                if what != "station":
                    size = max(size, 1)
                tg = np.sort(rng.choice(np.arange(first, n_t), size=min(size, n_t - first), replace=False))
            self.targets.append(tg)
            channel = {"station-inflation": "station_reports", "elasticity": "elasticity",
                       "price-scale": "price_signal", "measurement-bias": "dso_measurements",
                       "measurement-stealth": "dso_measurements"}[spec.kind]
            model.taps.register(channel, self._transform(spec, tg))

    def _slot_hours(self, k: int, n: int) -> np.ndarray:
        return (k + np.arange(n)) * self.model.dt_min / 60.0

    def _transform(self, spec: AttackSpec, targets: np.ndarray):  # type: ignore[no-untyped-def]
        def station_inflation(reports: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
            w = _weights(spec, self._slot_hours(k, reports.shape[1]))
            if not w.any() or not len(targets):
                return reports, False
            out = reports.copy()
            out[targets] *= 1.0 + spec.magnitude * w
            return out, bool(np.any(out != reports))

        def elasticity(params: dict[str, Any], k: int) -> tuple[dict[str, Any], bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            if w == 0:
                return params, False
            return {key: v * (1.0 + spec.magnitude * w) for key, v in params.items()}, True

        def price_scale(result: Any, k: int) -> tuple[Any, bool]:
            from dataclasses import replace

            price = np.asarray(result.price_usd_per_mwh, float)
            w = _weights(spec, self._slot_hours(k, len(price)))
            if not w.any():
                return result, False
            return replace(result, price_usd_per_mwh=price * (1.0 + spec.magnitude * w)), True

        def measurement_bias(z: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
            w = float(_weights(spec, self._slot_hours(k, 1))[0])
            if w == 0:
                return z, False
            out = z.copy()
            out[targets] += spec.magnitude * w * self.model.estimator.sigma[targets]
            return out, True

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

        return {"station-inflation": station_inflation, "elasticity": elasticity, "price-scale": price_scale,
                "measurement-bias": measurement_bias, "measurement-stealth": measurement_stealth}[spec.kind]
