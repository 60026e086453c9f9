"""showcase's schema in one migration (issue 13): published replays and rig-against-rig sets, and the Moderators
group's permissions on them (they see replays and sets in the admin and take them down or restore them there)."""

import django.db.models.deletion
import django.utils.timezone
import showcase.models
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

CODENAMES = ["view_replay", "change_replay", "view_replayset", "change_replayset"]


def grant(apps, schema_editor):
    db = schema_editor.connection.alias
    # Permissions are normally created after all migrations have run; make showcase's now.
    app_config = apps.get_app_config("showcase")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0, using=db)
    app_config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    group, _ = apps.get_model("auth", "Group").objects.using(db).get_or_create(name="Moderators")
    group.permissions.add(
        *Permission.objects.using(db).filter(content_type__app_label="showcase", codename__in=CODENAMES)
    )


def revoke(apps, schema_editor):
    db = schema_editor.connection.alias
    Permission = apps.get_model("auth", "Permission")
    for group in apps.get_model("auth", "Group").objects.using(db).filter(name="Moderators"):
        group.permissions.remove(
            *Permission.objects.using(db).filter(content_type__app_label="showcase", codename__in=CODENAMES)
        )


class Migration(migrations.Migration):
    initial = True

    # Kept until every database has applied them (docs/operations.md, "Squashed migrations").
    replaces = [
        ("showcase", "0001_initial"),
        ("showcase", "0002_moderators_see_replays"),
        ("showcase", "0003_replay_chunks"),
        ("showcase", "0004_replay_sets"),
        ("showcase", "0005_replay_messages"),
        ("showcase", "0006_contributor_in_nodes"),
    ]

    dependencies = [
        ("nodes", "0001_squashed_0008_contributor_from_tracker"),
        # The Moderators group is made there.
        ("moderation", "0001_squashed_0007_contributor_in_nodes"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.CreateModel(
            name='ReplaySet',
            fields=[
                ('id', models.CharField(default=showcase.models.new_replay_set_id, editable=False, max_length=20, primary_key=True, serialize=False)),
                ('published_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('ip_hash', models.CharField(blank=True, editable=False, max_length=64)),
                ('taken_down_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-published_at', '-id'],
            },
        ),
        migrations.CreateModel(
            name='Replay',
            fields=[
                ('id', models.CharField(default=showcase.models.new_replay_id, editable=False, max_length=20, primary_key=True, serialize=False)),
                ('jti', models.CharField(max_length=64, unique=True)),
                ('ip_hash', models.CharField(blank=True, editable=False, max_length=64)),
                ('created_at', models.DateTimeField(help_text="when the taster's client made the replay (client clock)")),
                ('published_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('prompt', models.TextField()),
                ('system', models.TextField(blank=True)),
                ('response', models.TextField()),
                ('chunk_timestamps', models.JSONField(blank=True, default=list)),
                ('chunks', models.JSONField(blank=True, default=list)),
                ('timing', models.JSONField(blank=True, default=dict)),
                ('messages', models.JSONField(blank=True, default=list)),
                ('taken_down_at', models.DateTimeField(blank=True, null=True)),
                ('set_position', models.PositiveSmallIntegerField(blank=True, editable=False, null=True)),
                ('contributor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='replays', to='nodes.contributor')),
                ('node', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='replays', to='nodes.node')),
                ('replay_set', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='replays', to='showcase.replayset')),
            ],
            options={
                'ordering': ['-published_at', '-id'],
                'indexes': [models.Index(fields=['node', '-published_at'], name='replay_node_newest'), models.Index(fields=['-published_at'], name='replay_newest')],
            },
        ),
        migrations.RunPython(grant, revoke),
    ]
