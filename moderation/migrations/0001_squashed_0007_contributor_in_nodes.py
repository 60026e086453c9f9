"""moderation's schema in one migration (issue 13), with what its replaced chain put in a new database: the
built-in filter rules (the proof of concept's categories, English and Japanese; the same list ships inside the node
agent, node_agent/policy.py, and a test keeps the two identical) and the "Moderators" group with what moderators
need in the admin (read everything about nodes, contributors, bans and flags, work on reports, edit filter rules,
and the change permission of what their decisions act on). showcase, above this app, grants its own models'
permissions to the same group in its migration."""

import django.db.models.deletion
import moderation.models
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

RULES = [{'id': 'builtin-csam-en',
  'category': 'csam',
  'flags': 'i',
  'reason': 'sexual content involving minors',
  'pattern': '\\b(child|children|minor|minors|underage|preteen|kid|kids)\\W+(porn|pornography|nudes?|naked|sexual\\W+abuse\\W+material)\\b|\\bcsam\\b'},
 {'id': 'builtin-csam-ja',
  'category': 'csam',
  'flags': '',
  'reason': 'sexual content involving minors',
  'pattern': '児童ポルノ|児童の?性的(画像|動画|虐待)|未成年の?(裸|ヌード|性的画像)'},
 {'id': 'builtin-terrorism-en',
  'category': 'terrorism',
  'flags': 'i',
  'reason': 'support for terrorism',
  'pattern': '\\b(join|recruit\\w*\\W+for|pledge\\W+allegiance\\W+to)\\W+(isis|isil|daesh|al[\\W_]?qaeda)\\b|\\bplan(ning)?\\W+(an?\\W+)?terror(ist)?\\W+attacks?\\b'},
 {'id': 'builtin-terrorism-ja',
  'category': 'terrorism',
  'flags': '',
  'reason': 'support for terrorism',
  'pattern': 'テロ(攻撃)?を計画|テロ攻撃の(方法|やり方|手順)|(ISIS|イスラム国)に(参加|加わ)'},
 {'id': 'builtin-mass-violence-en',
  'category': 'mass_violence',
  'flags': 'i',
  'reason': 'planning mass violence',
  'pattern': '\\b(how\\W+to|plan(ning)?)\\W+(an?\\W+)?(mass|school)\\W+shootings?\\b|\\bmaximi[sz]e\\W+(the\\W+)?(casualties|death\\W+toll|body\\W+count)\\b'},
 {'id': 'builtin-mass-violence-ja',
  'category': 'mass_violence',
  'flags': '',
  'reason': 'planning mass violence',
  'pattern': '無差別(殺人|殺傷)の(方法|計画|やり方)|大量殺人の(方法|計画|やり方)|死傷者を最大'},
 {'id': 'builtin-cbrn-en',
  'category': 'weapons',
  'flags': 'i',
  'reason': 'weapons capable of mass harm',
  'pattern': '\\b(synthesi[sz]e|make|produce|weaponi[sz]e|culture)\\W+(sarin|tabun|soman|vx|ricin|anthrax|botulinum|nerve\\W+agents?)\\b|\\b(build|make)\\W+(an?\\W+)?(dirty|pipe|nail)\\W+bombs?\\b'},
 {'id': 'builtin-cbrn-ja',
  'category': 'weapons',
  'flags': '',
  'reason': 'weapons capable of mass harm',
  'pattern': '(サリン|VX|リシン|炭疽菌|神経ガス|ボツリヌス)(の|を)(作り方|合成|製造|培養)|爆弾の作り方'},
 {'id': 'builtin-nsfw-explicit-en',
  'category': 'nsfw-explicit',
  'flags': 'i',
  'reason': 'sexually explicit content',
  'pattern': '\\b(explicit|graphic|hardcore|x[\\W_]?rated|nsfw|pornographic)\\W+(sex|sexual\\W+(content|scenes?|acts?|stor(y|ies)|roleplay)|porn\\w*|erotica|smut|fan\\W*fic(tion)?|nudes?)\\b|\\b(write|describe|generate|create|narrate|roleplay)\\b[^.!?\\n]{0,60}\\b(porn(ography)?|smut|erotica|hentai|sex\\W+scenes?|sexual\\W+intercourse|blow\\W*jobs?|orgasms?)\\b'},
 {'id': 'builtin-nsfw-explicit-ja',
  'category': 'nsfw-explicit',
  'flags': '',
  'reason': 'sexually explicit content',
  'pattern': '官能小説|エロ(小説|漫画|マンガ|同人|画像|動画|シーン|描写)|エッチな(小説|話|シーン|描写|文章|画像)|性行為の(描写|場面|シーン)|セックス(の|する)(描写|場面|シーン)|(露骨|過激|生々しい)な?性(的な?)?(描写|表現|場面|シーン)|(ポルノ|アダルト)(小説|動画|画像)を(書|作|生成|描)'}]

