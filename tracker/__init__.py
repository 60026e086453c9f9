"""tracker: credentials and access. Owns TastingToken (every issued jti), UsageReport, the daily QuotaBucket,
RelayReport, Ban and Counter, the tracker's signing keys, contributor keys and the contribution scores (computed
here in scoring.py, stored on nodes' Contributor and Node rows); the workflows that span nodes and contributors
(register a node for its owner, heartbeats, usage, token issuance, timing uploads), one handler per agent message
for HTTP and the agent link (agent_link.py, agent_messages.py), the monitor cycle around nodes.monitor, and the
credential side of relays (relay secrets, tunnel tickets, relay reports, and the gateway's tokens and catalog in
gateway_api.py). It writes no Node, HealthSample, TimingSample or Contributor row itself: it decides, and calls
down into nodes to store.

It may import nodes; it must not import moderation or showcase."""
