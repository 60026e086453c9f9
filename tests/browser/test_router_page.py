"""The local router's page (`luckrig-node lan`, node_agent/router_page.py) in Chromium: pairing with a rig it sees
by typing the code the rig's `luckrig-node pair` shows (a wrong code first), comparing the six-digit code, Confirm,
the rig shown paired and its key in paired.json; Unpair; Cancel; and another site's page failing to unpair through
the browser.

The router runs in this process (its own thread and event loop) and the rig's side is a real `luckrig-node pair`
process: the exchange is the real protocol over loopback. Only discovery is fed by hand, as its mDNS browsers would
feed it (Router.seen for the rig, LanPage.listener_seen for the pair listener started with --no-announce): mDNS
needs a network namespace (tests/node_agent/test_pairing.py pairs across two for real), and Chromium runs outside
one."""

import asyncio
import contextlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from aiohttp import web

from node_agent import identity, paired
from node_agent.router import Router, build_app
from tests.node_agent.test_pairing import code_shown
from tests.node_agent.test_router import announce
from tests.node_agent.test_router_page import listener_announced

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RouterThread:
    """The router's app served on 127.0.0.1:`port` from a thread of its own; `call(fn, *args)` runs fn there."""

    def __init__(self, router: Router):
        self.router, self.port = router, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        self.runner = web.AppRunner(build_app(self.router), handler_cancellation=True)
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self):
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def call(self, fn, *args):
        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def home(tmp_path):
    """(router thread, the rig's config dir, its key, its service name): one unpaired rig seen on the LAN."""
    router = Router(identity.load_or_create(tmp_path / "router"), paired.PairedStore(tmp_path / "router"))
    rig_dir = tmp_path / "desk"
    rig = identity.load_or_create(rig_dir)
    with RouterThread(router) as running:
        name = running.call(announce, router, "desk", rig, free_port(), "alpha")
        yield running, rig_dir, rig, name


@contextlib.contextmanager
def pair_listener(running: RouterThread, rig_dir: Path, rig: identity.Identity):
    """`luckrig-node pair --yes` on the rig (a process, not announced), fed to the router as its browser would;
    yields (the code it shows, a function returning the rest of its output once it has ended)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCKRIG_AGENT_")} | {"PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "node_agent", "pair", "--yes", "--no-announce", "--name", "desk"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--config-dir", str(rig_dir)]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        code = code_shown(process)
        running.call(listener_announced, running.router, rig, port)

        def rest() -> str:
            process.wait(20)
            return process.stdout.read()

        yield code, rest
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stdout.close()


def row(page, name: str):
    return page.locator(f'tr[data-rig="{name}"]')


def test_pairing_a_rig_from_the_page_with_a_wrong_code_first_then_unpairing_it(home, local_page, shot, tmp_path):
    running, rig_dir, rig, name = home
    page = local_page(running.base)
    with pair_listener(running, rig_dir, rig) as (code, rest):
        page.goto("/")
        assert "not paired" in row(page, name).inner_text() and "showing a pairing code" in row(page, name).inner_text()

        wrong = "2222-2222" if code != "2222-2222" else "3333-3333"
        row(page, name).locator("input[name=code]").fill(wrong)
        row(page, name).get_by_role("button", name="Pair").click()
        page.locator("#result", has_text="Not paired").wait_for()
        assert "not the code the rig shows" in page.locator("#result").inner_text()
        assert page.locator("#pairing").is_hidden()

        row(page, name).locator("input[name=code]").fill(code.lower())
        row(page, name).get_by_role("button", name="Pair").click()
        comparison = page.locator("[data-comparison]")
        comparison.wait_for()
        assert re.fullmatch(r"\d{3} \d{3}", comparison.inner_text())
        assert rig.fingerprint in page.locator("[data-device]").inner_text()
        assert paired.PairedStore(tmp_path / "router").devices() == {}  # nothing pinned before Confirm
        shot(page, "router-page-compare")
        # The rig's screen shows the same six digits.
        assert f"Comparison code: {comparison.inner_text()}" in rest()

    page.get_by_role("button", name="Confirm").click()
    page.locator("#result", has_text="Paired with desk").wait_for()
    row(page, name).get_by_text("paired as desk").wait_for()
    assert page.locator("#pairing").is_hidden()
    assert list(paired.PairedStore(tmp_path / "router").devices()) == [rig.fingerprint]
    router_key = running.router.identity.fingerprint
    assert list(paired.PairedStore(rig_dir).devices()) == [router_key]  # the rig's side pinned the router (--yes)
    shot(page, "router-page-paired")

    page.once("dialog", lambda dialog: dialog.accept())
    row(page, name).get_by_role("button", name="Unpair").click()
    page.locator("#result", has_text="Unpaired desk").wait_for()
    row(page, name).get_by_role("button", name="Pair").wait_for()
    assert paired.PairedStore(tmp_path / "router").devices() == {}


EVIL = """<!doctype html><html><body><p>Cute cats</p>
<form id="f" method="post" action="{router}/lan/unpair" enctype="text/plain">
<input name='{{"fingerprint": "{fingerprint}", "x": "' value='"}}'></form>
<script>
fetch("{router}/lan/unpair", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{fingerprint: "{fingerprint}"}})}}).finally(() => document.getElementById("f").submit());
</script></body></html>"""


def test_cancel_pins_nothing_and_another_sites_page_cannot_unpair(home, local_page, tmp_path):
    running, rig_dir, rig, name = home
    page = local_page(running.base)
    with pair_listener(running, rig_dir, rig) as (code, _):
        page.goto("/")
        row(page, name).locator("input[name=code]").fill(code)
        row(page, name).get_by_role("button", name="Pair").click()
        page.locator("[data-comparison]").wait_for()
    page.get_by_role("button", name="Cancel").click()
    page.locator("#result", has_text="Cancelled: nothing was pinned").wait_for()
    assert "not paired" in row(page, name).inner_text()
    assert paired.PairedStore(tmp_path / "router").devices() == {}

    # Paired now (as `pair` would), then a page on another origin tries to unpair it: a fetch and a form post.
    paired.PairedStore(tmp_path / "router").pin(rig.public_b64, "desk")
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "index.html").write_text(EVIL.format(router=running.base, fingerprint=rig.fingerprint))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder))  # noqa: E731
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as evil:
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        visitor = local_page(f"http://127.0.0.1:{evil.server_address[1]}")
        refusals = []
        visitor.on("response", lambda r: refusals.append((r.status, r.request.method)) if "/lan/" in r.url else None)
        with visitor.expect_navigation(url=f"{running.base}/lan/unpair"):
            visitor.goto("/")
        evil.shutdown()
    assert refusals == [(403, "POST"), (403, "POST")], refusals
    assert json.loads(visitor.locator("body").inner_text())["error"]["code"] == "bad_origin"
    assert list(paired.PairedStore(tmp_path / "router").devices()) == [rig.fingerprint]
    page.reload()
    assert "paired as desk" in row(page, name).inner_text()
