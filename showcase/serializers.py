"""The shape of a replay file as `POST /api/replays` takes it: strict types, bounded sizes, unknown fields
refused. The timing object is the allowlist of `POST /api/replay/timing`, so a replay file and a timing
upload describe a tasting with the same fields."""

import math

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.fields import StrictCharField, StrictSerializer
from showcase.models import SET_MAX, SET_MIN
from tracker.serializers import TimingIn

PROMPT_MAX = 16_000
RESPONSE_MAX = 64_000
CHUNKS_MAX = 8192
MESSAGES_MAX = 200  # a conversation's earlier turns: 100 questions and their answers
CHUNK_MS_MAX = 86_400_000  # a day, like generation_sec's bound


class ReplayTimingIn(TimingIn):
    """The timing upload's allowlist. `node_id` may be left out (the replay names its node); the agent's
    replay files carry it, and it must then be the replay's node."""

    node_id = StrictCharField(max_length=64, required=False)


@extend_schema_field(
    {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": CHUNK_MS_MAX}, "maxItems": CHUNKS_MAX}
)
class ChunkTimestampsField(serializers.Field):
    """Milliseconds from the start of the request to each streamed chunk: at most 8192 JSON numbers, each
    from 0 to a day, never decreasing. An error names the offending item (`chunk_timestamps[3]`)."""

    default_error_messages = {"type": "must be a list of numbers", "max": f"at most {CHUNKS_MAX} timestamps"}

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("type")
        if len(data) > CHUNKS_MAX:
            self.fail("max")
        previous = 0.0
        out: list[float] = []
        for index, item in enumerate(data):
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise serializers.ValidationError({index: ["must be a number of milliseconds"]})
            try:
                value = float(item)
            except OverflowError:
                value = math.inf
            if not math.isfinite(value) or not 0 <= value <= CHUNK_MS_MAX:
                raise serializers.ValidationError({index: [f"must be between 0 and {CHUNK_MS_MAX} ms"]})
            if value < previous:
                raise serializers.ValidationError({index: ["must not be smaller than the timestamp before it"]})
            previous = value
            out.append(int(value) if value.is_integer() else value)
        return out

    def to_representation(self, value):
        return list(value)


@extend_schema_field({"type": "array", "items": {"type": "string"}, "maxItems": CHUNKS_MAX})
class ChunksField(serializers.Field):
    """The text of each streamed chunk (optional): strings, as many as chunk_timestamps, joining to `response`."""

    default_error_messages = {"type": "must be a list of strings", "max": f"at most {CHUNKS_MAX} chunks"}

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("type")
        if len(data) > CHUNKS_MAX:
            self.fail("max")
        for index, item in enumerate(data):
            if not isinstance(item, str) or "\x00" in item:
                raise serializers.ValidationError({index: ["must be a string"]})
        return data

    def to_representation(self, value):
        return list(value)


class EarlierMessageIn(StrictSerializer):
    """One earlier message of a conversation: the taster's question or the rig's answer (the system message
    has its own field)."""

    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = StrictCharField(max_length=RESPONSE_MAX, trim_whitespace=False)


class ReplayIn(StrictSerializer):
    node_id = StrictCharField(max_length=64)
    created_at = serializers.DateTimeField()
    prompt = StrictCharField(max_length=PROMPT_MAX, trim_whitespace=False)
    # The agent's replay files carry the system prompt (null when there was none): it is part of what the
    # model was asked, so it is published with the prompt and filtered like it.
    system = StrictCharField(
        required=False, allow_null=True, allow_blank=True, max_length=PROMPT_MAX, trim_whitespace=False
    )
    response = StrictCharField(max_length=RESPONSE_MAX, allow_blank=True, trim_whitespace=False)
    chunk_timestamps = ChunkTimestampsField()
    chunks = ChunksField(required=False)
    timing = ReplayTimingIn()
    # A conversation's earlier turns, oldest first: user, assistant, user, assistant… ending with the answer
    # before `prompt` (docs/api.md). Left out, or [], for a single question: the files older clients write.
    messages = serializers.ListField(child=EarlierMessageIn(), required=False, max_length=MESSAGES_MAX)

    def to_internal_value(self, data):
        # A replay is a file format: it must say which version of it it is.
        if isinstance(data, dict) and "schema_version" not in data:
            raise serializers.ValidationError({"schema_version": ["required (1)"]})
        return super().to_internal_value(data)

    def validate(self, data):
        timing = data["timing"]
        if "node_id" in timing and timing["node_id"] != data["node_id"]:
            raise serializers.ValidationError({"timing": {"node_id": ["must be the replay's node_id"]}})
        timing.pop("node_id", None)
        for index, message in enumerate(data.get("messages") or []):
            expected = "user" if index % 2 == 0 else "assistant"
            if message["role"] != expected:
                raise serializers.ValidationError(
                    {"messages": {index: [f"must be a {expected} message (turns alternate)"]}}
                )
        if len(data.get("messages") or []) % 2:
            raise serializers.ValidationError({"messages": ["must end with the answer to the last earlier question"]})
        chunks = data.get("chunks")
        if chunks is not None:
            if len(chunks) != len(data["chunk_timestamps"]):
                raise serializers.ValidationError({"chunks": ["must have one string per chunk_timestamps entry"]})
            if "".join(chunks) != data["response"]:
                raise serializers.ValidationError({"chunks": ["must join to exactly the response"]})
        return data


class ReplaySetMemberIn(StrictSerializer):
    replay_id = StrictCharField(max_length=20)
    # The upload key of the tasting this replay records: a set names several, so they travel in the body,
    # each beside the replay it proves (see docs/api.md, "Rig against rig").
    upload_key = StrictCharField(max_length=4000)  # long enough that a JWT there is told it is not one


class ReplaySetIn(StrictSerializer):
    members = serializers.ListField(child=ReplaySetMemberIn(), min_length=SET_MIN, max_length=SET_MAX)

    def to_internal_value(self, data):
        if isinstance(data, dict) and "schema_version" not in data:
            raise serializers.ValidationError({"schema_version": ["required (1)"]})
        return super().to_internal_value(data)

    def validate_members(self, members):
        ids = [m["replay_id"] for m in members]
        if len(set(ids)) != len(ids):
            raise serializers.ValidationError("each replay may appear once")
        return members
