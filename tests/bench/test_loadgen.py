"""bench/loadgen.py: the load generator behind bench/layout.py reads wrk's report and counts errors the same way
with either client (real sockets against a scripted server)."""

import shutil

import pytest

from bench import loadgen
from tests.httpserver import Route, ScriptedServer
from tests.processes import free_port

WRK_REPORT = """Running 10s test @ http://127.0.0.1:8000/api/nodes
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.12ms   80.33ms   1.41s    90.12%
    Req/Sec    19.50      8.21    40.00     60.00%
  Latency Distribution
     50%  850.00us
     75%   10.06ms
     90%   12.73ms
     99%    1.41s
  388 requests in 10.01s, 20.12MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 12
Requests/sec:     38.77
Transfer/sec:      2.01MB
"""


def test_wrk_report_is_read_with_its_units_and_errors():
    load = loadgen.parse_wrk(WRK_REPORT)
    assert load.rps == 38.77
    assert load.p50_ms == pytest.approx(0.85)
    assert load.p99_ms == pytest.approx(1410.0)
    assert (load.non_2xx, load.socket_errors, load.errors) == (12, 6, 18)


def test_a_clean_wrk_report_has_no_errors():
    clean = "\n".join(
        line for line in WRK_REPORT.splitlines() if not line.lstrip().startswith(("Socket errors", "Non-2xx"))
    )
    assert loadgen.parse_wrk(clean).errors == 0


@pytest.mark.parametrize("use_wrk", [False, True], ids=["aiohttp", "wrk"])
def test_answers_outside_2xx_and_refused_connections_are_errors(use_wrk):
    if use_wrk and not loadgen.has_wrk():
        pytest.skip("wrk is not installed (apt-get install wrk): only the aiohttp client is tested")
    with ScriptedServer() as server:
        server.routes["/ok"] = Route(200, b'{"ok": true}')
        server.routes["/broken"] = Route(500, b'{"error": "x"}')
        ok = loadgen.run(server.base + "/ok", 0.3, 2, use_wrk=use_wrk)  # wrk: one second, its shortest
        broken = loadgen.run(server.base + "/broken", 0.3, 2, use_wrk=use_wrk)
    assert ok.rps > 0 and ok.errors == 0 and 0 < ok.p50_ms <= ok.p99_ms
    assert broken.non_2xx > 0 and broken.socket_errors == 0
    refused = loadgen.run(f"http://127.0.0.1:{free_port()}/", 0.3, 2, use_wrk=use_wrk)
    assert refused.socket_errors > 0


def test_wrk_is_only_used_when_installed():
    assert loadgen.has_wrk() == (shutil.which("wrk") is not None)
