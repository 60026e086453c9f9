"""`luckrig-node circle invite|members|remove`, and the circle steps of `luckrig-node join --circle NAME`: a
circle is a group of friends a rig can be shared with (issue 15; the tracker's API is in docs/api.md, "Circles").

Everything here speaks to the tracker with the contributor key `join` saved (identity.json) or --contributor-key.
A circle is named by its name or its id; without --circle, the one circle pinned in agent.json is meant."""

import argparse
import sys
from pathlib import Path

import requests

from node_agent import config
from node_agent.join import IDENTITY, TrackerDown, load_json, tracker_call


class Refused(Exception):
    """The tracker (or the command line) said no; the message is a sentence for the operator."""


def call(method: str, url: str, key: str, body: dict | None = None) -> requests.Response:
    """One request with the contributor key; TrackerDown when the tracker does not answer or fails (5xx)."""
    return tracker_call(method, url, key, None if body is None else {"schema_version": 1, **body})


def refused(r: requests.Response) -> Refused:
    try:
        body = r.json()
    except ValueError:
        body = {}
    error = str(body.get("error") or r.text[:200] or "no reason given").rstrip(".")
    if r.status_code == 401:
        error = "it does not accept this contributor key (pass yours with --contributor-key)"
    return Refused(f"the tracker refused ({r.status_code} {body.get('code') or 'error'}): {error}.")


def expect(r: requests.Response, status: int) -> dict:
    if r.status_code != status:
        raise refused(r)
    return r.json() if r.content else {}


# --- circles --------------------------------------------------------------------------------------------------------


def my_circles(tracker: str, key: str) -> list[dict]:
    return expect(call("GET", f"{tracker}/api/circles", key), 200)["circles"]


def find_or_create(tracker: str, key: str, name: str) -> tuple[dict, bool]:
    """The contributor's own circle called `name`, made if there is none; (circle, made now)."""
    for circle in my_circles(tracker, key):
        if circle["name"] == name and circle.get("my_role") == "owner":
            return circle, False
    return expect(call("POST", f"{tracker}/api/circles", key, {"name": name}), 201)["circle"], True


def choose(circles: list[dict], wanted: str | None, pinned: frozenset[str]) -> dict:
    """The circle `wanted` names (an id, else a name: one's own first), or the one pinned in agent.json."""
    if wanted:
        matches = [c for c in circles if c["id"] == wanted]
        matches = matches or [c for c in circles if c["name"] == wanted and c.get("my_role") == "owner"]
        matches = matches or [c for c in circles if c["name"] == wanted]
        if len(matches) == 1:
            return matches[0]
        if matches:
            ids = ", ".join(c["id"] for c in matches)
            raise Refused(f"more than one of your circles is called {wanted!r} ({ids}); name one by its id")
        raise Refused(f"you are in no circle called {wanted!r}" + known(circles))
    mine = [c for c in circles if c["id"] in pinned]
    if len(pinned) == 1 and len(mine) == 1:
        return mine[0]
    raise Refused("name the circle with --circle NAME" + known(circles))


def known(circles: list[dict]) -> str:
    return f" (yours: {', '.join(c['name'] for c in circles)})" if circles else " (you are in no circle yet)"


# --- invites --------------------------------------------------------------------------------------------------------


def uses_arg(text: str) -> int | None:
    """`--uses 5` → 5; `--uses unlimited` → None (anyone with the link, until it expires)."""
    if text.strip().lower() == "unlimited":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or unlimited, not {text!r}") from None


def create_invite(tracker: str, key: str, circle: dict, *, uses=..., days=None, role=None) -> dict:
    """POST /api/circles/<id>/invites; only what the operator said is sent (the tracker has the defaults)."""
    body = {}
    if uses is not ...:
        body["max_uses"] = uses
    if days is not None:
        body["expires_in_sec"] = round(days * 86400)
    if role:
        body["role"] = role
    return expect(call("POST", f"{tracker}/api/circles/{circle['id']}/invites", key, body), 201)


def when(iso: str) -> str:
    """`2026-01-08T12:00:00Z` (or with an offset) → `2026-01-08 12:00 UTC`."""
    return iso.replace("T", " ")[:16] + " UTC" if iso else "(no expiry given)"


def print_invite(name: str, made: dict, qr_file: str | None = None) -> None:
    invite = made["invite"]
    uses = invite.get("max_uses")
    how = "any number of uses" if uses is None else "single use" if uses == 1 else f"{uses} uses"
    expiry = when(invite.get("expires_at", ""))
    print(f"Invite link for {name} ({how}, joins as {invite.get('role', 'member')}, expires {expiry}):")
    print(f"    {made['url']}")
    print(f"Anyone with this link can join {name} and taste your rig until it expires ({expiry}).")
    if qr_file:
        Path(qr_file).write_text(made["qr_svg"])
        print(f"The link's QR code is in {qr_file}.")


