"""Scenario files: a TOML document validated against the schema below.

Bus numbers: the bus numbers of a scenario (``stations.buses``, ``grid.zones``) are the network's pandapower bus
indices (``grid.bus_numbering = "pandapower"``, the default), which every table, plot and KPI reports too. The shipped
paper cases (`PAPER_CASES`) may say ``"paper"`` instead: the papers' 1-based numbers, index = number − 1
(:meth:`Scenario.bus_index`). Where stations are built, indices become internal positions once
(`grids.network.Network.position`).

Errors: :func:`load_scenario` and :func:`apply_overrides` raise :class:`ScenarioError` whose message is one line per
problem, each naming the field, the value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from sim.attack_kinds import AttackKindName, on_measurements
from sim.attack_kinds import describe as describe_kinds
from sim.scenario_files import SCENARIO_DIR as SCENARIO_DIR
from sim.scenario_files import ScenarioError, _format_errors, _Model, apply_overrides, read_toml, resolve_path
from sim.scenario_files import describe_scenarios as describe_scenarios
from sim.scenario_files import list_scenarios as list_scenarios
from sim.scenario_files import parse_override as parse_override
from sim.scenario_fleet import ArrivalSpec as ArrivalSpec
from sim.scenario_fleet import Choice as Choice
from sim.scenario_fleet import DepartureSpec as DepartureSpec
from sim.scenario_fleet import FleetGroup as FleetGroup
from sim.scenario_fleet import FleetSpec as FleetSpec
from sim.scenario_fleet import Uniform as Uniform

# Cases whose papers number buses from 1 (``grid.bus_numbering = "paper"`` is allowed only for them)
PAPER_CASES = ("case33bw", "case33bw-dr", "case33bw-dlmp", "case118")


class TimeSpec(_Model):
    """Clock: when the run starts, how long it lasts, and the market step."""

    start_h: float = Field(12.0, ge=0, lt=24, description="time of day of the first step [h]")
    horizon_h: float = Field(24.0, gt=0, le=24 * 366, description="simulated time [h]")
    dt_min: float = Field(15.0, ge=1, le=24 * 60, description="market step Δt [min] (a year of 1-min steps: 527 040)")

    @model_validator(mode="after")
    def _whole_steps(self) -> TimeSpec:
        steps = self.horizon_h * 60 / self.dt_min
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(
                f"time.horizon_h: {self.horizon_h} h is not a whole number of dt_min={self.dt_min} min steps"
            )
        return self

    @property
    def n_steps(self) -> int:
        return int(round(self.horizon_h * 60 / self.dt_min))


class VoltVarSpec(_Model):
    """Local Volt/VAr droop of EV chargers (IEEE 1547-2018 style piecewise-linear curve).

    ``q_share`` is reactive power as a share of the charger's apparent-power rating (+ = inject, − = absorb) at
    the voltages ``v_pu``; between points it is interpolated, beyond them held. The default is 1547's category B
    curve. Q never exceeds the headroom ``sqrt(S² − P²)`` left by the charging power.
    """

    enabled: bool = Field(False, description="chargers follow the Volt/VAr curve below")
    v_pu: list[float] = Field(
        default_factory=lambda: [0.92, 0.98, 1.02, 1.08], description="curve points: voltages, strictly increasing [pu]"
    )
    q_share: list[float] = Field(
        default_factory=lambda: [0.44, 0.0, 0.0, -0.44],
        description="curve points: reactive power / charger rating at v_pu, + = inject [-], in [-1, 1]",
    )

    @model_validator(mode="after")
    def _curve(self) -> VoltVarSpec:
        if len(self.v_pu) != len(self.q_share) or len(self.v_pu) < 2:
            raise ValueError("grid.volt_var: v_pu and q_share need the same length (>= 2)")
        if any(b <= a for a, b in zip(self.v_pu, self.v_pu[1:])):
            raise ValueError(f"grid.volt_var.v_pu: must increase strictly, got {self.v_pu}")
        if any(abs(q) > 1 for q in self.q_share):
            raise ValueError(f"grid.volt_var.q_share: allowed range [-1, 1], got {self.q_share}")
        return self


class GridSpec(_Model):
    """The network, its load profile, its limits and the power-flow engine (sources and ratings: docs/grids.md)."""

    case: str = Field(
        "case33bw",
        description="case33bw, case33bw-dr, case33bw-dlmp, case118, file, pandapower:<name> or simbench:<code>",
    )
    file: str = Field(
        "",
        description="network file when case = 'file': pandapower .json or MATPOWER .m/.mat "
        "(pickles only with the command-line opt-in --trust-pickle)",
    )
    network_args: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments (scalars) of a pandapower:<name> constructor"
    )
    bus_numbering: Literal["pandapower", "paper"] = Field(
        "pandapower",
        description="bus numbers in this file: the network's pandapower indices, or the papers' 1-based numbers "
        "(shipped paper cases only)",
    )
    zones: dict[Literal["residential", "commercial", "industrial"], list[int]] = Field(
        default_factory=dict, description="explicit zone per bus (bus numbers of the scenario); see grids/zones.py"
    )
    load_profile: Literal["zonal", "flat", "residential", "network"] | None = Field(
        None, description="omitted: 'network' (own profiles) for simbench:<code>, 'zonal' otherwise"
    )
    profile_start_day: int = Field(
        1, ge=1, le=366, description="day of the profile year (1 = 1 January) the run starts on (SimBench profiles)"
    )
    load_scale: float = Field(1.0, gt=0, le=10, description="multiplies the network's non-EV load [-]")
    v_min_pu: float = Field(0.95, gt=0.5, lt=1.0, description="lower voltage limit [pu]")
    v_max_pu: float = Field(1.05, gt=1.0, lt=1.5, description="upper voltage limit [pu]")
    line_max_i_ka: float | str | None = Field(
        None,
        description="thermal rating of every line [kA]; 'network' keeps the network's; omitted: 0.4 on the "
        "case33bw cases, the network's own otherwise",
    )
    max_line_loading_percent: float = Field(100.0, gt=0, le=500, description="line loading limit [% of rating]")
    max_trafo_loading_percent: float = Field(100.0, gt=0, le=500, description="transformer loading limit [%]")
    substation_mva: float | str | None = Field(
        None,
        description="T-D interface rating [MVA]; 'network' = none beyond the transformers' own; omitted: 8 on the "
        "case33bw cases, 'network' otherwise",
    )
    gen_dispatch: Literal["load-following", "fixed"] = Field(
        "load-following", description="the network's own generators (net.gen) follow the demand, or stay fixed"
    )
    dg_cost_scale: float = Field(1.0, gt=0, le=10, description="multiplies the DGs' cost coefficients A, B, C")
    dispatch: Literal["merit", "opf", "lindistflow"] = Field(
        "merit",
        description="how the DSO dispatches its DGs each step: 'merit' (each runs when its marginal cost is below the "
        "price), 'opf' (AC OPF with the network's voltage and loading limits) or 'lindistflow' (one LinDistFlow QP "
        "with linearised losses and the same limits, ~50x faster; radial networks only); merit order where they fail",
    )
    engine: Literal["fast", "pandapower"] = Field(
        "fast", description="power-flow engine: evgrid's own Newton-Raphson, or pandapower's runpp"
    )
    curtailment: bool = Field(True, description="the DSO curtails EV load on voltage or loading violations")
    volt_var: VoltVarSpec = Field(VoltVarSpec(), description="Volt/VAr droop of EV chargers")

    @field_validator("case")
    @classmethod
    def _known_case(cls, v: str) -> str:
        from grids.sources import SourceError, check_case

        try:
            check_case(v)
        except SourceError as err:
            raise ValueError(str(err).removeprefix("grid.case: ")) from None
        return v

    @field_validator("line_max_i_ka", "substation_mva")
    @classmethod
    def _rating(cls, v: float | str | None, info: Any) -> float | str | None:
        if v is None or v == "network":
            return v
        if isinstance(v, str) or not (math.isfinite(v) and v > 0):
            unit = "kA" if info.field_name == "line_max_i_ka" else "MVA"
            raise ValueError(f"allowed: a number > 0 [{unit}], 'network' (the network's own) or omitted")
        return float(v)

    @model_validator(mode="after")
    def _file_given(self) -> GridSpec:
        if self.case == "file" and not self.file:
            raise ValueError("grid.file: required when grid.case = 'file'")
        if self.load_profile == "network" and not self.case.startswith("simbench:") and self.case != "file":
            raise ValueError(
                f"grid.load_profile: 'network' needs a network with its own load profiles (simbench:<code>), "
                f"not '{self.case}'; allowed: zonal, residential, flat"
            )
        if self.profile_start_day != 1 and not self.case.startswith("simbench:") and self.case != "file":
            raise ValueError(
                f"grid.profile_start_day: {self.profile_start_day} has no effect on '{self.case}' (daily profiles); "
                "allowed: only with grid.case = 'simbench:<code>' (year-long profiles), else leave it out"
            )
        if self.network_args:
            from grids.sources import SourceError, check_network_args

            try:
                check_network_args(self.case, self.network_args)
            except SourceError as err:
                raise ValueError(str(err)) from None
        return self


class PriceSpec(_Model):
    """The tariff the market starts from (mechanisms may replace it)."""

    rho_usd_per_mwh: float = Field(84.0, ge=0, le=10_000, description="base energy price [$/MWh]")
    tariff: Literal["flat", "load-shaped", "table"] = Field(
        "load-shaped",
        description="starting tariff: rho every step, rho × a price level factor following the forecast load, or "
        "table_usd_per_mwh",
    )
    plf_min: float = Field(0.75, ge=0, description="load-shaped: price level factor at the day's load valley [-]")
    plf_max: float = Field(1.35, gt=0, description="load-shaped: price level factor at the day's load peak [-]")
    table_usd_per_mwh: list[float] = Field(default_factory=list, description="24 hourly prices when tariff = 'table'")
    q_price_usd_per_mvarh: float = Field(7.0, ge=0, description="price of reactive energy from the grid [$/MVArh]")

    @model_validator(mode="after")
    def _table(self) -> PriceSpec:
        if self.tariff == "table" and len(self.table_usd_per_mwh) != 24:
            raise ValueError(f"prices.table_usd_per_mwh: needs 24 hourly values, got {len(self.table_usd_per_mwh)}")
        if self.plf_min > self.plf_max:
            raise ValueError(f"prices.plf_min: {self.plf_min} > plf_max {self.plf_max}")
        return self


class MarketSpec(_Model):
    """Which mechanism clears the market, and parameters per mechanism (checked by the mechanisms themselves).

    ``params`` holds one table per mechanism name (``[market.params.elasticity-dr]``), so switching
    ``market.mechanism`` never leaves another mechanism's options behind.
    """

    mechanism: str = Field("elasticity-dr", description="the clearing mechanism; `evgrid mechanisms` lists them")
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="one table of parameters per mechanism name; `evgrid mechanisms NAME` lists a mechanism's",
    )
    dlmp: Literal["off", "lindistflow", "acopf"] = Field(
        "off", description="DSO prices the grid per bus and slot each day (requests then carry λP, λQ)"
    )
    reference: bool = Field(False, description="solve the exact optimum of every clearing and report the gap")
    reference_variant: Literal["lp", "milp"] = Field(
        "lp", description="reference: continuous (LP) or discretised (MILP) exact optimum"
    )
    reference_bits: int = Field(4, ge=1, le=12, description="bit depth of the discretised reference")
    lookahead_h: float = Field(24.0, gt=0, le=8784, description="real-time clearings plan at least this far [h]")

    @property
    def active_params(self) -> dict[str, Any]:
        """Parameters of the selected mechanism."""
        return dict(self.params.get(self.mechanism, {}))

    def build(self, seed: Any = None) -> Any:
        """Instantiate the selected mechanism; every parameter table is checked against its mechanism.

        Raises:
            markets.base.MarketConfigError: unknown mechanism or parameter, or a value out of range.
        """
        from markets.base import MarketConfigError, get

        for name, params in self.params.items():
            try:
                get(name)(**params)
            except MarketConfigError as err:
                msg = str(err).replace("market.params.", f"market.params.{name}.")
                msg = msg.replace("market.mechanism:", f"market.params.{name}:")
                raise MarketConfigError(msg) from None
        return get(self.mechanism)(seed=seed, **self.active_params)


class StationGroup(_Model):
    """Stations of one kind: at which buses (bus numbers of the scenario, or a zone), how many ports, what power cap."""

    name: str = Field(description="group name (unique), referred to by fleet.groups.station_group")
    buses: list[int] | Literal["all", "residential", "commercial", "industrial"] = Field(
        "all", description="bus numbers of the scenario, or a zone: one station per load bus of it ('all': every one)"
    )
    per_bus: int = Field(1, ge=1, le=1000, description="stations per bus")
    ports: int = Field(0, ge=0, description="ports per station; 0 = one port per EV assigned (no queue)")
    cap_kw: float = Field(0.0, ge=0, description="station power cap [kW]; 0 = no cap")
    release_when_full: bool = Field(False, description="EVs leave the port when charged (public) or stay (home)")

    @field_validator("buses")
    @classmethod
    def _bus_list(cls, v: list[int] | str) -> list[int] | str:
        if isinstance(v, list):
            if not v:
                raise ValueError("needs at least one bus number, or a zone: all, residential, commercial, industrial")
            if any(b < 0 for b in v):
                raise ValueError(f"bus numbers are >= 0, got {min(v)}")
            dup = sorted({b for b in v if v.count(b) > 1})
            if dup:
                raise ValueError(f"bus {dup[0]} is listed twice; use per_bus for several stations at one bus")
        return v


class AttackSpec(_Model):
    """A false-data-injection attack applied at a tap (see `agents.attacker`).

    ``kind``: one of `sim.attack_kinds.KINDS`, where each kind is declared once with the tap channel it
    falsifies, what its targets are and what it does. Measurement attacks need ``detection.state_estimation``.
    Targets are explicit indices (station rows, measurement indices, non-slack buses or EV fleet rows, by kind) or
    a random ``share`` drawn from the run's ``attack`` stream. The attack acts on slots whose time lies in
    ``[start_h, end_h)`` (hours since the run started), ramping in linearly over ``ramp_h``.
    """

    label: str = Field("", description="name of the attack in tables and plots")
    kind: AttackKindName = Field(description="what is falsified: one of sim.attack_kinds.KINDS")
    share: float = Field(
        0.15, ge=0, le=1, description="share of stations / buses / EVs attacked when targets is omitted [-]"
    )
    targets: list[int] | None = Field(
        None,
        description="explicit targets (0-based station, EV or measurement rows; buses from 1); omitted: a random share",
    )
    magnitude: float = Field(
        0.3,
        ge=-100,
        le=100,
        description="relative change (0.3 = +30 %); σ units for "
        "measurement-bias; pu of |V| for measurement-stealth; max relative change per bus "
        "for load-redistribution",
    )
    start_h: float = Field(0.0, ge=0, description="attack window opens, hours since the run started [h]")
    end_h: float = Field(1e9, gt=0, description="attack window closes (exclusive), hours since the run started [h]")
    ramp_h: float = Field(0.0, ge=0, description="linear ramp-in from start_h to full magnitude [h]")
    stealth: bool = Field(False, description="load-redistribution: AC-consistent (passes the χ² test)")
    channel: Literal["dso_measurements", "station_reports"] = Field(
        "dso_measurements", description="replay: the channel whose recorded values are replayed"
    )
    delay_steps: int = Field(4, ge=1, le=10_000, description="replay / price-delay: staleness [steps]")
    freeze: bool = Field(False, description="replay: hold the value of the step before the window opened")

    @model_validator(mode="after")
    def _window(self) -> AttackSpec:
        if self.end_h <= self.start_h:
            raise ValueError(f"attacks.end_h: must be > start_h ({self.start_h}), got {self.end_h}")
        if self.kind == "load-redistribution" and not 0 <= abs(self.magnitude) <= 1:
            raise ValueError(
                f"attacks.magnitude: load-redistribution needs |magnitude| in [0, 1], got {self.magnitude}"
            )
        return self

    @property
    def on_measurements(self) -> bool:
        """Whether the attack falsifies the DSO's measurements (needs state estimation)."""
        return on_measurements(self.kind, self.channel)


