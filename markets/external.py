"""`external`: the charging power of each station is set from outside, one step at a time (a learned controller).

The Gymnasium environment (`sim.gym_env`) sets `External.station_share` before every step: per station, the share
in [0, 1] of the power its plugged EVs could draw this step. Each EV's cap is ``min(p_max_kw, need / (η · Δt))``
(what it can take and what still fits in its battery); a station's share scales every one of its EVs' caps, so a
share of 1 is "charge everything as fast as possible" and 0 is "nothing now". The mechanism re-plans each step
(``replans``) and schedules only the current slot; later slots stay 0 until the controller decides them.

Without an action (before the first `station_share` is set) nothing charges. The price is the request's tariff,
or ``rho_usd_per_mwh`` where the request carries none.
"""

from __future__ import annotations

import numpy as np

from markets.base import MarketConfigError, MarketRequest, MarketResult, Mechanism, finite_number, register


@register
class External(Mechanism):
    """Charging set per station from outside (`station_share`); see the module docstring."""

    name = "external"
    parameters = {"rho_usd_per_mwh": (84.0, "flat price used when the request carries no tariff [$/MWh]")}
    replans = True

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        #: Share in [0, 1] of each station's deliverable power for the next step (None: nothing charges).
        self.station_share: np.ndarray | None = None

    def _validate(self) -> None:
        rho = self.params["rho_usd_per_mwh"]
        if not (finite_number(rho) and rho >= 0):
            raise MarketConfigError(
                f"market.params.rho_usd_per_mwh: got {rho!r}; allowed: a finite number >= 0 [$/MWh]"
            )

    def _clear(self, request: MarketRequest) -> MarketResult:
        price = request.price_usd_per_mwh
        if np.isnan(price).any():
            price = np.full(request.n_slots, float(self.params["rho_usd_per_mwh"]))
        evs = request.evs
        p = np.zeros((len(evs.ev_id), request.n_slots))
        if self.station_share is not None and len(evs.ev_id) and request.n_slots:
            cap = self.deliverable_kw(request)
            share = np.asarray(self.station_share, float)
            p[:, 0] = cap * share[evs.station]
        cost = float((p.sum(axis=0) * price).sum() * request.dt_h / 1000.0)
        return MarketResult(
            mechanism=self.name,
            price_usd_per_mwh=price,
            p_kw=p,
            base_load_shift_kw=np.zeros(request.n_slots),
            objective={"ev_energy_cost_usd": cost},
        )

    @staticmethod
    def deliverable_kw(request: MarketRequest) -> np.ndarray:
        """Per EV of the request, the most it can draw in the first slot [kW]: 0 unless plugged in by then, at most
        its charger's power, and no more than its remaining need over the slot."""
        evs = request.evs
        now = (evs.start_slot <= 0) & (evs.end_slot > 0)
        need_kw = evs.e_need_kwh / (np.maximum(evs.eta_ch, 1e-12) * request.dt_h)
        return np.where(now, np.clip(np.minimum(evs.p_max_kw, need_kw), 0.0, None), 0.0)
