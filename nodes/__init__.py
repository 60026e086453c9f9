"""nodes: the registry of rigs. Owns Node, HealthSample, TimingSample and Relay (reachability is a node
matter), the pure rarity, showcase, liveness and rendezvous maths, the PublicNode presentation and the public
read API (list, detail, metrics, showcase).

It must not import tracker, moderation or showcase: workflows that also touch contributors or tokens
(registration, heartbeats, usage, scores) live in tracker.services and call down into this app."""
