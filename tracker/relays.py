"""Relays, the tracker's side: registering them (secrets), tunnel tickets for relayed nodes, and what relays
report about the requests they carried (witnessed tokens, community-timing samples).

The relay is the control plane's witness: the node cannot forge what it measures, so its reports mark tokens
as really used and add timing samples of their own (`source="relay"`), beside the tasters' uploads."""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from nodes import relays as node_relays
from nodes import services as node_services
from nodes.models import Node, Relay
from tracker import credentials, scoring, signing
from tracker.keys import keyring
from tracker.models import RelayReport, TastingToken

TICKET_TTL_SEC = 900

# --- registry (manage.py relay) ---------------------------------------------------------------------------


def add_relay(*, relay_id: str, public_url: str) -> tuple[Relay, str, bool]:
    """Register a relay, or rotate an existing one's secret and update its URL (the old secret stops working
    at once). Returns the relay, its new secret (shown once) and whether it was created."""
    secret = credentials.new_secret(credentials.RELAY_PREFIX)
    relay, created = node_relays.register_relay(
        relay_id=relay_id, public_url=public_url, secret_hash=credentials.digest(secret)
    )
    return relay, secret, created


def remove_relay(*, relay_id: str) -> int | None:
    """Remove a relay; its nodes lose their tunnel now and are reassigned on their next tunnel request.
    Returns how many nodes it served, or None when there was no such relay."""
    return node_relays.remove_relay(relay_id)


# --- tunnel tickets -------------------------------------------------------------------------------------


def tunnel_url(public_url: str) -> str:
    """The relay's agent-facing WebSocket: its public URL with ws(s) for http(s), plus /tunnel."""
    parts = urlsplit(public_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/tunnel", "", ""))


@dataclass
class Tunnel:
    relay: Relay
    ticket: str
    expires_at: datetime


@transaction.atomic
def issue_tunnel(*, node: Node, unreachable_relay_id: str | None = None, now: datetime | None = None) -> Tunnel:
    """The relay this relayed node should dial, and a ticket for it. Rendezvous hashing over the live relays
    keeps a node on its relay while that relay heartbeats; when it stops (or drains, or the agent could not
    reach it and it has gone quiet), the node moves to the next relay in its own order."""
    now = now or timezone.now()
    node, relay = node_relays.assign_relay(node.pk, now, unreachable_relay_id=unreachable_relay_id)
    expires_at = now + timedelta(seconds=TICKET_TTL_SEC)
    claims = {
        "iss": settings.SITE_URL,
        "sub": node.id,
        "aud": relay.id,
        "jti": secrets.token_urlsafe(18),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    return Tunnel(relay, signing.sign_ticket(keyring(), claims), expires_at.replace(microsecond=0))


# --- reports ----------------------------------------------------------------------------------------------

# Beyond these a measurement is not of a rig: the entry is skipped (and not counted), never stored.
MAX_TTFT_MS = 600_000
MAX_CHUNKS_PER_SEC = 100_000
MAX_DURATION_MS = 86_400_000
MAX_CONTENT_CHUNKS = 10_000_000


def plausible(entry: dict) -> bool:
    for key in ("ttft_ms", "chunks_per_sec", "duration_ms", "content_chunks", "bytes"):
        value = entry.get(key)
        if value is not None and value < 0:
            return False
    return (
        (entry["ttft_ms"] is None or entry["ttft_ms"] <= MAX_TTFT_MS)
        and (entry["chunks_per_sec"] is None or entry["chunks_per_sec"] <= MAX_CHUNKS_PER_SEC)
        and entry["duration_ms"] <= MAX_DURATION_MS
        and entry["content_chunks"] <= MAX_CONTENT_CHUNKS
    )


def record_relay_report(*, relay: Relay, report_id: str, entries: list[dict], now: datetime | None = None) -> dict:
    """Count what a relay witnessed. Idempotent on (relay, report_id). An entry counts only when its jti is
    one the tracker issued for that node_id and its values are physically possible; each counted entry marks
    its token as witnessed, and a streamed answer becomes a relay timing sample (one per jti)."""
    now = now or timezone.now()
    with transaction.atomic():
        try:
            with transaction.atomic():
                report = RelayReport.objects.create(relay=relay, report_id=report_id)
        except IntegrityError:  # a retry: the same answer as the first time, nothing counted twice
            first = RelayReport.objects.filter(relay=relay, report_id=report_id)
            return {"counted": first.values_list("entries_counted", flat=True).first() or 0, "duplicate": True}
        wanted = [e for e in entries if plausible(e)]
        issued = set(
            TastingToken.objects.filter(jti__in={e["jti"] for e in wanted}).values_list("jti", "node_id").iterator()
        )
        counted = [e for e in wanted if (e["jti"], e["node_id"]) in issued]
        per_jti: dict[str, list[dict]] = {}
        for entry in counted:
            per_jti.setdefault(entry["jti"], []).append(entry)
        used: dict[str, list[str]] = {}  # node id → jtis the relay saw answered (status 200)
        for jti, mine in per_jti.items():
            served = [e for e in mine if e["status"] == 200]
            if not served:
                continue
            last = Value(max(e["started_at"] for e in served), output_field=DateTimeField())
            TastingToken.objects.filter(jti=jti).update(
                relay_requests=Least(F("relay_requests") + len(served), 2**31 - 1),
                relay_seen_at=Greatest(Coalesce("relay_seen_at", last), last),
            )
            used.setdefault(served[0]["node_id"], []).append(jti)
        samples = node_relays.add_relay_samples(per_jti, now)
        report.entries_counted = len(counted)
        report.save(update_fields=["entries_counted"])
        for node in Node.objects.filter(pk__in={s.node_id for s in samples} | set(used)):
            node_services.refresh_timing(node, uploaded_at=now)
            if node.id in used:
                # What the relay saw served is evidence the node cannot forge: usage and discovery credit, and
                # the tasters' own timing uploads for those tokens now count.
                scoring.refresh_taster_credit(node)
                scoring.tokens_used(node, used[node.id])
        scoring.refresh_scores(list(used))
    return {"counted": len(counted), "duplicate": False}
