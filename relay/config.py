"""Relay configuration: command-line flags, then `LUCKRIG_RELAY_<FLAG_NAME>` environment variables, then defaults."""

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "LUCKRIG_RELAY_"


@dataclass
class RelayConfig:
    tracker: str = ""
    relay_id: str = ""
    relay_secret: str = ""
    host: str = "127.0.0.1"
    port: int = 8789
    public_url: str = ""  # default http://HOST:PORT
    # The `iss` that tokens and tickets carry: the tracker's SITE_URL. Default: --tracker, which is right unless the
    # relay reaches the tracker by another address (an internal one, behind the public name).
    issuer: str = ""
    # Tracker keys are cached here, so that a relay restarted while the tracker is down still verifies tokens.
    state_dir: str = field(default_factory=lambda: str(Path.home() / ".cache" / "luckrig-relay"))
    max_body_bytes: int = 1024 * 1024  # a taster's request body (the agent's own default cap)
    rate_per_min: int = 600  # requests per client IP (IPv6: per /64) per minute on /n/... paths
    rate_burst: int = 60
    trusted_proxies: str = ""  # comma-separated IPs or CIDRs whose X-Forwarded-For is believed
    window_bytes: int = 256 * 1024  # per-stream buffer before the agent is told to pause
    stall_timeout: float = 60.0  # a stream whose taster reads nothing for this long is cancelled
    heartbeat_interval: float = 10.0
    # The lifetime the gateway asks the tracker for, for the tokens it holds on its callers' behalf (0: the
    # tracker's default; it clamps to its own bounds).
    token_ttl: int = 0
    # 1: the gateway may carry requests to rigs (or relays) at private, loopback or link-local addresses; only for a
    # relay whose rigs share its machine or network (make run, the tests). Default 0 (relay/addresses.py says why).
    allow_private_rigs: int = 0
    report_interval: float = 2.0

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def public(self) -> dict:
        return {f.name: ("lrr_…" if f.name == "relay_secret" else getattr(self, f.name)) for f in fields(self)}


def _coerce(kind, value):
    if kind in (int, "int"):
        return int(value)
    if kind in (float, "float"):
        return float(value)
    return str(value)


def resolve(flags: dict) -> RelayConfig:
    """flags (None = not given) > environment > defaults."""
    values = {}
    for f in fields(RelayConfig):
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        if flags.get(f.name) is not None:
            values[f.name] = flags[f.name]
        elif env not in (None, ""):
            values[f.name] = _coerce(f.type, env)
    return RelayConfig(**values)
