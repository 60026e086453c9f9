"""The browser harness works end to end: a page of the live site loads clean, the moderator logs into the
admin, and a page of the site streams an answer from the live rig across origins (the agent's CORS)."""

import json

import pytest

from tests.browser.conftest import RIG_WORDS

pytestmark = pytest.mark.browser

# Runs in the page: what the tasting panel does (a bearer token, a JSON body, the SSE body read as it arrives).
FETCH_STREAM = """
async ({url, token}) => {
  const started = performance.now();
  const response = await fetch(url, {
    method: "POST",
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body: JSON.stringify({messages: [{role: "user", content: "hi"}], stream: true}),
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const arrivals = [];
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    text += decoder.decode(value, {stream: true});
    arrivals.push(performance.now() - started);
  }
  return {status: response.status, type: response.headers.get("content-type"), text, arrivals};
}
"""


def test_the_api_docs_page_loads(site, page, shot):
    page.goto("/api/docs/")
    assert page.title() == "LuckRig tracker API"
    page.locator(".swagger-ui .info .title").wait_for()  # Swagger UI ran and fetched the schema
    assert "LuckRig tracker API" in page.locator(".swagger-ui .info .title").inner_text()
    path = shot(page, "api-docs")
    assert path.stat().st_size > 10_000


def test_the_moderator_logs_into_the_admin(site, page, shot):
    page.goto("/admin/")
    page.fill("#id_username", site.moderator_username)
    page.fill("#id_password", site.moderator_password)
    page.click("input[type=submit]")
    page.get_by_text("Site administration").first.wait_for()
    assert page.url == site.url("/admin/")
    shot(page, "admin-index")


def test_a_page_of_the_site_streams_the_rigs_answer_across_origins(site, rig, page):
    page.goto("/admin/login/")  # any page of the site: the fetch below then comes from the site's origin
    token = site.token(rig.node_id)["token"]
    got = page.evaluate(FETCH_STREAM, {"url": rig.v1 + "/chat/completions", "token": token})
    assert got["status"] == 200 and got["type"].startswith("text/event-stream")
    events = [line[6:] for line in got["text"].splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "".join(RIG_WORDS)
    assert chunks[-1]["luckrig"]["node_id"] == rig.node_id
    # The answer arrived bit by bit (20 chunks ~50 ms apart), not in one piece at the end.
    assert len(got["arrivals"]) >= 10 and got["arrivals"][-1] - got["arrivals"][0] > 500

    # A refusal is readable too (without CORS on errors, fetch would only say "Failed to fetch").
    refused = page.evaluate(
        """async (url) => {
          const r = await fetch(url, {method: "POST", headers: {"Authorization": "Bearer nope",
            "Content-Type": "application/json"}, body: "{}"});
          return {status: r.status, body: await r.json()};
        }""",
        rig.v1 + "/chat/completions",
    )
    assert refused == {
        "status": 401,
        "body": {
            "error": {
                "message": refused["body"]["error"]["message"],
                "type": "authentication_error",
                "code": "invalid_token",
            }
        },
    }
