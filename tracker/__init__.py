"""tracker: identities and access. Owns Contributor, TastingToken (every issued jti), UsageReport, the daily
QuotaBucket, RelayReport, the tracker's signing keys and the contribution scores; and the workflows that span
nodes and contributors (register a node, heartbeats, usage, token issuance, timing uploads), and the credential
side of relays (relay secrets, tunnel tickets, relay reports).

It may import nodes; it must not import moderation or showcase."""
