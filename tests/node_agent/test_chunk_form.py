"""Which upstream chunks the agent may pass on as the model server wrote them (node_agent.relay.passes_untouched):
only those whose bytes are what the agent would write itself where it matters to the taster's SSE parser and to the
relay, which counts `"content":"` keys without parsing (relay/witness.py). JSON allows a tab, a carriage return or a
space before a colon between tokens; a chunk with one of those is written again, compact."""

import json

import pytest

from node_agent.relay import passes_untouched, sse
from relay.witness import Witness

MODEL = "smollm2"


def _chunk(text: bytes) -> tuple[bytes, dict]:
    return text, json.loads(text)


def _sent(text: bytes) -> bytes:
    """What the agent writes for one upstream chunk (Relay.forward's choice)."""
    text, chunk = _chunk(text)
    return b"data: " + text + b"\n\n" if passes_untouched(text, chunk, MODEL) else sse(chunk)


COMPACT = b'{"id":"c1","model":"smollm2","choices":[{"index":0,"delta":{"content":"a, b: \\"c\\""}}]}'


def test_a_compact_chunk_passes_untouched():
    assert passes_untouched(*_chunk(COMPACT), MODEL)


@pytest.mark.parametrize(
    "text",
    [
        # JSON whitespace the old check let through: a carriage return ends an SSE line for the taster's parser,
        # and a space or tab before a key's colon hides the content key from the relay's witness.
        b'{"id":"c1","model":"smollm2",\r"choices":[{"index":0,"delta":{"content":"hi"}}]}',
        b'{"id":"c1","model":"smollm2","choices":[{"index":0,"delta":{"content" :"hi"}}]}',
        b'{"id":"c1","model":"smollm2","choices":[{"index":0,"delta":{"content"\t:"hi"}}]}',
        b'{"id":"c1","model":"smollm2","choices":[{"index":0,"delta":{"content":\t"hi"}}]}',
    ],
)
def test_a_chunk_with_other_whitespace_is_written_again(text):
    assert not passes_untouched(*_chunk(text), MODEL)
    sent = _sent(text)
    assert b"\r" not in sent and b"\t" not in sent
    witness = Witness(jti="j", node_id="n", mode="plain", stream=True)
    witness.saw(sent)
    assert witness.content_chunks == 1


def test_a_chunk_naming_its_model_twice_is_written_again_without_the_hidden_name():
    # Python's json keeps the last of repeated keys: the served name after a file path would let the path through.
    text = b'{"id":"c1","model":"/srv/models/private.gguf","model":"smollm2","choices":[{"delta":{"content":"x"}}]}'
    assert not passes_untouched(*_chunk(text), MODEL)
    assert b"/srv/models" not in _sent(text)
