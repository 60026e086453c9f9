"""`luckrig-node`: join the network, serve a rig, taste a rig, and look after the node's keys.

luckrig-node join --tracker URL [--upstream URL] [--contributor-key KEY]   # register once, then serve
luckrig-node serve --tracker URL --node-id ID --node-secret SECRET --upstream URL [...]
luckrig-node taste --tracker URL --node ID [--mode public-key] "prompt"
luckrig-node taste --tracker URL --model NAME|rig:ID [--gateway URL] "prompt"   # routed by the gateway
luckrig-node edit [--display-name NAME] [--tuning-note TEXT] [--quantization Q] [...]   # change the rig
luckrig-node circle invite|members|remove [--circle NAME] [...]   # the friends a rig is shared with
luckrig-node pull NAME|hf.co/<repo>:<quant>|URL [--models-dir DIR]   # fetch a model and check its sha256
luckrig-node models [--model-file PATH] [--ollama-models DIR] [--models-dir DIR] [--no-wanted]   # local files
luckrig-node discover [--seconds N] [--json]   # the rigs announced on the LAN (serve --lan)
luckrig-node pair [CODE] [--yes] | pair --list | unpair FINGERPRINT|NAME   # your own devices, by their keys
luckrig-node rules [--update [--tracker URL]]   # the filter rules in force; fetch the tracker's once
luckrig-node status
luckrig-node keygen
"""

import argparse
import logging
import sys
from pathlib import Path

from node_agent import __version__, config, keys
from node_agent.circle_commands import uses_arg
from node_agent.edit import add_node_flags


def cmd_keygen(args) -> int:
    private_path = (
        Path(args.out) if args.out else Path(args.config_dir or config.default_config_dir()) / "node_x25519.pem"
    )
    if private_path.exists():
        public_pem = keys.load_public_pem(private_path)
        print(f"A key already exists at {private_path}; keeping it.")
    else:
        public_pem, _ = keys.generate(private_path)
        print(f"Wrote the node's private key to {private_path} (mode 0600).")
    print("Public key (register it as node_public_key):")
    print(public_pem, end="")
    print(f"Fingerprint: {keys.fingerprint_of_public_pem(public_pem)}")
    return 0


