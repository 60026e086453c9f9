"""The public website: the list of rigs, one rig, the live queue map, contributing, replays and the trust model
(the comparison, rig against rig and the replay lists are in arena_views, a model's page in model_views). Plain
function views over the same stored rows as the API (`nodes.public_node`), so that a page costs a fixed number of
queries however many rigs there are."""

from django.conf import settings
from django.contrib import messages
from django.db.models import Count
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_ratelimit.core import is_ratelimited
from rest_framework.exceptions import ValidationError

from core import paging
from core.api_errors import ApiError, _first_error
from core.clientip import ip_hash, ratelimit_key
from moderation import services as moderation_services
from moderation.api import AbuseReportIn
from nodes import model_names, queries
from nodes.models import Node
from nodes.public_node import public_node, public_node_of, public_rows
from showcase import coverage, display, earning, rig_fields, rig_health, script_strings, use_code
from showcase.models import Replay
from tracker import tiers

SITE_PAGE_SIZE = 24
QUEUE_MAP_LIMIT = 500
LIVE_STATUSES = ("available", "busy")
LIVE_SHELF = 6  # rigs on the home page's "live now" shelf


def _summary() -> dict:
    """The status counts and what the network covers (showcase.coverage), in one grouped query over every
    listed rig: a group per distinct GPU, model, quant, VRAM and status, however many rigs share it."""
    rows = (
        Node.objects.listed()
        .order_by()
        .values("gpu", "model_name", "quantization", "vram_gb", "status")
        .annotate(n=Count("id"))
    )
    return coverage.summarize(list(rows))


def _live_cards(query) -> list[dict]:
    """The "live now" shelf: the rigs serving right now (available or busy) among those the filters keep, in the
    list's order (rarest first by default), in one query."""
    live = queries.apply(query, Node.objects.listed()).filter(status__in=LIVE_STATUSES)
    return [display.card(public_node(r)) for r in public_rows(live)[:LIVE_SHELF]]


MODEL_LINKS = 5  # model pages the filter form links to when its model filter matches several


def _model_links(model_filter: str, key_of: dict) -> list[str]:
    """The model pages a model filter points at: the keys of the listed models whose name contains it (as the
    filter does), most specific first, at most MODEL_LINKS."""
    needle = model_filter.strip().lower()
    if not needle:
        return []
    wanted = model_names.model_key(needle)
    keys = {k for name, k in key_of.items() if (needle in name.lower() or k == wanted) and use_code.linkable(k)}
    return sorted(keys, key=lambda k: (len(k), k))[:MODEL_LINKS]


def _active_filters(request) -> int:
    """How many filters narrow the list (the default order is not one), for the folded filter form."""
    return sum(
        1
        for k in display.FILTER_NAMES
        if request.GET.get(k, "").strip() and not (k == "order" and request.GET[k] == "rarity")
    )


@require_GET
def index(request):
    error = None
    params = request.GET.copy()
    params.setdefault("page_size", str(SITE_PAGE_SIZE))
    try:
        query = queries.parse_list_query(params)
    except ApiError as exc:
        error, query = exc.message, queries.parse_list_query({"page_size": str(SITE_PAGE_SIZE)})
    qs = queries.apply(query, Node.objects.listed())
    page = paging.Page(query.page, query.page_size, qs.count() if error is None else 0)
    summary = _summary()
    context = {
        "cards": [display.card(public_node(r)) for r in page.rows(public_rows(qs))],
        "count": page.count,
        "summary": summary["counts"],
        "coverage": summary,
        "live_cards": _live_cards(query),
        "model_links": _model_links(request.GET.get("model", ""), summary["model_keys"]),
        "active_filters": _active_filters(request),
        "filters": {k: request.GET.get(k, "") for k in display.FILTER_NAMES},
        "statuses": list(display.STATUS_LABELS.items()),
        "orders": [(o, display.ORDER_LABELS.get(o, o)) for o in queries.ORDERS],
        "error": error,
        **paging.pager(request, page),
        "js_strings": script_strings.js_strings(),
    }
    return render(request, "showcase/index.html", context, status=400 if error else 200)


def _visible_node(node_id: str) -> Node:
    node = Node.objects.visible_by_id(node_id)
    if node is None:
        raise Http404("no such rig")
    return node


