"""core.renderers.FastJSONRenderer writes what DRF's JSONRenderer writes (orjson underneath), and hands DRF what
orjson cannot encode."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.renderers import JSONRenderer

from core.renderers import FastJSONRenderer

SAMPLES = [
    {"schema_version": 1, "count": 0, "next": None, "nodes": []},
    {"text": 'ラズパイ "quoted" <b> \\ \n\t', "line": "a\u2028b\u2029c", "emoji": "🍀", "control": "\x01"},
    {"punctuation": "it’s … 5 € ‰", "ascii": "only ascii here"},  # U+2000-U+2FFF share U+2028's first byte
    {"floats": [0.1, 24.5, 1.0, -3.25, 0.0, 1e-3, 123456.789], "ints": [0, -1, 2**53], "bools": [True, False]},
    {"nested": {"a": [{"b": None}], "c": {}}, 3: "an int key", "when": datetime(2026, 1, 2, 3, 4, 5, 678901, UTC)},
    {"decimal": Decimal("1.50"), "lazy": gettext_lazy("Not found."), "tuple": (1, 2)},
]


@pytest.mark.parametrize("data", SAMPLES)
def test_same_bytes_as_drf(data):
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_line_separators_are_escaped():
    out = FastJSONRenderer().render({"s": "\u2028\u2029"})
    assert out == b'{"s":"\\u2028\\u2029"}'


def test_what_orjson_cannot_encode_goes_to_drf():
    big = {"n": 2**70}
    assert FastJSONRenderer().render(big) == JSONRenderer().render(big)
    indented = FastJSONRenderer().render({"a": 1}, "application/json; indent=2")
    assert indented == JSONRenderer().render({"a": 1}, "application/json; indent=2")
    assert b"\n" in indented
    assert FastJSONRenderer().render(None) == b""


def test_same_numbers_where_the_text_differs():
    data = {"tiny": 1e-7, "huge": 1e16}
    assert json.loads(FastJSONRenderer().render(data)) == json.loads(JSONRenderer().render(data))
