"""Rig against rig, kept (issue 12): a ReplaySet groups published replays of one prompt; each replay may belong
to one set, at a position. Moderators see sets and take them down, as they do replays (view and change)."""

import django.db.models.deletion
import django.utils.timezone
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

import showcase.models

CODENAMES = ["view_replayset", "change_replayset"]


def grant(apps, schema_editor):
    app_config = apps.get_app_config("showcase")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    group, _ = apps.get_model("auth", "Group").objects.get_or_create(name="Moderators")
    group.permissions.add(*Permission.objects.filter(content_type__app_label="showcase", codename__in=CODENAMES))


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    for group in apps.get_model("auth", "Group").objects.filter(name="Moderators"):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="showcase", codename__in=CODENAMES))


class Migration(migrations.Migration):
    dependencies = [
        ("showcase", "0003_replay_chunks"),
        ("moderation", "0005_decisions_need_change_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.CreateModel(
            name="ReplaySet",
            fields=[
                (
                    "id",
                    models.CharField(
                        default=showcase.models.new_replay_set_id,
                        editable=False,
                        max_length=20,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("published_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("ip_hash", models.CharField(blank=True, editable=False, max_length=64)),
                ("taken_down_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"ordering": ["-published_at", "-id"]},
        ),
        migrations.AddField(
            model_name="replay",
            name="set_position",
            field=models.PositiveSmallIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="replay",
            name="replay_set",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="replays",
                to="showcase.replayset",
            ),
        ),
        migrations.RunPython(grant, revoke),
    ]
