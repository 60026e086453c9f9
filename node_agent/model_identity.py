"""Which model file a rig serves: its sha256 and what its GGUF header says (architecture, parameter count,
quantization, trained context, tokenizer, chat-template hash), so that the tracker can show the file instead of
a quantization guessed from a name. The header is read with `gguf`, llama.cpp's own reader.

Hashing a model file reads all of it (gigabytes), so it happens once per file: the result is cached by path,
size and mtime in `<config-dir>/state/model_files.json`, and the serving agent runs it in a thread
(node_agent/server.py), never on the event loop. For ollama the file is a blob named by its digest: the manifest
gives the sha256 (ollama checks it when it pulls), so nothing is hashed.

Where the file is: `--model-file PATH` (the operator's word) first; else llama.cpp's `GET /props` `model_path`, or
a `/v1/models` id that is a path to a file; for ollama, the model layer of its manifest under `--ollama-models`
(default $OLLAMA_MODELS or ~/.ollama/models)."""

import asyncio
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

log = logging.getLogger("luckrig.agent.identity")

CACHE_VERSION = 1
OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
CATALOG_FILE = Path(__file__).with_name("model_catalog.json")
_CHUNK = 4 * 1024 * 1024


@dataclass
class ModelFile:
    """One model file as the rig reports it (docs/api.md "Heartbeat", `model_identity`)."""

    sha256: str
    size: int
    source: str  # "file": hashed here; "ollama": the digest of ollama's manifest
    architecture: str | None = None
    parameters: int | None = None  # counted from the tensors
    size_label: str | None = None  # general.size_label, e.g. "135M"
    quantization: str | None = None  # from general.file_type, e.g. "Q4_1"
    context_length: int | None = None  # <architecture>.context_length: the context it was trained for
    tokenizer: str | None = None  # tokenizer.ggml.model, e.g. "gpt2" or "llama"
    chat_template_sha256: str | None = None

    def report(self, model: str) -> dict:
        """The heartbeat's `model_identity` object for the served `model`."""
        return {"model": model, **asdict(self)}


def default_ollama_models() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def cache_path(config_dir: str | Path) -> Path:
    return Path(config_dir) / "state" / "model_files.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def quantization_name(file_type: int | None) -> str | None:
    """general.file_type → the quantization's usual name ("Q4_1", "Q4_K_M", "F16"); None when unknown."""
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return None
    if name == "GUESSED":
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def read_header(path: Path) -> dict:
    """What the GGUF header says, by ModelFile's field names; ValueError when `path` is not a GGUF file."""
    from gguf import GGUFReader  # numpy comes with it: imported only when a file is read

    try:
        reader = GGUFReader(path)
    except OSError:
        raise
    except Exception as exc:  # the reader's errors on a damaged file are no documented set (struct, numpy, enum)
        raise ValueError(f"{path} is not a readable GGUF file ({exc})") from exc

    def value(key):
        field = reader.fields.get(key)
        if field is None or not field.types:
            return None
        try:
            return field.contents()
        except (ValueError, IndexError, UnicodeDecodeError):
            return None

    architecture = value("general.architecture")
    template = value("tokenizer.chat_template")
    context = value(f"{architecture}.context_length") if architecture else None
    file_type = value("general.file_type")
    return {
        "architecture": architecture if isinstance(architecture, str) else None,
        "parameters": sum(int(t.n_elements) for t in reader.tensors) or None,
        "size_label": value("general.size_label") if isinstance(value("general.size_label"), str) else None,
        "quantization": quantization_name(file_type) if isinstance(file_type, int) else None,
        "context_length": int(context) if isinstance(context, int) else None,
        "tokenizer": value("tokenizer.ggml.model") if isinstance(value("tokenizer.ggml.model"), str) else None,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None,
    }


