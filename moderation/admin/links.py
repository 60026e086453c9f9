"""Links from a moderation row to its subject's admin page: a node, a contributor, a replay or a set of replays
(`not found` when the subject is gone)."""

from django.apps import apps
from django.contrib.admin.utils import quote
from django.urls import reverse
from django.utils.html import format_html

from nodes.models import Contributor, Node


def subject_link(kind: str, value: str):
    if kind in ("node_id", "node") and Node.objects.filter(pk=value).exists():
        return format_html('<a href="{}">node {}</a>', reverse("admin:nodes_node_change", args=[quote(value)]), value)
    if kind in ("contributor_id", "contributor"):
        contributor = Contributor.objects.filter(pk=value).first() or Contributor.objects.filter(handle=value).first()
        if contributor:
            return format_html(
                '<a href="{}">contributor {}</a>',
                reverse("admin:nodes_contributor_change", args=[quote(contributor.pk)]),
                contributor,
            )
    if kind in ("content_id", "replay") and value:
        # showcase owns Replay and ReplaySet and sits above moderation: found through the app registry, never
        # imported. A content id is a replay (`rp_…`) or a rig-against-rig set of replays (`rs_…`).
        for model, word in (("Replay", "replay"), ("ReplaySet", "replay set")):
            rows = apps.get_model("showcase", model)
            if rows.objects.filter(pk=value[:20]).exists():
                change = f"admin:showcase_{model.lower()}_change"
                return format_html('<a href="{}">{} {}</a>', reverse(change, args=[quote(value[:20])]), word, value)
    return format_html("{} {} (not found)", kind, value) if value else "-"
