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

Per-EV elasticities are carried in the request but not used by this mechanism: an EV's response here is
all-or-nothing participation, as in `002_…`.

Later clearings of the same day (``day_ahead = False``) expect ``request.base_load_kw`` to already include the
day-ahead shift and ``request.price_usd_per_mwh`` to carry the announced tariff; they only schedule new EVs.
"""

from __future__ import annotations

import numpy as np

from markets.base import (
    Elasticity,
    EVFlex,
    MarketConfigError,
    MarketRequest,
    MarketResult,
    Mechanism,
    asap_fill,
    finite_number,
    register,
)
from markets.tariffs import tou_price

__all__ = ["ElasticityDR", "elastic_shift", "water_fill", "valley_fill", "tou_price"]


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


def water_fill(load_kw: np.ndarray, cap_kw: np.ndarray, need_kw_slots: float) -> np.ndarray:
    """Fill ``need_kw_slots`` [kW·slot] into the lowest slots of ``load_kw`` without exceeding ``cap_kw`` per slot.

    Returns ``x`` with ``0 ≤ x ≤ cap`` and ``Σ x = min(need, Σ cap)`` that levels ``load + x`` (valley filling):
    there is a level ``W`` with ``x = clip(W − load, 0, cap)``.
    """
    total = cap_kw.sum()
    if need_kw_slots >= total:
        return cap_kw.copy()
    if need_kw_slots <= 0:
        return np.zeros_like(cap_kw)
    bp = np.sort(np.concatenate([load_kw, load_kw + cap_kw]))
    filled = np.clip(bp[:, None] - load_kw[None, :], 0.0, cap_kw[None, :]).sum(axis=1)
    i = int(np.searchsorted(filled, need_kw_slots))
    lo_w, hi_w = bp[i - 1], bp[i]
    lo_f, hi_f = filled[i - 1], filled[i]
    w = hi_w if hi_f == lo_f else lo_w + (need_kw_slots - lo_f) * (hi_w - lo_w) / (hi_f - lo_f)
    return np.clip(w - load_kw, 0.0, cap_kw)


def valley_fill(
    evs: EVFlex,
    n_slots: int,
    dt_h: float,
    load_kw: np.ndarray,
    station_cap_kw: np.ndarray | None = None,
    station_load_kw: np.ndarray | None = None,
) -> np.ndarray:
    """Schedule EVs one after another (earliest departure first) into the valley of ``load_kw``.

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
    load = np.asarray(load_kw, float).copy()
    avail = evs.availability(n_slots)
    st_load = None
    if station_cap_kw is not None:
        st_load = (
            np.zeros((len(station_cap_kw), n_slots))
            if station_load_kw is None
            else station_load_kw.astype(float).copy()
        )
    for i in np.argsort(evs.end_slot, kind="stable"):
        s, e = int(evs.start_slot[i]), int(evs.end_slot[i])
        cap = evs.p_max_kw[i] * avail[i, s:e]
        if st_load is not None:
            assert station_cap_kw is not None  # st_load exists only with caps
            k = int(evs.station[i])
            cap = np.minimum(cap, np.maximum(station_cap_kw[k] - st_load[k, s:e], 0.0))
        x = water_fill(load[s:e], cap, evs.e_need_kwh[i] / evs.eta_ch[i] / dt_h)
        p[i, s:e] = x
        load[s:e] += x
        if st_load is not None:
            st_load[int(evs.station[i]), s:e] += x
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
        "self_elasticity": (-0.3, "self-price elasticity of the flexible load (≤ 0)"),
        "cross_elasticity": (0.1, "total cross-price elasticity, spread evenly over the other slots (≥ 0)"),
        "incentive_usd_per_mwh": (0.0, "DR incentive paid per MWh shifted (`004_…` eq. 2)"),
        "penalty_usd_per_mwh": (0.0, "DR penalty rate (`004_…` eq. 3)"),
        "flexible_share": (1.0, "share of the non-EV load that is flexible (enrolled in the DR program)"),
        "reprice": (
            "day",
            "'day' (tariff fixed day-ahead) or 'step' (real-time: every clearing re-prices the "
            "rest of the day from the reported load, anchored to the day-ahead load range)",
        ),
    }

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
            "self_elasticity": p["self_elasticity"] <= 0,
            "cross_elasticity": p["cross_elasticity"] >= 0,
            "flexible_share": 0 <= p["flexible_share"] <= 1,
            "reprice": p["reprice"] in ("day", "step"),
        }
        allowed = {
            "rho_usd_per_mwh": "> 0",
            "plf_min": "0 <= plf_min <= plf_max",
            "plf_max": "> 0",
            "shape": "'affine' or 'ratio'",
            "dr_max": "[0, 1]",
            "participation": "[0, 1]",
            "self_elasticity": "<= 0 (an own-price elasticity: the flexible load does not rise with its price)",
            "cross_elasticity": ">= 0 (load moves toward the other, relatively cheaper slots)",
            "flexible_share": "[0, 1]",
            "reprice": "'day' or 'step'",
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
        p[~follow] = asap_fill(evs.select(~follow), n, dt_h)
        load = request.base_load_kw + shift + request.committed_ev_kw + p.sum(axis=0)
        station_load = None
        if request.station_cap_kw is not None:
            n_st = len(request.station_cap_kw)
            station_load = np.zeros((n_st, n))
            if request.committed_station_kw is not None:
                station_load += request.committed_station_kw
            np.add.at(station_load, evs.station[~follow], p[~follow])
        if follow.any():
            p[follow] = valley_fill(evs.select(follow), n, dt_h, load, request.station_cap_kw, station_load)
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
