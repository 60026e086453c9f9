"""Contributor moves from tracker to nodes (issue 13: foreign keys follow the import direction, and "nodes owns
rigs and the people who run them"). For a database made by the migrations before the squash: no row is copied.

- nodes adopts tracker's table in the migration state, then renames it to nodes_contributor (one ALTER TABLE
  ... RENAME: atomic on PostgreSQL and SQLite >= 3.26; the foreign keys of other tables follow the table, on
  PostgreSQL by its oid, on SQLite because Django runs it with legacy_alter_table off);
- nodes' own foreign keys (Node.owner, TimingSample.contributor) are repointed in the state only: the columns
  and their constraints already reference that table;
- the content type tracker.contributor becomes nodes.contributor, so that the permissions granted on it (the
  Moderators group's view/change) and the admin's history of contributor rows follow the model.

tracker, moderation and showcase repoint their own foreign keys in their next migration (each depends on this
one), and tracker then drops its Contributor from the state.

No dependency on tracker's migrations although the table comes from tracker 0001: this migration is replaced by
nodes 0001_squashed_0008 and only ever runs on a database that has every migration up to 724fe5b applied
(tracker's included); a dependency on tracker here would make the squashed graph circular (Django moves every
edge of a replaced migration onto its replacement)."""

import django.db.models.deletion
from django.db import migrations, models


def move_content_type(apps, schema_editor, source="tracker", target="nodes"):
    db = schema_editor.connection.alias
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    rows = ContentType.objects.using(db)
    old = rows.filter(app_label=source, model="contributor").first()
    if old is None:
        return  # never created (no post_migrate yet): nodes.contributor will be created normally
    stray = rows.filter(app_label=target, model="contributor").first()
    if stray is not None:
        # Made automatically (post_migrate, create_permissions) after the code moved but before this migration
        # ran: nobody's grants can predate it; the old row carries them.
        Permission.objects.using(db).filter(content_type=stray).delete()
        stray.delete(using=db)
    old.app_label = target
    old.save(using=db, update_fields=["app_label"])
    ContentType.objects.clear_cache()


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, source="nodes", target="tracker")


class Migration(migrations.Migration):
    dependencies = [
        ("nodes", "0007_scoring_evidence"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Contributor",
                    fields=[
                        ("id", models.CharField(max_length=32, primary_key=True, serialize=False)),
                        ("handle", models.CharField(blank=True, max_length=40, null=True, unique=True)),
                        ("key_hash", models.CharField(editable=False, max_length=64, unique=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("score_total", models.FloatField(default=0.0)),
                        ("score_tier", models.CharField(default="limited", max_length=12)),
                        ("score_components", models.JSONField(blank=True, default=dict)),
                        ("timing_shared", models.PositiveIntegerField(default=0)),
                    ],
                    options={"db_table": "tracker_contributor"},
                ),
            ],
        ),
        # The one database operation: tracker_contributor -> nodes_contributor.
        migrations.AlterModelTable(name="contributor", table=None),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="node",
                    name="owner",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="nodes", to="nodes.contributor"
                    ),
                ),
                migrations.AlterField(
                    model_name="timingsample",
                    name="contributor",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="timing_samples",
                        to="nodes.contributor",
                    ),
                ),
            ],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
