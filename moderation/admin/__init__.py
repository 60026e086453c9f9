"""The moderators' workspace in the Django admin (staff only): reports, actions that each ask for a reason
and write an audit row, the read-only audit log, filter rules, agents' flags, circles (read-only), and a
dashboard. One module per responsibility; importing them registers their model admins (Django's autodiscover
imports this package)."""

from moderation.admin import audit, circles, filter_rules, flags, reports, subjects  # noqa: F401
