"""`luckrig-node join --visibility circle --circle NAME` and `luckrig-node circle invite|members|remove`, run in
process against a tracker that speaks the circles API (tests/node_agent/circle_tracker.py): what they send, what
they print, what they pin in agent.json, and each refusal as one sentence with exit code 1."""

import json

import pytest

from node_agent import cli, config
from tests.node_agent.circle_tracker import CircleTracker


@pytest.fixture
def circle_tracker():
    with CircleTracker() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _no_agent_env(monkeypatch):
    for name in [n for n in __import__("os").environ if n.startswith(config.ENV_PREFIX)]:
        monkeypatch.delenv(name)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def join(capsys, tracker, upstream, config_dir, *extra):
    return run(
        capsys,
        "join",
        "--tracker",
        tracker.base,
        "--config-dir",
        config_dir,
        "--upstream",
        upstream.base,
        "--gpu",
        "Fake GPU",
        "--vram-gb",
        "8",
        "--no-serve",
        "--yes",
        *extra,
    )


@pytest.fixture
def circle_rig(capsys, circle_tracker, fake_upstream, tmp_path):
    """A rig joined with `--visibility circle --circle Flatmates`: (config dir, circle, the join's output)."""
    code, out, err = join(
        capsys, circle_tracker, fake_upstream, tmp_path, "--visibility", "circle", "--circle", "Flatmates"
    )
    assert code == 0, err
    (circle,) = circle_tracker.circles.values()
    return tmp_path, circle, out


def test_join_makes_the_circle_registers_the_rig_in_it_pins_both_and_prints_an_invite(circle_tracker, circle_rig):
    config_dir, circle, out = circle_rig
    assert circle["name"] == "Flatmates"
    assert f"Made your circle Flatmates ({circle['id']})" in out
    (registered,) = circle_tracker.sent("POST", "/api/nodes")
    assert registered["visibility"] == "circle" and registered["circles"] == [circle["id"]]
    assert circle_tracker.sent("POST", f"/api/circles/{circle['id']}/invites") == [{"schema_version": 1}]
    assert f"{circle_tracker.base}/join/lri_" in out
    assert "Anyone with this link can join Flatmates and taste your rig until it expires (2026-01-08 12:00 UTC)." in out
    assert "lrn_" not in out and "lrk_" not in out  # no secret printed; the invite code is the link's to carry
    saved = json.loads((config_dir / "agent.json").read_text())
    assert (saved["visibility"], saved["circle"]) == ("circle", [circle["id"]])
    # What `serve` will run with: pinned, whatever the tracker says later (tests/node_agent/test_circles.py).
    cfg = config.resolve({"config_dir": str(config_dir)})
    assert (cfg.visibility, cfg.pinned_circles) == ("circle", {circle["id"]})


def test_join_again_uses_the_circle_and_the_node_it_has_and_changes_nothing(
    capsys, circle_tracker, fake_upstream, circle_rig
):
    config_dir, circle, _ = circle_rig
    code, out, err = join(
        capsys, circle_tracker, fake_upstream, config_dir, "--visibility", "circle", "--circle", "Flatmates"
    )
    assert code == 0, err
    assert f"Using your circle Flatmates ({circle['id']})" in out
    # A circle rig is 404 to anonymous callers: join asks with the owner's key, so it is not taken for hidden.
    assert "Reusing the registered node" in out and "taken down" not in out
    assert "The registration is unchanged" in out
    assert len(circle_tracker.circles) == 1 and not circle_tracker.sent("PATCH", "/api/nodes")


def test_join_with_another_circle_adds_it_and_pins_both(capsys, circle_tracker, fake_upstream, circle_rig):
    config_dir, flatmates, _ = circle_rig
    code, out, err = join(capsys, circle_tracker, fake_upstream, config_dir, "--circle", "Climbing club")
    assert code == 0, err
    climbing = next(c for c in circle_tracker.circles.values() if c["name"] == "Climbing club")
    both = sorted([flatmates["id"], climbing["id"]])
    assert circle_tracker.sent("PATCH", "/api/nodes") == [{"circles": both}]
    assert "Anyone with this link can join Climbing club" in out
    saved = json.loads((config_dir / "agent.json").read_text())
    assert (saved["visibility"], saved["circle"]) == ("circle", both)


