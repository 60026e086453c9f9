"""Browser tests: Playwright's sync API driving Debian's Chromium against a live tracker (`site`: Daphne on its
own database, the demo rigs, a `moderator` superuser) and a live node agent (`rig`) in front of the suite's fake
upstream. Every page is watched: a JS error, a CSP violation or a broken asset fails the test.

    pytestmark = pytest.mark.browser

    def test_a_moderator_logs_in(site, page, shot):
        page.goto("/admin/")  # pages resolve against site.base
        page.fill("#id_username", site.moderator_username)
        ...
        shot(page, "admin-index")

These tests talk to live processes only: no `db` fixture (Django's ORM in this process would see another
database, and refuses to run while Playwright's event loop is marked running in this thread). Seed through
HTTP, `site.manage(...)` or `site.execute(sql)`."""

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from node_agent import keys
from tests.agents import AgentProcess, AgentStarter, Tracker, running_tracker
from tests.node_agent.fakes import FakeOpenAI

CHROMIUM = "/usr/bin/chromium"
# The flags SERVICES.md asks for: without the background-networking ones Chromium keeps trying to reach the
# internet, which is closed here. Playwright adds its own fresh --user-data-dir.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 10_000  # every wait is bounded; a test may pass its own timeout for a longer one


# --- live processes (session) --------------------------------------------------------------------------------


class Site(Tracker):
    """The live tracker: `base`, `url(path)`, the moderator's credentials, and Tracker's helpers (`contributor`,
    `register`, `token`, `node`, `execute`, `manage`)."""

    moderator_username = "moderator"
    moderator_password = ""

    def url(self, path: str = "/") -> str:
        return self.base + path


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """A live tracker with production settings (DEBUG=0), generous quotas, private node URLs allowed, a 2 s
    heartbeat interval, the demo rigs (`seed_demo`) and a staff superuser `moderator` (`site.moderator_password`)."""
    with running_tracker(tmp_path_factory.mktemp("site")) as tracker:
        site = Site(tracker.base, tracker.data_dir, tracker.database_url, tracker.env)
        site.manage("seed_demo")
        site.moderator_password = "moderator-" + secrets.token_urlsafe(12)
        site.manage(
            "createsuperuser",
            "--noinput",
            "--username",
            site.moderator_username,
            "--email",
            "moderator@luckrig.invalid",
            env={"DJANGO_SUPERUSER_PASSWORD": site.moderator_password},
        )
        yield site


@dataclass
class Rig:
    """A live node agent joined to `site`: `base` (the agent), `v1`, `node_id`, `endpoint` (as registered),
    `contributor_key` (its owner's key: contributor tier), `upstream` (the FakeOpenAI behind it: shared by the
    session, so a test that changes its knobs puts them back)."""

    agent: AgentProcess
    upstream: FakeOpenAI
    contributor_key: str
    display_name: str

    @property
    def base(self) -> str:
        return self.agent.base

    @property
    def v1(self) -> str:
        return self.agent.v1

    @property
    def endpoint(self) -> str:
        return self.agent.v1

    @property
    def node_id(self) -> str:
        return self.agent.node_id


RIG_WORDS = [f"word{i} " for i in range(20)]
RIG_DELAY = 0.05  # 20 chunks ~50 ms apart: about a second of visible streaming


@pytest.fixture(scope="session")
def rig(site, tmp_path_factory):
    """A live agent in front of a fake upstream streaming 20 chunks ~50 ms apart, listed `available` on the site
    (it beats every second; the site's heartbeat interval is 2 s)."""
    with FakeOpenAI() as fake:
        fake.words, fake.delay = list(RIG_WORDS), RIG_DELAY
        folder = tmp_path_factory.mktemp("rig")
        starter = AgentStarter(site, folder)
        key = site.contributor("browser-rig-owner")
        name = "Browser test rig · smollm2-fake"
        # The rig has an X25519 key pair, as `luckrig-node join` makes: public-key mode and the fingerprint check.
        node_public_pem, _ = keys.generate(folder / "node_x25519.pem")
        register = {"display_name": name, "gpu": "Fake GPU (browser)", "node_public_key": node_public_pem}
        try:
            agent = starter.start(
                fake.base, key=key, register=register, node_private_key_file=str(folder / "node_x25519.pem")
            )
            assert site.node(agent.node_id)["health"]["status"] == "available"
            yield Rig(agent, fake, key, name)
        finally:
            starter.stop_all()


# --- the browser (module) -------------------------------------------------------------------------------------


