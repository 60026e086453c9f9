from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _install_list_versions(sender, using, **kwargs):
    """The node list's row versions (nodes.list_version), after every migrate, on SQLite and PostgreSQL: a
    migration that remakes a SQLite table drops its triggers and the column."""
    from django.db import connections

    from nodes import list_version

    list_version.install(connections[using])


class NodesConfig(AppConfig):
    name = "nodes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        post_migrate.connect(_install_list_versions, sender=self, dispatch_uid="nodes.list_version")
