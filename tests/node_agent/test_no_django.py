"""The node agent runs on contributors' machines: it must never import Django."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_agent_package_and_cli_never_import_django(tmp_path):
    code = (
        "import sys, runpy, pkgutil, importlib\n"
        "import node_agent\n"
        "for mod in pkgutil.walk_packages(node_agent.__path__, 'node_agent.'):\n"
        "    if not mod.name.endswith('__main__'):\n"
        "        importlib.import_module(mod.name)\n"
        "from node_agent import cli\n"
        f"cli.main(['keygen', '--config-dir', {str(tmp_path)!r}])\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith(('django.', 'rest_framework')))\n"
        "print('DJANGO-MODULES:', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DJANGO-MODULES: []" in result.stdout


def test_keygen_writes_a_private_key_only_the_owner_can_read(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "node_agent.cli", "keygen", "--config-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    key = tmp_path / "node_x25519.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "BEGIN PRIVATE KEY" in key.read_text()
    assert "BEGIN PUBLIC KEY" in result.stdout and "Fingerprint: sha256:" in result.stdout
    # Running it again keeps the key and prints the same fingerprint.
    again = subprocess.run(
        [sys.executable, "-m", "node_agent.cli", "keygen", "--config-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    fingerprint = [line for line in result.stdout.splitlines() if line.startswith("Fingerprint")]
    assert fingerprint == [line for line in again.stdout.splitlines() if line.startswith("Fingerprint")]
    assert "keeping it" in again.stdout


def test_the_agents_fingerprint_matches_the_trackers(tmp_path):
    from node_agent import keys as agent_keys
    from tracker import pubkeys

    public_pem, fingerprint = agent_keys.generate(tmp_path / "k.pem")
    assert pubkeys.validate(public_pem)[1] == fingerprint
