"""The market interface every mechanism implements, and the registry that finds one by name.

A mechanism is configured once (parameters, seed) and then cleared many times::

    mech = markets.get("uncontrolled")()
    result = mech.clear(request)

`MarketRequest` is a snapshot: plain numpy arrays, no references into a running simulation, so a researcher can
build one by hand (see :func:`MarketRequest.from_sessions`) and clear it without a simulator. `MarketResult` is the
one rich result type: prices, per-EV schedules, objective terms, violations and solver info.

Time convention: slot ``k`` of a request covers ``[t0_min + k*dt_min, t0_min + (k+1)*dt_min)``. An EV with
``start_slot = s`` and ``end_slot = e`` may draw power in slots ``s … e-1``; ``end_frac`` (0, 1] is the share of its
last slot ``e-1`` during which it is still plugged in (departures need not fall on slot boundaries).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from grids.network import Network


from markets.battery import charge_along_curve_kernel, charge_limit_kw
from markets.parts import Elasticity as Elasticity
from markets.parts import EVFlex as EVFlex
from markets.parts import MarketConfigError as MarketConfigError
from markets.parts import MarketError as MarketError
from markets.parts import NetworkData as NetworkData
from markets.parts import RequestError as RequestError
from markets.parts import VoltageForecast as VoltageForecast
from markets.parts import _arr

#: The optional parts of a `MarketRequest` a mechanism may declare in `Mechanism.needs`; a simulation fills a part
#: only for a mechanism that declares it. ``dlmp`` stands for both DLMP fields.
REQUEST_PARTS: frozenset[str] = frozenset(
    {
        "dlmp",
        "voltage",
        "load_elasticity",
        "s_max_kva",
        "load_range_kw",
        "committed_station_kw",
        "bus_ev_cap_kw",
        "prev_station_price_usd_per_kwh",
        "grid",
    }
)


@dataclass(frozen=True)
class MarketRequest:
    """Everything a mechanism may look at to clear one market step (a snapshot, never live state).

    Attributes:
        t0_min: start of slot 0 [min since simulation start].
        dt_min: slot length [min].
        n_slots: number of slots in the horizon.
        evs: flexibility of the EVs that need a schedule now.
        base_load_kw: forecast of the system's non-EV load per slot [kW], shape (n_slots,).
        committed_ev_kw: EV load already committed by earlier clearings per slot [kW], shape (n_slots,).
        price_usd_per_mwh: reference energy price per slot [$/MWh], shape (n_slots,) (the tariff before
            any mechanism acts; mechanisms may replace it).
        station_cap_kw: power cap of each station [kW] (index = station id).
        tod_h: time of day of each slot's start [h], shape (n_slots,).
        renewable_kw: forecast renewable generation per slot [kW], shape (n_slots,).
        dlmp_p_usd_per_mwh: optional active DLMP per slot and bus [$/MWh], shape (n_slots, n_bus).
        dlmp_q_usd_per_mvarh: optional reactive DLMP per slot and bus [$/MVArh], shape (n_slots, n_bus).
        day_ahead: true on the first clearing of a day (mechanisms that plan the day do it then).
        s_max_kva: optional apparent-power rating of each EV's charger [kVA], shape (n_evs,).
        load_range_kw: optional (lowest, highest) system load of the day-ahead forecast [kW] (anchors real-time
            prices).
        voltage: optional voltage forecast and sensitivities (`VoltageForecast`, n_slots rows).
        load_elasticity: optional announced elasticities of the flexible load (`Elasticity`), replacing a demand-response
            mechanism's configured ones for this clearing.
        committed_station_kw: optional EV load already committed at each station per slot, as the stations report
            it [kW], shape (n_stations, n_slots) (n_stations = ``len(station_cap_kw)`` when caps are given).
        bus_ev_cap_kw: optional EV-load limit of feeder buses {bus: kW} (couples the stations at a bus).
        prev_station_price_usd_per_kwh: optional price of each station in the interval before slot 0 [$/kWh],
            shape (n_stations,) (the start of a price-ramp limit; NaN = no previous price for that station).
        grid: optional simulated network and its per-bus load (`NetworkData`, n_slots rows); a mechanism that prices
            or verifies the grid uses this network, never one of its own.
    """

    t0_min: float
    dt_min: float
    n_slots: int
    evs: EVFlex
    base_load_kw: np.ndarray
    # Given as None (or omitted), these four are filled by __post_init__ (zeros, NaN = "no reference price", the
    # clock's time of day), so a cleared request always holds arrays: typed as such for the mechanisms.
    committed_ev_kw: np.ndarray = cast(np.ndarray, None)
    price_usd_per_mwh: np.ndarray = cast(np.ndarray, None)
    station_cap_kw: np.ndarray | None = None
    tod_h: np.ndarray = cast(np.ndarray, None)
    renewable_kw: np.ndarray = cast(np.ndarray, None)
    dlmp_p_usd_per_mwh: np.ndarray | None = None
    dlmp_q_usd_per_mvarh: np.ndarray | None = None
    day_ahead: bool = False
    s_max_kva: np.ndarray | None = None
    load_range_kw: tuple[float, float] | None = None
    voltage: VoltageForecast | None = None
    load_elasticity: Elasticity | None = None
    committed_station_kw: np.ndarray | None = None
    bus_ev_cap_kw: Mapping[int, float] | None = None
    prev_station_price_usd_per_kwh: np.ndarray | None = None
    grid: NetworkData | None = None

    def __post_init__(self) -> None:
        if not (self.dt_min > 0):
            raise RequestError(f"dt_min: must be > 0, got {self.dt_min}")
        if int(self.n_slots) < 1:
            raise RequestError(f"n_slots: must be >= 1, got {self.n_slots}")
        object.__setattr__(self, "n_slots", int(self.n_slots))
        n = self.n_slots
        for name, default in (
            ("base_load_kw", None),
            ("committed_ev_kw", 0.0),
            ("price_usd_per_mwh", None),
            ("renewable_kw", 0.0),
        ):
            v = getattr(self, name)
            if v is None:
                if default is None and name == "base_load_kw":
                    raise RequestError("base_load_kw: required")
                v = np.full(n, np.nan if default is None else default)
            a = _arr(np.broadcast_to(np.asarray(v, float), (n,)) if np.ndim(v) == 0 else v)
            if a.shape != (n,):
                raise RequestError(f"{name}: expected shape ({n},), got {a.shape}")
            object.__setattr__(self, name, a)
        if self.tod_h is None:
            tod = ((self.t0_min + np.arange(n) * self.dt_min) / 60.0) % 24.0
            object.__setattr__(self, "tod_h", _arr(tod))
        if np.any(self.evs.end_slot > n) and len(self.evs):
            raise RequestError(f"evs.end_slot: must be <= n_slots={n}")
        if self.station_cap_kw is not None:
            object.__setattr__(self, "station_cap_kw", _arr(self.station_cap_kw))
        self._check_optional_parts()

    def _check_optional_parts(self) -> None:
        """Validate the typed optional parts (shape, range, finite), like the required fields."""
        n, n_ev = self.n_slots, len(self.evs)
        if self.s_max_kva is not None:
            a = _arr(
                np.broadcast_to(np.asarray(self.s_max_kva, float), (n_ev,))
                if np.ndim(self.s_max_kva) == 0
                else self.s_max_kva
            )
            if a.shape != (n_ev,):
                raise RequestError(f"s_max_kva: expected shape ({n_ev},), got {a.shape}")
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                raise RequestError("s_max_kva: must be finite and >= 0 per EV")
            object.__setattr__(self, "s_max_kva", a)
        if self.load_range_kw is not None:
            lr = tuple(float(x) for x in self.load_range_kw)
            if len(lr) != 2 or not all(np.isfinite(lr)) or lr[0] > lr[1]:
                raise RequestError(
                    f"load_range_kw: expected finite (low, high) with low <= high, got {self.load_range_kw!r}"
                )
            object.__setattr__(self, "load_range_kw", lr)
        if self.voltage is not None:
            v = self.voltage
            if not isinstance(v, VoltageForecast):
                raise RequestError(f"voltage: expected a VoltageForecast, got {type(v).__name__}")
            if v.vm_base_pu.shape[0] != n:
                raise RequestError(f"voltage.vm_base_pu: expected shape (n_slots={n}, n_bus), got {v.vm_base_pu.shape}")
            if n_ev and self.evs.bus.max() >= v.n_bus:
                raise RequestError(f"voltage: has {v.n_bus} buses but an EV is at bus {self.evs.bus.max()}")
        if self.load_elasticity is not None and not isinstance(self.load_elasticity, Elasticity):
            raise RequestError(f"load_elasticity: expected an Elasticity, got {type(self.load_elasticity).__name__}")
        if self.committed_station_kw is not None:
            c = _arr(self.committed_station_kw)
            n_st = None if self.station_cap_kw is None else len(self.station_cap_kw)
            if c.ndim != 2 or c.shape[1] != n or (n_st is not None and c.shape[0] != n_st):
                raise RequestError(
                    f"committed_station_kw: expected shape ({n_st if n_st is not None else 'n_stations'}, "
                    f"{n}), got {c.shape}"
                )
            if not np.all(np.isfinite(c)):
                raise RequestError("committed_station_kw: contains NaN or inf")
            object.__setattr__(self, "committed_station_kw", c)
        if self.bus_ev_cap_kw is not None:
            caps = {int(b): float(v) for b, v in dict(self.bus_ev_cap_kw).items()}
            if any(b < 0 for b in caps) or not all(np.isfinite(v) and v >= 0 for v in caps.values()):
                raise RequestError("bus_ev_cap_kw: expected {bus >= 0: finite kW >= 0}")
            object.__setattr__(self, "bus_ev_cap_kw", caps)
        if self.prev_station_price_usd_per_kwh is not None:
            pp = _arr(np.atleast_1d(self.prev_station_price_usd_per_kwh))
            if pp.ndim != 1 or np.any(np.isinf(pp)) or np.any(pp < 0):
                raise RequestError("prev_station_price_usd_per_kwh: expected one price >= 0 (or NaN) per station")
            object.__setattr__(self, "prev_station_price_usd_per_kwh", pp)
        if self.grid is not None:
            self._check_grid()

    def _check_grid(self) -> None:
        """The network part agrees with the request: rows per slot, EV buses and DLMP/voltage columns per bus."""
        g, n = self.grid, self.n_slots
        if not isinstance(g, NetworkData):
            raise RequestError(f"grid: expected a NetworkData, got {type(g).__name__}")
        for key in ("bus_load_kw", "bus_load_kvar", "renewable_kw"):
            a = getattr(g, key)
            if a is not None and a.shape[0] != n:
                raise RequestError(f"grid.{key}: expected {n} rows (n_slots), got {a.shape[0]}")
        if len(self.evs) and self.evs.bus.max() >= g.n_bus:
            raise RequestError(
                f"grid: network {g.network.name!r} has {g.n_bus} buses but an EV is at bus {self.evs.bus.max()}"
            )
        for key in ("dlmp_p_usd_per_mwh", "dlmp_q_usd_per_mvarh"):
            d = getattr(self, key)
            if d is not None and np.shape(d)[-1] != g.n_bus:
                raise RequestError(
                    f"{key}: {np.shape(d)[-1]} bus columns, but the network {g.network.name!r} has {g.n_bus} buses"
                )
        if self.voltage is not None and self.voltage.n_bus != g.n_bus:
            raise RequestError(
                f"voltage: {self.voltage.n_bus} buses, but the network {g.network.name!r} has {g.n_bus} buses"
            )

    @property
    def dt_h(self) -> float:
        """Slot length [h]."""
        return self.dt_min / 60.0

    @classmethod
    def from_sessions(
        cls,
        *,
        dt_min: float,
        n_slots: int,
        base_load_kw: Any,
        arrival_slot: Any,
        departure_slot: Any,
        e_need_kwh: Any,
        p_max_kw: Any,
        eta_ch: Any = 0.92,
        bus: Any = 0,
        station: Any = 0,
        participates: Any = True,
        elasticity: Any = -0.3,
        **kw: Any,
    ) -> MarketRequest:
        """Build a request by hand from session lists (the way to use a mechanism without a simulation).

        Example:
            >>> req = MarketRequest.from_sessions(dt_min=60, n_slots=4, base_load_kw=[10, 20, 30, 5],
            ...     arrival_slot=[0], departure_slot=[4], e_need_kwh=[9.2], p_max_kw=[7.0], eta_ch=1.0)
            >>> len(req.evs), req.dt_h
            (1, 1.0)
        """
        a = np.atleast_1d(np.asarray(arrival_slot, int))
        n = len(a)

        def b(x: Any, dtype: Any = float) -> np.ndarray:
            return np.broadcast_to(np.asarray(x, dtype), (n,)).copy()

        evs = EVFlex(
            ev_id=np.arange(n),
            bus=b(bus, int),
            station=b(station, int),
            start_slot=a,
            end_slot=b(departure_slot, int),
            end_frac=np.ones(n),
            e_need_kwh=b(e_need_kwh),
            p_max_kw=b(p_max_kw),
            p_min_kw=np.zeros(n),
            eta_ch=b(eta_ch),
            participates=b(participates, bool),
            elasticity=b(elasticity),
        )
        return cls(t0_min=0.0, dt_min=dt_min, n_slots=n_slots, evs=evs, base_load_kw=base_load_kw, **kw)


@dataclass(frozen=True)
class MarketResult:
    """What a mechanism returns.

    Attributes:
        mechanism: registry name of the mechanism.
        price_usd_per_mwh: price per slot [$/MWh], shape (n_slots,) (or (n_slots, n_bus) for locational prices).
        p_kw: grid-side charging power per EV and slot [kW], shape (n_evs, n_slots); negative = discharge.
        q_kvar: reactive power per EV and slot [kVAr] in load convention (positive = absorbed by the charger,
            like ``p_kw``), or None.
        base_load_shift_kw: change of the non-EV load per slot from demand response [kW], shape (n_slots,);
            sums to zero when shifted energy is fully recovered.
        objective: named objective terms (e.g. ``{"energy_cost_usd": …}``).
        violations: named constraint violations (0 means satisfied).
        info: solver information: ``wall_time_s`` always, plus mechanism-specific entries (for inspection; nothing in
            the simulation steers by it).
        repriced: true when the mechanism re-priced the rest of the horizon in real time (the market operator then
            adopts ``price_usd_per_mwh`` from the clearing's first slot on).
        reference_objective: objective of an exact reference solution, when computed.
        gap: relative optimality gap to the reference, when computed.
    """

    mechanism: str
    price_usd_per_mwh: np.ndarray
    p_kw: np.ndarray
    q_kvar: np.ndarray | None = None
    base_load_shift_kw: np.ndarray | None = None
    objective: dict[str, float] = field(default_factory=dict)
    violations: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    reference_objective: float | None = None
    gap: float | None = None
    repriced: bool = False

    def to_frame(self, request: MarketRequest | None = None) -> Any:
        """Schedules as a tidy pandas DataFrame (one row per EV and slot with non-zero power)."""
        import pandas as pd

        ev_idx, slot = np.nonzero(self.p_kw)
        df = pd.DataFrame({"ev": ev_idx, "slot": slot, "p_kw": self.p_kw[ev_idx, slot]})
        if request is not None:
            df["ev_id"] = request.evs.ev_id[ev_idx]
            df["t_min"] = request.t0_min + slot * request.dt_min
        return df

    def energy_kwh(self, dt_h: float) -> np.ndarray:
        """Grid-side energy scheduled per EV [kWh]."""
        return self.p_kw.sum(axis=1) * dt_h

    def with_info(self, **info: Any) -> MarketResult:
        """A copy with extra ``info`` entries."""
        return replace(self, info={**self.info, **info})


def finite_number(v: Any) -> bool:
    """Whether ``v`` is a real number (not a bool) that is finite: a float that is not NaN/inf, or an int within
    TOML's (and numpy's) 64-bit range (a larger one would become an object array and fail later).

    For parameter checks: a string, list or table must give a one-line `MarketConfigError`, never a ``TypeError``.
    """
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        return False
    if isinstance(v, int):
        return -(2**63) <= v < 2**63
    return math.isfinite(float(v))


class Mechanism(ABC):
    """Base class of market mechanisms: configure once, then `clear` many times.

    Subclasses set ``name`` and ``parameters`` (allowed keyword → (default, description)) and implement
    `_clear`. Unknown keywords are an error: a misspelt option must not silently spoil a sweep.

    What a mechanism tells a simulation (declared, never probed):

    * ``needs`` — the optional request parts it reads (a subset of `REQUEST_PARTS`); a simulation fills only those.
      A class attribute, or set per instance in ``__init__`` when a parameter switches a part on.
    * ``replans`` — true when the simulation should send every plugged EV at every step (rolling horizon).
    * `announced_elasticity` — the elasticities it announces for the ``load_elasticity`` part (the simulation passes
      them through the ``elasticity`` attack channel), for mechanisms that need ``load_elasticity``.
    * ``discharges`` — true when it schedules V2G EVs to discharge (negative ``p_kw``) where their ``p_min_kw``
      allows; a scenario with V2G-capable EVs and a mechanism that does not is rejected at validation.
    * `check_network` — for mechanisms that need ``grid``: refuses a network it cannot run on (one line).
    """

    name: ClassVar[str] = ""
    parameters: ClassVar[dict[str, tuple[Any, str]]] = {}
    needs: frozenset[str] = frozenset()
    replans: bool = False
    discharges: bool = False

    def __init__(
        self, *, seed: int | np.random.SeedSequence | np.random.Generator | None = None, **params: Any
    ) -> None:
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            import difflib

            near = difflib.get_close_matches(str(unknown[0]), list(self.parameters), n=1)
            raise MarketConfigError(
                f"market.params.{unknown[0]}: unknown parameter for '{self.name}'; allowed: "
                f"{', '.join(sorted(self.parameters)) or '(none)'}" + (f"; did you mean '{near[0]}'?" if near else "")
            )
        self.params: dict[str, Any] = {k: v[0] for k, v in self.parameters.items()}
        self.params.update(params)
        self.rng = np.random.default_rng(seed)
        self._validate()
        unknown_parts = sorted(set(self.needs) - REQUEST_PARTS)
        if unknown_parts:
            raise MarketConfigError(
                f"{type(self).__name__}.needs: unknown request part '{unknown_parts[0]}'; allowed: "
                f"{', '.join(sorted(REQUEST_PARTS))}"
            )

    @property
    def announced_elasticity(self) -> Elasticity | None:
        """The elasticities the mechanism announces (None unless it needs ``load_elasticity``)."""
        return None

    def check_network(self, network: Network) -> None:  # noqa: B027 - an optional hook (mechanisms needing ``grid``)
        """Raise `MarketConfigError` (one line: the property needed and what is allowed) when the mechanism cannot
        run on ``network``; a mechanism without requirements keeps this no-op."""

    def _validate(self) -> None:  # noqa: B027 - an optional hook: mechanisms without ranges keep the no-op
        """Check parameter ranges; raise `MarketConfigError` naming the parameter."""

    def clear(self, request: MarketRequest) -> MarketResult:
        """Clear one market step; returns a `MarketResult` with ``info['wall_time_s']`` set."""
        t = time.perf_counter()
        result = self._clear(request)
        return result.with_info(wall_time_s=time.perf_counter() - t)

    @abstractmethod
    def _clear(self, request: MarketRequest) -> MarketResult:
        """Clear ``request`` (subclasses implement this; `clear` adds the timing)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


