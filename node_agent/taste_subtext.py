"""`luckrig-node taste --mode public-key`: taste a rig with the prompt and the answer sealed (shared/SUBTEXT.md).

A fresh X25519 key pair is made for each tasting and its private half never leaves this process, so no two
tastings share a key the tracker could link. The conversation is sealed to the node's key from the token
response (checked against `--expect-fingerprint` when given); the answer comes back whole, sealed to ours. This
keeps the text out of proxies, HTTP logs and the tracker; the rig decrypts it, so its operator can read it.

The rig sends the answer in one piece, so what this client can measure differs from plain mode: time to the
encrypted answer instead of time to first token, and tokens per second over the whole generation."""

import json
import sys
import time

import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node_agent import keys, subtext
from node_agent.taste import limits_text, printable, refusal, save_replay, share_timing


def fail(message: str) -> int:
    print(f"luckrig-node taste: {printable(message)}", file=sys.stderr)
    return 1


def taste_public_key(args, contributor_key: str | None) -> int:
    tracker = args.tracker.rstrip("/")
    taster = X25519PrivateKey.generate()
    r = requests.post(
        f"{tracker}/api/tokens",
        json={
            "node_id": args.node,
            "crypto_mode": "public-key",
            "user_public_key": keys.public_pem_of(taster.public_key()),
        },
        headers={"Authorization": f"Bearer {contributor_key}"} if contributor_key else {},
        timeout=15,
    )
    if r.status_code != 201:
        return fail(f"no token ({r.status_code}): {refusal(r)}")
    issued = r.json()
    # The taster's own credential for sharing the timing: kept here, beside the token, and never sent to the rig.
    upload_key = issued.get("upload_key")
    node = issued["node"]
    node_pem = issued.get("node_public_key")
    if issued.get("crypto_mode") != "public-key" or not node_pem:
        return fail("the tracker did not issue a public-key token with the node's key; nothing was sent.")
    # The fingerprint is computed here from the key we are about to encrypt to, not read from the response:
    # that is the key a swap would change.
    fingerprint = keys.fingerprint_of_public_pem(node_pem)
    if fingerprint != issued.get("node_public_key_fingerprint"):
        return fail("the node key in the token response does not match its stated fingerprint; nothing was sent.")
    print(f"Node key fingerprint: {fingerprint}", file=sys.stderr)
    if args.expect_fingerprint and args.expect_fingerprint.strip() != fingerprint:
        return fail(
            f"the node key fingerprint is {fingerprint}, not the expected {args.expect_fingerprint.strip()}: "
            "refusing to send the prompt (the key may have been swapped). Nothing was sent."
        )
    if not args.expect_fingerprint:
        print("(Not checked: compare it with the operator's, or pass --expect-fingerprint.)", file=sys.stderr)
    print(
        printable(
            f"Tasting {node['id']}: {node['model_name']} {node['quantization']} on {node['gpu']} "
            f"({issued['tier']} tier: {limits_text(issued['limits'])}), public-key mode"
        ),
        file=sys.stderr,
    )
    print(printable(f"Note: {issued['caveat']}"), file=sys.stderr)

    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    params = {"max_tokens": args.max_tokens} if args.max_tokens else {}
    sealed = subtext.seal_request(messages, params, node_public_pem=node_pem, jti=issued["jti"], node_id=node["id"])
    # Raw UTF-8: each selector is 4 bytes this way, 12 as a \u escape pair (what requests' json= would send).
    body = json.dumps({"messages": [{"role": "user", "content": sealed}], "stream": True}, ensure_ascii=False).encode(
        "utf-8"
    )

    started = time.monotonic()
    first_byte = first_event = answer_at = None
    queued, sealed_answer, outer_usage = False, None, None
    try:
        with requests.post(
            node["endpoint_url"].rstrip("/") + "/chat/completions",
            data=body,
            stream=True,
            timeout=(10, 600),
            headers={"Authorization": f"Bearer {issued['token']}", "Content-Type": "application/json"},
        ) as resp:
            if resp.status_code != 200:
                return fail(f"the rig refused ({resp.status_code}): {refusal(resp)}")
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
                first_event = first_event or now
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    print(file=sys.stderr)
                    return fail(f"the rig failed: {chunk['error'].get('message')}")
                if chunk.get("usage"):
                    outer_usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        sealed_answer = (sealed_answer or "") + piece
                        answer_at = answer_at or now
    except requests.RequestException as exc:
        return fail(f"could not reach the rig: {exc}")
    if queued:
        print(file=sys.stderr)
    if sealed_answer is None:
        return fail("the rig sent no encrypted answer.")
    try:
        answer = subtext.open_response(sealed_answer, taster, jti=issued["jti"], node_id=node["id"])
    except subtext.SubtextError as exc:
        return fail(f"the answer could not be opened ({exc.reason}); it was not sealed for this tasting.")
    print(printable(answer["content"]))

    usage, luckrig = answer["usage"], answer["luckrig"]
    output_tokens = usage.get("completion_tokens") or (outer_usage or {}).get("completion_tokens") or 0
    # As in plain mode: the queue wait is what this client saw, until the first event after the queue comments.
    queue_wait_sec = (first_event - started) if queued and first_event else 0.0
    answer_sec = answer_at - started
    generation_sec = round(max(0.0, answer_sec - queue_wait_sec), 3)
    tok_per_sec = round(output_tokens / generation_sec, 2) if generation_sec > 0 and output_tokens else None
    timing = {
        "schema_version": 1,
        "node_id": node["id"],
        "mode": "public-key",
        "tok_per_sec": tok_per_sec,
        # There is no first token to time here: the answer arrives sealed, in one piece.
        "ttft_ms": round(answer_sec * 1000, 1),
        "network_ttft_ms": round((first_byte - started) * 1000, 1) if first_byte else None,
        "proxy_ttft_ms": luckrig.get("proxy_ttft_ms"),
        "generation_sec": generation_sec,
        "queue_wait_sec": round(queue_wait_sec, 3),
        "output_tokens": output_tokens,
        "tokenizer": node["model_name"][:64],
        "limited_output_truncated": bool(luckrig.get("truncated")),
    }
    print(
        f"Encrypted answer after {timing['ttft_ms']} ms · {tok_per_sec} tok/s · queue wait "
        f"{timing['queue_wait_sec']} s · {output_tokens} tokens (measured by this client)",
        file=sys.stderr,
    )
    print(
        "In public-key mode the answer arrives in one piece: the first figure is the time to the whole encrypted "
        "answer, not to a first token, and tok/s is answer tokens over the time from the request (after any "
        "queue wait) to the encrypted answer, prompt processing included.",
        file=sys.stderr,
    )
    path = save_replay(args, node["id"], answer["content"], [timing["ttft_ms"]], timing)
    print(f"Saved the replay to {path} (decrypted, on this machine only)", file=sys.stderr)
    if args.share_timing:
        # Not ttft_ms: here it is the time to the whole answer, and the tracker's TTFT median is a first-token
        # figure (it does not separate modes), so uploading it would skew the rig's published TTFT.
        share_timing(tracker, upload_key, {k: v for k, v in timing.items() if k != "ttft_ms"})
    else:
        print("Share these timings (numbers only, no text) with --share-timing.", file=sys.stderr)
    return 0
