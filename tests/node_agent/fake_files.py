"""A file host with HTTP Range and Hugging Face's model API (FakeFileHost), for `luckrig-node pull`'s downloads;
on 127.0.0.1 in a thread (tests/node_agent/threaded.py). tests/node_agent/fakes.py exports it too."""

import re

from aiohttp import web

from tests.node_agent.threaded import ThreadedApp


class FakeFileHost(ThreadedApp):
    """A file server with HTTP Range (RFC 9110: `Range: bytes=N-` → 206 and `Content-Range: bytes N-M/size`),
    and Hugging Face's model API (`/api/models/<owner>/<repo>?blobs=true`: `sha`, and `siblings` with `rfilename`,
    `size` and `lfs.sha256`). `files` maps a path to bytes or to a Path on disk (served in pieces, not read
    whole); `cut_at` makes the server close the connection after that many bytes of a body (a truncated
    download), `ignore_range` answers 200 with the whole file whatever the Range; `redirects` maps a path to the
    URL it redirects to. Every request's Range header is kept in `ranges`."""

    def __init__(self):
        super().__init__()
        self.files: dict[str, bytes | object] = {}
        self.repos: dict[str, dict] = {}  # "owner/repo" → the model API's answer
        self.redirects: dict[str, str] = {}
        self.cut_at: int | None = None
        self.ignore_range = False
        self.ranges: list[str | None] = []

    def build(self):
        app = web.Application()
        app.router.add_get("/api/models/{owner}/{repo}", self.model_api)
        app.router.add_get("/{path:.*}", self.file)
        return app

    async def model_api(self, request):
        repo = self.repos.get(f"{request.match_info['owner']}/{request.match_info['repo']}")
        if repo is None:
            return web.json_response({"error": "Repository not found"}, status=404)
        return web.json_response(repo)

    async def file(self, request):
        path = "/" + request.match_info["path"]
        if path in self.redirects:
            raise web.HTTPFound(self.redirects[path])
        if path not in self.files:
            raise web.HTTPNotFound()
        self.ranges.append(request.headers.get("Range"))
        content = self.files[path]
        size = len(content) if isinstance(content, bytes) else content.stat().st_size
        start, status, headers = 0, 200, {}
        wanted = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if wanted and not self.ignore_range:
            start = int(wanted.group(1))
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status, headers = 206, {"Content-Range": f"bytes {start}-{size - 1}/{size}"}
        response = web.StreamResponse(status=status, headers={**headers, "Content-Length": str(size - start)})
        await response.prepare(request)
        sent, limit = 0, size - start if self.cut_at is None else min(self.cut_at, size - start)
        for piece in self._pieces(content, start):
            piece = piece[: limit - sent]
            await response.write(piece)
            sent += len(piece)
            if sent >= limit:
                break
        if sent < size - start:
            request.transport.close()  # the connection drops mid-body, as a failing network or server does
        return response

    @staticmethod
    def _pieces(content, start: int, size: int = 1 << 20):
        if isinstance(content, bytes):
            for at in range(start, len(content), size):
                yield content[at : at + size]
            return
        with content.open("rb") as fh:
            fh.seek(start)
            while piece := fh.read(size):
                yield piece
