"""`uncontrolled`: every EV charges at full power from plug-in until its need is met (the baseline)."""

from __future__ import annotations

import numpy as np

from markets.base import MarketConfigError, MarketRequest, MarketResult, Mechanism, asap_fill, finite_number, register


@register
class Uncontrolled(Mechanism):
    """Full rate from plug-in; the price is the request's tariff (or the flat base price where none is given)."""

    name = "uncontrolled"
    parameters = {"rho_usd_per_mwh": (84.0, "flat price used when the request carries no tariff [$/MWh]")}

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
        p = asap_fill(request.evs, request.n_slots, request.dt_h)
        cost = float((p.sum(axis=0) * price).sum() * request.dt_h / 1000.0)
        return MarketResult(
            mechanism=self.name,
            price_usd_per_mwh=price,
            p_kw=p,
            base_load_shift_kw=np.zeros(request.n_slots),
            objective={"ev_energy_cost_usd": cost},
        )