def test_join_shares_a_registered_public_rig_with_a_circle_and_a_refused_publish_is_a_sentence(
    capsys, circle_tracker, fake_upstream, tmp_path
):
    assert join(capsys, circle_tracker, fake_upstream, tmp_path)[0] == 0
    code, out, err = join(capsys, circle_tracker, fake_upstream, tmp_path, "--visibility", "circle", "--circle", "Us")
    assert code == 0, err
    (circle,) = circle_tracker.circles.values()
    assert circle_tracker.sent("PATCH", "/api/nodes") == [{"visibility": "circle", "circles": [circle["id"]]}]
    assert "visibility: public → circle" in out and "circles: (none) → Us" in out
    code, out, err = join(capsys, circle_tracker, fake_upstream, tmp_path, "--visibility", "public")
    assert code == 1
    assert "luckrig-node join: the tracker refused (409 publish_required)" in err
    assert "The registration is unchanged." in err
    assert json.loads((tmp_path / "agent.json").read_text())["visibility"] == "circle"  # still pinned


def test_circle_invite_sends_what_was_asked_and_writes_the_qr_code(capsys, circle_tracker, circle_rig):
    config_dir, circle, _ = circle_rig
    qr = config_dir / "invite.svg"
    code, out, err = run(
        capsys,
        "circle",
        "invite",
        "--config-dir",
        config_dir,
        "--uses",
        "unlimited",
        "--days",
        "2",
        "--role",
        "inviter",
        "--qr",
        qr,
    )
    assert code == 0, err
    body = circle_tracker.sent("POST", f"/api/circles/{circle['id']}/invites")[-1]
    assert body == {"schema_version": 1, "max_uses": None, "expires_in_sec": 172800, "role": "inviter"}
    assert "Invite link for Flatmates (any number of uses, joins as inviter, expires 2026-01-08 12:00 UTC):" in out
    assert "Anyone with this link can join Flatmates and taste your rig until it expires" in out
    assert qr.read_text().startswith("<svg") and f"The link's QR code is in {qr}." in out


def test_circle_invite_by_name_and_the_choices_it_refuses(capsys, circle_tracker, circle_rig):
    config_dir, circle, _ = circle_rig
    owner = circle["owner"]
    other = circle_tracker.add_circle(owner, "Climbing club")
    # Named by name or by id; five uses.
    assert (
        run(capsys, "circle", "invite", "--config-dir", config_dir, "--circle", "Climbing club", "--uses", "5")[0] == 0
    )
    assert circle_tracker.sent("POST", f"/api/circles/{other['id']}/invites") == [{"schema_version": 1, "max_uses": 5}]
    assert run(capsys, "circle", "invite", "--config-dir", config_dir, "--circle", other["id"])[0] == 0
    # Unknown name: the circles there are named.
    code, _, err = run(capsys, "circle", "invite", "--config-dir", config_dir, "--circle", "Chess")
    assert code == 1
    assert (
        err.strip()
        == "luckrig-node circle invite: you are in no circle called 'Chess' (yours: Flatmates, Climbing club)"
    )
    # A member (not owner or inviter) may not invite: the tracker's sentence and code.
    stranger_key, _ = circle_tracker.add_contributor("bob")
    circle_tracker.add_member(circle, circle_tracker.contributors[stranger_key])
    code, _, err = run(
        capsys,
        "circle",
        "invite",
        "--config-dir",
        config_dir,
        "--contributor-key",
        stranger_key,
        "--circle",
        "Flatmates",
    )
    assert code == 1
    assert err.strip() == (
        "luckrig-node circle invite: the tracker refused (403 not_circle_owner): Only the circle's owner and its "
        "inviters may invite."
    )
    # --uses must be a number or unlimited (argparse's exit 2, before anything is sent).
    with pytest.raises(SystemExit) as bad:
        run(capsys, "circle", "invite", "--config-dir", config_dir, "--uses", "lots")
    assert bad.value.code == 2 and "a number or unlimited, not 'lots'" in capsys.readouterr().err


