"""Bearer credentials: contributor keys (`lrk_`), node secrets (`lrn_`), relay secrets (`lrr_`), tasters' upload
keys (`lru_`) and circle invite codes (`lri_`). Only SHA-256 digests are stored; comparisons are constant-time."""

import base64
import hashlib
import hmac
import secrets

CONTRIBUTOR_PREFIX = "lrk_"
NODE_PREFIX = "lrn_"
RELAY_PREFIX = "lrr_"
UPLOAD_PREFIX = "lru_"
INVITE_PREFIX = "lri_"


def new_secret(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


def new_id(prefix: str, nbytes: int = 8) -> str:
    return prefix + secrets.token_hex(nbytes)
