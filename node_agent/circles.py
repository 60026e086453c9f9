"""The agent's half of "checked twice" (issue 15): a rig shared with circles refuses a token that was not issued
through one of the circles it serves, whatever the tracker issued, so that a tracker bug cannot send strangers to a
friends-only rig.

What the rig serves comes from two places. The operator may pin it (`--visibility circle`, `--circle ID`, saved in
agent.json by `luckrig-node join`); the tracker says it in every heartbeat reply and pushes it when it changes
(`visibility`, `circles`, `circle_only_hours`). A pin always wins, and the tracker can only ever narrow a rig:
`circle` from either side makes the rig a circle rig, and pinned circles replace the tracker's list rather than
join it. The tracker's last word is kept on disk, so that a circle rig restarted while the tracker is down does not
open up until it hears from it again."""

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from node_agent.errors import AgentError

log = logging.getLogger("luckrig.agent.circles")

VISIBILITIES = ("public", "unlisted", "circle")  # what the tracker may say; it never says `local`


def _all(value, ok) -> bool:
    return isinstance(value, list) and all(ok(item) for item in value)


class CircleGuard:
    def __init__(
        self,
        *,
        pinned_visibility: str = "",
        pinned_circles: Iterable[str] = (),
        state_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if pinned_visibility not in ("", "local", *VISIBILITIES):
            raise ValueError(f"--visibility must be local, public, unlisted or circle, not {pinned_visibility!r}")
        self.pinned_visibility = pinned_visibility
        self.pinned_circles = frozenset(pinned_circles)
        self.state_file = state_file
        self.clock = clock  # a test seam: circle-only hours are tested with a fixed clock
        # The tracker's word; None until it has spoken (an older tracker never does).
        self.told_visibility: str | None = None
        self.told_circles: frozenset[str] | None = None
        self.circle_only_hours: frozenset[int] = frozenset()
        # The rig's owner as the tracker names it: their own tokens always taste (an owner may try a circle rig
        # before sharing it with any circle). It admits one identity, the one that registered the rig.
        self.owner_id: str | None = None
        self._load()

    # --- what the rig serves ------------------------------------------------------------------------------

    @property
    def visibility(self) -> str:
        """`local` when the operator pinned it (no tracker word can reach such a rig, nor widen it); `circle` when the
        operator or the tracker says so (either may narrow, neither may widen the other)."""
        if self.pinned_visibility == "local":
            return "local"
        if "circle" in (self.pinned_visibility, self.told_visibility):
            return "circle"
        return self.pinned_visibility or self.told_visibility or "public"

    @property
    def circles(self) -> frozenset[str]:
        """The pinned circles when there are any (the tracker cannot add to them), else the tracker's."""
        return self.pinned_circles or self.told_circles or frozenset()

    def serves(self, circle: str | None) -> bool:
        return circle is not None and circle in self.circles

    def describe(self) -> str:
        """One line for the log: the radius and where it comes from (no circle ids: they are members' business)."""
        if self.visibility == "local":
            return "visibility local: paired devices only, no tracker (pinned)"
        pinned = "pinned" if self.pinned_visibility == "circle" or self.pinned_circles else "as the tracker says"
        text = f"visibility {self.visibility}, {len(self.circles)} circle(s) ({pinned})"
        if self.circle_only_hours:
            text += f", circle only at {len(self.circle_only_hours)} hour(s) of the day (UTC)"
        return text

    # --- the tracker's word ---------------------------------------------------------------------------------

    def apply(self, message: dict) -> None:
        """Take the tracker's `visibility`, `circles` and `circle_only_hours` (a heartbeat reply or a pushed
        `circles` message). A field that is absent (an older tracker) or malformed leaves what was known."""
        changed = False
        visibility = message.get("visibility")
        if visibility in VISIBILITIES and visibility != self.told_visibility:
            self.told_visibility, changed = visibility, True
        circles = message.get("circles")
        if _all(circles, lambda c: isinstance(c, str)) and frozenset(circles) != self.told_circles:
            self.told_circles, changed = frozenset(circles), True
        owner = message.get("owner_id")
        if isinstance(owner, str) and owner and owner != self.owner_id:
            self.owner_id, changed = owner, True
        hours = message.get("circle_only_hours")
        if _all(hours, lambda h: type(h) is int and 0 <= h <= 23) and frozenset(hours) != self.circle_only_hours:
            self.circle_only_hours, changed = frozenset(hours), True
        if changed:
            log.info("the tracker's word on this rig's radius: %s", self.describe())
            self._save()

    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            saved = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError, TypeError):
            return
        if isinstance(saved, dict):
            self.apply(saved)

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {
            "visibility": self.told_visibility,
            "circles": sorted(self.told_circles) if self.told_circles is not None else None,
            "circle_only_hours": sorted(self.circle_only_hours),
            "owner_id": self.owner_id,
        }
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(self.state_file)
        except OSError as exc:  # the word is in force in memory; only a restart would forget it
            log.warning("the rig's radius could not be saved (%s)", type(exc).__name__)

    # --- the check --------------------------------------------------------------------------------------

    def _is_owner(self, subject: str | None) -> bool:
        """The token is the rig's owner's own, as the tracker names the owner. Not when the operator pinned the
        circles: then the tracker cannot widen the rig by any word, an owner_id included (the owner's own tokens
        carry one of the rig's circles, since they are in each circle the rig is shared with)."""
        return not self.pinned_circles and subject is not None and subject == self.owner_id

    def check(self, circle: str | None, *, subject: str | None = None) -> None:
        """Raise 403 unless a token issued through `circle` (None: a public token) to `subject` (its `sub`) may taste
        this rig now."""
        if self.visibility == "local":
            raise AgentError(
                401, "local_only", "This rig serves the devices paired with it only (local mode): no tasting token."
            )
        if self.serves(circle) or self._is_owner(subject):
            return
        if self.visibility == "circle":
            raise AgentError(
                403,
                "not_in_circle",
                "This rig is shared with its circles only, and this tasting token was not issued through one of them.",
            )
        hour = time.gmtime(self.clock()).tm_hour
        if hour in self.circle_only_hours:
            headers, until = {}, "at every hour of the day"
            free = next((n for n in range(1, 24) if (hour + n) % 24 not in self.circle_only_hours), None)
            if free is not None:
                now = self.clock()
                wait = int(free * 3600 - now % 3600)
                headers = {"Retry-After": str(wait)}
                until = "until " + time.strftime("%H:00 UTC", time.gmtime(now + wait))
            raise AgentError(
                403,
                "circle_only_now",
                f"This rig serves its circles only {until}; a token issued through one of them may taste it now.",
                headers=headers,
            )