@require_GET
def node_detail(request, node_id):
    node = _visible_node(node_id)
    data = display.card(public_node_of(node))
    key = model_names.model_key(node.model_name)
    context = {
        "node": data,
        # The model's page lists listed rigs only: an unlisted rig's model may have none.
        "model_key": key if node.is_listed and use_code.linkable(key) else None,
        "box": use_code.for_rig(
            node_id=node.id,
            url=use_code.base_url(),
            is_demo=data["is_demo"],
            is_listed=node.is_listed,
            serving=data["tastable"] and bool(data["endpoint_url"]),
        ),
        **rig_health.context(node),  # the uptime and timing charts (one query)
        "filter_categories": display.filter_categories(node.telemetry),
        "replays": Replay.objects.public().filter(node=node).order_by("-published_at")[:20],
        "queue_entries": node.queue_entries,
        "queue_eta_sec": node.queue_eta_sec,
        "report_kinds": [("node_id", node.id)],
        "js_strings": script_strings.js_strings(),
        # Said on the page itself too (the panel checks again before spending a token).
        "mixed_content": display.mixed_content_notice(data, request.is_secure()),
        "taste_config": {
            "node_id": node.id,
            # What tasters call: the rig's own URL, or its relay's (a relayed node stores no URL of its own).
            "endpoint_url": data["endpoint_url"],
            "reachability": data["reachability"],
            "model_name": node.model_name,
            "status": node.status,
            "fingerprint": node.node_public_key_fingerprint,
            # The longest answer a request may ask for (max_tokens), before a token says it exactly: the
            # anonymous tier's, or the contributor tier's when this browser holds a contributor key (its real
            # tier is known only once a token is issued; the agent clamps to the token's anyway).
            "output_cap": tiers.of(tiers.LIMITED).output_tokens_per_request,
            "output_cap_contributor": tiers.of(tiers.CONTRIBUTOR).output_tokens_per_request,
        },
    }
    return render(request, "showcase/node.html", context)


@require_GET
def queue_map(request):
    rows = [
        display.card(public_node(r)) for r in public_rows(Node.objects.listed().in_default_order())[:QUEUE_MAP_LIMIT]
    ]
    return render(request, "showcase/queue.html", {"rows": rows, "js_strings": script_strings.js_strings()})


@require_GET
def contribute(request):
    # The page states the limits through templates/showcase/_tiers.html; its script says what the visitor's own
    # tier unlocks from the same numbers (tracker.tiers, read from the settings).
    return render(
        request,
        "showcase/contribute.html",
        {
            "tiers": {tier.name: tier.as_dict() for tier in tiers.table()},
            "threshold": earning.num(settings.CONTRIBUTOR_THRESHOLD),
            "earn": earning.earning(),
            "js_strings": script_strings.js_strings(),
        },
    )


@require_GET
def my_rigs(request):
    """The rigs this browser's contributor key owns, each with a form that changes it through
    `PATCH /api/nodes/<id>`. The key lives in the visitor's localStorage only: the server renders no rig here,
    the page's script asks the API with the key."""
    context = {"fields": rig_fields.rig_fields(), "js_strings": script_strings.js_strings()}
    return render(request, "showcase/my_rigs.html", context)


@require_GET
def replay_detail(request, replay_id):
    replay = Replay.objects.public().select_related("node__owner", "node__relay").filter(pk=str(replay_id)[:40]).first()
    if replay is None:
        raise Http404("no such replay")
    return render(
        request,
        "showcase/replay.html",
        {
            "replay": replay,
            "node": display.card(public_node_of(replay.node)),
            "replay_data": display.replay_payload(replay),
            "report_kinds": [("content_id", replay.pk)],
            "js_strings": script_strings.js_strings(),
        },
    )


@require_GET
def replay_open(request):
    return render(request, "showcase/replay_open.html", {"js_strings": script_strings.js_strings()})


@require_GET
def trust(request):
    return render(request, "showcase/trust.html")


@require_POST
def report(request):
    """The report form on rig and replay pages (works without JavaScript; CSRF-protected). It files the same
    open report as `POST /api/abuse/report`, under the same per-IP limit, for a person to review."""
    back = request.POST.get("next", "")
    if not back.startswith("/") or back.startswith("//"):
        back = reverse("showcase:index")
    body = {k: request.POST.get(k, "") for k in ("subject_kind", "subject_id", "reason", "evidence")}
    data = AbuseReportIn(data=body)
    try:
        data.is_valid(raise_exception=True)
    except ValidationError as exc:
        field, message, _code = _first_error(exc.detail)
        messages.error(
            request,
            _("The report was not sent: %(field)s %(message)s") % {"field": field, "message": message},
            extra_tags="report",
        )
        return redirect(back + "#report")
    # While Redis is down the limit counts on this process's own counters (core.ratecache): never open.
    limited = is_ratelimited(
        request,
        group="abuse-report",
        key=ratelimit_key,
        rate=settings.RATE_ABUSE_REPORT,
        method="POST",
        increment=True,
    )
    if limited:
        messages.error(
            request,
            _("Too many reports from this address today; write to %(contact)s instead.")
            % {"contact": settings.ABUSE_CONTACT},
            extra_tags="report",
        )
        return redirect(back + "#report")
    filed = moderation_services.file_report(data.validated_data, reporter_hash=ip_hash(request))
    messages.success(
        request,
        _("Thank you. Report %(id)s will be reviewed by a person; nothing is banned automatically.") % {"id": filed.pk},
        extra_tags="report",  # shown beside the form, where the page lands (#report), not above the fold
    )
    return redirect(back + "#report")
