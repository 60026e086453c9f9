"""`luckrig-relay`: carry tasters' requests to rigs that have no open port.

luckrig-relay --tracker URL --relay-id ID --relay-secret SECRET [--host 127.0.0.1] [--port 8789] [--public-url URL]

Each flag also reads LUCKRIG_RELAY_<FLAG_NAME> (e.g. LUCKRIG_RELAY_RELAY_SECRET). Register the relay first on the
tracker: `python manage.py relay add <relay_id> <public_url>` prints its secret."""

import argparse
import logging
import sys

from relay import __version__, config

FLAGS = [
    ("--tracker", str, "the tracker's URL"),
    ("--relay-id", str, "this relay's id, as registered with `manage.py relay add`"),
    ("--relay-secret", str, "the relay secret (lrr_...) that `manage.py relay add` printed"),
    ("--host", str, "address to listen on (default 127.0.0.1; behind nginx, keep it local)"),
    ("--port", int, "port to listen on (default 8789)"),
    ("--public-url", str, "the base URL tasters and agents use (default http://HOST:PORT)"),
    ("--issuer", str, "the tracker's SITE_URL, when --tracker is another address for it (default: --tracker)"),
    ("--state-dir", str, "where the tracker's public keys are cached (default ~/.cache/luckrig-relay)"),
    ("--max-body-bytes", int, "largest request body a taster may send (default 1 MiB)"),
    ("--rate-per-min", int, "requests a minute per client address on /n/ paths (default 600)"),
    ("--rate-burst", int, "requests at once per client address (default 60)"),
    ("--trusted-proxies", str, "comma-separated IPs/CIDRs whose X-Forwarded-For is believed (e.g. 127.0.0.1)"),
    ("--window-bytes", int, "per-stream buffer before the agent is paused (default 256 KiB)"),
    ("--stall-timeout", float, "seconds a taster may read nothing before the stream is cancelled (default 60)"),
    ("--heartbeat-interval", float, "seconds between heartbeats to the tracker (default 10)"),
    ("--token-ttl", int, "lifetime in seconds of the tokens the gateway asks for (default: the tracker's)"),
    ("--allow-private-rigs", int, "1: the gateway may reach rigs at private or loopback addresses (default 0)"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luckrig-relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"luckrig-relay {__version__}")
    for flag, kind, help_text in FLAGS:
        parser.add_argument(
            flag,
            type=kind,
            default=None,
            help=help_text + f" [env {config.ENV_PREFIX}" + flag[2:].upper().replace("-", "_") + "]",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    cfg = config.resolve(vars(args))
    missing = [f for f in ("tracker", "relay_id", "relay_secret") if not getattr(cfg, f)]
    if missing:
        print(
            "luckrig-relay: missing "
            + ", ".join("--" + m.replace("_", "-") for m in missing)
            + " (register the relay with `python manage.py relay add <relay_id> <public_url>`)",
            file=sys.stderr,
        )
        return 2
    from relay.server import serve

    serve(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
