"""Moderators may see circles, their members and their invites in the admin (read-only there for everyone):
who shares a rig they are looking at, and with whom. They act on rigs and people, which holds inside circles."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

CODENAMES = ["view_circle", "view_circlemember", "view_circleinvite"]


def _permissions(apps):
    Permission = apps.get_model("auth", "Permission")
    return Permission.objects.filter(content_type__app_label="nodes", codename__in=CODENAMES)


def grant(apps, schema_editor):
    # The permissions of nodes' models only: on a database being upgraded, other apps may still be mid-way (the
    # contributor's move from tracker to nodes), and their stale content types must not come back.
    app_config = apps.get_app_config("nodes")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    group, _ = Group.objects.get_or_create(name="Moderators")
    group.permissions.add(*_permissions(apps))


def revoke(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name="Moderators").first()
    if group is not None:
        group.permissions.remove(*_permissions(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0001_squashed_0007_contributor_in_nodes"),
        ("nodes", "0009_circles"),
    ]
    operations = [migrations.RunPython(grant, revoke)]
