"""luckrig-relay: home rigs have no open port, so their agents dial out to a relay, and tasters reach them here.

A small aiohttp service with no Django import and no database: it holds one WebSocket tunnel per relayed node
(`GET /tunnel`), serves the agent's own OpenAI-compatible paths under `/n/<node_id>/`, and carries each request and
its stream through the tunnel chunk by chunk (docs/relay.md). It verifies tunnel tickets and tasting tokens offline
with the tracker's published keys, and witnesses each tasting (time to first content chunk, chunks, bytes, how it
ended) for the tracker. It shares the frame codec and token checks with the agent package (`node_agent.frames`,
`node_agent.auth`), never the tracker's code."""

__version__ = "0.1.0"
