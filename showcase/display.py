"""How a PublicNode reads on the site: display values derived from the API shape (pure, no queries), the
comparison table, and the strings the page scripts show (translated on the server, handed over as JSON)."""

import re
from datetime import datetime

from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext, pgettext_lazy

from tracker.management.commands.seed_demo import DEMO_OWNER_ID

FILTER_NAMES = ("status", "model", "gpu", "quantization", "min_vram", "min_ctx", "tag", "order")
AXES = ("existence", "rarity", "usage", "discovery", "note")
AXIS_MAX = {"existence": 10, "rarity": 6, "usage": 20, "discovery": 20, "note": 10}
# The score's components and tiers are API words (`contribution.components`, `tier`); the site names them in the
# visitor's language.
AXIS_LABELS = {
    "existence": gettext_lazy("existence"),
    "rarity": gettext_lazy("rarity"),
    "usage": gettext_lazy("usage"),
    "discovery": gettext_lazy("discovery"),
    "note": gettext_lazy("note"),
}
TIER_LABELS = {"limited": pgettext_lazy("tier", "Limited"), "contributor": pgettext_lazy("tier", "Contributor")}
# The showcase badges are stored in English on the node (the API's words); the site shows them translated.
BADGE_LABELS = {
    "lowest_vram": gettext_lazy("Lowest VRAM"),
    "cpu_rig": gettext_lazy("CPU rig"),
    "apple_silicon": gettext_lazy("Apple silicon"),
    "largest_context": gettext_lazy("Largest context"),
    "oldest_gpu_generation": gettext_lazy("Oldest GPU generation"),
    "rarest_combination": gettext_lazy("Rarest combination"),
}
ORDER_LABELS = {
    "rarity": gettext_lazy("rarest first"),
    "recent": gettext_lazy("newest first"),
    "tok_per_sec": gettext_lazy("fastest measured first"),
    "context": gettext_lazy("longest context first"),
}
STATUS_LABELS = {
    "available": gettext_lazy("available"),
    "busy": gettext_lazy("busy"),
    "unavailable": gettext_lazy("unavailable"),
    "unknown": gettext_lazy("unknown"),
}
# How tasters reach a rig (PublicNode `reachability`), with the one-sentence explanation shown beside it.
REACHABILITY_LABELS = {
    "direct": gettext_lazy("direct"),
    "relayed": gettext_lazy("relayed"),
}
REACHABILITY_HELP = {
    "direct": gettext_lazy("Direct: tasters call the rig's own URL."),
    "relayed": gettext_lazy(
        "Relayed: the rig's agent dials out to a relay, so the rig needs no open port. Tasters call the relay, "
        "which carries each request to the rig; like the rig's operator, the relay can read plain-mode prompts."
    ),
}


# The content categories of the built-in filter rules (moderation's migrations, node_agent/policy.py), as the
# rig page names them; an operator's own category is shown as its id.
FILTER_CATEGORY_LABELS = {
    "csam": gettext_lazy("sexual content involving minors"),
    "terrorism": gettext_lazy("terrorism"),
    "mass_violence": gettext_lazy("mass violence"),
    "weapons": gettext_lazy("weapons capable of mass harm"),
    "nsfw-explicit": gettext_lazy("explicit sexual content"),
}
MAX_FILTER_CATEGORIES = 20


def filter_categories(telemetry) -> list[str] | None:
    """What the rig's agent says it filters (`telemetry.filter_categories` from its heartbeats), as labels;
    None when it never said. The agent's words are untrusted: only short strings, at most 20, each once.
    A comma-separated string counts as a list (telemetry values are flat unless the tracker allows lists)."""
    raw = telemetry.get("filter_categories") if isinstance(telemetry, dict) else None
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list):
        return None
    ids = [item.strip() for item in raw if isinstance(item, str) and 0 < len(item.strip()) <= 64]
    unique = list(dict.fromkeys(ids))[:MAX_FILTER_CATEGORIES]
    return [FILTER_CATEGORY_LABELS.get(category, category) for category in unique]


def vram_label(vram_gb) -> str:
    if vram_gb is None:
        return "—"
    if vram_gb == 0:
        return _("shared / CPU")
    return f"{vram_gb:g} GB"


def sharing_count(node: dict) -> int | None:
    """How many listed rigs share this GPU + model + quantization, recovered from the stored rarity score
    (1 / n plus the documented bonuses), so that the list needs no extra query."""
    base = node["rarity_score"] - (0.15 if "showcase" in node["tags"] else 0.0)
    if node["vram_gb"] is not None and node["vram_gb"] <= 8:
        base -= 0.05
    if base <= 0:
        return None
    return max(1, round(1 / base))


