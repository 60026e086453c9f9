"""Rigs, the contributors who run them, and what is measured about them. Derived values (rarity, contribution,
uptime, community timing p50s, showcase badges) are stored on the row and refreshed when their inputs change, so
that the public list costs a constant number of queries."""

from datetime import timedelta

from django.db import models
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from nodes import rendezvous

VRAM_UNKNOWN_SORT_KEY = 1e12  # sorts after every real size


class Contributor(models.Model):
    """A contributor's identity: no sign-up, a key is the identity (only its hash is stored). It lives here, beside
    the rigs they run, so that every table's foreign keys point down the import direction (issue 13); tracker
    issues the keys and computes the scores stored below."""

    id = models.CharField(max_length=32, primary_key=True)
    handle = models.CharField(max_length=40, null=True, blank=True, unique=True)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Scores, summed from the contributor's nodes plus the timing samples they shared (tracker.scores).
    score_total = models.FloatField(default=0.0)
    score_tier = models.CharField(max_length=12, default="limited")
    score_components = models.JSONField(default=dict, blank=True)
    timing_shared = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return self.handle or self.id


class RelayQuerySet(models.QuerySet):
    def live(self, now=None):
        """Relays that sent a heartbeat in the last minute and are not shutting down: rendezvous picks among these."""
        now = now or timezone.now()
        return self.filter(last_heartbeat_at__gte=now - timedelta(seconds=rendezvous.LIVE_SEC), draining=False)


class Relay(models.Model):
    """A `luckrig-relay` process that carries tasters' requests to relayed nodes through their agents' outbound
    tunnels. Registered by an operator (`manage.py relay add`); it reports in with its own secret."""

    id = models.SlugField(max_length=64, primary_key=True)
    public_url = models.URLField(max_length=500)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Sent by a relay that is shutting down gracefully: it leaves rendezvous at once.
    draining = models.BooleanField(default=False)
    # From the relay's last heartbeat: open tunnels and taster streams, and its version.
    tunnels = models.PositiveIntegerField(default=0)
    open_streams = models.PositiveIntegerField(default=0)
    version = models.CharField(max_length=40, blank=True)

    objects = RelayQuerySet.as_manager()

    def __str__(self) -> str:
        return self.id

    @property
    def state(self) -> rendezvous.RelayState:
        return rendezvous.RelayState(self.id, self.last_heartbeat_at, self.draining)

    def is_live(self, now=None) -> bool:
        return rendezvous.is_live(self.state, now or timezone.now())


def relayed_endpoint_url(relay_public_url: str, node_id: str) -> str:
    """Where tasters reach a relayed node: its relay's OpenAI-compatible base for that node."""
    return f"{relay_public_url.rstrip('/')}/n/{node_id}/v1"


NODE_ID_MAX_LENGTH = 64  # Node.id's max_length


def node_id_key(node_id) -> str | None:
    """A node id as a caller sent it (URL, body, token), as a lookup key: None when it cannot name a node, being
    longer than any id or holding NUL (which PostgreSQL refuses in a comparison rather than matching nothing)."""
    key = str(node_id)
    return None if len(key) > NODE_ID_MAX_LENGTH or "\x00" in key else key


class NodeQuerySet(models.QuerySet):
    def visible_by_ids(self, node_ids, viewer=None):
        """The nodes among the ids callers sent that `viewer` may see (visible_to; ids that cannot name a node are
        left out), with their owner and relay joined: every caller shows or checks them (endpoint_url reads the
        relay). Without a viewer a circle rig is never among them."""
        keys = [k for k in map(node_id_key, node_ids) if k is not None]
        return self.visible_to(viewer).select_related("owner", "relay").filter(pk__in=keys)

    def visible_by_id(self, node_id, viewer=None) -> "Node | None":
        """The one way to look up a node a caller names: the node if `viewer` may see it, else None
        (nodes/access.py turns None into the API's 404 or 403)."""
        return self.visible_by_ids([node_id], viewer).first()

    def in_service(self, now=None):
        """Not taken down and not under an active ban, whatever its visibility: the rows the tracker's own work
        runs over (the monitor, relays, scores, rarity, an owner's own list). Never a public surface: a circle rig
        is among these. A ban that has expired stops applying by itself: the comparison is with the current
        time (`now`, else the clock's)."""
        return self.filter(taken_down_at__isnull=True).exclude(banned_until__gt=now or timezone.now())

    def visible(self, now=None):
        """Reachable by id by anyone: public or unlisted, and in service. A circle rig is left out, so that a caller
        who forgets the circle rule shows nothing of it (issue 15, "fail closed"): only visible_to brings it back,
        for the people it is shared with."""
        return self.in_service(now).exclude(visibility=Node.Visibility.CIRCLE)

    def visible_to(self, viewer):
        """visible(), plus the circle rigs `viewer` (a Contributor, or None) owns or is a member of one of whose
        circles, active or paused: a paused member still sees the rig, and is told why no token comes."""
        if viewer is None:
            return self.visible()
        member = CircleMember.objects.filter(contributor=viewer, circle__nodes=OuterRef("pk"))
        return self.in_service().filter(~Q(visibility=Node.Visibility.CIRCLE) | Q(owner=viewer) | Exists(member))

    def listed(self, now=None):
        """On public surfaces: public, visible (not taken down nor banned), and reported in: a node whose agent has
        never sent a heartbeat is a registration, not a rig (API.md v1.1). The node_listed_order index still serves
        the default order: like banned_until, last_heartbeat_at is checked on the rows the index yields (a range
        condition placed before rarity_score in the index would cost the index its order)."""
        return self.visible(now).filter(visibility=Node.Visibility.PUBLIC, last_heartbeat_at__isnull=False)

    def in_default_order(self):
        # vram_sort_key is vram_gb with "unknown" as +inf, so that one index serves this order (a NULLS LAST
        # expression would make the database sort every row on each page).
        return self.order_by(F("rarity_score").desc(), "vram_sort_key", "created_at", "id")


