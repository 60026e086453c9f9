"""`{% tier_limits as rows %}`: the tiers' limits from settings, for templates/showcase/_tiers.html, so that the
partial states the same numbers the token endpoint enforces wherever it is included, whatever the view."""

from django import template

from tracker import tiers

register = template.Library()


@register.simple_tag
def tier_limits() -> list[tiers.Tier]:
    return tiers.table()
