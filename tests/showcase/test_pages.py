"""The public website through Django's test client: what each page shows, escaping, CSP, CSRF, the report form,
languages, and the query cost of the list. (The same flows in a real browser: tests/browser/.)"""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from moderation.models import AbuseReport
from nodes.models import Node, TimingSample
from tests import factories

pytestmark = pytest.mark.django_db
HTML = {"HTTP_ACCEPT": "text/html"}


def page(client, path, status=200, **headers) -> str:
    response = client.get(path, **HTML, **headers)
    assert response.status_code == status, (path, response.status_code)
    return response.content.decode()


@pytest.fixture
def client():
    return Client()


def rig(api, person, **fields) -> Node:
    """A node whose agent has reported in: only those are listed."""
    node, secret = factories.make_node(person, **fields)
    factories.heartbeat(api, node, secret)
    return node


def test_the_list_shows_every_card_field_rarest_first(client, api, owner, taster):
    common = rig(api, owner, gpu="NVIDIA GeForce RTX 3060", display_name="Common one")
    rig(api, taster, gpu="NVIDIA GeForce RTX 3060")
    rare = rig(
        api,
        owner,
        gpu="Intel Arc A770",
        display_name="Arc rig",
        lora="my-lora",
        vram_gb=0,
        tags=["showcase", "arc"],
        node_public_key=factories.x25519_public_pem(),
    )
    html = page(client, "/")
    rigs_map = html[html.index('id="map"') :]  # the map; the "live now" shelf above shows the same rigs, compact
    assert rigs_map.index("Arc rig") < rigs_map.index("Common one")
    card = rigs_map[rigs_map.index('data-node="' + rare.id) :]
    card = card[: card.index("</article>")]
    for text in (
        'title="Intel Arc A770">Arc A770',  # the GPU without vendor words, the full name on hover
        "my-lora",
        "shared / CPU",
        "8,192",
        "The only rig with this GPU, model and quant",
        "#arc",
        "No timings shared yet",
        "queue:",
        f'href="/nodes/{rare.id}/#taste"',  # it is serving: a Taste action
    ):
        assert text in card, text
    # No score on every card, no unlabelled bars, no fingerprint: those stay on the rig page.
    for text in ("scarcity", "<meter", "key fingerprint", rare.node_public_key_fingerprint):
        assert text not in card, text
    common_card = rigs_map[rigs_map.index('data-node="' + common.id) :]
    assert "One of only two rigs with this GPU, model and quant" in common_card[: common_card.index("</article>")]


def test_summary_counts_rigs_by_status(client, api, owner):
    live, secret = factories.make_node(owner, gpu="A")
    factories.heartbeat(api, live, secret)
    busy, secret = factories.make_node(owner, gpu="B")
    factories.heartbeat(api, busy, secret, active=1, max_active=1)
    gone = rig(api, owner, gpu="C")
    # Its agent stopped reporting long ago: what the monitor records then.
    Node.objects.filter(pk=gone.pk).update(last_heartbeat_at=timezone.now() - timedelta(days=1), status="unavailable")
    factories.make_node(owner, gpu="D")  # never reported in: not listed, not counted
    html = page(client, "/")
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', html))
    # A listed rig has sent a heartbeat, so none is "unknown": the count is shown only when it is not zero.
    assert counts == {"listed": "3", "available": "1", "busy": "1", "unavailable": "1"}


def test_filters_apply_on_the_server_and_keep_their_state_in_the_url(client, api, owner):
    rig(api, owner, gpu="Apple M2 Ultra", display_name="Mac rig", context_length=32768)
    rig(api, owner, gpu="RTX 4090", display_name="Nvidia rig", context_length=4096)
    html = page(client, "/?gpu=apple&min_ctx=16000")
    assert "Mac rig" in html and "Nvidia rig" not in html
    assert 'name="gpu" value="apple"' in html and 'name="min_ctx" value="16000"' in html
    assert "1 rig matches." in html


def test_a_bad_filter_is_a_400_page_that_names_the_field(client, owner):
    factories.make_node(owner)
    html = page(client, "/?min_vram=lots", status=400)
    assert "min_vram: must be a number" in html
    assert page(client, "/?status=sleeping", status=400).count("status: must be one of") == 1


