"""How a PublicNode reads on the site: display values derived from the API shape (pure, no queries), the
comparison table and the replay player's payload. The page scripts' sentences are in script_strings.py."""

import re
from datetime import datetime

from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, pgettext_lazy

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