def when(iso_text: str | None) -> str:
    """`2026-12-02T01:28:54.198Z` → `2026-12-02 01:28 UTC` (times on the site are UTC, said so)."""
    return f"{iso_text[:10]} {iso_text[11:16]} UTC" if iso_text else "—"


# Vendor words that add nothing to a title: "NVIDIA GeForce RTX 5090" reads as "RTX 5090".
_VENDOR_NOISE = re.compile(r"\((r|tm)\)|\b(nvidia|geforce|amd|radeon|intel|graphics)\b\s*", re.IGNORECASE)


def short_gpu(gpu: str) -> str:
    """The GPU as people say it ("RTX 5090", "RX 7900 XTX", "Apple M3 Max"); the raw name when nothing is left."""
    short = re.sub(r"\s{2,}", " ", _VENDOR_NOISE.sub("", gpu or "")).strip(" -·")
    return short or (gpu or "").strip()


def human_title(node: dict) -> str:
    """The operator's display name, else "RTX 5090 · Qwen3-35B-A3B"."""
    if node["display_name"]:
        return node["display_name"]
    parts = [p for p in (short_gpu(node["gpu"]), node["model_name"]) if p]
    return " · ".join(parts) or node["id"]


def rarity_line(shared: int | None) -> str:
    """One line on why the rig is rare, only when it is: the only one of its GPU, model and quant, or one of two.
    A common combination gets no line (repeating a score on every card said nothing)."""
    if shared == 1:
        return _("The only rig with this GPU, model and quant")
    if shared == 2:
        return _("One of only two rigs with this GPU, model and quant")
    return ""


def ago(iso_text: str | None) -> str:
    """`2026-11-23T00:00:00Z` → "13 days" (Django's timesince, in the visitor's language); "" when never."""
    if not iso_text:
        return ""
    try:
        then = datetime.fromisoformat(iso_text.replace("Z", "+00:00"))
    except ValueError:
        return ""
    return timesince(then, depth=1)


def hour_ranges(hours) -> str:
    """Sorted UTC hours as ranges: [0, 1, 18, 19, 23] → "18:00–20:00, 23:00–02:00 UTC" (a run may wrap past
    midnight; each range ends where its last hour ends)."""
    chosen = sorted(set(hours))
    if not chosen:
        return ""
    if len(chosen) == 24:
        return _("all day")
    runs: list[list[int]] = []
    for hour in chosen:
        if runs and hour == runs[-1][-1] + 1:
            runs[-1].append(hour)
        else:
            runs.append([hour])
    if len(runs) > 1 and runs[0][0] == 0 and runs[-1][-1] == 23:  # 23 then 0: one run across midnight
        runs[-1] += runs.pop(0)
    return ", ".join(f"{run[0]:02d}:00–{(run[-1] + 1) % 24:02d}:00" for run in runs) + " UTC"


