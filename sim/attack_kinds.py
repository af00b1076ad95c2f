"""Attack kinds, declared once (like the mechanisms' registry in `markets.base`).

Each kind names the tap channel it falsifies (`sim.taps.CHANNELS`), what one of its targets is, and what it does.
Everything else is derived from :data:`KINDS`: the scenario schema's allowed ``attacks.kind`` values
(:data:`AttackKindName`), whether an attack acts on the DSO's measurements (and so needs state estimation), and in
`agents.attacker` which tap a transform is registered on, what its targets are drawn from, and which transform
builder runs (``Attacker._<kind with - as _>``; a test checks every kind has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sim.taps import CHANNELS

#: what a target index of an attack is: a station row, a measurement index, a non-slack bus (internal position,
#: slack excluded), an EV (fleet row), or nothing (the whole message is attacked)
TargetKind = Literal["station", "measurement", "bus", "EV", "none"]


@dataclass(frozen=True)
class AttackKind:
    """One attack kind.

    Attributes:
        name: the ``attacks.kind`` value.
        channel: the tap channel its transform is registered on; ``""`` when the spec's own ``channel`` field
            chooses it (replay).
        targets: what a target index is (``targets`` / ``share`` are drawn from these).
        doc: what it does, in one or two sentences (units of ``magnitude`` included).
    """

    name: str
    channel: str
    targets: TargetKind
    doc: str

    def channel_of(self, spec_channel: str) -> str:
        """The channel an attack of this kind falsifies, given the spec's ``channel`` field."""
        return self.channel or spec_channel


KINDS: dict[str, AttackKind] = {
    k.name: k
    for k in (
        AttackKind(
            "station-inflation",
            "station_reports",
            "station",
            "stations report more committed EV load than they have (scaled by 1 + magnitude)",
        ),
        AttackKind("elasticity", "elasticity", "station", "the DR elasticities the market uses are scaled"),
        AttackKind(
            "price-scale", "price_signal", "station", "the announced price toward the market's schedules is scaled"
        ),
        AttackKind(
            "measurement-bias",
            "dso_measurements",
            "measurement",
            "a random share of the DSO's measurements is offset by magnitude standard deviations",
        ),
        AttackKind(
            "measurement-stealth",
            "dso_measurements",
            "bus",
            "the AC-consistent h(x + c) − h(x) attack that lowers the estimated |V| by magnitude pu at a share of "
            "the buses, with full knowledge of the network and state",
        ),
        AttackKind(
            "load-redistribution",
            "dso_measurements",
            "bus",
            "the load measured at a share of the non-slack buses is moved from half of them to the other half, "
            "total load unchanged, each bus changed by at most |magnitude| of its load (relative); stealth = false "
            "falsifies only the P injections (the χ² test sees it), stealth = true replaces every measurement by "
            "its AC-consistent value z + h(x') − h(x), x' the power-flow state of the redistributed loads",
        ),
        AttackKind(
            "replay",
            "",
            "none",
            "the channel (dso_measurements or station_reports) carries the values recorded delay_steps steps "
            "earlier (freeze = true: the last value before the window opened); targets are not used",
        ),
        AttackKind(
            "soc-falsification",
            "ev_reports",
            "EV",
            "a share of EVs report an energy need scaled by 1 + magnitude (relative; the reported SOC follows)",
        ),
        AttackKind(
            "price-delay",
            "price_signal",
            "EV",
            "a share of EVs receive the price signal (and the schedule that goes with it) delay_steps steps late, "
            "so they act on stale prices meanwhile",
        ),
    )
}

_bad = sorted({k.channel for k in KINDS.values() if k.channel and k.channel not in CHANNELS})
if _bad:  # a typo here would register transforms on a channel nothing reads
    raise RuntimeError(f"sim.attack_kinds: unknown tap channel(s) {_bad}; allowed: {', '.join(CHANNELS)}")

if TYPE_CHECKING:
    AttackKindName = str
else:  # the schema's Literal of every declared kind (pydantic validates against it and lists it in errors)
    AttackKindName = Literal[tuple(KINDS)]


def on_measurements(kind: str, spec_channel: str) -> bool:
    """Whether an attack of ``kind`` (with the spec's ``channel`` field) falsifies the DSO's measurements."""
    return KINDS[kind].channel_of(spec_channel) == "dso_measurements"


def describe(indent: str = "") -> str:
    """One bullet per kind (name, channel, what a target is, what it does), for docstrings and references."""
    lines = []
    for k in KINDS.values():
        channel = f"channel ``{k.channel}``" if k.channel else "the channel its ``channel`` field names"
        lines.append(f"{indent}* ``{k.name}`` ({channel}; targets: {k.targets}): {k.doc}.")
    return "\n".join(lines)