SERVE_FLAGS = [
    ("--tracker", str, "the tracker's URL"),
    ("--node-id", str, "this node's id on the tracker"),
    ("--node-secret", str, "the node secret (lrn_...) the tracker returned at registration"),
    ("--upstream", str, "the local LLM server (e.g. http://127.0.0.1:11434 or http://127.0.0.1:8080)"),
    ("--backend", str, "ollama, llama.cpp or openai (default: detect)"),
    ("--model", str, "the model this rig serves (default: the upstream's first); tasters cannot pick another"),
    ("--model-file", str, "the served model's GGUF file, hashed and read for its identity (default: ask the server)"),
    ("--ollama-models", str, "ollama's models folder (default $OLLAMA_MODELS or ~/.ollama/models)"),
    ("--host", str, "address to listen on (default 127.0.0.1)"),
    ("--port", int, "port to listen on (default 8788)"),
    ("--max-active", int, "generations at once (default 1)"),
    ("--max-waiting", int, "waiters before 429 queue_full (default 16)"),
    ("--upstream-timeout", float, "seconds one generation may take (default 300)"),
    ("--stall-timeout", float, "seconds of upstream silence that end a stream (default 60)"),
    ("--moderation-endpoint", str, "an OpenAI-Moderation-compatible URL (fails closed on input)"),
    ("--moderation-timeout", float, "seconds for the moderation hook (default 5)"),
    ("--moderation-api-key", str, "a key for the moderation endpoint, sent as a Bearer token"),
    ("--moderate-output", str, "record (default), block or off"),
    ("--node-private-key-file", str, "X25519 private key (PKCS#8 PEM) for public-key mode"),
    ("--heartbeat-interval", float, "seconds between heartbeats (default 15)"),
    ("--max-body-bytes", int, "largest request body (default 1 MiB)"),
    ("--relay", str, "auto (default): dial a relay when the node has no public URL; off: never"),
    ("--max-per-token", int, "requests of one tasting token in the queue at once, generating or waiting (default 2)"),
    ("--client-stall-timeout", float, "seconds a client may leave the answer unread before its stream ends (60)"),
    ("--body-timeout", float, "seconds a request body may take to arrive (default 30)"),
    ("--drain-timeout", float, "on SIGTERM, seconds answers in flight get to finish before they are ended (15)"),
    ("--max-connections-per-address", int, "open connections per client address, loopback exempt (32; 0: no bound)"),
    ("--log-repeat-window", float, "seconds in which repeats of one log message are counted, not written (60)"),
    ("--filter-off", str, "a filter category this rig does not apply (repeatable or comma-separated; never csam)"),
    (
        "--count-prompt-tokens",
        str,
        "for a model server that streams no usage: probe asks its prompt tokens with a one-token request after each "
        "answer, off never does; auto (default): probe only a server on this machine or a private network",
    ),
    (
        "--visibility",
        str,
        "pin the rig's radius: local serves paired devices only and needs no tracker (never registers, reports or "
        "dials a relay, whatever --tracker says); circle refuses every tasting token not issued through one of its "
        "circles, whatever the tracker says (public, unlisted, or not given: the tracker's word, which can only "
        "narrow it)",
    ),
    ("--circle", str, "a circle id (c_...) this rig serves, pinned: the tracker cannot add to them (repeatable)"),
    (
        "--lan",
        bool,
        "announce this agent (its own port) on the LAN over mDNS as _luckrig._tcp, for local mode (docs/local-mode.md)",
    ),
    ("--lan-interface", str, "with --lan: the interface whose addresses are announced (default: the default route's)"),
    ("--limit-loopback", int, argparse.SUPPRESS),  # a test seam (docs/node-agent.md), not an operator's setting
]
CHOICES = {
    "--relay": ("auto", "off"),
    "--moderate-output": ("record", "block", "off"),
    "--count-prompt-tokens": ("auto", "probe", "off"),
    "--visibility": config.PINNABLE,
}
REPEATABLE = {"--filter-off", "--circle"}


def add_serve_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    for flag, kind, text in SERVE_FLAGS:
        if flag not in skip and kind is bool:
            parser.add_argument(
                flag,
                action="store_const",
                const=True,
                default=None,
                help=f"{text}; env {config.ENV_PREFIX}{flag[2:].upper().replace('-', '_')}=1",
            )
        elif flag not in skip:
            parser.add_argument(
                flag,
                type=kind,
                default=None,
                choices=CHOICES.get(flag),
                action="append" if flag in REPEATABLE else "store",
                help=text
                if text == argparse.SUPPRESS
                else f"{text}; env {config.ENV_PREFIX}{flag[2:].upper().replace('-', '_')}",
            )


def flags_of(args) -> dict:
    flags = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_"), None) for flag, _, _ in SERVE_FLAGS}
    for name, value in flags.items():
        if isinstance(value, list):  # a repeatable flag: one comma-separated value, as in its environment variable
            flags[name] = ",".join(value)
    return flags | {"config_dir": args.config_dir}


def cmd_serve(args) -> int:
    from node_agent.serving import serve

    cfg = config.resolve(flags_of(args))
    # A local rig needs only its model server: it serves paired devices and never speaks to a tracker.
    needed = ("upstream",) if cfg.local else ("tracker", "node_id", "node_secret", "upstream")
    missing = [name for name in needed if not getattr(cfg, name)]
    if missing:
        flags = ", ".join("--" + m.replace("_", "-") for m in missing)
        hint = "" if cfg.local else "; or --visibility local to serve paired devices only, with no tracker"
        print(f"luckrig-node serve: missing {flags} (or run `luckrig-node join` first{hint})", file=sys.stderr)
        return 2
    if cfg.moderate_output not in ("record", "block", "off"):
        print("luckrig-node serve: --moderate-output must be record, block or off", file=sys.stderr)
        return 2
    who = "local rig (paired devices only, no tracker)" if cfg.local else f"node {cfg.node_id}"
    print(f"LuckRig {who}: listening on http://{cfg.host}:{cfg.port}/v1 in front of {cfg.upstream}")
    serve(cfg)
    return 0


