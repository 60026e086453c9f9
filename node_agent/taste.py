"""`luckrig-node taste`: get a token, send a rig one conversation, show its answer and measure it from the
client's side: time to first token, tokens per second, time spent waiting in the rig's queue. The measurements
(never the text) can be shared with the tracker, with the tasting's upload key (kept in memory beside the token,
never sent to the rig, never written to the replay file); the whole tasting is saved locally as a replay file.

One client serves both modes (the token, the request, reading the stream, every failure, the replay and the
sharing); a codec is what differs. `PlainCodec` sends the conversation as it is and shows the answer as it
streams. `PublicKeyCodec` (shared/SUBTEXT.md) makes a fresh X25519 key pair for each tasting, whose private half
never leaves this process (so no two tastings share a key the tracker could link), encrypts the conversation to
the node's key from the token response (checked against `--expect-fingerprint` when given) and opens the answer,
which comes back whole, encrypted to ours. This keeps the text out of proxies, HTTP logs and the tracker; the
rig decrypts it, so its operator can read it. As that answer arrives in one piece, what the client can measure
differs: time to the encrypted answer instead of time to first token, and tokens per second over the whole
generation.

Whatever the rig (or the tracker) sends is printed without terminal control characters (node_agent/terminal.py)."""

import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent import config, keys, subtext
from node_agent.join import IDENTITY, load_json
from node_agent.terminal import Screen, printable


class Failed(Exception):
    """The tasting cannot go on; the message says why (the CLI prints it and exits with 1)."""


@dataclass
class Reading:
    """What this client saw of the rig's answer stream, on its own clock (time.monotonic)."""

    started: float
    first_byte: float | None = None
    queued: bool = False
    queue_wait_sec: float = 0.0
    pieces: list[str] = field(default_factory=list)
    piece_ms: list[float] = field(default_factory=list)  # when each content piece arrived, ms after the request
    first_piece: float | None = None
    last_piece: float | None = None
    usage: dict | None = None  # the last usage chunk, and the `luckrig` object beside it
    luckrig: dict = field(default_factory=dict)
    done: bool = False  # `[DONE]` arrived: the stream is whole
    model: str | None = None  # the `model` the chunks name
    node_header: str | None = None  # X-LuckRig-Node: the rig a gateway says answered (taste_gateway.py)


@dataclass
class Measured:
    """A codec's reading of one answer: the text, and the figures that differ between the modes."""

    text: str
    ttft_ms: float | None
    tok_per_sec: float | None
    generation_sec: float
    output_tokens: int
    luckrig: dict


class PlainCodec:
    """Plain mode: the conversation as it is, the answer shown as it streams and timed from its first token."""

    mode = "plain"

    def token_fields(self) -> dict:
        return {}

    def check_issued(self, issued: dict, screen: Screen) -> None:
        """Nothing to check in plain mode."""

    def body(self, messages: list[dict], params: dict, issued: dict) -> dict:
        return {"messages": messages, "stream": True, "stream_options": {"include_usage": True}, **params}

    def show(self, piece: str, screen: Screen) -> None:
        screen.answer(piece)

    def measure(self, reading: Reading, issued: dict, screen: Screen) -> Measured:
        if not reading.pieces:
            raise Failed("the rig sent no answer.")
        output_tokens = (reading.usage or {}).get("completion_tokens") or len(reading.pieces)
        first, last = reading.first_piece, reading.last_piece
        generation_sec = round(last - first, 3)
        return Measured(
            text="".join(reading.pieces),
            ttft_ms=round((first - reading.started) * 1000, 1),
            tok_per_sec=round((output_tokens - 1) / generation_sec, 2)
            if generation_sec > 0 and output_tokens > 1
            else None,
            generation_sec=generation_sec,
            output_tokens=output_tokens,
            luckrig=reading.luckrig,
        )

    def report(self, timing: dict, screen: Screen) -> None:
        n = timing["output_tokens"]
        screen.say(
            f"TTFT {timing['ttft_ms']} ms · {timing['tok_per_sec']} tok/s · queue wait {timing['queue_wait_sec']} s · "
            f"{n} token{'' if n == 1 else 's'} (measured by this client)"
        )

    def chunk_timestamps(self, reading: Reading, timing: dict) -> list[float]:
        return reading.piece_ms

    def shared(self, timing: dict) -> dict:
        return timing


