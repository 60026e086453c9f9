"""`manage.py relay add <relay_id> <public_url>` / `relay remove <relay_id>` / `relay list`: the relays that
carry tasters to relayed nodes.

`add` is idempotent on the id: for a relay that exists it rotates the secret (the old one stops working at
once) and updates the URL. The secret is printed alone on the last line, so that a script can take it with
`tail -n 1`. The command lives in tracker, beside the other credentials (node secrets are made here too),
although the Relay table belongs to nodes: nodes never imports tracker."""

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from core.urlguard import check_url_syntax
from nodes.models import Relay
from tracker import relays

RELAY_ID_RE = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")


class Command(BaseCommand):
    help = "Register (or rotate the secret of), remove or list the relays."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="register a relay, or rotate its secret; prints the secret last")
        add.add_argument("relay_id", help="a slug of up to 64 characters, e.g. relay-1")
        add.add_argument("public_url", help="the base tasters and agents use, e.g. https://relay1.example.org")
        remove = sub.add_parser("remove", help="remove a relay; its nodes move on their next tunnel request")
        remove.add_argument("relay_id")
        sub.add_parser("list", help="every relay with its last heartbeat")

    def handle(self, *args, action, **options):
        getattr(self, f"_{action}")(**options)

    def _add(self, *, relay_id, public_url, **_):
        if not RELAY_ID_RE.match(relay_id):
            raise CommandError("relay_id must be 1 to 64 letters, digits, - or _")
        public_url = public_url.strip()
        try:
            check_url_syntax(public_url)
        except ValueError as exc:
            raise CommandError(f"public_url: {exc}") from None
        if urlsplit(public_url).query or urlsplit(public_url).fragment:
            raise CommandError("public_url: a base URL, without ?query or #fragment")
        if len(public_url) > 400:
            raise CommandError("public_url: at most 400 characters")
        relay, secret, created = relays.add_relay(relay_id=relay_id, public_url=public_url)
        what = "registered" if created else "secret rotated (the old one no longer works) for"
        self.stdout.write(f"{what} relay {relay.id} at {relay.public_url}")
        self.stdout.write(
            f"start it with: luckrig-relay --tracker {settings.SITE_URL} --relay-id {relay.id} "
            f"--public-url {relay.public_url} --relay-secret <the secret on the next line>"
        )
        self.stdout.write(secret)

    def _remove(self, *, relay_id, **_):
        moved = relays.remove_relay(relay_id=relay_id)
        if moved is None:
            raise CommandError(f"no relay {relay_id!r}")
        self.stdout.write(f"removed relay {relay_id}; {moved} node(s) will be reassigned on their next tunnel request")

    def _list(self, **_):
        now = timezone.now()
        rows = Relay.objects.order_by("id")
        if not rows:
            self.stdout.write("no relays registered")
        for relay in rows:
            state = "draining" if relay.draining else ("live" if relay.is_live(now) else "silent")
            seen = relay.last_heartbeat_at.isoformat() if relay.last_heartbeat_at else "never"
            self.stdout.write(
                f"{relay.id}\t{relay.public_url}\t{state}\tlast heartbeat {seen}\t"
                f"tunnels {relay.tunnels}\topen streams {relay.open_streams}"
            )
