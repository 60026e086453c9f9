"""Moderators (the group made in moderation 0003) see published replays in the admin, where they take them
down and restore them; the decisions themselves are admin actions, so viewing is all they need."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def add_permission(apps, schema_editor):
    # Permissions are normally created after all migrations have run; make showcase's now.
    app_config = apps.get_app_config("showcase")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Moderators")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="showcase", codename="view_replay"))


def remove_permission(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    for group in apps.get_model("auth", "Group").objects.filter(name="Moderators"):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="showcase", codename="view_replay"))


class Migration(migrations.Migration):
    dependencies = [
        ("showcase", "0001_initial"),
        ("moderation", "0003_moderators_group"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(add_permission, remove_permission)]
