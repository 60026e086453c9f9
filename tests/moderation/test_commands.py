"""takedown / restore / ban / unban from the command line: the same decisions, the same audit rows."""

import pytest
from django.core.management import CommandError, call_command

from core.clientip import hash_ip
from moderation.addresses import address_label
from moderation.models import ModerationAction
from nodes.models import Node
from tracker.models import Ban

pytestmark = pytest.mark.django_db


def test_takedown_and_restore(api, live_node, capsys):
    node, _ = live_node
    call_command("takedown", node.pk, "--reason", "court order", "--moderator", "ops-alice")
    assert api.get(f"/api/nodes/{node.pk}")[0] == 404
    call_command("restore", node.pk, "--reason", "order lifted")
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200
    actions = list(ModerationAction.objects.order_by("created_at").values_list("action", "moderator_name", "reason"))
    assert actions[0] == ("take_down", "ops-alice", "court order")
    assert actions[1][0] == "restore" and actions[1][1].endswith("(command line)")
    assert "took down" in capsys.readouterr().out


def test_ban_and_unban_each_kind(api, live_node, taster):
    node, _ = live_node
    call_command("ban", "contributor", "taster", "--reason", "spam", "--days", "3")  # a handle works too
    assert Ban.objects.get(kind="contributor").value == taster.id
    call_command("ban", "ip", "203.0.113.7", "--reason", "scraping")
    assert not Ban.objects.filter(value__contains="203.0.113").exists()
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="203.0.113.7")[1]["code"] == "banned"
    call_command("ban", "node", node.pk, "--reason", "malware links")
    assert api.get(f"/api/nodes/{node.pk}")[0] == 404
    call_command("unban", "node", node.pk, "--reason", "cleaned up")
    call_command("unban", "ip", "203.0.113.7", "--reason", "mistake")
    assert api.get(f"/api/nodes/{node.pk}")[0] == 200
    assert api.post("/api/tokens", {"node_id": node.pk}, REMOTE_ADDR="203.0.113.7")[0] == 201
    assert ModerationAction.objects.count() == 5
    # The log names the address by its label: neither the address nor its stored hash.
    ip_rows = ModerationAction.objects.filter(subject_kind="ip")
    assert [row.subject_id for row in ip_rows] == [address_label(hash_ip("203.0.113.7"))] * 2


@pytest.mark.parametrize(
    "args",
    [
        ["takedown", "no-such-node", "--reason", "x"],
        ["restore", "no-such-node", "--reason", "x"],
        ["ban", "node", "no-such-node", "--reason", "x"],
        ["ban", "contributor", "nobody", "--reason", "x"],
        ["ban", "ip", "not-an-ip", "--reason", "x"],
        ["unban", "contributor", "nobody", "--reason", "x"],
    ],
)
def test_unknown_subjects_fail_and_change_nothing(live_node, args):
    with pytest.raises(CommandError):
        call_command(*args)
    assert not ModerationAction.objects.exists() and not Ban.objects.exists()
    assert Node.objects.filter(taken_down_at__isnull=False).count() == 0


def test_a_reason_is_required_and_days_must_be_positive(live_node):
    node, _ = live_node
    with pytest.raises(CommandError):
        call_command("takedown", node.pk, "--reason", "   ")
    with pytest.raises(CommandError):
        call_command("ban", "node", node.pk, "--reason", "x", "--days", "0")
    assert not ModerationAction.objects.exists() and not Ban.objects.exists()
    assert Node.objects.get(pk=node.pk).taken_down_at is None


@pytest.mark.django_db(transaction=False)
def test_the_commands_exit_non_zero_from_a_shell(tmp_path):
    import subprocess
    import sys

    from tests.processes import ROOT, fresh_database, migrate, tracker_env

    with fresh_database(tmp_path) as url:
        env = tracker_env(url, tmp_path)
        migrate(env)
        result = subprocess.run(
            [sys.executable, "manage.py", "takedown", "ghost", "--reason", "x"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0 and "no node 'ghost'" in result.stderr
