"""Cross-cutting HTTP middleware: body size limit (413 before anything reads the body), request metrics, the CSP
and the site's own 404 page under DEBUG."""

from django.conf import settings
from django.http import Http404, JsonResponse
from django.urls import Resolver404, resolve

from core import api_errors
from luckrig_site import metrics


class BodySizeLimitMiddleware:
    """Refuse a declared body over API_MAX_BODY_BYTES with 413 `body_too_large`, without reading it. A path
    in API_MAX_BODY_BYTES_BY_PATH (exact match) or under a prefix of API_MAX_BODY_BYTES_BY_PREFIX has its own
    limit instead: a published replay carries up to 80,000 characters of text and 8192 chunk times, and a
    relay's heartbeat up to 10,000 node ids, more than any other body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        length = request.META.get("CONTENT_LENGTH") or "0"
        try:
            declared = int(length)
        except ValueError:
            return JsonResponse(
                {"schema_version": 1, "error": "Content-Length is not a number.", "code": "invalid_request"}, status=400
            )
        limit = settings.API_MAX_BODY_BYTES_BY_PATH.get(request.path)
        if limit is None:
            limit = next(
                (n for prefix, n in settings.API_MAX_BODY_BYTES_BY_PREFIX.items() if request.path.startswith(prefix)),
                settings.API_MAX_BODY_BYTES,
            )
        if declared > limit and not request.path.startswith("/admin/"):
            return JsonResponse(
                {
                    "schema_version": 1,
                    "error": f"The request body is larger than {limit} bytes.",
                    "code": "body_too_large",
                },
                status=413,
            )
        return self.get_response(request)


class RequestMetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        metrics.count_request(request.method, response.status_code)
        return response


# No inline script anywhere (node fields are untrusted input: an injected <script> must not run even if
# escaping failed somewhere). `connect-src` allows http(s) and ws(s) because the tasting panel calls each rig's
# own endpoint, wherever it is, and the queue view uses websockets. Django's admin keeps a few inline style
# attributes, so only there are inline styles allowed. A header rather than django-csp: one fixed policy, no
# nonces, nothing to configure.
_CSP_BASE = (
    "default-src 'self'; script-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self' http: https: ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
CSP_SITE = _CSP_BASE + "; style-src 'self'"
CSP_ADMIN = _CSP_BASE + "; style-src 'self' 'unsafe-inline'"


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = CSP_ADMIN if request.path.startswith("/admin/") else CSP_SITE
        return response


class SiteNotFoundMiddleware:
    """Under DEBUG too, a missing page is answered as in production (handler404,
    core.api_errors.not_found_json): a browser gets the site's own styled 404 (templates/404.html, with a
    way back), an API client its JSON error. Django's technical 404 showed unstyled here, its inline styles being
    blocked by the CSP. Without DEBUG this middleware changes nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        # A path no URL pattern matches never reaches a view (nor process_exception): DEBUG answers it with the
        # technical "tried these patterns" page, which is replaced here.
        if settings.DEBUG and response.status_code == 404:
            try:
                resolve(request.path_info)
            except Resolver404:
                return api_errors.not_found_json(request)
        return response

    def process_exception(self, request, exception):
        # A site view's Http404 (a missing rig or replay); the API's views answer their own errors.
        if settings.DEBUG and isinstance(exception, Http404):
            return api_errors.not_found_json(request, exception)
        return None
