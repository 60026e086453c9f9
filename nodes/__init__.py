"""nodes: the registry of rigs and of the people who run them. Owns Node, HealthSample, TimingSample, Relay
(reachability is a node matter) and Contributor (the identity: id, handle, key hash, and the score columns tracker
computes; every app's foreign keys point down at it), and is the only app that writes Node, HealthSample,
TimingSample, Contributor and Relay: the registry's rows (registry.py), what agents report and the columns other
apps decide (services.py), the monitor's probes and health samples (monitor.py), relay rows, assignment and relay
samples (relays.py). Also the pure rarity, showcase, liveness and rendezvous maths, the gateway's model keys and
aliases (model_names.py), the PublicNode presentation, the public read API (list, detail, metrics, showcase) and the
gateway's catalog of routable rigs (catalog.py, served by tracker.gateway_api).

It must not import tracker, moderation or showcase: workflows that also touch contributors, tokens or bans
(registration for an owner, heartbeat answers, usage, scores, bans, takedowns) live in tracker and moderation
and call down into this app."""
