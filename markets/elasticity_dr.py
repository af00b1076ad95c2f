"""`elasticity-dr`: time-of-use demand response with elasticities (Erdanayev et al. `002_…`; eq. 1–5 of `004_…`).

What one day-ahead clearing does (``request.day_ahead``):

1. **TOU price from the load shape** (`002_…` eq. 2 and 4): ``λ_t = ρ · PLF_t`` with ``PLF_t`` following the
   forecast system load ``L_t`` (non-EV load plus EV load already committed). Eq. 4 gives ``PLF_t = L_t / max L``,
   which spans 0.52–1.0 for the paper's load curve, while the paper's Table 4 states ``PLF`` 0.75–1.35. We keep
   both numbers: by default the load shape is mapped affinely onto ``[plf_min, plf_max]`` (0.75 and 1.35);
   ``shape = "ratio"`` uses eq. 4 literally.
2. **Elastic response of the flexible non-EV load** (`004_…` eq. 4 with self- and cross-elasticities,
   Jalali et al. [23]): ``r_t = Σ_j E_tj · (c_j − c0 + inc_j + pen_j) / c0`` with ``c0 = ρ`` the flat
   pre-DR price, ``E_tt = self_elasticity ≤ 0`` and ``E_tj = cross_elasticity / (n − 1) ≥ 0``. `004_…` prints the
   numerator as ``c0 − c + …``; with negative self-elasticities that would raise demand when prices rise, so we
   use the sign of the cited source. The response is bounded by ``DR_max`` (`002_…`: at most 15 % of the
   hourly load moves) and scaled by the participation coefficient (0.85): ``ΔL_t = participation ·
   clip(r_t, −DR_max, DR_max) · L_t``.
3. **Full recovery within the horizon** (`002_…` Table 4): the energy removed from expensive slots is put back
   into the slots that gain load (or, if those are capped by ``DR_max``, the removal is scaled down) so that
   ``Σ_t ΔL_t = 0`` exactly and ``|ΔL_t| ≤ participation · DR_max · L_t``.

Every clearing (day-ahead or not) then schedules the EVs of the request:

* **participating EVs** (``evs.participates``; the fleet draws it with probability ``participation``) minimise
  their charging cost under a price that follows the load shape. Given the others' schedules, that best response
  is to fill the valley of the forecast load, so participants are scheduled one after another (earliest
  departure first) by water-filling against base load + DR shift + committed and already-scheduled EV load,
  within their window, rate limit and their station's cap.
* **non-participants** charge at full rate from plug-in (uncontrolled).
* **participating V2G EVs** (``v2g = true``, EVs whose `EVFlex.discharges`) are then re-planned to level the
  load with charge and discharge, the same energy as their charge-only fill (`markets.v2g.level_with_v2g`).

Per-EV elasticities are carried in the request but not used by this mechanism: an EV's response here is
all-or-nothing participation, as in `002_…`.

Later clearings of the same day (``day_ahead = False``) expect ``request.base_load_kw`` to already include the
day-ahead shift and ``request.price_usd_per_mwh`` to carry the announced tariff; they only schedule new EVs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from markets.base import (
    Elasticity,
    EVFlex,
    MarketConfigError,
    MarketRequest,
    MarketResult,
    Mechanism,
    RequestError,
    asap_fill,
    finite_number,
    register,
)
from markets.compiled import njit_cached
from markets.tariffs import tou_price
from markets.v2g import level_with_v2g

__all__ = ["ElasticityDR", "elastic_shift", "water_fill", "valley_fill", "tou_price"]


#: Largest |elasticity| accepted. Published EV-charging elasticities are below 1 in magnitude; at 100 a 1 % price
#: deviation already asks for the whole ``dr_max`` shift, and far larger values overflow to inf (and NaN at zero load).
MAX_ELASTICITY = 100.0


def elastic_shift(
    load_kw: np.ndarray,
    price_usd_per_mwh: np.ndarray,
    *,
    rho_usd_per_mwh: float,
    self_elasticity: float,
    cross_elasticity: float,
    dr_max: float,
    participation: float,
    incentive_usd_per_mwh: float | np.ndarray = 0.0,
    penalty_usd_per_mwh: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Energy-neutral demand-response shift of the flexible load per slot [kW].

    Implements steps 2–3 of the module docstring. The result satisfies ``Σ_t ΔL_t = 0`` (to rounding) and
    ``|ΔL_t| ≤ participation · dr_max · L_t``.
    """
    load = np.asarray(load_kw, float)
    n = load.size
    c = np.asarray(price_usd_per_mwh, float)
    x = (c - rho_usd_per_mwh + incentive_usd_per_mwh + penalty_usd_per_mwh) / rho_usd_per_mwh
    if n > 1:
        cross = cross_elasticity / (n - 1)
        r = (self_elasticity - cross) * x + cross * x.sum()
    else:
        r = self_elasticity * x
    bound = participation * dr_max * load
    shift = np.clip(participation * r * load, -bound, bound)
    excess = shift.sum()
    if excess < 0:  # more shed than taken back: raise the gaining slots, else shed less
        shift = _rebalance(shift, bound, -excess)
    elif excess > 0:  # mirror image
        shift = -_rebalance(-shift, bound, excess)
    return shift


