"""OpenAPI descriptions of the public node shapes (used by drf-spectacular only; the runtime shape comes from
nodes.public_node, and a test keeps the two in agreement)."""

from rest_framework import serializers as s


class ShowcaseBadgeDoc(s.Serializer):
    id = s.CharField()
    label = s.CharField()
    reason = s.CharField()


class ContributionDoc(s.Serializer):
    total = s.FloatField()
    tier = s.ChoiceField(choices=["limited", "contributor"])
    components = s.DictField(child=s.FloatField(), help_text="existence, rarity, usage, discovery, note")


class HealthDoc(s.Serializer):
    status = s.ChoiceField(choices=["available", "busy", "unavailable", "unknown"])
    last_seen_at = s.DateTimeField(allow_null=True)
    latency_ms = s.IntegerField(allow_null=True)
    uptime_ratio_24h = s.FloatField(allow_null=True)


class QueueDoc(s.Serializer):
    active = s.IntegerField()
    waiting = s.IntegerField()
    max_active = s.IntegerField()
    updated_at = s.DateTimeField(allow_null=True)


class TimingSourcesDoc(s.Serializer):
    relay = s.IntegerField(help_text="samples measured by the relay that carried the tasting")
    taster = s.IntegerField(help_text="samples uploaded by tasters' own clients")


class CommunityTimingDoc(s.Serializer):
    samples_count = s.IntegerField(help_text="both sources")
    by_source = TimingSourcesDoc()
    tok_per_sec_p50 = s.FloatField(allow_null=True)
    ttft_ms_p50 = s.FloatField(allow_null=True)
    last_uploaded_at = s.DateTimeField(allow_null=True)


class OwnerDoc(s.Serializer):
    id = s.CharField()
    handle = s.CharField(allow_null=True)


class CircleRefDoc(s.Serializer):
    id = s.CharField()
    name = s.CharField()


class ModelFileDoc(s.Serializer):
    sha256 = s.RegexField(r"^[0-9a-f]{64}$", help_text="the model file's SHA-256, as the rig reports it")
    quantization = s.CharField(allow_null=True, help_text="from the GGUF header's general.file_type, e.g. Q4_1")
    architecture = s.CharField(allow_null=True)
    parameters = s.IntegerField(allow_null=True)
    context_length = s.IntegerField(allow_null=True, help_text="the context the model was trained for")
    catalog = s.CharField(allow_null=True, help_text="the catalog entry with this sha256, if any")


class PublicNodeDoc(s.Serializer):
    id = s.SlugField()
    display_name = s.CharField()
    endpoint_url = s.URLField(
        allow_null=True,
        help_text="direct: the node's own URL; relayed: <relay public URL>/n/<id>/v1 (null while no relay is assigned)",
    )
    model_name = s.CharField()
    quantization = s.CharField()
    lora = s.CharField()
    gpu = s.CharField()
    vram_gb = s.FloatField(allow_null=True)
    context_length = s.IntegerField(allow_null=True)
    tuning_note = s.CharField()
    availability_note = s.CharField()
    tags = s.ListField(child=s.CharField())
    visibility = s.ChoiceField(choices=["public", "unlisted", "circle"])
    node_public_key = s.CharField(allow_null=True)
    node_public_key_fingerprint = s.CharField(allow_null=True)
    created_at = s.DateTimeField()
    updated_at = s.DateTimeField()
    rarity_score = s.FloatField()
    showcase = ShowcaseBadgeDoc(many=True)
    contribution = ContributionDoc()
    health = HealthDoc()
    queue = QueueDoc()
    community_timing = CommunityTimingDoc()
    owner = OwnerDoc()
    reachability = s.ChoiceField(choices=["direct", "relayed"])
    circles = CircleRefDoc(
        many=True,
        help_text="the circles this rig is shared with that the caller is in (its owner: all); [] on lists and "
        "for anonymous callers",
    )
    circle_only_hours = s.ListField(
        child=s.IntegerField(min_value=0, max_value=23),
        help_text="UTC hours in which this rig serves its circles only (others get 409 circle_only_now); sorted",
    )
    model_file = ModelFileDoc(
        allow_null=True,
        help_text="the model file the rig reports in its heartbeats: its claim, displayed, never checked; null when "
        "its latest heartbeat said nothing about it",
    )


class NodeListDoc(s.Serializer):
    schema_version = s.IntegerField()
    sort = s.CharField()
    count = s.IntegerField()
    count_is_estimate = s.BooleanField(
        help_text="true when `count` is a recent count kept in the cache (a registry of more than "
        "NODE_LIST_EXACT_COUNT_UP_TO listed rigs), not one made for this request"
    )
    next = s.CharField(allow_null=True)
    previous = s.CharField(allow_null=True)
    nodes = PublicNodeDoc(many=True)


class NodeDetailDoc(s.Serializer):
    schema_version = s.IntegerField()
    node = PublicNodeDoc()


class HealthPointDoc(s.Serializer):
    at = s.DateTimeField()
    status = s.CharField()
    latency_ms = s.IntegerField(allow_null=True)


class NodeMetricsDoc(s.Serializer):
    schema_version = s.IntegerField()
    node_id = s.CharField()
    samples = s.IntegerField(help_text="health samples kept for the last 7 days")
    uptime_ratio_24h = s.FloatField(allow_null=True)
    uptime_ratio_7d = s.FloatField(allow_null=True)
    last_error = s.CharField()
    recent = HealthPointDoc(many=True)


class ShowcaseCategoryDoc(s.Serializer):
    id = s.CharField()
    label = s.CharField()
    node_id = s.CharField()
    reason = s.CharField()


class ShowcaseDoc(s.Serializer):
    schema_version = s.IntegerField()
    categories = ShowcaseCategoryDoc(many=True)


class WantedModelDoc(s.Serializer):
    name = s.CharField(help_text="the catalog's short name")
    file = s.CharField()
    sha256 = s.CharField()
    size = s.IntegerField(allow_null=True)
    licence = s.CharField(allow_null=True)
    source = s.CharField(allow_null=True)
    rigs = s.IntegerField(help_text="listed live rigs serving this very file (by sha256)")
    pull = s.CharField(help_text="the command that fetches it: luckrig-node pull NAME")


class WantedModelsDoc(s.Serializer):
    schema_version = s.IntegerField()
    wanted = WantedModelDoc(many=True)


class ErrorDoc(s.Serializer):
    error = s.CharField()
    code = s.CharField()
    field = s.CharField(required=False)
