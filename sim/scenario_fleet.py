"""The fleet's part of the scenario schema: ``[fleet]`` and its ``[[fleet.groups]]`` (re-exported by `sim.scenario`)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sim.scenario_files import _Model


class Uniform(_Model):
    """A value drawn uniformly from ``[low, high]`` per EV, written ``{ low = …, high = … }``."""

    low: float = Field(description="lower end (unit of the field using it)")
    high: float = Field(description="upper end (unit of the field using it), >= low")

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class Choice(_Model):
    """A value drawn per EV from a list, written ``{ values = […], weights = […] }``."""

    values: list[Any] = Field(min_length=1, description="the values (unit of the field using it)")
    weights: list[float] | None = Field(
        None, description="relative weights, one per value, >= 0 with a positive sum; omitted: equally likely"
    )

    @model_validator(mode="after")
    def _weights(self) -> Choice:
        # values are free-typed (numbers or labels): NaN/inf must not slip through as a "value"
        bad = [x for x in self.values if isinstance(x, float) and not math.isfinite(x)]
        if bad:
            raise ValueError(f"values: must be finite, got {bad[0]!r}")
        if self.weights is not None:
            if len(self.weights) != len(self.values) or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative, one per value, with a positive sum")
        return self


class ArrivalSpec(_Model):
    """Arrival time of day: a fixed number of EVs with uniform/normal times, or a non-homogeneous Poisson process."""

    process: Literal["uniform", "normal", "poisson"] = Field(
        "uniform",
        description="n_evs × share EVs a day at uniform or normal times, or a Poisson process with rate_per_h",
    )
    low_h: float = Field(17.0, ge=0, le=24, description="uniform: earliest arrival, time of day [h]")
    high_h: float = Field(19.0, ge=0, le=24, description="uniform: latest arrival, time of day [h]")
    mean_h: float = Field(18.0, ge=0, lt=24, description="normal: mean arrival, time of day [h]")
    sd_h: float = Field(1.0, gt=0, description="normal: standard deviation of the arrival time [h]")
    rate_per_h: list[float] = Field(default_factory=list, description="24 hourly arrival rates [EV/h] (poisson)")

    @model_validator(mode="after")
    def _check(self) -> ArrivalSpec:
        if self.process == "uniform" and self.high_h < self.low_h:
            raise ValueError(f"high_h ({self.high_h}) must be >= low_h ({self.low_h})")
        if self.process == "poisson" and (len(self.rate_per_h) != 24 or any(r < 0 for r in self.rate_per_h)):
            raise ValueError("rate_per_h: needs 24 non-negative hourly rates for process = 'poisson'")
        return self


class DepartureSpec(_Model):
    """Departure: a time of day window (next occurrence after arrival) or a dwell time."""

    kind: Literal["time-of-day", "dwell"] = Field(
        "time-of-day", description="departure drawn as a time of day, or as a dwell time after arrival"
    )
    low_h: float = Field(6.0, ge=0, description="earliest departure: time of day, or shortest dwell [h]")
    high_h: float = Field(8.0, ge=0, description="latest departure: time of day, or longest dwell [h]")

    @model_validator(mode="after")
    def _order(self) -> DepartureSpec:
        if self.high_h < self.low_h:
            raise ValueError(f"high_h ({self.high_h}) must be >= low_h ({self.low_h})")
        if self.kind == "dwell" and self.low_h <= 0:
            raise ValueError("low_h: a dwell time must be > 0 h")
        return self


class BatterySpec(_Model):
    """How a battery takes charge: at the charger's full power up to full (``ideal``), or with the constant-current /
    constant-voltage taper of ACN-Sim's two-stage battery (``two-stage``): above ``transition_soc`` the maximum
    charging power falls linearly to 0 at a full battery, ``p ≤ p_max·(1 − soc)/(1 − transition_soc)``, evaluated at
    the state of charge at the start of each step (agents/battery.py)."""

    model: Literal["ideal", "two-stage"] = Field(
        "two-stage",
        description="'two-stage' (CC-CV taper above transition_soc; the default for new scenarios) or 'ideal' (full "
        "power up to full; what the papers' scenarios assume)",
    )
    transition_soc: float = Field(
        0.8, ge=0.5, lt=1.0, description="two-stage: state of charge where the taper starts [-] (ACN-Sim's default)"
    )

    @model_validator(mode="after")
    def _used(self) -> BatterySpec:
        if self.model == "ideal" and "transition_soc" in self.model_fields_set and self.transition_soc != 0.8:
            raise ValueError("transition_soc: only used with model = 'two-stage'; remove it, or set the model")
        return self


class VehicleSpec(_Model):
    """Vehicle models drawn from a shipped table of published specifications (agents/data/vehicles/, from EV2Gym):
    battery capacity, AC charging and discharging power limits and V2G capability per model."""

    table: Literal["ev2gym", "ev2gym-v2g"] = Field(
        "ev2gym",
        description="'ev2gym': the 13 most registered EV models in the Netherlands (none discharges); 'ev2gym-v2g': 8 "
        "V2G-capable models of 2024 with their discharging power",
    )
    models: list[str] | Literal["all"] = Field(
        "all", description="the models to draw from (names as in the table), or 'all'"
    )
    weights: Literal["registrations", "equal"] = Field(
        "registrations", description="draw models in proportion to their registrations in the table, or equally"
    )

    @field_validator("models")
    @classmethod
    def _known(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and not v:
            raise ValueError("needs at least one model name, or 'all'")
        return v

    @model_validator(mode="after")
    def _in_table(self) -> VehicleSpec:
        from agents.vehicles import check_models

        check_models(self.table, self.models)
        return self


class FleetGroup(_Model):
    """One group of EVs with its own behaviour and hardware distributions."""

    name: str = Field(description="group name (unique), used in tables and plots")
    share: float = Field(gt=0, le=1, description="share of fleet.n_evs in this group")
    station_group: str = Field(description="name of the station group ([[stations]]) these EVs charge at")
    arrival: ArrivalSpec = Field(ArrivalSpec(), description="when the EVs arrive")
    departure: DepartureSpec = Field(DepartureSpec(), description="when the EVs leave")
    battery_kwh: Choice = Field(Choice(values=[40.0]), description="battery capacity [kWh]")
    soc_arrival: Uniform = Field(Uniform(low=0.2, high=0.4), description="state of charge at arrival [-]")
    soc_target: float = Field(0.9, gt=0, le=1, description="state of charge wanted at departure [-]")
    energy_need_kwh: Uniform | None = Field(None, description="if set, the need is drawn here and soc_arrival follows")
    charger_kw: Choice = Field(Choice(values=[7.2]), description="charging power limit of the EV's charger [kW]")
    discharge_kw: float = Field(3.6, ge=0, description="discharging power limit of a V2G EV [kW]")
    eta_ch: float = Field(0.92, gt=0, le=1, description="charging efficiency, grid to battery [-]")
    eta_dis: float = Field(0.90, gt=0, le=1, description="discharging efficiency, battery to grid [-]")
    v2g_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="probability an EV can discharge to the grid (V2G) [-]; with vehicles, among the models that can",
    )
    v2g_soc_floor: float = Field(
        0.2, ge=0, le=1, description="a V2G EV never discharges below this state of charge [-] (<= soc_target)"
    )
    degradation_usd_per_kwh: float = Field(
        0.05,
        ge=0,
        le=10,
        description="battery wear per kWh discharged for V2G [$/kWh]: pack cost / (cycle life × depth of discharge), "
        "default $130/kWh / (3000 × 0.8) ≈ 0.05 (docs/v2g.md)",
    )
    battery: BatterySpec = Field(BatterySpec(), description="charging curve of the batteries")
    vehicles: VehicleSpec | None = Field(
        None, description="draw vehicle models from a published table instead of battery_kwh (and cap charger_kw)"
    )
    charger_kva_factor: float = Field(1.1, ge=1.0, description="charger apparent-power rating / charger kW")
    elasticity: Uniform = Field(
        Uniform(low=-0.5, high=-0.1), description="own-price elasticity of the EV's demand [-], in [-100, 0]"
    )
    income_group: Choice = Field(
        Choice(values=["low", "middle", "high"], weights=[0.3, 0.5, 0.2]),
        description="income group label of each EV (reported per group in the tables)",
    )
    source: Literal["parametric", "elaadnl"] = Field(
        "parametric",
        description="where arrival, connection time and energy come from: the distributions above (parametric) or "
        "ElaadNL's empirical ones (elaadnl; agents/elaadnl.py)",
    )
    segment: Literal["private", "public"] | None = Field(
        None, description="elaadnl: the kind of charge point whose sessions are drawn (omitted: public)"
    )
    day_type: Literal["calendar", "weekday", "weekend"] | None = Field(
        None,
        description="elaadnl: arrival table per simulated day: 'calendar' (omitted) by the day's weekday in the "
        "profile year 2016 from grid.profile_start_day, or always the 'weekday' / 'weekend' table",
    )

    @model_validator(mode="after")
    def _v2g_fields(self) -> FleetGroup:
        if self.v2g_share > 0 and self.v2g_soc_floor > self.soc_target:
            raise ValueError(
                f"v2g_soc_floor: got {self.v2g_soc_floor:g}, above soc_target {self.soc_target:g}; allowed: "
                "0 <= v2g_soc_floor <= soc_target (a V2G EV must still leave with its target)"
            )
        default_battery = type(self).model_fields["battery_kwh"].default
        if self.vehicles is not None and self.battery_kwh != default_battery:
            raise ValueError("battery_kwh: not used with vehicles (the table gives each model's capacity); remove one")
        return self

    @model_validator(mode="after")
    def _source_fields(self) -> FleetGroup:
        # settings the chosen source does not use are errors, never silently ignored (a value equal to the default
        # is let through: a run's written scenario.toml spells out every default and must validate again)
        if self.source == "elaadnl":
            fields = type(self).model_fields
            unused = [
                k
                for k in ("arrival", "departure", "soc_arrival", "energy_need_kwh")
                if k in self.model_fields_set and getattr(self, k) != fields[k].default
            ]
            if unused:
                raise ValueError(
                    f"{unused[0]}: not used with source = 'elaadnl' (ElaadNL gives arrival, connection time and "
                    "energy); remove it, or use source = 'parametric'"
                )
        else:
            for k in ("segment", "day_type"):
                if getattr(self, k) is not None:
                    raise ValueError(f"{k}: only used with source = 'elaadnl'; remove it, or set source = 'elaadnl'")
        return self

    @field_validator("battery_kwh", "charger_kw")
    @classmethod
    def _positive(cls, v: Choice) -> Choice:
        if any(isinstance(x, bool) or not isinstance(x, int | float) or not 0 < x <= 1e6 for x in v.values):
            raise ValueError(f"values must be numbers in (0, 1e6], got {v.values}")
        return v

    @field_validator("elasticity")
    @classmethod
    def _own_price(cls, v: Uniform) -> Uniform:
        # an own-price elasticity > 0 (demand rising with its price) is not a behaviour: reject, never clip; below
        # -100 a 1 % price step asks for the whole flexible energy, and ever larger values overflow to inf
        if v.high > 0 or v.low < -100:
            raise ValueError(
                f"own-price elasticity must be in [-100, 0] (demand does not rise with its price); got low = "
                f"{v.low:g}, high = {v.high:g}; allowed: -100 <= low <= high <= 0"
            )
        return v


class FleetSpec(_Model):
    """The EVs: how many a day, how they follow the aggregator, and their groups."""

    n_evs: int = Field(1000, ge=0, le=1_000_000, description="EVs per simulated day [EV/day]")
    participation: float = Field(0.85, ge=0, le=1, description="probability an EV follows the aggregator's schedule")
    station_choice: int = Field(
        0,
        ge=0,
        le=1000,
        description="a following user arriving at a station queues at the least busy of it and its N nearest stations "
        "of the same group along the feeder (0 = own station; any mechanism)",
    )
    placement: Literal["load", "uniform"] = Field(
        "load",
        description="how a group's EVs are spread over its stations: 'load' in proportion to the base active load "
        "of each station's bus (shared by the group's stations at that bus), 'uniform' equally likely",
    )
    groups: list[FleetGroup] = Field(min_length=1, description="EV groups; their shares sum to 1")

    @model_validator(mode="after")
    def _shares(self) -> FleetSpec:
        s = sum(g.share for g in self.groups)
        if abs(s - 1) > 1e-6:
            raise ValueError(f"fleet.groups.share: shares must sum to 1, got {s:g}")
        if len({g.name for g in self.groups}) != len(self.groups):
            raise ValueError("fleet.groups.name: names must be unique")
        return self