def card(node: dict) -> dict:
    """The PublicNode plus what the templates show."""
    components = node["contribution"]["components"] or {}
    shared = sharing_count(node)
    timing = node["community_timing"]
    queue = node["queue"]
    status = node["health"]["status"]
    is_demo = node["owner"]["id"] == DEMO_OWNER_ID
    return {
        **node,
        "title": human_title(node),
        "gpu_short": short_gpu(node["gpu"]),
        # A demo listing (manage.py seed_demo) is an example from the proof of concept: no agent answers it,
        # so the site says so and offers no tasting.
        "is_demo": is_demo,
        "tastable": status in ("available", "busy") and not is_demo,
        "rarity_line": rarity_line(shared),
        "badges": [{**b, "label": BADGE_LABELS.get(b.get("id"), b.get("label"))} for b in node["showcase"]],
        "created_label": when(node["created_at"]),
        "last_seen_label": when(node["health"]["last_seen_at"]),
        "last_seen_ago": ago(node["health"]["last_seen_at"]),
        "status": node["health"]["status"],
        "status_label": STATUS_LABELS.get(node["health"]["status"], node["health"]["status"]),
        "tier_label": TIER_LABELS.get(node["contribution"]["tier"], node["contribution"]["tier"]),
        "reach_label": REACHABILITY_LABELS.get(node["reachability"], node["reachability"]),
        "reach_help": REACHABILITY_HELP.get(node["reachability"], ""),
        "vram_label": vram_label(node["vram_gb"]),
        "circle_only_label": hour_ranges(node.get("circle_only_hours") or ()),
        "ctx_label": f"{node['context_length']:,}" if node["context_length"] else "—",
        "sharing": shared,
        "scarcity_label": (
            _("the only rig with this GPU, model and quant")
            if shared == 1
            else _("1 of %(n)d rigs with this GPU, model and quant") % {"n": shared}
            if shared
            else ""
        ),
        "axes": [
            {
                "name": axis,
                "label": AXIS_LABELS[axis],
                "value": components.get(axis, 0) or 0,
                "percent": min(100, round(100 * (components.get(axis, 0) or 0) / AXIS_MAX[axis])),
            }
            for axis in AXES
        ],
        "tok_per_sec": f"{timing['tok_per_sec_p50']:.1f}" if timing["tok_per_sec_p50"] is not None else None,
        "ttft_ms": f"{timing['ttft_ms_p50']:.0f}" if timing["ttft_ms_p50"] is not None else None,
        "samples": timing["samples_count"],
        "relay_samples": (timing.get("by_source") or {}).get("relay", 0),
        "queue_line": queue_line(queue["active"], queue["waiting"], queue["max_active"]),
        "fill": fill_levels(queue["active"], queue["max_active"]),
        "uptime_24h": f"{100 * node['health']['uptime_ratio_24h']:.0f}%"
        if node["health"]["uptime_ratio_24h"] is not None
        else "—",
    }


def fill_levels(active: int, max_active: int) -> dict:
    """A <meter>'s bounds for a rig's slots in use, so that the browser colours it by fullness: green up to half
    the slots, amber above, red once every slot generates (optimum 0: an idle rig is the best case). `high` sits
    half a slot below the maximum so that only a full rig is past it. live.js applies the same rule."""
    top = max(1, max_active)
    return {"low": top / 2, "high": top - 0.5, "full": bool(max_active) and active >= max_active}


def queue_line(active: int, waiting: int, max_active: int) -> str:
    if not max_active:
        return _("queue: no report from the agent yet")
    return _("queue: %(active)d of %(max)d generating, %(waiting)d waiting") % {
        "active": active,
        "max": max_active,
        "waiting": waiting,
    }


def compare_rows(nodes: list[dict]) -> list[dict]:
    """One row per compared property; `differs` marks rows whose values are not all the same."""
    spec = [
        (_("Status"), lambda n: str(n["status_label"])),
        (_("Reachability"), lambda n: str(n["reach_label"])),
        (_("Model"), lambda n: n["model_name"]),
        (_("Quantization"), lambda n: n["quantization"]),
        (_("LoRA"), lambda n: n["lora"] or "—"),
        (_("GPU"), lambda n: n["gpu"]),
        (_("VRAM"), lambda n: n["vram_label"]),
        (_("Context length"), lambda n: n["ctx_label"]),
        (_("Scarcity"), lambda n: f"{n['rarity_score']:.2f}"),
        (_("Community tok/s (p50)"), lambda n: n["tok_per_sec"] or "—"),
        (_("Community TTFT ms (p50)"), lambda n: n["ttft_ms"] or "—"),
        (_("Timing samples"), lambda n: str(n["samples"])),
        (_("Uptime 24 h"), lambda n: n["uptime_24h"]),
        (_("Contribution"), lambda n: f"{n['contribution']['total']:.1f}"),
        (_("Tags"), lambda n: ", ".join(n["tags"]) or "—"),
        (_("Owner"), lambda n: n["owner"]["handle"] or n["owner"]["id"]),
        (_("Tuning note"), lambda n: n["tuning_note"] or "—"),
    ]
    rows = []
    for label, get in spec:
        values = [get(n) for n in nodes]
        rows.append({"label": label, "values": values, "differs": len(set(values)) > 1})
    return rows


def mixed_content_notice(node: dict, page_is_https: bool) -> str | None:
    """Why the browser cannot taste this rig from this page, or None. Browsers refuse plain-http calls from an
    https page; for a direct rig that URL is the rig's own, for a relayed one it is its relay's (an https relay
    makes any relayed rig tastable, whatever the rig's own network)."""
    url = node["endpoint_url"] or ""
    if not (page_is_https and url.lower().startswith("http:")):
        return None
    return mixed_content_sentences()["relayed" if node["reachability"] == "relayed" else "direct"]


