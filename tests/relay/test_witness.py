"""The relay's witness (relay/witness.py): what it counts from the bytes it carries, without parsing them."""

from relay.witness import Witness


def test_content_keys_are_counted_across_buffer_boundaries_and_empty_ones_are_not():
    w = Witness(jti="j", node_id="n", mode="plain", stream=True)
    data = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    data += b'data: {"choices":[{"delta":{"content":"x \\"content\\":\\"y"}}]}\n\n' * 3
    for i in range(0, len(data), 7):  # every split point a network could choose
        w.saw(data[i : i + 7])
    assert w.content_chunks == 3 and w.bytes == len(data)


def test_the_witness_reports_no_rate_for_an_answer_that_arrived_all_at_once():
    burst = Witness(jti="j", node_id="n", mode="plain", stream=True)
    burst.saw(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n' * 5)
    burst.saw(b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n')  # microseconds later
    entry = burst.entry("done")
    assert entry["content_chunks"] == 6 and entry["chunks_per_sec"] is None and entry["ttft_ms"] is not None