_REGISTRY: dict[str, Callable[..., Mechanism]] = {}

#: The shipped mechanisms and the module that registers each: a run imports only its own mechanism's module (the QUBO
#: ones pull in dimod and networkx, ~0.2 s that `validate` and every other mechanism's run need not pay).
_MODULES = ("eho_bilevel", "elasticity_dr", "external", "milp", "qubo_dlmp", "qubo_rtp", "uncontrolled")
BUILTIN: dict[str, str] = {m.replace("_", "-"): m for m in _MODULES}


def register(cls: type[Mechanism]) -> type[Mechanism]:
    """Class decorator: make a mechanism available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered mechanisms (the shipped ones and any registered since), without importing them."""
    return sorted(set(_REGISTRY) | set(BUILTIN))


def get(name: str) -> Callable[..., Mechanism]:
    """The mechanism class registered under ``name`` (a shipped one's module is imported on first use)."""
    if name not in _REGISTRY and name in BUILTIN:
        import importlib

        importlib.import_module(f"markets.{BUILTIN[name]}")  # registers the mechanism
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MarketConfigError(f"market.mechanism: unknown '{name}'; allowed: {', '.join(available())}") from None


def asap_fill(evs: EVFlex, n_slots: int, dt_h: float, p_cap_kw: np.ndarray | None = None) -> np.ndarray:
    """Charge every EV at full power from its first slot until its need is met (vectorised).

    Args:
        evs: EV flexibility.
        n_slots: horizon length.
        dt_h: slot length [h].
        p_cap_kw: optional per-EV power cap [kW] overriding ``evs.p_max_kw`` where smaller.

    Returns:
        Grid-side power per EV and slot [kW], shape (n_evs, n_slots).
    """
    p = evs.p_max_kw if p_cap_kw is None else np.minimum(evs.p_max_kw, p_cap_kw)
    avail = evs.availability(n_slots)
    # grid energy each slot could deliver, then cap cumulatively at the grid energy the EV needs
    cap_kwh = avail * p[:, None] * dt_h
    need_grid_kwh = evs.e_need_kwh / evs.eta_ch
    cum = np.cumsum(cap_kwh, axis=1)
    delivered = np.minimum(cum, need_grid_kwh[:, None])
    out = np.diff(delivered, axis=1, prepend=0.0) / dt_h
    tap = np.nonzero((evs.transition_soc < 1.0) & (evs.e_need_kwh > 0))[0]
    if len(tap):  # two-stage batteries: slot by slot along the curve (markets.battery)
        out[tap] = charge_along_curve(evs.select(tap), p[tap], avail[tap], dt_h)
    return out


