"""Contributor now lives in nodes (nodes 0008): Replay.contributor is repointed, in the migration state only (the
column's constraint already references the renamed table). Replaced by showcase 0001_squashed_0006 (for
databases made before the squash)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("showcase", "0005_replay_messages"),
        ("nodes", "0008_contributor_from_tracker"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="replay",
                    name="contributor",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="replays",
                        to="nodes.contributor",
                    ),
                ),
            ],
        ),
    ]
