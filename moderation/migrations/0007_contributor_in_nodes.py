"""Contributor now lives in nodes (nodes 0008): ModerationFlag.contributor is repointed, in the migration state
only (the column's constraint already references the renamed table). Replaced by moderation 0001_squashed_0007
(for databases made before the squash)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("moderation", "0006_nsfw_explicit_rules"),
        ("nodes", "0008_contributor_from_tracker"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="moderationflag",
                    name="contributor",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="nodes.contributor",
                    ),
                ),
            ],
        ),
    ]
