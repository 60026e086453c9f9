"""Request shapes of the tracker's write endpoints: strict types, bounded sizes, unknown fields refused."""

import ipaddress
import re
from urllib.parse import urlsplit

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.fields import (
    HttpUrlField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
    TagsField,
)
from core.urlguard import host_looks_public

HANDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
NOTE_MAX = 4000


class ContributorIn(StrictSerializer):
    handle = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=40)

    def validate_handle(self, value):
        if value and not HANDLE_RE.match(value):
            raise serializers.ValidationError("1 to 40 letters, digits, _ . - (starting with a letter or digit)")
        return value or None


MAX_CIRCLES = 50  # circles one rig may be shared with


@extend_schema_field(
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23}, "maxItems": 24, "uniqueItems": True}
)
class HoursField(serializers.Field):
    """UTC hours of the day: distinct whole numbers 0 to 23 (booleans are not numbers here), kept sorted."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("must be a list of hours (0 to 23, UTC)")
        if not all(isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= 23 for h in data):
            raise serializers.ValidationError("each hour is a whole number from 0 to 23 (UTC)")
        if len(set(data)) != len(data):
            raise serializers.ValidationError("each hour at most once")
        return sorted(data)

    def to_representation(self, value):
        return list(value)


class NodeIn(StrictSerializer):
    id = StrictCharField(required=False, max_length=56)
    display_name = StrictCharField(required=False, allow_blank=True, max_length=120)
    # Without one (or null) the node is relayed: its agent dials out to a relay (tracker.relays). 490 leaves
    # room for the derived health_url (…/health, 500 max).
    endpoint_url = HttpUrlField(max_length=490, required=False, allow_null=True)
    health_url = HttpUrlField(required=False)
    model_name = StrictCharField(max_length=120)
    quantization = StrictCharField(max_length=40)
    lora = StrictCharField(required=False, allow_blank=True, max_length=120)
    gpu = StrictCharField(max_length=120)
    vram_gb = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=100000)
    context_length = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=100_000_000)
    tuning_note = StrictCharField(required=False, allow_blank=True, max_length=NOTE_MAX, trim_whitespace=False)
    availability_note = StrictCharField(required=False, allow_blank=True, max_length=NOTE_MAX, trim_whitespace=False)
    tags = TagsField(required=False)
    visibility = serializers.ChoiceField(choices=["public", "unlisted", "circle"], required=False)
    # The circles the rig is shared with (ids); whether the owner is in each is the service's check (403).
    circles = serializers.ListField(child=StrictCharField(max_length=32), max_length=MAX_CIRCLES, required=False)
    circle_only_hours = HoursField(required=False)
    node_public_key = StrictCharField(
        required=False, allow_null=True, allow_blank=True, max_length=1000, trim_whitespace=False
    )

    def _public_only(self, value):
        """A node's URLs are fetched by the monitor and by tasters: refuse obviously private targets up front
        (the fetches themselves are guarded again at connect time)."""
        if value and not settings.ALLOW_PRIVATE_NODE_URLS and not host_looks_public(urlsplit(value).hostname or ""):
            raise serializers.ValidationError("must point at a public host (not a private, loopback or local address)")
        return value

    def validate_endpoint_url(self, value):
        return self._public_only(value)

    def validate_health_url(self, value):
        return self._public_only(value)

    def validate(self, attrs):
        if attrs.get("health_url") and not attrs.get("endpoint_url") and not self.partial:
            # A relayed node is reached through its relay; the monitor never probes it.
            raise serializers.ValidationError({"health_url": ["only a direct node (with endpoint_url) has one"]})
        return attrs


class NodePatch(NodeIn):
    """Every field optional; `id` cannot change (it is in every link and token)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields.pop("id")
        for field in self.fields.values():
            field.required = False


class QueueEntryIn(StrictSerializer):
    ticket = StrictCharField(max_length=32)
    position = StrictIntegerField(min_value=0, max_value=100000)
    state = serializers.ChoiceField(choices=["waiting", "generating"])
    since = serializers.DateTimeField()


class QueueIn(StrictSerializer):
    active = StrictIntegerField(min_value=0, max_value=100000)
    waiting = StrictIntegerField(min_value=0, max_value=100000)
    max_active = StrictIntegerField(min_value=0, max_value=100000)
    max_waiting = StrictIntegerField(required=False, min_value=0, max_value=100000)
    entries = QueueEntryIn(many=True, required=False, max_length=256)
    eta_sec = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=10**7)


