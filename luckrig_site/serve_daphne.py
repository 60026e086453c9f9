"""`python -m luckrig_site.serve_daphne [daphne's flags] luckrig_site.asgi:application`: Daphne with a graceful stop.

Why not plain `daphne`: on SIGTERM it cancels every application instance and waits for them with
`asyncio.gather()`, which resolves as soon as the *first* one ends cancelled (gather without return_exceptions).
The reactor then stops the event loop while sync views are still running in asgiref's threads; each of them, at
its next `async_to_sync` (Django's middleware adapters, the queue fan-out's group_send), schedules work on that
stopped-but-open loop and waits for it forever (asgiref issues #528/#545), and the interpreter's exit joins those
threads forever. Measured: under load, 4 SIGTERMs in 4 ended in systemd's SIGKILL; tests/site/test_graceful_restart.py
found plain Daphne still running 30 s after SIGTERM.

Here SIGTERM (or SIGINT) drains instead, with the loop still running:
1. the listening sockets close (nginx sends new requests to the other Daphne processes);
2. websockets are closed with 1001 "going away" (the agent's tracker link and the browser's queue view reconnect,
   to another process or to this one once it is back);
3. HTTP requests in flight finish; each answer says `Connection: close`, so a kept-alive connection carries no
   further request;
4. at --drain-timeout, requests still running are answered 503 `restarting` (or, if their answer had begun, their
   connection is closed) and cancelled; the loop keeps running until their views return;
5. at --stop-timeout (below the unit's TimeoutStopSec), if a view's thread is still stuck, the stacks of the threads
   still alive are written to stderr and the process exits with status 1 rather than waiting for SIGKILL.
A second SIGINT (Ctrl-C twice) exits at once."""

import asyncio
import faulthandler
import functools
import json
import logging
import os
import signal
import sys
import threading
import time

from daphne.cli import CommandLineInterface
from daphne.http_protocol import WebRequest
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import defer, reactor

log = logging.getLogger("luckrig.daphne")

DRAIN_TIMEOUT_SEC = 20.0
STOP_TIMEOUT_SEC = 25.0  # below deploy/luckrig-daphne@.service's TimeoutStopSec=30
EXIT_GRACE_SEC = 2.0  # after the loop stops, how long idle threads get to end before a stuck one is assumed
TICK_SEC = 0.1
FLUSH_SEC = 1.0  # after the drain deadline, for the 503s and closes to go out before the reactor stops
GOING_AWAY = 1001
EXIT_STUCK = 1
RESTARTING = json.dumps(
    {
        "schema_version": 1,
        "error": "The tracker is restarting and could not finish this request; try again in a few seconds.",
        "code": "restarting",
    }
).encode()


