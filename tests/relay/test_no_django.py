"""The relay runs on its own hosts, installed from ./node_agent and ./relay (no tracker): it must never import
Django, nor anything of the tracker's apps."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRACKER_PACKAGES = (
    "django",
    "rest_framework",
    "channels",
    "luckrig_site",
    "nodes",
    "tracker",
    "moderation",
    "showcase",
)


def test_the_relay_package_and_cli_never_import_django_or_the_tracker():
    code = (
        "import sys, pkgutil, importlib\n"
        "import relay\n"
        "for mod in pkgutil.walk_packages(relay.__path__, 'relay.'):\n"
        "    if not mod.name.endswith('__main__'):\n"
        "        importlib.import_module(mod.name)\n"
        "from relay import cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {TRACKER_PACKAGES!r})\n"
        "print('TRACKER-MODULES:', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TRACKER-MODULES: []" in result.stdout
