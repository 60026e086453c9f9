"""Changing a registered rig's spec and notes: `luckrig-node edit`, and `luckrig-node join` run again with new flags.

Both send `PATCH /api/nodes/<id>` with the owner's contributor key, and only the fields that differ from what the
tracker has, then say exactly what changed ("quantization: Q4_K_M → Q5_K_M"). The tracker validates; its 400 is
shown as a sentence naming the flag, and the command exits non-zero."""

import argparse
import sys
from pathlib import Path

import requests

from node_agent import config
from node_agent.join import IDENTITY, TrackerDown, _get, load_json, tracker_call


def tags_arg(text: str) -> list[str]:
    """`--tags "cpu-only, quiet"` → ["cpu-only", "quiet"]; `--tags ""` clears them."""
    return [part.strip() for part in text.split(",") if part.strip()]


def hours_arg(text: str) -> list[int]:
    """`--circle-only-hours "18-23,7"` → [7, 18, 19, 20, 21, 22, 23] (UTC hours); `""` clears them."""
    hours: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            start, end = int(first), int(last or first)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not an hour (0-23) nor a range like 18-23") from None
        if not (0 <= start <= 23 and 0 <= end <= 23):
            raise argparse.ArgumentTypeError(f"{part!r}: hours are 0 to 23 (UTC)")
        # 22-2 wraps past midnight: 22, 23, 0, 1, 2.
        hours.update(range(start, end + 1) if start <= end else [*range(start, 24), *range(0, end + 1)])
    return sorted(hours)


# (flag, PATCH field, type, help, choices): the registration fields an operator states about a rig. `join` takes
# them for the first registration and to update it; `edit` takes them to change it.
NODE_FLAGS = [
    ("--display-name", "display_name", str, "the rig's name on the site (e.g. \"Ada's K80 in the attic\")", None),
    ("--tuning-note", "tuning_note", str, "how you tuned this rig: flags, offload, cooling (shown on its page)", None),
    ("--availability-note", "availability_note", str, 'when the rig is usually on (e.g. "evenings UTC")', None),
    ("--quantization", "quantization", str, "e.g. Q4_K_M (default at join: read from the model name)", None),
    ("--context-length", "context_length", int, "the context length the server runs with", None),
    ("--gpu", "gpu", str, "the GPU / CPU name (default at join: detected)", None),
    ("--vram-gb", "vram_gb", float, "VRAM in GB, 0 for CPU / shared memory (default at join: detected)", None),
    ("--lora", "lora", str, "the LoRA adapter the rig applies, if any", None),
    ("--tags", "tags", tags_arg, 'comma-separated, at most 12 of 32 characters ("" clears them)', None),
    (
        "--visibility",
        "visibility",
        str,
        "public (listed), unlisted (reachable by its link only) or circle (your circles only: join takes --circle "
        "NAME; a circle rig is made public again with POST /api/nodes/<id>/publish)",
        ("public", "unlisted", "circle"),
    ),
    (
        "--circle-only-hours",
        "circle_only_hours",
        hours_arg,
        'UTC hours in which a shared public rig serves its circles only, e.g. "18-23" or "22-2,12" ("" clears them)',
        None,
    ),
]
FLAG_OF = {field: flag for flag, field, *_ in NODE_FLAGS} | {
    "model_name": "--model",
    "endpoint_url": "--public-url",
    "circles": "--circle",
}
LABEL = {field: field.replace("_", " ") for field in FLAG_OF} | {"vram_gb": "VRAM (GB)", "gpu": "GPU", "lora": "LoRA"}


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    for flag, _field, kind, text, choices in NODE_FLAGS:
        parser.add_argument(flag, type=kind, default=None, choices=choices, help=text)


