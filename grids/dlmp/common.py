"""Tables, input checks and result rows shared by the AC-OPF and the LinDistFlow DLMPs (see :mod:`grids.dlmp`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from grids.network import Network

__all__ = [
    "SLOT_COLUMNS",
    "COMPONENTS_P",
    "COMPONENTS_Q",
    "ON_KW",
    "DLMPInputError",
    "NotRadialError",
    "FlexibleEV",
    "DlmpInputs",
    "per_slot",
    "read_inputs",
    "dg_q_max_mw",
    "dg_cost",
    "frame",
    "failed_slot",
    "slot_summary",
]

#: Per-slot columns, repeated on every bus row of a slot (see :func:`slot_summary`).
SLOT_COLUMNS: tuple[str, ...] = (
    "method",
    "slot",
    "converged",
    "total_cost_usd_per_h",
    "losses_kw",
    "grid_p_kw",
    "grid_q_kvar",
    "solve_time_s",
    "message",
)
#: Decomposition of λP [$/MWh] returned by :func:`dlmp_lindistflow`.
COMPONENTS_P: tuple[str, ...] = (
    "energy_usd_per_mwh",
    "loss_usd_per_mwh",
    "congestion_usd_per_mwh",
    "voltage_usd_per_mwh",
)
#: Decomposition of λQ [$/MVArh] returned by :func:`dlmp_lindistflow`.
COMPONENTS_Q: tuple[str, ...] = (
    "energy_q_usd_per_mvarh",
    "loss_q_usd_per_mvarh",
    "congestion_q_usd_per_mvarh",
    "voltage_q_usd_per_mvarh",
)

#: A DG producing more than this [kW] pays its no-load cost C.
ON_KW = 1.0


class DLMPInputError(ValueError):
    """Bad input to a DLMP function (shape, NaN, unknown bus, inconsistent EV box)."""


class NotRadialError(ValueError):
    """The network is outside LinDistFlow's scope (meshed, several slacks, PV generators, off-nominal taps)."""


@dataclass(frozen=True)
class FlexibleEV:
    """An aggregate of EV chargers at one bus that the OPF may dispatch.

    Load convention: positive ``p`` is charging, negative is V2G discharge; positive ``q`` absorbs reactive power,
    negative supplies it. Fix a quantity by giving equal bounds.

    Attributes:
        bus: pandapower bus index.
        p_min_kw: lower bound of the charging power [kW] (negative = discharge allowed).
        p_max_kw: upper bound of the charging power [kW].
        q_min_kvar: lower bound of the reactive load [kVAr] (negative = reactive supply).
        q_max_kvar: upper bound of the reactive load [kVAr].
        s_max_kva: inverter apparent-power limit of the aggregate [kVA], or None. Applied as the largest box inside
            the circle: ``|q| ≤ √(s_max² − max(|p_min|, |p_max|)²)`` (see module docstring).
        cost_usd_per_mwh: linear cost of the aggregate's *injection* (−p) [$/MWh]: what the DSO pays per MWh of
            V2G energy; for charging (negative injection) it is a credit. 0 = a free resource.
        name: label.
    """

    bus: int
    p_min_kw: float
    p_max_kw: float
    q_min_kvar: float = 0.0
    q_max_kvar: float = 0.0
    s_max_kva: float | None = None
    cost_usd_per_mwh: float = 0.0
    name: str = "ev"

    def injection_box_mw(self) -> tuple[float, float, float, float]:
        """Bounds of the injection (generator convention) in MW / MVAr: (p_min, p_max, q_min, q_max).

        Raises:
            DLMPInputError: inconsistent bounds, or an apparent-power limit below the P rating.
        """
        vals = (self.p_min_kw, self.p_max_kw, self.q_min_kvar, self.q_max_kvar, self.cost_usd_per_mwh)
        if not all(np.isfinite(v) for v in vals):
            raise DLMPInputError(f"FlexibleEV {self.name!r} at bus {self.bus}: bounds and cost must be finite")
        if self.p_min_kw > self.p_max_kw or self.q_min_kvar > self.q_max_kvar:
            raise DLMPInputError(f"FlexibleEV {self.name!r} at bus {self.bus}: min bound above max bound")
        qlo, qhi = self.q_min_kvar, self.q_max_kvar
        if self.s_max_kva is not None:
            pabs = max(abs(self.p_min_kw), abs(self.p_max_kw))
            if not (np.isfinite(self.s_max_kva) and self.s_max_kva >= pabs - 1e-9):
                raise DLMPInputError(
                    f"FlexibleEV {self.name!r} at bus {self.bus}: s_max_kva {self.s_max_kva} "
                    f"is below the active-power rating {pabs} kW"
                )
            qcap = float(np.sqrt(max(self.s_max_kva**2 - pabs**2, 0.0)))
            qlo, qhi = max(qlo, -qcap), min(qhi, qcap)
            if qlo > qhi:
                raise DLMPInputError(
                    f"FlexibleEV {self.name!r} at bus {self.bus}: the q bounds lie outside "
                    f"the {self.s_max_kva} kVA capability at full power"
                )
        return -self.p_max_kw / 1e3, -self.p_min_kw / 1e3, -qhi / 1e3, -qlo / 1e3


