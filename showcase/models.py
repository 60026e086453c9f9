"""Published replays: a tasting (prompt, answer, the client's chunk times and timing) that its taster chose to
make public. One per tasting token (jti); taken down by moderators, never edited."""

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

# The public page of a replay; fixed by the wire contract (the HTML route is the website's).
PUBLIC_PATH = "/replays/{id}/"
# The page of a replay set (rig against rig): the website's, documented in docs/api.md.
SET_PUBLIC_PATH = "/replays/sets/{id}/"
SET_MIN, SET_MAX = 2, 8  # the arena compares two to eight rigs


def new_replay_id() -> str:
    return "rp_" + secrets.token_hex(8)


def new_replay_set_id() -> str:
    return "rs_" + secrets.token_hex(8)


class ReplaySetQuerySet(models.QuerySet):
    def visible(self):
        """Reachable by id: not taken down itself. Its members are each filtered by Replay.visible()."""
        return self.filter(taken_down_at__isnull=True)

    def listed(self):
        """On public lists: visible, with at least two visible members (fewer is no comparison), every one of
        them listed (a set naming an unlisted rig is for whoever has its id, like that rig's own replays)."""
        members = Replay.objects.visible().filter(replay_set__isnull=False)
        unlisted = members.exclude(node__visibility="public").values("replay_set_id")
        two = members.values("replay_set_id").annotate(n=models.Count("id")).filter(n__gte=SET_MIN)
        return self.visible().filter(pk__in=two.values("replay_set_id")).exclude(pk__in=unlisted)

    def with_members(self):
        """Each set's visible replays in order, with their nodes, as `visible_members`: two queries a page. On a
        listed set these are all listed."""
        members = Replay.objects.visible().order_by("set_position")
        return self.prefetch_related(models.Prefetch("replays", queryset=members, to_attr="visible_members"))


class ReplaySet(models.Model):
    """Rig against rig: the replays of one prompt sent to several rigs at once, kept together so that they play
    side by side. Each member is an ordinary published replay (its own tasting, its own upload key); the set
    only groups them, in the order the taster's page showed them."""

    id = models.CharField(max_length=20, primary_key=True, default=new_replay_set_id, editable=False)
    published_at = models.DateTimeField(default=timezone.now)
    # HMAC of the address that grouped them (never shown), like Replay.ip_hash.
    ip_hash = models.CharField(max_length=64, blank=True, editable=False)
    # Written by showcase.services.take_down_replay_set / restore_replay_set, each with an audit row.
    taken_down_at = models.DateTimeField(null=True, blank=True)

    objects = ReplaySetQuerySet.as_manager()

    class Meta:
        ordering = ["-published_at", "-id"]

    def __str__(self) -> str:
        return self.id

    @property
    def public_url(self) -> str:
        return settings.SITE_URL + SET_PUBLIC_PATH.format(id=self.id)


class ReplayQuerySet(models.QuerySet):
    def visible(self):
        """Reachable by id: not taken down, and its node is reachable by anyone (not taken down, not banned, not a
        circle rig: a rig made a circle rig after a replay was published takes the replay out of sight with it).
        A node that comes back brings its replays back with it."""
        return (
            self.filter(taken_down_at__isnull=True, node__taken_down_at__isnull=True)
            .exclude(node__banned_until__gt=timezone.now())
            .exclude(node__visibility="circle")
            .select_related("node")
        )

    def public(self):
        """What a public page may show by id (the website's name for visible())."""
        return self.visible()

    def listed(self):
        """On public lists: visible, and the node is public (an unlisted node's replays are for whoever has
        the node's id, like the node itself)."""
        return self.visible().filter(node__visibility="public")


class Replay(models.Model):
    id = models.CharField(max_length=20, primary_key=True, default=new_replay_id, editable=False)
    node = models.ForeignKey("nodes.Node", on_delete=models.CASCADE, related_name="replays")
    # The tasting token it was published with: one replay per jti. Not a foreign key, like TimingSample's,
    # so that a replay outlives any pruning of old token rows.
    jti = models.CharField(max_length=64, unique=True)
    contributor = models.ForeignKey(
        "nodes.Contributor", null=True, blank=True, on_delete=models.SET_NULL, related_name="replays"
    )
    # HMAC of the publisher's address (never shown): lets a moderator ban the address from the admin.
    ip_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(help_text="when the taster's client made the replay (client clock)")
    published_at = models.DateTimeField(default=timezone.now)
    prompt = models.TextField()
    system = models.TextField(blank=True)
    response = models.TextField()
    chunk_timestamps = models.JSONField(default=list, blank=True)
    # The text of each streamed chunk, when the client kept it (the website does): playback then shows the
    # answer exactly as it arrived. Older files carry only the joined response and the timestamps.
    chunks = models.JSONField(default=list, blank=True)
    timing = models.JSONField(default=dict, blank=True)
    # The conversation before `prompt`, when the tasting was one turn of several ([{role, content}], user and
    # assistant alternating): a replay of a later turn shows what the rig had been told. [] for a single question.
    messages = models.JSONField(default=list, blank=True)
    # Written by showcase.services.take_down_replay / restore_replay, each with an audit row.
    taken_down_at = models.DateTimeField(null=True, blank=True)
    # Rig against rig: the set this replay was grouped into (at most one), and its place there (0 first).
    replay_set = models.ForeignKey(
        ReplaySet, null=True, blank=True, on_delete=models.PROTECT, related_name="replays", editable=False
    )
    set_position = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)

    objects = ReplayQuerySet.as_manager()

    class Meta:
        ordering = ["-published_at", "-id"]
        indexes = [
            models.Index(fields=["node", "-published_at"], name="replay_node_newest"),
            models.Index(fields=["-published_at"], name="replay_newest"),
        ]

    def __str__(self) -> str:
        return f"{self.id} on {self.node_id}"

    @property
    def public_url(self) -> str:
        return settings.SITE_URL + PUBLIC_PATH.format(id=self.id)
