"""The filter rules a rig applies when no tracker tells it (issue 16). A rig linked to a tracker fetches the
published rules (`GET /api/filter-rules`, node_agent/tracker_link.py) and keeps the last ones here, in its state
dir (`filter_rules.json`); a rig pinned `local` never speaks to a tracker, so at start every rig applies the rules
last kept (a public rig until its tracker answers, a local one for good), or the built-in defaults
(node_agent/policy.py) when none were ever fetched, and says which in its log and in `luckrig-node status`.

A local rig's owner refreshes them by an explicit act, `luckrig-node rules --update`: one fetch with the node
secret an earlier `join` saved (the tracker hands its rules to registered rigs only), no registration, no
heartbeat; a running local rig applies what it keeps within 10 s (`follow`). An answer that is not the documented
shape changes nothing: the rules kept stay in force."""

import asyncio
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

from node_agent import config

log = logging.getLogger("luckrig.agent.rules")

FILE_NAME = "filter_rules.json"
RULES_PATH = "/api/filter-rules"
FOLLOW_INTERVAL = 10.0  # seconds between a local rig's looks at the kept rules


class RulesError(Exception):
    """Why rules could not be fetched or read; the rules in force stay as they were."""


@dataclass(frozen=True)
class CachedRules:
    tracker: str
    version: int
    fetched_at: str
    rules: list[dict]


def checked(doc) -> tuple[int, list[dict]]:
    """The version and rules of a `/api/filter-rules` answer (docs/api.md), or RulesError naming what is wrong: an
    integer version, and a list of rules each with a text id and a pattern that compiles."""
    if not isinstance(doc, dict):
        raise RulesError("the answer is not a JSON object")
    version, rules = doc.get("version"), doc.get("rules")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RulesError("the answer has no integer version")
    if not isinstance(rules, list):
        raise RulesError("the answer has no list of rules")
    for rule in rules:
        if (
            not isinstance(rule, dict)
            or not isinstance(rule.get("id"), str)
            or not isinstance(rule.get("pattern"), str)
        ):
            raise RulesError("a rule has no text id or pattern")
        try:
            re.compile(rule["pattern"])
        except re.error as exc:
            raise RulesError(f"rule {rule['id'][:64]!r} has an invalid pattern ({exc})") from exc
    return version, rules


def load(state_dir: Path) -> CachedRules | None:
    """The rules kept in `state_dir`, or None when there are none (or the file is unreadable: said in the log)."""
    path = Path(state_dir) / FILE_NAME
    try:
        doc = json.loads(path.read_text())
        version, rules = checked(doc)
        return CachedRules(str(doc["tracker"]), version, str(doc["fetched_at"]), rules)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RulesError) as exc:
        log.warning("ignoring the kept filter rules in %s: %s", path, exc)
        return None


def save(state_dir: Path, *, tracker: str, version: int, rules: list[dict]) -> CachedRules:
    """Keep these rules (written whole, then renamed: a crash never leaves half a file)."""
    kept = CachedRules(tracker.rstrip("/"), version, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), rules)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (FILE_NAME + ".tmp")
    body = {"schema_version": 1, "tracker": kept.tracker, "version": version, "fetched_at": kept.fetched_at}
    tmp.write_text(json.dumps(body | {"rules": rules}, indent=1))
    os.replace(tmp, state_dir / FILE_NAME)
    return kept


def describe(cached: CachedRules | None) -> str:
    if cached is None:
        return "the built-in defaults (no rules fetched from a tracker yet)"
    return f"the tracker's, version {cached.version} from {cached.tracker}, fetched {cached.fetched_at}"


def apply_cached(policy, state_dir: Path) -> CachedRules | None:
    """At start: the rules last kept in force (if any), and a log line saying which rules these are."""
    cached = load(state_dir)
    if cached is not None:
        policy.set_rules(cached.rules)
    log.info("filter rules: %s", describe(cached))
    return cached


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)  # a rename (how save writes) changes the inode


async def follow(policy, state_dir: Path, interval: float | None = None) -> None:
    """A local rig, while it runs: apply the rules `luckrig-node rules --update` keeps, checked every `interval`
    seconds (a stat, no read unless the file changed). A public rig needs none: its tracker link applies them."""
    path = Path(state_dir) / FILE_NAME
    seen = _stamp(path)
    while True:
        await asyncio.sleep(interval or FOLLOW_INTERVAL)
        stamp = _stamp(path)
        if stamp == seen:
            continue
        seen = stamp
        cached = load(state_dir)
        if cached is not None:
            policy.set_rules(cached.rules)
            log.info("filter rules now: %s", describe(cached))


def fetch(tracker: str, node_secret: str, timeout: float = 10) -> tuple[int, list[dict]]:
    """One `GET /api/filter-rules` with the node secret: (version, rules), or RulesError saying why not."""
    url = tracker.rstrip("/") + RULES_PATH
    try:
        r = requests.get(url, headers={"Authorization": f"Bearer {node_secret}"}, timeout=timeout)
    except requests.RequestException as exc:
        raise RulesError(f"could not reach {url} ({type(exc).__name__})") from exc
    if r.status_code == 401:
        raise RulesError("the tracker refused the node secret (401): is this the tracker the rig joined?")
    if r.status_code == 403:
        raise RulesError("the tracker refuses this node (403): it is taken down or banned")
    if r.status_code != 200:
        raise RulesError(f"the tracker answered HTTP {r.status_code}")
    try:
        doc = r.json()
    except ValueError as exc:
        raise RulesError("the answer is not JSON") from exc
    return checked(doc)


def run(args) -> int:
    """`luckrig-node rules [--update [--tracker URL]]`: which filter rules this rig applies; with --update, fetch
    the tracker's once and keep them."""
    cfg = config.resolve({"config_dir": args.config_dir})
    cached = load(cfg.state_dir)
    if not args.update:
        print(f"Filter rules: {describe(cached)}")
        if cached is not None:
            print(f"  {len(cached.rules)} rule(s) in {cfg.state_dir / FILE_NAME}")
        return 0
    tracker = (args.tracker or cfg.tracker).rstrip("/")
    if not tracker or not cfg.node_secret:
        print(
            "luckrig-node rules --update: needs a tracker and this rig's node secret (the tracker hands its rules to "
            "registered rigs only; run `luckrig-node join` once, or give --tracker for the one the rig joined)",
            file=sys.stderr,
        )
        return 2
    try:
        version, rules = fetch(tracker, cfg.node_secret)
    except RulesError as exc:
        print(
            f"luckrig-node rules --update: {exc}. The rules in force are unchanged: {describe(cached)}.",
            file=sys.stderr,
        )
        return 1
    kept = save(cfg.state_dir, tracker=tracker, version=version, rules=rules)
    print(f"Filter rules: {describe(kept)} ({len(rules)} rule(s)).")
    print("A running local rig applies them within 10 s; any other agent from its next start.")
    return 0
