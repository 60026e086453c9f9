"""Moderators may see the relays in the admin (read-only there for everyone): which relay serves a node they
are looking at, and whether it is live."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Moderators")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="nodes", codename="view_relay"))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Moderators").first()
    if group is not None:
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="nodes", codename="view_relay"))


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0003_moderators_group"),
        ("nodes", "0006_relays"),
    ]
    operations = [migrations.RunPython(grant, revoke)]
