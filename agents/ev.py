"""EV and station agents, and the EV's charging session as a SimPy process."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Literal

import mesa
import numpy as np
import simpy

from agents.fleet import DEPARTED, PLUGGED, RENEGED, WAITING, FleetState, StationTable

if TYPE_CHECKING:  # pragma: no cover
    from sim.model import CoSimulation


class _Users(dict):
    """The requests holding a station's ports: what SimPy's list is used for (append, remove, len, iteration in
    order), each in O(1). A release removed its request from a list in O(ports in use); a home group with one port
    per EV holds thousands, which cost 8 % of a day with 100 000 EVs."""

    def append(self, request: simpy.Event) -> None:
        self[request] = None

    def remove(self, request: simpy.Event) -> None:
        self.pop(request, None)  # SimPy ignores a request that holds no port


class Ports(simpy.Resource):
    """`simpy.Resource` whose users are kept in insertion order with O(1) release (same behaviour)."""

    def __init__(self, env: simpy.Environment, capacity: int) -> None:
        super().__init__(env, capacity)
        self.users = _Users()  # type: ignore[assignment]


class Station(mesa.Agent):
    """A charging station: its ports are a SimPy `Resource`, so EVs really queue for them.

    Attributes:
        idx: row in the model's `StationTable`.
        ports: the SimPy resource (capacity = number of ports).
        bus: grid bus [internal position; `Network.bus_ids` gives its pandapower index].
        cap_kw: power cap of the station [kW] (inf = none).
        release_when_full: EVs free the port once charged (public stations) instead of at departure (home).
    """

    def __init__(self, model: CoSimulation, idx: int, table: StationTable) -> None:
        super().__init__(model)
        self.idx = idx
        self.ports = Ports(model.env, capacity=int(table.ports[idx]))
        self.bus = int(table.bus[idx])
        self.cap_kw = float(table.cap_kw[idx])
        self.release_when_full = bool(table.release_when_full[idx])


class EV(mesa.Agent):
    """One EV: a view onto row ``idx`` of the fleet's state arrays, plus its charging session process.

    The session (see :meth:`session`): arrive → queue for a port of its station → charge (the power comes from
    the market step) → leave at departure, or as soon as it is charged at stations that release full EVs. An EV
    still queued at its departure time leaves without charging (reneges).
    """

    def __init__(self, model: CoSimulation, idx: int) -> None:
        super().__init__(model)
        self.idx = idx
        self.charged: simpy.Event = model.env.event()

    @property
    def fleet(self) -> FleetState:
        return self.model.fleet

    @property
    def soc(self) -> float:
        """State of charge [0–1]."""
        return float(self.fleet.soc[self.idx])

    @property
    def state(self) -> int:
        return int(self.fleet.state[self.idx])

    def session(self) -> Generator[simpy.Event, object, None]:
        """SimPy process of one charging session."""
        env: simpy.Environment = self.model.env
        f, i = self.fleet, self.idx
        yield env.timeout(f.arrival_min[i])
        k = self.model.choose_station(i)  # the aggregator may redirect a following user to a nearby station
        if k != f.station[i]:
            f.station[i] = k
            f.bus[i] = self.model.station_table.bus[k]
        station: Station = self.model.stations[k]
        f.state[i] = WAITING
        req = station.ports.request()
        if req.triggered:  # a free port: no queue, so no patience to wait out (most EVs; home groups always)
            yield req
        else:
            patience = max(f.departure_min[i] - env.now, 0.0)
            got = yield req | env.timeout(patience)
            assert isinstance(got, simpy.events.ConditionValue), "an AnyOf event yields the events that fired"
            if req not in got:
                req.cancel()
                f.state[i] = RENEGED
                f.unplug_min[i] = env.now
                return
        f.state[i] = PLUGGED
        f.plugin_min[i] = env.now
        left = max(f.departure_min[i] - env.now, 0.0)
        if station.release_when_full:
            yield self.charged | env.timeout(left)
        else:
            yield env.timeout(left)
        station.ports.release(req)
        f.state[i] = DEPARTED
        f.unplug_min[i] = env.now


class UnqueuedSessions:
    """Sessions that can never queue, advanced in bulk: EVs at stations with a port for every EV that can come there
    (home chargers, ``ports = 0``), which keep the port until departure and are not redirected.

    For such an EV the SimPy `EV.session` is fixed in advance: it plugs in at its arrival and leaves at
    ``arrival + max(departure − arrival, 0)`` (SimPy's clock, bit for bit), whatever the others do. Running
    100 000 of those processes cost a fifth of a 100 000-EV day; `advance` sets the same states and times at the
    instants the simulation looks (each market step, after every event due then, and the end of the run).
    """

    def __init__(self, fleet: FleetState, idx: np.ndarray) -> None:
        self.fleet = fleet
        self.idx = idx
        self._n_in = self._n_out = 0
        self._started = False

    def _start(self) -> None:
        """Order the sessions by arrival and by departure, from the fleet as it is when the run starts (as SimPy
        processes read it when they start)."""
        f, idx = self.fleet, self.idx
        arr = f.arrival_min[idx]
        end_min = arr + np.maximum(f.departure_min[idx] - arr, 0.0)
        o = np.argsort(arr, kind="stable")
        self._arr_ev, self._arr_t = idx[o], arr[o]
        o = np.argsort(end_min, kind="stable")
        self._end_ev, self._end_t = idx[o], end_min[o]
        self._started = True

    def __len__(self) -> int:
        return len(self.idx)

    def advance(self, now_min: float, *, inclusive: bool = True) -> None:
        """Plug in every EV that arrived and unplug every EV that left by ``now_min`` (strictly before it when not
        ``inclusive``: SimPy's ``run(until)`` stops before events due at ``until``)."""
        if not self._started:
            self._start()
        side: Literal["left", "right"] = "right" if inclusive else "left"
        f = self.fleet
        n = int(np.searchsorted(self._arr_t, now_min, side))
        if n > self._n_in:
            rows = self._arr_ev[self._n_in : n]
            f.state[rows] = PLUGGED
            f.plugin_min[rows] = f.arrival_min[rows]
            self._n_in = n
        n = int(np.searchsorted(self._end_t, now_min, side))
        if n > self._n_out:
            rows = self._end_ev[self._n_out : n]
            f.state[rows] = DEPARTED
            f.unplug_min[rows] = self._end_t[self._n_out : n]
            self._n_out = n


def wait_min(fleet: FleetState, now_min: float) -> np.ndarray:
    """Waiting time of each EV so far [min] (plug-in − arrival; NaN before arrival)."""
    plugged = np.where(np.isnan(fleet.plugin_min), np.nan, fleet.plugin_min)
    end = np.where(np.isnan(plugged), np.where(np.isnan(fleet.unplug_min), now_min, fleet.unplug_min), plugged)
    w = end - fleet.arrival_min
    return np.where(fleet.arrival_min <= now_min, w, np.nan)
