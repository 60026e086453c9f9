"""Which addresses the gateway may connect to when it carries a request to a rig by HTTP (a direct rig's
`endpoint_url`, or another relay). A direct rig's URL is its contributor's choice: the tracker refuses private
addresses when the URL is registered, but a name can resolve elsewhere later (DNS rebinding), and without this
check the relay would POST a taster's prompt and a tasting token to whatever its own network can reach (a metadata
service, a database port) and pass the answer back. The check happens inside aiohttp's resolver, on the very
addresses the socket connects to.

The rule is the tracker's (core/urlguard.py `is_public_address`), copied into the agent (node_agent/addresses.py,
which `luckrig-node pull` uses) because neither the agent nor the relay imports the tracker; the relay, which
requires the agent beside it, uses the agent's copy, and tests/relay/test_rig_addresses.py holds it equal to the
tracker's. `--allow-private-rigs` lifts it for a relay whose rigs are on its own machine or network (`make run`,
the tests)."""

from node_agent.addresses import BlockedAddress, PublicOnlyResolver, is_public_address, url_allowed

__all__ = ["BlockedAddress", "PublicOnlyResolver", "is_public_address", "url_allowed"]
