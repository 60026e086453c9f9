"""nodes' schema in one migration (issue 13): rigs, relays, samples and the contributors who run the rigs. It
depends on no other app: nodes is the bottom of the import direction, and its foreign keys point only here.
Data migrations of the replaced chain are left out where they only fixed up existing rows (0006 counted old timing
samples as tasters' uploads): a database this migration runs on has no rows yet."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    # Kept until every database has applied them (docs/operations.md, "Squashed migrations"): a database made
    # before the squash runs the last of them (0008 moves Contributor here) and is then recorded as having applied
    # this one; a new database applies only this one.
    replaces = [
        ("nodes", "0001_initial"),
        ("nodes", "0002_initial"),
        ("nodes", "0003_uptime_counters"),
        ("nodes", "0004_bans"),
        ("nodes", "0005_queue_entries"),
        ("nodes", "0006_relays"),
        ("nodes", "0007_scoring_evidence"),
        ("nodes", "0008_contributor_from_tracker"),
    ]

    dependencies = []

    operations = [
        migrations.CreateModel(
            name='Contributor',
            fields=[
                ('id', models.CharField(max_length=32, primary_key=True, serialize=False)),
                ('handle', models.CharField(blank=True, max_length=40, null=True, unique=True)),
                ('key_hash', models.CharField(editable=False, max_length=64, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('score_total', models.FloatField(default=0.0)),
                ('score_tier', models.CharField(default='limited', max_length=12)),
                ('score_components', models.JSONField(blank=True, default=dict)),
                ('timing_shared', models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name='Relay',
            fields=[
                ('id', models.SlugField(max_length=64, primary_key=True, serialize=False)),
                ('public_url', models.URLField(max_length=500)),
                ('secret_hash', models.CharField(editable=False, max_length=64, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('last_heartbeat_at', models.DateTimeField(blank=True, null=True)),
                ('draining', models.BooleanField(default=False)),
                ('tunnels', models.PositiveIntegerField(default=0)),
                ('open_streams', models.PositiveIntegerField(default=0)),
                ('version', models.CharField(blank=True, max_length=40)),
            ],
        ),
        migrations.CreateModel(
            name='Node',
            fields=[
                ('id', models.SlugField(max_length=64, primary_key=True, serialize=False)),
                ('display_name', models.CharField(blank=True, max_length=120)),
                ('reachability', models.CharField(choices=[('direct', 'Direct'), ('relayed', 'Relayed')], default='direct', max_length=10)),
                ('endpoint_url', models.URLField(blank=True, max_length=500)),
                ('health_url', models.URLField(blank=True, max_length=500)),
                ('tunnel_seen_at', models.DateTimeField(blank=True, null=True)),
                ('model_name', models.CharField(max_length=120)),
                ('quantization', models.CharField(max_length=40)),
                ('lora', models.CharField(blank=True, max_length=120)),
                ('gpu', models.CharField(max_length=120)),
                ('vram_gb', models.FloatField(blank=True, null=True)),
                ('vram_sort_key', models.FloatField(default=1000000000000.0, editable=False)),
                ('context_length', models.PositiveIntegerField(blank=True, null=True)),
                ('tuning_note', models.TextField(blank=True)),
                ('availability_note', models.TextField(blank=True)),
                ('tags', models.JSONField(blank=True, default=list)),
                ('tags_index', models.CharField(blank=True, editable=False, max_length=600)),
                ('visibility', models.CharField(choices=[('public', 'Public'), ('unlisted', 'Unlisted')], default='public', max_length=10)),
                ('node_public_key', models.TextField(blank=True, null=True)),
                ('node_public_key_fingerprint', models.CharField(blank=True, max_length=64, null=True)),
                ('secret_hash', models.CharField(editable=False, max_length=64, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('taken_down_at', models.DateTimeField(blank=True, null=True)),
                ('banned_until', models.DateTimeField(blank=True, null=True)),
                ('combo_key', models.CharField(db_index=True, editable=False, max_length=300)),
                ('rarity_score', models.FloatField(default=0.0)),
                ('showcase', models.JSONField(blank=True, default=list, editable=False)),
                ('showcase_ids', models.CharField(blank=True, editable=False, max_length=200)),
                ('contribution_total', models.FloatField(default=0.0)),
                ('contribution_tier', models.CharField(default='limited', max_length=12)),
                ('contribution_components', models.JSONField(blank=True, default=dict)),
                ('alive_days', models.PositiveIntegerField(default=0)),
                ('last_alive_on', models.DateField(blank=True, null=True)),
                ('usage_requests', models.PositiveIntegerField(default=0)),
                ('distinct_tasters', models.PositiveIntegerField(default=0)),
                ('usage_credit', models.FloatField(default=0.0)),
                ('discovery_credit', models.FloatField(default=0.0)),
                ('owner_networks', models.JSONField(blank=True, default=list, editable=False)),
                ('status', models.CharField(choices=[('available', 'Available'), ('busy', 'Busy'), ('unavailable', 'Unavailable'), ('unknown', 'Unknown')], db_index=True, default='unknown', max_length=12)),
                ('last_seen_at', models.DateTimeField(blank=True, null=True)),
                ('last_heartbeat_at', models.DateTimeField(blank=True, null=True)),
                ('last_probe_at', models.DateTimeField(blank=True, null=True)),
                ('latency_ms', models.PositiveIntegerField(blank=True, null=True)),
                ('consecutive_failures', models.PositiveIntegerField(default=0)),
                ('last_error', models.CharField(blank=True, max_length=300)),
                ('uptime_ratio_24h', models.FloatField(blank=True, null=True)),
                ('uptime_ratio_7d', models.FloatField(blank=True, null=True)),
                ('uptime_hours', models.JSONField(blank=True, default=dict, editable=False)),
                ('last_sampled_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('queue_active', models.PositiveIntegerField(default=0)),
                ('queue_waiting', models.PositiveIntegerField(default=0)),
                ('queue_max_active', models.PositiveIntegerField(default=0)),
                ('queue_updated_at', models.DateTimeField(blank=True, null=True)),
                ('queue_entries', models.JSONField(blank=True, default=list, editable=False)),
                ('queue_eta_sec', models.PositiveIntegerField(blank=True, null=True)),
                ('agent_version', models.CharField(blank=True, max_length=40)),
                ('served_models', models.JSONField(blank=True, default=list)),
                ('telemetry', models.JSONField(blank=True, default=dict)),
                ('timing_samples_count', models.PositiveIntegerField(default=0)),
                ('timing_samples_taster', models.PositiveIntegerField(default=0)),
                ('timing_samples_relay', models.PositiveIntegerField(default=0)),
                ('tok_per_sec_p50', models.FloatField(blank=True, null=True)),
                ('ttft_ms_p50', models.FloatField(blank=True, null=True)),
                ('timing_last_uploaded_at', models.DateTimeField(blank=True, null=True)),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='nodes', to='nodes.contributor')),
                ('relay', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='nodes', to='nodes.relay')),
            ],
        ),
        migrations.CreateModel(
            name='TimingSample',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('jti', models.CharField(max_length=64)),
                ('source', models.CharField(choices=[('taster', 'Taster'), ('relay', 'Relay')], default='taster', max_length=8)),
                ('counted', models.BooleanField(default=True)),
                ('created_at', models.DateTimeField(db_index=True)),
                ('mode', models.CharField(blank=True, max_length=16)),
                ('tok_per_sec', models.FloatField(blank=True, null=True)),
                ('ttft_ms', models.FloatField(blank=True, null=True)),
                ('network_ttft_ms', models.FloatField(blank=True, null=True)),
                ('proxy_ttft_ms', models.FloatField(blank=True, null=True)),
                ('generation_sec', models.FloatField(blank=True, null=True)),
                ('queue_wait_sec', models.FloatField(blank=True, null=True)),
                ('output_tokens', models.PositiveIntegerField(blank=True, null=True)),
                ('tokenizer', models.CharField(blank=True, max_length=64)),
                ('limited_output_truncated', models.BooleanField(blank=True, null=True)),
                ('contributor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='timing_samples', to='nodes.contributor')),
                ('node', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='timing_samples', to='nodes.node')),
            ],
        ),
        migrations.CreateModel(
            name='HealthSample',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField(db_index=True)),
                ('status', models.CharField(choices=[('available', 'Available'), ('busy', 'Busy'), ('unavailable', 'Unavailable'), ('unknown', 'Unknown')], max_length=12)),
                ('latency_ms', models.PositiveIntegerField(blank=True, null=True)),
                ('error', models.CharField(blank=True, max_length=300)),
                ('node', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='health_samples', to='nodes.node')),
            ],
            options={
                'ordering': ['-at'],
                'indexes': [models.Index(fields=['node', 'at'], name='healthsample_node_at')],
            },
        ),
        migrations.AddIndex(
            model_name='node',
            index=models.Index(models.F('visibility'), models.F('taken_down_at'), models.OrderBy(models.F('rarity_score'), descending=True), models.F('vram_sort_key'), models.F('created_at'), models.F('id'), name='node_listed_order'),
        ),
        migrations.AddConstraint(
            model_name='node',
            constraint=models.CheckConstraint(condition=models.Q(('visibility__in', ['public', 'unlisted'])), name='node_visibility_valid'),
        ),
        migrations.AddConstraint(
            model_name='node',
            constraint=models.CheckConstraint(condition=models.Q(('reachability__in', ['direct', 'relayed'])), name='node_reachability_valid'),
        ),
        migrations.AddIndex(
            model_name='timingsample',
            index=models.Index(fields=['node', 'created_at'], name='timingsample_node_created'),
        ),
        migrations.AddConstraint(
            model_name='timingsample',
            constraint=models.UniqueConstraint(fields=('jti', 'source'), name='timing_sample_once_per_source'),
        ),
    ]
