"""Settings validated at start-up (issue 11): a malformed RATE_* value used to switch that limit off without a
word, and an all-trusting TRUSTED_PROXIES (which lets any client choose its IP) passed `check --deploy`. Both
now stop the process with a clear message and are reported by a system check."""

import os
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests.processes import ROOT, free_port

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "x" * 20 + "production-secret-that-is-long-and-random-4e1b9c",
    "ALLOWED_HOSTS": "luckrig.example",
    "SITE_URL": "https://luckrig.example",
    "DATABASE_URL": "postgres://luckrig@127.0.0.1:5432/luckrig",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def environment(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "DATABASE_URL", "REDIS_URL")}
    return {**env, **PRODUCTION, "DATA_DIR": str(tmp_path), **extra}


def check_errors() -> str:
    try:
        call_command("check")
    except SystemCheckError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize(
    "name, value",
    [
        ("RATE_REPLAY_PUBLISH", "20 per hour"),  # django-ratelimit: no limit at all
        ("RATE_CONTRIBUTOR_CREATE", "5/x"),  # django-ratelimit: 5 a second
        ("RATE_TOKEN_CREATE", "30/0m"),  # django-ratelimit: an error on every request
        ("RATE_ABUSE_REPORT", " 10/d"),
        ("RATE_NODE_WRITE", "60/h\n"),
        ("RATE_TIMING_UPLOAD", "١٢٠/h"),  # digits, but not ASCII ones
        ("RATE_FINGERPRINT_VERIFY", ""),
    ],
)
def test_a_malformed_rate_is_a_system_check_error(settings, name, value):
    setattr(settings, name, value)
    errors = check_errors()
    assert "luckrig.E010" in errors and name in errors


@pytest.mark.parametrize(
    "proxies",
    [
        ["0.0.0.0/0"],
        ["::/0"],
        ["0.0.0.0/1", "128.0.0.0/1"],  # two halves trust everyone as surely as the whole
        ["::ffff:0:0/96"],  # every IPv4 client, written as IPv4-mapped
        ["10.0.0.5", "0.0.0.0/0"],
    ],
)
def test_an_all_trusting_trusted_proxies_is_a_system_check_error(settings, proxies):
    settings.TRUSTED_PROXIES = proxies
    assert "luckrig.E011" in check_errors()


def test_an_entry_that_is_not_an_address_is_a_system_check_error(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "proxy.internal"]
    errors = check_errors()
    assert "luckrig.E011" in errors and "proxy.internal" in errors


def test_reasonable_settings_pass(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "::1", "::ffff:192.0.2.0/120", "2001:db8::/32"]
    settings.RATE_TOKEN_CREATE = "30/10m"
    assert check_errors() == ""


def test_check_deploy_reports_both(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=environment(tmp_path, RATE_REPLAY_PUBLISH="20 per hour", TRUSTED_PROXIES="0.0.0.0/0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "luckrig.E010" in result.stderr and "RATE_REPLAY_PUBLISH" in result.stderr
    assert "luckrig.E011" in result.stderr and "TRUSTED_PROXIES" in result.stderr


@pytest.mark.parametrize(
    "extra, named",
    [
        ({"RATE_CONTRIBUTOR_CREATE": "5 a day"}, "RATE_CONTRIBUTOR_CREATE"),
        ({"TRUSTED_PROXIES": "::/0"}, "TRUSTED_PROXIES"),
    ],
)
def test_daphne_refuses_to_start_with_a_clear_message(tmp_path, extra, named):
    env = environment(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", **extra)
    env.pop("REDIS_URL")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "luckrig_site.serve_daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["luckrig_site.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        pytest.fail(f"daphne kept running with {extra}: {out[-2000:]}")
    assert proc.returncode != 0
    assert "LuckRig refuses to start" in out and named in out, out[-2000:]


def test_the_wsgi_entry_point_refuses_too(tmp_path):
    env = environment(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", RATE_NODE_WRITE="60/hour")
    env.pop("REDIS_URL")
    result = subprocess.run(
        [sys.executable, "-c", "import luckrig_site.wsgi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "RATE_NODE_WRITE" in result.stderr
