"""`luckrig-node join` and `luckrig-node status`: one command from a running ollama or llama.cpp to a listed,
serving rig. Every step is printed; running it again reuses the saved identity and node while the tracker
still knows them, and updates the node's registration from the flags it is given (node_agent/edit.py)."""

import asyncio
import json
import os
import re
import sys
import warnings
from pathlib import Path

import aiohttp
import requests

from node_agent import config, hardware, keys, model_identity, upstream

IDENTITY = "identity.json"
CANDIDATES = ["http://127.0.0.1:11434", "http://127.0.0.1:8080", "http://127.0.0.1:8081"]
# A test seam, not a documented flag: the tests point the probe at their fake servers (comma-separated URLs),
# because the real ports may be taken by a real ollama or llama.cpp on the machine that runs them.
PROBE_ENV = config.ENV_PREFIX + "PROBE_URLS"


def candidates() -> list[str]:
    override = os.environ.get(PROBE_ENV, "")
    return [url.strip() for url in override.split(",") if url.strip()] or CANDIDATES


def step(text: str) -> None:
    print(f"• {text}", flush=True)


def load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def save_private_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(path.with_suffix(".tmp"), path)


async def find_upstream(explicit: str | None) -> upstream.Detected | None:
    async with aiohttp.ClientSession() as session:
        for url in [explicit] if explicit else candidates():
            found = await upstream.detect(session, url)
            if found is not None:
                return found
    return None


def node_id_hint(gpu: str, model: str, quant: str) -> str:
    """A readable id: `CPU: Intel(R) Xeon(R) Processor (24 GB RAM)` → `intel-xeon-processor`."""
    short = re.sub(r"\((r|tm|c)\)|\(.*?\)|^cpu:\s*", "", gpu, flags=re.IGNORECASE).strip()
    return f"{short}-{model}-{quant}"[:56]


class TrackerDown(Exception):
    """The tracker did not answer (or answered 5xx): nothing can be learnt about the saved identity from it."""


def tracker_call(
    method: str, url: str, credential: str | None = None, body: dict | None = None, timeout: float = 15
) -> requests.Response:
    """One request to the tracker with a credential (a contributor key, a node secret) as Bearer: the answer, or
    TrackerDown when the tracker does not answer or fails (5xx). The CLI's one way to ask the tracker (join, edit,
    circle): a refusal (4xx) is the caller's to put into words."""
    try:
        r = requests.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {credential}"} if credential else {},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise TrackerDown(str(exc)) from exc
    if r.status_code >= 500:
        raise TrackerDown(f"HTTP {r.status_code}")
    return r


def _get(url: str, credential: str | None = None) -> requests.Response:
    return tracker_call("GET", url, credential, timeout=10)


def contributor_known(tracker: str, key: str) -> bool:
    """Does this tracker accept the saved contributor key? 401 means it has never heard of it (a reset
    database, another tracker at the same URL); anything else (a 403 ban included) means it knows the key."""
    return _get(f"{tracker}/api/contributors/me", key).status_code != 401


def node_standing(tracker: str, node_id: str, secret: str, key: str | None = None) -> str:
    """What this tracker says about the saved node: `known`, `hidden` (it accepts the secret but the node is
    taken down or banned, which is 404 to everyone) or `unknown` (it refuses the secret).

    The secret is checked on `/api/filter-rules` rather than with a heartbeat: it proves the same thing
    without telling the tracker the node is alive, which `join --no-serve` must not claim. The node is asked for
    with the owner's key (`key`): a circle rig is 404 to anyone else."""
    if _get(f"{tracker}/api/filter-rules", secret).status_code == 401:  # only 401: a 403 (a ban) is knowing it
        return "unknown"
    # The secret is accepted, so the tracker has the node: a 404 here can only mean that it is hidden.
    return "hidden" if _get(f"{tracker}/api/nodes/{node_id}", key).status_code == 404 else "known"


