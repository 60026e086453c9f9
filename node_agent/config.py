"""Agent configuration: command-line flags, then `LUCKRIG_AGENT_<FLAG_NAME>` environment variables, then the
saved config (`<config-dir>/agent.json`, written by `luckrig-node join`), then defaults."""

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "LUCKRIG_AGENT_"
# The filter category no operator may switch off (sexual content involving minors): the agent refuses to start.
ALWAYS_FILTERED = "csam"
# What --visibility may pin. `local` is the narrowest radius and the only one that needs no tracker; nothing but the
# operator changing this pin widens a rig (node_agent/circles.py).
PINNABLE = ("local", "public", "unlisted", "circle")


def default_config_dir() -> Path:
    return Path(os.environ.get(ENV_PREFIX + "CONFIG_DIR") or Path.home() / ".config" / "luckrig")


@dataclass
class AgentConfig:
    tracker: str = ""
    node_id: str = ""
    node_secret: str = ""
    upstream: str = ""
    backend: str = ""  # ollama | llama.cpp | openai; empty: detect
    model: str = ""  # the model this rig serves; empty: the upstream's first
    # Where the served model's file is, for its identity (node_agent/model_identity.py): empty asks the server.
    model_file: str = ""
    ollama_models: str = ""  # ollama's models folder; empty: $OLLAMA_MODELS or ~/.ollama/models
    host: str = "127.0.0.1"
    port: int = 8788
    max_active: int = 1
    max_waiting: int = 16
    upstream_timeout: float = 300.0
    stall_timeout: float = 60.0
    moderation_endpoint: str = ""
    moderation_timeout: float = 5.0
    moderation_api_key: str = ""  # sent as a Bearer token to the moderation endpoint (e.g. OpenAI's)
    moderate_output: str = "record"
    node_private_key_file: str = ""
    heartbeat_interval: float = 15.0
    max_body_bytes: int = 1024 * 1024
    relay: str = "auto"  # auto: dial a relay when the tracker says the node is relayed (no public URL); off: never
    # Hostile tasters (issue 11): one token's share of the queue, clients that stop reading, slow bodies,
    # connection floods from one address, and floods of one log line.
    max_per_token: int = 2
    client_stall_timeout: float = 60.0
    body_timeout: float = 30.0
    drain_timeout: float = 15.0  # on SIGTERM, for answers in flight (node_agent/drain.py); below the unit's 30 s
    max_connections_per_address: int = 32
    log_repeat_window: float = 60.0
    filter_off: str = ""  # filter categories this rig does not apply, comma-separated (never csam)
    # auto | probe | off: ask a server that streams no usage its prompt tokens with a one-token request after each
    # answer (auto: only a server on this machine or a private network, never a remote paid API; node_agent/upstream.py)
    count_prompt_tokens: str = "auto"
    # A test seam, not a documented setting: count loopback peers against --max-connections-per-address too.
    # In production loopback is exempt (a reverse proxy on the same machine brings every taster from 127.0.0.1), so
    # tests, which run on 127.0.0.1, switch the exemption off to see the bound work.
    limit_loopback: int = 0
    # The rig's radius as the operator pins it (issue 15, node_agent/circles.py): empty leaves it to the tracker.
    # `circle` and the circle ids (comma-separated, or a list in agent.json) win over whatever the tracker says;
    # `local` (issue 16) serves paired devices only and never speaks to a tracker, whatever --tracker says.
    visibility: str = ""
    circle: str = ""
    # Local mode (issue 16, node_agent/lan.py): announce this agent on the LAN over mDNS; which interface's
    # addresses (empty: the default route's).
    lan: bool = False
    lan_interface: str = ""
    config_dir: str = field(default_factory=lambda: str(default_config_dir()))

    def __post_init__(self):
        if isinstance(self.circle, list | tuple):  # agent.json keeps the pinned circles as a list
            self.circle = ",".join(sorted(circle_ids(self.circle)))
        if self.visibility not in ("", *PINNABLE):
            raise ValueError(f"--visibility must be local, public, unlisted or circle, not {self.visibility!r}")
        if self.relay not in ("auto", "off"):
            raise ValueError(f"--relay must be auto or off, not {self.relay!r}")
        if self.count_prompt_tokens not in ("auto", "probe", "off"):
            raise ValueError(f"--count-prompt-tokens must be auto, probe or off, not {self.count_prompt_tokens!r}")
        if ALWAYS_FILTERED in self.filter_categories_off:
            raise ValueError(
                f"--filter-off: the {ALWAYS_FILTERED} category (sexual content involving minors) cannot be switched "
                "off; every LuckRig rig filters it"
            )
        for name in ("max_per_token", "client_stall_timeout", "body_timeout", "drain_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be greater than 0")

    @property
    def filter_categories_off(self) -> frozenset[str]:
        """The categories named by --filter-off (repeatable or comma-separated), lower-cased."""
        return frozenset(part.strip().lower() for part in self.filter_off.split(",") if part.strip())

    @property
    def pinned_circles(self) -> frozenset[str]:
        """The circle ids named by --circle (repeatable or comma-separated)."""
        return circle_ids(self.circle)

    @property
    def local(self) -> bool:
        """Pinned `local`: paired devices only, no tracker, relay or usage report (docs/local-mode.md)."""
        return self.visibility == "local"

    @property
    def state_dir(self) -> Path:
        return Path(self.config_dir) / "state" / (self.node_id or "unregistered")

    def public(self) -> dict:
        """What may be printed: no secret."""
        data = asdict(self)
        data["node_secret"] = "lrn_…" if self.node_secret else ""
        data["moderation_api_key"] = "…" if self.moderation_api_key else ""
        return data


def circle_ids(value) -> frozenset[str]:
    """Circle ids from --circle or its environment variable (comma-separated) or agent.json (a list)."""
    parts = value.split(",") if isinstance(value, str) else value or []
    return frozenset(str(part).strip() for part in parts if str(part).strip())


def _coerce(kind, value):
    if kind is bool or kind == "bool":
        if value.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"expected 1 or 0 (true or false), not {value!r}")
        return value.strip().lower() in ("1", "true", "yes", "on")
    if kind is int or kind == "int":
        return int(value)
    if kind is float or kind == "float":
        return float(value)
    return str(value)


def saved_config(config_dir: Path) -> dict:
    path = config_dir / "agent.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def save_config(config_dir: Path, data: dict) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "agent.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the node secret
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)
    return path


def resolve(flags: dict) -> AgentConfig:
    """flags (None = not given) > environment > saved config > defaults."""
    config_dir = Path(flags.get("config_dir") or os.environ.get(ENV_PREFIX + "CONFIG_DIR") or default_config_dir())
    saved = saved_config(config_dir)
    values = {}
    for f in fields(AgentConfig):
        if f.name == "config_dir":
            continue
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        if flags.get(f.name) is not None:
            values[f.name] = flags[f.name]
        elif env not in (None, ""):
            values[f.name] = _coerce(f.type, env)
        elif f.name in saved:
            values[f.name] = saved[f.name]
    return AgentConfig(**values, config_dir=str(config_dir))
