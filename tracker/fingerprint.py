"""`POST /api/fingerprint/verify`: fetch the key a node publishes (on its own host only) and compare its
fingerprint with the registered one; and reading a fingerprint out of whatever document an operator publishes.
It may import nodes; it must not import moderation or showcase."""

import json
import re
from urllib.parse import urlsplit

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers as s
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api_errors import ApiError
from core.ratelimits import limit
from core.urlguard import fetch_once
from nodes import schemas
from nodes.access import get_visible_node
from nodes.registry import default_health_url
from tracker import pubkeys
from tracker.serializers import FingerprintVerifyIn

FINGERPRINT_MAX_BYTES = 64 * 1024
FINGERPRINT_TIMEOUT_SEC = 3.0


# A fingerprint as an operator may paste it anywhere in a page: `sha256:` and exactly 43 base64url characters.
BARE_FINGERPRINT = re.compile(r"(?<![A-Za-z0-9_-])sha256:[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def fingerprint_in(body: bytes, expected: str | None = None) -> str | None:
    """The node key fingerprint a document publishes: a JSON object with `node_public_key_fingerprint` or
    `node_public_key`, a bare SPKI PEM, or a bare `sha256:…` fingerprint anywhere in the text (a plain-text or
    HTML page). A page may name several keys (an old and a new one, several rigs): then the expected one counts
    when it is among them, since the question is whether the operator publishes it at all."""
    text = body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        if isinstance(doc.get("node_public_key"), str):
            try:
                return pubkeys.validate(doc["node_public_key"])[1]
            except pubkeys.InvalidPublicKey:
                return None
        found = doc.get("node_public_key_fingerprint")
        if found is not None:
            return found if isinstance(found, str) and len(found) <= 100 else None
    start = text.find("-----BEGIN PUBLIC KEY-----")
    end = text.find("-----END PUBLIC KEY-----")
    if start >= 0 and end > start:
        try:
            return pubkeys.validate(text[start : end + len("-----END PUBLIC KEY-----")])[1]
        except pubkeys.InvalidPublicKey:
            return None
    bare = BARE_FINGERPRINT.findall(text)
    if expected in bare:
        return expected
    return bare[0] if bare else None


@limit("RATE_FINGERPRINT_VERIFY", "fingerprint-verify")
class FingerprintVerifyApi(APIView):
    @extend_schema(
        request=FingerprintVerifyIn,
        summary="Fetch the node's published key and compare fingerprints",
        responses={
            200: inline_serializer(
                "FingerprintVerified",
                {
                    "schema_version": s.IntegerField(),
                    "ok": s.BooleanField(),
                    "expected": s.CharField(allow_null=True),
                    "found": s.CharField(allow_null=True),
                    "url": s.CharField(),
                    "error": s.CharField(),
                },
            ),
            400: schemas.ErrorDoc,
            404: schemas.ErrorDoc,
        },
    )
    def post(self, request):
        data = FingerprintVerifyIn(data=request.data)
        data.is_valid(raise_exception=True)
        node = get_visible_node(data.validated_data["node_id"])
        # A relayed node is published through its relay: its agent's /health is the relay's /n/<id>/health.
        endpoint = node.public_endpoint_url or ""
        health = node.health_url or (default_health_url(endpoint) if endpoint else "")
        url = data.validated_data.get("url") or health
        if not url:
            raise ApiError(
                400, "invalid_field", "url: the node has no public URL right now (no relay)", extra={"field": "url"}
            )
        own_hosts = {urlsplit(endpoint).hostname, urlsplit(health).hostname} - {None}
        if urlsplit(url).hostname not in own_hosts:
            # Otherwise the tracker would fetch any URL for anyone: only the node's own host is checked.
            raise ApiError(400, "invalid_field", "url: must be on the node's own host", extra={"field": "url"})
        result = fetch_once(
            url,
            allow_private=settings.ALLOW_PRIVATE_NODE_URLS,
            timeout_sec=FINGERPRINT_TIMEOUT_SEC,
            max_bytes=FINGERPRINT_MAX_BYTES,
        )
        expected = node.node_public_key_fingerprint
        found = fingerprint_in(result.body, expected) if result.ok else None
        error = result.error
        if result.ok and found is None:
            error = "no node key or fingerprint found in the document"
        elif expected is None:
            error = "the node has no registered public key"
        return Response(
            {
                "schema_version": 1,
                "ok": bool(expected and found == expected),
                "expected": expected,
                "found": found,
                "url": url,
                "error": error,
            }
        )