def contributor_key(args, cfg_dir: Path, tracker: str) -> str:
    if args.contributor_key:
        return args.contributor_key
    identity = load_json(cfg_dir / IDENTITY)
    if identity.get("contributor_key") and identity.get("tracker") == tracker:
        saved_id = identity.get("contributor_id", "")
        try:
            known = contributor_known(tracker, identity["contributor_key"])
        except TrackerDown:
            step(f"The tracker did not answer; keeping the saved contributor identity {saved_id}")
            return identity["contributor_key"]
        if known:
            step(f"Using the saved contributor identity {saved_id}")
            return identity["contributor_key"]
        step(
            f"The tracker at {tracker} does not know the saved contributor identity {saved_id} "
            "(its database was reset?); making a new one"
        )
    r = requests.post(f"{tracker}/api/contributors", json={"handle": args.handle} if args.handle else {}, timeout=15)
    if r.status_code != 201:
        raise ValueError(f"the tracker refused a new contributor identity: {r.status_code} {r.text[:200]}")
    body = r.json()
    save_private_json(
        cfg_dir / IDENTITY,
        {"tracker": tracker, "contributor_id": body["contributor"]["id"], "contributor_key": body["contributor_key"]},
    )
    step(f"Created contributor identity {body['contributor']['id']} (key saved in {cfg_dir / IDENTITY}, mode 0600)")
    return body["contributor_key"]


def saved_node(saved: dict, tracker: str, key: str | None = None) -> tuple[str, str, str] | None:
    """The saved node, its secret and its standing (`known`, `hidden`, or `down` when the tracker cannot be
    asked); None when the tracker says it does not know them, so that `join` registers again instead of serving
    a ghost."""
    if not (saved.get("node_id") and saved.get("tracker") == tracker and saved.get("node_secret")):
        return None
    node_id, secret = saved["node_id"], saved["node_secret"]
    try:
        standing = node_standing(tracker, node_id, secret, key)
    except TrackerDown:
        step(f"The tracker did not answer; keeping the saved node {node_id} (the agent retries until it does)")
        return node_id, secret, "down"
    if standing == "unknown":
        step(
            f"The tracker at {tracker} does not know the saved node {node_id} or refuses its secret "
            "(its database was reset?); registering the node again"
        )
        return None
    if standing == "hidden":
        # Registering another node here would route around a moderator's decision: keep this one.
        step(
            f"Reusing the registered node {node_id}, which the tracker has taken down or banned: "
            "tasters get no tokens for it until a moderator restores it"
        )
    else:
        step(f"Reusing the registered node {node_id}")
    return node_id, secret, standing


def update_registration(
    args, tracker: str, node_id: str, key: str, standing: str, wanted: dict
) -> tuple[int | None, dict | None]:
    """`join` run again: the flags it is given (`wanted`) update the node's registration (only what differs is
    sent), and it says what changed. Asks for a missing display name and tuning note on a terminal. Returns an exit
    code when join must stop (else None), and the node as the tracker now has it (None when it cannot say)."""
    from node_agent import edit

    if standing != "known":
        if wanted:
            why = "does not answer" if standing == "down" else "hides the node until a moderator restores it"
            step(f"Not updating the registration: the tracker {why}")
        return None, None
    try:
        node = edit.fetch_node(tracker, node_id, key)
        if node is None:
            return None, None
        if "circles" in wanted:  # --circle adds a circle: the rig stays shared with those it has
            wanted = {**wanted, "circles": sorted({c["id"] for c in node.get("circles") or []} | {*wanted["circles"]})}
        node, lines = edit.update(tracker, node_id, key, node, edit.ask_for_missing(args, node, wanted))
    except TrackerDown:
        step("The tracker did not answer; the registration is not updated")
        return None, None
    except edit.Refused as exc:
        print(f"luckrig-node join: {exc} The registration is unchanged.", file=sys.stderr)
        return 1, None
    if lines:
        step("Updated the registration:")
        print("\n".join(f"    {line}" for line in lines), flush=True)
    else:
        step("The registration is unchanged: it already says what the flags say")
    return None, node