def requested(args) -> dict:
    """The registration fields the command line states (a flag not given is not a change)."""
    wanted = {field: getattr(args, field) for _flag, field, *_ in NODE_FLAGS if getattr(args, field, None) is not None}
    if getattr(args, "model", None):
        wanted["model_name"] = args.model
    if getattr(args, "public_url", None):
        wanted["endpoint_url"] = args.public_url
    return wanted


def _same(field: str, old, new) -> bool:
    if field == "tags":  # the tracker keeps tags lower-cased, each once
        return list(old or []) == list(dict.fromkeys(t.strip().lower() for t in new))
    if field == "circle_only_hours":
        return sorted(old or []) == sorted(new)
    if field == "circles":  # the tracker shows them as {id, name}; they are sent as ids
        return {c["id"] if isinstance(c, dict) else c for c in old or []} == set(new)
    if isinstance(new, str) and field not in ("tuning_note", "availability_note"):
        return (old or "") == new.strip()  # the tracker trims every text field but the notes
    return old == new


def differences(node: dict, wanted: dict) -> dict:
    return {field: value for field, value in wanted.items() if not _same(field, node.get(field), value)}


def shown(field: str, value) -> str:
    if value is None or value == "" or value == []:
        return "(none)"
    if field == "tags":
        return ", ".join(value)
    if field == "circles":
        return ", ".join(c["name"] if isinstance(c, dict) else str(c) for c in value)
    if field == "circle_only_hours":
        return ", ".join(f"{h:02d}:00" for h in value) + " UTC"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value).replace("\n", " ")
    text = text if len(text) <= 60 else text[:59] + "…"
    return repr(text) if field in ("display_name", "tuning_note", "availability_note") else text


def change_lines(old: dict, new: dict, fields) -> list[str]:
    """`quantization: Q4_K_M → Q5_K_M`, one per field whose value the tracker now holds differently."""
    return [
        f"{LABEL[field]}: {shown(field, old.get(field))} → {shown(field, new.get(field))}"
        for field in fields
        if old.get(field) != new.get(field)
    ]


class Refused(Exception):
    """The tracker refused the change; the message is a sentence for the operator."""

    def __str__(self) -> str:
        text = super().__str__()
        return text if text.endswith((".", "!", "?")) else text + "."


def refusal(response: requests.Response, node_id: str) -> str:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error, code = str(body.get("error") or response.text[:200]), body.get("code", "")
    if response.status_code == 400 and body.get("field"):
        field = body["field"]
        message = error.split(": ", 1)[1] if error.startswith(f"{field}: ") else error
        return f"the tracker refused {FLAG_OF.get(field, field)}: {message}"
    if response.status_code == 401:
        return "the tracker does not accept this contributor key (pass the owner's with --contributor-key)"
    if code == "not_owner":
        return f"node {node_id} belongs to another contributor key (pass the owner's with --contributor-key)"
    if code == "node_not_found":
        return f"the tracker has no visible node {node_id} (taken down or removed?)"
    return f"the tracker refused ({response.status_code} {code or 'error'}): {error}"


def update(tracker: str, node_id: str, key: str, node: dict, wanted: dict) -> tuple[dict, list[str]]:
    """PATCH the fields of `wanted` that differ from `node`; returns the node as the tracker now has it and the
    change lines (none when nothing differed: then no request is sent). Raises Refused or TrackerDown."""
    changes = differences(node, wanted)
    if not changes:
        return node, []
    r = tracker_call("PATCH", f"{tracker}/api/nodes/{node_id}", key, changes)
    if r.status_code != 200:
        raise Refused(refusal(r, node_id))
    new = r.json()["node"]
    return new, change_lines(node, new, changes)


def fetch_node(tracker: str, node_id: str, key: str | None = None) -> dict | None:
    """The node as the tracker shows it to its owner (`key`: a circle rig is 404 to anyone else), or None when it
    hides it (taken down, banned)."""
    r = _get(f"{tracker}/api/nodes/{node_id}", key)
    return r.json()["node"] if r.status_code == 200 else None


