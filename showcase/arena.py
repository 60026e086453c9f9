"""Rig against rig on /compare/: which of the compared rigs the page may send the prompt to, and why not the
others (pure: cards in, dicts out), and the picker of compare's empty state. arena.js does the tasting."""

from django.utils.translation import gettext as _

from showcase import display

LIVE = ("available", "busy")


def why_not(card: dict, page_is_https: bool) -> str | None:
    """The sentence saying why the arena does not send the prompt to this rig, or None when it does. Demo rigs
    are examples with nothing behind them; a rig that is not serving gets no token from the tracker anyway."""
    if card["is_demo"]:
        return _("An example from the demo data, not a running rig: the prompt is not sent to it.")
    if card["status"] not in LIVE:
        return _("Not serving right now (last seen %(when)s): the prompt is not sent to it.") % {
            "when": card["last_seen_label"]
        }
    if not card["endpoint_url"]:
        return _("No relay carries this rig right now: the prompt is not sent to it.")
    return display.mixed_content_notice(card, page_is_https)


def entries(cards: list[dict], page_is_https: bool) -> list[dict]:
    """One column per compared rig: the card, plus `skip` (None or why the prompt is not sent to it)."""
    return [{**card, "skip": why_not(card, page_is_https)} for card in cards]


def config(columns: list[dict]) -> dict:
    """What arena.js needs (a json_script block): the rigs it sends the prompt to, in the page's order."""
    return {"rigs": [{"id": c["id"], "title": c["title"]} for c in columns if c["skip"] is None]}


def picker(cards: list[dict]) -> list[dict]:
    """Compare's empty state: live rigs first, each group in the list's own order (a stable sort)."""
    return sorted(cards, key=lambda card: card["status"] not in LIVE or card["is_demo"])