def file_header(found: upstream.Detected, model: str, cfg: config.AgentConfig) -> dict:
    """What the served model file's GGUF header says (node_agent/model_identity.py), for the quantization and
    context length the operator did not state; empty when the file cannot be found or read. Only the header is
    read here: the sha256, which reads the whole file, waits for `serve`."""

    async def find():
        async with aiohttp.ClientSession(trust_env=False) as session:
            return await model_identity.locate(
                session,
                backend=found.backend,
                base_url=found.base_url,
                model=model,
                model_file=cfg.model_file,
                ollama_dir=cfg.ollama_models,
            )

    located = asyncio.run(find())
    if located is None:
        return {}
    try:
        header = model_identity.read_header(located[0])
    except (OSError, ValueError) as exc:
        step(f"The model file {located[0]} could not be read ({exc})")
        return {}
    step(
        f"Model file {located[0].name}: {header['quantization'] or 'quantization not stated'}, "
        f"{header['architecture'] or 'architecture not stated'}"
        + (f", trained context {header['context_length']:,}" if header["context_length"] else "")
    )
    return header


def join(args, flags: dict) -> int:
    cfg = config.resolve(flags)
    if not cfg.tracker:
        print("luckrig-node join: --tracker is required", file=sys.stderr)
        return 2
    tracker = cfg.tracker.rstrip("/")
    cfg_dir = Path(cfg.config_dir)
    saved = config.saved_config(cfg_dir)
    if saved.get("visibility") == "local" and not args.visibility:
        # A local rig is for paired devices only and never registered: joining a tracker widens it, which only an
        # explicit command may do (issue 16).
        print(
            "luckrig-node join: this rig is pinned local (your paired devices only, no tracker); joining a tracker "
            "would widen it. Say how far with --visibility public, unlisted or circle.",
            file=sys.stderr,
        )
        return 1

    step(
        "Looking for a local LLM server"
        + (f" at {cfg.upstream}" if cfg.upstream else " (ollama :11434, llama.cpp :8080)")
    )
    found = asyncio.run(find_upstream(cfg.upstream or None))
    if found is None:
        print(
            "luckrig-node join: no ollama or llama.cpp server answered; start one or pass --upstream URL",
            file=sys.stderr,
        )
        return 1
    step(
        f"Found {found.backend} at {found.base_url}"
        + (f" (version {found.version})" if found.version else "")
        + f", models: {', '.join(found.models) or 'none listed'}"
    )
    model = args.model or (found.models[0] if found.models else "")
    if not model:
        print("luckrig-node join: the server lists no model; pass --model", file=sys.stderr)
        return 1

    hw = hardware.detect()
    gpu = args.gpu or hw.gpu
    vram = args.vram_gb if args.vram_gb is not None else hw.vram_gb
    step(f"Hardware: {gpu}" + (f", {vram:g} GB" if vram else "") + f" (from {'flags' if args.gpu else hw.source})")
    header = file_header(found, model, cfg)
    quant = (
        args.quantization
        or header.get("quantization")
        or found.quantizations.get(model)
        or hardware.quantization_from(model)
        or "unknown"
    )

    key = contributor_key(args, cfg_dir, tracker)

    key_file = Path(cfg.node_private_key_file or cfg_dir / "node_x25519.pem")
    if key_file.exists():
        public_pem = keys.load_public_pem(key_file)
        step(f"Using the node key pair at {key_file}")
    else:
        public_pem, _ = keys.generate(key_file)
        step(f"Made the node's X25519 key pair ({key_file}, mode 0600)")
    fingerprint = keys.fingerprint_of_public_pem(public_pem)

    from node_agent import circle_commands, edit

    wanted = edit.requested(args)
    circle = None
    if args.circle:
        try:
            circle = circle_step(tracker, key, args.circle)
        except (circle_commands.Refused, TrackerDown) as exc:
            print(f"luckrig-node join: the circle {args.circle!r} could not be found or made: {exc}", file=sys.stderr)
            return 1
        wanted["circles"] = [circle["id"]]

    host, port = cfg.host, cfg.port
    reused = saved_node(saved, tracker, key)
    if reused is not None:
        node_id, secret, standing = reused
        code, node = update_registration(args, tracker, node_id, key, standing, wanted)
        if code is not None:
            return code
    else:
        # Without a public URL the node is relayed: tasters reach it through a relay the agent dials out to, so a
        # rig behind a home router needs no open port (and an https page may taste it).
        body = {
            **edit.ask_for_missing(args, None, wanted),
            "id": node_id_hint(gpu, model, quant),
            "model_name": model,
            "quantization": quant,
            # The context the file was trained for, when the operator states none (--context-length).
            **({"context_length": header["context_length"]} if header.get("context_length") else {}),
            **({"context_length": wanted["context_length"]} if "context_length" in wanted else {}),
            "gpu": gpu,
            "vram_gb": vram,
            "node_public_key": public_pem,
        }
        r = requests.post(f"{tracker}/api/nodes", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=15)
        if r.status_code != 201:
            print(f"luckrig-node join: {edit.refusal(r, body['id'])}", file=sys.stderr)
            if r.status_code == 400 and args.public_url and "endpoint_url" in r.text:
                print(
                    "luckrig-node join: leave out --public-url to join relayed (no open port needed)", file=sys.stderr
                )
            return 1
        node = r.json()["node"]
        node_id, secret = node["id"], r.json()["node_secret"]
        if node.get("reachability") == "relayed":
            step(f"Registered node {node_id}, relayed: the agent dials out to a relay, no open port needed")
        else:
            step(f"Registered node {node_id} at {node.get('endpoint_url')}")
    config.save_config(
        cfg_dir,
        {
            **saved,
            "tracker": tracker,
            "node_id": node_id,
            "node_secret": secret,
            "upstream": found.base_url,
            "backend": found.backend,
            "host": host,
            "port": port,
            "model": model,
            "node_private_key_file": str(key_file),
            **pins(args, saved, circle, node),
        },
    )
    step(f"Saved the node's configuration in {cfg_dir / 'agent.json'} (mode 0600)")
    if args.visibility == "circle" and circle is None and not saved.get("circle"):
        step("A circle rig with no circle: only you can taste it. Share it with: join again with --circle NAME")
    if circle is not None:
        invite_step(tracker, key, circle)
    step(f"Node key fingerprint: {fingerprint}")
    if args.no_serve:
        step("Not serving (--no-serve). Start with: luckrig-node serve")
        return 0
    where = tasters_url(tracker, node_id, key)
    if where:
        step(f"Tasters reach it at {where}")
    step(f"Serving on http://{host}:{port}/v1 (this machine only); Ctrl-C stops")
    from node_agent.serving import serve

    serve(config.resolve({**flags, "config_dir": str(cfg_dir)}))
    return 0


