"""Offline verification of tasting tokens: pinned algorithm (EdDSA only), trusted `kid`s only, typed token,
issuer, audience = this node, expiry. RFC 8725's pitfalls (alg none, HS256 with the public key as the secret,
a key chosen by the token) are closed by never letting the token choose anything but a known kid."""

import base64
import json
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from node_agent.errors import AgentError

ALGORITHM = "EdDSA"
TOKEN_TYPE = "luckrig-tasting+jwt"  # noqa: S105 - a JWT "typ", not a secret
MAX_TOKEN_CHARS = 4096  # real tokens are under 1.5 KB, public-key ones included
LEEWAY_SEC = 30  # the node's clock may be a little behind or ahead of the tracker's
# Tokens whose signature was checked, with their claims: a token's next request costs a dict lookup and an expiry
# check instead of an Ed25519 verification (~0.1 ms) and PyJWT's decoding around it. Bounded; the oldest go first.
VERIFIED_CACHE_ENTRIES = 1024


@dataclass(frozen=True)
class Claims:
    jti: str
    sub: str
    tier: str
    crypto_mode: str
    max_requests: int
    max_output_tokens: int
    exp: int
    raw: dict
    # The token's whole output budget; None from a tracker that does not send it (docs/api.md, "Tasting tokens").
    max_output_tokens_total: int | None = None
    # The circle the token was issued through (issue 15); None for a public token. A circle rig checks it.
    circle: str | None = None
    # A request signed by a paired device (node_agent/paired.py), not a tracker token: the owner's own device, with
    # no ledger budget and nothing reported to the tracker.
    local: bool = False

    @property
    def per_request_cap(self) -> int:
        """The most output one request may have. `max_output_tokens` is that cap when the token also names its
        total; a token without the total (an older tracker) had `max_output_tokens` as its whole budget, and each
        request gets an equal share of it, so that the first answer cannot spend what was promised to the others."""
        if self.max_output_tokens_total is not None:
            return self.max_output_tokens
        return max(1, self.max_output_tokens // max(1, self.max_requests))

    @property
    def output_budget(self) -> int:
        """The most output all the token's requests may have together."""
        if self.max_output_tokens_total is not None:
            return self.max_output_tokens_total
        return self.max_output_tokens


def load_keys(published: list[dict]) -> dict[str, Ed25519PublicKey]:
    """kid → key, from the tracker's `/api/tracker-keys` list; anything but Ed25519 is skipped."""
    keys = {}
    for item in published:
        if item.get("alg") != ALGORITHM:
            continue
        try:
            key = load_pem_public_key(str(item["public_key_pem"]).encode())
        except (KeyError, ValueError, TypeError):
            continue
        if isinstance(key, Ed25519PublicKey):
            keys[str(item["kid"])] = key
    return keys


def _invalid(message: str) -> AgentError:
    return AgentError(401, "invalid_token", message, headers={"WWW-Authenticate": "Bearer"})


def _header(token: str, what: str) -> dict:
    try:
        segment = token.split(".")[0]
        return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, IndexError, UnicodeDecodeError, RecursionError) as exc:
        raise _invalid(f"The {what} is malformed.") from exc


def decode(token: str, keys: dict[str, Ed25519PublicKey], *, issuer: str, typ: str, what: str) -> dict:
    """Check a signed token's form, type, key, signature, issuer and expiry; the audience is the caller's to check
    (after the signature: only a genuine token may learn that it is for someone else). Shared with the relay,
    which checks tunnel tickets the same way."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise _invalid(f"The {what} is malformed.")
    header = _header(token, what)
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM or header.get("typ") != typ:
        raise _invalid(f"The {what} has the wrong algorithm or type.")
    key = keys.get(str(header.get("kid")))
    if key is None:
        raise _invalid(f"The {what} was signed by a key this node does not trust.")
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            leeway=LEEWAY_SEC,
            options={"verify_aud": False, "require": ["exp", "iat", "jti", "aud", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise _invalid(f"The {what} has expired.") from exc
    except jwt.PyJWTError as exc:
        raise _invalid(f"The {what} is invalid ({exc}).") from exc


def bearer(authorization: str | None, what: str) -> str:
    if not authorization:
        raise _invalid(f"Send a {what} as 'Authorization: Bearer <token>'.")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _invalid(f"The {what} is malformed.")
    return token


class TokenVerifier:
    """Checks tasting tokens against the tracker's keys. A verifier is made per key set (a new set, a new verifier),
    so its cache of verified tokens never outlives the keys that verified them; revocation is the caller's check,
    made on every request."""

    def __init__(self, *, node_id: str, issuer: str, keys: dict[str, Ed25519PublicKey]):
        self.node_id, self.issuer, self.keys = node_id, issuer.rstrip("/"), keys
        self.verified: dict[tuple[str, str], Claims] = {}

    def verify(self, authorization: str | None, *, node_id: str | None = None) -> Claims:
        """The token's claims, or AgentError with the agent's code. `node_id`: the audience when it is not this
        verifier's own node (the relay serves many nodes with one verifier)."""
        token = bearer(authorization, "tasting token")
        audience = node_id or self.node_id
        cached = self.verified.get((token, audience))
        if cached is not None:
            if cached.exp > time.time() - LEEWAY_SEC:  # PyJWT's own expiry rule, with the same leeway
                return cached
            del self.verified[(token, audience)]
            raise _invalid("The tasting token has expired.")
        claims = self._check(token, audience)
        if len(self.verified) >= VERIFIED_CACHE_ENTRIES:
            del self.verified[next(iter(self.verified))]
        self.verified[(token, audience)] = claims
        return claims

    def _check(self, token: str, audience: str) -> Claims:
        claims = decode(token, self.keys, issuer=self.issuer, typ=TOKEN_TYPE, what="tasting token")
        # Checked after the signature: only a genuine token may learn that it is for another node.
        if claims.get("aud") != audience:
            raise AgentError(403, "wrong_node", "This tasting token is for another node.")
        try:
            total = claims.get("max_output_tokens_total")
            circle = claims.get("circle")
            return Claims(
                jti=str(claims["jti"]),
                sub=str(claims["sub"]),
                tier=str(claims.get("tier", "limited")),
                crypto_mode=str(claims.get("crypto_mode", "plain")),
                max_requests=int(claims["max_requests"]),
                max_output_tokens=int(claims["max_output_tokens"]),
                exp=int(claims["exp"]),
                raw=claims,
                max_output_tokens_total=None if total is None else int(total),
                circle=str(circle) if circle else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise _invalid("The tasting token lacks its limits.") from exc