def charge_along_curve(evs: EVFlex, p_kw: np.ndarray, avail: np.ndarray, dt_h: float) -> np.ndarray:
    """Full power, within the charging curve of each EV's battery, until its need is met [kW], shape of ``avail``.

    ``p_kw`` is each EV's power limit (≤ ``p_max_kw``); the curve's slope stays that of ``p_max_kw``. Slot by slot
    (`markets.battery.charge_limit_kw`) for all EVs together, until none needs more than 1e-12 kWh
    (`markets.battery.charge_along_curve_kernel`, compiled; `charge_along_curve_numpy` is the reference).
    """
    last = int(evs.end_slot.max()) if len(evs) else 0
    f64 = [np.ascontiguousarray(a, np.float64) for a in (evs.e_kwh, evs.e_need_kwh, evs.e_cap_kwh, evs.p_max_kw)]
    more = [np.ascontiguousarray(a, np.float64) for a in (evs.transition_soc, evs.eta_ch, p_kw)]
    out = np.zeros(avail.shape)
    charge_along_curve_kernel(
        *f64, *more, float(dt_h), np.ascontiguousarray(avail, np.float64), min(last, avail.shape[1]), out
    )
    return out


def charge_along_curve_numpy(evs: EVFlex, p_kw: np.ndarray, avail: np.ndarray, dt_h: float) -> np.ndarray:
    """`charge_along_curve` in numpy, one vectorised step per slot: the reference the kernel matches bit for bit."""
    e = evs.e_kwh.astype(float)
    left = evs.e_need_kwh.astype(float)  # battery energy still to deliver
    out = np.zeros(avail.shape)
    last = int(evs.end_slot.max()) if len(evs) else 0
    for t in range(min(last, avail.shape[1])):
        lim = charge_limit_kw(e, evs.e_cap_kwh, evs.p_max_kw, evs.transition_soc, evs.eta_ch, dt_h, avail[:, t])
        q = np.minimum(np.minimum(lim, p_kw * avail[:, t]), left / (evs.eta_ch * dt_h))
        out[:, t] = q
        e += q * evs.eta_ch * dt_h
        left = np.maximum(left - q * evs.eta_ch * dt_h, 0.0)
        if not (left > 1e-12).any():
            break
    return out