def _rebalance(shift: np.ndarray, bound: np.ndarray, extra: float) -> np.ndarray:
    """Add ``extra`` to the non-negative entries of ``shift`` within ``bound``; shrink the negatives if it won't fit."""
    room = np.where(shift >= 0, bound - shift, 0.0)
    total_room = room.sum()
    if total_room >= extra:
        return shift + room * (extra / total_room)
    out = shift + room
    shed = -out[out < 0].sum()
    out[out < 0] *= out[out > 0].sum() / shed
    return out


@njit_cached
def _pairwise_block(a: np.ndarray, lo: int, n: int) -> float:
    """``a[lo:lo+n].sum()`` for ``n ≤ 128`` exactly as numpy sums it (one block of its pairwise summation)."""
    if n < 8:
        r = 0.0
        for i in range(n):
            r += a[lo + i]
        return r
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    m = n - n % 8
    i = 8
    while i < m:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    r = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        r += a[lo + i]
        i += 1
    return r


@njit_cached
def _half(n: int) -> int:
    """Where numpy's pairwise summation splits ``n > 128`` items: half, rounded down to a multiple of 8."""
    n2 = n // 2
    return n2 - n2 % 8


@njit_cached
def _pairwise_sum(a: np.ndarray, lo: int, n: int) -> float:
    """``a[lo:lo+n].sum()`` with numpy's own pairwise summation (same blocks, same order: bit-identical result).

    Above 128 items numpy recurses (left half + right half); here the same tree is walked with an explicit
    stack, because numba's on-disk cache mishandles recursive functions (a cached recursive kernel crashed).
    """
    if n <= 128:
        return _pairwise_block(a, lo, n)
    los = np.empty(64, np.int64)
    ns = np.empty(64, np.int64)
    right = np.zeros(64, np.bool_)  # the frame is evaluating its right half (its left sum is in `left`)
    left = np.empty(64)
    sp = 0
    los[0], ns[0], right[0] = lo, n, False
    while True:
        if ns[sp] > 128:  # descend into the left half
            h = _half(ns[sp])
            sp += 1
            los[sp], ns[sp], right[sp] = los[sp - 1], h, False
            continue
        v = _pairwise_block(a, los[sp], ns[sp])
        while True:  # hand v to the parent frames
            if sp == 0:
                return v
            sp -= 1
            if right[sp]:
                v = left[sp] + v
                continue
            left[sp], right[sp] = v, True
            h = _half(ns[sp])
            sp += 1
            los[sp], ns[sp], right[sp] = los[sp - 1] + h, ns[sp - 1] - h, False
            break


@njit_cached
def _filled_kw_slots(level_kw: float, load_kw: np.ndarray, cap_kw: np.ndarray, n: int, buf: np.ndarray) -> float:
    """``Σ_t clip(level − load_t, 0, cap_t)`` over the first ``n`` slots [kW·slot], summed as numpy would."""
    for t in range(n):
        v = level_kw - load_kw[t]
        if v < 0.0:
            v = 0.0
        if v > cap_kw[t]:
            v = cap_kw[t]
        buf[t] = v
    return _pairwise_sum(buf, 0, n)


