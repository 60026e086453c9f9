"""A faster JSON renderer for the big public lists (`GET /api/nodes` renders up to 200 PublicNodes, ~240 KB).

Same output as DRF's JSONRenderer (compact separators, UTF-8 rather than \\u escapes, U+2028 and U+2029
escaped, DRF's own encoder for dates, decimals and lazy strings) from orjson, which encodes a page of nodes about
ten times faster than the standard library's encoder (docs/benchmarks.md, "Node list"). Floats are written in
their shortest form as by `repr` (`1e16` where Python writes `1e+16`: the same number). Two differences, both
outside what the tracker sends: a NaN or infinity becomes `null` (DRF's strict encoder refuses it with a 500), and
what orjson cannot encode (an integer beyond 64 bits, an indented rendering asked for in `Accept`) goes to DRF's
renderer unchanged."""

import orjson
from rest_framework.renderers import JSONRenderer

_OPTIONS = (
    orjson.OPT_NON_STR_KEYS  # as json.dumps, which turns int keys into strings
    | orjson.OPT_PASSTHROUGH_DATETIME  # to DRF's encoder (`Z`, milliseconds), not orjson's format
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def dumps(data) -> bytes | None:
    """`data` as FastJSONRenderer writes it inside a larger document (before its U+2028/U+2029 pass, which it then
    makes over the whole): the node list keeps a rig's text and puts it in a page as it is. None where orjson
    cannot write it (the renderer then hands the whole to DRF's)."""
    try:
        return orjson.dumps(data, default=JSONRenderer.encoder_class().default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return None


class FastJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None or self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=self.encoder_class().default, option=_OPTIONS)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2" not in out:  # no U+2028 or U+2029 can be in it (one memchr; the replaces scan it twice)
            return out
        return out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