def _skip_reason() -> str | None:
    """Skip only when the browser or Playwright is truly absent; anything else is a failure worth seeing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests: the playwright package is not installed (make install installs the dev extra)"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"browser tests: Chromium is not installed at {CHROMIUM} "
            "(make install installs Debian's chromium when run as root with apt-get)"
        )
    return None


@pytest.fixture(scope="module")
def browser():
    """Chromium, headless, one per test module. Module scope on purpose: between calls Playwright's sync API
    leaves its event loop marked as running in this thread, which would make Django refuse ORM calls in the
    tests that follow; stopping Playwright at the end of each module clears that."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    if asyncio._get_running_loop() is not None:  # noqa: SLF001 - the same check Playwright makes, said clearly
        pytest.fail("an asyncio loop is running in the test thread: Playwright's sync API cannot start")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        yield browser
        browser.close()
    finally:
        pw.stop()


# --- pages: watched for errors ----------------------------------------------------------------------------------


@dataclass
class PageWatch:
    """What a page reported. `problems()` (JS errors, CSP violations, broken assets) fail the test; failed
    requests and HTTP errors of fetch/XHR are only shown (a refusal is often what a test expects)."""

    js_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)
    broken_assets: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = [f"JS error: {e}" for e in self.js_errors]
        found += [f"CSP violation: {e}" for e in self.csp_violations]
        found += [f"broken asset: {e}" for e in self.broken_assets]
        return [p for p in found if not any(a.search(p) for a in self.allowed)]

    def summary(self) -> str:
        lines = self.problems()
        lines += [f"(request failed: {e})" for e in self.failed_requests]
        lines += [f"(HTTP error: {e})" for e in self.http_errors]
        return "\n".join(lines) or "(nothing reported)"


_ASSETS = {"stylesheet", "script", "image", "font"}
# Registers CSP violations (including report-only ones) however Chromium words its console message.
_CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.__luckrigCspViolation(`${e.disposition} ${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}`
    + ` at ${e.sourceFile || document.location.href}:${e.lineNumber}`);
});
"""


def watch_of(page) -> PageWatch:
    return page._luckrig_watch  # noqa: SLF001 - set by new_page


def _watch(page) -> PageWatch:
    watch = PageWatch()
    page._luckrig_watch = watch  # noqa: SLF001

    def on_console(msg):
        if msg.type != "error":
            return
        text, where = msg.text, msg.location.get("url", "")
        if "Content Security Policy" in text:
            watch.csp_violations.append(text)
        elif text.startswith("Failed to load resource"):
            pass  # the network listeners below say which request, and whether it matters
        else:
            at = f" ({where}:{msg.location.get('lineNumber', 0)})" if where else ""
            watch.js_errors.append(f"console.error: {text}{at}")

    def on_response(response):
        if response.status < 400:
            return
        entry = f"{response.status} {response.request.method} {response.url}"
        (watch.broken_assets if response.request.resource_type in _ASSETS else watch.http_errors).append(entry)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watch.js_errors.append(f"uncaught: {exc}"))
    page.on("requestfailed", lambda r: watch.failed_requests.append(f"{r.method} {r.url}: {r.failure}"))
    page.on("response", on_response)
    return watch


_WIDE = """() => {
  const edge = window.innerWidth;
  return [...document.querySelectorAll('body *')]
    .filter(el => el.getBoundingClientRect().right > edge + 1 && !el.closest('[hidden]'))
    .filter(el => {  // inside a box that scrolls (or clips) sideways by design: not the page's overflow
      if (['absolute', 'fixed'].includes(getComputedStyle(el).position)) return true;  // may escape that box
      for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
        if (getComputedStyle(up).overflowX !== 'visible') return false;
      }
      return true;
    })
    .filter(el => ![...el.children].some(c => c.getBoundingClientRect().right > edge + 1))
    .slice(0, 5)
    .map(el => {
      const right = Math.round(el.getBoundingClientRect().right);
      return `${el.tagName.toLowerCase()}.${[...el.classList].join('.')} ${right}`;
    });
}"""


def sideways_overflow(page) -> tuple[int, list[str]]:
    """How far the page scrolls sideways (px) and, when it does, the innermost elements past the right edge (tag,
    classes, right edge): the pages must fit a phone, and a failure should say what sticks out."""
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return overflow, (page.evaluate(_WIDE) if overflow > 1 else [])


@contextlib.contextmanager
def another_taster(site, rig, delay: float):
    """While the body runs, another client's streamed answer holds the rig's one slot (the fake upstream slowed to
    `delay` s a chunk); yields an Event set when that answer has ended. The delay is put back afterwards."""
    slow, rig.upstream.delay = rig.upstream.delay, delay
    token = site.token(rig.node_id)["token"]
    done = threading.Event()

    def call():
        try:
            requests.post(
                rig.v1 + "/chat/completions",
                headers={"Authorization": f"Bearer {token}"},
                json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
                timeout=30,
            ).close()
        finally:
            done.set()

    threading.Thread(target=call, daemon=True).start()
    try:
        yield done
    finally:
        rig.upstream.delay = slow
        done.wait(30)


def assert_no_console_errors(page) -> None:
    """Fail if the page logged a JS error or a CSP violation, or an asset (CSS, JS, image, font) failed to load.
    Runs by itself after every test that used `page`/`new_page`; call it to check at a given moment."""
    watch = watch_of(page)
    assert not watch.problems(), f"the page at {page.url} reported:\n{watch.summary()}"


def allow_console_errors(page, pattern: str) -> None:
    """Expect some problem (a regex against the reported line, e.g. r"CSP violation: .*img-src"): not a failure."""
    watch_of(page).allowed.append(re.compile(pattern))


_PAGES = pytest.StashKey[list]()
_SHOTS = pytest.StashKey[Path]()


def _report_csp(source, text: str) -> None:
    watch_of(source["page"]).csp_violations.append(text)


@contextlib.contextmanager
def _page_maker(request, browser, screenshot_dir, base_url: str | None):
    contexts, pages = [], []
    request.node.stash[_PAGES] = pages
    request.node.stash[_SHOTS] = screenshot_dir

    def make(**options):
        options = {"base_url": base_url, "locale": "en-US", "viewport": {"width": 1280, "height": 800}, **options}
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        context.expose_binding("__luckrigCspViolation", _report_csp)
        context.add_init_script(_CSP_LISTENER)
        contexts.append(context)
        page = context.new_page()
        _watch(page)
        pages.append(page)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            with contextlib.suppress(Exception):  # a crashed browser must not hide the test's own result
                context.close()


@pytest.fixture
def new_page(request, browser, site, screenshot_dir):
    """new_page(**context_options) → a Page in a fresh context (own cookies and storage), English, 1280×800,
    relative URLs resolved against the site. Call it twice for two people (a moderator and a taster)."""
    with _page_maker(request, browser, screenshot_dir, site.base) as make:
        yield make


@pytest.fixture
def local_page(request, browser, screenshot_dir):
    """local_page(base_url, **context_options) → a watched Page as `new_page` makes them, for a server the test
    runs itself (the local router): no live site is started."""
    with _page_maker(request, browser, screenshot_dir, None) as make:
        yield lambda base_url, **options: make(base_url=base_url, **options)


@pytest.fixture
def page(new_page):
    """One watched page (see `new_page`)."""
    return new_page()


# --- screenshots --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    """`<pytest basetemp>/screenshots/`, kept with the run's other temporary files."""
    path = tmp_path_factory.getbasetemp() / "screenshots"
    path.mkdir(exist_ok=True)
    return path


