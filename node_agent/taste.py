"""`luckrig-node taste`: get a token, stream a rig's answer to the terminal, and measure it from the client
side: time to first token, tokens per second, time spent waiting in the rig's queue. The measurements (never
the text) can be shared with the tracker, with the tasting's upload key (kept in memory beside the token, never
sent to the rig, never written to the replay file); the whole tasting is saved locally as a replay file.

Whatever the rig (or the tracker) sends is printed without terminal control characters: a rig's operator chooses
every byte of the answer, and escape sequences could retitle the terminal, clear it or rewrite what was shown."""

import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from node_agent import config
from node_agent.join import IDENTITY, load_json

# ANSI escape sequences, in their 7-bit (ESC ...) and 8-bit (C1) forms: CSI (colours, cursor moves, clearing),
# control strings (OSC window titles and hyperlinks, DCS, SOS, PM, APC) up to their terminator, and the other
# two-character escapes.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"
)
# The start of an escape sequence that a later piece of the stream may complete, at the end of the text.
_UNFINISHED = re.compile(
    r"(?:(?:\x1b\[|\x9b)[0-?]*[ -/]*"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*\x1b?"
    r"|\x1b[ -/]*)\Z"
)
# C0 controls but newline and tab, DEL, and C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_HOLD_MAX = 256  # an unfinished sequence longer than this is not held back any more: it is stripped as it is


def printable(text) -> str:
    """`text` without escape sequences and control characters (newline and tab kept): safe for a terminal."""
    return _CONTROL.sub("", _ESCAPE.sub("", str(text)))


class PrintableStream:
    """`printable` for text that arrives in pieces: an escape sequence cut between two pieces is held back until
    the next piece completes it, so that none of it reaches the terminal."""

    def __init__(self):
        self.held = ""

    def feed(self, piece: str) -> str:
        text, self.held = self.held + piece, ""
        tail = _UNFINISHED.search(text, max(0, len(text) - _HOLD_MAX))
        if tail is not None and tail.start() < len(text):
            text, self.held = text[: tail.start()], text[tail.start() :]
        return printable(text)

    def flush(self) -> str:
        text, self.held = self.held, ""
        return printable(text)


def saved_key(args) -> str | None:
    if args.contributor_key:
        return args.contributor_key
    identity = load_json(Path(args.config_dir or config.default_config_dir()) / IDENTITY)
    if identity.get("tracker") == args.tracker.rstrip("/"):
        return identity.get("contributor_key")
    return None


def limits_text(limits: dict) -> str:
    """`3 requests of up to 256 output tokens each`: what one token allows (docs/api.md)."""
    n = limits["max_requests"]
    # With max_output_tokens_total beside it, max_output_tokens is the per-request cap; without it (an older
    # tracker) it is the whole budget, which an agent shares equally among the requests (auth.Claims).
    each = (
        limits["max_output_tokens"] if "max_output_tokens_total" in limits else limits["max_output_tokens"] // max(1, n)
    )
    return f"{n} request{'' if n == 1 else 's'} of up to {each} output tokens each"


def refusal(response: requests.Response) -> str:
    """A tracker's or a rig's refusal as sentences: its message and, for a 429, when it lifts (Retry-After) and what
    would earn more. Tracker errors are `{error, code, ...}`, a rig's `{error: {message, code, ...}}`."""
    try:
        body = response.json()
    except ValueError:
        return printable(response.text[:300])
    fields = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else body
    if not isinstance(fields, dict):
        return printable(response.text[:300])
    message = fields.get("message") or fields.get("error") or response.text[:300]
    code = fields.get("code") or (body.get("code") if isinstance(body, dict) else None)
    parts = [f"{message} ({code})" if code else str(message)]
    if response.status_code == 429:
        retry = response.headers.get("Retry-After", fields.get("retry_after_sec"))
        if retry not in (None, ""):
            when = f" (at {fields['resets_at']})" if fields.get("resets_at") else ""
            parts.append("Try again now with a new token." if str(retry) == "0" else f"Retry after {retry} s{when}.")
        if fields.get("earn_more"):
            parts.append(str(fields["earn_more"]))
    return printable(" ".join(parts))


