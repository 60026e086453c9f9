"""The tracker's wanted models (`GET /api/models/wanted`, docs/api.md) at the end of `luckrig-node models`: the
catalog models few or no rigs serve, with the command that fetches each, leaving out the ones this machine already
has (by sha256). Only a suggestion: nothing here pulls; the owner runs the command, or not.

The answer comes from a tracker, so it is treated as input: an entry is shown only when its name is a plain
model name, the command is built here from that name (never the tracker's string), and names are printed without
control characters. A tracker that does not answer, or answers something else, costs one short note and never
the command's exit status."""

import re

import requests

from node_agent.terminal import printable

TIMEOUT = 5.0  # seconds: a suggestion is not worth a long wait
_NAME = re.compile(r"^[A-Za-z0-9][\w.:+/-]{0,119}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class NoAnswer(Exception):
    """The tracker gave no usable list; the text says why, in a few words."""


def fetch(tracker: str) -> list[dict]:
    """The tracker's wanted entries that are well formed, in its order."""
    try:
        r = requests.get(f"{tracker.rstrip('/')}/api/models/wanted", timeout=TIMEOUT)
    except requests.Timeout as exc:
        raise NoAnswer(f"no answer within {TIMEOUT:g} s") from exc
    except requests.ConnectionError as exc:
        raise NoAnswer("could not connect") from exc
    except requests.RequestException as exc:
        raise NoAnswer(type(exc).__name__) from exc
    if r.status_code != 200:
        raise NoAnswer(f"HTTP {r.status_code}")
    try:
        entries = r.json()["wanted"]
    except (ValueError, KeyError, TypeError, requests.JSONDecodeError) as exc:
        raise NoAnswer("an answer that is not a list of wanted models") from exc
    if not isinstance(entries, list):
        raise NoAnswer("an answer that is not a list of wanted models")
    return [
        e
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("name"), str)
        and _NAME.match(e["name"])
        and isinstance(e.get("sha256"), str)
        and _SHA256.match(e["sha256"])
        and isinstance(e.get("rigs"), int)
    ]


def one_line(text, limit: int) -> str:
    return " ".join(printable(text).split())[:limit]


def served_by(n: int) -> str:
    return "served by no rig" if n == 0 else f"served by {n} rig{'s' if n != 1 else ''}"


def section(tracker: str, present: set[str], known_names: set[str]) -> list[str]:
    """The lines `luckrig-node models` ends with: a heading and two lines per wanted model not present here."""
    heading = f"Wanted on {one_line(tracker, 200)}:"
    try:
        entries = fetch(tracker)
    except NoAnswer as exc:
        return [f"{heading} could not ask the tracker ({exc}); --no-wanted skips this"]
    missing = [e for e in entries if e["sha256"] not in present]
    if not entries:
        return [f"{heading} nothing: every catalog model is served by several rigs"]
    if not missing:
        return [f"{heading} nothing you do not have already"]
    lines = [heading]
    for e in missing:
        size = e.get("size")
        about = [one_line(e.get("file") or "", 120), f"{size / 2**20:.1f} MiB" if isinstance(size, int) else ""]
        about.append(one_line(e.get("licence") or "", 40))
        detail = ", ".join(a for a in about if a)
        note = "" if e["name"].lower() in known_names else " (not in this agent's catalog: upgrade luckrig-node)"
        lines.append(f"  {e['name']}{f' ({detail})' if detail else ''}: {served_by(e['rigs'])}{note}")
        lines.append(f"    luckrig-node pull {e['name']}")
    return lines
