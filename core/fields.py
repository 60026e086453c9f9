"""Strict DRF fields and a strict serializer base.

DRF's defaults coerce: a CharField takes 42, a FloatField takes "1.5", an IntegerField takes "7". The wire
contract wants wrong types refused with the field named, so these fields accept exactly one JSON type.
Strings never carry NUL (PostgreSQL cannot store it) and numbers stay finite and bounded."""

import math
import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.urlguard import check_url_syntax


class StrictCharField(serializers.CharField):
    default_error_messages = {"type": "must be a string", "nul": "must not contain NUL characters"}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("type")
        if "\x00" in data:
            self.fail("nul")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    default_error_messages = {"type": "must be a number"}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("type")
        try:
            value = float(data)
        except OverflowError:
            self.fail("max_value", max_value=self.max_value)
        if not math.isfinite(value):
            self.fail("type")
        return super().to_internal_value(value)


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"type": "must be an integer"}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            if isinstance(data, float) and data.is_integer() and abs(data) < 2**53:
                data = int(data)
            else:
                self.fail("type")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"type": "must be true or false"}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("type")
        return data


@extend_schema_field(OpenApiTypes.URI)
class HttpUrlField(StrictCharField):
    """An absolute http(s) URL with a host and no credentials."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 500)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data).strip()
        try:
            check_url_syntax(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        return value


TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")


@extend_schema_field({"type": "array", "items": {"type": "string", "maxLength": 32}, "maxItems": 12})
class TagsField(serializers.Field):
    """Up to 12 lowercase tags of at most 32 characters: letters, digits and . _ + - (no commas)."""

    def __init__(self, *, max_tags: int = 12, max_length: int = 32, **kwargs):
        self.max_tags, self.max_length = max_tags, max_length
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("must be a list of strings")
        if len(data) > self.max_tags:
            raise serializers.ValidationError(f"at most {self.max_tags} tags")
        tags: list[str] = []
        for item in data:
            if not isinstance(item, str):
                raise serializers.ValidationError("must be a list of strings")
            tag = item.strip().lower()
            if not tag or len(tag) > self.max_length:
                raise serializers.ValidationError(f"each tag must be 1 to {self.max_length} characters")
            if not TAG_RE.match(tag):
                raise serializers.ValidationError(
                    f"tag {tag[:40]!r} may only hold lowercase letters, digits and . _ + -"
                )
            if tag not in tags:
                tags.append(tag)
        return tags

    def to_representation(self, value):
        return list(value)


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields (400 `unknown_field`) and a `schema_version` other than 1."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["must be a JSON object"]})
        known = set(self.fields) | {"schema_version"}
        for key in data:
            if key not in known:
                raise serializers.ValidationError({key: [serializers.ErrorDetail("unknown field", "unknown_field")]})
        if "schema_version" in data and (isinstance(data["schema_version"], bool) or data["schema_version"] != 1):
            raise serializers.ValidationError({"schema_version": ["must be 1"]})
        return super().to_internal_value(data)