def taste(args) -> int:
    tracker = args.tracker.rstrip("/")
    key = saved_key(args)
    r = requests.post(
        f"{tracker}/api/tokens",
        json={"node_id": args.node},
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=15,
    )
    if r.status_code != 201:
        print(f"luckrig-node taste: no token ({r.status_code}): {refusal(r)}", file=sys.stderr)
        return 1
    issued = r.json()
    # The taster's own credential for sharing the timing: kept here, beside the token, and never sent to the rig.
    upload_key = issued.get("upload_key")
    node = issued["node"]
    print(
        printable(
            f"Tasting {node['id']}: {node['model_name']} {node['quantization']} on {node['gpu']} "
            f"({issued['tier']} tier: {limits_text(issued['limits'])})"
        ),
        file=sys.stderr,
    )
    print(printable(f"Note: {issued['caveat']}"), file=sys.stderr)

    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    body = {"messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    if args.max_tokens:
        body["max_tokens"] = args.max_tokens

    started = time.monotonic()
    first_byte = first_token = last_token = None
    queued, queue_wait_sec, chunks, text, usage, luckrig = False, 0.0, [], [], None, {}
    shown = PrintableStream()
    try:
        with requests.post(
            node["endpoint_url"].rstrip("/") + "/chat/completions",
            json=body,
            stream=True,
            timeout=(10, 600),
            headers={"Authorization": f"Bearer {issued['token']}"},
        ) as resp:
            if resp.status_code != 200:
                print(f"luckrig-node taste: the rig refused ({resp.status_code}): {refusal(resp)}", file=sys.stderr)
                return 1
            for raw in resp.iter_lines():
                now = time.monotonic()
                first_byte = first_byte or now
                line = raw.decode("utf-8", errors="replace")
                if line.startswith(": queue position="):
                    queued = True
                    print(f"\r[{printable(line[2:])}]", end="", file=sys.stderr, flush=True)
                    continue
                if not line.startswith("data:"):
                    continue
                if queued and not queue_wait_sec:
                    # Measured here, not taken from the rig's own `luckrig.queue_wait_ms`: from sending the
                    # request until the first event after the queue comments.
                    queue_wait_sec = now - started
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    failure = printable(chunk["error"].get("message"))
                    print(f"\nluckrig-node taste: the rig failed: {failure}", file=sys.stderr)
                    return 1
                if chunk.get("usage"):
                    usage, luckrig = chunk["usage"], chunk.get("luckrig") or {}
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        first_token = first_token or now
                        last_token = now
                        chunks.append(round((now - started) * 1000, 1))
                        text.append(piece)
                        print(shown.feed(piece), end="", flush=True)
    except requests.RequestException as exc:
        print(f"\nluckrig-node taste: could not reach the rig: {printable(exc)}", file=sys.stderr)
        return 1
    print(shown.flush())

    output_tokens = (usage or {}).get("completion_tokens") or len(chunks)
    ttft_ms = round((first_token - started) * 1000, 1) if first_token else None
    generation_sec = round(last_token - first_token, 3) if first_token and last_token else 0.0
    tok_per_sec = round((output_tokens - 1) / generation_sec, 2) if generation_sec > 0 and output_tokens > 1 else None
    timing = {
        "schema_version": 1,
        "node_id": node["id"],
        "mode": "plain",
        "tok_per_sec": tok_per_sec,
        "ttft_ms": ttft_ms,
        "network_ttft_ms": round((first_byte - started) * 1000, 1) if first_byte else None,
        "proxy_ttft_ms": luckrig.get("proxy_ttft_ms"),
        "generation_sec": generation_sec,
        "queue_wait_sec": round(queue_wait_sec, 3),
        "output_tokens": output_tokens,
        "tokenizer": node["model_name"][:64],
        "limited_output_truncated": bool(luckrig.get("truncated")),
    }
    print(
        f"TTFT {ttft_ms} ms · {tok_per_sec} tok/s · queue wait {timing['queue_wait_sec']} s · "
        f"{output_tokens} token{'' if output_tokens == 1 else 's'} (measured by this client)",
        file=sys.stderr,
    )

    path = save_replay(args, node["id"], "".join(text), chunks, timing)
    print(f"Saved the replay to {path}", file=sys.stderr)

    if args.share_timing:
        share_timing(tracker, upload_key, timing)
    else:
        print("Share these timings (numbers only, no text) with --share-timing.", file=sys.stderr)
    return 0


def save_replay(args, node_id: str, response: str, chunk_timestamps: list, timing: dict) -> Path:
    """The replay file (schema_version 1) under ~/.luckrig/history/, mode 0600: the whole tasting, text included
    (in public-key mode the decrypted text), which stays on this machine."""
    history = Path(args.history_dir or Path.home() / ".luckrig" / "history")
    history.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    path = history / f"{stamp:%Y-%m-%d_%H%M%S}_{node_id}.json"
    replay = {
        "schema_version": 1,
        "node_id": node_id,
        "created_at": stamp.isoformat().replace("+00:00", "Z"),
        "prompt": args.prompt,
        "system": args.system,
        "response": response,
        "chunk_timestamps": chunk_timestamps,
        "timing": timing,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(replay, fh, ensure_ascii=False, indent=2)
    return path


def share_timing(tracker: str, upload_key: str | None, timing: dict) -> None:
    """Upload the numbers (never the text) with the tasting's upload key: the tracker refuses the tasting token
    here, since the rig's operator holds that one too."""
    if not upload_key:
        print("Timing not shared: the tracker sent no upload key with the token.", file=sys.stderr)
        return
    shared = {k: v for k, v in timing.items() if v is not None}
    r = requests.post(
        f"{tracker}/api/replay/timing", json=shared, timeout=15, headers={"Authorization": f"Bearer {upload_key}"}
    )
    if r.status_code == 201:
        answer = r.json()
        ct = answer["community_timing"]
        n = ct["samples_count"]
        waiting = "" if answer.get("counted", True) else " (yours counts once the rig reports this tasting)"
        print(
            f"Shared the timing (no text){waiting}. Community p50: {ct['tok_per_sec_p50']} tok/s, "
            f"{ct['ttft_ms_p50']} ms TTFT over {n} sample{'' if n == 1 else 's'}",
            file=sys.stderr,
        )
    else:
        print(f"Timing not shared ({r.status_code}): {printable(r.text[:200])}", file=sys.stderr)
