"""Decisions in the admin need the change permission of the model they act on (and of the models they write),
not just view (issue 11). Moderators keep every decision they had: the group gets the change permissions of
nodes, contributors, bans, flags and replays. Editing rows stays impossible where the admin forbids it (bans,
flags, replays, the audit log) or shows every field read-only (nodes, contributors).

Filter-rule edits become audit-log entries: three new ModerationAction kinds."""

from django.contrib.auth.management import create_permissions
from django.db import migrations, models

GRANTED = {
    "nodes": ["change_node"],
    "tracker": ["change_contributor", "change_ban"],
    "moderation": ["change_moderationflag"],
    # showcase sits above moderation; its Replay permission is granted here with the others, by name.
    "showcase": ["change_replay"],
}


def _permissions(apps):
    Permission = apps.get_model("auth", "Permission")
    for app_label, codenames in GRANTED.items():
        yield from Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name="Moderators")
    group.permissions.add(*_permissions(apps))


def revoke(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name="Moderators").first()
    if group is not None:
        group.permissions.remove(*_permissions(apps))


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0004_moderators_view_relays"),
        ("showcase", "0002_moderators_see_replays"),
    ]

    operations = [
        migrations.AlterField(
            model_name="moderationaction",
            name="action",
            field=models.CharField(
                choices=[
                    ("take_down", "Take Down"),
                    ("restore", "Restore"),
                    ("ban", "Ban"),
                    ("unban", "Unban"),
                    ("revoke_tokens", "Revoke Tokens"),
                    ("dismiss", "Dismiss"),
                    ("review", "Review"),
                    ("add_rule", "Add filter rule"),
                    ("change_rule", "Change filter rule"),
                    ("delete_rule", "Remove filter rule"),
                ],
                max_length=16,
            ),
        ),
        migrations.RunPython(grant, revoke),
    ]
