"""`manage.py monitor`: the long-running liveness loop (heartbeat expiry, health probes, uptime, pruning)."""

import random
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils import timezone

from tracker.monitor import run_cycle


class Command(BaseCommand):
    help = "Probe every node's health_url on a loop, expire silent agents and keep uptime history."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="run one cycle and exit")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds between cycles (default: MONITOR_INTERVAL_SEC)",
        )

    def handle(self, *args, once=False, interval=None, **options):
        interval = settings.MONITOR_INTERVAL_SEC if interval is None else interval
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = run_cycle(timezone.now())
                self.stdout.write(f"probed {report.probed}, alive {report.alive}, status changes {report.changed}")
            except Exception as exc:  # noqa: BLE001 - a bad cycle must not end the loop; it is logged and retried
                self.stderr.write(f"monitor cycle failed: {type(exc).__name__}: {exc}")
            if once:
                break
            close_old_connections()  # a long-running loop must not hold a dead or stale connection
            # Jitter the period a little so that several trackers do not probe in lockstep.
            stop.wait(max(0.0, interval - (time.monotonic() - started)) + random.uniform(0, interval * 0.05))
