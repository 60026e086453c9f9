"""The agent and the relay install on their own, as a node operator installs them: a fresh virtualenv,
`pip install ./node_agent` (then `./node_agent ./relay`), and the installed commands run without Django.

The install test fetches the pinned wheels from pip's configured index or its cache (the one test that reaches
beyond 127.0.0.1): it skips, saying so, only when pip can get none of them, and fails on any other pip error."""

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import node_agent
import relay

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT = 300

# Import name -> distribution name, for the third-party modules the agent and the relay import.
DISTRIBUTION_OF = {
    "aiohttp": "aiohttp",
    "jwt": "pyjwt",
    "cryptography": "cryptography",
    "requests": "requests",
    "gguf": "gguf",
    "prometheus_client": "prometheus-client",
    "zeroconf": "zeroconf",
    "ifaddr": "ifaddr",
    "uvloop": "uvloop",
    "node_agent": "luckrig-node",
}
# What a node operator must never be made to install: the tracker's stack.
TRACKER_ONLY = {
    "django",
    "djangorestframework",
    "channels",
    "daphne",
    "gunicorn",
    "twisted",
    "redis",
    "psycopg",
    "whitenoise",
}


def _project(folder: str) -> dict:
    return tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]


def _requirement_names(folder: str) -> set[str]:
    return {re.split(r"[\s\[=<>~!;]", req, maxsplit=1)[0].lower() for req in _project(folder)["dependencies"]}


def _third_party_imports(folder: str) -> set[str]:
    """The top-level modules `folder`/*.py imports, minus the standard library and the package itself."""
    found = set()
    for path in (ROOT / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {folder}


@pytest.mark.parametrize("folder", ["node_agent", "relay"])
def test_each_part_declares_exactly_the_distributions_it_imports(folder):
    # A new import without its dependency fails here, before an operator's fresh install does.
    imports = _third_party_imports(folder)
    assert imports <= DISTRIBUTION_OF.keys(), f"add {imports - DISTRIBUTION_OF.keys()} to DISTRIBUTION_OF"
    assert _requirement_names(folder) == {DISTRIBUTION_OF[name] for name in imports}


def test_the_relay_requires_the_agent_of_the_same_checkout_and_the_tracker_neither():
    # Both ends of a tunnel speak node_agent.frames: the relay pins the agent version that sits beside it.
    assert f"luckrig-node=={node_agent.__version__}" in _project("relay")["dependencies"]
    assert _project("node_agent")["name"] == "luckrig-node" and _project("relay")["name"] == "luckrig-relay"
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "scripts" not in root["project"]
    assert not {"node_agent", "relay"} & {
        p.rstrip("*") for p in root["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert relay.__version__  # each part has its own version, read by setuptools from its __init__.py


def _pip(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )


def _skip_unless_pip_can_fetch(venv: Path, failed: subprocess.CompletedProcess, tmp_path: Path) -> None:
    """After a failed install: skip when pip cannot fetch even the pinned third-party wheels (no network, no
    cache), which says nothing about our packaging; otherwise the failure is ours."""
    pins = [*_project("node_agent")["dependencies"], "setuptools>=77", "wheel"]
    probe = _pip(venv, "download", "--no-deps", "--dest", str(tmp_path / "probe"), *pins, cwd=tmp_path)
    if probe.returncode != 0:
        pytest.skip(f"pip can reach neither an index nor a cache with {pins}: {probe.stderr.strip()[-300:]}")
    pytest.fail(
        f"pip install failed although the wheels are reachable:\n{failed.stdout[-3000:]}{failed.stderr[-3000:]}"
    )


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _installed(venv: Path, tmp_path: Path) -> tuple[set[str], int]:
    """The distributions installed in `venv` (pip and setuptools left out) and their size in bytes on disk."""
    listed = _pip(venv, "list", "--format=freeze", cwd=tmp_path).stdout.split()
    names = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in listed} - {"pip", "setuptools"}
    site = _site_packages(venv)
    tooling = {p for p in site.iterdir() if p.name.lower().startswith(("pip", "setuptools", "_distutils_hack"))}
    files = (f for p in set(site.iterdir()) - tooling for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return names, sum(f.stat().st_size for f in files)


@pytest.mark.install
def test_a_fresh_venv_runs_the_agent_and_the_relay_without_django(tmp_path):
    # A copy of the two folders: pip builds in the source tree, and build/ and *.egg-info must not land in the
    # checkout (nor a stale build/ there change what gets installed).
    src = tmp_path / "src"
    for folder in ("node_agent", "relay"):
        shutil.copytree(
            ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
        )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"

    agent = _pip(venv, "install", "./node_agent", cwd=src)
    if agent.returncode != 0:
        _skip_unless_pip_can_fetch(venv, agent, tmp_path)
    names, size = _installed(venv, tmp_path)
    print(f"\nluckrig-node alone: {len(names)} distributions, {size / 2**20:.1f} MiB in site-packages: {sorted(names)}")

    # gguf (the model files' header reader) brings numpy, pyyaml and tqdm: the agent's largest dependencies.
    wanted = {"luckrig-node", "aiohttp", "pyjwt", "cryptography", "requests", "gguf", "numpy", "zeroconf", "ifaddr"}
    assert wanted <= names
    assert not names & TRACKER_ONLY
    help_ = subprocess.run([str(venv / "bin" / "luckrig-node"), "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "join" in help_.stdout and "serve" in help_.stdout, help_.stderr
    version = subprocess.run([str(venv / "bin" / "luckrig-node"), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"luckrig-node {node_agent.__version__}"
    # The catalog of short names `luckrig-node pull` reads is package data: it must be installed with the code.
    catalog = "from node_agent import pull; print(pull.find_in_catalog(pull.load_catalog(), 'smollm2')['file'])"
    shipped = subprocess.run([str(python), "-c", catalog], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shipped.stdout.strip() == "SmolLM2-135M-Instruct.Q4_1.gguf", shipped.stderr
    no_django = subprocess.run([str(python), "-c", "import django"], cwd=tmp_path, capture_output=True, text=True)
    assert no_django.returncode != 0 and "No module named 'django'" in no_django.stderr

    # The relay, as docs/relay.md installs it: one command with both folders.
    both = _pip(venv, "install", "./node_agent", "./relay", cwd=src)
    if both.returncode != 0:
        _skip_unless_pip_can_fetch(venv, both, tmp_path)
    names, size = _installed(venv, tmp_path)
    print(f"luckrig-node + luckrig-relay: {len(names)} distributions, {size / 2**20:.1f} MiB")
    assert {"luckrig-relay", "prometheus-client"} <= names and not names & TRACKER_ONLY
    help_ = subprocess.run([str(venv / "bin" / "luckrig-relay"), "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "usage: luckrig-relay" in help_.stdout, help_.stderr