def mixed_content_sentences() -> dict:
    """The refusal by reachability: the page's notice and the tasting panel's check say the same thing."""
    return {
        "direct": _(
            "This rig's endpoint is plain http, which browsers refuse to call from this https page. Taste it from "
            "the command line (luckrig-node taste) instead."
        ),
        "relayed": _(
            "This rig is tasted through its relay, and the relay's address is plain http, which browsers refuse "
            "to call from this https page. Taste it from the command line (luckrig-node taste) instead."
        ),
    }


def replay_payload(replay) -> dict:
    """What the replay player needs, as JSON for the page (never executed: a json_script block)."""
    return {
        "id": replay.pk,
        "node_id": replay.node_id,
        "created_at": replay.created_at.isoformat().replace("+00:00", "Z") if replay.created_at else None,
        "prompt": replay.prompt,
        "messages": replay.messages,
        "response": replay.response,
        "chunk_timestamps": replay.chunk_timestamps,
        "chunks": replay.chunks or None,
        "timing": replay.timing,
    }


def js_strings() -> dict:
    """Sentences the page scripts show, in the visitor's language. Error codes from the tracker and the agent
    map to plain sentences here, so that a taster reads what happened, not a code."""
    return {
        "copied": _("Copied"),
        "copy_failed": _("Copy failed: select the text and copy it by hand."),
        "selected": _("Selected"),
        "copy_selected": _("Selected: press Ctrl+C (⌘C on a Mac) to copy it."),
        "live": _("● live"),
        "stale": _("live updates interrupted; the numbers shown may be old"),
        "queue_line": _("queue: %(active)s of %(max)s generating, %(waiting)s waiting"),
        "queue_none": _("queue: no report from the agent yet"),
        "queue_empty": _("Nobody is waiting."),
        "fill": _("%(active)s of %(max)s slots"),
        "fill_full": _("full"),
        "fill_none": _("no report yet"),
        "generating": _("generating"),
        "status_available": STATUS_LABELS["available"],
        "status_busy": STATUS_LABELS["busy"],
        "status_unavailable": STATUS_LABELS["unavailable"],
        "status_unknown": STATUS_LABELS["unknown"],
        "waiting": _("waiting"),
        "position": _("position %(n)s"),
        "eta": _("about %(s)s s for a new taster"),
        "eta_none": _("a slot is free: a new taster starts at once"),
        "getting_token": _("Getting a tasting token…"),
        "connecting": _("Connecting to the rig…"),
        "queued": _("Waiting for the rig: position %(n)s in its queue, about %(s)s s."),
        "generating_now": _("The rig is answering…"),
        "decrypting": _("The encrypted answer arrived; opening it in this browser…"),
        "pk_key_mismatch": _(
            "Refused: the key in the token does not match the fingerprint this page shows. Do not use public-key "
            "mode with this rig until the fingerprint is checked."
        ),
        "pk_open_failed": _("The rig's encrypted answer could not be opened here (%(reason)s)."),
        "done": _("Done."),
        "empty_answer": _("The rig finished without writing anything (an empty answer). Try again or rephrase."),
        "ttft": _("time to first token"),
        "tps": _("tokens per second"),
        "queue_wait": _("queue wait"),
        "tokens": _("output tokens"),
        "measured_here": _("measured by this browser from chunk arrival times"),
        "ack_required": _("Tick the box to confirm you understand who can read your prompt."),
        "prompt_required": _("Write a prompt first."),
        # Both forms of each count (site.js cannot pluralise): pick "one" when n is 1, else "other".
        "shared": {
            "one": ngettext(
                "Timing shared. The community numbers now have %(n)s sample.",
                "Timing shared. The community numbers now have %(n)s samples.",
                1,
            ),
            "other": ngettext(
                "Timing shared. The community numbers now have %(n)s sample.",
                "Timing shared. The community numbers now have %(n)s samples.",
                2,
            ),
        },
        "shared_pending": _(
            "Timing shared. It counts once the rig reports this tasting to the tracker, usually within seconds."
        ),
        "published": _("Published: "),
        "key_created": _("Your contributor key (shown once; it is saved in this browser):"),
        "key_saved": _("Key saved in this browser."),
        "key_forgotten": _("Key removed from this browser."),
        "no_key": _("No contributor key in this browser yet."),
        # My rigs (my_rigs.js)
        "my_loading": _("Loading the rigs this key owns…"),
        "my_count": _("%(n)s rig(s) owned by %(who)s. Change a field and save: only what changed is sent."),
        "my_none": _("%(who)s owns no rig yet: join one with luckrig-node join (the Contribute page shows how)."),
        "my_saving": _("Saving…"),
        "my_saved": _("Saved. %(changes)s"),
        "my_unchanged": _("Nothing to save: the form says what the rig already says."),
        "my_fix": _("Not saved: see the field marked above."),
        "my_bad_number": _("Enter a number here, or leave it empty."),
        "my_none_value": _("(none)"),
        "my_network_error": _("Could not reach the tracker; nothing was saved. Try again."),
        # A circle rig made public or unlisted (POST /api/nodes/<id>/publish), by its own button in My rigs.
        "my_publish": {
            "public": {
                "said": _(
                    "Made public, this rig appears on the public list and anyone may taste it. The circles it is "
                    "shared with stay, and their members keep going first in its queue."
                ),
                "button": _("Make this rig public"),
                "confirm": _("Press again to make it public"),
                "done": _("The rig is public now: it is on the public list, and its circles keep going first."),
            },
            "unlisted": {
                "said": _(
                    "Made unlisted, this rig stays off the public list but anyone with its link may taste it. The "
                    "circles it is shared with stay, and their members keep going first in its queue."
                ),
                "button": _("Make this rig unlisted"),
                "confirm": _("Press again to make it unlisted"),
                "done": _(
                    "The rig is unlisted now: anyone with its link may taste it, and its circles keep going first."
                ),
            },
        },
        "my_publish_first": _(
            "A circle rig is made public or unlisted with the button below, on its own; choose circle again to save "
            "the other fields."
        ),
        "unlocks": _(
            "Your tier gives %(requests)s requests per token, %(tokens)s output tokens per token and "
            "%(per_day)s tokens a day."
        ),
        "verify_ok": _("The key this rig serves matches the fingerprint the tracker lists."),
        "verify_bad": _("Mismatch: the rig serves a different key than the tracker lists. Do not use public-key mode."),
        "verify_error": _("Could not check: %(msg)s"),
        "file_bad": _("That file is not a LuckRig replay (schema_version 1 JSON)."),
        "network_error": _("Could not reach the rig (it may be offline or blocking this site)."),
        "mixed_content": mixed_content_sentences(),
        "no_endpoint": _("This rig has no relay carrying it right now, so it cannot be tasted. Try again later."),
        "stream_cut": _("The rig's stream ended before it finished."),
        "aborted": _("Stopped."),
        # Rig against rig (/compare/, arena.js).
        "arena": {
            "sending": _("Sent to %(n)s rigs; each answers in its own column."),
            "finished": _("%(ok)s of %(n)s rigs finished their answer."),
            "end_done": _("Done: the answer is complete."),
            "end_cut": _("Stream cut: the rig's answer stopped before it finished."),
            "end_refused": _("Refused: %(msg)s"),
            "end_stopped": _("Stopped by you."),
            "tps_final": _("%(tps)s (%(tokens)s tokens)"),
            "keep_needs_two": _("Keeping them as one replay needs at least two finished answers."),
            "publishing": _("Publishing %(n)s answers…"),
            "member_failed": _("This answer was not published: %(msg)s"),
            "kept": _("Kept as one replay: "),
            "kept_single": _("Only one answer could be published: "),
        },
        "max_tokens_help": _("1 to %(n)s (your token's output per answer); empty: up to that"),
        "max_tokens_range": _("Max tokens must be a whole number from 1 to %(n)s (your token's output per answer)."),
        "temperature_range": _("Temperature must be a number from 0 to 2."),
        # The notice under public-key mode when one panel serves several rigs (My circles: taste.js use()).
        "pk_notice": _(
            "Public-key mode keeps your prompt and the answer out of proxies, logs and the tracker: only this browser "
            "and the rig can open them. The rig decrypts your prompt, and its operator can read it there. Compare "
            "the rig's key fingerprint %(fp)s with one the operator gives you another way, or the tracker could "
            "swap keys."
        ),
        "turn_left_out": _("This turn is left out of the conversation: the next message is sent without it."),
        "token_timing_used": _(
            "This turn shares its token with another turn whose timing was already shared: the tracker takes one "
            "timing per token."
        ),
        "replay_roles": {"user": _("Taster"), "assistant": _("Rig")},
        "token_replay_used": _(
            "This turn shares its token with another turn that was already published: the tracker takes one "
            "replay per token. That replay holds the conversation up to its turn."
        ),
        "errors": {
            "node_unavailable": _("This rig is not serving right now (no recent heartbeat). Try another rig."),
            "node_not_found": _("This rig is gone (removed or taken down)."),
            "banned": _("You cannot taste here: you or your address are banned (%(reason)s, until %(until)s)."),
            "ip_rate_limited": _("Too many tokens from this address just now; try again in %(wait)s (at %(at)s)."),
            "quota_exceeded": _(
                "Today's tasting quota for your tier is used up; it resets at 00:00 UTC, in %(wait)s (%(at)s here)."
            ),
            "invalid_token": _("The rig refused the token (invalid or expired). Get a new one."),
            "wrong_node": _("The token is for another rig."),
            "token_exhausted": _(
                "This token's requests or output are used up; a new token, within your daily quota, has its own."
            ),
            "queue_full": _("The rig's queue is full; a place opens in about %(wait)s (at %(at)s)."),
            "token_busy": _("This token already has requests in the rig's queue; try again in about %(wait)s."),
            "prompt_filtered": _("The rig's filter rules refused this prompt (%(msg)s)."),
            "moderation_blocked": _("The rig's moderation check refused this prompt, or could not run."),
            "upstream_error": _("The rig's model server failed while answering."),
            "upstream_unavailable": _("The rig's model server is down."),
            "already_uploaded": _("This tasting's timing was already shared."),
            "invalid_subtext": _("The rig could not read the encrypted prompt (%(msg)s)."),
            "plaintext_not_allowed": _("The rig expected an encrypted prompt in public-key mode."),
            "public_key_mode_unavailable": _("This rig does not offer public-key mode right now."),
            "invalid_public_key": _("The tracker refused this browser's public key (%(msg)s)."),
            "content_filtered": _("The tracker's filter rules refused to publish this text (%(msg)s)."),
            "not_owner": _("Only the rig's owner may change it, and this key does not own it."),
            "unauthorized": _("The tracker does not know this contributor key (%(msg)s)."),
            # Keeping rig against rig (arena.js): what POST /api/replays and /api/replay-sets can refuse.
            "not_publisher": _("This answer's tasting key does not match its published replay; it cannot be kept."),
            "already_in_set": _("One of these answers is already kept in another set."),
            "prompts_differ": _("These answers were not given to the same prompt, so they cannot be kept together."),
            "already_published": _(
                "This answer's token was already published (rounds that share a token share its one replay)."
            ),
            "replay_not_found": _("One of these answers is no longer published (taken down, or its rig is)."),
            # Circles (issue 15): tokens for a circle's rigs, and the circle pages' own requests.
            "circle_limit_reached": _(
                "Your daily limit in this circle, set by its owner, is used up (requests a day: %(requests_per_day)s; "
                "tokens a day: %(tokens_per_day)s). It resets at 00:00 UTC, in %(wait)s (%(at)s here)."
            ),
            "not_in_circle": _("This rig is shared with a circle, and this contributor key is not in it."),
            "membership_paused": _("The circle's owner has paused your membership: no tasting its rigs for now."),
            "circle_only_now": _(
                "This rig is for its circle only right now; it opens to everyone again in %(wait)s (at %(at)s)."
            ),
            "circle_not_found": _("This circle is gone (deleted, or its owner is banned)."),
            "circle_exists": _("You already have a circle by that name."),
            "not_circle_owner": _("Only the circle's owner may do that."),
            "owner_cannot_leave": _("The owner cannot leave their own circle: delete the circle instead."),
            "already_member": _("You are already in this circle."),
            "invite_gone": _("This invite link no longer works. Ask the circle's owner for a new one."),
            "invite_not_found": _("There is no such invite link: check that it was copied whole."),
            "publish_required": _("Making a circle rig public is a separate step (POST /api/nodes/<id>/publish)."),
            "rate_limited": _("Too many of these just now; try again in %(wait)s (at %(at)s)."),
            "unknown": _("Something went wrong (%(code)s): %(msg)s"),
        },
        # What a 429 adds for a taster below the contributor tier (site.js explain()); the numbers are on Contribute.
        "earn_more": _(
            "The contributor tier gives more tokens a day, more requests and output per token and a place ahead in "
            "every rig's queue. It is earned, not bought: share a rig that others taste, or timing from your "
            "tastings, with a contributor key (see Contribute)."
        ),
        "wait_h_min": _("%(h)s h %(m)s min"),
        "wait_min": _("%(m)s min"),
        "wait_s": _("%(s)s s"),
        "wait_now": _("a moment"),
    }
