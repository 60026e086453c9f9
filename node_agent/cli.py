"""`luckrig-node`: the node agent's command line.

This first part has `keygen` (the node's X25519 key pair); `join`, `serve`, `taste` and `status` are the
node-agent work that follows (see the README's roadmap)."""

import argparse
import os
import sys
from pathlib import Path

from node_agent import __version__, keys


def default_config_dir() -> Path:
    return Path(os.environ.get("LUCKRIG_AGENT_CONFIG_DIR", Path.home() / ".config" / "luckrig"))


def cmd_keygen(args) -> int:
    private_path = Path(args.out) if args.out else Path(args.config_dir) / "node_x25519.pem"
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luckrig-node", description="LuckRig node agent")
    parser.add_argument("--version", action="version", version=f"luckrig-node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="make the node's X25519 key pair for public-key tasting mode")
    keygen.add_argument("--config-dir", default=str(default_config_dir()))
    keygen.add_argument("--out", help="private key file (default: <config-dir>/node_x25519.pem)")
    keygen.set_defaults(func=cmd_keygen)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as exc:
        print(f"luckrig-node: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
