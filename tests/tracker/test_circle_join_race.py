"""Joiners racing for the one use of a single-use invite, over real HTTP against a running tracker (Daphne, the
suite's database engine): exactly one gets in, the others hear that the link no longer works, and the invite
counts one use."""

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

JOINERS = 8


def test_of_many_joiners_of_a_single_use_invite_exactly_one_gets_in(tracker):
    base = tracker.base

    def contributor() -> str:
        answer = requests.post(f"{base}/api/contributors", json={}, timeout=10)
        assert answer.status_code == 201, answer.text
        return answer.json()["contributor_key"]

    owner = {"Authorization": f"Bearer {contributor()}"}
    circle = requests.post(f"{base}/api/circles", json={"name": "Race"}, headers=owner, timeout=10).json()["circle"]
    made = requests.post(f"{base}/api/circles/{circle['id']}/invites", json={}, headers=owner, timeout=10).json()
    keys = [contributor() for _ in range(JOINERS)]
    start = threading.Barrier(JOINERS)

    def join(key):
        start.wait(timeout=10)
        answer = requests.post(
            f"{base}/api/circles/invites/{made['code']}/join",
            json={},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        return answer.status_code, answer.json()["code"] if answer.status_code != 201 else None

    with ThreadPoolExecutor(max_workers=JOINERS) as pool:
        results = list(pool.map(join, keys))
    assert sorted(results, key=str) == sorted([(201, None)] + [(410, "invite_gone")] * (JOINERS - 1), key=str), results
    invites = requests.get(f"{base}/api/circles/{circle['id']}/invites", headers=owner, timeout=10).json()["invites"]
    assert [(i["uses"], i["state"]) for i in invites] == [(1, "used_up")]
    members = requests.get(f"{base}/api/circles/{circle['id']}/members", headers=owner, timeout=10).json()["members"]
    assert len(members) == 2
