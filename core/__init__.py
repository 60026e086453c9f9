"""core: the HTTP conventions every app of the tracker shares, and nothing else. The one error shape and its
codes (`api_errors`), the client's address behind trusted proxies (`clientip`), strict DRF fields (`fields`),
the wire's time format (`timefmt`), per-IP rate limits and the cache behind them (`ratelimits`, `ratecache`) and
the SSRF-guarded fetcher for URLs that contributors chose (`urlguard`).

It is not a Django app (no models, no migrations) and must not import nodes, tracker, moderation, showcase or
luckrig_site: every app may import it."""
