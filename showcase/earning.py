"""How a taster and an operator earn the contributor tier, in numbers, for the contribute page: the threshold from
the settings, every rate and cap from `tracker.scores` (the rules themselves, explained in docs/scoring.md), so
that the page cannot drift from what the tracker computes."""

import math

from django.conf import settings
from django.utils.translation import gettext as _

from showcase.display import AXIS_LABELS
from tracker import scores


def num(value: float) -> str:
    """0.2 → "0.2", 10.0 → "10", 1.0 → "1"."""
    return f"{value:g}"


def at_least(needed: float, each: float) -> int:
    """How many steps of `each` reach `needed` (rounded first: 1 / (0.5 × 0.1) is 19.999… in binary)."""
    return max(1, math.ceil(round(needed / each, 6)))


def axes() -> list[dict]:
    """The five components of a rig's score: what earns points, how many, and the cap."""
    return [
        {
            "name": "existence",
            "label": AXIS_LABELS["existence"],
            "gives": _("%(points)s a day on which the rig's agent was seen alive")
            % {"points": num(scores.EXISTENCE_POINTS_PER_DAY)},
            "cap": num(scores.EXISTENCE_CAP),
        },
        {
            "name": "rarity",
            "label": AXIS_LABELS["rarity"],
            "gives": _(
                "%(points)s × the rig's rarity (1 ÷ the listed rigs with its GPU, model and quantization; "
                "0 when the model or quantization is unknown)"
            )
            % {"points": num(scores.RARITY_POINTS)},
            "cap": "—",
        },
        {
            "name": "usage",
            "label": AXIS_LABELS["usage"],
            "gives": _("%(points)s a request served to someone else (at most %(n)s per taster and day), × standing")
            % {"points": num(scores.USAGE_POINTS_PER_REQUEST), "n": scores.REQUESTS_PER_TASTER_DAY},
            "cap": num(scores.USAGE_CAP),
        },
        {
            "name": "discovery",
            "label": AXIS_LABELS["discovery"],
            "gives": _("%(points)s for each distinct taster, once, × standing")
            % {"points": num(scores.DISCOVERY_POINTS_PER_TASTER)},
            "cap": num(scores.DISCOVERY_CAP),
        },
        {
            "name": "note",
            "label": AXIS_LABELS["note"],
            "gives": _("a tuning note: %(base)s + its length ÷ %(chars)s characters")
            % {"base": num(scores.NOTE_BASE), "chars": scores.NOTE_CHARS_PER_POINT},
            "cap": num(scores.NOTE_CAP),
        },
    ]


def earning() -> dict:
    threshold = settings.CONTRIBUTOR_THRESHOLD
    per_share = scores.TIMING_POINTS_PER_SAMPLE
    first_taster = scores.DISCOVERY_POINTS_PER_TASTER * scores.SERVED_SOMEONE_ELSE
    return {
        "threshold": num(threshold),
        "share_points": num(per_share),
        "share_cap": num(scores.TIMING_CAP),
        "shares_reach": threshold <= scores.TIMING_CAP,  # else sharing alone never gets there
        "shares_full": at_least(threshold, per_share),
        "shares_fresh": at_least(threshold, per_share * scores.STANDING_FLOOR),
        "standing_floor": num(scores.STANDING_FLOOR),
        "standing_hours": num(scores.STANDING_FULL_HOURS),
        "served": num(scores.SERVED_SOMEONE_ELSE),
        "anonymous_tasters": at_least(scores.SERVED_SOMEONE_ELSE, scores.ANONYMOUS_STANDING),
        "fresh_tasters": at_least(scores.SERVED_SOMEONE_ELSE, scores.STANDING_FLOOR),
        "first_taster_points": num(first_taster),
        "first_taster_reaches": first_taster >= threshold,
        "axes": axes(),
    }
