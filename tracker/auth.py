"""Bearer credentials for DRF views: contributor keys, node secrets, relay secrets and tasters' upload keys.

Each class returns `(principal, None)`; views read `request.user`. A malformed or unknown credential is a
401 (`unauthorized`), never a silent fall-back to anonymous, so a typo in a key cannot go unnoticed."""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from core.api_errors import ApiError
from core.clientip import ip_hash
from nodes import services as node_services
from nodes.models import Contributor, Node, Relay, node_id_key
from tracker import bans, credentials, throttle
from tracker.models import TastingToken


def bearer(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise exceptions.AuthenticationFailed("Send the credential as 'Authorization: Bearer <value>'.")
    return value.strip()


def is_contributor_key(value: str) -> bool:
    return value.startswith(credentials.CONTRIBUTOR_PREFIX) and len(value) <= 100


def contributor_for_key(value: str) -> Contributor | None:
    """The contributor whose key this is (its stored digest compared in constant time), else None: the one lookup
    for a contributor key, sent by its holder (below) or by a relay on the holder's behalf (tracker.gateway_api)."""
    if not is_contributor_key(value):
        return None
    contributor = Contributor.objects.filter(key_hash=credentials.digest(value)).first()
    if contributor is None or not credentials.matches(value, contributor.key_hash):
        return None
    return contributor


class ContributorKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        value = bearer(request)
        if value is None:
            return None
        if not is_contributor_key(value):
            raise exceptions.AuthenticationFailed("That is not a contributor key (lrk_...).")
        contributor = contributor_for_key(value)
        if contributor is None:
            raise exceptions.AuthenticationFailed("Unknown contributor key.")
        return contributor, None

    def authenticate_header(self, request):
        return "Bearer"


# URL name → the kind of agent message it carries (tracker.throttle).
AGENT_PATHS = {"api-node-heartbeat": "heartbeat", "api-node-usage": "usage", "api-moderation-flags": "flag"}


class NodeSecretAuthentication(authentication.BaseAuthentication):
    """The node comes from the URL (`node_id`) and its stored digest is compared in constant time; on URLs
    without a node id the digest itself finds the node."""

    def authenticate(self, request):
        value = bearer(request)
        if value is None:
            return None
        if not value.startswith(credentials.NODE_PREFIX) or len(value) > 100:
            raise exceptions.AuthenticationFailed("That is not a node secret (lrn_...).")
        node_id = (request.parser_context or {}).get("kwargs", {}).get("node_id")
        if node_id is not None:
            # Hidden nodes included (their agents hear why they are refused); an id that cannot name a node
            # (too long, NUL, which PostgreSQL refuses to compare) is no node.
            key = node_id_key(node_id)
            node = Node.objects.filter(pk=key).first() if key is not None else None
        else:
            node = Node.objects.filter(secret_hash=credentials.digest(value)).first()
        if node is None or not credentials.matches(value, node.secret_hash):
            raise exceptions.AuthenticationFailed("Unknown node or wrong node secret.")
        # A taken-down or banned node's agent is refused on every path it uses (403 taken_down / banned).
        bans.refuse_hidden_node(node)
        # Each agent path that writes per message has a per-node budget (tracker.throttle), checked here where
        # the node is known, so that paths served by other apps (flags) are throttled alike.
        match = getattr(request, "resolver_match", None)
        throttle.refuse_if_over(node.pk, AGENT_PATHS.get(match.url_name if match else "", ""))
        node_services.note_owner_network(node, ip_hash(request))  # the agent's network is the owner's
        return node, None

    def authenticate_header(self, request):
        return "Bearer"


class RelaySecretAuthentication(authentication.BaseAuthentication):
    """A relay's secret, for `/api/relays/<relay_id>/…`. The secret's digest finds its relay (unique index); the
    stored digest is compared in constant time, and the relay must be the one in the path. A relay process
    that was given the wrong relay's secret hears so (403 `wrong_relay`) rather than a bare 401."""

    def authenticate(self, request):
        value = bearer(request)
        if value is None:
            return None
        relay = None
        if value.startswith(credentials.RELAY_PREFIX) and len(value) <= 100:
            relay = Relay.objects.filter(secret_hash=credentials.digest(value)).first()
        if relay is None or not credentials.matches(value, relay.secret_hash):
            raise ApiError(
                401,
                "invalid_credential",
                "Unknown relay secret (lrr_...): register the relay with `manage.py relay add`.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        relay_id = (request.parser_context or {}).get("kwargs", {}).get("relay_id")
        if relay_id is not None and relay.id != str(relay_id):
            raise ApiError(
                403, "wrong_relay", f"This secret belongs to relay {relay.id!r}, not {str(relay_id)[:64]!r}."
            )
        return relay, None

    def authenticate_header(self, request):
        return "Bearer"


# A tasting's timing and replay may be sent for a day after its token expired: they often come after the tasting.
TIMING_UPLOAD_GRACE_SEC = 24 * 3600


class UploadKeyAuthentication(authentication.BaseAuthentication):
    """The taster's upload key (`lru_`), returned once beside the tasting token: the credential for what the
    taster says about a tasting afterwards (timing, a published replay). Never the tasting token itself: every
    request to the rig carries that one, so the node operator holds it and could speak for the taster."""

    def authenticate(self, request):
        value = bearer(request)
        if value is None:
            return None
        token = None
        if value.startswith(credentials.UPLOAD_PREFIX) and len(value) <= 100:
            token = (
                TastingToken.objects.select_related("node", "contributor")
                .filter(upload_key_hash=credentials.digest(value))
                .first()
            )
        if token is None or not credentials.matches(value, token.upload_key_hash):
            raise ApiError(
                401,
                "invalid_credential",
                "This needs the tasting's upload key (lru_..., returned with the token by POST /api/tokens); "
                "the tasting token itself is not accepted here.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # A banned holder hears why (their tokens were revoked with the ban), before "revoked".
        bans.refuse_if_banned(("contributor", token.contributor_id))
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This tasting token was revoked.")
        if timezone.now() > token.expires_at + timedelta(seconds=TIMING_UPLOAD_GRACE_SEC):
            raise exceptions.AuthenticationFailed("This upload key expired: a day after its tasting token.")
        return token, None

    def authenticate_header(self, request):
        return "Bearer"


class _BearerScheme(OpenApiAuthenticationExtension):
    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": self.description}


class ContributorKeyScheme(_BearerScheme):
    target_class = ContributorKeyAuthentication
    name = "contributorKey"
    description = "A contributor key, lrk_..."


class NodeSecretScheme(_BearerScheme):
    target_class = NodeSecretAuthentication
    name = "nodeSecret"
    description = "A node secret, lrn_..."


class RelaySecretScheme(_BearerScheme):
    target_class = RelaySecretAuthentication
    name = "relaySecret"
    description = "A relay secret, lrr_... (manage.py relay add)"


class UploadKeyScheme(_BearerScheme):
    target_class = UploadKeyAuthentication
    name = "uploadKey"
    description = "The upload key (lru_...) returned with a tasting token by POST /api/tokens"
