"""The tracker's keyring as configured in settings, and the published key list with `not_after`."""

from django.conf import settings
from django.db.models import Max

from core.timefmt import iso
from tracker import signing
from tracker.models import TastingToken


def keyring() -> signing.Keyring:
    current = settings.TRACKER_SIGNING_KEY_FILE or str(settings.DATA_DIR / "tracker_signing_key.pem")
    return signing.load_keyring(
        current, settings.TRACKER_NEXT_SIGNING_KEY_FILE, tuple(settings.TRACKER_RETIRED_SIGNING_KEY_FILES)
    )


def published_keys(now) -> list[dict]:
    """Current and upcoming keys have no end; a retired key is listed until its last token expires."""
    ring = keyring()
    keys = [
        {
            "kid": ring.current.kid,
            "alg": signing.ALGORITHM,
            "public_key_pem": ring.current.public_pem,
            "not_after": None,
        }
    ]
    if ring.upcoming is not None:
        keys.append(
            {
                "kid": ring.upcoming.kid,
                "alg": signing.ALGORITHM,
                "public_key_pem": ring.upcoming.public_pem,
                "not_after": None,
            }
        )
    if ring.retired:
        last = dict(
            TastingToken.objects.filter(kid__in=[k.kid for k in ring.retired])
            .values_list("kid")
            .annotate(m=Max("expires_at"))
            .order_by()
        )
        for key in ring.retired:
            not_after = last.get(key.kid)
            if not_after is not None and not_after > now:
                keys.append(
                    {
                        "kid": key.kid,
                        "alg": signing.ALGORITHM,
                        "public_key_pem": key.public_pem,
                        "not_after": iso(not_after),
                    }
                )
    return keys
