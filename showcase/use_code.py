"""The "Use from code" box on a rig's page and on a model's page (issue 14): where the gateway is, the `model`
string that picks the target, and code to copy (the OpenAI Python SDK and curl). `base_url()` reads where the
gateway is from the same rows as `GET /api/gateway` (nodes.catalog.gateway_relays, one query); the rest is pure.

The code has to run as it is copied. The gateway takes a contributor key (`Bearer lrk_...`), or the placeholder
`Bearer anonymous` (or no credential) for the limited tier, and refuses any other text, so that a mistyped key never
quietly demotes its owner (docs/relay.md, "The gateway"); the SDK refuses to start without some api_key. So the
snippet reads the key from `LUCKRIG_KEY` and falls back to `anonymous`; curl does the same with
`${LUCKRIG_KEY:-anonymous}`."""

import json
import shlex
from dataclasses import dataclass

from django.utils import timezone

from nodes import catalog

RIG_PREFIX = "rig:"  # the gateway's rig route (API.md "Gateway"): exactly that rig, never another
KEY_VARIABLE = "LUCKRIG_KEY"
PROMPT = "Hello! Which GPU are you running on?"


def base_url() -> str | None:
    """The gateway's base URL as `GET /api/gateway` gives it (the first live relay's public URL + /v1); None while
    no relay is live, so that the page says so instead of printing a URL that does not answer."""
    return catalog.gateway_base_url(catalog.gateway_relays(timezone.now()))


def rig_model(node_id: str) -> str:
    return RIG_PREFIX + node_id


def linkable(key: str) -> bool:
    """A model key that makes a working /models/<key>/ address: not empty, and not a path step a browser would
    resolve away (a model named "." or "..")."""
    return key not in ("", ".", "..")


def _py(text: str) -> str:
    """A Python string literal (a JSON string is one: the same escapes)."""
    return json.dumps(text, ensure_ascii=False)


def python_snippet(url: str, model: str) -> str:
    return "\n".join(
        (
            "import os",
            "",
            "from openai import OpenAI",
            "",
            f"# Your contributor key (lrk_...) in {KEY_VARIABLE} gives your tier; anonymous: the limited tier.",
            f'client = OpenAI(base_url={_py(url)}, api_key=os.environ.get("{KEY_VARIABLE}", "anonymous"))',
            "reply = client.chat.completions.create(",
            f"    model={_py(model)},",
            f'    messages=[{{"role": "user", "content": {_py(PROMPT)}}}],',
            ")",
            "print(reply.choices[0].message.content)",
            'print("answered by", reply.model_extra["luckrig"]["node_id"])',
        )
    )


def curl_line(url: str, model: str) -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}]}, ensure_ascii=False)
    return " \\\n  ".join(
        (
            f"curl {shlex.quote(url + '/chat/completions')}",
            f'-H "Authorization: Bearer ${{{KEY_VARIABLE}:-anonymous}}"',
            "-H 'Content-Type: application/json'",
            f"-d {shlex.quote(body)}",
        )
    )


@dataclass(frozen=True)
class Box:
    """What templates/showcase/_use_code.html shows. `route` is "rig" or "model"; `state` says why there is no
    code ("no_relay", "demo", "unlisted") or what to know before running it ("not_serving", "none_live"), else
    ""."""

    model: str
    route: str
    base_url: str | None
    state: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def python(self) -> str:
        return python_snippet(self.base_url, self.model) if self.shows_code else ""

    @property
    def curl(self) -> str:
        return curl_line(self.base_url, self.model) if self.shows_code else ""

    @property
    def shows_code(self) -> bool:
        return self.base_url is not None and self.state not in ("no_relay", "demo", "unlisted")


def for_rig(*, node_id: str, url: str | None, is_demo: bool, is_listed: bool, serving: bool) -> Box:
    """A rig route. The gateway routes only to listed rigs that are serving (the tracker's catalog); a demo
    listing has nothing behind it."""
    if is_demo:
        state = "demo"
    elif not is_listed:
        state = "unlisted"
    elif url is None:
        state = "no_relay"
    elif not serving:
        state = "not_serving"
    else:
        state = ""
    return Box(model=rig_model(node_id), route="rig", base_url=url, state=state)


def for_model(*, key: str, url: str | None, live: int, aliases: tuple[str, ...] = ()) -> Box:
    state = "no_relay" if url is None else "" if live else "none_live"
    return Box(model=key, route="model", base_url=url, state=state, aliases=aliases)
