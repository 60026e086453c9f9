"""The relays in the Django admin (staff): which are live, what they last reported. Read-only: relays are
registered, rotated and removed with `manage.py relay`, which makes the secrets and moves a removed relay's
nodes. The secret hash is never shown. (Nodes are in the moderators' workspace, moderation/admin/subjects.py.)"""

from django.contrib import admin
from django.utils import timezone

from nodes.models import Relay


@admin.register(Relay)
class RelayAdmin(admin.ModelAdmin):
    list_display = ["id", "public_url", "live", "last_heartbeat_at", "tunnels", "open_streams", "draining", "version"]
    list_filter = ["draining"]
    search_fields = ["id", "public_url"]
    fields = [
        "id",
        "public_url",
        "live",
        "created_at",
        "last_heartbeat_at",
        "tunnels",
        "open_streams",
        "draining",
        "version",
        "assigned_nodes",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # `manage.py relay add` makes the secret

    def has_delete_permission(self, request, obj=None):
        return False  # `manage.py relay remove` also moves the relay's nodes

    @admin.display(boolean=True, description="live")
    def live(self, obj):
        """A heartbeat in the last minute and not draining: rendezvous assigns nodes to it."""
        return obj.is_live(timezone.now())

    @admin.display(description="assigned nodes")
    def assigned_nodes(self, obj):
        return obj.nodes.count()