class PublicKeyCodec:
    """Public-key mode: the conversation encrypted to the node's key, the answer encrypted to a fresh key of ours
    and opened here. Nothing is sent unless the node's key matches its fingerprint (and --expect-fingerprint)."""

    mode = "public-key"

    def __init__(self, expect_fingerprint: str | None):
        self.expect_fingerprint = expect_fingerprint
        self.taster = X25519PrivateKey.generate()
        self.node_pem = ""

    def token_fields(self) -> dict:
        return {"crypto_mode": "public-key", "user_public_key": keys.public_pem_of(self.taster.public_key())}

    def check_issued(self, issued: dict, screen: Screen) -> None:
        node_pem = issued.get("node_public_key")
        if issued.get("crypto_mode") != "public-key" or not node_pem:
            raise Failed("the tracker did not issue a public-key token with the node's key; nothing was sent.")
        # The fingerprint is computed here from the key we are about to encrypt to, not read from the response:
        # that is the key a swap would change.
        fingerprint = keys.fingerprint_of_public_pem(node_pem)
        if fingerprint != issued.get("node_public_key_fingerprint"):
            raise Failed("the node key in the token response does not match its stated fingerprint; nothing was sent.")
        screen.say(f"Node key fingerprint: {fingerprint}")
        expected = self.expect_fingerprint
        if expected and expected.strip() != fingerprint:
            raise Failed(
                f"the node key fingerprint is {fingerprint}, not the expected {expected.strip()}: "
                "refusing to send the prompt (the key may have been swapped). Nothing was sent."
            )
        if not expected:
            screen.say("(Not checked: compare it with the operator's, or pass --expect-fingerprint.)")
        self.node_pem = node_pem

    def body(self, messages: list[dict], params: dict, issued: dict) -> dict:
        content = subtext.seal_request(
            messages, params, node_public_pem=self.node_pem, jti=issued["jti"], node_id=issued["node"]["id"]
        )
        return {"messages": [{"role": "user", "content": content}], "stream": True}

    def show(self, piece: str, screen: Screen) -> None:
        """The pieces are ciphertext: nothing to show until the whole answer is opened."""

    def measure(self, reading: Reading, issued: dict, screen: Screen) -> Measured:
        if not reading.pieces:
            raise Failed("the rig sent no encrypted answer.")
        try:
            answer = subtext.open_response(
                "".join(reading.pieces), self.taster, jti=issued["jti"], node_id=issued["node"]["id"]
            )
        except subtext.SubtextError as exc:
            raise Failed(
                f"the answer could not be opened ({exc.reason}); it was not encrypted for this tasting."
            ) from None
        screen.answer(answer["content"])
        usage = answer["usage"]
        output_tokens = usage.get("completion_tokens") or (reading.usage or {}).get("completion_tokens") or 0
        # There is no first token to time here: the answer arrives encrypted, in one piece.
        answer_sec = reading.first_piece - reading.started
        generation_sec = round(max(0.0, answer_sec - reading.queue_wait_sec), 3)
        return Measured(
            text=answer["content"],
            ttft_ms=round(answer_sec * 1000, 1),
            tok_per_sec=round(output_tokens / generation_sec, 2) if generation_sec > 0 and output_tokens else None,
            generation_sec=generation_sec,
            output_tokens=output_tokens,
            luckrig=answer["luckrig"],
        )

    def report(self, timing: dict, screen: Screen) -> None:
        screen.say(
            f"Encrypted answer after {timing['ttft_ms']} ms · {timing['tok_per_sec']} tok/s · queue wait "
            f"{timing['queue_wait_sec']} s · {timing['output_tokens']} tokens (measured by this client)"
        )
        screen.say(
            "In public-key mode the answer arrives in one piece: the first figure is the time to the whole encrypted "
            "answer, not to a first token, and tok/s is answer tokens over the time from the request (after any "
            "queue wait) to the encrypted answer, prompt processing included."
        )

    def chunk_timestamps(self, reading: Reading, timing: dict) -> list[float]:
        return [timing["ttft_ms"]]

    def shared(self, timing: dict) -> dict:
        # Not ttft_ms: here it is the time to the whole answer, and the tracker's TTFT median is a first-token
        # figure (it does not separate modes), so uploading it would skew the rig's published TTFT.
        return {k: v for k, v in timing.items() if k != "ttft_ms"}


def taste(args) -> int:
    codec = PublicKeyCodec(args.expect_fingerprint) if args.mode == "public-key" else PlainCodec()
    screen = Screen()
    try:
        if getattr(args, "model", None) is not None:
            from node_agent.taste_gateway import run_by_model

            return run_by_model(args, codec, screen)
        return run(args, codec, screen)
    except Failed as exc:
        screen.say(f"luckrig-node taste: {exc}")
        return 1


def run(args, codec: PlainCodec | PublicKeyCodec, screen: Screen) -> int:
    tracker = args.tracker.rstrip("/")
    key = saved_key(args)
    r = requests.post(
        f"{tracker}/api/tokens",
        json={"node_id": args.node, **codec.token_fields()},
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=15,
    )
    if r.status_code != 201:
        raise Failed(f"no token ({r.status_code}): {refusal(r)}")
    issued = r.json()
    # The taster's own credential for sharing the timing: kept here, beside the token, and never sent to the rig.
    upload_key = issued.get("upload_key")
    node = issued["node"]
    codec.check_issued(issued, screen)
    screen.say(
        f"Tasting {node['id']}: {node['model_name']} {node['quantization']} on {node['gpu']} "
        f"({issued['tier']} tier: {limits_text(issued['limits'])})"
        + (", public-key mode" if codec.mode == "public-key" else "")
    )
    screen.say(f"Note: {issued['caveat']}")

    messages, params = conversation(args)
    reading = receive(node["endpoint_url"], issued["token"], codec.body(messages, params, issued), codec, screen)
    timing = record(args, codec, reading, issued, screen, node_id=node["id"], model_name=node["model_name"])
    if args.share_timing:
        share_timing(tracker, upload_key, codec.shared(timing))
    else:
        screen.say("Share these timings (numbers only, no text) with --share-timing.")
    return 0