def cmd_join(args) -> int:
    from node_agent.join import join

    # The serve flags but --visibility and --circle, which mean other things here: join pins them in agent.json.
    return join(args, flags_of(args) | {"visibility": None, "circle": None})


def cmd_taste(args) -> int:
    from node_agent.taste import taste

    if args.expect_fingerprint and args.mode != "public-key":
        print("luckrig-node taste: --expect-fingerprint applies to --mode public-key only", file=sys.stderr)
        return 2
    if args.model is not None and not args.model.strip():
        print("luckrig-node taste: --model needs a model name or rig:<node id>", file=sys.stderr)
        return 2
    if args.gateway and not args.model:
        print("luckrig-node taste: --gateway applies to --model only", file=sys.stderr)
        return 2
    if args.model and args.mode == "public-key":
        print(
            "luckrig-node taste: --mode public-key is not offered through the gateway (the relay would hold the "
            "token and the rig's key); taste one rig with --node ID",
            file=sys.stderr,
        )
        return 2
    if args.model and args.share_timing:
        # Said before anything is sent: the tasting would be measured and saved, but not shared.
        print(
            "luckrig-node taste: --share-timing is not available for gateway tastings (--model): the relay holds the "
            "tasting token and its upload key, not this client; taste one rig with --node ID to share its timing",
            file=sys.stderr,
        )
        return 2
    return taste(args)


def cmd_edit(args) -> int:
    from node_agent.edit import edit

    return edit(args)


def cmd_circle(args) -> int:
    from node_agent.circle_commands import run

    return run(args)


def cmd_pull(args) -> int:
    from node_agent.pull import pull

    return pull(args)


def cmd_models(args) -> int:
    from node_agent.local_models import run

    return run(args)


def cmd_discover(args) -> int:
    from node_agent.lan import print_discovered

    return print_discovered(args.seconds, args.lan_interface or "", as_json=args.json)


def cmd_lan(args) -> int:
    from node_agent.router import main

    return main(args)


def cmd_rules(args) -> int:
    from node_agent.rules_cache import run

    return run(args)


