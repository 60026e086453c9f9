"""The reason (and, for bans, the length) a moderator gives for every decision, filter-rule edits included."""

from django import forms

from moderation.models import FilterRule


class DecisionForm(forms.Form):
    # Like change_reason below: a CharField strips whitespace and is required, so a blank reason is refused.
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text="Recorded in the audit log with your name.",
    )

    def __init__(self, *args, with_days: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if with_days:
            self.fields["days"] = forms.IntegerField(
                required=False, min_value=1, max_value=36500, help_text="Leave empty to ban for good."
            )


class FilterRuleForm(forms.ModelForm):
    """The rule's own fields plus why it is being added or changed, for the audit log."""

    change_reason = forms.CharField(
        label="Reason for this change",
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        max_length=2000,
        help_text="Recorded in the moderation log with your name, beside the rule as it was and as it becomes.",
    )

    class Meta:
        model = FilterRule
        fields = ["id", "pattern", "flags", "category", "reason", "enabled"]
