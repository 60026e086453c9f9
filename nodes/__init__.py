"""nodes: the registry of rigs and of the people who run them. Owns Node, HealthSample, TimingSample, Relay
(reachability is a node matter) and Contributor (the identity: id, handle, key hash, and the score columns tracker
computes; every app's foreign keys point down at it), the pure rarity, showcase, liveness and rendezvous maths, the
PublicNode presentation and the public read API (list, detail, metrics, showcase).

It must not import tracker, moderation or showcase: workflows that also touch contributors or tokens
(registration, heartbeats, usage, scores) live in tracker.services and call down into this app."""
