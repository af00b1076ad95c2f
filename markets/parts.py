"""The parts of a `markets.base.MarketRequest` (re-exported there): the EVs' flexibility (`EVFlex`), the voltage
forecast, announced load elasticities and the simulated network; and the market errors."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from markets.compiled import njit_cached

if TYPE_CHECKING:  # pragma: no cover
    from grids.network import Network


class MarketError(Exception):
    """Base class of market errors."""


class MarketConfigError(MarketError, ValueError):
    """A mechanism was given an unknown or out-of-range parameter."""


class RequestError(MarketError, ValueError):
    """A `MarketRequest` is malformed (shape, range or NaN)."""


def availability(start_slot: np.ndarray, end_slot: np.ndarray, end_frac: np.ndarray, n_slots: int) -> np.ndarray:
    """Share of each slot each EV is plugged in, shape (n_evs, n_slots): 1 in ``[start_slot, end_slot)``, the last
    of those slots ``end_frac`` (when it lies in the horizon), 0 elsewhere."""
    out = np.zeros((len(start_slot), n_slots))
    _availability_into(
        out,
        np.asarray(start_slot, np.int64),
        np.asarray(end_slot, np.int64),
        np.asarray(end_frac, np.float64),
    )
    return out


@njit_cached
def _availability_into(out: np.ndarray, start: np.ndarray, end: np.ndarray, frac: np.ndarray) -> None:
    """Fill `availability` (a compiled loop: the boolean-matrix version was ~4 ms a call at 25 000 EVs, three calls
    a step)."""
    n_slots = out.shape[1]
    for i in range(out.shape[0]):
        for t in range(max(start[i], 0), min(end[i], n_slots)):
            out[i, t] = 1.0
        last = end[i] - 1
        if 0 <= last < n_slots:
            out[i, last] *= frac[i]


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
        elasticity: own-price elasticity of the EV's demand (≤ 0: demand never rises with its price).

    The battery (optional; the defaults describe a charge-only EV with an ideal battery, as before they existed):

    Attributes:
        eta_dis: discharging efficiency (grid energy = battery energy × eta_dis) (default 1).
        e_kwh: battery energy now [kWh] (default 0).
        e_cap_kwh: battery capacity [kWh] (default ``e_kwh + e_need_kwh``).
        e_floor_kwh: a discharge never takes the battery below this [kWh] (default ``e_kwh``: no net discharge).
        transition_soc: two-stage battery: above it the charging limit falls linearly to 0 at full
            (`agents.battery`); 1 = ideal (default).
        degradation_usd_per_kwh: battery wear per kWh discharged from the battery [$/kWh] (default 0).
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
    # optional in the constructor (None = the default named in the docstring); arrays once constructed
    eta_dis: np.ndarray = None  # type: ignore[assignment]
    e_kwh: np.ndarray = None  # type: ignore[assignment]
    e_cap_kwh: np.ndarray = None  # type: ignore[assignment]
    e_floor_kwh: np.ndarray = None  # type: ignore[assignment]
    transition_soc: np.ndarray = None  # type: ignore[assignment]
    degradation_usd_per_kwh: np.ndarray = None  # type: ignore[assignment]

    _INT = ("ev_id", "bus", "station", "start_slot", "end_slot")

    def __post_init__(self) -> None:
        n = len(np.atleast_1d(self.ev_id))
        for name, default in (
            ("eta_dis", 1.0),
            ("e_kwh", 0.0),
            ("transition_soc", 1.0),
            ("degradation_usd_per_kwh", 0.0),
        ):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, default))
        if self.e_cap_kwh is None:
            object.__setattr__(self, "e_cap_kwh", np.asarray(self.e_kwh, float) + np.asarray(self.e_need_kwh, float))
        if self.e_floor_kwh is None:
            object.__setattr__(self, "e_floor_kwh", np.asarray(self.e_kwh, float))
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
        if np.any((self.eta_ch <= 0) | (self.eta_ch > 1)) or np.any((self.eta_dis <= 0) | (self.eta_dis > 1)):
            raise RequestError("evs.eta_ch/eta_dis: allowed range is (0, 1]")
        if np.any(self.e_floor_kwh > self.e_cap_kwh + 1e-9) or np.any(self.e_kwh > self.e_cap_kwh + 1e-9):
            raise RequestError("evs.e_floor_kwh/e_kwh: need e_floor_kwh <= e_cap_kwh and e_kwh <= e_cap_kwh")
        if np.any((self.transition_soc <= 0) | (self.transition_soc > 1)) or np.any(self.degradation_usd_per_kwh < 0):
            raise RequestError("evs.transition_soc: allowed range is (0, 1]; evs.degradation_usd_per_kwh: >= 0")
        if np.any(self.elasticity > 0):
            raise RequestError(
                f"evs.elasticity: got {float(self.elasticity.max()):g}; allowed range is <= 0 (an own-price "
                "elasticity: demand does not rise with its price)"
            )

    def __len__(self) -> int:
        return len(self.ev_id)

    @classmethod
    def trusted(cls, **arrays: np.ndarray) -> EVFlex:
        """An `EVFlex` of arrays its caller vouches for — every field given, one entry per EV, within the ranges
        ``__post_init__`` checks — stored as read-only copies without checking them again: the simulation's own
        reports, built from the fleet's state every step (the checks were ~0.3 ms a call, 15 % of a gym step;
        tests/test_sim.py re-validates every report of a run)."""
        out = object.__new__(cls)
        for f in fields(cls):
            dtype = int if f.name in cls._INT else (bool if f.name == "participates" else float)
            object.__setattr__(out, f.name, _arr(arrays[f.name], dtype))
        return out

    @classmethod
    def empty(cls) -> EVFlex:
        z = np.zeros(0)
        return cls(*(z for _ in fields(cls)))

    def select(self, mask: np.ndarray) -> EVFlex:
        """The EVs where ``mask`` (boolean or index array) is true (a new, independent `EVFlex`). Not validated again: a subset of checked
        arrays is checked (validation was ~0.8 ms a call, 16 % of a long run's CPU)."""
        take = np.asarray(mask)  # a boolean or index array: the arrays below are copies, never views
        out = object.__new__(EVFlex)
        for f in fields(self):
            object.__setattr__(out, f.name, getattr(self, f.name)[take])
        return out

    @property
    def discharges(self) -> np.ndarray:
        """EVs that may discharge: negative ``p_min_kw`` and energy above their floor at some point (bool)."""
        return (self.p_min_kw < 0) & (self.e_floor_kwh < self.e_kwh + self.e_need_kwh - 1e-9)

    def availability(self, n_slots: int) -> np.ndarray:
        """Share of each slot each EV is plugged in, shape (n_evs, n_slots), values in [0, 1]."""
        return availability(self.start_slot, self.end_slot, self.end_frac, n_slots)


@dataclass(frozen=True)
class VoltageForecast:
    """Bus voltages expected over a request's horizon and their linear sensitivity to EV power (LinDistFlow).

    Attributes:
        vm_base_pu: voltage magnitude per slot and bus with the load already committed [pu], shape (n_slots, n_bus).
        dv_dp_pu_per_kw: voltage drop at bus ``i`` per kW drawn at bus ``j`` [pu/kW], shape (n_bus, n_bus).
        v_min_pu: lowest allowed voltage [pu], one value or one per bus (stored per bus, shape (n_bus,)).
        dv_dq_pu_per_kvar: voltage drop per kVAr absorbed [pu/kVAr], shape (n_bus, n_bus), or None.
    """

    vm_base_pu: np.ndarray
    dv_dp_pu_per_kw: np.ndarray
    v_min_pu: Any
    dv_dq_pu_per_kvar: np.ndarray | None = None

    def __post_init__(self) -> None:
        vm = _arr(self.vm_base_pu)
        if vm.ndim != 2:
            raise RequestError(f"voltage.vm_base_pu: expected shape (n_slots, n_bus), got {vm.shape}")
        nb = vm.shape[1]
        object.__setattr__(self, "vm_base_pu", vm)
        for key in ("dv_dp_pu_per_kw", "dv_dq_pu_per_kvar"):
            v = getattr(self, key)
            if v is None:
                continue
            m = _arr(v)
            if m.shape != (nb, nb):
                raise RequestError(f"voltage.{key}: expected shape ({nb}, {nb}), got {m.shape}")
            object.__setattr__(self, key, m)
        if self.dv_dp_pu_per_kw is None:
            raise RequestError("voltage.dv_dp_pu_per_kw: required")
        vmin = np.asarray(self.v_min_pu, float)
        if vmin.ndim > 1 or (vmin.ndim == 1 and vmin.shape != (nb,)):
            raise RequestError(f"voltage.v_min_pu: expected one value or shape ({nb},), got {vmin.shape}")
        object.__setattr__(self, "v_min_pu", _arr(np.broadcast_to(vmin, (nb,))))
        for key in ("vm_base_pu", "dv_dp_pu_per_kw", "v_min_pu", "dv_dq_pu_per_kvar"):
            a = getattr(self, key)
            if a is not None and not np.all(np.isfinite(a)):
                raise RequestError(f"voltage.{key}: contains NaN or inf")

    @property
    def n_bus(self) -> int:
        """Number of buses."""
        return int(self.vm_base_pu.shape[1])

    def window(self, start: int, stop: int | None = None) -> VoltageForecast:
        """The forecast of slots ``start … stop−1`` (the sensitivities are kept)."""
        return replace(self, vm_base_pu=self.vm_base_pu[start:stop])


@dataclass(frozen=True)
class Elasticity:
    """Price elasticities of the flexible non-EV load, as announced to a demand-response mechanism.

    Attributes:
        self_elasticity: demand change per price change in the same slot (relative, normally ≤ 0).
        cross_elasticity: demand change per price change in the other slots (relative, normally ≥ 0).

    The signs are not enforced: the ``elasticity`` attack channel may announce implausible values, and the
    mechanism must see what was announced.
    """

    self_elasticity: float
    cross_elasticity: float

    def __post_init__(self) -> None:
        for key in ("self_elasticity", "cross_elasticity"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                raise RequestError(f"elasticity.{key}: expected a finite number, got {v!r}")

    def as_dict(self) -> dict[str, float]:
        """``{"self_elasticity": …, "cross_elasticity": …}``."""
        return {"self_elasticity": self.self_elasticity, "cross_elasticity": self.cross_elasticity}


@dataclass(frozen=True)
class NetworkData:
    """The simulated network as a mechanism sees it (request part ``grid``): topology, impedances, ratings, DERs and
    limits, plus the non-EV load and renewable output the simulation runs in the request's slots.

    Per-bus arrays are indexed like the network's internal positions (``network.bus_ids`` gives each position's
    pandapower index), the same index as ``EVFlex.bus`` and the columns of the DLMPs and the voltage forecast.

    Attributes:
        network: the `grids.network.Network` simulated; mechanisms read it and never change it.
        bus_load_kw: non-EV load per slot and bus the simulation runs [kW], shape (n_slots, n_bus), or None (a
            hand-built request: a mechanism then derives it from the network's own load profiles).
        bus_load_kvar: reactive non-EV load per slot and bus [kVAr], shape (n_slots, n_bus); given with
            ``bus_load_kw`` or not at all.
        renewable_kw: available output of each of ``network.renewables`` per slot [kW], shape
            (n_slots, n_renewables), or None (then from the network's profiles).
    """

    network: Network
    bus_load_kw: np.ndarray | None = None
    bus_load_kvar: np.ndarray | None = None
    renewable_kw: np.ndarray | None = None

    def __post_init__(self) -> None:
        net = self.network
        if not (hasattr(net, "n_bus") and hasattr(net, "net") and hasattr(net, "renewables")):
            raise RequestError(f"grid.network: expected a grids.network.Network, got {type(net).__name__}")
        if (self.bus_load_kw is None) != (self.bus_load_kvar is None):
            raise RequestError("grid.bus_load_kw/bus_load_kvar: give both or neither")
        nb, n_ren = int(net.n_bus), len(net.renewables)
        for key, cols in (("bus_load_kw", nb), ("bus_load_kvar", nb), ("renewable_kw", n_ren)):
            v = getattr(self, key)
            if v is None:
                continue
            a = _arr(v)
            if a.ndim != 2 or a.shape[1] != cols:
                raise RequestError(f"grid.{key}: expected shape (n_slots, {cols}), got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise RequestError(f"grid.{key}: contains NaN or inf")
            object.__setattr__(self, key, a)

    @property
    def n_bus(self) -> int:
        """Number of buses of the network."""
        return int(self.network.n_bus)

    def window(self, start: int, stop: int | None = None) -> NetworkData:
        """The data of slots ``start … stop−1`` (the network is kept)."""

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[start:stop]

        return replace(
            self,
            bus_load_kw=cut(self.bus_load_kw),
            bus_load_kvar=cut(self.bus_load_kvar),
            renewable_kw=cut(self.renewable_kw),
        )