@njit_cached
def _water_fill_into(
    load_kw: np.ndarray, cap_kw: np.ndarray, n: int, need_kw_slots: float, x_kw: np.ndarray, bp: np.ndarray
) -> None:
    """Water-fill one EV (first ``n`` entries of the buffers) into ``x_kw``; see `water_fill` for the contract.

    The level comes from the same sorted breakpoints, the same exactly summed fill at the two bracketing
    breakpoints and the same interpolation as the dense ``slots × slots`` formulation, so the result is
    bit-identical to it; only the bracket is found by bisection (the fill is monotone in the level, also in
    floating point), which makes one EV ``O(n log n)`` instead of ``O(n²)``.
    """
    total = _pairwise_sum(cap_kw, 0, n)
    if need_kw_slots >= total:
        for t in range(n):
            x_kw[t] = cap_kw[t]
        return
    if need_kw_slots <= 0.0:
        for t in range(n):
            x_kw[t] = 0.0
        return
    m = 2 * n
    for t in range(n):
        bp[t] = load_kw[t]
        bp[n + t] = load_kw[t] + cap_kw[t]
    bp[:m].sort()
    # first breakpoint whose fill reaches the need (np.searchsorted(filled, need, side="left"))
    lo, hi = 0, m  # filled[lo] < need (filled[0] = 0); filled[hi] >= need, hi = m meaning "none"
    lo_f = 0.0
    hi_f = 0.0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        f = _filled_kw_slots(bp[mid], load_kw, cap_kw, n, x_kw)
        if f < need_kw_slots:
            lo, lo_f = mid, f
        else:
            hi, hi_f = mid, f
    if hi == m:  # the need sits within rounding of the full fill: interpolate on the last segment
        hi = m - 1
        hi_f = _filled_kw_slots(bp[hi], load_kw, cap_kw, n, x_kw)
        lo = hi - 1
        lo_f = _filled_kw_slots(bp[lo], load_kw, cap_kw, n, x_kw)
    lo_w, hi_w = bp[hi - 1], bp[hi]
    if lo != hi - 1:  # pragma: no cover - bisection always ends with adjacent brackets
        lo_f = _filled_kw_slots(lo_w, load_kw, cap_kw, n, x_kw)
    if hi_f == lo_f:
        w = hi_w
    else:
        w = lo_w + (need_kw_slots - lo_f) * (hi_w - lo_w) / (hi_f - lo_f)
    for t in range(n):
        v = w - load_kw[t]
        if v < 0.0:
            v = 0.0
        if v > cap_kw[t]:
            v = cap_kw[t]
        x_kw[t] = v


@njit_cached
def _valley_fill_kernel(
    order: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    p_max_kw: np.ndarray,
    avail: np.ndarray,
    need_kw_slots: np.ndarray,
    station: np.ndarray,
    station_cap_kw: np.ndarray,
    station_load_kw: np.ndarray,
    use_station: bool,
    load_kw: np.ndarray,
    p_kw: np.ndarray,
) -> None:
    """Sequential valley filling of EVs in ``order`` (in place on ``load_kw``, ``station_load_kw`` and ``p_kw``)."""
    n_slots = load_kw.shape[0]
    cap = np.empty(n_slots)
    lw = np.empty(n_slots)
    x = np.empty(n_slots)
    bp = np.empty(2 * n_slots)
    for i in order:
        s, e = start[i], end[i]
        n = e - s
        k = station[i]
        for t in range(n):
            c = p_max_kw[i] * avail[i, s + t]
            if use_station:
                room = station_cap_kw[k] - station_load_kw[k, s + t]
                if room < 0.0:
                    room = 0.0
                if room < c:
                    c = room
            cap[t] = c
            lw[t] = load_kw[s + t]
        _water_fill_into(lw, cap, n, need_kw_slots[i], x, bp)
        for t in range(n):
            p_kw[i, s + t] = x[t]
            load_kw[s + t] += x[t]
            if use_station:
                station_load_kw[k, s + t] += x[t]


@njit_cached
def _add_rows_at(out: np.ndarray, target: np.ndarray, src: np.ndarray) -> None:
    """``np.add.at(out, target, src)`` for 2-d ``src`` (the same additions in the same order), without its overhead."""
    for r in range(src.shape[0]):
        t = target[r]
        for j in range(src.shape[1]):
            out[t, j] += src[r, j]