def conversation(args) -> tuple[list[dict], dict]:
    """The messages and sampling parameters of the tasting, from the command line."""
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    return messages, ({"max_tokens": args.max_tokens} if args.max_tokens else {})


def record(args, codec, reading: Reading, issued: dict, screen: Screen, *, node_id: str, model_name: str) -> dict:
    """Measure the answer that was read, show the figures and save the replay; the timing, for sharing."""
    measured = codec.measure(reading, issued, screen)
    screen.answer_ends()
    timing = {
        "schema_version": 1,
        "node_id": node_id,
        "mode": codec.mode,
        "tok_per_sec": measured.tok_per_sec,
        "ttft_ms": measured.ttft_ms,
        "network_ttft_ms": round((reading.first_byte - reading.started) * 1000, 1),  # set: [DONE] came
        "proxy_ttft_ms": measured.luckrig.get("proxy_ttft_ms"),
        "generation_sec": measured.generation_sec,
        "queue_wait_sec": round(reading.queue_wait_sec, 3),
        "output_tokens": measured.output_tokens,
        "tokenizer": model_name[:64],
        "limited_output_truncated": bool(measured.luckrig.get("truncated")),
    }
    codec.report(timing, screen)
    path = save_replay(args, node_id, measured.text, codec.chunk_timestamps(reading, timing), timing)
    where = " (decrypted, on this machine only)" if codec.mode == "public-key" else ""
    screen.say(f"Saved the replay to {path}{where}")
    return timing


def receive(endpoint_url: str, token: str, body: dict, codec, screen: Screen, refused=None, peer="the rig") -> Reading:
    """Send the request and read the answer stream to its `[DONE]`; Failed on a refusal, an error event, a broken
    event or connection, or a stream that ends before `[DONE]` (an answer perhaps cut short is not measured).
    `refused(response)` says a refusal in words (default: the rig's), `peer` is who could not be reached."""
    reading = Reading(started=time.monotonic())
    try:
        with requests.post(
            endpoint_url.rstrip("/") + "/chat/completions",
            # Raw UTF-8: a public-key selector is 4 bytes this way, 12 as a \u escape pair (what json= would send).
            data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            stream=True,
            timeout=(10, 600),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as resp:
            if resp.status_code != 200:
                raise Failed(refused(resp) if refused else f"the rig refused ({resp.status_code}): {refusal(resp)}")
            reading.node_header = resp.headers.get("X-LuckRig-Node")
            for raw in resp.iter_lines():
                now = time.monotonic()
                reading.first_byte = reading.first_byte or now
                line = raw.decode("utf-8", errors="replace")
                if line.startswith(": queue position="):
                    reading.queued = True
                    screen.status(line[2:])
                    continue
                if not line.startswith("data:"):
                    continue
                screen.end_status()
                if reading.queued and not reading.queue_wait_sec:
                    # Measured here, not taken from the rig's own `luckrig.queue_wait_ms`: from sending the
                    # request until the first event after the queue comments.
                    reading.queue_wait_sec = now - reading.started
                data = line[5:].strip()
                if data == "[DONE]":
                    reading.done = True
                    break
                take(reading, event(data), now, codec, screen)
    except requests.RequestException as exc:
        raise Failed(f"could not reach {peer}: {exc}") from None
    if not reading.done:
        raise Failed("the rig's answer stopped before its end ([DONE]); nothing was saved or shared.")
    return reading


def event(data: str) -> dict:
    """One `data:` event of the answer stream as an object; Failed for an error event or one that is not JSON."""
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise Failed("the rig sent an event that is not a JSON object.")
    if "error" in chunk:
        error = chunk["error"]
        raise Failed(f"the rig failed: {error.get('message') if isinstance(error, dict) else error}")
    return chunk


def take(reading: Reading, chunk: dict, now: float, codec, screen: Screen) -> None:
    reading.model = reading.model or chunk.get("model")
    if chunk.get("usage"):
        reading.usage, reading.luckrig = chunk["usage"], chunk.get("luckrig") or {}
    for choice in chunk.get("choices") or []:
        piece = (choice.get("delta") or {}).get("content")
        if piece:
            reading.first_piece = reading.first_piece or now
            reading.last_piece = now
            reading.piece_ms.append(round((now - reading.started) * 1000, 1))
            reading.pieces.append(piece)
            codec.show(piece, screen)


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
