"""`manage.py seed_demo`: the three showcase rigs of the original proof of concept (idempotent).

They are shown as what they are: rigs that ran once and no longer serve. A node is listed only once its agent has
reported in (API.md v1.1), so each demo rig carries a fixed last heartbeat in the past (DEMO_LAST_HEARTBEAT_AT, the
same on every run); a heartbeat that old makes its status `unavailable`, so the rigs stay on the node list and the
showcase, and no tasting token can be issued for them (tokens need a node that is `available` or `busy`). No agent
holds their node secrets (they are thrown away here), so nothing can make them available again."""

from datetime import UTC, datetime

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from nodes import services as node_services
from nodes.models import Contributor, Node
from tracker import credentials, scoring, services

DEMO_HANDLE = "luckrig-demo"
DEMO_OWNER_ID = "c_luckrig_demo"
NOTE_DEMO = "Demo listing from the proof of concept: no live agent answers at this address."
# A constant, so that the command stays idempotent. The demo rigs ran under the proof of concept, before this
# tracker existed (its first commit is of 2026-11-24): their last heartbeat is dated the day before.
DEMO_LAST_HEARTBEAT_AT = datetime(2026, 11, 23, tzinfo=UTC)

DEMO_NODES = [
    {
        "id": "rtx-5090-qwen3-35b-a3b-q4-k-xl",
        "display_name": "RTX 5090 · Qwen3-35B-A3B",
        "endpoint_url": "https://rtx5090.demo.luckrig.invalid/v1",
        "model_name": "Qwen3-35B-A3B",
        "quantization": "Q4_K_XL",
        "gpu": "NVIDIA GeForce RTX 5090",
        "vram_gb": 32,
        "context_length": 65536,
        "tuning_note": (
            "MoE with 3B active parameters, so it decodes fast even at Q4_K_XL. All layers on the GPU "
            "(-ngl 99), flash attention on, KV cache quantised to q8_0 to fit 64k context in 32 GB. "
            "Batch 2048 / ubatch 512 gave the best prompt processing; more did not help."
        ),
        "availability_note": NOTE_DEMO,
        "tags": ["showcase", "moe", "long-context", "blackwell"],
    },
    {
        "id": "apple-m3-max-qwen2-5-14b-instruct-q5-k-m",
        "display_name": "Apple M3 Max · Qwen2.5-14B-Instruct",
        "endpoint_url": "https://m3max.demo.luckrig.invalid/v1",
        "model_name": "Qwen2.5-14B-Instruct",
        "quantization": "Q5_K_M",
        "gpu": "Apple M3 Max",
        "vram_gb": 48,
        "context_length": 32768,
        "tuning_note": (
            "48 GB of unified memory: the whole model and a 32k KV cache stay on the Metal GPU. Raised "
            "iogpu.wired_limit_mb so macOS lets the GPU wire more memory; Q5_K_M was the best quality that "
            "still leaves room for the desktop."
        ),
        "availability_note": NOTE_DEMO,
        "tags": ["showcase", "apple-silicon", "metal"],
    },
    {
        "id": "raspberry-pi-5-llama3-2-1b-q4-k-m",
        "display_name": "Raspberry Pi 5 · llama3.2-1B",
        "endpoint_url": "https://pi5.demo.luckrig.invalid/v1",
        "model_name": "llama3.2-1B",
        "quantization": "Q4_K_M",
        "gpu": "Raspberry Pi 5 (CPU, Cortex-A76)",
        "vram_gb": 0,
        "context_length": 8192,
        "tuning_note": (
            "CPU only on four Cortex-A76 cores with 8 GB RAM: 4 threads, mmap on, an active cooler so it "
            "does not throttle. Q4_K_M keeps it usable; expect single-digit tokens per second."
        ),
        "availability_note": NOTE_DEMO,
        "tags": ["showcase", "cpu", "arm", "low-power"],
    },
]


class Command(BaseCommand):
    help = "Load the showcase demo nodes (idempotent: running it again updates them in place)."

    @transaction.atomic
    def handle(self, *args, **options):
        owner = Contributor.objects.filter(pk=DEMO_OWNER_ID).first()
        if owner is None:
            # A fixed id that the API can never hand out (its ids are c_ + hex), so nobody can pose as the
            # demo owner by claiming its handle first; the handle is only taken when it is free.
            handle = None if Contributor.objects.filter(handle=DEMO_HANDLE).exists() else DEMO_HANDLE
            owner = node_services.add_contributor(
                contributor_id=DEMO_OWNER_ID, handle=handle, key_hash=credentials.digest(credentials.new_secret("lrk_"))
            )
        for spec in DEMO_NODES:
            node = Node.objects.filter(pk=spec["id"]).first()
            if node is None:
                node, _secret = services.register_node(owner=owner, data=spec)
                self.stdout.write(f"added {node.id}")
            elif node.owner_id != owner.id:
                self.stderr.write(f"skipped {node.id}: that id belongs to another contributor's node")
            else:
                services.update_node(node=node, data={k: v for k, v in spec.items() if k != "id"})
                self.stdout.write(f"updated {node.id}")
        self.ran_once(owner)

    def ran_once(self, owner: Contributor) -> None:
        """Give the demo rigs their past heartbeat and the status it implies, then recount rarity and the showcase:
        a demo rig that was not listed before (a fresh registration, or a database seeded by an older version of
        this command) joins the counts now."""
        now = timezone.now()
        combos = set()
        for node in Node.objects.filter(owner=owner, pk__in=[spec["id"] for spec in DEMO_NODES]):
            node_services.set_last_heartbeat(node, DEMO_LAST_HEARTBEAT_AT, now)
            combos.add(node.combo_key)
        scoring.refresh_listing(combos)
