"""Agent errors in the OpenAI shape: `{"error": {"message", "type", "code"}}` with the contract's status."""

import json
import logging
import time

from aiohttp import web

log = logging.getLogger("luckrig.agent")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    451: "moderation_error",
    502: "upstream_error",
    503: "upstream_error",
    504: "upstream_error",
}


class AgentError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict | None = None,
        close_connection: bool = False,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.close_connection = close_connection  # send the answer, then close (the request was not all read)
        self.extra = extra or {}  # more fields of the error object (a 429's retry_after_sec, resets_at, earn_more)

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "api_error"),
                "code": self.code,
                **self.extra,
            }
        }

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers, dumps=json.dumps)


def limited(code: str, message: str, retry_after_sec: int, earn_more: str, **extra) -> AgentError:
    """A 429 that says when to try again (Retry-After, `retry_after_sec`, `resets_at`) and what would earn more."""
    retry = max(0, int(retry_after_sec))
    resets_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + retry)) + "Z"
    return AgentError(
        429,
        code,
        message,
        headers={"Retry-After": str(retry)},
        extra={"retry_after_sec": retry, "resets_at": resets_at, "earn_more": earn_more, **extra},
    )


def earn_more(tier: str, tracker: str) -> str:
    """What a 429 says would earn more, naming the contributor tier and where to read how to get it."""
    if tier == "contributor":
        return "Contributor-tier tokens are the most generous there are."
    return (
        "The contributor tier gives more requests and output per token, more tokens a day and a place ahead of "
        "limited tasters in every rig's queue; it is earned, not bought, by sharing a rig that others taste or "
        f"timing from your tastings. How: {tracker.rstrip('/')}/contribute/"
    )


@web.middleware
async def errors_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except AgentError as exc:
        error = exc
    except web.HTTPRequestEntityTooLarge:
        error = AgentError(413, "body_too_large", "The request body is too large.")
    except web.HTTPNotFound:
        error = AgentError(404, "not_found", "No such endpoint.")
    except web.HTTPMethodNotAllowed:
        error = AgentError(405, "method_not_allowed", "Method not allowed.")
    # Status and code only (never the request's text); a flood of one refusal is one line with a count.
    log.info("refused a request: %s %s", error.status, error.code)
    response = error.response()
    if error.close_connection:
        # Sent, then the connection closed at once: aiohttp would otherwise linger reading the rest of a body
        # that is not coming.
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
    return response


def exhausted(claims, message: str) -> AgentError:
    """429 `token_exhausted`: a token's allowance never comes back, but a new token has its own at once."""
    iss = str(claims.raw.get("iss", "")).rstrip("/")
    return limited(
        "token_exhausted",
        f"{message} A new tasting token (POST {iss}/api/tokens) has {claims.max_requests} more requests of up to "
        f"{claims.per_request_cap} output tokens each, within the tier's tokens a day.",
        0,
        earn_more(claims.tier, iss),
        tier=claims.tier,
    )