@dataclass
class DlmpInputs:
    """Checked inputs of a DLMP call, in MW / MVAr (one row per slot)."""

    p_mw: np.ndarray  # (n_slots, n_bus) fixed load
    q_mvar: np.ndarray
    price: np.ndarray  # (n_slots,) $/MWh
    q_price: np.ndarray  # (n_slots,) $/MVArh
    ren_mw: np.ndarray  # (n_slots, n_ren) availability
    evs: list[FlexibleEV]
    v_min: float
    v_max: float
    bus_index: np.ndarray  # pandapower bus indices in net.bus order
    pos: dict[int, int]  # pandapower bus index -> position


def per_slot(value: Any, n_slots: int, name: str) -> np.ndarray:
    """A scalar or per-slot value as a finite array of shape (n_slots,); ``name`` is used in the error."""
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        a = np.full(n_slots, float(a))
    if a.shape != (n_slots,) or not np.isfinite(a).all():
        raise DLMPInputError(f"{name} must be a finite scalar or have shape ({n_slots},), got {np.shape(value)}")
    return a


def read_inputs(
    network: Network,
    p_load_kw: Any,
    q_load_kvar: Any,
    price_usd_per_mwh: Any,
    q_price: Any,
    renewable_kw: Any,
    ev: Sequence[FlexibleEV] | None,
    v_min_pu: float | None,
    v_max_pu: float | None,
) -> DlmpInputs:
    """Check the arguments of a DLMP function and convert them to MW / MVAr (see :func:`grids.dlmp.dlmp_acopf`).

    Raises:
        DLMPInputError: bad shapes, NaN, negative renewable availability, unknown EV bus, inconsistent EV box,
            or a voltage band that is not ``0 < v_min < v_max``.
    """
    n_bus = len(network.net.bus)
    arrs = []
    for name, a in (("p_load_kw", p_load_kw), ("q_load_kvar", q_load_kvar)):
        a = np.asarray(a, dtype=float)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != n_bus or a.shape[0] < 1:
            raise DLMPInputError(f"{name} must have shape (n_slots, {n_bus}), got {np.shape(a)}")
        if not np.isfinite(a).all():
            raise DLMPInputError(f"{name} contains NaN or inf")
        arrs.append(a)
    p, q = arrs
    if p.shape != q.shape:
        raise DLMPInputError(f"p_load_kw {p.shape} and q_load_kvar {q.shape} differ in shape")
    n_slots = p.shape[0]
    price = per_slot(price_usd_per_mwh, n_slots, "price_usd_per_mwh")
    qprice = per_slot(q_price, n_slots, "q_price_usd_per_mvarh")
    n_ren = len(network.renewables)
    if renewable_kw is None:
        ren = np.zeros((n_slots, n_ren))
    else:
        ren = np.asarray(renewable_kw, dtype=float)
        if ren.ndim == 1:
            ren = ren[None, :]
        if ren.shape != (n_slots, n_ren) or not np.isfinite(ren).all() or (ren < 0).any():
            raise DLMPInputError(f"renewable_kw must be finite, >= 0, shape ({n_slots}, {n_ren}), got {ren.shape}")
    bus_index = network.net.bus.index.to_numpy()
    pos = {int(b): i for i, b in enumerate(bus_index)}
    evs = list(ev or [])
    for e in evs:
        if not isinstance(e, FlexibleEV):
            raise DLMPInputError(f"ev must hold FlexibleEV objects, got {type(e).__name__}")
        if int(e.bus) not in pos:
            raise DLMPInputError(f"FlexibleEV {e.name!r}: bus {e.bus} is not in the network")
        e.injection_box_mw()
    v_min = network.v_min_pu if v_min_pu is None else float(v_min_pu)
    v_max = network.v_max_pu if v_max_pu is None else float(v_max_pu)
    if not (0 < v_min < v_max):
        raise DLMPInputError(f"voltage band must satisfy 0 < v_min_pu < v_max_pu, got [{v_min}, {v_max}]")
    return DlmpInputs(p / 1e3, q / 1e3, price, qprice, ren / 1e3, evs, v_min, v_max, bus_index, pos)


