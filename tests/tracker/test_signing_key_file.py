"""The signing key generated on first use: gunicorn's workers and Daphne start together, and each may be the
first to need it. They must agree on one key, and none may read a file another is still writing."""

import threading

from tracker.signing import _load, generate_key_file


def test_processes_starting_together_agree_on_one_whole_key(tmp_path):
    path = tmp_path / "keys" / "signing.pem"
    seen, start = [], threading.Barrier(8)

    def first_use():
        start.wait(5)
        generate_key_file(path)
        seen.append(_load(path).kid)  # raises if the file were empty or half written

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(seen) == 8 and len(set(seen)) == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == ["signing.pem"]  # no temporary file left behind


def test_an_existing_key_is_kept(tmp_path):
    path = tmp_path / "signing.pem"
    generate_key_file(path)
    before = path.read_bytes()
    generate_key_file(path)
    assert path.read_bytes() == before
