"""Filter rules in the admin: each edit or deletion is a decision with a reason and an audit row."""

from django.contrib import admin

from moderation import services
from moderation.admin.decisions import DecisionsNeedPermission, decision_action
from moderation.forms import FilterRuleForm
from moderation.models import FilterRule


@admin.register(FilterRule)
class FilterRuleAdmin(DecisionsNeedPermission, admin.ModelAdmin):
    """Rule edits are moderation decisions: each asks for a reason and writes an audit row with the rule as it
    was and as it became (services.save_filter_rule / delete_filter_rule), and bumps the rules version.
    Deleting goes through an action that asks for the reason; Django's own delete pages are off."""

    form = FilterRuleForm
    list_display = ["id", "category", "enabled", "reason", "updated_at"]
    list_filter = ["category", "enabled"]
    fields = ["id", "pattern", "flags", "category", "reason", "enabled", "change_reason"]
    actions = [
        decision_action(
            "Delete the rules",
            lambda rule, m, why, d: services.delete_filter_rule(rule=rule, moderator=m, reason=why),
            own="delete",
        )
    ]

    def get_readonly_fields(self, request, obj=None):
        # Changing the primary key in the form would save a second rule beside the first.
        return ["id"] if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        return False  # through "Delete the rules", which asks for a reason

    def save_model(self, request, obj, form, change):
        services.save_filter_rule(
            rule=obj, moderator=services.Moderator.of(request.user), reason=form.cleaned_data["change_reason"]
        )
