"""Agent errors in the OpenAI shape: `{"error": {"message", "type", "code"}}` with the contract's status."""

import json

from aiohttp import web

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
        self, status: int, code: str, message: str, *, headers: dict | None = None, close_connection: bool = False
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.close_connection = close_connection  # send the answer, then close (the request was not all read)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "api_error"), "code": self.code}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers, dumps=json.dumps)
