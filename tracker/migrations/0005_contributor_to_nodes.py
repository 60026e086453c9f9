"""Contributor now lives in nodes (nodes 0008 renamed its table and took it over): TastingToken.contributor is
repointed and tracker's Contributor leaves the migration state. State only: the database already holds the
result. Replaced by tracker 0001_squashed_0005 (for databases made before the squash)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tracker", "0004_upload_key"),
        ("nodes", "0008_contributor_from_tracker"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="tastingtoken",
                    name="contributor",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="tokens",
                        to="nodes.contributor",
                    ),
                ),
                migrations.DeleteModel(name="Contributor"),
            ],
        ),
    ]
