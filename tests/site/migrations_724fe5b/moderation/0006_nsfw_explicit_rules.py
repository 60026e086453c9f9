"""The proof of concept's nsfw-explicit category joins the built-in filter rules (issue 11), in English and
Japanese, on by default, as in the node agent's own copy (node_agent/policy.py; a test keeps the two
identical). An operator may switch the category off for their own rig (the agent's --filter-off); a moderator
may disable the rules here for everyone. Existing rules with these ids are left as the moderators made them."""

from django.db import migrations

RULES = [{'id': 'builtin-nsfw-explicit-en',
  'category': 'nsfw-explicit',
  'flags': 'i',
  'reason': 'sexually explicit content',
  'pattern': '\\b(explicit|graphic|hardcore|x[\\W_]?rated|nsfw|pornographic)\\W+(sex|sexual\\W+(content|scenes?|acts?|stor(y|ies)|roleplay)|porn\\w*|erotica|smut|fan\\W*fic(tion)?|nudes?)\\b|\\b(write|describe|generate|create|narrate|roleplay)\\b[^.!?\\n]{0,60}\\b(porn(ography)?|smut|erotica|hentai|sex\\W+scenes?|sexual\\W+intercourse|blow\\W*jobs?|orgasms?)\\b'},
 {'id': 'builtin-nsfw-explicit-ja',
  'category': 'nsfw-explicit',
  'flags': '',
  'reason': 'sexually explicit content',
  'pattern': '官能小説|エロ(小説|漫画|マンガ|同人|画像|動画|シーン|描写)|エッチな(小説|話|シーン|描写|文章|画像)|性行為の(描写|場面|シーン)|セックス(の|する)(描写|場面|シーン)|(露骨|過激|生々しい)な?性(的な?)?(描写|表現|場面|シーン)|(ポルノ|アダルト)(小説|動画|画像)を(書|作|生成|描)'}]


def add_rules(apps, schema_editor):
    FilterRule = apps.get_model("moderation", "FilterRule")
    Counter = apps.get_model("tracker", "Counter")
    added = 0
    for rule in RULES:
        _, created = FilterRule.objects.get_or_create(id=rule["id"], defaults={k: v for k, v in rule.items() if k != "id"})
        added += created
    if added:
        counter, _ = Counter.objects.get_or_create(name="filter_rules")
        counter.value += 1
        counter.save()


def remove_rules(apps, schema_editor):
    apps.get_model("moderation", "FilterRule").objects.filter(id__in=[r["id"] for r in RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("moderation", "0005_decisions_need_change_permission"), ("tracker", "0002_bans")]
    operations = [migrations.RunPython(add_rules, remove_rules)]
