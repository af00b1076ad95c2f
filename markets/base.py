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

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, ClassVar

import numpy as np


class MarketError(Exception):
    """Base class of market errors."""


class MarketConfigError(MarketError, ValueError):
    """A mechanism was given an unknown or out-of-range parameter."""


class RequestError(MarketError, ValueError):
    """A `MarketRequest` is malformed (shape, range or NaN)."""


def _arr(x: Any, dtype: Any = float) -> np.ndarray:
    a = np.array(x, dtype=dtype, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class EVFlex:
    """Flexibility of the EVs in a request, one entry per EV (struct of arrays).

    Attributes:
        ev_id: EV identifiers (any ints, unique).
        bus: grid bus of the EV's station [pandapower 0-based index].
        station: station index of the EV.
        start_slot: first slot the EV may charge in.
        end_slot: one past the last slot (exclusive); ``end_slot > start_slot``.
        end_frac: share of the last slot the EV is still plugged in, in (0, 1].
        e_need_kwh: energy still to be delivered into the battery [kWh] (≥ 0).
        p_max_kw: maximum charging power drawn from the grid [kW].
        p_min_kw: minimum power (negative = V2G discharge allowed) [kW].
        eta_ch: charging efficiency (battery energy = grid energy × eta_ch).
        participates: whether the EV follows the aggregator's schedule (demand-response participant).
        elasticity: price elasticity of the EV's demand (≤ 0).
    """

    ev_id: np.ndarray
    bus: np.ndarray
    station: np.ndarray
    start_slot: np.ndarray
    end_slot: np.ndarray
    end_frac: np.ndarray
    e_need_kwh: np.ndarray
    p_max_kw: np.ndarray
    p_min_kw: np.ndarray
    eta_ch: np.ndarray
    participates: np.ndarray
    elasticity: np.ndarray

    _INT = ("ev_id", "bus", "station", "start_slot", "end_slot")

    def __post_init__(self) -> None:
        n = len(np.atleast_1d(self.ev_id))
        for f in fields(self):
            dtype = int if f.name in self._INT else (bool if f.name == "participates" else float)
            a = _arr(np.atleast_1d(getattr(self, f.name)), dtype)
            if a.shape != (n,):
                raise RequestError(f"evs.{f.name}: expected shape ({n},), got {a.shape}")
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise RequestError(f"evs.{f.name}: contains NaN or inf")
            object.__setattr__(self, f.name, a)
        if np.any(self.end_slot <= self.start_slot):
            raise RequestError("evs.end_slot: must be > start_slot for every EV")
        if np.any((self.end_frac <= 0) | (self.end_frac > 1)):
            raise RequestError("evs.end_frac: allowed range is (0, 1]")
        if np.any(self.e_need_kwh < 0):
            raise RequestError("evs.e_need_kwh: allowed range is >= 0")
        if np.any(self.p_max_kw < 0) or np.any(self.p_min_kw > self.p_max_kw):
            raise RequestError("evs.p_max_kw/p_min_kw: need p_min_kw <= p_max_kw and p_max_kw >= 0")
        if np.any((self.eta_ch <= 0) | (self.eta_ch > 1)):
            raise RequestError("evs.eta_ch: allowed range is (0, 1]")

    def __len__(self) -> int:
        return len(self.ev_id)

    @classmethod
    def empty(cls) -> "EVFlex":
        z = np.zeros(0)
        return cls(*(z for _ in fields(cls)))

    def select(self, mask: np.ndarray) -> "EVFlex":
        """The EVs where ``mask`` is true (a new, independent `EVFlex`)."""
        return EVFlex(*(getattr(self, f.name)[mask] for f in fields(self)))

    def availability(self, n_slots: int) -> np.ndarray:
        """Share of each slot each EV is plugged in, shape (n_evs, n_slots), values in [0, 1]."""
        k = np.arange(n_slots)
        a = ((k >= self.start_slot[:, None]) & (k < self.end_slot[:, None])).astype(float)
        last = self.end_slot - 1
        inside = last < n_slots
        a[np.nonzero(inside)[0], last[inside]] *= self.end_frac[inside]
        return a


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
        extra: anything else a mechanism documents that it reads.
    """

    t0_min: float
    dt_min: float
    n_slots: int
    evs: EVFlex
    base_load_kw: np.ndarray
    committed_ev_kw: np.ndarray | None = None
    price_usd_per_mwh: np.ndarray | None = None
    station_cap_kw: np.ndarray | None = None
    tod_h: np.ndarray | None = None
    renewable_kw: np.ndarray | None = None
    dlmp_p_usd_per_mwh: np.ndarray | None = None
    dlmp_q_usd_per_mvarh: np.ndarray | None = None
    day_ahead: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

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
    ) -> "MarketRequest":
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
        info: solver information: ``wall_time_s`` always, plus mechanism-specific entries.
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

    def to_frame(self, request: MarketRequest | None = None) -> "Any":
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

    def with_info(self, **info: Any) -> "MarketResult":
        """A copy with extra ``info`` entries."""
        return replace(self, info={**self.info, **info})


class Mechanism(ABC):
    """Base class of market mechanisms: configure once, then `clear` many times.

    Subclasses set ``name`` and ``parameters`` (allowed keyword → (default, description)) and implement
    `_clear`. Unknown keywords are an error: a misspelt option must not silently spoil a sweep.
    """

    name: ClassVar[str] = ""
    parameters: ClassVar[dict[str, tuple[Any, str]]] = {}

    def __init__(self, *, seed: int | np.random.SeedSequence | np.random.Generator | None = None, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise MarketConfigError(
                f"market.params.{unknown[0]}: unknown parameter for '{self.name}'; allowed: "
                f"{', '.join(sorted(self.parameters)) or '(none)'}"
            )
        self.params: dict[str, Any] = {k: v[0] for k, v in self.parameters.items()}
        self.params.update(params)
        self.rng = np.random.default_rng(seed)
        self._validate()

    def _validate(self) -> None:
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


def register(cls: type[Mechanism]) -> type[Mechanism]:
    """Class decorator: make a mechanism available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered mechanisms."""
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> Callable[..., Mechanism]:
    """The mechanism class registered under ``name``."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MarketConfigError(f"market.mechanism: unknown '{name}'; allowed: {', '.join(available())}") from None


def _load_builtin() -> None:
    from markets import (eho_bilevel, elasticity_dr, milp, qubo_dlmp, qubo_rtp,  # noqa: F401  (registration)
                         uncontrolled)


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
    e = np.diff(delivered, axis=1, prepend=0.0)
    return e / dt_h