def water_fill(load_kw: np.ndarray, cap_kw: np.ndarray, need_kw_slots: float) -> np.ndarray:
    """Fill ``need_kw_slots`` [kW·slot] into the lowest slots of ``load_kw`` without exceeding ``cap_kw`` per slot.

    Returns ``x`` [kW] with ``0 ≤ x ≤ cap`` and ``Σ x = min(need, Σ cap)`` that levels ``load + x`` (valley filling):
    there is a level ``W`` with ``x = clip(W − load, 0, cap)``. Bit-identical to the former dense version, except
    where that one raised IndexError (caps below an ulp of the load, so that even the highest breakpoint fills
    less than a need just under ``Σ cap``): the level is then taken on the last segment.
    """
    load = np.ascontiguousarray(load_kw, dtype=float)
    cap = np.ascontiguousarray(cap_kw, dtype=float)
    if load.shape != cap.shape or load.ndim != 1:
        raise ValueError(f"water_fill: load_kw {load.shape} and cap_kw {cap.shape} must be equal 1-d shapes")
    x = np.empty(load.size)
    _water_fill_into(load, cap, load.size, float(need_kw_slots), x, np.empty(2 * load.size))
    return x


def valley_fill(
    evs: EVFlex,
    n_slots: int,
    dt_h: float,
    load_kw: np.ndarray,
    station_cap_kw: np.ndarray | None = None,
    station_load_kw: np.ndarray | None = None,
) -> np.ndarray:
    """Schedule EVs one after another (earliest departure first) into the valley of ``load_kw``.

    Each EV is water-filled (`water_fill`) against the load left by the EVs before it, within its window, its
    rate limit and its station's remaining cap. The order matters (an EV fills on top of the earlier ones), so
    the fleet runs in one compiled pass (numba) instead of a Python loop over EVs; the result is bit-identical
    to filling the EVs one by one with the dense formulation (tests/test_vectorised_fleet.py keeps that as the
    reference).

    Args:
        evs: EVs to schedule.
        n_slots: horizon length.
        dt_h: slot length [h].
        load_kw: system load per slot before these EVs [kW].
        station_cap_kw: power cap per station [kW] (optional).
        station_load_kw: load already at each station per slot [kW], shape (n_stations, n_slots) (optional).

    Returns:
        Grid-side power per EV and slot [kW], shape (n_evs, n_slots).
    """
    p = np.zeros((len(evs), n_slots))
    if len(evs) == 0:
        return p
    # the compiled kernel does not check bounds: refuse what would read outside the arrays
    if evs.start_slot.min() < 0 or evs.end_slot.max() > n_slots:
        raise ValueError(f"valley_fill: EV windows must lie in [0, n_slots={n_slots}]")
    load = np.array(load_kw, dtype=float)  # a copy: the kernel adds the EVs to it
    if load.shape != (n_slots,):
        raise ValueError(f"valley_fill: load_kw has shape {load.shape}, expected ({n_slots},)")
    use_station = station_cap_kw is not None
    if station_cap_kw is not None:
        st_cap = np.ascontiguousarray(station_cap_kw, dtype=float)
        st_load = (
            np.zeros((len(st_cap), n_slots)) if station_load_kw is None else np.array(station_load_kw, dtype=float)
        )
        if st_load.shape != (len(st_cap), n_slots) or evs.station.min() < 0 or evs.station.max() >= len(st_cap):
            raise ValueError(
                f"valley_fill: stations must index station_cap_kw ({len(st_cap)} stations) and station_load_kw "
                f"must have shape ({len(st_cap)}, {n_slots}), got {st_load.shape}"
            )
    else:
        st_cap, st_load = np.zeros(1), np.zeros((1, n_slots))
    _valley_fill_kernel(
        np.argsort(evs.end_slot, kind="stable"),
        evs.start_slot,
        evs.end_slot,
        evs.p_max_kw,
        evs.availability(n_slots),
        evs.e_need_kwh / evs.eta_ch / dt_h,  # [kW·slot], as the per-EV formula divides
        evs.station if use_station else np.zeros(len(evs), np.int64),
        st_cap,
        st_load,
        use_station,
        load,
        p,
    )
    return p


