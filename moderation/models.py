"""Abuse reports, the append-only audit log of moderators' decisions, filter rules and agents' flags."""

import re
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def new_report_id() -> str:
    return "r_" + secrets.token_hex(8)


class AbuseReport(models.Model):
    class Kind(models.TextChoices):
        NODE = "node_id", "node"
        CONTRIBUTOR = "contributor_id", "contributor"
        CONTENT = "content_id", "published replay"
        OTHER = "other", "other"

    class State(models.TextChoices):
        OPEN = "open"
        REVIEWING = "reviewing"
        ACTIONED = "actioned"
        DISMISSED = "dismissed"

    id = models.CharField(max_length=20, primary_key=True, default=new_report_id, editable=False)
    subject_kind = models.CharField(max_length=16, choices=Kind.choices)
    subject_id = models.CharField(max_length=200, blank=True)
    reason = models.TextField()
    evidence = models.TextField(blank=True)
    # HMAC-SHA256(SECRET_KEY, reporter IP): lets repeated reports from one address be counted, and is never
    # shown to anyone, moderators included.
    reporter_hash = models.CharField(max_length=64, editable=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["subject_kind", "subject_id"], name="report_subject")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.id} ({self.get_subject_kind_display()} {self.subject_id[:40]})"

    @property
    def is_open(self) -> bool:
        return self.state in (self.State.OPEN, self.State.REVIEWING)


class ModerationAction(models.Model):
    """One moderator decision: who, what, on which subject, why, when. Append-only: the admin can neither
    edit nor delete these rows."""

    class Action(models.TextChoices):
        TAKE_DOWN = "take_down"
        RESTORE = "restore"
        BAN = "ban"
        UNBAN = "unban"
        REVOKE_TOKENS = "revoke_tokens"
        DISMISS = "dismiss"
        REVIEW = "review"
        ADD_RULE = "add_rule", "Add filter rule"
        CHANGE_RULE = "change_rule", "Change filter rule"
        DELETE_RULE = "delete_rule", "Remove filter rule"

    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    moderator_name = models.CharField(max_length=150)
    action = models.CharField(max_length=16, choices=Action.choices)
    subject_kind = models.CharField(max_length=16)
    subject_id = models.CharField(max_length=200)
    reason = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    report = models.ForeignKey(AbuseReport, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.moderator_name}: {self.action} {self.subject_kind} {self.subject_id[:40]}"


FLAG_LETTERS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


class FilterRule(models.Model):
    """A regular expression every agent applies to prompts (422 `prompt_filtered` on a match), and the tracker
    to the texts of a replay before publishing it (422 `content_filtered`)."""

    id = models.SlugField(max_length=64, primary_key=True)
    pattern = models.TextField()
    flags = models.CharField(max_length=3, blank=True, help_text="any of i (ignore case), m, s")
    category = models.CharField(max_length=40)
    reason = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id

    def clean(self):
        unknown = set(self.flags) - set(FLAG_LETTERS)
        if unknown:
            raise ValidationError({"flags": f"unknown flag letters: {''.join(sorted(unknown))}"})
        try:
            self.regex()
        except re.error as exc:
            raise ValidationError({"pattern": f"not a valid regular expression: {exc}"}) from exc

    def regex(self) -> re.Pattern:
        """The rule compiled the way agents compile it (unknown flag letters ignored); raises re.error."""
        compiled_flags = 0
        for letter in self.flags:
            compiled_flags |= FLAG_LETTERS.get(letter, 0)
        return re.compile(self.pattern, compiled_flags)

    def as_wire(self) -> dict:
        return {
            "id": self.id,
            "pattern": self.pattern,
            "flags": self.flags,
            "category": self.category,
            "reason": self.reason,
        }


class ModerationFlag(models.Model):
    """A node agent's report that its moderation hook flagged a prompt or an answer (never the text)."""

    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="moderation_flags")
    jti = models.CharField(max_length=64, db_index=True)
    stage = models.CharField(max_length=6, choices=[("input", "input"), ("output", "output")])
    categories = models.JSONField(default=list, blank=True)
    mode = models.CharField(max_length=12, blank=True)
    contributor = models.ForeignKey(
        "nodes.Contributor", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.stage} flag on {self.node_id}"