# --- the commands ---------------------------------------------------------------------------------------------------


def _context(args) -> tuple[str, str, frozenset[str]]:
    cfg = config.resolve({"config_dir": args.config_dir, "tracker": args.tracker})
    if not cfg.tracker:
        raise Refused("no tracker is configured here; run `luckrig-node join --tracker URL` first, or pass --tracker")
    tracker = cfg.tracker.rstrip("/")
    identity = load_json(Path(cfg.config_dir) / IDENTITY)
    key = args.contributor_key or (identity.get("contributor_key") if identity.get("tracker") == tracker else None)
    if not key:
        raise Refused(f"no contributor key is saved for {tracker}; pass yours with --contributor-key")
    return tracker, key, cfg.pinned_circles


def run(args) -> int:
    """`luckrig-node circle <invite|members|remove>`."""
    try:
        tracker, key, pinned = _context(args)
        circle = choose(my_circles(tracker, key), args.circle, pinned)
        return {"invite": invite, "members": members, "remove": remove}[args.circle_command](args, tracker, key, circle)
    except Refused as exc:
        print(f"luckrig-node circle {args.circle_command}: {exc}", file=sys.stderr)
        return 1
    except TrackerDown as exc:
        print(f"luckrig-node circle {args.circle_command}: the tracker did not answer ({exc})", file=sys.stderr)
        return 1


def invite(args, tracker: str, key: str, circle: dict) -> int:
    made = create_invite(tracker, key, circle, uses=args.uses, days=args.days, role=args.role)
    print_invite(circle["name"], made, args.qr)
    return 0


def _of(member: dict, what: str) -> str:
    used, limit = member["usage_today"][what], member["limits"][f"{what}_per_day"]
    return f"{used:,}/{limit:,}"


def members(args, tracker: str, key: str, circle: dict) -> int:
    listed = expect(call("GET", f"{tracker}/api/circles/{circle['id']}/members", key), 200)
    rows = [("MEMBER", "ROLE", "STATUS", "REQUESTS TODAY", "TOKENS TODAY")]
    for m in listed["members"]:
        who = m["contributor"].get("handle") or m["contributor"]["id"]
        limits = "" if m.get("limits_source") != "member" else " (own limits)"
        rows.append((who, m["role"], m["status"] + limits, _of(m, "requests"), _of(m, "tokens")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"Circle {circle['name']} ({circle['id']}):")
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"Daily limits start again at {when(listed.get('resets_at', ''))}.")
    return 0


def remove(args, tracker: str, key: str, circle: dict) -> int:
    listed = expect(call("GET", f"{tracker}/api/circles/{circle['id']}/members", key), 200)["members"]
    found = [m for m in listed if args.member in (m["contributor"]["id"], m["contributor"].get("handle"))]
    if not found:
        raise Refused(f"{args.member!r} is not a member of {circle['name']} (give a handle or a contributor id)")
    who = found[0]["contributor"]
    expect(call("DELETE", f"{tracker}/api/circles/{circle['id']}/members/{who['id']}", key), 204)
    print(
        f"Removed {who.get('handle') or who['id']} from {circle['name']}: their tokens for it stop working now, "
        "and they get no new ones."
    )
    return 0


def radius(node: dict | None, cfg: config.AgentConfig, serving: str | None = None) -> str:
    """What `status` says about who may taste the rig: its radius (local, circle or public: the running agent's
    word when it answers, else what the pins and the tracker make it), whether it is pinned here, and the tracker's
    word. Only the operator changing the pin widens a pinned rig (docs/local-mode.md)."""
    from node_agent import lan

    if cfg.local:
        return "local, pinned here (visibility local: paired devices only; no tracker is contacted)"
    visibility = serving or cfg.visibility or (node or {}).get("visibility") or ""
    if cfg.pinned_circles:
        visibility = "circle"
    word = lan.trust_radius(cfg.tracker, visibility)
    pins = []
    if cfg.visibility:
        pins.append(f"visibility {cfg.visibility}")
    if cfg.pinned_circles:
        pins.append("circles " + ", ".join(sorted(cfg.pinned_circles)))
    text = f"{word}, " + ("pinned here: " + "; ".join(pins) if pins else "not pinned here (the tracker's word)")
    if node is not None:
        shared = ", ".join(f"{c['name']} ({c['id']})" for c in node.get("circles") or []) or "no circle"
        text += f"; the tracker says {node.get('visibility')}, shared with {shared}"
    return text
