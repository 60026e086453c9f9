"""The fixed cast and the API client used across the suite."""

import json

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from nodes.models import Node
from tests import engine_split, factories


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory):
    return str(tmp_path_factory.mktemp("keys") / "tracker_signing_key.pem")


@pytest.fixture(autouse=True)
def _isolation(settings, signing_key_file):
    """Each test gets its own rate-limit counters and a signing key outside the repo's data/."""
    settings.TRACKER_SIGNING_KEY_FILE = signing_key_file
    settings.SITE_URL = "http://testserver"
    settings.ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
    settings.SECURE_SSL_REDIRECT = False
    cache.clear()
    yield
    cache.clear()


class Api:
    """APIClient with JSON bodies and Bearer credentials, returning (status, json)."""

    def __init__(self):
        self.client = APIClient()

    def call(
        self,
        method: str,
        path: str,
        body=None,
        *,
        auth: str | None = None,
        raw: bytes | str | None = None,
        content_type: str = "application/json",
        **extra,
    ):
        headers = dict(extra)
        if auth:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {auth}"
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs = {"content_type": content_type} if data is not None else {}
        response = getattr(self.client, method)(path, data=data, **kwargs, **headers)
        self.last = response
        try:
            payload = response.json() if response.content else None
        except ValueError:
            payload = None
        return response.status_code, payload

    def get(self, path, **kw):
        return self.call("get", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("post", path, body, **kw)

    def patch(self, path, body=None, **kw):
        return self.call("patch", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("delete", path, **kw)


@pytest.fixture
def api():
    return Api()


@pytest.fixture
def owner(db):
    """The contributor who owns the rigs in a test (contributor tier once a node is registered)."""
    return factories.make_contributor(handle="owner")


@pytest.fixture
def taster(db):
    """A contributor without nodes: limited tier."""
    return factories.make_contributor(handle="taster")


@pytest.fixture
def moderator(db, django_user_model):
    """A staff user in the Moderators group (not a superuser)."""
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("moderator", password="moderator-pass-123", is_staff=True)
    user.groups.add(Group.objects.get(name="Moderators"))
    return user


@pytest.fixture
def live_node(db, api, owner):
    """A public node whose agent has just sent a heartbeat and that the monitor has seen alive."""
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    factories.seen_alive(node)
    return node, secret


# --- the liveness monitor against a real HTTP server on 127.0.0.1 ------------------------------------------


@pytest.fixture
def server():
    from tests.httpserver import ScriptedServer

    with ScriptedServer() as s:
        yield s


@pytest.fixture
def probe_settings(settings):
    """Probes may reach 127.0.0.1, time out fast, and take a health sample every cycle (tests count them)."""
    settings.ALLOW_PRIVATE_NODE_URLS = True
    settings.MONITOR_PROBE_TIMEOUT_SEC = 1.0
    settings.HEALTH_SAMPLE_INTERVAL_SEC = 0


@pytest.fixture
def monitored_node(probe_settings, server, owner, api):
    """A node whose agent heartbeats and answers its /health."""
    from tests.httpserver import agent_health

    node, secret = factories.make_node(owner, endpoint_url=server.base + "/v1")
    server.routes["/health"] = agent_health(node)
    factories.heartbeat(api, node, secret)
    return node, secret


# --- relays: registered with `manage.py relay add` and heartbeating -------------------------------------------


@pytest.fixture
def relay_a(api):
    secret = factories.add_relay("relay-a", "https://relay-a.example.org/")
    factories.relay_heartbeat(api, "relay-a", secret)
    return secret


@pytest.fixture
def two_relays(api):
    secrets = {rid: factories.add_relay(rid, f"https://{rid}.example.org") for rid in ("relay-a", "relay-b")}
    for rid, secret in secrets.items():
        factories.relay_heartbeat(api, rid, secret)
    return secrets


@pytest.fixture
def relayed(api, owner, relay_a):
    """A relayed node whose agent heartbeats and whose tunnel relay-a reports open: available."""
    node, secret = factories.register_relayed(api, owner)
    assert factories.tunnel(api, node["id"], secret)[0] == 200
    factories.heartbeat(api, Node.objects.get(pk=node["id"]), secret)
    factories.relay_heartbeat(api, "relay-a", relay_a, [node["id"]])
    assert factories.node_status(api, node["id"]) == "available"
    return node["id"], secret


# --- live processes: one tracker for the node-agent and relay tests (started when first asked for) ---------


@pytest.fixture(scope="session")
def tracker(tmp_path_factory):
    """One tracker for the agent and relay tests: generous quotas, private URLs allowed (all on 127.0.0.1)."""
    from tests.agents import running_tracker

    with running_tracker(tmp_path_factory.mktemp("tracker")) as tracker:
        yield tracker


@pytest.fixture
def start_agent(tracker, tmp_path):
    """start_agent(upstream_url, **flags) → a running agent process joined to the tracker (`relayed=True`: through
    a relay, which `start_relay` must have started first)."""
    from tests.agents import AgentStarter

    starter = AgentStarter(tracker, tmp_path)
    yield starter.start
    starter.stop_all()


@pytest.fixture
def start_relay(tracker, tmp_path):
    """start_relay(relay_id=None, **flags) → a registered, running relay process; stopped and removed after."""
    from tests.agents import RelayStarter

    starter = RelayStarter(tracker, tmp_path)
    yield starter
    starter.stop_all()


@pytest.fixture
def fake_upstream():
    from tests.node_agent.fakes import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


def pytest_addoption(parser):
    engine_split.add_option(parser)


def pytest_collection_modifyitems(config, items):
    """Every transactional test here uses serialized rollback. A plain transactional test's flush re-creates the
    content types, and the next serialized test then fails to load its own (UNIQUE constraint on
    django_content_type): one such test broke 38 others in a full run. Refused at collection, naming the test."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        marker = item.get_closest_marker("django_db")
        kwargs = marker.kwargs if marker else {}
        transactional = "transactional_db" in names or kwargs.get("transaction")
        serialized = "django_db_serialized_rollback" in names or kwargs.get("serialized_rollback")
        if transactional and not serialized:
            raise pytest.UsageError(
                f"{item.nodeid}: a transactional test must use serialized rollback here "
                "(pytest.mark.django_db(transaction=True, serialized_rollback=True))"
            )
    engine_split.deselect_engine_independent(config, items)
