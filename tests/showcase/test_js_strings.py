"""The sentences the page scripts read (script_strings.js_strings): none that no script uses, and one for every refusal
the arena's Keep can meet (site.js explain() maps a code to `errors.<code>`, else says "Something went wrong")."""

import re
from pathlib import Path

from showcase import script_strings

SCRIPTS = "\n".join(p.read_text() for p in (Path(script_strings.__file__).parent / "static" / "showcase").glob("*.js"))
# Looked up by a computed name: "errors." + code (explain) and "status_" + status (live.js).
COMPUTED = ("errors.", "status_")
# What POST /api/replays and POST /api/replay-sets answer when they refuse (docs/api.md), besides the generic ones.
KEEP_REFUSALS = ("not_publisher", "already_in_set", "prompts_differ", "already_published", "replay_not_found")


def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, prefix + key + ".")
        else:
            yield prefix + key


def test_every_sentence_is_read_by_some_script():
    unused = [
        key
        for key in leaves(script_strings.js_strings())
        if not key.startswith(COMPUTED)
        and key not in SCRIPTS
        and not re.search(r"[\"'`.]" + re.escape(key.split(".")[-1]) + r"[\"'`]", SCRIPTS)
    ]
    assert unused == []


def test_every_refusal_keeping_an_arena_round_can_meet_has_a_sentence():
    errors = script_strings.js_strings()["errors"]
    assert [code for code in KEEP_REFUSALS if code not in errors] == []
