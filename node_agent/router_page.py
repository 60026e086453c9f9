"""The local router's own page (`GET /`) and its small JSON endpoints under `/lan/` (issue 16): the rigs seen on the
LAN, paired or not, a Pair button for each unpaired one and an Unpair button for each paired one.

Pairing from the page is `luckrig-node pair CODE` (node_agent/pairing.py's client side, not a copy of it): the
rig's user runs `luckrig-node pair`, whose listener announces `_luckrig-pair._tcp` with the same key as the rig
(`listener_seen` follows them, as Router.seen follows the rigs); the page's user types the code; the router pairs
with that listener and shows the six-digit comparison code, and pins the rig's key only on Confirm.

These endpoints change what this machine trusts, and the user's browser can be made to send requests to 127.0.0.1
by any page it shows. So a state-changing request must be a POST with the per-process CSRF token this page embeds
(a page elsewhere cannot read it), a Host header naming this machine on this port (a DNS-rebound name cannot
reuse the page's origin) and, when the browser sends one, this page's Origin; 403 (`csrf_failed`, `bad_host`,
`bad_origin`) otherwise. The page cannot be framed, and everything a rig announces is escaped."""

import asyncio
import hmac
import html
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

from node_agent import lan, pairing
from node_agent.errors import AgentError

CSRF_HEADER = "X-LuckRig-CSRF"
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
LISTENER_WAIT = 5.0  # a `pair` just started on the rig may not be seen yet: wait this long for its announcement
PENDING_TTL = pairing.CODE_TTL
MAX_PENDING = 16
AGAIN = "run `luckrig-node pair` on the rig again"
NO_STORE = {"Cache-Control": "no-store"}
REFUSALS = {  # the listener's refusal → this endpoint's status and what the page says
    "wrong_code": (400, "That is not the code the rig shows (five wrong tries burn it)."),
    "code_expired": (410, f"That code has expired: {AGAIN}."),
    "code_used": (410, f"That code was already used, or burned by wrong tries: {AGAIN}."),
    "wrong_device": (409, "The listener that answered was meant for another device: nothing was pinned."),
    "unknown_session": (409, "The rig's listener dropped this attempt (too many at once): try the code again."),
    "unsupported_protocol": (409, "The rig's luckrig-node pairs with another protocol version: update the older one."),
}


@dataclass
class Pending:
    """A pairing done on the wire but not confirmed: nothing is pinned until Confirm."""

    peer: pairing.Peer
    rig: str
    created: float


