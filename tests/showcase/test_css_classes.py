"""No dead rules in site.css: every class it styles is written by a template, a Python module or a script, so
that a rule left behind by a removed widget does not linger (and mislead the next reader)."""

import re
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
CSS = ROOT / "showcase" / "static" / "showcase" / "site.css"
SOURCES = ("templates", "showcase", "nodes", "tracker", "moderation", "luckrig_site")
# Classes built from a prefix and a value: "md-align-" + alignment (markdown.js), "series-" + source (charts),
# "reach-" + reachability, "replay-earlier-" + role, "entry-" + a queue entry's state.
COMPUTED = ("md-align-", "series-", "reach-", "replay-earlier-", "entry-")


def test_every_class_site_css_styles_is_used_somewhere():
    rules = re.sub(r"\{[^}]*\}", "{}", re.sub(r"/\*.*?\*/", "", CSS.read_text(), flags=re.S))
    classes = set(re.findall(r"\.([a-zA-Z][\w-]*)", rules))
    text = "\n".join(
        p.read_text()
        for folder in SOURCES
        for pattern in ("*.html", "*.py", "*.js")
        for p in (ROOT / folder).rglob(pattern)
    )
    dead = [
        c
        for c in sorted(classes)
        if not c.startswith(COMPUTED) and not re.search(r"(?<![\w-])" + re.escape(c) + r"(?![\w-])", text)
    ]
    assert dead == []
