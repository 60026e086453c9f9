"""One error shape for the whole tracker API: `{"error": "<sentence>", "code": "<snake_case>"}`.

DRF's own defaults differ in ways the wire contract forbids (403 for rate limits, `{"detail": ...}` bodies,
nested field dictionaries), so every exception is translated here."""

import json
import math

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

# DRF validation codes that mean "the field has the wrong type or shape".
_CONTRACT_CODES = {"unknown_field", "disallowed_field", "invalid_public_key", "nested_value"}


class ApiError(exceptions.APIException):
    """An error with a contract code, an HTTP status and optional extra body fields or headers."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        extra: dict | None = None,
        headers: dict | None = None,
    ):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONParser(JSONParser):
    """JSON only, an object at the top level, no NaN/Infinity (they are not JSON and break Postgres)."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except RecursionError as exc:
            raise exceptions.ParseError("The body is nested too deeply.") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"The body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise exceptions.ParseError("The body must be a JSON object.")
        return data


def _first_error(detail, path: str = "") -> tuple[str, str, str]:
    """Walk DRF's nested error detail to the first message: (field path, message, code)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if key == "non_field_errors":
                sub = path
            elif isinstance(key, int) or str(key).isdigit():  # list items (DRF keys them by index)
                sub = f"{path}[{key}]"
            else:
                sub = f"{path}.{key}" if path else str(key)
            return _first_error(value, sub)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                return _first_error(value, f"{path}[{index}]")
            return _first_error(value, path)
    code = getattr(detail, "code", "invalid") or "invalid"
    return path, str(detail), code


def error_response(
    status_code: int, code: str, message: str, extra: dict | None = None, headers: dict | None = None
) -> Response:
    body = {"schema_version": 1, "error": message, "code": code}
    body.update(extra or {})
    return Response(body, status=status_code, headers=headers)


def exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.code, exc.message, exc.extra, exc.headers)
    if isinstance(exc, Ratelimited):
        retry = getattr(exc, "retry_after", None) or 60
        return error_response(
            429,
            getattr(exc, "code", "ip_rate_limited"),
            "Too many requests from this address; try again later.",
            {"retry_after_sec": retry},
            {"Retry-After": str(retry)},
        )
    if isinstance(exc, RequestDataTooBig):
        return error_response(413, "body_too_large", "The request body is too large.")
    if isinstance(exc, exceptions.ParseError):
        return error_response(400, "invalid_json", str(exc.detail))
    if isinstance(exc, exceptions.ValidationError):
        field, message, code = _first_error(exc.detail)
        code = code if code in _CONTRACT_CODES else "invalid_field"
        text = f"{field}: {message}" if field else message
        extra = {"field": field} if field else {}
        return error_response(400, code, text, extra)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return error_response(401, "unauthorized", str(exc.detail), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, Http404 | exceptions.NotFound):
        return error_response(404, "not_found", "Not found.")
    if isinstance(exc, PermissionDenied | exceptions.PermissionDenied):
        return error_response(403, "forbidden", "You may not do this.")
    if isinstance(exc, exceptions.MethodNotAllowed):
        return error_response(405, "method_not_allowed", str(exc.detail))
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return error_response(415, "unsupported_media_type", "Send the body as JSON (Content-Type: application/json).")
    if isinstance(exc, exceptions.NotAcceptable):
        return error_response(406, "not_acceptable", str(exc.detail))
    if isinstance(exc, exceptions.Throttled):
        wait = math.ceil(exc.wait or 60)
        return error_response(429, "rate_limited", str(exc.detail), headers={"Retry-After": str(wait)})
    if isinstance(exc, exceptions.APIException):
        return error_response(exc.status_code, "error", str(exc.detail))
    return None  # a real bug: let Django log it and answer 500 through handler500


def _wants_json(request) -> bool:
    """API paths and API clients get the JSON error shape; a browser on a site page gets a page."""
    return request.path.startswith(("/api/", "/metrics")) or "text/html" not in request.headers.get("Accept", "")


def not_found_json(request, exception=None):
    from django.http import JsonResponse
    from django.shortcuts import render

    if not _wants_json(request):
        return render(request, "404.html", status=status.HTTP_404_NOT_FOUND)
    return JsonResponse(
        {"schema_version": 1, "error": "Not found.", "code": "not_found"}, status=status.HTTP_404_NOT_FOUND
    )


def server_error_json(request):
    from django.http import JsonResponse

    return JsonResponse(
        {"schema_version": 1, "error": "Internal error; it has been logged.", "code": "internal_error"}, status=500
    )