def cmd_status(args) -> int:
    from node_agent.join import status

    return status(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luckrig-node", description="LuckRig node agent")
    parser.add_argument("--version", action="version", version=f"luckrig-node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config_dir(p):
        p.add_argument("--config-dir", default=None, help="default ~/.config/luckrig; env LUCKRIG_AGENT_CONFIG_DIR")
        return p

    keygen = with_config_dir(sub.add_parser("keygen", help="make the node's X25519 key pair for public-key mode"))
    keygen.add_argument("--out", help="private key file (default: <config-dir>/node_x25519.pem)")
    keygen.set_defaults(func=cmd_keygen)

    serve = with_config_dir(sub.add_parser("serve", help="serve this rig (OpenAI-compatible, queueing, policing)"))
    add_serve_flags(serve)
    serve.set_defaults(func=cmd_serve)

    join = with_config_dir(sub.add_parser("join", help="find the local LLM server, register the node, serve"))
    # --visibility is a registration flag here (node_agent/edit.py), and --circle names a circle (not an id).
    add_serve_flags(join, skip=("--node-id", "--node-secret", "--visibility", "--circle"))
    join.add_argument("--contributor-key", help="an existing contributor key (default: the saved one, or a new one)")
    add_node_flags(join)
    join.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="never ask (on a terminal, join asks for a display name and a tuning note the flags do not give)",
    )
    join.add_argument(
        "--public-url",
        help="a public URL of this agent that tasters can reach directly (e.g. https://rig.example.org/v1); "
        "without it the node is relayed: the agent dials out to a relay and needs no open port",
    )
    join.add_argument("--endpoint-url", dest="public_url", help=argparse.SUPPRESS)  # the old name of --public-url
    join.add_argument("--handle", help="your public handle when a new contributor identity is made")
    join.add_argument("--no-serve", action="store_true", help="register and save, but do not start serving")
    join.add_argument(
        "--circle",
        metavar="NAME",
        help="share the rig with your circle NAME (made if you have none of that name) and print an invite link; "
        "with --visibility circle only its members may taste it, and agent.json pins both",
    )
    join.set_defaults(func=cmd_join)

    taste = sub.add_parser("taste", help="try a rig: stream its answer and measure it")
    taste.add_argument("--tracker", required=True)
    target = taste.add_mutually_exclusive_group(required=True)
    target.add_argument("--node", help="the node id: a token of your own for that rig, the answer from it")
    target.add_argument(
        "--model",
        help="route by the gateway: a model name (any rig serving it, e.g. smollm2) or rig:<node id> (that rig)",
    )
    taste.add_argument("--gateway", help="with --model: the gateway's base URL (default: the one the tracker names)")
    taste.add_argument("--contributor-key", help="use your contributor tier (default: the saved key, if any)")
    taste.add_argument("--config-dir", default=None)
    taste.add_argument("--max-tokens", type=int, default=None)
    taste.add_argument("--system", help="a system message")
    taste.add_argument("--share-timing", action="store_true", help="upload the measured timing (no text)")
    taste.add_argument("--history-dir", default=None, help="default ~/.luckrig/history")
    taste.add_argument(
        "--mode",
        choices=("plain", "public-key"),
        default="plain",
        help="public-key: encrypt the prompt to the node's key and get the answer encrypted to a fresh key of "
        "yours (kept out of proxies and the tracker; the rig's operator can still read it)",
    )
    taste.add_argument(
        "--expect-fingerprint",
        help="public-key mode: refuse to send anything unless the node key's fingerprint is this (sha256:...)",
    )
    taste.add_argument("prompt")
    taste.set_defaults(func=cmd_taste)

    edit = with_config_dir(
        sub.add_parser(
            "edit",
            help="change this machine's registered rig: its name, notes and spec",
            description="Change what the tracker says about this machine's rig (the one `join` registered): "
            "only the flags given are changed, and only where they differ. Prints what changed and the result. "
            'A text flag given as "" clears it. Uses the contributor key `join` saved, or --contributor-key.',
        )
    )
    add_node_flags(edit)
    edit.add_argument("--tracker", help="the tracker's URL (default: the saved one)")
    edit.add_argument("--node-id", help="the node to change (default: the one `join` registered here)")
    edit.add_argument("--contributor-key", help="the owner's contributor key (default: the saved one)")
    edit.set_defaults(func=cmd_edit)

    circle = sub.add_parser(
        "circle",
        help="your circles: invite friends, list members and their usage, remove one",
        description="A circle is a group of friends a rig can be shared with (join --visibility circle --circle "
        "NAME). --circle names one of yours by name or id; without it, the one circle agent.json pins is meant.",
    )
    circle_sub = circle.add_subparsers(dest="circle_command", required=True)

    def circle_command(name: str, text: str) -> argparse.ArgumentParser:
        p = with_config_dir(circle_sub.add_parser(name, help=text, description=text))
        p.add_argument("--circle", help="the circle's name or id (default: the one circle agent.json pins)")
        p.add_argument("--tracker", help="the tracker's URL (default: the saved one)")
        p.add_argument("--contributor-key", help="your contributor key (default: the saved one)")
        p.set_defaults(func=cmd_circle)
        return p

    invite = circle_command("invite", "make an invite link (anyone who has it can join the circle until it expires)")
    invite.add_argument("--uses", type=uses_arg, default=..., help="how many may join by it: a number or unlimited (1)")
    invite.add_argument("--days", type=float, help="days until it expires (default 7, at most 30)")
    invite.add_argument("--role", choices=("member", "inviter"), help="member (default) or inviter (may invite too)")
    invite.add_argument("--qr", metavar="FILE", help="also write the link's QR code (SVG) to FILE")
    circle_command("members", "list the members, their role, status, and requests and tokens today against limits")
    remove = circle_command("remove", "remove a member: their tokens for the circle stop working at once")
    remove.add_argument("member", help="the member's handle or contributor id")

    pull = with_config_dir(
        sub.add_parser(
            "pull",
            help="fetch a model: through ollama, or into the models folder, checked against its sha256",
            description="Fetch a model by catalog name, hf.co/<owner>/<repo>:<quant> or https URL of a .gguf file "
            "(docs/node-agent.md, Pulling a model). An ollama rig pulls it itself; otherwise the file is downloaded "
            "(resumable) into the models folder and used only if its sha256 and size are the expected ones.",
        )
    )
    pull.add_argument("ref", help="a catalog name or alias (smollm2), hf.co/<owner>/<repo>:<quant>, or an https URL")
    pull.add_argument("--backend", choices=("ollama", "files"), help="default: the saved rig's (ollama if it is one)")
    pull.add_argument("--upstream", help="ollama's URL (default: the saved one)")
    pull.add_argument("--models-dir", help="where files go (default ~/.luckrig/models; env LUCKRIG_AGENT_MODELS_DIR)")
    pull.add_argument("--sha256", help="the sha256 a URL's file must have (catalog names and hf.co carry theirs)")
    pull.add_argument("--allow-host", action="append", metavar="HOST", help="also download from HOST (repeatable)")
    pull.add_argument("--allow-http", action="store_true", help="allow plain http (a mirror on your own network)")
    pull.add_argument("--allow-private", action="store_true", help="allow private and loopback addresses")
    pull.add_argument("--catalog", metavar="FILE", help="a catalog file of your own (default: the agent's)")
    pull.add_argument(
        "--ollama-models",
        help="ollama's models folder, read to check the pulled model's sha256 (default: the saved one, else "
        "$OLLAMA_MODELS or ~/.ollama/models)",
    )
    pull.add_argument(
        "--no-verify",
        action="store_true",
        help="with ollama: do not compare the pulled model with the catalog's sha256",
    )
    pull.set_defaults(func=cmd_pull)

    models = with_config_dir(sub.add_parser("models", help="the model files here: sha256, quantization, context"))
    models.add_argument("--model-file", help="a GGUF file to include (default: the one agent.json names)")
    models.add_argument("--ollama-models", help="ollama's models folder (default $OLLAMA_MODELS or ~/.ollama/models)")
    models.add_argument("--upstream", help="a llama.cpp server to ask for its model_path (default: the saved one)")
    models.add_argument("--models-dir", help="pull's folder of .gguf files (default ~/.luckrig/models)")
    models.add_argument("--tracker", help="the tracker whose wanted models are listed at the end (default: the saved)")
    models.add_argument("--no-wanted", action="store_true", help="do not ask the tracker which models it wants")
    models.set_defaults(func=cmd_models)

    discover = sub.add_parser("discover", help="list the LuckRig rigs announced on the LAN (mDNS), for N seconds")
    discover.add_argument("--seconds", type=float, default=3.0, help="how long to listen (default 3)")
    discover.add_argument("--lan-interface", help="listen on this interface only (default: all)")
    discover.add_argument("--json", action="store_true", help="print a JSON list")
    discover.set_defaults(func=cmd_discover)

    router = with_config_dir(
        sub.add_parser("lan", help="one OpenAI-compatible endpoint here over the paired rigs on the LAN (no tracker)")
    )
    router.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    router.add_argument("--port", type=int, default=8790, help="port to listen on (default 8790)")
    router.add_argument("--lan-interface", help="browse on this interface only (default: all)")
    router.add_argument(
        "--allow-plain-http",
        action="store_true",
        help="also use paired rigs that serve no TLS (public or circle rigs with --lan): your prompts and their "
        "answers are then readable and forgeable by anyone on the LAN",
    )
    router.set_defaults(func=cmd_lan)

    from node_agent.pair_commands import add_parsers as add_pair_parsers

    add_pair_parsers(sub, with_config_dir)

    rules = with_config_dir(
        sub.add_parser(
            "rules",
            help="the filter rules this rig applies; --update fetches the tracker's once (a local rig's refresh)",
            description="Which filter rules this rig applies: the ones last fetched from a tracker (kept in the "
            "state dir) or the built-in defaults. --update fetches the tracker's once with the node secret `join` "
            "saved, without registering or serving, and keeps them: a running local rig applies them within 10 s, "
            "any other agent from its next start.",
        )
    )
    rules.add_argument("--update", action="store_true", help="fetch the tracker's rules now and keep them")
    rules.add_argument("--tracker", help="with --update: the tracker's URL (default: the saved one)")
    rules.set_defaults(func=cmd_rules)

    status = with_config_dir(sub.add_parser("status", help="what this machine's node looks like"))
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:
        print(f"luckrig-node: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
