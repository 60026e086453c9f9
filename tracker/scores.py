"""Contribution scores (pure): computed on the server from evidence the tracker verified itself, never from what a
node or a contributor says about themselves. The rules and their reasons, with a worked example: docs/scoring.md.

- Nothing counts until a node has served someone else (at least one taster's worth of weighted tasting): a
  registration, a heartbeat or a tuning note alone earns nothing (a script can send heartbeats; only another
  person's tasting proves a rig).
- Tasters count when they are not the owner: neither the owner's contributor id nor one of the owner's networks.
- Each taster counts by their standing (an identity minutes old counts for little), with diminishing returns:
  a taster's requests count up to a few a day, and each taster once for discovery.
- Tastings through a circle (a member's circle token) earn usage at a quarter of a public tasting's weight and
  no discovery, so that friends cannot earn the public tier by serving each other.
- Timing samples earn their uploader credit only when their token was really used, on a node that is not the
  uploader's own, weighted by the uploader's standing."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from nodes.rarity import is_known  # noqa: F401 - part of this module's rules (evidence_of uses it)

COMPONENTS = ("existence", "rarity", "usage", "discovery", "note")

ANONYMOUS_STANDING = 0.5  # an anonymous taster is one network a day (the tracker's per-address quota)
STANDING_FULL_HOURS = 72.0  # an identity reaches full standing after three days
STANDING_FLOOR = 0.1
REQUESTS_PER_TASTER_DAY = 3  # requests of one taster, one node, one UTC day that earn usage credit
USAGE_POINTS_PER_REQUEST, USAGE_CAP = 0.5, 20.0
DISCOVERY_POINTS_PER_TASTER, DISCOVERY_CAP = 2.0, 20.0
TIMING_POINTS_PER_SAMPLE, TIMING_CAP = 0.5, 10.0
EXISTENCE_POINTS_PER_DAY, EXISTENCE_CAP = 0.2, 10.0
RARITY_POINTS = 5.0  # × the node's rarity score
NOTE_BASE, NOTE_CHARS_PER_POINT, NOTE_CAP = 1.0, 120, 10.0  # a tuning note: 1 + length / 120 characters
# How much weighted tasting a node needs before it earns anything: one taster of full standing, or two anonymous
# networks, or ten identities minutes old. One fresh sockpuppet on a second network is not "someone else".
SERVED_SOMEONE_ELSE = 1.0
# A circle token's requests, against a public token's (issue 15): counted, at a quarter, and never as discovery.
CIRCLE_USAGE_WEIGHT = 0.25


def standing(identity_created_at: datetime | None, at: datetime) -> float:
    """How much one taster's (or uploader's) acts weigh at `at`: anonymous tasters a fixed half; a contributor
    identity grows from 0.1 to 1 over its first three days, so that a farm of fresh keys earns next to nothing."""
    if identity_created_at is None:
        return ANONYMOUS_STANDING
    hours = max(0.0, (at - identity_created_at).total_seconds() / 3600)
    return round(max(STANDING_FLOOR, min(1.0, hours / STANDING_FULL_HOURS)), 4)


@dataclass(frozen=True)
class TokenUse:
    """One token a node really served (its requests as reported or witnessed), with who asked and when."""

    subject: str
    standing: float
    day: date
    requests: int
    circle: bool = False  # issued through a circle (a member's token)


@dataclass(frozen=True)
class TasterCredit:
    usage_credit: float  # weighted requests, diminishing per taster and day
    discovery_credit: float  # weighted distinct tasters
    requests: int  # raw, for the evidence shown
    tasters: int  # raw, for the evidence shown


def taster_credit(uses: list[TokenUse]) -> TasterCredit:
    per_day: dict[tuple[str, date], list[TokenUse]] = defaultdict(list)
    for use in uses:
        if use.requests > 0:
            per_day[(use.subject, use.day)].append(use)
    usage = 0.0
    best: dict[str, float] = {}
    tasters = set()
    for (subject, _day), group in per_day.items():
        weight = max(u.standing for u in group)
        # The day's few counted requests are the public ones first; a circle request fills what is left, at a
        # quarter: a member who also tasted publicly that day earns the rig no more than a public taster would.
        public = min(REQUESTS_PER_TASTER_DAY, sum(u.requests for u in group if not u.circle))
        circle = min(REQUESTS_PER_TASTER_DAY - public, sum(u.requests for u in group if u.circle))
        usage += (public + CIRCLE_USAGE_WEIGHT * circle) * weight
        tasters.add(subject)
        if any(not u.circle for u in group):
            best[subject] = max(best.get(subject, 0.0), weight)
    return TasterCredit(
        usage_credit=round(usage, 4),
        discovery_credit=round(sum(best.values()), 4),
        requests=sum(u.requests for group in per_day.values() for u in group),
        tasters=len(tasters),
    )


@dataclass(frozen=True)
class NodeEvidence:
    alive_days: int  # UTC days on which the tracker saw the node's agent heartbeat (never a probe)
    rarity: float  # the node's rarity score; 0 for a combination with an unknown model or quantization
    requests_served: int
    distinct_tasters: int
    usage_credit: float
    discovery_credit: float
    tuning_note_chars: int


def node_components(ev: NodeEvidence) -> dict[str, float]:
    """A node that has served nobody else earns nothing yet: registering a node is not a contribution, and neither
    is a heartbeat (a script can send those); running one that someone else tasted is."""
    if ev.discovery_credit < SERVED_SOMEONE_ELSE:
        return dict.fromkeys(COMPONENTS, 0.0)
    note = min(NOTE_CAP, NOTE_BASE + ev.tuning_note_chars / NOTE_CHARS_PER_POINT) if ev.tuning_note_chars > 0 else 0.0
    return {
        "existence": round(min(EXISTENCE_CAP, EXISTENCE_POINTS_PER_DAY * ev.alive_days), 4),
        "rarity": round(RARITY_POINTS * ev.rarity, 4),
        "usage": round(min(USAGE_CAP, USAGE_POINTS_PER_REQUEST * ev.usage_credit), 4),
        "discovery": round(min(DISCOVERY_CAP, DISCOVERY_POINTS_PER_TASTER * ev.discovery_credit), 4),
        "note": round(note, 4),
    }


def timing_share_points(weighted_samples: float) -> float:
    """Sharing client-measured timings is a contribution too (counted in the `note` axis, capped at 10): each
    sample of a tasting really served by someone else's node, weighted by the uploader's standing at upload."""
    return round(min(TIMING_CAP, TIMING_POINTS_PER_SAMPLE * weighted_samples), 4)


def total(components: dict[str, float]) -> float:
    return round(sum(components.get(name, 0.0) for name in COMPONENTS), 4)


def tier(total_score: float, threshold: float) -> str:
    return "contributor" if total_score >= threshold else "limited"


def owner_components(per_node: list[tuple[str, dict[str, float]]], extra_note: float = 0.0) -> dict[str, float]:
    """A contributor's components: their nodes' summed, one owner's registrations of the same combination counted
    once (the best of them, component by component), plus their timing shares."""
    best: dict[str, dict[str, float]] = {}
    for combo, components in per_node:
        kept = best.setdefault(combo, dict.fromkeys(COMPONENTS, 0.0))
        for name in COMPONENTS:
            kept[name] = max(kept[name], components.get(name, 0.0))
    summed = {name: round(sum(c[name] for c in best.values()), 4) for name in COMPONENTS}
    summed["note"] = round(summed["note"] + extra_note, 4)
    return summed


def evidence_dict(ev: NodeEvidence) -> dict:
    return {
        "alive_days": ev.alive_days,
        "rarity_score": ev.rarity,
        "requests_served": ev.requests_served,
        "distinct_tasters": ev.distinct_tasters,
        "usage_credit": ev.usage_credit,
        "discovery_credit": ev.discovery_credit,
        "tuning_note_chars": ev.tuning_note_chars,
        "served_someone_else": ev.discovery_credit >= SERVED_SOMEONE_ELSE,
    }


# Physical bounds of a timing upload (400 `implausible` outside them): generous for the fastest rig on the smallest
# model, and far from what a careless or dishonest client would send.
TIMING_BOUNDS = {
    "tok_per_sec": (0.0, 5000.0),
    "ttft_ms": (0.0, 600_000.0),
    "network_ttft_ms": (0.0, 600_000.0),
    "proxy_ttft_ms": (0.0, 600_000.0),
    "generation_sec": (0.0, 3600.0),
    "queue_wait_sec": (0.0, 3600.0),
}


def implausible_field(data: dict, max_output_tokens: int) -> str | None:
    """The first field of a timing upload outside physical bounds, or None."""
    for name, (low, high) in TIMING_BOUNDS.items():
        value = data.get(name)
        if value is not None and not low <= float(value) <= high:
            return name
    output = data.get("output_tokens")
    if output is not None and not 0 <= output <= max_output_tokens:
        return "output_tokens"
    tps, gen = data.get("tok_per_sec"), data.get("generation_sec")
    if output and tps and gen and output / max(gen, 1e-3) > 3 * tps + 50:
        return "tok_per_sec"  # the numbers disagree with each other by far more than rounding
    return None
