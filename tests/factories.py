"""Plain helpers that build the cast through the same services the API uses."""

import io
import itertools
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from django.core.management import call_command
from django.utils import timezone

from nodes.models import Contributor, Node, Relay
from tracker import services

_counter = itertools.count(1)


@dataclass
class Person:
    contributor: Contributor
    key: str

    @property
    def id(self) -> str:
        return self.contributor.id

    def refresh(self) -> "Person":
        self.contributor.refresh_from_db()
        return self


def make_contributor(handle: str | None = None) -> Person:
    contributor, key = services.create_contributor(handle=handle)
    return Person(contributor, key)


def node_fields(**overrides) -> dict:
    n = next(_counter)
    fields = {
        "endpoint_url": f"https://rig{n}.example.com/v1",
        "model_name": "Llama-3.1-8B-Instruct",
        "quantization": "Q4_K_M",
        "gpu": "NVIDIA GeForce RTX 3060",
        "vram_gb": 12,
        "context_length": 8192,
        "tuning_note": "All layers on the GPU, flash attention on.",
        "tags": ["home"],
    }
    fields.update(overrides)
    return fields


def make_node(person: Person, **overrides) -> tuple[Node, str]:
    node, secret = services.register_node(owner=person.contributor, data=node_fields(**overrides))
    return node, secret


def heartbeat(api, node: Node, secret: str, *, active: int = 0, waiting: int = 0, max_active: int = 1):
    status, body = api.post(
        f"/api/nodes/{node.id}/heartbeat",
        {
            "queue": {"active": active, "waiting": waiting, "max_active": max_active},
            "models": [node.model_name],
            "agent_version": "test",
        },
        auth=secret,
    )
    assert status == 200, body
    return body


def x25519_public_pem() -> str:
    """A fresh X25519 public key in SPKI PEM (a node key or a taster's key)."""
    public = X25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def seen_alive(node: Node, days: int = 1) -> Node:
    """Record what the monitor records when a node's agent answers its probes on `days` days (the evidence
    behind the existence score; a node never seen alive earns nothing)."""
    from tracker.scoring import refresh_scores

    Node.objects.filter(pk=node.pk).update(alive_days=days)
    refresh_scores([node.pk])
    node.refresh_from_db()
    return node


def served_others(node: Node, tasters: float = 2.0, requests: float = 4.0) -> Node:
    """Record what a node earns once it has served other people (docs/scoring.md): `tasters` of weighted discovery
    and `requests` of weighted usage, as usage reports from other networks would. Nothing counts before that."""
    from tracker.scoring import refresh_scores

    Node.objects.filter(pk=node.pk).update(
        discovery_credit=tasters, usage_credit=requests, distinct_tasters=int(tasters), usage_requests=int(requests)
    )
    refresh_scores([node.pk])
    node.refresh_from_db()
    return node


def monitor_cycle(at=None):
    """One liveness-monitor cycle at `at` (default now), without the probes' start-up jitter."""
    from django.utils import timezone

    from tracker.monitor import run_cycle

    return run_cycle(at or timezone.now(), jitter_sec=0)


# --- relays (manage.py relay, relay heartbeats, relayed nodes) ----------------------------------------------


def add_relay(relay_id: str, url: str) -> str:
    """`manage.py relay add`, as an operator runs it; returns the secret from the last line."""
    out = io.StringIO()
    call_command("relay", "add", relay_id, url, stdout=out)
    return out.getvalue().splitlines()[-1]


def relay_heartbeat(api, relay_id, secret, tunnels=(), *, draining=None, open_streams=0, expect=200):
    body = {"schema_version": 1, "version": "0.1.0", "tunnels": list(tunnels), "open_streams": open_streams}
    if draining is not None:
        body["draining"] = draining
    status, answer = api.post(f"/api/relays/{relay_id}/heartbeat", body, auth=secret)
    assert status == expect, answer
    return answer


def register_relayed(api, person, **fields) -> tuple[dict, str]:
    body = node_fields(**fields)
    body.pop("endpoint_url")
    status, answer = api.post("/api/nodes", body, auth=person.key)
    assert status == 201, answer
    return answer["node"], answer["node_secret"]


def tunnel(api, node_id, secret, body=None):
    return api.post(f"/api/nodes/{node_id}/tunnel", body, auth=secret)


def node_status(api, node_id) -> str:
    return api.get(f"/api/nodes/{node_id}")[1]["node"]["health"]["status"]


def age_relay(relay_id: str, seconds: float) -> None:
    """As if the relay's last heartbeat were `seconds` old."""
    Relay.objects.filter(pk=relay_id).update(last_heartbeat_at=timezone.now() - timedelta(seconds=seconds))
