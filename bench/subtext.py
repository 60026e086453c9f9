"""Benchmark: what public-key ("subtext") mode costs in CPU time and bytes on the wire, beside plain mode.

For each payload size, one user message of that many bytes of text: the time to seal and encode it (the
client's side: ephemeral X25519, HKDF, AES-256-GCM, base64url, selectors), then to decode and open it (the
agent's side), median of N runs in this process; and the request body size in plain mode and in subtext mode.
A body is measured twice: as raw UTF-8 JSON (the browser's JSON.stringify, `ensure_ascii=False`) and with
`\\u` escapes (Python's json.dumps default, which aiohttp's `json=` uses: every selector becomes a 12-byte
surrogate-pair escape).

    .venv/bin/python bench/subtext.py [--runs 31]
"""

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

from node_agent import keys, subtext  # noqa: E402

SIZES = [("1 KiB", 1024), ("16 KiB", 16 * 1024), ("256 KiB", 256 * 1024)]
WORDS = [
    "the",
    "rig",
    "answers",
    "slowly",
    "but",
    "surely",
    "while",
    "the",
    "fans",
    "spin",
    "and",
    "tokens",
    "stream",
    "out",
    "one",
    "by",
    "one",
]


def text_of(size: int) -> str:
    rng = random.Random(size)
    out, length = [], 0
    while length < size:
        word = rng.choice(WORDS) + " "
        out.append(word)
        length += len(word)
    return "".join(out)[:size]


def body(content: str, *, ascii_escapes: bool) -> int:
    doc = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": content}]}
    return len(json.dumps(doc, ensure_ascii=ascii_escapes, separators=(",", ":")).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=31)
    args = parser.parse_args()
    node = X25519PrivateKey.generate()
    pem = keys.public_pem_of(node.public_key())
    ctx = {"jti": "01JDBENCH0000000000000000", "node_id": "bench-node"}
    rows = []
    for label, size in SIZES:
        text = text_of(size)
        messages = [{"role": "user", "content": text}]
        seal_ms, open_ms = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            content = subtext.seal_request(messages, {"max_tokens": 256}, node_public_pem=pem, **ctx)
            sealed = time.perf_counter()
            opened = subtext.open_request(content, node, **ctx)
            seal_ms.append((sealed - started) * 1000)
            open_ms.append((time.perf_counter() - sealed) * 1000)
        assert opened["messages"] == messages
        envelope = len(subtext.find_and_decode(content))
        plain_utf8, plain_esc = body(text, ascii_escapes=False), body(text, ascii_escapes=True)
        sub_utf8, sub_esc = body(content, ascii_escapes=False), body(content, ascii_escapes=True)
        rows.append(
            (
                label,
                envelope,
                plain_utf8,
                sub_utf8,
                sub_utf8 / plain_utf8,
                sub_esc,
                sub_esc / plain_esc,
                statistics.median(seal_ms),
                statistics.median(open_ms),
                statistics.median(a + b for a, b in zip(seal_ms, open_ms, strict=True)),
            )
        )
    print(f"\none user message of ASCII text, median of {args.runs} runs, one process\n")
    print(
        "| payload | envelope B | plain body B | subtext body B (UTF-8) | × plain | subtext body B (\\u escapes) "
        "| × plain | seal+encode ms | decode+open ms | total ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, env, plain, sub, ratio, esc, esc_ratio, seal_p50, open_p50, total in rows:
        print(
            f"| {label} | {env:,} | {plain:,} | {sub:,} | {ratio:.2f} | {esc:,} | {esc_ratio:.2f} "
            f"| {seal_p50:.2f} | {open_p50:.2f} | {total:.2f} |"
        )


if __name__ == "__main__":
    main()
