"""`/models/<model_key>/`: every listed rig serving one model (issue 14), rarest first like the home page, how
many of them are live, and the "Use from code" box that routes by that model. A model is a normalised model name
(nodes.model_names, the key the gateway routes by), so rigs that register `SmolLM2-135M-Instruct` and
`/models/SmolLM2-135M-Instruct-Q8_0.gguf` stand on one page. The key is computed, not stored: one grouped query
finds the model names that normalise to it (and how many rigs of each are live), a second reads one page of them,
a third where the gateway is. Three queries however many rigs; the wanted models shown below the rigs (nodes.wanted)
are counted from the first query's rows."""

from collections import Counter

from django.db.models import Count
from django.db.models.fields.json import KeyTextTransform
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from core import paging
from core.api_errors import ApiError
from nodes import model_names, wanted
from nodes.models import Node
from nodes.public_node import public_node, public_rows
from showcase import display, script_strings, use_code

PAGE_SIZE = 24
LIVE_STATUSES = ("available", "busy")


def _groups() -> list[dict]:
    """Every listed rig's model name, status and reported file, grouped: {model_name, status, sha256, n} (one
    query). The file's sha256 is for the wanted models below the rigs (nodes.wanted), counted from these rows."""
    rows = (
        Node.objects.listed()
        .order_by()
        .values("model_name", "status", sha256=KeyTextTransform("sha256", "model_identity"))
        .annotate(n=Count("id"))
    )
    return list(rows)


def _wanted(groups: list[dict]) -> list[dict]:
    """The wanted models, counted from the grouped rows as GET /api/models/wanted counts (listed, live, by file)."""
    counts = Counter()
    for g in groups:
        if g["status"] in LIVE_STATUSES and g["sha256"]:
            counts[g["sha256"]] += g["n"]
    return wanted.from_counts(counts)


@require_GET
def model_detail(request, model_key):
    groups = _groups()
    by_key: dict[str, list[dict]] = {}
    for g in groups:
        by_key.setdefault(model_names.model_key(g["model_name"]), []).append(g)
    if model_key not in by_key:
        # Another spelling of a model on offer (`SmolLM2-135M-Instruct`) or an alias (`smollm2`): its own page.
        key = model_names.model_key(model_key)
        key = key if key in by_key else model_names.ALIASES.get(key, "")
        if key in by_key and use_code.linkable(key):
            return redirect("showcase:model-detail", model_key=key)
        raise Http404("no listed rig serves this model")
    mine = by_key[model_key]
    names = sorted({g["model_name"] for g in mine})
    total = sum(g["n"] for g in mine)
    live = sum(g["n"] for g in mine if g["status"] in LIVE_STATUSES)
    error = None
    try:
        number = paging.page_number(request.GET)
    except ApiError as exc:
        error, number = exc.message, 1
    page = paging.Page(number, PAGE_SIZE, total)
    rows = Node.objects.listed().filter(model_name__in=names).in_default_order()
    aliases = tuple(sorted(a for a, k in model_names.ALIASES.items() if k == model_key))
    context = {
        "model_key": model_key,
        "names": names,
        "count": total,
        "live": live,
        "cards": [display.card(public_node(r)) for r in page.rows(public_rows(rows))],
        "box": use_code.for_model(key=model_key, url=use_code.base_url(), live=live, aliases=aliases),
        "error": error,
        **paging.pager(request, page),
        "js_strings": script_strings.js_strings(),
        "wanted": _wanted(groups),
    }
    return render(request, "showcase/model.html", context, status=400 if error else 200)