@register
class ElasticityDR(Mechanism):
    """TOU demand response with elasticities and coordinated (valley-filling) EV charging; see module docstring."""

    name = "elasticity-dr"
    #: announced elasticities (the attack channel), station reports (caps), the day-ahead load range (``reprice="step"``)
    needs = frozenset({"load_elasticity", "committed_station_kw", "load_range_kw"})
    parameters = {
        "rho_usd_per_mwh": (84.0, "base energy price ρ [$/MWh] (`002_…` Table 3)"),
        "plf_min": (0.75, "price level factor at the load valley (`002_…` Table 4)"),
        "plf_max": (1.35, "price level factor at the load peak (`002_…` Table 4)"),
        "shape": ("affine", "'affine' (map load shape onto [plf_min, plf_max]) or 'ratio' (PLF = L / max L, eq. 4)"),
        "dr_max": (0.15, "largest share of a slot's flexible load that may move (`002_…` DR_max)"),
        "participation": (0.85, "participation coefficient of the flexible load (`002_…` Table 4)"),
        "self_elasticity": (-0.3, "self-price elasticity of the flexible load, in [-100, 0]"),
        "cross_elasticity": (0.1, "total cross-price elasticity, spread evenly over the other slots, in [0, 100]"),
        "incentive_usd_per_mwh": (0.0, "DR incentive paid per MWh shifted (`004_…` eq. 2)"),
        "penalty_usd_per_mwh": (0.0, "DR penalty rate (`004_…` eq. 3)"),
        "flexible_share": (1.0, "share of the non-EV load that is flexible (enrolled in the DR program)"),
        "reprice": (
            "day",
            "'day' (tariff fixed day-ahead) or 'step' (real-time: every clearing re-prices the "
            "rest of the day from the reported load, anchored to the day-ahead load range)",
        ),
        "v2g": (True, "participating V2G EVs also discharge into the peak (markets/v2g.py); false: charge-only"),
    }
    discharges = True  # unless v2g = false (the instance says)

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.discharges = bool(self.params["v2g"])

    def _validate(self) -> None:
        p = self.params
        numeric = (
            *("rho_usd_per_mwh", "plf_min", "plf_max", "dr_max", "participation", "self_elasticity"),
            *("cross_elasticity", "incentive_usd_per_mwh", "penalty_usd_per_mwh", "flexible_share"),
        )
        for k in numeric:  # a string or NaN would otherwise fail later with a traceback, or compare False silently
            v = p[k]
            if not finite_number(v):
                raise MarketConfigError(f"market.params.{k}: got {v!r}; allowed: a finite number")
        checks = {
            "rho_usd_per_mwh": p["rho_usd_per_mwh"] > 0,
            "plf_min": 0 <= p["plf_min"] <= p["plf_max"],
            "plf_max": p["plf_max"] > 0,
            "shape": p["shape"] in ("affine", "ratio"),
            "dr_max": 0 <= p["dr_max"] <= 1,
            "participation": 0 <= p["participation"] <= 1,
            "self_elasticity": -MAX_ELASTICITY <= p["self_elasticity"] <= 0,
            "cross_elasticity": 0 <= p["cross_elasticity"] <= MAX_ELASTICITY,
            "flexible_share": 0 <= p["flexible_share"] <= 1,
            "reprice": p["reprice"] in ("day", "step"),
            "v2g": isinstance(p["v2g"], (bool, np.bool_)),
        }
        allowed = {
            "rho_usd_per_mwh": "> 0",
            "plf_min": "0 <= plf_min <= plf_max",
            "plf_max": "> 0",
            "shape": "'affine' or 'ratio'",
            "dr_max": "[0, 1]",
            "participation": "[0, 1]",
            "self_elasticity": f"[-{MAX_ELASTICITY:g}, 0] (an own-price elasticity: the flexible load does not rise "
            "with its price; beyond the bound a 1 % price step already moves the full dr_max)",
            "cross_elasticity": f"[0, {MAX_ELASTICITY:g}] (load moves toward the other, relatively cheaper slots)",
            "flexible_share": "[0, 1]",
            "reprice": "'day' or 'step'",
            "v2g": "true or false",
        }
        for k, ok in checks.items():
            if not ok:
                raise MarketConfigError(f"market.params.{k}: got {p[k]!r}; allowed {allowed[k]}")

    @property
    def announced_elasticity(self) -> Elasticity:
        """The configured elasticities of the DR program (what the market announces and a simulation may falsify)."""
        return Elasticity(self.params["self_elasticity"], self.params["cross_elasticity"])

    def day_ahead(self, request: MarketRequest) -> tuple[np.ndarray, np.ndarray]:
        """The announced TOU price [$/MWh] and the non-EV load shift [kW] for the request's horizon.

        ``request.load_elasticity`` (an `Elasticity`), when present, replaces the configured elasticities for this
        clearing — the elasticity channel an attacker can falsify.
        """
        p = {**self.params, **(request.load_elasticity.as_dict() if request.load_elasticity is not None else {})}
        forecast = request.base_load_kw + request.committed_ev_kw
        price = tou_price(forecast, p["rho_usd_per_mwh"], p["plf_min"], p["plf_max"], p["shape"])
        shift = elastic_shift(
            request.base_load_kw * p["flexible_share"],
            price,
            rho_usd_per_mwh=p["rho_usd_per_mwh"],
            self_elasticity=p["self_elasticity"],
            cross_elasticity=p["cross_elasticity"],
            dr_max=p["dr_max"],
            participation=p["participation"],
            incentive_usd_per_mwh=p["incentive_usd_per_mwh"],
            penalty_usd_per_mwh=p["penalty_usd_per_mwh"],
        )
        return price, shift

    def _clear(self, request: MarketRequest) -> MarketResult:
        if request.day_ahead or np.isnan(request.price_usd_per_mwh).any():
            price, shift = self.day_ahead(request)
        else:
            price, shift = request.price_usd_per_mwh.copy(), np.zeros(request.n_slots)
        evs, n, dt_h = request.evs, request.n_slots, request.dt_h
        p = np.zeros((len(evs), n))
        follow = evs.participates
        p_asap = asap_fill(evs.select(~follow), n, dt_h)
        p[~follow] = p_asap
        load = request.base_load_kw + shift + request.committed_ev_kw + p.sum(axis=0)
        station_load = None
        if request.station_cap_kw is not None:
            n_st = len(request.station_cap_kw)
            if len(evs) and (evs.station.min() < 0 or evs.station.max() >= n_st):
                bad = int(evs.station.max() if evs.station.max() >= n_st else evs.station.min())
                raise RequestError(f"evs.station: got {bad}; allowed 0 … {n_st - 1} (one per station_cap_kw entry)")
            station_load = np.zeros((n_st, n))
            if request.committed_station_kw is not None:
                station_load += request.committed_station_kw
            _add_rows_at(station_load, evs.station[~follow], p_asap)
        if follow.any():
            p[follow] = valley_fill(evs.select(follow), n, dt_h, load, request.station_cap_kw, station_load)
        v2g = np.nonzero(follow & evs.discharges)[0] if self.discharges else np.zeros(0, int)
        if len(v2g):  # participating V2G EVs level the load with discharge too (markets/v2g.py)
            if station_load is not None:
                _add_rows_at(station_load, evs.station[follow], p[follow])
            load = request.base_load_kw + shift + request.committed_ev_kw + p.sum(axis=0)
            p = level_with_v2g(evs, p, v2g, load, dt_h, request.station_cap_kw, station_load)
        ev_kw = p.sum(axis=0)
        total = request.base_load_kw + shift + request.committed_ev_kw + ev_kw
        repriced = False
        anchor = request.load_range_kw
        if self.params["reprice"] == "step" and not request.day_ahead and anchor is not None:
            # real-time price: the same load-following rule, anchored to the day-ahead load range so that a load
            # above the forecast peak is priced above plf_max (and the rest of the day is re-priced every step)
            lo, hi = anchor
            x = (total - lo) / (hi - lo) if hi > lo else np.full(n, 0.5)
            pr = self.params
            price = pr["rho_usd_per_mwh"] * (pr["plf_min"] + (pr["plf_max"] - pr["plf_min"]) * x)
            repriced = True
        return MarketResult(
            mechanism=self.name,
            price_usd_per_mwh=price,
            p_kw=p,
            base_load_shift_kw=shift,
            objective={
                "ev_energy_cost_usd": float((ev_kw * price).sum() * dt_h / 1000.0),
                "forecast_peak_kw": float(total.max()),
                "shifted_energy_kwh": float(np.clip(shift, 0, None).sum() * dt_h),
            },
            violations={"dr_energy_imbalance_kwh": float(abs(shift.sum()) * dt_h)},
            repriced=repriced,
        )