class LanPage:
    def __init__(self, router, host: str):
        self.router = router
        self.csrf = secrets.token_urlsafe(32)
        self.names = set(LOCAL_NAMES)
        self.loopback = host in ("127.0.0.1", "::1", "localhost")
        if host and host not in ("0.0.0.0", "::"):  # noqa: S104 - compared, not bound
            self.names.add(f"[{host}]" if ":" in host else host)
        self.listeners: dict[str, lan.SeenRig] = {}
        self.pending: dict[str, Pending] = {}
        self.listener_wait = LISTENER_WAIT

    def listener_seen(self, name: str, listener: lan.SeenRig | None) -> None:
        """LanBrowser's on_change for `_luckrig-pair._tcp`: a `luckrig-node pair` listener came or went."""
        if listener is None:
            self.listeners.pop(name, None)
        else:
            self.listeners[name] = listener

    def install(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/lan/rigs", self.rigs_rows)
        app.router.add_post("/lan/pair", self.pair)
        app.router.add_post("/lan/pair/confirm", self.confirm)
        app.router.add_post("/lan/pair/cancel", self.cancel)
        app.router.add_post("/lan/unpair", self.unpair)

    # --- the checks ---------------------------------------------------------------------------------------------

    def check_host(self, request: web.Request) -> None:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else None
        if (request.host or "").lower() not in {f"{name}:{port}" for name in self.names}:
            raise AgentError(403, "bad_host", "Open this page as http://127.0.0.1 (or localhost) on the router's port.")

    @staticmethod
    def check_origin(request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != f"http://{request.host}".lower():
            raise AgentError(403, "bad_origin", "This request comes from another site's page.")

    def check_api(self, request: web.Request) -> None:
        """The router's /v1: no other site's page may use the paired rigs through the user's browser (a simple POST
        needs no preflight), nor read their answers under a name rebound to 127.0.0.1. The Host check only when the
        router listens on loopback: with --host 0.0.0.0 LAN clients name it as they like."""
        if self.loopback:
            self.check_host(request)
        self.check_origin(request)

    async def checked_body(self, request: web.Request) -> dict:
        """The JSON object of a state-changing request that passed the Host, Origin and CSRF checks."""
        self.check_host(request)
        self.check_origin(request)
        token = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(token.encode(), self.csrf.encode()):
            raise AgentError(403, "csrf_failed", "This request does not carry the router page's token: reload it.")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise AgentError(400, "invalid_json", "The body is not valid JSON.") from exc
        if not isinstance(body, dict):
            raise AgentError(400, "invalid_request", "The body must be a JSON object.")
        return body

    @staticmethod
    def text_field(body: dict, name: str) -> str:
        value = body.get(name)
        if not isinstance(value, str) or not value or len(value) > 300:
            raise AgentError(400, "invalid_request", f"The body needs `{name}`.")
        return value

    # --- pairing ------------------------------------------------------------------------------------------------

    async def pair(self, request: web.Request) -> web.Response:
        """{rig, code} → {pairing, comparison_code, rig, device}: the exchange with the rig's `pair` listener."""
        body = await self.checked_body(request)
        rig_name, typed = self.text_field(body, "rig"), self.text_field(body, "code")
        try:
            code = pairing.normalize_code(typed)
        except ValueError as exc:
            raise AgentError(400, "invalid_code", f"Not a pairing code: {exc}.") from exc
        rig = self.router.rigs.get(rig_name)
        if rig is None or not rig.fields.get("pk"):
            raise AgentError(404, "rig_not_found", "That rig is no longer seen on the LAN (or announces no key).")
        if rig.fields["fingerprint"] in self.router.pinned():
            raise AgentError(409, "already_paired", "That rig is already paired.")
        listeners = await self.listeners_of(rig.fields["pk"])
        if not listeners:
            raise AgentError(
                404,
                "no_pairing_listener",
                "That rig shows no pairing code on the LAN: run `luckrig-node pair` on it (with the same "
                "--config-dir as its agent) and type the code it shows.",
            )
        problems = []
        for base in listeners:
            try:
                peer = await pairing.request_pairing(
                    self.router.session, base, code, self.router.identity, pairing.default_name()
                )
            except pairing.PairingError as exc:
                problems.append(exc)
                continue
            if peer.public_key != rig.fields["pk"]:
                raise AgentError(409, "wrong_device", "The device that answered is not that rig: nothing was pinned.")
            return web.json_response(self.hold(peer, rig))
        first = problems[0]
        if first.code in REFUSALS:
            raise AgentError(REFUSALS[first.code][0], first.code, REFUSALS[first.code][1])
        raise AgentError(502, "pairing_failed", f"The rig's pairing listener did not pair: {first}")

    async def listeners_of(self, public_key: str) -> list[str]:
        """The base URLs of the pairing listeners announced with `public_key`, waiting a little for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.listener_wait
        while True:
            found = [
                seen.url()
                for seen in self.listeners.values()
                if seen.fields.get("pk") == public_key and seen.addresses and seen.port
            ]
            if found or loop.time() >= deadline:
                return found
            await asyncio.sleep(0.2)

    def hold(self, peer: pairing.Peer, rig: lan.SeenRig) -> dict:
        now = time.monotonic()
        for key in [k for k, p in self.pending.items() if now - p.created > PENDING_TTL]:
            del self.pending[key]
        while len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        handle = secrets.token_urlsafe(16)
        self.pending[handle] = Pending(peer, rig.name, now)
        return {
            "pairing": handle,
            "comparison_code": peer.comparison,
            "rig": {"name": rig.name, "node": rig.fields.get("node"), "fingerprint": rig.fields["fingerprint"]},
            "device": {"name": peer.name, "fingerprint": peer.fingerprint},
            "expires_in": PENDING_TTL,
        }

    def take(self, body: dict) -> Pending:
        found = self.pending.pop(self.text_field(body, "pairing"), None)
        if found is None or time.monotonic() - found.created > PENDING_TTL:
            raise AgentError(404, "pairing_not_found", "No pairing waits for confirmation here: pair again.")
        return found

    async def confirm(self, request: web.Request) -> web.Response:
        """{pairing} → {paired}: the comparison codes matched, the rig's key is pinned."""
        held = self.take(await self.checked_body(request))
        device = self.router.store.pin(held.peer.public_key, held.peer.name)
        return web.json_response({"paired": {"name": device.name, "fingerprint": device.fingerprint}})

    async def cancel(self, request: web.Request) -> web.Response:
        """{pairing} → {cancelled}: nothing is pinned."""
        self.take(await self.checked_body(request))
        return web.json_response({"cancelled": True})

    async def unpair(self, request: web.Request) -> web.Response:
        """{fingerprint} → {unpaired}: no request goes to that rig any more."""
        fingerprint = self.text_field(await self.checked_body(request), "fingerprint")
        if fingerprint not in self.router.pinned():
            raise AgentError(404, "not_paired", "No paired device has that key.")
        device = self.router.store.unpair(fingerprint)
        return web.json_response({"unpaired": {"name": device.name, "fingerprint": device.fingerprint}})

    # --- the page -----------------------------------------------------------------------------------------------

    def rows(self) -> str:
        pinned = self.router.pinned()
        showing = {seen.fields.get("pk") for seen in self.listeners.values()}
        rows = []
        for name, rig in sorted(self.router.rigs.items()):
            fingerprint, key = rig.fields.get("fingerprint"), rig.fields.get("pk")
            where = ", ".join(f"{lan.url_host(a)}:{rig.port}" for a in rig.addresses) or "no address"
            models = ", ".join(m["id"] for m in self.router.loads.models_of(rig)) or "?"
            label = rig.fields.get("node") or name
            if fingerprint in pinned:
                state = self.router.loads.states.get(name)
                health = ""  # not polled yet
                if state is not None and not state.healthy:
                    health = " · not answering"
                elif state is not None and state.polled_at is not None:
                    health = " · answering"
                status = f"paired as {pinned[fingerprint].name}{health}"
                action = (
                    f'<button type="button" data-unpair="{esc(fingerprint)}" data-label="{esc(label)}">Unpair</button>'
                )
            elif key:
                status = "not paired" + (" · showing a pairing code" if key in showing else "")
                action = (
                    f'<form data-pair="{esc(name)}" data-label="{esc(label)}">'
                    f'<input name="code" required placeholder="ABCD-EFGH" autocomplete="off" spellcheck="false" '
                    f'aria-label="Pairing code shown by {esc(label)}"> <button>Pair</button></form>'
                )
            else:
                status, action = "announces no key", ""
            cells = [label, models, where, fingerprint or "?", status]
            tds = "".join(f"<td>{esc(c)}</td>" for c in cells)
            rows.append(f'<tr data-rig="{esc(name)}">{tds}<td>{action}</td></tr>')
        return "\n".join(rows) or '<tr><td colspan="6">No rig announces itself on the LAN.</td></tr>'

    async def rigs_rows(self, request: web.Request) -> web.Response:
        """The table's body alone, for the page to refresh it after pairing or unpairing."""
        self.check_host(request)
        return web.Response(text=f"<tbody>{self.rows()}</tbody>", content_type="text/html", headers=NO_STORE)

    async def page(self, request: web.Request) -> web.Response:
        """Every rig seen on the LAN, paired or not: what it announces (claims, escaped), whether it is paired."""
        self.check_host(request)
        nonce = secrets.token_urlsafe(16)
        text = PAGE.format(csrf=esc(self.csrf), nonce=nonce, rows=self.rows(), script=SCRIPT)
        headers = {
            "Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            **NO_STORE,
        }
        return web.Response(text=text, content_type="text/html", headers=headers)


def esc(text) -> str:
    return html.escape(lan.printable(str(text)), quote=True)


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="luckrig-csrf" content="{csrf}"><title>LuckRig on this LAN</title>
<style nonce="{nonce}">
body {{ font: 15px/1.5 system-ui, sans-serif; margin: 1.5rem; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .3rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }}
td {{ overflow-wrap: anywhere; }} input {{ width: 7.5rem; font-family: monospace; }}
#pairing {{ border: 2px solid #36c; padding: .8rem 1rem; margin: 1rem 0; max-width: 40rem; }}
[data-comparison] {{ font: bold 2rem monospace; letter-spacing: .1em; }}
.bad {{ color: #b00; }} .good {{ color: #070; }}
</style></head><body>
<h1>LuckRig rigs on this LAN</h1>
<p>Requests to <code>/v1/chat/completions</code> here go to the paired ones. What a rig announces is a claim; its
paired key is what counts. To pair with a rig, run <code>luckrig-node pair</code> on it and type the code it shows
next to it here.</p>
<p id="result" role="status"></p>
<div id="pairing" hidden><p>Rig: <span data-device></span></p>
<p>Comparison code: <span data-comparison></span></p>
<p>Does the rig's screen show the same comparison code? Confirm only if it does.</p>
<button type="button" data-confirm>Confirm</button> <button type="button" data-cancel>Cancel</button></div>
<table id="rigs"><thead>
<tr><th>Node</th><th>Models</th><th>Address</th><th>Key</th><th>Paired</th><th></th></tr></thead>
<tbody>
{rows}
</tbody></table>
<script nonce="{nonce}">{script}</script></body></html>"""

SCRIPT = """
(() => {
  const csrf = document.querySelector('meta[name="luckrig-csrf"]').content;
  const result = document.getElementById("result");
  const panel = document.getElementById("pairing");
  let pairing = null;
  const say = (text, bad) => { result.textContent = text; result.className = bad ? "bad" : "good"; };
  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-LuckRig-CSRF": csrf},
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* not JSON: the status says it */ }
    if (!response.ok) throw new Error((data.error && data.error.message) || "HTTP " + response.status);
    return data;
  }
  async function refresh() {
    const response = await fetch("/lan/rigs");
    const fresh = document.createElement("template");
    fresh.innerHTML = "<table>" + await response.text() + "</table>";
    document.querySelector("#rigs tbody").replaceWith(fresh.content.querySelector("tbody"));
  }
  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-pair]");
    if (!form) return;
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    say("Pairing with " + form.dataset.label + "…");
    try {
      const got = await post("/lan/pair", {rig: form.dataset.pair, code: form.elements.code.value});
      pairing = got.pairing;
      const code = got.comparison_code;
      panel.querySelector("[data-comparison]").textContent = code.slice(0, 3) + " " + code.slice(3);
      panel.querySelector("[data-device]").textContent = got.device.name + " (" + got.device.fingerprint + ")";
      panel.hidden = false;
      say("Compare the codes.");
    } catch (error) {
      say("Not paired: " + error.message, true);
    } finally {
      button.disabled = false;
    }
  });
  async function finish(path, done) {
    const held = pairing;
    pairing = null;
    panel.hidden = true;
    try {
      say(done(await post(path, {pairing: held})));
    } catch (error) {
      say("Not paired: " + error.message, true);
    }
    await refresh();
  }
  panel.querySelector("[data-confirm]").addEventListener("click", () =>
    finish("/lan/pair/confirm", (got) => "Paired with " + got.paired.name + " (" + got.paired.fingerprint + ")."));
  panel.querySelector("[data-cancel]").addEventListener("click", () =>
    finish("/lan/pair/cancel", () => "Cancelled: nothing was pinned."));
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-unpair]");
    if (!button) return;
    if (!confirm("Unpair " + button.dataset.label + "? No request goes to it until you pair again.")) return;
    try {
      const got = await post("/lan/unpair", {fingerprint: button.dataset.unpair});
      say("Unpaired " + got.unpaired.name + ".");
    } catch (error) {
      say("Not unpaired: " + error.message, true);
    }
    await refresh();
  });
})();
"""
