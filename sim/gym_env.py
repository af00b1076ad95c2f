"""The co-simulation as a Gymnasium environment: a learning agent plays the aggregator, one market step at a time.

``EVGridEnv(scenario, overrides)`` runs any scenario (any grid, attacks and detection included) with the market
mechanism replaced by `markets.external.External`, whose station powers the agent sets:

* **action** — ``Box(0, 1, (n_stations,))``: per station, the share of the power its plugged EVs could draw this
  step (each EV: ``min(charger kW, remaining need / (η · Δt))``); 1 charges everything at once, 0 nothing now.
  An action of another shape, or with NaN/inf, is a ``ValueError``; values outside [0, 1] are clipped and
  counted in ``info["clipped_actions"]``.
* **observation** — ``Box(float32)``: time of day as (sin, cos); the step's price [$/MWh] / 100; then per station:
  plugged EVs / ports, waiting EVs / ports, energy still needed by its plugged EVs [kWh] / 100, deliverable
  power [kW] / 100; then the voltage [pu] at each station's bus after the previous step (1.0 at reset).
* **reward** — minus a weighted sum of the step's terms (weights ``reward_weights``, per unit below):
  ``cost`` EV energy cost [$]; ``peak`` rise of the feeder's import above its running peak [kW];
  ``voltage`` bus·pu outside the scenario's voltage band (a failed power flow counts 0.1 pu at every bus);
  ``unserved`` energy still missing when EVs leave, including those that gave up waiting [kWh].
  Each term is also in ``info`` (``cost_usd``, ``peak_rise_kw``, ``voltage_violation_pu``, ``unserved_kwh``).
* **episode** — the scenario's horizon; ``terminated`` after its last step. ``reset(seed=…)`` draws a new day
  from that seed (one `SeedSequence` per episode); without a seed, successive resets continue one stream.

`make_vec(n, ...)` builds ``gymnasium.vector.SyncVectorEnv`` copies for sample throughput. The environment is
registered as ``evgrid/EVGrid-v0``. `KPIs` of a finished episode: ``env.unwrapped.result()`` gives the run's
`RunResult`, the same tables and KPIs as ``evgrid run``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.fleet import DEPARTED, PLUGGED, RENEGED, WAITING
from sim.scenario import load_scenario

#: Default weights of the reward terms (see the module docstring): $ per $, $ per kW of new peak, $ per bus·pu
#: outside the band, $ per kWh left undelivered at departure.
REWARD_WEIGHTS = {"cost": 1.0, "peak": 0.05, "voltage": 10.0, "unserved": 0.5}


class EVGridEnv(gym.Env[np.ndarray, np.ndarray]):
    """See the module docstring."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: str = "default",
        overrides: Sequence[str] = (),
        *,
        reward_weights: dict[str, float] | None = None,
    ) -> None:
        weights = {**REWARD_WEIGHTS, **(reward_weights or {})}
        unknown = sorted(set(weights) - set(REWARD_WEIGHTS))
        if unknown:
            raise ValueError(f"reward_weights: unknown term '{unknown[0]}'; allowed: {', '.join(REWARD_WEIGHTS)}")
        bad = [k for k, v in weights.items() if not (isinstance(v, int | float) and np.isfinite(v) and v >= 0)]
        if bad:
            raise ValueError(f"reward_weights.{bad[0]}: got {weights[bad[0]]!r}; allowed: a finite number >= 0")
        self.weights = weights
        # the agent is the market: its actions replace the scenario's mechanism (and any reference scoring)
        agent = ["market.mechanism='external'", "market.reference=false", "market.dlmp='off'"]
        self.spec_scenario = load_scenario(scenario, [*overrides, *agent])
        self._model: Any = None
        self._peak_kw = 0.0
        self._gone = np.zeros(0, bool)  # per EV: departed or reneged before this step (set by _build)
        self._seeds = np.random.SeedSequence(self.spec_scenario.seed)
        self._build(self._seeds.spawn(1)[0])
        ns = len(self._stations())
        self.n_stations = ns
        self.action_space = spaces.Box(0.0, 1.0, shape=(ns,), dtype=np.float32)
        # sin, cos of the time of day; price / 100 (may be negative); per-station ratios and voltages (>= 0)
        low = np.concatenate([[-1.0, -1.0, -np.inf], np.zeros(5 * ns)]).astype(np.float32)
        high = np.concatenate([[1.0, 1.0], np.full(1 + 5 * ns, np.inf)]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._seeds = np.random.SeedSequence(seed)
        self._build(self._seeds.spawn(1)[0])
        return self._observe(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        m = self._model
        if m.steps >= m.n_steps:
            raise RuntimeError("step() after the episode ended; call reset()")
        a = np.asarray(action, dtype=float)
        if a.shape != (self.n_stations,):
            raise ValueError(f"action: expected shape ({self.n_stations},) (one share per station), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("action: NaN or inf in the station shares; allowed: finite numbers in [0, 1]")
        clipped = int(np.count_nonzero((a < 0) | (a > 1)))
        self._mech.station_share = np.clip(a, 0.0, 1.0)
        f = m.fleet
        k = m.steps
        m.advance(1)
        gone = (f.state == DEPARTED) | (f.state == RENEGED)
        left = np.flatnonzero(gone & ~self._gone)  # EVs that left during this step
        self._gone = gone
        cols = m.recorder.cols
        dt_h = m.dt_min / 60.0
        cost = float(cols["ev_load_kw"][k] * cols["price_usd_per_mwh"][k] * dt_h / 1000.0)
        grid_kw = float(cols["grid_p_kw"][k])
        rise = max(0.0, grid_kw - self._peak_kw)
        self._peak_kw = max(self._peak_kw, grid_kw)
        vm = m.recorder.vm[k]
        net = m.network
        converged = bool(np.isfinite(vm).all())
        if converged:
            viol = float(np.sum(np.maximum(net.v_min_pu - vm, 0.0) + np.maximum(vm - net.v_max_pu, 0.0)))
        else:  # a failed power flow: no voltages to judge, a fixed penalty instead
            viol = 0.1 * len(vm)
        unserved = float(f.need_of(left).sum())  # need_of: only the leavers, not the whole fleet's need
        w = self.weights
        reward = -(w["cost"] * cost + w["peak"] * rise + w["voltage"] * viol + w["unserved"] * unserved)
        info = {
            "cost_usd": cost,
            "peak_rise_kw": rise,
            "voltage_violation_pu": viol,
            "unserved_kwh": unserved,
            "clipped_actions": clipped,
            "pf_converged": converged,
            "step": k,
        }
        return self._observe(), reward, m.steps >= m.n_steps, False, info

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None

    # ------------------------------------------------------------------ helpers
    def result(self) -> Any:
        """The finished episode as a `RunResult` (tables and KPIs as ``evgrid run`` writes them)."""
        m = self._model
        return m.recorder.result(wall_s=0.0, cpu_s=0.0)

    def _stations(self) -> Any:
        return self._model.station_table

    def _build(self, seed: np.random.SeedSequence) -> None:
        from markets.external import External
        from sim.model import CoSimulation

        if self._model is not None:
            self._model.close()
        self._model = CoSimulation(self.spec_scenario, seed=seed)
        mech = self._model.market_operator.mechanism
        assert isinstance(mech, External), "the scenario's mechanism is replaced by 'external'"
        self._mech = mech
        self._peak_kw = 0.0
        st = self._model.station_table
        self._ports = np.maximum(st.ports.astype(float), 1.0)
        self._station_bus = st.bus
        state = self._model.fleet.state
        self._gone = (state == DEPARTED) | (state == RENEGED)  # EVs already gone: step() reports only new leavers

    def _observe(self) -> np.ndarray:
        # Only the plugged EVs enter the per-station sums (the others would add zeros: the same values as over the
        # whole fleet), written straight into the float32 result: fewer numpy calls in the per-step path.
        m = self._model
        f = m.fleet
        ns = self.n_stations
        k = min(m.steps, m.n_steps - 1)
        tod = m.tod_h[k] * 2 * np.pi / 24.0
        plugged = np.flatnonzero(f.state == PLUGGED)
        st = f.station[plugged]
        need = f.need_of(plugged)
        dt_h = m.dt_min / 60.0
        deliverable = np.minimum(f.p_max_kw[plugged], need / (np.maximum(f.eta_ch[plugged], 1e-12) * dt_h))
        obs = np.empty(3 + 5 * ns, np.float32)
        obs[:3] = np.sin(tod), np.cos(tod), m.market_operator.price_usd_per_mwh[k] / 100.0
        obs[3 : 3 + ns] = np.bincount(st, minlength=ns) / self._ports
        obs[3 + ns : 3 + 2 * ns] = np.bincount(f.station[f.state == WAITING], minlength=ns) / self._ports
        obs[3 + 2 * ns : 3 + 3 * ns] = np.bincount(st, weights=need, minlength=ns) / 100.0
        obs[3 + 3 * ns : 3 + 4 * ns] = np.bincount(st, weights=deliverable, minlength=ns) / 100.0
        obs[3 + 4 * ns :] = np.nan_to_num(m.recorder.vm[m.steps - 1][self._station_bus], nan=0.0) if m.steps else 1.0
        return obs


def make_vec(n: int, scenario: str = "default", overrides: Sequence[str] = (), **kw: Any) -> gym.vector.VectorEnv:
    """``n`` copies of the environment in a `gymnasium.vector.SyncVectorEnv` (seed them with ``reset(seed=…)``)."""
    if n < 1:
        raise ValueError(f"n: got {n}; allowed: an integer >= 1")
    fns: list[Callable[[], gym.Env]] = [lambda: EVGridEnv(scenario, overrides, **kw) for _ in range(n)]
    return gym.vector.SyncVectorEnv(fns)


gym.register(id="evgrid/EVGrid-v0", entry_point="sim.gym_env:EVGridEnv")
