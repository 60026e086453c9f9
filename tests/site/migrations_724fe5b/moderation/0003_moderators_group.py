"""A "Moderators" group with what moderators need in the admin: read everything about nodes, contributors,
bans and flags, work on reports, and edit filter rules. Staff users put in this group can moderate without
being superusers."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

PERMISSIONS = {
    "moderation": ["view_abusereport", "change_abusereport", "view_moderationaction", "view_moderationflag",
                   "view_filterrule", "add_filterrule", "change_filterrule", "delete_filterrule"],
    "nodes": ["view_node"],
    "tracker": ["view_contributor", "view_ban"],
}


def add_group(apps, schema_editor):
    # Permissions are normally created after all migrations have run; make them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Moderators")
    for app_label, codenames in PERMISSIONS.items():
        group.permissions.add(*Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Moderators").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0002_default_filter_rules"),
        ("nodes", "0004_bans"),
        ("tracker", "0002_bans"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(add_group, remove_group)]