class GracefulServer(Server):
    def __init__(self, *args, drain_timeout: float = DRAIN_TIMEOUT_SEC, stop_timeout: float = STOP_TIMEOUT_SEC, **kw):
        kw["signal_handlers"] = False  # ours are installed on the loop when the reactor runs (Twisted's only stop)
        super().__init__(*args, **kw)
        self.drain_timeout, self.stop_timeout = drain_timeout, stop_timeout
        self.ports: list = []
        self.stopping_since: float | None = None
        self.exit_deadline = float("inf")  # read by the watchdog thread
        self.told: set = set()  # websockets sent 1001
        self.closing: set = set()  # HTTP channels that close after their answer
        self.cut = False

    def run(self):
        reactor.callWhenRunning(self._install_signal_handlers)
        super().run()
        # The reactor has stopped. Every request was answered or cut; a view thread still running now is stuck (or
        # slower than any deadline here): give idle threads a moment to end, then the watchdog decides.
        if self.stopping_since is not None:
            self.exit_deadline = min(self.exit_deadline, time.monotonic() + EXIT_GRACE_SEC)

    def listen_success(self, port):
        self.ports.append(port)
        super().listen_success(port)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_event_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.begin_stop, sig)

    # --- the drain --------------------------------------------------------------------------------------

    def begin_stop(self, sig: int) -> None:
        if self.stopping_since is not None:
            if sig == signal.SIGINT:
                log.warning("second SIGINT: exiting now")
                os._exit(EXIT_STUCK)
            return
        self.stopping_since = time.monotonic()
        self.exit_deadline = self.stopping_since + self.stop_timeout
        threading.Thread(target=self._watchdog, name="stop-watchdog", daemon=True).start()
        # Whatever the setup raises, the ticks start: without them nothing is cut at the drain deadline and only the
        # watchdog's exit with status 1 ends the process.
        try:
            for port in self.ports:
                port.stopListening()
            for protocol in list(self.connections):
                if isinstance(protocol, WebRequest) and not protocol.finished:
                    self._close_after_answer(protocol)
            log.info(
                "%s: draining (%d connection(s); requests get %g s, the process %g s)",
                signal.Signals(sig).name,
                len(self.connections),
                self.drain_timeout,
                self.stop_timeout,
            )
        except Exception:
            log.exception("the drain's start failed; draining what is left")
        finally:
            self._drain_tick()

    def _close_after_answer(self, request) -> None:
        """The connection closes once this answer is sent (flushed first: Twisted's loseConnection), and the drain
        waits for that, so that no answer is lost in a buffer when the reactor stops."""
        channel = getattr(request, "channel", None)
        if channel is not None:
            channel.persistent = False
            self.closing.add(channel)

    def _drain_tick(self) -> None:
        """One step of the drain, then the next one scheduled whatever the step raised: a tick left unscheduled
        would leave the reactor running with nobody cut at the drain deadline, until the watchdog's exit with status
        1 at the stop deadline (and Twisted's log, which goes nowhere, would swallow the error). The error is logged
        and the drain goes on, rather than stopping at once, because a step keeps little state that the next one
        trusts (a websocket is marked told before its close is sent, so a failing one is not retried): the next step
        still closes and waits for answers. The cut is done once, each connection on its own: one that fails to be cut
        is logged and the others still get their 503. The deadline is
        kept here, outside the step, so that steps that always raise still stop the reactor at the drain deadline;
        the watchdog stays the last word at the stop deadline."""
        elapsed = time.monotonic() - self.stopping_since
        try:
            done = self._drain_step(elapsed)
        except Exception:
            log.exception("drain tick failed %.1f s after the signal", elapsed)
            done = False
        if done or elapsed >= self.drain_timeout + FLUSH_SEC:
            reactor.stop()  # kill_all_applications cancels what still runs
        else:
            reactor.callLater(TICK_SEC, self._drain_tick)

    def _drain_step(self, elapsed: float) -> bool:
        """Closes the websockets, cuts what is still busy at the drain deadline; True once nothing is left."""
        for protocol, details in list(self.connections.items()):
            if (
                isinstance(protocol, WebSocketProtocol)
                and "disconnected" not in details
                and protocol.state == protocol.STATE_OPEN
                and protocol not in self.told
            ):
                self.told.add(protocol)
                # The frame itself: autobahn's sendClose() allows applications only 1000 and 3000-4999.
                protocol.sendCloseFrame(code=GOING_AWAY, reasonUtf8=b"server restarting", isReply=False)
        busy = [protocol for protocol, details in self.connections.items() if _busy(details)]
        flushing = [c for c in self.closing if getattr(c.transport, "connected", False)]
        if elapsed >= self.drain_timeout and not self.cut:
            self.cut = True
            log.warning("drain timeout: cutting %d connection(s) still busy", len(busy))
            for protocol in busy:
                try:  # one that fails does not spare the others their 503
                    if isinstance(protocol, WebRequest):
                        self._close_after_answer(protocol)
                    _cut(protocol)
                except Exception:
                    log.exception("cutting a connection failed")
        if not busy and not flushing:
            log.info("drained in %.1f s", elapsed)
            return True
        return False

    async def handle_reply(self, protocol, message):
        # While draining, every answer closes its connection: a kept-alive connection must not bring a new request.
        if self.stopping_since is not None and message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"Connection", b"close")]}
            self._close_after_answer(protocol)
        await super().handle_reply(protocol, message)

    def kill_all_applications(self):
        """Daphne's own version waits with gather(), which returns at the first instance that ends cancelled (and
        raises KeyError for a connection with no instance yet): the loop then stopped under running views. Here
        every instance is waited for, with the loop running, until shortly before the stop deadline."""
        pending = [d["application_instance"] for d in self.connections.values() if _running(d)]
        for instance in pending:
            instance.cancel()
        if not pending:
            return None
        left = max(TICK_SEC, self.exit_deadline - time.monotonic() - EXIT_GRACE_SEC)
        return defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.wait(pending, timeout=left)))

    def _watchdog(self) -> None:
        while time.monotonic() < self.exit_deadline:
            time.sleep(min(TICK_SEC, max(0.0, self.exit_deadline - time.monotonic())))
        stuck = [t.name for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
        log.error(
            "still not stopped %.1f s after the signal (threads alive: %s); exiting without them, their stacks follow",
            time.monotonic() - self.stopping_since,
            ", ".join(stuck) or "none",
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(EXIT_STUCK)


def _running(details: dict) -> bool:
    instance = details.get("application_instance")
    return instance is not None and not instance.done()


def _busy(details: dict) -> bool:
    return "disconnected" not in details or _running(details)


def _cut(protocol) -> None:
    """A connection still busy at the drain deadline: a request not yet answered gets 503 `restarting`, one whose
    answer has begun is closed (the client sees a cut, never a short body that looks whole); a websocket that did
    not answer the close is dropped."""
    if isinstance(protocol, WebRequest) and not protocol.finished and protocol.channel is not None:
        if protocol._response_started:
            protocol.channel.transport.abortConnection()
        else:
            headers = [(b"Content-Type", b"application/json"), (b"Retry-After", b"5"), (b"Connection", b"close")]
            protocol.handle_reply({"type": "http.response.start", "status": 503, "headers": headers})
            protocol.handle_reply({"type": "http.response.body", "body": RESTARTING})
    elif isinstance(protocol, WebSocketProtocol) and protocol.transport is not None:
        protocol.dropConnection(abort=True)


class GracefulCommandLine(CommandLineInterface):
    description = "LuckRig's Daphne: Django HTTP/WebSocket server with a graceful stop on SIGTERM"

    def __init__(self):
        super().__init__()
        self.parser.add_argument(
            "--drain-timeout",
            type=float,
            default=DRAIN_TIMEOUT_SEC,
            help=f"seconds requests in flight get to finish after SIGTERM (default {DRAIN_TIMEOUT_SEC:g})",
        )
        self.parser.add_argument(
            "--stop-timeout",
            type=float,
            default=STOP_TIMEOUT_SEC,
            help=f"seconds after SIGTERM when the process exits whatever is left (default {STOP_TIMEOUT_SEC:g}; keep "
            "it below the unit's TimeoutStopSec)",
        )

    def run(self, args):
        known, _ = self.parser.parse_known_args(args)
        if not 0 < known.drain_timeout < known.stop_timeout:
            self.parser.error("--drain-timeout must be positive and below --stop-timeout")
        self.server_class = functools.partial(
            GracefulServer, drain_timeout=known.drain_timeout, stop_timeout=known.stop_timeout
        )
        super().run(args)


def main() -> None:
    GracefulCommandLine.entrypoint()


if __name__ == "__main__":
    main()
