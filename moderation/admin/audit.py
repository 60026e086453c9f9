"""The audit log in the admin: every moderation decision, read-only and append-only."""

from django.contrib import admin

from moderation.models import ModerationAction


@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "moderator_name", "action", "subject_kind", "subject_id", "reason", "report"]
    list_filter = ["action", "subject_kind"]
    search_fields = ["subject_id", "moderator_name", "reason"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # append-only: a decision is corrected by a new decision, never by editing the record

    def has_delete_permission(self, request, obj=None):
        return False