def test_the_list_paginates_and_keeps_the_filters_in_page_links(client, api, owner):
    for i in range(30):
        rig(api, owner, gpu=f"RTX {i}", tags=["many"])
    first = page(client, "/?tag=many")
    assert first.count('class="card"') == 24 and "page 1 of 2" in first
    assert 'href="?tag=many&amp;page=2"' in first
    second = page(client, "/?tag=many&page=2")
    assert second.count('class="card"') == 6 and 'rel="prev"' in second


def test_the_list_costs_a_fixed_number_of_queries(client, api, owner, taster):
    for i in range(3):
        rig(api, owner, gpu=f"RTX {i}")

    def cost():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/", **HTML).status_code == 200
        return len(ctx.captured_queries)

    few = cost()
    for i in range(3, 80):
        rig(api, owner if i % 2 else taster, gpu=f"RTX {i}", tags=["x"])
    assert cost() == few <= 4
    assert page(client, "/").count('class="card"') == 24  # a full page of cards was rendered


def test_a_script_in_a_tuning_note_is_shown_as_text(client, api, owner):
    node = rig(api, owner, tuning_note='<script>alert("x")</script> & <b>bold</b>')
    for html in (page(client, "/"), page(client, f"/nodes/{node.id}/"), page(client, f"/compare/?ids={node.id}")):
        assert '<script>alert("x")</script>' not in html
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_pages_send_a_strict_csp_and_carry_no_inline_script(client, api, owner):
    node = rig(api, owner)  # listed, so that "/" carries its card
    for path in ("/", f"/nodes/{node.id}/", "/compare/", "/queue/", "/contribute/", "/replays/open/", "/about/trust/"):
        response = client.get(path, **HTML)
        csp = response["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        for tag in re.findall(r"<script[^>]*>", response.content.decode()):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)


def test_node_page_shows_spec_uptime_timing_contribution_queue_and_report_form(client, api, owner):
    node, secret = factories.make_node(owner, display_name="My rig", availability_note="Evenings only")
    factories.heartbeat(api, node, secret, active=1, waiting=0, max_active=2)
    hour = int(timezone.now().timestamp()) // 3600
    Node.objects.filter(pk=node.pk).update(
        uptime_hours={str(hour - 2): [1, 2], str(hour - 1): [2, 2], str(hour): [1, 1]}, uptime_ratio_24h=0.8
    )
    for i, (tps, ttft) in enumerate([(40.0, 300.0), (42.0, 320.0), (55.0, 250.0)]):
        TimingSample.objects.create(node=node, jti=f"j{i}", created_at=timezone.now(), tok_per_sec=tps, ttft_ms=ttft)
    html = page(client, f"/nodes/{node.id}/")
    for text in (
        "My rig",
        "Evenings only",
        "All layers on the GPU",
        'class="chart chart-uptime"',
        "Uptime 80%",
        'class="chart chart-timeline"',
        'class="chart chart-histogram"',
        "1 of 2 generating",
        'data-queue-node="' + node.id,
        "Taste this rig",
        "the rig's operator can read this prompt",
        'name="csrfmiddlewaretoken"',
        'value="node_id"',
    ):
        assert text in html, text


def test_an_unlisted_rig_has_a_page_but_a_taken_down_one_is_gone(client, api, owner):
    hidden = rig(api, owner, visibility="unlisted", display_name="Secret rig")  # reported in, yet unlisted
    assert "Unlisted" in page(client, f"/nodes/{hidden.id}/")
    assert "Secret rig" not in page(client, "/")
    Node.objects.filter(pk=hidden.pk).update(taken_down_at=timezone.now())
    assert "Not found" in page(client, f"/nodes/{hidden.id}/", status=404)


def test_compare_highlights_the_rows_that_differ(client, owner):
    a, _ = factories.make_node(owner, gpu="RTX 3060", display_name="Rig A")
    b, _ = factories.make_node(owner, gpu="RTX 3090", display_name="Rig B")
    html = page(client, f"/compare/?ids={a.id},{b.id},no-such-rig")
    rows = {
        label: mark
        for mark, label in re.findall(r'<tr class="(differs)?"><th scope="row">([^<]+?)(?: <span|</th>)', html)
    }
    assert rows["GPU"] == "differs" and rows["Model"] == "" and rows["Quantization"] == ""
    assert "no-such-rig" in html and html.index("Rig A") < html.index("Rig B")
    reordered = page(client, f"/compare/?ids={b.id}&ids={a.id}")
    assert reordered.index("Rig B") < reordered.index("Rig A")


def test_compare_takes_at_most_eight(client, owner):
    ids = [factories.make_node(owner, gpu=f"G{i}")[0].id for i in range(9)]
    html = page(client, "/compare/?ids=" + ",".join(ids))
    assert "at most 8" in html
    assert re.findall(r'<th scope="col"><a href="/nodes/([^/]+)/', html) == ids[:8]


def test_queue_map_lists_every_listed_rig_with_its_queue(client, api, owner):
    node, secret = factories.make_node(owner, display_name="Queued rig")
    factories.heartbeat(api, node, secret, active=1, waiting=3, max_active=1)
    html = page(client, "/queue/")
    row = html[html.index(f'data-node="{node.id}"') :]
    assert "Queued rig" in row and "<td data-waiting>3</td>" in row and "/static/showcase/live.js" in html


def test_contribute_page_offers_the_join_command_and_the_tiers(client, settings):
    settings.SITE_URL = "https://luckrig.example"
    html = page(client, "/contribute/")
    assert "luckrig-node join --tracker https://luckrig.example" in html
    assert "Create my contributor identity" in html
    assert 'data-tier="contributor"' in html and "30 requests of up to" in html  # templates/showcase/_tiers.html
    # The page states the scoring's first rule (docs/scoring.md), in both languages.
    assert "Nothing counts until your rig has served someone else" in html
    ja = client.get("/contribute/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
    assert "リグが他の誰かに使われるまでは何も加算されません" in ja


def test_trust_page_says_plainly_who_can_read_prompts(client):
    html = page(client, "/about/trust/")
    assert "operator can read your prompt and the answer" in html
    assert "This is not end-to-end encryption from the operator." in html
    assert "no automatic bans" in html and "mailto:" in html
    lowered = html.lower()
    assert "is end-to-end encrypted" not in lowered and " safe " not in lowered


def test_the_report_form_files_an_open_report_for_a_person(client, owner):
    node, _ = factories.make_node(owner)
    response = client.post(
        "/report/",
        {"subject_kind": "node_id", "subject_id": node.id, "reason": "Serves spam", "next": f"/nodes/{node.id}/"},
        **HTML,
    )
    assert response.status_code == 302 and response["Location"] == f"/nodes/{node.id}/#report"
    report = AbuseReport.objects.get()
    assert (report.subject_kind, report.subject_id, report.reason, report.state) == (
        "node_id",
        node.id,
        "Serves spam",
        "open",
    )
    assert "will be reviewed by a person" in page(client, f"/nodes/{node.id}/")
    assert Node.objects.get(pk=node.pk).taken_down_at is None  # nothing automatic


def test_the_report_form_refuses_bad_input_without_filing(client, owner):
    node, _ = factories.make_node(owner)
    response = client.post("/report/", {"subject_kind": "node_id", "subject_id": node.id, "reason": "   "}, follow=True)
    assert "The report was not sent: reason" in response.content.decode()
    client.post("/report/", {"subject_kind": "planet", "subject_id": "x", "reason": "r"})
    response = client.post("/report/", {"subject_kind": "node_id", "subject_id": node.id, "reason": "x" * 2001})
    assert response.status_code == 302 and AbuseReport.objects.count() == 0
    # An off-site `next` never becomes an open redirect.
    response = client.post("/report/", {"subject_kind": "other", "reason": "r", "next": "//evil.example/"})
    assert response["Location"] == "/#report"


def test_the_report_form_needs_csrf_and_shares_the_daily_limit(owner, settings):
    settings.RATE_ABUSE_REPORT = "2/d"
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/report/", {"subject_kind": "other", "reason": "r"}).status_code == 403
    client = Client()
    for _ in range(2):
        client.post("/report/", {"subject_kind": "other", "reason": "r"})
    html = client.post("/report/", {"subject_kind": "other", "reason": "r"}, follow=True).content.decode()
    assert "Too many reports from this address today" in html and AbuseReport.objects.count() == 2


def test_the_site_speaks_japanese_to_a_japanese_browser_and_switches(client):
    html = page(client, "/", HTTP_ACCEPT_LANGUAGE="ja,en;q=0.5")
    assert '<html lang="ja">' in html and "リグ" in html
    response = client.post("/i18n/setlang/", {"language": "en", "next": "/contribute/"}, HTTP_ACCEPT_LANGUAGE="ja")
    assert response.status_code == 302 and response["Location"] == "/contribute/"
    assert '<html lang="en">' in page(client, "/contribute/", HTTP_ACCEPT_LANGUAGE="ja")


def test_unknown_pages_are_html_for_browsers_and_json_for_the_api(client):
    assert "Not found" in page(client, "/nodes/no-such-rig/", status=404)
    response = client.get("/api/nodes/no-such-rig")
    assert response.status_code == 404 and response.json()["code"] == "node_not_found"
    response = client.get("/no/such/page/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_japanese_catalogue_is_complete_and_compiled():
    """Every string marked for translation has a Japanese translation (none fuzzy), and the compiled .mo the
    site loads is not older than it (make compiles it)."""
    from pathlib import Path

    from babel.messages.pofile import read_po

    folder = Path(__file__).resolve().parents[2] / "locale" / "ja" / "LC_MESSAGES"
    with open(folder / "django.po", "rb") as fh:
        catalog = read_po(fh)
    untranslated = [m.id for m in catalog if m.id and not (m.string if isinstance(m.string, str) else all(m.string))]
    missing = untranslated + [m.id for m in catalog if m.id and m.fuzzy]
    assert missing == []
    assert (folder / "django.mo").stat().st_mtime >= (folder / "django.po").stat().st_mtime


def test_plural_forms_differ_only_in_number():
    """A plural entry's forms must carry the same placeholders: a language with one plural form (Japanese) shows
    one translation for every count, so a singular without `%(n)s` (or without the plural's other values) loses
    them there, and GNU msgfmt --check refuses the catalogue. Different sentences are two gettext calls."""
    import re
    from pathlib import Path

    from babel.messages.pofile import read_po

    named = re.compile(r"%\(\w+\)[sd]|\{\{ *\w+ *\}\}")
    path = Path(__file__).resolve().parents[2] / "locale" / "ja" / "LC_MESSAGES" / "django.po"
    with open(path, "rb") as fh:
        catalog = read_po(fh)
    uneven = [
        m.id[0]
        for m in catalog
        if isinstance(m.id, tuple) and set(named.findall(m.id[0])) != set(named.findall(m.id[1]))
    ]
    assert uneven == []


def test_a_rig_page_in_japanese_names_the_score_tier_and_queue_in_japanese(client, api, owner):
    """The score's components, the tier and the queue's states are API words; the page translates them (they
    showed in English on the Japanese page), and a free slot reads as such, not as 'about 0 s'."""
    node = rig(api, owner)
    Node.objects.filter(pk=node.pk).update(
        queue_eta_sec=0, queue_entries=[{"ticket": "q_1", "position": 0, "state": "generating", "since": "x"}]
    )
    html = page(client, f"/nodes/{node.pk}/", HTTP_ACCEPT_LANGUAGE="ja")
    table = html[html.index('class="axes-table"') : html.index("</table>", html.index('class="axes-table"'))]
    for english, japanese in (("existence", "稼働実績"), ("rarity", "希少度"), ("discovery", "発見")):
        assert f">{japanese}</th>" in table and f">{english}</th>" not in table
    assert "(制限付き)" in html and "(limited)" not in html
    assert "スロットに空きあり" in html and "約 0 秒" not in html
    assert "q_1 · 生成中" in html
