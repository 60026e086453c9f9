"""The built-in filter rules: the categories of the proof of concept, in English and Japanese. The same
list ships inside the node agent (node_agent/policy.py) for agents that cannot reach a tracker; a test keeps
the two identical. Moderators edit them in the admin from here on."""

from django.db import migrations

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
  'pattern': '(サリン|VX|リシン|炭疽菌|神経ガス|ボツリヌス)(の|を)(作り方|合成|製造|培養)|爆弾の作り方'}]


def add_rules(apps, schema_editor):
    FilterRule = apps.get_model("moderation", "FilterRule")
    Counter = apps.get_model("tracker", "Counter")
    for rule in RULES:
        FilterRule.objects.update_or_create(id=rule["id"], defaults={k: v for k, v in rule.items() if k != "id"})
    counter, _ = Counter.objects.get_or_create(name="filter_rules")
    counter.value += 1
    counter.save()


def remove_rules(apps, schema_editor):
    apps.get_model("moderation", "FilterRule").objects.filter(id__in=[r["id"] for r in RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("moderation", "0001_initial"), ("tracker", "0002_bans")]
    operations = [migrations.RunPython(add_rules, remove_rules)]