PERMISSIONS = {
    "moderation": [
        "view_abusereport",
        "change_abusereport",
        "view_moderationaction",
        "view_moderationflag",
        "change_moderationflag",
        "view_filterrule",
        "add_filterrule",
        "change_filterrule",
        "delete_filterrule",
    ],
    "nodes": ["view_node", "change_node", "view_relay", "view_contributor", "change_contributor"],
    "tracker": ["view_ban", "change_ban"],
}


def add_rules(apps, schema_editor):
    db = schema_editor.connection.alias
    FilterRule = apps.get_model("moderation", "FilterRule")
    for rule in RULES:
        FilterRule.objects.using(db).update_or_create(
            id=rule["id"], defaults={k: v for k, v in rule.items() if k != "id"}
        )
    # Agents re-fetch the rules when this version changes.
    counter, _ = apps.get_model("tracker", "Counter").objects.using(db).get_or_create(name="filter_rules")
    counter.value += 1
    counter.save(using=db)


def remove_rules(apps, schema_editor):
    db = schema_editor.connection.alias
    apps.get_model("moderation", "FilterRule").objects.using(db).filter(id__in=[r["id"] for r in RULES]).delete()


def add_group(apps, schema_editor):
    db = schema_editor.connection.alias
    # Permissions are normally created after all migrations have run; make them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=db)
        app_config.models_module = None
    Permission = apps.get_model("auth", "Permission")
    group, _ = apps.get_model("auth", "Group").objects.using(db).get_or_create(name="Moderators")
    for app_label, codenames in PERMISSIONS.items():
        group.permissions.add(
            *Permission.objects.using(db).filter(content_type__app_label=app_label, codename__in=codenames)
        )


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(name="Moderators").delete()


class Migration(migrations.Migration):
    initial = True

    # Kept until every database has applied them (docs/operations.md, "Squashed migrations").
    replaces = [
        ("moderation", "0001_initial"),
        ("moderation", "0002_default_filter_rules"),
        ("moderation", "0003_moderators_group"),
        ("moderation", "0004_moderators_view_relays"),
        ("moderation", "0005_decisions_need_change_permission"),
        ("moderation", "0006_nsfw_explicit_rules"),
        ("moderation", "0007_contributor_in_nodes"),
    ]

    dependencies = [
        ("nodes", "0001_squashed_0008_contributor_from_tracker"),
        ("tracker", "0001_squashed_0005_contributor_to_nodes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.CreateModel(
            name='FilterRule',
            fields=[
                ('id', models.SlugField(max_length=64, primary_key=True, serialize=False)),
                ('pattern', models.TextField()),
                ('flags', models.CharField(blank=True, help_text='any of i (ignore case), m, s', max_length=3)),
                ('category', models.CharField(max_length=40)),
                ('reason', models.CharField(max_length=200)),
                ('enabled', models.BooleanField(default=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.CreateModel(
            name='AbuseReport',
            fields=[
                ('id', models.CharField(default=moderation.models.new_report_id, editable=False, max_length=20, primary_key=True, serialize=False)),
                ('subject_kind', models.CharField(choices=[('node_id', 'node'), ('contributor_id', 'contributor'), ('content_id', 'published replay'), ('other', 'other')], max_length=16)),
                ('subject_id', models.CharField(blank=True, max_length=200)),
                ('reason', models.TextField()),
                ('evidence', models.TextField(blank=True)),
                ('reporter_hash', models.CharField(editable=False, max_length=64)),
                ('state', models.CharField(choices=[('open', 'Open'), ('reviewing', 'Reviewing'), ('actioned', 'Actioned'), ('dismissed', 'Dismissed')], db_index=True, default='open', max_length=10)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ['-created_at'],
                'indexes': [models.Index(fields=['subject_kind', 'subject_id'], name='report_subject')],
            },
        ),
        migrations.CreateModel(
            name='ModerationAction',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('moderator_name', models.CharField(max_length=150)),
                ('action', models.CharField(choices=[('take_down', 'Take Down'), ('restore', 'Restore'), ('ban', 'Ban'), ('unban', 'Unban'), ('revoke_tokens', 'Revoke Tokens'), ('dismiss', 'Dismiss'), ('review', 'Review'), ('add_rule', 'Add filter rule'), ('change_rule', 'Change filter rule'), ('delete_rule', 'Remove filter rule')], max_length=16)),
                ('subject_kind', models.CharField(max_length=16)),
                ('subject_id', models.CharField(max_length=200)),
                ('reason', models.TextField()),
                ('details', models.JSONField(blank=True, default=dict)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('moderator', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('report', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='actions', to='moderation.abusereport')),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='ModerationFlag',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('jti', models.CharField(db_index=True, max_length=64)),
                ('stage', models.CharField(choices=[('input', 'input'), ('output', 'output')], max_length=6)),
                ('categories', models.JSONField(blank=True, default=list)),
                ('mode', models.CharField(blank=True, max_length=12)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('contributor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='nodes.contributor')),
                ('node', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='moderation_flags', to='nodes.node')),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.RunPython(add_rules, remove_rules),
        migrations.RunPython(add_group, remove_group),
    ]
