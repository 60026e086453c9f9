"""IP hashes as moderators handle them: recognised, banned, but never shown.

The tracker stores HMAC-SHA256(SECRET_KEY, ip) and never the address. Moderators may ban the address behind a
stored hash (a flagged anonymous token, a replay's publisher), yet must not see the hash: its first 16 hex digits
are the `anon:` subject of every anonymous tasting token, which node operators and tasters see, and the same
hash is a report's `reporter_hash`. A moderator sees a label from a second keyed hash instead: the same address
always gets the same label (so two flags or a flag and a ban can be told to concern one address), and the label
matches nothing stored or sent anywhere else."""

import hashlib
import hmac
import re

from django.conf import settings

_IP_HASH = re.compile(r"[0-9a-f]{64}")
_LABEL_CONTEXT = b"luckrig moderation address label\x00"


def is_ip_hash(value: str) -> bool:
    """True for the stored form (64 lowercase hex digits); no IPv4 or IPv6 address ever looks like that."""
    return bool(_IP_HASH.fullmatch(value or ""))


def address_label(ip_hash: str) -> str:
    """`address #1a2b3c4d`: what moderators see instead of an IP hash."""
    digest = hmac.new(settings.SECRET_KEY.encode(), _LABEL_CONTEXT + ip_hash.encode(), hashlib.sha256).hexdigest()
    return f"address #{digest[:8]}"
