"""`serve --lan`: starting the agent's mDNS announcement (node_agent/lan.py) with the server."""

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm

from node_agent import identity, lan
from node_agent.config import AgentConfig

log = logging.getLogger("luckrig.agent")


def start(config: AgentConfig, txt_of: Callable[[identity.Identity], dict[str, str]]) -> lan.LanAdvertiser | None:
    """The LAN announcement, started (its TXT: `txt_of` the identity key); None when there is no LAN address to
    announce, said in the log: the agent serves anyway. The addresses are checked again every 10 s: the announcement
    follows DHCP and the default route."""
    find = functools.partial(lan.system_announce_addresses, config.lan_interface, host=config.host)
    try:
        name, addresses = find()
        agent_key = identity.load_or_create(Path(config.config_dir))
    except (lan.LanError, OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        log.warning("not announcing on the LAN: %s", exc)
        return None
    if config.host in ("127.0.0.1", "::1", "localhost"):
        log.warning("--lan: the agent listens on %s only; other devices see it but cannot connect", config.host)
    advertiser = lan.LanAdvertiser(agent=agent_key, port=config.port, addresses=addresses, find=find)
    try:
        advertiser.start(txt_of(agent_key))
    except OSError as exc:  # no multicast socket on that address
        log.warning("not announcing on the LAN: %s", exc)
        return None
    log.info("LAN interface %s", name)
    return advertiser