LIST_TELEMETRY_KEYS = frozenset({"filter_categories"})  # the agent's filtered categories, shown on the rig page


class TelemetryField(serializers.DictField):
    """A flat object of at most 32 scalar values (strings up to 200 characters); `filter_categories` may be a list
    of at most 20 strings of at most 64 characters."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be an object")
        if len(data) > 32:
            raise serializers.ValidationError("at most 32 keys")
        for key, value in data.items():
            if len(key) > 64 or "\x00" in key:
                raise serializers.ValidationError("keys are at most 64 characters")
            if key in LIST_TELEMETRY_KEYS and isinstance(value, list):
                if len(value) > 20 or not all(
                    isinstance(v, str) and 0 < len(v) <= 64 and "\x00" not in v for v in value
                ):
                    raise serializers.ValidationError(f"{key}: at most 20 strings of at most 64 characters")
                continue
            if isinstance(value, dict | list):
                raise serializers.ValidationError(f"{key[:64]}: nested values are not allowed")
            if isinstance(value, str) and (len(value) > 200 or "\x00" in value):
                raise serializers.ValidationError(f"{key[:64]}: strings are at most 200 characters")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
                raise serializers.ValidationError(f"{key[:64]}: number out of range")
        return dict(data)


class ModelIdentityIn(StrictSerializer):
    """The served model file as the agent read it (node_agent/model_identity.py): the rig's claim, displayed only."""

    model = StrictCharField(max_length=200)
    sha256 = serializers.RegexField(r"\A[0-9a-f]{64}\Z", max_length=64)
    size = StrictIntegerField(min_value=0, max_value=2**53)
    source = serializers.ChoiceField(choices=["file", "ollama"])
    architecture = StrictCharField(required=False, allow_null=True, max_length=64)
    parameters = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=2**53)
    size_label = StrictCharField(required=False, allow_null=True, max_length=32)
    quantization = StrictCharField(required=False, allow_null=True, max_length=32)
    context_length = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=2**31)
    tokenizer = StrictCharField(required=False, allow_null=True, max_length=64)
    chat_template_sha256 = serializers.RegexField(r"\A[0-9a-f]{64}\Z", max_length=64, required=False, allow_null=True)


class HeartbeatIn(StrictSerializer):
    queue = QueueIn()
    models = serializers.ListField(child=StrictCharField(max_length=200), max_length=64, required=False)
    agent_version = StrictCharField(required=False, allow_blank=True, max_length=40)
    telemetry = TelemetryField(required=False)
    model_identity = ModelIdentityIn(required=False)


class UsageEntryIn(StrictSerializer):
    jti = StrictCharField(max_length=64)
    requests = StrictIntegerField(min_value=0, max_value=1_000_000)
    prompt_tokens = StrictIntegerField(min_value=0, max_value=1_000_000_000, required=False)
    completion_tokens = StrictIntegerField(min_value=0, max_value=1_000_000_000, required=False)
    first_at = serializers.DateTimeField(required=False, allow_null=True)
    last_at = serializers.DateTimeField(required=False, allow_null=True)


class UsageIn(StrictSerializer):
    report_id = StrictCharField(max_length=64)
    entries = UsageEntryIn(many=True, max_length=1000)


class TokenIn(StrictSerializer):
    node_id = StrictCharField(max_length=64)
    # The circle to taste through, when the caller is in several the rig is shared with (else the first joined).
    circle_id = StrictCharField(required=False, allow_null=True, max_length=32)
    crypto_mode = serializers.ChoiceField(choices=["plain", "public-key"], required=False, default="plain")
    user_public_key = StrictCharField(
        required=False, allow_null=True, allow_blank=True, max_length=1000, trim_whitespace=False
    )
    ttl_sec = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=10**9)

    def to_internal_value(self, data):
        # A client may claim a score; the tier comes from the server-side score only, so it is ignored.
        if isinstance(data, dict) and "contribution_score" in data:
            data = {k: v for k, v in data.items() if k != "contribution_score"}
        return super().to_internal_value(data)


class RelayTokenIn(StrictSerializer):
    """A relay asking for a token on a taster's behalf (the gateway): plain mode only, so `crypto_mode` and
    `user_public_key` are unknown fields here (400 `unknown_field`)."""

    node_id = StrictCharField(max_length=64)
    # The taster's address as the relay saw it: IPv4 or IPv6 text, hashed like a direct caller's (core.clientip).
    client_ip = StrictCharField(max_length=64)
    # Absent or null: the anonymous limited tier.
    contributor_key = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=200)
    ttl_sec = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=10**9)
    circle_id = StrictCharField(required=False, allow_null=True, max_length=32)

    def validate_client_ip(self, value):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise serializers.ValidationError("must be an IPv4 or IPv6 address") from None


