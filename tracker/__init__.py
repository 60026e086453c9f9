"""tracker: credentials and access. Owns TastingToken (every issued jti), UsageReport, the daily QuotaBucket,
RelayReport, Ban and Counter, the tracker's signing keys, contributor keys and the contribution scores (computed
here, stored on nodes' Contributor and Node rows); and the workflows that span nodes and contributors (register a
node, heartbeats, usage, token issuance, timing uploads), and the credential side of relays (relay secrets, tunnel
tickets, relay reports).

It may import nodes; it must not import moderation or showcase."""