def circle_step(tracker: str, key: str, name: str) -> dict:
    """`join --circle NAME`: the contributor's circle of that name, made if there is none."""
    from node_agent import circle_commands

    found, made = circle_commands.find_or_create(tracker, key, name)
    step(f"{'Made' if made else 'Using'} your circle {found['name']} ({found['id']})")
    return found


def invite_step(tracker: str, key: str, circle: dict) -> None:
    """An invite link for the circle the rig was shared with; a refusal (say, too many invites this hour) is said,
    and joining goes on: `luckrig-node circle invite` makes one later."""
    from node_agent import circle_commands

    try:
        made = circle_commands.create_invite(tracker, key, circle)
    except (circle_commands.Refused, TrackerDown) as exc:
        step(f"No invite link made ({exc}); make one later with: luckrig-node circle invite")
        return
    step("Invite your friends:")
    circle_commands.print_invite(circle["name"], made)


def pins(args, saved: dict, circle: dict | None, node: dict | None) -> dict:
    """What agent.json pins of the rig's radius, so that `serve` refuses strangers even if the tracker errs:
    `--visibility circle` pins it, another --visibility unpins it; --circle NAME pins the circles the rig is now
    shared with (that one among them; the tracker cannot add to pinned circles, so all of them are pinned)."""
    visibility = saved.get("visibility", "")
    if args.visibility:
        visibility = "circle" if args.visibility == "circle" else ""
    circles = saved.get("circle", [])
    if circle is not None:
        # As the tracker now has them; when it could not say, what was pinned before.
        shared = {c["id"] for c in node.get("circles") or []} if node is not None else config.circle_ids(circles)
        circles = sorted(shared | {circle["id"]})
    return {"visibility": visibility, "circle": circles}