class Node(models.Model):
    class Visibility(models.TextChoices):
        PUBLIC = "public"
        UNLISTED = "unlisted"
        # Only the members of the circles it is shared with may see it or taste it (issue 15).
        CIRCLE = "circle"

    class Status(models.TextChoices):
        AVAILABLE = "available"
        BUSY = "busy"
        UNAVAILABLE = "unavailable"
        UNKNOWN = "unknown"

    class Reachability(models.TextChoices):
        DIRECT = "direct"  # tasters call endpoint_url
        RELAYED = "relayed"  # the agent dials out to a relay; tasters call the relay

    id = models.SlugField(max_length=NODE_ID_MAX_LENGTH, primary_key=True)
    owner = models.ForeignKey(Contributor, on_delete=models.CASCADE, related_name="nodes")
    display_name = models.CharField(max_length=120, blank=True)
    reachability = models.CharField(max_length=10, choices=Reachability.choices, default=Reachability.DIRECT)
    # Empty for a relayed node: its public endpoint is derived from its relay (see public_endpoint_url).
    endpoint_url = models.URLField(max_length=500, blank=True)
    health_url = models.URLField(max_length=500, blank=True)
    # The relay this relayed node was last assigned (rendezvous hashing; tracker.relays).
    relay = models.ForeignKey(Relay, null=True, blank=True, on_delete=models.SET_NULL, related_name="nodes")
    # The last relay heartbeat that listed this node's tunnel as open; cleared when one of its relay's
    # heartbeats no longer lists it (the tunnel is gone).
    tunnel_seen_at = models.DateTimeField(null=True, blank=True)
    model_name = models.CharField(max_length=120)
    quantization = models.CharField(max_length=40)
    lora = models.CharField(max_length=120, blank=True)
    gpu = models.CharField(max_length=120)
    vram_gb = models.FloatField(null=True, blank=True)
    vram_sort_key = models.FloatField(default=VRAM_UNKNOWN_SORT_KEY, editable=False)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    tuning_note = models.TextField(blank=True)
    availability_note = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    # ",tag1,tag2," so that `tag=` filters with a plain LIKE on SQLite and PostgreSQL alike.
    tags_index = models.CharField(max_length=600, blank=True, editable=False)
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC)
    # The circles this rig is shared with: their members alone may taste a `circle` rig, and they go first in the
    # queue of a public or unlisted one (friends first; public tasters fill idle time).
    circles = models.ManyToManyField("nodes.Circle", blank=True, related_name="nodes")
    # UTC hours of the day (0-23) in which a shared public or unlisted rig serves its circles only.
    circle_only_hours = models.JSONField(default=list, blank=True)
    node_public_key = models.TextField(null=True, blank=True)
    node_public_key_fingerprint = models.CharField(max_length=64, null=True, blank=True)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Written by the moderation app (notice-and-takedown); a taken-down node is gone from every public surface.
    taken_down_at = models.DateTimeField(null=True, blank=True)
    # The end of the longest active ban on this node (far future for "for good"); kept by tracker.bans.
    banned_until = models.DateTimeField(null=True, blank=True)

    # Rarity: `combo_key` is the normalised gpu|model|quant that rarity counts over.
    combo_key = models.CharField(max_length=300, db_index=True, editable=False)
    rarity_score = models.FloatField(default=0.0)
    showcase = models.JSONField(default=list, blank=True, editable=False)
    # ",cat1,cat2," for the one-query /api/showcase (the badges above are the same facts, presented).
    showcase_ids = models.CharField(max_length=200, blank=True, editable=False)

    # Contribution (computed by tracker.scores from the verified evidence below).
    contribution_total = models.FloatField(default=0.0)
    contribution_tier = models.CharField(max_length=12, default="limited")
    contribution_components = models.JSONField(default=dict, blank=True)
    alive_days = models.PositiveIntegerField(default=0)
    last_alive_on = models.DateField(null=True, blank=True)
    usage_requests = models.PositiveIntegerField(default=0)
    distinct_tasters = models.PositiveIntegerField(default=0)
    # What usage and discovery earn (docs/scoring.md): requests and tasters who are not the owner nor on the owner's
    # networks, each weighted by the taster's standing, with diminishing returns per taster and per day.
    usage_credit = models.FloatField(default=0.0)
    discovery_credit = models.FloatField(default=0.0)
    # Keyed hashes of the addresses (IPv6 by /64) the owner registered or edited this node from and its agent called
    # from: tokens issued to these networks are the owner's own, whatever identity asked for them. Newest last, ≤ 16.
    owner_networks = models.JSONField(default=list, blank=True, editable=False)

    # Liveness.
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UNKNOWN, db_index=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    uptime_ratio_24h = models.FloatField(null=True, blank=True)
    uptime_ratio_7d = models.FloatField(null=True, blank=True)
    # Hourly counters {"<hour epoch>": [alive samples, samples]} over the last 7 days, from which the ratios
    # are derived in O(1) per node per sample (no aggregate over the sample history on each cycle).
    uptime_hours = models.JSONField(default=dict, blank=True, editable=False)
    last_sampled_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The agent's latest queue snapshot and self-description (from heartbeats).
    queue_active = models.PositiveIntegerField(default=0)
    queue_waiting = models.PositiveIntegerField(default=0)
    queue_max_active = models.PositiveIntegerField(default=0)
    queue_updated_at = models.DateTimeField(null=True, blank=True)
    # The agent's latest queue entries (opaque tickets, positions, states, since) and ETA for a new waiter:
    # what the public queue websockets send, so that REST and websockets agree.
    queue_entries = models.JSONField(default=list, blank=True, editable=False)
    queue_eta_sec = models.PositiveIntegerField(null=True, blank=True)
    agent_version = models.CharField(max_length=40, blank=True)
    served_models = models.JSONField(default=list, blank=True)
    telemetry = models.JSONField(default=dict, blank=True)
    # The served model file as the agent reports it (sha256, GGUF header: nodes/model_files.py); null when its
    # latest heartbeat said nothing about it. The operator's claim, shown as such.
    model_identity = models.JSONField(null=True, blank=True, editable=False)

    # Community timing: medians over client-measured uploads and relays' measurements.
    timing_samples_count = models.PositiveIntegerField(default=0)
    timing_samples_taster = models.PositiveIntegerField(default=0)
    timing_samples_relay = models.PositiveIntegerField(default=0)
    tok_per_sec_p50 = models.FloatField(null=True, blank=True)
    ttft_ms_p50 = models.FloatField(null=True, blank=True)
    timing_last_uploaded_at = models.DateTimeField(null=True, blank=True)

    objects = NodeQuerySet.as_manager()

    class Meta:
        indexes = [
            # Listed nodes in the default order, straight from the index: no sort per page. Partial (rigs not
            # taken down): PostgreSQL does not take `taken_down_at IS NULL` as fixing that column, so with it in
            # the key it read every row and sorted them (31 ms for the first page of 10,000 against 0.4 ms).
            # The columns after the order's are the list's filters, bar the longest (tags_index) and
            # last_heartbeat_at (written at every heartbeat): SQLite tests a filtered page's conditions on them in
            # the index entry and reads a table row only for an entry that passes (the bench's filtered page's
            # SQL 2.7 -> 1.4 ms). Their most is about 1,200 bytes, under PostgreSQL's 2,704 for an entry.
            models.Index(
                F("visibility"),
                F("rarity_score").desc(),
                F("vram_sort_key"),
                F("created_at"),
                F("id"),
                F("banned_until"),
                F("status"),
                F("vram_gb"),
                F("context_length"),
                F("gpu"),
                F("model_name"),
                F("quantization"),
                condition=Q(taken_down_at__isnull=True),
                name="node_listed_order",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(visibility__in=["public", "unlisted", "circle"]), name="node_visibility_valid"
            ),
            models.CheckConstraint(condition=Q(reachability__in=["direct", "relayed"]), name="node_reachability_valid"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_relayed(self) -> bool:
        return self.reachability == self.Reachability.RELAYED

    @property
    def public_endpoint_url(self) -> str | None:
        """The URL tasters call: endpoint_url for a direct node, the relay's base for a relayed one (None while
        no relay is assigned). Reads `relay`: select_related it when doing this for many nodes."""
        if not self.is_relayed:
            return self.endpoint_url
        return relayed_endpoint_url(self.relay.public_url, self.id) if self.relay_id else None

    @property
    def is_listed(self) -> bool:
        """The row-level twin of NodeQuerySet.listed (keep the two in step)."""
        return self.visibility == self.Visibility.PUBLIC and self.last_heartbeat_at is not None and self.is_visible

    @property
    def is_visible(self) -> bool:
        return self.taken_down_at is None and (self.banned_until is None or self.banned_until <= timezone.now())


class HealthSample(models.Model):
    """One liveness observation taken by the monitor loop: the history behind uptime ratios."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="health_samples")
    at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=12, choices=Node.Status.choices)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        indexes = [models.Index(fields=["node", "at"], name="healthsample_node_at")]
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.node_id} {self.status} at {self.at:%Y-%m-%d %H:%M}"


class TimingSample(models.Model):
    """A timing measurement of one tasting jti: the taster's own upload (one per jti), or a relay's measurement
    of the stream it carried (one per jti, the first that qualifies)."""

    class Source(models.TextChoices):
        TASTER = "taster"
        RELAY = "relay"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="timing_samples")
    jti = models.CharField(max_length=64)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.TASTER)
    # A taster's upload counts (in community timing and the uploader's credit) only once its token was really used
    # at the node: the agent's usage report or a relay's record shows it. An upload that arrives first waits here.
    counted = models.BooleanField(default=True)
    contributor = models.ForeignKey(
        Contributor, null=True, blank=True, on_delete=models.SET_NULL, related_name="timing_samples"
    )
    created_at = models.DateTimeField(db_index=True)
    mode = models.CharField(max_length=16, blank=True)
    tok_per_sec = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    network_ttft_ms = models.FloatField(null=True, blank=True)
    proxy_ttft_ms = models.FloatField(null=True, blank=True)
    generation_sec = models.FloatField(null=True, blank=True)
    queue_wait_sec = models.FloatField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokenizer = models.CharField(max_length=64, blank=True)
    limited_output_truncated = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["jti", "source"], name="timing_sample_once_per_source")]
        indexes = [models.Index(fields=["node", "created_at"], name="timingsample_node_created")]

    def __str__(self) -> str:
        return f"{self.node_id} {self.source} timing {self.jti}"


class Circle(models.Model):
    """A contributor's circle of friends: a rig shared with it is for its members (issue 15). Members join by an
    invite link; each has daily limits (requests, tokens) that default to the circle's."""

    id = models.CharField(max_length=32, primary_key=True)  # "c_" + random, never guessable from the name
    owner = models.ForeignKey(Contributor, on_delete=models.CASCADE, related_name="owned_circles")
    name = models.CharField(max_length=80)
    created_at = models.DateTimeField(auto_now_add=True)
    default_requests_per_day = models.PositiveIntegerField(default=200)
    default_tokens_per_day = models.PositiveIntegerField(default=200_000)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="circle_name_per_owner")]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class CircleMember(models.Model):
    """One contributor's membership of one circle. The owner is a member too (role `owner`)."""

    class Role(models.TextChoices):
        OWNER = "owner"  # the circle's creator: invites, pauses, removes, shares rigs
        INVITER = "inviter"  # a member who may also invite
        MEMBER = "member"  # tastes the circle's rigs

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"  # by the owner: no new tokens for the circle's rigs until resumed

    circle = models.ForeignKey(Circle, on_delete=models.CASCADE, related_name="members")
    contributor = models.ForeignKey(Contributor, on_delete=models.CASCADE, related_name="circle_memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    # Per-member daily limits; null: the circle's defaults.
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveIntegerField(null=True, blank=True)
    joined_at = models.DateTimeField(auto_now_add=True)
    invite = models.ForeignKey(
        "nodes.CircleInvite", null=True, blank=True, on_delete=models.SET_NULL, related_name="joined"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["circle", "contributor"], name="circle_member_once")]

    def __str__(self) -> str:
        return f"{self.contributor_id} in {self.circle_id}"


class CircleInvite(models.Model):
    """An invite link `/join/<code>`: the code is shown once and only its sha256 is kept. Single-use unless the
    owner chose more uses (`max_uses` null: any number until it expires)."""

    id = models.CharField(max_length=32, primary_key=True)  # "inv_" + random: names the invite for revoking
    circle = models.ForeignKey(Circle, on_delete=models.CASCADE, related_name="invites")
    code_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(Contributor, on_delete=models.CASCADE, related_name="circle_invites")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    max_uses = models.PositiveIntegerField(null=True, blank=True, default=1)
    uses = models.PositiveIntegerField(default=0)
    role = models.CharField(max_length=10, choices=CircleMember.Role.choices, default=CircleMember.Role.MEMBER)
    # Limits given to whoever joins by it; null: the circle's defaults.
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveIntegerField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invite {self.id} to {self.circle_id}"