# the kinds' descriptions come from their one declaration (sim.attack_kinds), for the docs and the schema reference
AttackSpec.__doc__ = f"{AttackSpec.__doc__}\n    Kinds:\n\n{describe_kinds('    ')}\n    "


class DetectionSpec(_Model):
    """DSO-side detection of falsified station reports and its mitigation.

    Plausibility: a station's report for the current step is compared with the power the DSO meters at the station
    in that step; the normalised residual feeds a one-sided CUSUM per station (``S = max(0, S + r − k)``, alarm at
    ``S > h``). Reports above the station's physical limit (ports × largest charger, or its cap) are flagged at once.
    Mitigation ``forecast``: a flagged station's reports are replaced by the aggregator's own schedule for it.
    """

    enabled: bool = Field(False, description="the DSO checks station reports (plausibility and CUSUM)")
    state_estimation: bool = Field(False, description="WLS state estimation and chi-square/rN tests every step")
    alpha: float = Field(0.01, gt=0, lt=0.5, description="false-alarm probability of the chi-square test")
    cusum_k: float = Field(0.5, ge=0, description="CUSUM drift allowance [in units of the residual scale]")
    cusum_h: float = Field(5.0, gt=0, description="CUSUM alarm threshold")
    scale_kw: float = Field(5.0, gt=0, description="residual normalisation [kW]")
    mitigation: Literal["none", "forecast"] = Field(
        "forecast", description="a flagged station's reports are kept, or replaced by the aggregator's schedule"
    )


