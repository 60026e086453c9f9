"""Circles in the admin (issue 15), read-only: who owns a circle, who is in it, which rigs are shared with it and
which invites are out. Moderators act on the rigs and the people (takedown, ban: moderation/admin/subjects.py),
which hold inside circles too; circles themselves are their owners' to change. An invite's code hash is never
shown: the code is a bearer secret, and its hash would only help someone guess it."""

from django.contrib import admin

from nodes.models import Circle, CircleInvite, CircleMember


class ReadOnly:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MemberInline(ReadOnly, admin.TabularInline):
    model = CircleMember
    fields = ["contributor", "role", "status", "requests_per_day", "tokens_per_day", "joined_at", "invite"]
    readonly_fields = fields
    extra = 0


INVITE_FIELDS = [
    "id",
    "circle",
    "created_by",
    "created_at",
    "expires_at",
    "max_uses",
    "uses",
    "role",
    "requests_per_day",
    "tokens_per_day",
    "revoked_at",
]


class InviteInline(ReadOnly, admin.TabularInline):
    model = CircleInvite
    fields = [f for f in INVITE_FIELDS if f != "circle"]
    readonly_fields = fields
    extra = 0


@admin.register(Circle)
class CircleAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["id", "name", "owner", "created_at", "default_requests_per_day", "default_tokens_per_day"]
    search_fields = ["id", "name", "owner__id", "owner__handle"]
    fields = ["id", "name", "owner", "created_at", "default_requests_per_day", "default_tokens_per_day", "rigs"]
    readonly_fields = fields
    inlines = [MemberInline, InviteInline]

    @admin.display(description="rigs shared with it")
    def rigs(self, obj):
        return ", ".join(obj.nodes.order_by("id").values_list("id", flat=True)) or "-"


@admin.register(CircleMember)
class CircleMemberAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["contributor", "circle", "role", "status", "joined_at"]
    list_filter = ["role", "status"]
    search_fields = ["contributor__id", "contributor__handle", "circle__id", "circle__name"]
    fields = ["circle", "contributor", "role", "status", "requests_per_day", "tokens_per_day", "joined_at", "invite"]
    readonly_fields = fields


@admin.register(CircleInvite)
class CircleInviteAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["id", "circle", "created_by", "role", "uses", "max_uses", "expires_at", "revoked_at"]
    list_filter = ["role"]
    search_fields = ["id", "circle__id", "circle__name", "created_by__handle"]
    fields = INVITE_FIELDS  # never code_hash
    readonly_fields = fields