class IdentityCache:
    """sha256 and header per file, kept while the file's path, size and mtime stay the same."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text())
            self.entries = data["files"] if data.get("version") == CACHE_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.entries = {}

    def identify(self, path: Path, *, digest: str | None = None) -> ModelFile:
        """The file at `path`, hashed (unless `digest` is its known sha256, as ollama's blobs are) and its header
        read, or taken from the cache. OSError when it cannot be read, ValueError when it is not GGUF."""
        path = path.resolve()
        stat = path.stat()
        key = str(path)
        cached = self.entries.get(key)
        same_file = cached and cached.get("size") == stat.st_size and cached.get("mtime_ns") == stat.st_mtime_ns
        if same_file and (digest is None or cached["identity"]["sha256"] == digest):
            # Where the digest came from is the caller's: a file hashed here may be an ollama blob's target too.
            return ModelFile(**{**cached["identity"], "source": "ollama" if digest else "file"})
        header = read_header(path)
        sha256 = digest or sha256_of(path)
        found = ModelFile(sha256=sha256, size=stat.st_size, source="ollama" if digest else "file", **header)
        self.entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "identity": asdict(found)}
        self._save()
        return found

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": self.entries}, indent=1))
        os.replace(tmp, self.path)


# --- ollama ----------------------------------------------------------------------------------------------------


def ollama_manifest_path(models_dir: Path, name: str) -> Path:
    """Where ollama keeps the manifest of `name` ("smollm2:135m", "user/model", "hf.co/org/repo:Q4_K_M")."""
    base, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:  # no tag (a registry's port is no tag either)
        base, tag = name, "latest"
    parts = base.split("/")
    if len(parts) == 1:
        parts = [OLLAMA_REGISTRY, "library", *parts]
    elif len(parts) == 2:
        parts = [OLLAMA_REGISTRY, *parts]
    return models_dir / "manifests" / Path(*parts) / tag


def ollama_model_blob(models_dir: Path, name: str) -> tuple[Path, str] | None:
    """The model layer's blob file and its sha256 (the manifest's digest) for the ollama model `name`."""
    try:
        manifest = json.loads(ollama_manifest_path(models_dir, name).read_text())
    except (OSError, ValueError):
        return None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        digest = layer.get("digest") if isinstance(layer, dict) else None
        if layer.get("mediaType") == OLLAMA_MODEL_LAYER and isinstance(digest, str) and digest.startswith("sha256:"):
            hex_digest = digest.removeprefix("sha256:")
            return models_dir / "blobs" / f"sha256-{hex_digest}", hex_digest
    return None


def ollama_models(models_dir: Path) -> list[str]:
    """Every model ollama has in `models_dir`, by the name ollama lists it under."""
    root = models_dir / "manifests"
    names = []
    for manifest in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []:
        parts = manifest.relative_to(root).parts
        if len(parts) < 3:
            continue
        host, *path, tag = parts
        if host != OLLAMA_REGISTRY:
            path = [host, *path]
        elif path[0] == "library":
            path = path[1:]
        names.append(f"{'/'.join(path)}:{tag}")
    return names


# --- where the served file is ----------------------------------------------------------------------------------


async def upstream_model_path(session: aiohttp.ClientSession, base_url: str) -> Path | None:
    """The file a llama.cpp server says it loaded: /props `model_path`, else a /v1/models id naming a file."""
    base = base_url.rstrip("/").removesuffix("/v1")
    found = []
    for url, pick in (
        (base + "/props", lambda doc: [doc.get("model_path")]),
        (base + "/v1/models", lambda doc: [m.get("id") for m in doc.get("data", []) if isinstance(m, dict)]),
    ):
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
                if resp.status == 200:
                    found += pick(await resp.json(content_type=None))
        except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError):
            continue
    for candidate in found:
        if isinstance(candidate, str) and candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


async def locate(
    session: aiohttp.ClientSession | None,
    *,
    backend: str,
    base_url: str,
    model: str,
    model_file: str = "",
    ollama_dir: str | Path = "",
) -> tuple[Path, str | None] | None:
    """The served model's file and, for ollama, its known digest; None when it cannot be found."""
    if model_file:
        return Path(model_file).expanduser(), None
    if backend == "ollama":
        return ollama_model_blob(Path(ollama_dir or default_ollama_models()).expanduser(), model)
    if session is not None and base_url:
        path = await upstream_model_path(session, base_url)
        if path is not None:
            return path, None
    return None


# --- the catalog -----------------------------------------------------------------------------------------------


def catalog_by_sha256(path: Path = CATALOG_FILE) -> dict[str, dict]:
    """The catalog's entries by sha256 (node_agent/model_catalog.json)."""
    try:
        models = json.loads(path.read_text()).get("models", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {m["sha256"]: m for m in models if isinstance(m, dict) and isinstance(m.get("sha256"), str)}


async def identify_served(session: aiohttp.ClientSession, cfg, *, backend: str, model: str, served: str) -> dict | None:
    """The identity report of the file behind `model` as the agent `cfg` serves it (named `served` to tasters):
    located (--model-file, ollama's manifest, or the model server's own answer), then hashed and read in a thread
    with the cache. None, said in the log, when the file cannot be found or read."""
    try:
        found = await locate(
            session,
            backend=backend,
            base_url=cfg.upstream,
            model=model,
            model_file=cfg.model_file,
            ollama_dir=cfg.ollama_models,
        )
        if found is None:
            log.info("the served model's file was not found: no model identity (see --model-file)")
            return None
        cache = IdentityCache(cache_path(cfg.config_dir))
        identity = await asyncio.to_thread(cache.identify, found[0], digest=found[1])
    except (OSError, ValueError) as exc:
        log.warning("the served model's file could not be read: %s", exc)
        return None
    log.info("model file %s: sha256 %s, %s", found[0].name, identity.sha256[:12], identity.quantization)
    return identity.report(served)
