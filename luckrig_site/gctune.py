"""The garbage collector's settings for a serving process, Daphne (luckrig_site.asgi) and each gunicorn worker
(luckrig_site.wsgi) alike."""

import gc


def tune_gc() -> None:
    """Freeze what start-up made and raise the gen-0 threshold, so that short-lived objects die young.

    What start-up made (modules, classes, functions: about half of all objects) is frozen out of every full pass.
    With the default gen-0 threshold of 700, a collection runs every few hundred new containers, finds the ones
    still in use and promotes them, to be scanned again by the next gen-1 and full passes:
    - Daphne's websocket fan-out: each socket write makes a few objects in Twisted and asyncio that live until
      the next turn of the loop; at 1,000 subscribers a full collection ran about every 2 s, stalling the loop for
      60-200 ms (bench/queue_fanout.py: staleness p99 ~340 ms before, ~180-250 ms after).
    - A page of the node list makes about 15 containers a rig (the PublicNode and its parts, the decoded JSON
      columns), so a collection ran during nearly every page of 50 with the whole page alive, and a page of 200
      met a full pass every few requests; `/api/health` makes few (docs/benchmarks.md, "Third pass").
    A gen-0 threshold of 20,000 lets a collection find little but the request in hand."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)
