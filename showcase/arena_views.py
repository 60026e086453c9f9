"""Rig against rig and what it keeps: /compare/ (the table, the arena that sends one prompt to every compared
rig, and the picker when no rig is named), /replays/ (published replays and sets, newest first) and
/replays/sets/<id>/ (a set played side by side). Each page costs a fixed number of queries."""

from django.db.models import Exists, OuterRef, Q
from django.http import Http404
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from core import paging
from core.api_errors import ApiError
from nodes.models import Node
from nodes.public_node import public_node, public_node_of, public_rows
from showcase import arena, display, script_strings, services
from showcase.models import SET_MAX, Replay, ReplaySet

MAX_COMPARE = SET_MAX  # a compared set of rigs is what a replay set can keep
PICKER_LIMIT = 200
REPLAYS_PAGE_SIZE = 20
LIST_DEFERRED = ("response", "chunks", "chunk_timestamps", "system")  # a list shows prompts, rigs and timing only


def _compare_ids(request) -> list[str]:
    ids = []
    for value in request.GET.getlist("ids"):
        ids.extend(part.strip() for part in value.split(","))
    return list(dict.fromkeys(i[:64] for i in ids if i))


@require_GET
def compare(request):
    ids = _compare_ids(request)
    error = None
    if len(ids) > MAX_COMPARE:
        error = _("Compare at most %(n)d rigs at a time; the first %(n)d are shown.") % {"n": MAX_COMPARE}
        ids = ids[:MAX_COMPARE]
    found = {n.id: n for n in Node.objects.visible_by_ids(ids)}
    nodes = [display.card(public_node_of(found[i])) for i in ids if i in found]
    columns = arena.entries(nodes, request.is_secure())
    context = {
        "nodes": nodes,
        "rows": display.compare_rows(nodes),
        "missing": [i for i in ids if i not in found],
        "error": error,
        "columns": columns,
        "arena_config": arena.config(columns),
        "max_compare": MAX_COMPARE,
        "js_strings": script_strings.js_strings(),
    }
    if not nodes:
        listed = public_rows(Node.objects.listed().in_default_order())[:PICKER_LIMIT]
        context["picker"] = arena.picker([display.card(public_node(r)) for r in listed])
        context["picker_limit"] = PICKER_LIMIT
    return render(request, "showcase/compare.html", context)


def _rig_title(node: Node) -> str:
    return display.human_title({f: getattr(node, f) for f in ("id", "display_name", "gpu", "model_name")})


@require_GET
def replays(request):
    """Published replays, newest first. A listed set (ReplaySet.listed: two or more members shown, every one
    listed) stands once, where its first shown member would, with all its rigs; the listed members of any other
    set stand alone, as they do in GET /api/replays."""
    try:
        number = paging.page_number(request.GET)
    except ApiError:
        raise Http404("no such page") from None
    listed_sets = ReplaySet.objects.listed()
    earlier = Replay.objects.visible().filter(
        replay_set_id=OuterRef("replay_set_id"), set_position__lt=OuterRef("set_position")
    )
    entries = (
        Replay.objects.listed()
        .annotate(in_listed_set=Exists(listed_sets.filter(pk=OuterRef("replay_set_id"))))
        .filter(Q(in_listed_set=False) | ~Exists(earlier))
    )
    page = paging.Page(number, REPLAYS_PAGE_SIZE, entries.count())
    if page.start >= page.count and page.has_previous:
        raise Http404("no such page")
    rows = page.rows(entries.defer(*LIST_DEFERRED).order_by("-published_at", "-id"))
    set_ids = [r.replay_set_id for r in rows if r.in_listed_set]
    members: dict[str, list[Replay]] = {}
    for member in (
        Replay.objects.listed().defer(*LIST_DEFERRED).filter(replay_set_id__in=set_ids).order_by("set_position")
    ):
        members.setdefault(member.replay_set_id, []).append(member)
    items = [
        {
            "replay": row,
            "rig": _rig_title(row.node),
            "members": [(m, _rig_title(m.node)) for m in members[row.replay_set_id]]
            if row.replay_set_id in members
            else None,
        }
        for row in rows
    ]
    return render(
        request,
        "showcase/replays.html",
        {
            "items": items,
            "count": page.count,
            **paging.pager(request, page),
        },
    )


@require_GET
def replay_set_detail(request, set_id):
    try:
        replay_set, members = services.get_visible_replay_set(set_id)
    except ApiError:
        raise Http404("no such replay set") from None
    nodes = {n.id: n for n in Node.objects.filter(pk__in=[m.node_id for m in members]).select_related("owner", "relay")}
    players = [
        {
            "replay": m,
            "node": display.card(public_node_of(nodes[m.node_id])),
            "data": display.replay_payload(m),
            "source": f"lr-replay-{index}",
        }
        for index, m in enumerate(members)
    ]
    return render(
        request,
        "showcase/replay_set.html",
        {
            "replay_set": replay_set,
            "prompt": members[0].prompt,
            "system": members[0].system,
            # Every member shares its earlier turns (group_replays refuses `prompts_differ` otherwise): shown once.
            "earlier": [
                {"assistant": m.get("role") == "assistant", "content": m.get("content", "")}
                for m in members[0].messages
                if isinstance(m, dict)
            ],
            "players": players,
            "report_kinds": [("content_id", replay_set.pk)],
            "js_strings": script_strings.js_strings(),
        },
    )
