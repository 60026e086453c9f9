"""Model identity (node_agent/model_identity.py): the served file's sha256, cached by path, size and mtime; its
GGUF header read with llama.cpp's reader (the real SmolLM2 file the project installs); ollama's manifest digest,
checked against the blob; the agent's heartbeat carrying it; and `luckrig-node models`."""

import asyncio
import hashlib
import json
import os
import struct
from pathlib import Path

import aiohttp
import gguf
import numpy as np
import pytest

from bin import smollm2_server
from node_agent import cli, model_identity
from node_agent.config import AgentConfig
from node_agent.server import Agent
from node_agent.tracker_link import TrackerLink
from tests.node_agent.fakes import FakeOpenAI

CATALOG = json.loads(model_identity.CATALOG_FILE.read_text())["models"]
SMOLLM2_SHA256 = CATALOG[0]["sha256"]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    try:
        return smollm2_server.model_file()
    except LookupError as exc:
        pytest.skip(f"the SmolLM2 GGUF is not installed: {exc}")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One identity cache for this module's SmolLM2 tests: its header takes seconds to read, so it is read once."""
    return tmp_path_factory.mktemp("identity") / "model_files.json"


def tiny_gguf(
    path: Path,
    *,
    context: int = 512,
    file_type=gguf.LlamaFileType.MOSTLY_Q8_0,
    fill: float = 0.0,
    template: str = "{{ messages }}",
):
    """A small valid GGUF written with gguf's own writer: one tensor, a few header keys."""
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_context_length(context)
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("llama")
    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.full((4, 8), fill, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_real_smollm2_file_reads_as_what_its_header_says(smollm2, shared_cache):
    # Read from the file itself (gguf-dump agrees): llama, 135M, general.file_type 3 = Q4_1, trained for 8192.
    identity = model_identity.IdentityCache(shared_cache).identify(smollm2)
    assert identity.architecture == "llama" and identity.size_label == "135M"
    assert identity.parameters == 134_515_008 and identity.quantization == "Q4_1"
    assert identity.context_length == 8192 and identity.tokenizer == "gpt2"
    # The template read by hand from the header's bytes: the key, its type (u32 8: string), its length (u64).
    with open(smollm2, "rb") as fh:
        head = fh.read(4 * 2**20)
    at = head.index(b"tokenizer.chat_template") + len(b"tokenizer.chat_template")
    assert struct.unpack_from("<I", head, at)[0] == 8
    length = struct.unpack_from("<Q", head, at + 4)[0]
    template = head[at + 12 : at + 12 + length].decode()
    assert template.startswith("{% for message in messages %}")
    assert identity.chat_template_sha256 == hashlib.sha256(template.encode()).hexdigest()
    assert identity.sha256 == SMOLLM2_SHA256 and identity.size == smollm2.stat().st_size == CATALOG[0]["size"]
    assert identity.source == "file"


@pytest.mark.parametrize(
    ("file_type", "name"),
    [(0, "F32"), (1, "F16"), (2, "Q4_0"), (15, "Q4_K_M"), (19, "IQ2_XXS"), (32, "BF16"), (1024, None), (999, None)],
)
def test_the_file_type_names_the_quantization(file_type, name):
    assert model_identity.quantization_name(file_type) == name


def test_a_file_is_hashed_again_only_when_its_size_or_mtime_changes(tmp_path):
    path = tiny_gguf(tmp_path / "m.gguf")
    cache_file = tmp_path / "state" / "model_files.json"
    first = model_identity.IdentityCache(cache_file).identify(path)
    assert first.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and first.quantization == "Q8_0"
    stat = path.stat()

    # Same size, same mtime, other bytes: the cache (a new instance reads it from disk) is believed, not the file.
    tiny_gguf(path, fill=1.0)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model_identity.IdentityCache(cache_file).identify(path).sha256 == first.sha256

    # A new mtime: hashed again.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = model_identity.IdentityCache(cache_file).identify(path)
    assert again.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != first.sha256

    # A new size, the mtime of the last hash: hashed (and read) again.
    tiny_gguf(path, context=4096, file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M, template="{{ messages }}" + " " * 100)
    assert path.stat().st_size != stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = model_identity.IdentityCache(cache_file).identify(path)
    assert third.context_length == 4096 and third.quantization == "Q4_K_M"


def test_a_file_that_is_not_gguf_is_refused_and_a_corrupt_cache_ignored(tmp_path):
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"not a model" * 100)
    cache_file = tmp_path / "cache.json"
    cache_file.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable GGUF"):
        model_identity.IdentityCache(cache_file).identify(junk)
    with pytest.raises(OSError):
        model_identity.IdentityCache(cache_file).identify(tmp_path / "missing.gguf")


def fake_ollama_dir(root: Path, blob_source: Path, name=("registry.ollama.ai", "library", "smollm2", "135m")) -> str:
    """An ollama models folder as ollama lays it out: a manifest naming the model layer by digest, the blob."""
    digest = hashlib.sha256(blob_source.read_bytes()).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").symlink_to(blob_source)
    manifest = root / "manifests" / Path(*name)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    config_digest = "c" * 64
    manifest.write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": f"sha256:{config_digest}",
                },
                "layers": [
                    {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "d" * 64, "size": 1},
                    {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 1},
                ],
            }
        )
    )
    return digest