class OutputSpec(_Model):
    """What a run writes besides its KPIs and step table."""

    plots: bool = Field(True, description="write the plots (in the formats of outputs.format)")
    bus_table: bool = Field(True, description="write the per-bus and per-line tables (tables/bus, tables/line)")
    ev_table: bool = Field(True, description="write the per-EV table (tables/evs)")
    format: list[Literal["png", "svg", "pdf"]] = Field(
        default=["png"], min_length=1, description="file formats of the run and study plots"
    )


class Scenario(_Model):
    """A complete, validated scenario."""

    name: str = Field("unnamed", description="plain name; results go to results/<name> by default")
    description: str = Field("", description="free text; its first line is listed by `evgrid scenarios`")
    seed: int = Field(0, ge=0, lt=2**63, description="root seed of every random stream of the run")
    time: TimeSpec = TimeSpec()
    grid: GridSpec = GridSpec()
    prices: PriceSpec = PriceSpec()
    market: MarketSpec = MarketSpec()
    fleet: FleetSpec
    stations: list[StationGroup] = Field(min_length=1)
    outputs: OutputSpec = OutputSpec()
    attacks: list[AttackSpec] = Field(default_factory=list)
    detection: DetectionSpec = DetectionSpec()
    paper: dict[str, Any] = Field(default_factory=dict, description="published reference numbers to print beside ours")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # the name becomes a folder (results/<name>): a name must not climb, hide or escape it
        if (
            not v
            or len(v) > 120
            or v in (".", "..")
            or v.startswith(".")
            or any(c in v for c in "/\\:")
            or not v.isprintable()
        ):
            raise ValueError(
                "must be a plain name of 1-120 printable characters without '/', '\\', ':', NUL, "
                "a leading '.' or being '.'/'..'"
            )
        return v

    @model_validator(mode="after")
    def _finite_free_tables(self) -> Scenario:
        # market.params and paper are free-form tables (checked by the mechanisms / printed): no NaN/inf there either
        tables = (
            ("market.params", self.market.params),
            ("paper", self.paper),
            ("grid.network_args", self.grid.network_args),
        )
        for root, table in tables:
            where = _non_finite(table, root)
            if where:
                raise ValueError(f"{where[0]}: must be a finite number within 64-bit range (got {where[1]!r})")
        return self

    @model_validator(mode="after")
    def _measurement_attacks(self) -> Scenario:
        if any(a.on_measurements for a in self.attacks) and not self.detection.state_estimation:
            raise ValueError(
                "attacks.kind: measurement attacks (measurement-*, load-redistribution, replay of "
                "dso_measurements) need detection.state_estimation = true"
            )
        return self

    @model_validator(mode="after")
    def _moved_keys(self) -> Scenario:
        if "station_choice" in self.market.params.get("eho-bilevel", {}):
            raise ValueError(
                "market.params.eho-bilevel.station_choice: moved to fleet.station_choice (a fleet "
                "behaviour, for every mechanism); allowed: integer >= 0 there"
            )
        return self

    @model_validator(mode="after")
    def _refs(self) -> Scenario:
        names = {s.name for s in self.stations}
        if len(names) != len(self.stations):
            raise ValueError("stations.name: names must be unique")
        for g in self.fleet.groups:
            if g.station_group not in names:
                raise ValueError(
                    f"fleet.groups.station_group: '{g.station_group}' is not a station group; allowed: {sorted(names)}"
                )
        return self

    @model_validator(mode="after")
    def _bus_numbers(self) -> Scenario:
        g = self.grid
        if g.bus_numbering == "paper":
            if g.case not in PAPER_CASES:
                raise ValueError(
                    f"grid.bus_numbering: 'paper' (1-based) is only for the shipped paper cases "
                    f"{', '.join(PAPER_CASES)}, not grid.case = '{g.case}'; allowed: 'pandapower' (the network's "
                    "bus indices)"
                )
            for s in self.stations:
                if isinstance(s.buses, list) and min(s.buses) < 1:
                    raise ValueError(
                        f"stations.buses: bus {min(s.buses)} in station group '{s.name}'; paper numbering starts at 1"
                    )
        seen: dict[int, str] = {}
        for z, buses in g.zones.items():
            for b in buses:
                if b < (1 if g.bus_numbering == "paper" else 0):
                    raise ValueError(f"grid.zones.{z}: bus {b} is not a bus number ({g.bus_numbering} numbering)")
                if seen.get(b, z) != z:
                    raise ValueError(f"grid.zones.{z}: bus {b} is also in zone '{seen[b]}'; a bus has one zone")
                seen[b] = z
        return self

    def bus_index(self, bus: int) -> int:
        """The pandapower bus index of a bus number written in this scenario (``grid.bus_numbering``).

        Internal arrays are indexed by bus *position*; `grids.network.Network.position` turns the index into one.
        """
        return bus - 1 if self.grid.bus_numbering == "paper" else bus

    def digest(self) -> str:
        """Stable hash of the resolved scenario (identifies it in result stores)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def _non_finite(node: Any, path: str) -> tuple[str, float] | None:
    """The first NaN/inf float (or int beyond 64 bits, which numpy cannot hold) inside nested tables/lists, as
    (dotted path, value), or None."""
    if isinstance(node, float) and not math.isfinite(node):
        return path, node
    if isinstance(node, int) and not isinstance(node, bool) and not -(2**63) <= node < 2**63:
        return path, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        hit = _non_finite(v, f"{path}.{k}")
        if hit:
            return hit
    return None


def validate(data: dict[str, Any]) -> Scenario:
    """Validate a scenario mapping; raises `ScenarioError` naming every bad field."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(_format_errors(err)) from None


def load_scenario(name_or_path: str | Path, overrides: list[str] | None = None, seed: int | None = None) -> Scenario:
    """Read, override and validate a scenario."""
    data = read_toml(resolve_path(name_or_path))
    if overrides:
        data = apply_overrides(data, overrides)
    if seed is not None:
        data["seed"] = seed
    return validate(data)
