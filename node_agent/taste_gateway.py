"""`luckrig-node taste --model NAME`: a tasting routed by the gateway (docs/relay.md, "The gateway") instead of sent
to one rig with a token of the taster's own. The gateway's base URL comes from the tracker (`GET /api/gateway`) or
from `--gateway`; the credential is the contributor key (`--contributor-key`, or the one `join` saved for this
tracker), else the placeholder `anonymous` (the limited tier). `NAME` is a model name (any rig serving it) or
`rig:<node_id>` (exactly that rig).

The answer is read, shown, measured by this client and saved as in taste.py (one client: `receive` and `record`
there); what differs is who is asked, how a refusal is said (the gateway's model_not_found and no_rig_available
name what is on offer), and that the rig is known only once it answers: the gateway names it in `X-LuckRig-Node`
and in the answer's `luckrig.node_id`, and both are shown. The relay holds the tasting token, and the upload key
that comes with it, so a gateway tasting's timing cannot be shared from here (the CLI refuses `--share-timing`
with `--model` before anything is sent); it is measured and saved all the same."""

import contextlib
from urllib.parse import quote

import requests

from node_agent.taste import Failed, Reading, conversation, receive, record, refusal, saved_key
from node_agent.terminal import Screen, printable

ANONYMOUS = "anonymous"  # the gateway's placeholder for "no credential" (an SDK will not send an empty key)
NODE_HEADER = "X-LuckRig-Node"
NOT_SHARED = (
    "Timings of gateway tastings are not shared: the relay holds the token and its upload key. To share, taste "
    "the rig with --node {node_id}."
)


def run_by_model(args, codec, screen: Screen) -> int:
    tracker = args.tracker.rstrip("/")
    base = (args.gateway or find_gateway(tracker)).rstrip("/")
    key = saved_key(args)
    who = "your contributor key" if key else "anonymous, limited tier"
    screen.say(f"Tasting {args.model!r} through the gateway {base} ({who})")
    messages, params = conversation(args)
    body = {"model": args.model, **codec.body(messages, params, {})}
    reading = receive(
        base,
        key or ANONYMOUS,
        body,
        codec,
        screen,
        refused=lambda response: refusal_of_gateway(response, args.model),
        peer=f"the gateway at {base}",
    )
    node_id = answered_by(reading)
    rig = rig_of(tracker, node_id)
    model_name = (rig or {}).get("model_name") or reading.model or args.model
    timing = record(args, codec, reading, {}, screen, node_id=node_id, model_name=model_name)
    described = f": {rig['model_name']} {rig['quantization']} on {rig['gpu']}" if rig else ""
    screen.say(f"Answered by rig {node_id}{described} ({said_by(reading)})")
    screen.say(NOT_SHARED.format(node_id=timing["node_id"]))
    return 0


def find_gateway(tracker: str) -> str:
    """The gateway's base URL as the tracker names it (`GET /api/gateway`); Failed when it names none."""
    try:
        r = requests.get(f"{tracker}/api/gateway", timeout=15)
    except requests.RequestException as exc:
        raise Failed(f"could not reach the tracker at {tracker}: {exc}") from None
    if r.status_code == 404:
        raise Failed(
            f"the tracker at {tracker} has no gateway (GET /api/gateway: 404); taste one rig with --node ID, "
            "or give --gateway URL."
        )
    if r.status_code != 200:
        raise Failed(f"the tracker did not say where the gateway is ({r.status_code}): {refusal(r)}")
    try:
        base = r.json().get("base_url")
    except (ValueError, AttributeError):
        base = None
    if base is None:
        raise Failed(
            f"the tracker at {tracker} has no live gateway right now (no relay is up); taste one rig with --node ID, "
            "or give --gateway URL."
        )
    if not isinstance(base, str) or not base.startswith(("http://", "https://")):
        raise Failed(f"the tracker named a gateway that is not an http(s) URL: {printable(str(base)[:200])}")
    return base


def refusal_of_gateway(response: requests.Response, model: str) -> str:
    """A gateway's refusal in one line: what is on offer when the model is unknown or has no rig now, else the
    refusal as taste.py says it (with its Retry-After), naming the rig it concerns (X-LuckRig-Node)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    if code == "model_not_found":
        suggestions = names(error.get("suggestions"))
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        return f"no model or rig named {model!r} on the gateway (model_not_found).{hint}"
    if code == "no_rig_available":
        available = names(error.get("available_models"))
        return (
            f"no rig serving {model!r} is available right now (no_rig_available). "
            f"Models available now: {', '.join(available) or 'none'}."
        )
    # The rig the refusal concerns, when there is one: the rig's own (its line is full) or the tracker's for it.
    rig = response.headers.get(NODE_HEADER)
    at = f", rig {printable(rig)[:100]}" if rig and rig != "none" else ""
    return f"the gateway refused ({response.status_code}{at}): {refusal(response)}"


def names(value) -> list[str]:
    return [printable(v)[:100] for v in value[:20] if isinstance(v, str)] if isinstance(value, list) else []


def answered_by(reading: Reading) -> str:
    """The rig that answered: the gateway's header, else the answer's own `luckrig.node_id`."""
    node_id = reading.node_header or reading.luckrig.get("node_id")
    if not isinstance(node_id, str) or not node_id or node_id == "none":
        raise Failed(
            "the gateway did not say which rig answered (no X-LuckRig-Node header, no luckrig.node_id); "
            "nothing was saved."
        )
    return printable(node_id)[:100]


def said_by(reading: Reading) -> str:
    header, named = reading.node_header, reading.luckrig.get("node_id")
    if header and named and header != named:
        return f"X-LuckRig-Node; the answer's luckrig.node_id says {printable(str(named))[:100]}"
    return " and ".join(n for n, v in (("X-LuckRig-Node", header), ("luckrig.node_id", named)) if v)


def rig_of(tracker: str, node_id: str) -> dict | None:
    """The rig's public description from the tracker, for the screen and the replay's tokenizer; None when the
    tracker does not say (the tasting stands without it)."""
    with contextlib.suppress(requests.RequestException, ValueError, AttributeError, TypeError):
        r = requests.get(f"{tracker}/api/nodes/{quote(node_id, safe='')}", timeout=5)
        node = r.json().get("node") if r.status_code == 200 else None
        if isinstance(node, dict) and all(isinstance(node.get(k), str) for k in ("model_name", "quantization", "gpu")):
            return node
    return None
