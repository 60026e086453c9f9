"""A small scriptable HTTP server on 127.0.0.1 for probe and fingerprint tests (a real socket, no mocks)."""

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Route:
    def __init__(self, status=200, body=b"{}", delay=0.0, headers=None):
        self.status, self.body, self.delay, self.headers = status, body, delay, headers or {}


def agent_health(node, **extra) -> Route:
    """What the node agent's /health answers."""
    return Route(200, json.dumps({"ok": True, "node_id": node.id, **extra}).encode())


class ScriptedServer:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                server.hits.append(self.path)
                route = server.routes.get(self.path, Route(404, b"not found"))
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(route.body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
