"""tracker's schema in one migration (issue 13): tokens, usage and relay reports, quotas, bans and counters. Its
foreign keys point at nodes (Node, Relay, Contributor), below it."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    # Kept until every database has applied them (docs/operations.md, "Squashed migrations").
    replaces = [
        ("tracker", "0001_initial"),
        ("tracker", "0002_bans"),
        ("tracker", "0003_relay_reports"),
        ("tracker", "0004_upload_key"),
        ("tracker", "0005_contributor_to_nodes"),
    ]

    dependencies = [
        ("nodes", "0001_squashed_0008_contributor_from_tracker"),
    ]

    operations = [
        migrations.CreateModel(
            name='Counter',
            fields=[
                ('name', models.CharField(max_length=40, primary_key=True, serialize=False)),
                ('value', models.PositiveBigIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name='Ban',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('node', 'Node'), ('contributor', 'Contributor'), ('ip', 'Ip')], max_length=12)),
                ('value', models.CharField(max_length=64)),
                ('reason', models.TextField()),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('expires_at', models.DateTimeField(blank=True, null=True)),
                ('lifted_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'indexes': [models.Index(fields=['kind', 'value'], name='ban_subject')],
            },
        ),
        migrations.CreateModel(
            name='QuotaBucket',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('key', models.CharField(max_length=100)),
                ('day', models.DateField()),
                ('used', models.PositiveIntegerField(default=0)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('key', 'day'), name='quota_bucket_once')],
            },
        ),
        migrations.CreateModel(
            name='RelayReport',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('report_id', models.CharField(max_length=64)),
                ('received_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('entries_counted', models.PositiveIntegerField(default=0)),
                ('relay', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='reports', to='nodes.relay')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('relay', 'report_id'), name='relay_report_once')],
            },
        ),
        migrations.CreateModel(
            name='TastingToken',
            fields=[
                ('jti', models.CharField(max_length=64, primary_key=True, serialize=False)),
                ('kid', models.CharField(max_length=64)),
                ('subject', models.CharField(max_length=64)),
                ('ip_hash', models.CharField(max_length=64)),
                ('tier', models.CharField(choices=[('limited', 'Limited'), ('contributor', 'Contributor')], max_length=12)),
                ('crypto_mode', models.CharField(choices=[('plain', 'Plain'), ('public-key', 'Public Key')], max_length=12)),
                ('is_owner_token', models.BooleanField(default=False)),
                ('issued_at', models.DateTimeField(db_index=True)),
                ('expires_at', models.DateTimeField(db_index=True)),
                ('max_requests', models.PositiveIntegerField()),
                ('max_output_tokens', models.PositiveIntegerField()),
                ('user_public_key_fingerprint', models.CharField(blank=True, max_length=64, null=True)),
                ('upload_key_hash', models.CharField(blank=True, editable=False, max_length=64, null=True, unique=True)),
                ('requests_served', models.PositiveIntegerField(default=0)),
                ('prompt_tokens', models.PositiveIntegerField(default=0)),
                ('completion_tokens', models.PositiveIntegerField(default=0)),
                ('first_used_at', models.DateTimeField(blank=True, null=True)),
                ('last_used_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('relay_requests', models.PositiveIntegerField(default=0)),
                ('relay_seen_at', models.DateTimeField(blank=True, null=True)),
                ('contributor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='tokens', to='nodes.contributor')),
                ('node', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tokens', to='nodes.node')),
            ],
            options={
                'indexes': [models.Index(fields=['node', 'expires_at'], name='token_node_expiry')],
            },
        ),
        migrations.CreateModel(
            name='UsageReport',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('report_id', models.CharField(max_length=64)),
                ('received_at', models.DateTimeField(auto_now_add=True)),
                ('entries_counted', models.PositiveIntegerField(default=0)),
                ('node', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='usage_reports', to='nodes.node')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('node', 'report_id'), name='usage_report_once')],
            },
        ),
    ]
