"""The reason (and, for bans, the length) a moderator gives for every decision."""

from django import forms


class DecisionForm(forms.Form):
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

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason
