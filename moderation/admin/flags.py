"""Agents' moderation flags in the admin: what a rig's filter caught, who held the token (a contributor, or an
anonymous address shown by its label, never its hash), and the bans a flag can lead to."""

from django.contrib import admin
from django.db.models import OuterRef, Subquery

from moderation import services
from moderation.addresses import address_label
from moderation.admin.decisions import BAN, DecisionsNeedPermission, decision_action
from moderation.admin.links import subject_link
from moderation.models import ModerationFlag
from tracker.models import TastingToken


@admin.register(ModerationFlag)
class ModerationFlagAdmin(DecisionsNeedPermission, admin.ModelAdmin):
    list_display = ["created_at", "stage", "categories", "node_link", "contributor_link", "jti", "mode"]
    list_filter = ["stage"]
    search_fields = ["jti", "node__id"]
    actions = [
        decision_action(
            "Ban the token holder",
            lambda f, m, why, d: services.ban_flagged(flag=f, moderator=m, reason=why, days=d),
            with_days=True,
            needs=BAN,
        ),
        decision_action(
            "Ban the address",
            lambda f, m, why, d: services.ban_flagged(flag=f, moderator=m, reason=why, days=d, address=True),
            with_days=True,
            needs=BAN,
        ),
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # The flagged token's address hash, for its label (one query for the page, not one per row). Only a
        # token issued for the flag's own node counts, as in services.flagged_token.
        token = TastingToken.objects.filter(jti=OuterRef("jti"), node_id=OuterRef("node_id"))
        return super().get_queryset(request).annotate(token_ip_hash=Subquery(token.values("ip_hash")[:1]))

    @admin.display(description="node")
    def node_link(self, obj):
        return subject_link("node", obj.node_id)

    @admin.display(description="token holder")
    def contributor_link(self, obj):
        if obj.contributor_id:
            return subject_link("contributor", obj.contributor_id)
        ip_hash = getattr(obj, "token_ip_hash", None)
        if not ip_hash:
            return "unknown (no token with this jti was issued for this node)"
        return f"anonymous, {address_label(ip_hash)}"
