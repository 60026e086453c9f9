"""Each serving process tunes its garbage collector the same way (luckrig_site.gctune): what start-up made is
frozen and gen-0 collections are rare, so that a page of the node list (thousands of short-lived containers) is
not scanned and promoted mid-request. gunicorn's workers load luckrig_site.wsgi, Daphne luckrig_site.asgi."""

import os
import subprocess
import sys

import pytest

from tests.processes import ROOT

CHECK = "import gc, luckrig_site.{module}; print(gc.get_threshold()[0], gc.get_freeze_count() > 10000)"


@pytest.mark.parametrize("module", ["wsgi", "asgi"])
def test_a_serving_process_freezes_start_up_and_collects_rarely(tmp_path, module):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "DATA_DIR": str(tmp_path), "DEBUG": "1"})
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["20000", "True"]
