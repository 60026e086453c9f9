"""Issued tasting tokens, usage and relay reports, bans, and the counters behind quotas. Contributors (the
identities these rows point at) belong to nodes (nodes.models.Contributor)."""

from django.db import models
from django.utils import timezone


class TastingToken(models.Model):
    """Every jti the tracker signed: the basis of quotas, usage credit, discovery and revocation."""

    class Tier(models.TextChoices):
        LIMITED = "limited"
        CONTRIBUTOR = "contributor"

    class CryptoMode(models.TextChoices):
        PLAIN = "plain"
        PUBLIC_KEY = "public-key"

    jti = models.CharField(max_length=64, primary_key=True)
    kid = models.CharField(max_length=64)
    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="tokens")
    contributor = models.ForeignKey(
        "nodes.Contributor", null=True, blank=True, on_delete=models.SET_NULL, related_name="tokens"
    )
    # The JWT `sub`: a contributor id, or "anon:<ip hash prefix>"; distinct subjects are distinct tasters.
    subject = models.CharField(max_length=64)
    ip_hash = models.CharField(max_length=64)
    tier = models.CharField(max_length=12, choices=Tier.choices)
    crypto_mode = models.CharField(max_length=12, choices=CryptoMode.choices)
    is_owner_token = models.BooleanField(default=False)
    issued_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField(db_index=True)
    max_requests = models.PositiveIntegerField()
    max_output_tokens = models.PositiveIntegerField()
    user_public_key_fingerprint = models.CharField(max_length=64, null=True, blank=True)
    # The circle a member's token was issued through (its `circle` claim): that circle's per-member limits apply
    # instead of the tier's daily quota, and removing or pausing the member revokes it.
    circle = models.ForeignKey("nodes.Circle", null=True, blank=True, on_delete=models.SET_NULL, related_name="tokens")
    # Issued through a circle, for good: `circle` is cleared when the circle is deleted, and the tokens' usage must
    # still count at the circle weight (docs/scoring.md), never turn into public credit.
    via_circle = models.BooleanField(default=False)
    # sha256 of the taster's upload key (`lru_`, shown once with the token): what timing uploads and replay
    # publishing take, because the node operator holds the token itself. Null for tokens issued before it.
    upload_key_hash = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    # Reported by the node's agent (usage endpoint); only tokens of that node count.
    requests_served = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    first_used_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Witnessed by a relay (its reports): requests it carried to the node for this token, and the last one's
    # start. Unlike requests_served, the node cannot forge these.
    relay_requests = models.PositiveIntegerField(default=0)
    relay_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["node", "expires_at"], name="token_node_expiry"),
            models.Index(fields=["circle", "contributor", "issued_at"], name="token_circle_member_day"),
        ]

    def __str__(self) -> str:
        return self.jti


class UsageReport(models.Model):
    """Seen usage report ids: a retried report (same report_id) is acknowledged and not counted twice."""

    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="usage_reports")
    report_id = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True)
    entries_counted = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node", "report_id"], name="usage_report_once")]

    def __str__(self) -> str:
        return f"{self.node_id} report {self.report_id}"


class RelayReport(models.Model):
    """Seen relay report ids: a retried report (same relay, same report_id) is acknowledged, not counted twice."""

    relay = models.ForeignKey("nodes.Relay", on_delete=models.CASCADE, related_name="reports")
    report_id = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    entries_counted = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["relay", "report_id"], name="relay_report_once")]

    def __str__(self) -> str:
        return f"{self.relay_id} report {self.report_id}"


class QuotaBucket(models.Model):
    """Tokens issued per subject per UTC day; claimed with a conditional UPDATE so that concurrent requests in
    several processes can never exceed the limit, and counts survive restarts."""

    key = models.CharField(max_length=100)
    day = models.DateField()
    used = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "day"], name="quota_bucket_once")]

    def __str__(self) -> str:
        return f"{self.key} {self.day}: {self.used}"


class Ban(models.Model):
    """A moderator's decision that a node, a contributor or an IP hash may not use LuckRig until `expires_at`
    (null: for good) or until lifted. Bans are only ever created by people (admin or commands), never
    automatically; the moderation app records who and why in its audit log."""

    class Kind(models.TextChoices):
        NODE = "node"
        CONTRIBUTOR = "contributor"
        IP = "ip"

    kind = models.CharField(max_length=12, choices=Kind.choices)
    # A node id, a contributor id, or an IP hash (never a raw IP).
    value = models.CharField(max_length=64)
    reason = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    lifted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["kind", "value"], name="ban_subject")]

    def __str__(self) -> str:
        # An IP ban's value is the address's keyed hash, whose prefix is also the `anon:` subject of that
        # address's tokens: never print any of it (the moderation app labels addresses its own way).
        if self.kind == self.Kind.IP:
            return f"ip ban {self.pk}"
        return f"{self.kind} ban on {self.value[:16]}"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return self.lifted_at is None and (self.expires_at is None or self.expires_at > now)


class Counter(models.Model):
    """Named version counters that other apps publish into without being imported (e.g. `filter_rules`,
    bumped by the moderation app on every filter-rule edit and read by heartbeats)."""

    name = models.CharField(max_length=40, primary_key=True)
    value = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
