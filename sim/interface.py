"""`MarketInterface`: the one place a running simulation builds a `MarketRequest`.

In the spirit of ACN-Sim's ``Interface``: a mechanism never sees the simulator, only the snapshot the interface
builds from it. The required parts (time, EVs, forecast base load, committed EV load, tariff, station caps, time
of day, renewables) are always filled; an optional part only when the mechanism declares it in
`markets.base.Mechanism.needs`:

============================  ==========================================================================
part                          source in the simulation
============================  ==========================================================================
``dlmp``                      the DSO's day-ahead DLMPs (``market.dlmp`` not ``"off"``)
``voltage``                   power flows of the coming slots with the committed EV load, and the grid's
                              LinDistFlow sensitivity (requests with EVs only)
``load_elasticity``           the mechanism's `announced_elasticity`, through the ``elasticity`` tap
                              (day-ahead requests only)
``s_max_kva``                 the chargers' apparent-power ratings of the request's EVs
``load_range_kw``             the day-ahead plan's forecast load range (after the first day-ahead clearing)
``committed_station_kw``      the stations' reports of committed EV load (``station_reports`` tap, screened
                              by the DSO's monitor), when any station has a cap
``grid``                      the simulated network (``sim.network``: topology, impedances, ratings, DERs,
                              limits) with the non-EV load per bus the simulation runs in the request's
                              slots (the DR shift included after the day-ahead clearing) and the renewables'
                              availability
``bus_ev_cap_kw``,            no source in a simulation (scenarios have no feeder EV caps and no earlier
``prev_station_price_…``      station prices): left empty
============================  ==========================================================================

The stations' reports pass their tap on every request (their sum is the committed EV load every mechanism sees).
A real-time request (not day-ahead) passes the ``bids`` tap as a whole once it is built, on its way to the mechanism.

`check_fit` rejects, at validation and when a simulation is built, a scenario its mechanism cannot honour: V2G-capable
EVs (``fleet.groups.*.v2g_share > 0``) for a mechanism that does not discharge, and a network the mechanism refuses
(`markets.base.Mechanism.check_network`, for mechanisms that need ``grid``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from agents.fleet import PLUGGED
from markets.base import (
    REQUEST_PARTS,
    Elasticity,
    EVFlex,
    MarketConfigError,
    MarketRequest,
    Mechanism,
    NetworkData,
    VoltageForecast,
)
from sim.attack_kinds import KINDS

if TYPE_CHECKING:  # pragma: no cover
    from grids.network import Network
    from sim.model import CoSimulation
    from sim.scenario import Scenario


#: The request part through which a tap channel reaches a mechanism, for channels only some mechanisms read (the
#: EV reports, bids and price signals pass through every real-time clearing; the DSO's measurements need state
#: estimation, which the scenario schema checks).
_CHANNEL_PART = {"station_reports": "committed_station_kw", "elasticity": "load_elasticity"}


def check_fit(scenario: Scenario, mechanism: Mechanism, network: Network | None = None) -> None:
    """Reject a scenario its mechanism cannot honour, with one line naming the field, the value and what is allowed.

    Args:
        scenario: the validated scenario.
        mechanism: the mechanism built from ``scenario.market``.
        network: the scenario's network if already built (a simulation's); built (and cached) here when the
            mechanism needs ``grid`` and none is given.

    Raises:
        markets.base.MarketConfigError: V2G-capable EVs for a mechanism that does not discharge; an attack on a
            message the mechanism does not read; a network the mechanism cannot run on.
    """
    from markets.base import available, get

    name = scenario.market.mechanism
    if not mechanism.discharges:
        for i, g in enumerate(scenario.fleet.groups):
            if g.v2g_share > 0:
                can = [m for m in available() if getattr(get(m), "discharges", False)]
                raise MarketConfigError(
                    f"fleet.groups.{i}.v2g_share: got {g.v2g_share:g}, but market.mechanism '{name}' never "
                    f"discharges V2G EVs; allowed: 0 (mechanisms that discharge: {', '.join(can) or 'none yet'})"
                )
    for i, attack in enumerate(scenario.attacks):  # an attack on a message this mechanism never reads is inert
        channel = KINDS[attack.kind].channel_of(getattr(attack, "channel", ""))
        part = _CHANNEL_PART.get(channel)
        if part is not None and part not in mechanism.needs:
            readers = [m for m in available() if part in getattr(get(m)(), "needs", ())]
            raise MarketConfigError(
                f"attacks.{i}.kind: '{attack.kind}' falsifies the {channel.replace('_', ' ')}, which market.mechanism "
                f"'{name}' does not read, so the attack would change nothing; allowed with: {', '.join(readers)}"
            )
    if "grid" in mechanism.needs:
        if network is None:
            from sim.model import compiled_grid

            network = compiled_grid(scenario.grid)[0]
        try:
            mechanism.check_network(network)
        except MarketConfigError as err:
            raise MarketConfigError(str(err).replace("market.params.", f"market.params.{name}.")) from None


class MarketInterface:
    """Builds the market requests of one `CoSimulation` for its mechanism (see module docstring).

    Args:
        sim: the running co-simulation (read, never changed, except through its taps and monitor).
        mechanism: the mechanism the requests are for; its ``needs`` decide the optional parts.
    """

    def __init__(self, sim: CoSimulation, mechanism: Mechanism) -> None:
        unknown = sorted(set(mechanism.needs) - REQUEST_PARTS)
        if unknown:  # needs set per instance after `Mechanism.__init__` checked the class's
            raise MarketConfigError(
                f"{type(mechanism).__name__}.needs: unknown request part '{unknown[0]}'; allowed: "
                f"{', '.join(sorted(REQUEST_PARTS))}"
            )
        check_fit(sim.spec, mechanism, sim.network)
        self.sim = sim
        self.needs = frozenset(mechanism.needs)
        self.mechanism = mechanism

    def request(self, k: int, n: int, evs: EVFlex, *, day_ahead: bool) -> MarketRequest:
        """The request for slots ``k … k+n−1`` (slot 0 = step ``k``) for the EVs ``evs``.

        Args:
            k: the current step.
            n: horizon [steps].
            evs: the EVs that need a schedule (empty for the day-ahead request).
            day_ahead: true for the first clearing of a day (the base load then excludes the DR shift).
        """
        sim = self.sim
        mo, agg, needs = sim.market_operator, sim.aggregator, self.needs
        base = sim.base_p_kw[k : k + n].sum(axis=1)
        if not day_ahead:
            base = base + mo.shift_kw[k : k + n]
        s_max = sim.fleet.s_max_kva[evs.ev_id] if len(evs) and "s_max_kva" in needs else None
        load_range = mo.load_range_kw if "load_range_kw" in needs else None
        voltage = self.voltage_forecast(k, n) if len(evs) and "voltage" in needs else None
        caps = sim.station_table.cap_kw
        capped = bool(np.isfinite(caps).any())
        # stations report the EV load committed at them; the market sees the reports (an attack tap), screened
        # by the DSO's monitor when detection is on
        own = agg.committed_station_kw(k, n)
        reports = sim.taps.apply("station_reports", own, k)
        if sim.monitor is not None:
            reports = sim.monitor.screen(reports, own, k)
        elasticity = self.elasticity(k) if day_ahead and "load_elasticity" in needs else None
        grid = self.network_data(k, n, day_ahead=day_ahead) if "grid" in needs else None
        dlmp = "dlmp" in needs
        req = MarketRequest(
            t0_min=k * sim.dt_min,
            dt_min=sim.dt_min,
            n_slots=n,
            evs=evs,
            base_load_kw=base,
            committed_ev_kw=reports.sum(axis=0),
            price_usd_per_mwh=mo.price_usd_per_mwh[k : k + n],
            station_cap_kw=caps if capped else None,
            tod_h=sim.tod_h[k : k + n],
            renewable_kw=sim.renewable_kw[k : k + n].sum(axis=1),
            dlmp_p_usd_per_mwh=mo.dlmp_p[k : k + n] if dlmp and mo.dlmp_p is not None else None,
            dlmp_q_usd_per_mvarh=mo.dlmp_q[k : k + n] if dlmp and mo.dlmp_q is not None else None,
            day_ahead=day_ahead,
            s_max_kva=s_max,
            load_range_kw=load_range,
            voltage=voltage,
            load_elasticity=elasticity,
            committed_station_kw=reports if capped and "committed_station_kw" in needs else None,
            grid=grid,
        )
        # the finished real-time request is what a bid-falsifying attacker would see and change
        return req if day_ahead else sim.taps.apply("bids", req, k)

    def network_data(self, k: int, n: int, *, day_ahead: bool) -> NetworkData:
        """The simulated network with the non-EV load per bus and the renewables of steps ``k … k+n−1`` (the same
        load the request's ``base_load_kw`` sums: the DR shift only after the day-ahead clearing)."""
        sim = self.sim
        p = sim.base_p_kw[k : k + n]
        if not day_ahead:  # `CoSimulation.shift_bus` of each step, vectorised: the shift in proportion to bus load
            total = p.sum(axis=1)
            share = np.divide(sim.market_operator.shift_kw[k : k + n], total, out=np.zeros(len(p)), where=total > 0)
            p = p + p * share[:, None]
        return NetworkData(
            sim.network,
            bus_load_kw=p,
            bus_load_kvar=sim.base_q_kvar[k : k + n],
            renewable_kw=sim.renewable_kw[k : k + n],
        )

    def elasticity(self, k: int) -> Elasticity | None:
        """The mechanism's announced elasticities as they reach the market (through the ``elasticity`` tap)."""
        announced = self.mechanism.announced_elasticity
        if announced is None:
            return None
        sent = announced.as_dict()
        received = self.sim.taps.apply("elasticity", sent, k)
        return announced if received is sent else Elasticity(**received)

    def voltage_forecast(self, k: int, n: int) -> VoltageForecast:
        """Voltages of steps ``k … k+n−1`` with the committed EV load, and the LinDistFlow sensitivity."""
        sim = self.sim
        f, agg, net = sim.fleet, sim.aggregator, sim.network
        rows = np.nonzero(agg.scheduled & (f.state == PLUGGED))[0]
        ev_bus = np.zeros((net.n_bus, n))
        np.add.at(ev_bus, f.bus[rows], agg.kw.window(rows, k, n))
        p = sim.base_p_kw[k : k + n] + np.stack([sim.shift_bus(j) for j in range(k, k + n)]) + ev_bus.T
        vm = sim.dso.forecast_vm(
            p, sim.base_q_kvar[k : k + n], sim.market_operator.price_usd_per_mwh[k : k + n], sim.renewable_kw[k : k + n]
        )
        base_kw = float(net.net.sn_mva) * 1000.0
        return VoltageForecast(vm_base_pu=vm, dv_dp_pu_per_kw=net.sensitivity_r() / base_kw, v_min_pu=net.v_min_pu)