def dg_q_max_mw(d: Any) -> float:
    """Largest reactive injection of a DG [MVAr]: ``P_max · tan(acos pf)`` (0 at unity power factor)."""
    pf = float(d.pf)
    return d.p_max_kw / 1e3 * (np.tan(np.arccos(pf)) if 0 < pf < 1 else 0.0)


def dg_cost(network: Network, p_mw: np.ndarray, q_mvar: np.ndarray) -> float:
    """Cost of the DGs' dispatch [$/h], including the no-load cost of the units that run."""
    cost = 0.0
    for d, p, q in zip(network.dgs, p_mw, q_mvar, strict=True):
        cost += d.cost_a * p**2 + d.cost_b * p + d.q_cost_usd_per_mvarh * q
        if p * 1e3 > ON_KW:
            cost += d.cost_c
    return float(cost)


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The result table of a list of row dicts, with ``method``, ``slot``, ``bus`` first."""
    df = pd.DataFrame(rows)
    first = ["method", "slot", "bus"]
    return df[first + [c for c in df.columns if c not in first]]


def failed_slot(
    method: str, k: int, inp: DlmpInputs, message: str, extra: Sequence[str] = (), seconds: float = np.nan
) -> list[dict[str, Any]]:
    """Rows of a slot whose optimisation failed: NaN prices and results, ``converged = False``, ``message``."""
    nan = np.nan
    out = []
    for b in inp.bus_index:
        row = dict(
            method=method,
            slot=k,
            bus=int(b),
            lam_p_usd_per_mwh=nan,
            lam_q_usd_per_mvarh=nan,
            vm_pu=nan,
            gen_p_kw=nan,
            gen_q_kvar=nan,
            ev_p_kw=nan,
            ev_q_kvar=nan,
            converged=False,
            total_cost_usd_per_h=nan,
            losses_kw=nan,
            grid_p_kw=nan,
            grid_q_kvar=nan,
            solve_time_s=seconds,
            message=message,
        )
        for c in extra:
            row[c] = nan
        out.append(row)
    return out


def slot_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, slot) with the per-slot columns of a DLMP table (see module docstring).

    Args:
        df: a table from :func:`dlmp_acopf` or :func:`dlmp_lindistflow` (or a concatenation of several).

    Returns:
        Columns of :data:`SLOT_COLUMNS` present in ``df`` (plus ``iterations`` and ``decomposition_residual``
        for LinDistFlow tables), sorted by method and slot.
    """
    cols = [c for c in SLOT_COLUMNS + ("iterations", "decomposition_residual") if c in df.columns]
    return df[cols].drop_duplicates(subset=["method", "slot"]).sort_values(["method", "slot"]).reset_index(drop=True)