def _save(page, name: str, folder: Path) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "page"
    path = folder / f"{safe}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("LUCKRIG_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / path.name)
    return path


@pytest.fixture(scope="session")
def shot(screenshot_dir):
    """shot(page, name) → the path of a full-page PNG `<name>.png` in `screenshot_dir` (and copied to
    $LUCKRIG_SCREENSHOT_DIR when set)."""
    return lambda page, name: _save(page, name, screenshot_dir)


# --- hooks ----------------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After the test body: its pages must be clean (a failure of the test itself, not an error at teardown).
    When the test failed, each page is screenshotted as `FAILED-<test>-<n>.png` and its reports are attached."""
    pages = item.stash.get(_PAGES, [])
    try:
        result = yield
    except BaseException:
        for n, page in enumerate(pages):
            with contextlib.suppress(Exception):  # the test's own failure is what matters
                path = _save(page, f"FAILED-{item.name}-{n}", item.stash[_SHOTS])
                item.add_report_section(
                    "call", f"page {n}", f"{page.url}\n{watch_of(page).summary()}\nscreenshot: {path}"
                )
        raise
    for page in pages:
        assert_no_console_errors(page)
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before any fixture starts a process: skip when there is no browser, refuse the in-process database."""
    names = set(getattr(item, "fixturenames", ()))
    if names & {"browser", "page", "new_page"}:
        reason = _skip_reason()
        if reason:
            pytest.skip(reason)
    if names & {"db", "transactional_db", "django_db_setup"} or item.get_closest_marker("django_db"):
        pytest.fail(
            "browser tests talk to live processes: use site.manage(...), site.execute(sql) or HTTP, not the db fixture",
            pytrace=False,
        )