def test_ollamas_manifest_digest_is_the_blobs_sha256(smollm2, shared_cache, tmp_path):
    models = tmp_path / "ollama"
    digest = fake_ollama_dir(models, smollm2)
    assert model_identity.ollama_models(models) == ["smollm2:135m"]
    blob, said = model_identity.ollama_model_blob(models, "smollm2:135m")
    assert said == digest == SMOLLM2_SHA256 == model_identity.sha256_of(blob)
    identity = model_identity.IdentityCache(shared_cache).identify(blob, digest=said)
    assert identity.source == "ollama" and identity.sha256 == SMOLLM2_SHA256 and identity.quantization == "Q4_1"
    assert model_identity.ollama_model_blob(models, "smollm2:360m") is None
    # Names as ollama lists them: a namespace, and a model pulled from another registry.
    assert (
        model_identity.ollama_manifest_path(models, "me/rig") == models / "manifests/registry.ollama.ai/me/rig/latest"
    )
    assert model_identity.ollama_manifest_path(models, "hf.co/org/repo:Q4_K_M") == (
        models / "manifests/hf.co/org/repo/Q4_K_M"
    )


def test_models_lists_the_local_files_with_their_identity(smollm2, shared_cache, tmp_path, capsys):
    models = tmp_path / "ollama"
    fake_ollama_dir(models, smollm2)
    other = tiny_gguf(tmp_path / "tiny.gguf")
    pulled_dir = tmp_path / "pulled"  # where `luckrig-node pull` downloads: every .gguf file there is listed
    pulled_dir.mkdir()
    tiny_gguf(pulled_dir / "pulled.gguf", context=2048)
    (pulled_dir / "half.gguf.part").write_bytes(b"GGUF")  # a download in progress is not a model
    config_dir = tmp_path / "config"
    (config_dir / "state").mkdir(parents=True)
    model_identity.IdentityCache(shared_cache).identify(smollm2)  # read once per module, whichever test runs first
    (config_dir / "state" / "model_files.json").write_bytes(shared_cache.read_bytes())
    assert (
        cli.main(
            ["models", "--config-dir", str(config_dir), "--ollama-models", str(models), "--model-file", str(other)]
            + ["--models-dir", str(pulled_dir)]
        )
        == 0
    )
    out = capsys.readouterr().out
    smollm2_part, tiny_part = out.split("smollm2:135m\n")[1], out.split("smollm2:135m\n")[0]
    assert f"sha256:        {SMOLLM2_SHA256[:16]}… (from ollama's manifest)" in smollm2_part
    assert (
        "llama, 135M parameters, quantization Q4_1" in smollm2_part and "context:       8,192 (trained)" in smollm2_part
    )
    assert "matches catalog smollm2:135m-instruct-q4_1" in smollm2_part and "(93.8 MiB)" in smollm2_part
    tiny_part, pulled_part = tiny_part.split("pulled.gguf\n")
    assert tiny_part.startswith("tiny.gguf\n") and "quantization Q8_0" in tiny_part and "catalog" not in tiny_part
    assert "context:       2,048 (trained)" in pulled_part and "half" not in out
    assert json.loads((config_dir / "state" / "model_files.json").read_text())["files"]  # hashed once, kept


def test_models_says_when_it_finds_nothing(tmp_path, capsys):
    nothing = ["--ollama-models", str(tmp_path / "none"), "--models-dir", str(tmp_path / "none")]
    assert cli.main(["models", "--config-dir", str(tmp_path), *nothing]) == 1
    assert "No model files found" in capsys.readouterr().err


def test_the_agent_reports_the_served_file_in_its_heartbeats(tmp_path):
    """The llama.cpp server's /props names the file; the agent hashes it in a thread and its heartbeat says it."""
    model = tiny_gguf(tmp_path / "served.gguf")

    async def scenario():
        with FakeOpenAI() as server:
            server.model_path = model
            agent = Agent(AgentConfig(upstream=server.base, model="smollm2-fake", config_dir=str(tmp_path / "cfg")))
            async with aiohttp.ClientSession() as agent.session:
                assert "model_identity" not in agent.heartbeat_body()  # not known yet: left out, serving goes on
                await agent.identify_model("llama.cpp")
            agent.ledger.close()
            return agent.heartbeat_body()["model_identity"]

    reported = asyncio.run(scenario())
    assert reported == {
        "model": "smollm2-fake",
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "size": model.stat().st_size,
        "source": "file",
        "architecture": "llama",
        "parameters": 32,
        "size_label": None,
        "quantization": "Q8_0",
        "context_length": 512,
        "tokenizer": "llama",
        "chat_template_sha256": hashlib.sha256(b"{{ messages }}").hexdigest(),
    }


def test_a_tracker_that_refuses_the_model_identity_gets_heartbeats_without_it(tmp_path):
    link = TrackerLink(
        session=None,
        tracker="http://t",
        node_id="n",
        node_secret="s",
        state_dir=tmp_path,
        ledger=None,
        heartbeat_interval=15,
    )
    link.snapshot = lambda: {"queue": {}, "model_identity": {"sha256": "a" * 64}}
    assert "model_identity" in link.heartbeat_body()
    assert link._telemetry_refused("model_identity.sha256") is True
    assert "model_identity" not in link.heartbeat_body()
    assert link._telemetry_refused("model_identity") is False  # once only: a second refusal is not a retry
