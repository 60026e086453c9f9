"""CORS for the agent's API: the tracker's public tasting panel, served from another origin, calls the agent
with `fetch` (a bearer token and a JSON body) and reads the SSE stream."""

from aiohttp import web

# `*` is right here: tasting tokens travel in `Authorization: Bearer`, never in cookies, so the agent has no
# ambient credentials a foreign page could ride on (browsers never pair `*` with credentialed requests anyway).
# What protects a request is the token, whoever the calling page is.
ALLOW_ORIGIN = "*"
ALLOW_METHODS = "GET, POST, OPTIONS"
# Authorization is not covered by a `*` wildcard in Access-Control-Allow-Headers, so the list is explicit.
ALLOW_HEADERS = "Authorization, Content-Type"
MAX_AGE = "600"  # seconds a browser may cache a preflight (Chromium caps it at 7200)
# Retry-After (429 queue_full) is not a CORS-safelisted response header: without this, a page cannot read it.
EXPOSE_HEADERS = "Retry-After"


async def preflight(request: web.Request) -> web.Response:
    """Answer `OPTIONS` on the API's paths. Unknown paths never get here: the router answers 404 or 405."""
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
        },
    )


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` rather than a middleware: a streaming answer sends its headers from inside the
    handler (with the first queue comment or upstream chunk, see relay.py), before a middleware would see the
    response; this signal runs for every response just before its headers go out, errors and 404s included."""
    response.headers["Access-Control-Allow-Origin"] = ALLOW_ORIGIN
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


def install(app: web.Application, paths: list[str]) -> None:
    app.on_response_prepare.append(add_cors_headers)
    for path in paths:
        app.router.add_route("OPTIONS", path, preflight)