def test_without_circle_the_one_pinned_circle_is_meant_else_it_must_be_named(capsys, circle_tracker, tmp_path):
    key, me = circle_tracker.add_contributor("ada")
    circle_tracker.add_circle(me, "A")
    circle_tracker.add_circle(me, "B")
    config.save_config(tmp_path, {"tracker": circle_tracker.base})
    code, _, err = run(capsys, "circle", "members", "--config-dir", tmp_path, "--contributor-key", key)
    assert code == 1 and err.strip() == "luckrig-node circle members: name the circle with --circle NAME (yours: A, B)"
    code, _, err = run(capsys, "circle", "members", "--config-dir", tmp_path)
    assert code == 1 and "no contributor key is saved for" in err
    code, _, err = run(capsys, "circle", "members", "--config-dir", tmp_path / "nothing")
    assert code == 1 and "no tracker is configured here" in err


def test_circle_members_prints_usage_against_limits(capsys, circle_tracker, circle_rig):
    config_dir, circle, _ = circle_rig
    key, bob = circle_tracker.add_contributor("bob")
    circle_tracker.add_member(circle, bob, used=(12, 3456))
    circle["members"][bob["id"]].update(
        status="paused", limits={"requests_per_day": 50, "tokens_per_day": 10_000}, limits_source="member"
    )
    code, out, err = run(capsys, "circle", "members", "--config-dir", config_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Circle Flatmates ({circle['id']}):"
    assert lines[1].split() == ["MEMBER", "ROLE", "STATUS", "REQUESTS", "TODAY", "TOKENS", "TODAY"]
    assert lines[2].split() == [circle["owner"]["handle"], "owner", "active", "0/200", "0/200,000"]
    assert lines[3].split() == ["bob", "member", "paused", "(own", "limits)", "12/50", "3,456/10,000"]
    assert lines[4] == "Daily limits start again at 2026-01-02 00:00 UTC."


def test_circle_remove_by_handle_or_id_and_what_it_refuses(capsys, circle_tracker, circle_rig):
    config_dir, circle, _ = circle_rig
    _, bob = circle_tracker.add_contributor("bob")
    _, eve = circle_tracker.add_contributor("eve")
    circle_tracker.add_member(circle, bob)
    circle_tracker.add_member(circle, eve)
    code, out, err = run(capsys, "circle", "remove", "bob", "--config-dir", config_dir)
    assert code == 0, err
    assert out.strip() == (
        "Removed bob from Flatmates: their tokens for it stop working now, and they get no new ones."
    )
    assert run(capsys, "circle", "remove", eve["id"], "--config-dir", config_dir)[0] == 0
    assert set(circle["members"]) == {circle["owner"]["id"]}
    assert [p for m, p, _ in circle_tracker.requests if m == "DELETE"] == [
        f"/api/circles/{circle['id']}/members/{bob['id']}",
        f"/api/circles/{circle['id']}/members/{eve['id']}",
    ]
    code, _, err = run(capsys, "circle", "remove", "bob", "--config-dir", config_dir)
    assert code == 1 and "'bob' is not a member of Flatmates" in err
    code, _, err = run(capsys, "circle", "remove", circle["owner"]["handle"], "--config-dir", config_dir)
    assert (
        code == 1 and "(409 owner_cannot_leave): The owner cannot leave the circle; delete the circle instead." in err
    )


def test_status_says_the_radius(capsys, circle_tracker, circle_rig):
    config_dir, circle, _ = circle_rig
    code, out, _ = run(capsys, "status", "--config-dir", config_dir)
    assert code == 0
    assert (
        f"Radius:    circle, pinned here: visibility circle; circles {circle['id']}; the tracker says circle, "
        f"shared with Flatmates ({circle['id']})"
    ) in out


def test_a_tracker_that_does_not_answer_is_one_sentence(capsys, circle_rig):
    config_dir, _, _ = circle_rig
    down = ("--tracker", "http://127.0.0.1:9", "--contributor-key", "lrk_x")  # nothing listens on the discard port
    code, _, err = run(capsys, "circle", "members", "--config-dir", config_dir, *down)
    assert code == 1 and err.startswith("luckrig-node circle members: the tracker did not answer (")
