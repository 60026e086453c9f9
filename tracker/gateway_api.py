"""What the gateway needs from the tracker (issue 14, docs/api.md "Gateway"): tokens a relay asks for on a
taster's behalf and the catalog of routable rigs, both with the relay's secret, and the public `GET /api/gateway`
that tells clients where the gateway is. A relay's token request goes through the same steps as the taster's own
POST /api/tokens (tracker.api.TokenCreateApi): the per-address rate limit, then tracker.tasting.issue_token (tiers,
quotas, bans), then the same body; the taster's address is the one the relay saw, never the relay's. It may
import nodes; it must not import moderation or showcase."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers as s
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api_errors import ApiError
from core.clientip import hash_ip
from core.ratelimits import refuse_if_limited
from core.timefmt import iso
from nodes import catalog, model_names, schemas
from tracker import tasting, tiers
from tracker.api import TOKEN_RATE, TokenIssuedDoc, require, token_json
from tracker.auth import RelaySecretAuthentication, contributor_for_key
from tracker.serializers import RelayTokenIn


class RelayTokenApi(APIView):
    authentication_classes = [RelaySecretAuthentication]

    @extend_schema(
        request=RelayTokenIn,
        summary="A plain-mode tasting token for a gateway client (relay secret): as POST /api/tokens, for client_ip",
        responses={
            201: TokenIssuedDoc,
            400: schemas.ErrorDoc,
            401: schemas.ErrorDoc,
            403: schemas.ErrorDoc,
            404: schemas.ErrorDoc,
            409: schemas.ErrorDoc,
            429: schemas.ErrorDoc,
        },
    )
    def post(self, request, relay_id):
        require(request.user, "the relay secret")
        data = RelayTokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        contributor = None
        if v.get("contributor_key") is not None:
            contributor = contributor_for_key(v["contributor_key"])
            if contributor is None:
                # `field` tells the relay that its client's key was refused, not the relay's own secret.
                raise ApiError(
                    401,
                    "invalid_credential",
                    "contributor_key: not a contributor key (lrk_...), or an unknown one.",
                    extra={"field": "contributor_key"},
                )
        client_hash = hash_ip(v["client_ip"])
        refuse_if_limited(request, *TOKEN_RATE, client_hash=client_hash, explain=lambda: tiers.rate_fields(contributor))
        issued = tasting.issue_token(
            node_id=v["node_id"],
            crypto_mode="plain",
            user_public_key=None,
            ttl_sec=v.get("ttl_sec"),
            contributor=contributor,
            ip_hash=client_hash,
            circle_id=v.get("circle_id"),
        )
        return Response(token_json(issued), status=201)


CatalogRigDoc = inline_serializer(
    "GatewayRig",
    many=True,
    fields={
        "node_id": s.CharField(),
        "model": s.CharField(help_text="the rig's model_name, as registered"),
        "model_key": s.CharField(help_text="the normalised model name (docs/api.md, Gateway)"),
        "quantization": s.CharField(),
        "gpu": s.CharField(),
        "status": s.ChoiceField(choices=["available", "busy"]),
        "endpoint_url": s.CharField(),
        "relay_id": s.CharField(allow_null=True, help_text="the relay holding its tunnel; null for a direct rig"),
        "queue": inline_serializer(
            "GatewayRigQueue",
            {
                "active": s.IntegerField(),
                "waiting": s.IntegerField(),
                "max_active": s.IntegerField(),
                "eta_sec": s.IntegerField(allow_null=True),
            },
        ),
        "tok_per_sec_p50": s.FloatField(allow_null=True),
        "ttft_ms_p50": s.FloatField(allow_null=True),
        "rarity_score": s.FloatField(),
    },
)


class RelayCatalogApi(APIView):
    authentication_classes = [RelaySecretAuthentication]

    @extend_schema(
        summary="Every rig a gateway may route to now, with the model-name aliases (relay secret)",
        responses={
            200: inline_serializer(
                "GatewayCatalog",
                {
                    "schema_version": s.IntegerField(),
                    "generated_at": s.DateTimeField(),
                    "rigs": CatalogRigDoc,
                    "aliases": s.DictField(child=s.CharField(), help_text="alias -> model_key"),
                },
            ),
            401: schemas.ErrorDoc,
            403: schemas.ErrorDoc,
        },
    )
    def get(self, request, relay_id):
        require(request.user, "the relay secret")
        now = timezone.now()
        return Response(
            {
                "schema_version": 1,
                "generated_at": iso(now),
                "rigs": catalog.routable_rigs(now),
                "aliases": dict(model_names.ALIASES),
            }
        )


class GatewayApi(APIView):
    @extend_schema(
        summary="Where the OpenAI-compatible gateway is: its base URL and every live relay's",
        responses={
            200: inline_serializer(
                "Gateway",
                {
                    "schema_version": s.IntegerField(),
                    "base_url": s.CharField(allow_null=True, help_text="null while no relay is live"),
                    "relays": inline_serializer(
                        "GatewayRelay", {"relay_id": s.CharField(), "base_url": s.CharField()}, many=True
                    ),
                },
            )
        },
    )
    def get(self, request):
        relays = catalog.gateway_relays(timezone.now())
        return Response({"schema_version": 1, "base_url": catalog.gateway_base_url(relays), "relays": relays})
