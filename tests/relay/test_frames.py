"""The tunnel's frame codec (node_agent/frames.py): every frame survives a round trip, and no input, however
malformed, gets anything but a FrameError out of the decoder."""

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_agent import frames

STREAM_TYPES = [
    frames.REQUEST,
    frames.DATA,
    frames.END,
    frames.RESPONSE,
    frames.CANCEL,
    frames.ERROR,
    frames.PAUSE,
    frames.RESUME,
]
header_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\0:", blacklist_categories=("Cs",)), min_size=1, max_size=40
)
value_text = st.text(alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)), max_size=200)
headers = st.lists(st.tuples(header_text, value_text), max_size=10)
stream_ids = st.integers(min_value=1, max_value=frames.MAX_STREAM_ID)


@given(stream_ids, st.binary(max_size=frames.MAX_DATA))
def test_data_frames_round_trip(stream_id, payload):
    frame = frames.decode(frames.encode(frames.DATA, stream_id, payload))
    assert (frame.type, frame.stream_id, bytes(frame.payload)) == (frames.DATA, stream_id, payload)


@given(stream_ids, st.binary(max_size=5 * frames.MAX_DATA + 17))
def test_a_body_of_any_size_splits_into_data_frames_that_rebuild_it(stream_id, body):
    parts = [frames.decode(f) for f in frames.data_frames(stream_id, body)]
    assert all(len(p.payload) <= frames.MAX_DATA and p.stream_id == stream_id for p in parts)
    assert b"".join(bytes(p.payload) for p in parts) == body


@given(
    stream_ids,
    st.sampled_from(["GET", "POST", "OPTIONS"]),
    st.sampled_from(["/health", "/v1/models", "/v1/chat/completions", "/chat/completions?x=1"]),
    headers,
)
def test_request_heads_round_trip(stream_id, method, path, hdrs):
    head = frames.RequestHead(method, path, hdrs)
    frame = frames.decode(head.encode(stream_id))
    assert frame.type == frames.REQUEST and frame.stream_id == stream_id
    assert frames.RequestHead.parse(frame.payload) == head


@given(stream_ids, st.integers(min_value=100, max_value=599), headers)
def test_response_heads_round_trip(stream_id, status, hdrs):
    head = frames.ResponseHead(status, hdrs)
    assert frames.ResponseHead.parse(frames.decode(head.encode(stream_id)).payload) == head


@given(st.sampled_from([frames.END, frames.CANCEL, frames.PAUSE, frames.RESUME]), stream_ids)
def test_empty_frames_round_trip(kind, stream_id):
    frame = frames.decode(frames.encode(kind, stream_id))
    assert (frame.type, frame.stream_id, bytes(frame.payload)) == (kind, stream_id, b"")


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_frame_or_a_frame_error(data):
    try:
        frame = frames.decode(data)
    except frames.FrameError:
        return
    assert frame.type in frames.NAMES
    if frame.type in frames.JSON_TYPES:
        with contextlib.suppress(frames.FrameError):
            frame.json()
    if frame.type == frames.REQUEST:
        with contextlib.suppress(frames.FrameError):
            frames.RequestHead.parse(frame.payload)
    if frame.type == frames.RESPONSE:
        with contextlib.suppress(frames.FrameError):
            frames.ResponseHead.parse(frame.payload)


@given(st.sampled_from(STREAM_TYPES), st.binary(max_size=64))
def test_stream_frames_on_stream_zero_are_refused(kind, payload):
    with pytest.raises(frames.FrameError):
        frames.decode(frames.HEADER.pack(frames.VERSION, kind, 0) + payload)


def test_tunnel_frames_on_a_stream_are_refused():
    with pytest.raises(frames.FrameError):
        frames.decode(frames.HEADER.pack(frames.VERSION, frames.GOAWAY, 7) + b"{}")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x01\x02\x00",  # shorter than the header
        b"\x02\x02\x00\x00\x00\x01",  # another version
        b"\x01\x7f\x00\x00\x00\x01",  # unknown type
        frames.HEADER.pack(1, frames.END, 1) + b"x",  # END carries nothing
        frames.HEADER.pack(1, frames.DATA, 1) + b"x" * (frames.MAX_DATA + 1),  # oversized
        frames.HEADER.pack(1, frames.REQUEST, 1) + b" " * (frames.MAX_HEAD_BYTES + 1),  # oversized head
    ],
)
def test_malformed_frames_are_refused(message):
    with pytest.raises(frames.FrameError):
        frames.decode(message)


@pytest.mark.parametrize(
    "head",
    [
        {"method": "DELETE", "path": "/health", "headers": []},
        {"method": "GET", "path": "http://elsewhere.example/health", "headers": []},
        {"method": "GET", "path": "//elsewhere.example/x", "headers": []},
        {"method": "GET", "path": "health", "headers": []},
        {"method": "GET", "path": "/health\r\nX: y", "headers": []},
        {"method": "GET", "path": "/health", "headers": [["X-Evil", "a\r\nSet-Cookie: b"]]},
        {"method": "GET", "path": "/health", "headers": [["Bad:Name", "v"]]},
        {"method": "GET", "path": "/health", "headers": [["A"]]},
        {"method": "GET", "path": "/health", "headers": {"A": "b"}},
        {"method": "GET", "path": "/health", "headers": [["A", "b"]] * (frames.MAX_HEADERS + 1)},
        ["not", "an", "object"],
    ],
)
def test_malformed_request_heads_are_refused(head):
    payload = json.dumps(head).encode()
    with pytest.raises(frames.FrameError):
        frames.RequestHead.parse(payload)


@pytest.mark.parametrize("status", [99, 600, "200", True, None])
def test_response_heads_need_a_real_status(status):
    with pytest.raises(frames.FrameError):
        frames.ResponseHead.parse(json.dumps({"status": status, "headers": []}).encode())


def test_encoding_refuses_what_decoding_would():
    with pytest.raises(frames.FrameError):
        frames.encode(frames.DATA, 1, b"x" * (frames.MAX_DATA + 1))
    with pytest.raises(frames.FrameError):
        frames.encode(0x7F, 1)
    with pytest.raises(frames.FrameError):
        frames.encode(frames.DATA, frames.MAX_STREAM_ID + 1)
