"""`luckrig-node models`: the model files on this machine with their identity (node_agent/model_identity.py):
ollama's models (its manifests), the .gguf files in the models folder `luckrig-node pull` downloads into, the
file `--model-file` or agent.json names, and the file the llama.cpp server says it loaded. A file is hashed the
first time only (the cache in <config-dir>/state/model_files.json). With a tracker (and a rig not pinned local), it
ends with the tracker's wanted models this machine does not have (node_agent/wanted.py); nothing is pulled."""

import asyncio
import sys
from pathlib import Path

import aiohttp

from node_agent import config, model_identity, pull, wanted


def found_files(cfg: config.AgentConfig, models_dir: Path) -> list[tuple[str, Path, str | None]]:
    """(name, file, known sha256 or None) for every model found."""
    found = []
    if cfg.model_file:
        path = Path(cfg.model_file).expanduser()
        found.append((cfg.model or path.name, path, None))
    pulled = sorted(models_dir.glob("*.gguf")) if models_dir.is_dir() else []
    found += [(path.name, path, None) for path in pulled if path.resolve() != Path(cfg.model_file or "").resolve()]
    ollama_dir = Path(cfg.ollama_models or model_identity.default_ollama_models()).expanduser()
    for name in model_identity.ollama_models(ollama_dir):
        blob = model_identity.ollama_model_blob(ollama_dir, name)
        if blob is not None:
            found.append((name, *blob))
    if cfg.upstream and cfg.backend != "ollama":

        async def ask():
            async with aiohttp.ClientSession(trust_env=False) as session:
                return await model_identity.upstream_model_path(session, cfg.upstream)

        path = asyncio.run(ask())
        if path is not None and all(path.resolve() != f.resolve() for _, f, _ in found):
            found.append((cfg.model or path.name, path, None))
    return found


def size_label(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def run(args) -> int:
    cfg = config.resolve(
        {
            "config_dir": args.config_dir,
            "model_file": args.model_file,
            "ollama_models": args.ollama_models,
            "upstream": args.upstream,
            "tracker": args.tracker,
        }
    )
    files = found_files(cfg, Path(args.models_dir or pull.default_models_dir()).expanduser())
    present: set[str] = set()
    code = list_files(cfg, files, present) if files else 1
    if not files:
        print(
            "No model files found: name one with --model-file PATH, or point --ollama-models at ollama's models "
            "folder, --models-dir at a folder of .gguf files, or --upstream at a llama.cpp server that reports its "
            "model_path",
            file=sys.stderr,
        )
    # A local rig never speaks to a tracker (docs/local-mode.md): no suggestions for it.
    if cfg.tracker and not cfg.local and not args.no_wanted:
        known = {n.lower() for e in pull.load_catalog() for n in [e["name"], *e.get("aliases", [])]}
        print("\n".join(wanted.section(cfg.tracker, present, known)))
    return code


def list_files(cfg: config.AgentConfig, files: list, present: set[str]) -> int:
    """Print each file's identity; the sha256 of every file read goes into `present`. 1 when none could be read."""
    cache = model_identity.IdentityCache(model_identity.cache_path(cfg.config_dir))
    catalog = model_identity.catalog_by_sha256()
    failed = 0
    for name, path, digest in files:
        try:
            identity = cache.identify(path, digest=digest)
        except (OSError, ValueError) as exc:
            print(f"{name}\n  file:    {path}\n  unreadable: {exc}\n")
            failed += 1
            continue
        present.add(identity.sha256)
        entry = catalog.get(identity.sha256)
        context = f"{identity.context_length:,} (trained)" if identity.context_length else "not stated"
        print(
            f"{name}\n"
            f"  file:          {path} ({size_label(identity.size)})\n"
            f"  model:         {identity.architecture or '?'}, {identity.size_label or identity.parameters or '?'}"
            f" parameters, quantization {identity.quantization or 'not stated'}\n"
            f"  context:       {context}\n"
            f"  sha256:        {identity.sha256[:16]}…"
            + (" (from ollama's manifest)" if identity.source == "ollama" else "")
            + "\n"
            + (f"  catalog:       matches catalog {entry['name']}\n" if entry else "")
        )
    return 1 if failed == len(files) else 0