class PublishIn(StrictSerializer):
    """Making a circle rig public or unlisted: its own explicit act (POST /api/nodes/<id>/publish)."""

    visibility = serializers.ChoiceField(choices=["public", "unlisted"])


class TunnelIn(StrictSerializer):
    # The relay the agent last failed to dial: passed over if it has stopped heartbeating too.
    unreachable_relay_id = StrictCharField(required=False, allow_null=True, max_length=64)


SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
MAX_TUNNELS = 10_000


@extend_schema_field({"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": MAX_TUNNELS})
class NodeIdListField(serializers.Field):
    """Up to 10,000 node ids (slugs). Checked in one pass: a relay sends this every ten seconds."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("must be a list of node ids")
        if len(data) > MAX_TUNNELS:
            raise serializers.ValidationError(f"at most {MAX_TUNNELS} node ids")
        for index, item in enumerate(data):
            if not isinstance(item, str) or not SLUG_RE.match(item):
                raise serializers.ValidationError(f"item {index} is not a node id (a slug of 1 to 64 characters)")
        return data

    def to_representation(self, value):
        return list(value)


class RelayHeartbeatIn(StrictSerializer):
    version = StrictCharField(allow_blank=True, max_length=40)
    tunnels = NodeIdListField()
    open_streams = StrictIntegerField(min_value=0, max_value=10_000_000)
    draining = StrictBooleanField(required=False, default=False)


class RelayReportEntryIn(StrictSerializer):
    """What a relay measured about one request it carried. Types are strict (400 naming the field); values
    that are of the right type but physically impossible are not refused: the entry is skipped."""

    jti = StrictCharField(max_length=64)
    node_id = StrictCharField(max_length=64)
    # 0 when no answer came back from the agent (the tunnel went before the response head).
    status = StrictIntegerField(min_value=0, max_value=599)
    mode = serializers.ChoiceField(choices=["plain", "public-key"])
    stream = StrictBooleanField()
    ttft_ms = StrictFloatField(allow_null=True)
    content_chunks = StrictIntegerField(min_value=-(2**53), max_value=2**53)
    chunks_per_sec = StrictFloatField(allow_null=True)
    bytes = StrictIntegerField(min_value=-(2**53), max_value=2**53)
    ended = serializers.ChoiceField(choices=["done", "error", "taster_gone", "tunnel_lost", "stalled", "refused"])
    started_at = serializers.DateTimeField()
    duration_ms = StrictFloatField()


class RelayReportIn(StrictSerializer):
    report_id = StrictCharField(max_length=64)
    entries = RelayReportEntryIn(many=True, max_length=500)


class FingerprintVerifyIn(StrictSerializer):
    node_id = StrictCharField(max_length=64)
    url = HttpUrlField(required=False)


DISALLOWED_TIMING_KEY = re.compile(r"prompt|response|message|content|chunk|envelope|body", re.IGNORECASE)


class TimingIn(StrictSerializer):
    """The allowlisted, client-measured timing of one tasting. Text of any kind never reaches the tracker."""

    node_id = StrictCharField(max_length=64)
    mode = serializers.ChoiceField(choices=["plain", "public-key"], required=False)
    tok_per_sec = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=1_000_000)
    ttft_ms = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=3_600_000)
    network_ttft_ms = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=3_600_000)
    proxy_ttft_ms = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=3_600_000)
    generation_sec = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=86_400)
    queue_wait_sec = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=86_400)
    output_tokens = StrictIntegerField(required=False, allow_null=True, min_value=0, max_value=10_000_000)
    tokenizer = StrictCharField(required=False, allow_blank=True, max_length=64)
    limited_output_truncated = StrictBooleanField(required=False, allow_null=True)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            for key, value in data.items():
                if DISALLOWED_TIMING_KEY.search(key):
                    raise serializers.ValidationError(
                        {key: [serializers.ErrorDetail("text fields are never uploaded", "disallowed_field")]}
                    )
                if isinstance(value, dict | list):
                    raise serializers.ValidationError(
                        {key: [serializers.ErrorDetail("nested values are not allowed", "nested_value")]}
                    )
        return super().to_internal_value(data)