def ask(prompt: str) -> str:
    """One line from the operator's terminal ('' at end of input)."""
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    return line.strip()


def interactive(args) -> bool:
    return not getattr(args, "yes", False) and sys.stdin.isatty()


def ask_for_missing(args, node: dict | None, wanted: dict) -> dict:
    """On a terminal, ask for a display name and a tuning note that neither the flags nor the registration have
    (two rigs with the same hardware would otherwise share one raw title). Enter skips."""
    if not interactive(args):
        return wanted
    node = node or {}
    questions = [
        ("display_name", "Display name for this rig, shown on the site (Enter to skip): "),
        ("tuning_note", "Tuning note: how you set it up, e.g. flags, offload, cooling (Enter to skip): "),
    ]
    answers = {}
    for field, question in questions:
        if field not in wanted and not node.get(field):
            answer = ask(question)
            if answer:
                answers[field] = answer
    return {**wanted, **answers}


def vram(gb) -> str:
    return "VRAM not stated" if gb is None else "shared memory (no dedicated VRAM)" if gb == 0 else f"{gb:g} GB VRAM"


def summary(node: dict, tracker: str) -> list[str]:
    rows = [
        ("Display name", node.get("display_name") or "(none: the site shows the hardware)"),
        (
            "Model",
            f"{node.get('model_name')} {node.get('quantization')}" + (f" + {node['lora']}" if node.get("lora") else ""),
        ),
        ("GPU", f"{node.get('gpu')}, {vram(node.get('vram_gb'))}"),
        ("Context", f"{node['context_length']:,}" if node.get("context_length") else "(not stated)"),
        ("Tags", ", ".join(node.get("tags") or []) or "(none)"),
        ("Visibility", node.get("visibility")),
        ("Circles", shown("circles", node.get("circles"))),
        ("Tuning note", shown("tuning_note", node.get("tuning_note"))),
        ("Availability", shown("availability_note", node.get("availability_note"))),
        ("Page", f"{tracker}/nodes/{node['id']}/"),
    ]
    return [f"  {label + ':':<14}{value}" for label, value in rows]


def edit(args) -> int:
    """`luckrig-node edit`: change this machine's registered rig (or --node-id's) and print it."""
    cfg = config.resolve({"config_dir": args.config_dir, "tracker": args.tracker, "node_id": args.node_id})
    if not (cfg.tracker and cfg.node_id):
        print(
            "luckrig-node edit: no node is configured here; run `luckrig-node join --tracker URL` first, "
            "or pass --tracker and --node-id",
            file=sys.stderr,
        )
        return 2
    tracker = cfg.tracker.rstrip("/")
    identity = load_json(Path(cfg.config_dir) / IDENTITY)
    key = args.contributor_key or (identity.get("contributor_key") if identity.get("tracker") == tracker else None)
    if not key:
        print(
            f"luckrig-node edit: no contributor key saved for {tracker}; pass --contributor-key (the owner's)",
            file=sys.stderr,
        )
        return 2
    try:
        node = fetch_node(tracker, cfg.node_id, key)
        if node is None:
            print(f"luckrig-node edit: the tracker has no visible node {cfg.node_id}", file=sys.stderr)
            return 1
        new, lines = update(tracker, cfg.node_id, key, node, requested(args))
    except TrackerDown as exc:
        print(f"luckrig-node edit: the tracker at {tracker} did not answer ({exc}); nothing changed", file=sys.stderr)
        return 1
    except Refused as exc:
        print(f"luckrig-node edit: {exc} Nothing changed.", file=sys.stderr)
        return 1
    if lines:
        print(f"Changed node {cfg.node_id}:")
        print("\n".join(f"  {line}" for line in lines))
    else:
        print(f"Nothing changed: node {cfg.node_id} already reads like this (flags such as --display-name change it).")
    print("The tracker has:")
    print("\n".join(summary(new, tracker)))
    return 0