def tasters_url(tracker: str, node_id: str, key: str | None = None) -> str | None:
    """The URL the tracker publishes for this node (a relay's /n/<id>/v1 for a relayed node)."""
    try:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = requests.get(f"{tracker}/api/nodes/{node_id}", headers=headers, timeout=10)
        return r.json()["node"]["endpoint_url"]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


def lan_line(lan: dict, config_dir: Path) -> str:
    """`serve --lan`'s announcement as status shows it; the key from this machine's own file."""
    from node_agent import identity

    state = "announced" if lan.get("announced") else "announcing"
    try:
        key = identity.load_existing(config_dir).fingerprint
    except (OSError, ValueError, TypeError):
        key = "unreadable"
    return f"{state} on the LAN as {lan.get('radius')}, key {key}"


def status(args) -> int:
    from node_agent import rules_cache
    from node_agent.circle_commands import radius

    cfg = config.resolve({"config_dir": args.config_dir})
    if not cfg.node_id and not cfg.local:
        print("No node is configured here. Run: luckrig-node join --tracker URL (or serve --visibility local)")
        return 1
    if cfg.local:
        print("Node:      none (a local rig: paired devices only)")
        print("Tracker:   none" + (f" ({cfg.tracker} is configured but not contacted)" if cfg.tracker else ""))
    else:
        print(f"Node:      {cfg.node_id}")
        print(f"Tracker:   {cfg.tracker}")
    print(f"Upstream:  {cfg.upstream} ({cfg.backend or 'detect'})")
    scheme = "https" if cfg.local else "http"  # a local rig serves HTTPS with its identity key (serving.py)
    print(f"Listening: {scheme}://{cfg.host}:{cfg.port}/v1 (this machine)")
    print(f"Rules:     {rules_cache.describe(rules_cache.load(cfg.state_dir))}")
    if cfg.node_private_key_file and Path(cfg.node_private_key_file).exists():
        print(f"Key:       {keys.fingerprint_of_public_pem(keys.load_public_pem(Path(cfg.node_private_key_file)))}")
    serving = None
    try:
        with warnings.catch_warnings(action="ignore"):  # this machine's own public /health: nothing sent to pin
            local = requests.get(f"{scheme}://{cfg.host}:{cfg.port}/health", timeout=3, verify=False).json()  # noqa: S501
        serving = local.get("visibility")
        print(
            f"Agent:     running, upstream {'ok' if local.get('upstream_ok') else 'NOT answering'}, "
            f"queue {local['queue']['active']}/{local['queue']['max_active']} active, "
            f"{local['queue']['waiting']} waiting"
            + (f", serving as {local['visibility']}" if local.get("visibility") else "")
        )
        if local.get("lan"):
            print(f"LAN:       {lan_line(local['lan'], Path(cfg.config_dir))}")
        reach = local.get("reachability") or {}
        if reach.get("reachability") == "relayed":
            relay_id = reach.get("relay_id")
            print(f"Relay:     tunnel {reach.get('tunnel')}" + (f" to relay {relay_id}" if relay_id else ""))
    except (requests.RequestException, ValueError, KeyError):
        print("Agent:     not running here")
    if cfg.local:
        print(f"Radius:    {radius(None, cfg, serving)}")
        return 0
    identity = load_json(Path(cfg.config_dir) / IDENTITY)
    key = identity.get("contributor_key") if identity.get("tracker") == cfg.tracker.rstrip("/") else None
    node = None
    try:
        # As its owner: a circle rig is 404 to anyone else.
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        node = requests.get(f"{cfg.tracker}/api/nodes/{cfg.node_id}", headers=headers, timeout=5).json()["node"]
        print(
            f"Tracker says: {node['health']['status']}, rarity {node['rarity_score']}, "
            f"contribution {node['contribution']['total']} ({node['contribution']['tier']})"
        )
    except (requests.RequestException, ValueError, KeyError, TypeError):
        node = None
        print("Tracker says: (unreachable)")
    print(f"Radius:    {radius(node, cfg, serving)}")
    return 0
