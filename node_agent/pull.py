"""`luckrig-node pull REF`: fetch a model onto this machine, and check it is the file that was meant.

REF is a short name from the catalog (node_agent/model_catalog.json: its `name` or one of its `aliases`), a
Hugging Face repository and quantization (`hf.co/<owner>/<repo>:<quant>`), or an https URL of a `.gguf` file.

With an ollama rig, ollama does the fetching (`POST /api/pull`, its progress shown): ollama pulls from its own
library or from Hugging Face by `hf.co/...` names, so a short name becomes the `hf.co/<repo>:<quant>` of the file
the catalog names, and a plain URL is refused; once ollama has it, the model layer of ollama's manifest is
compared with the catalog's sha256 (node_agent/pull_ollama.py). Otherwise (llama.cpp, or no rig yet) the file is
downloaded into the models folder: into `<file>.part`, resumed with an HTTP Range request when a `.part` is already
there, hashed while it is written (a resume first re-hashes the part it keeps), checked against the expected sha256
and size, and only then renamed to its name, so that a llama.cpp pointed at the folder never loads a partial or a
wrong file.

Where it may download from: https only, from huggingface.co, hf.co, the hosts of the catalog's URLs and the hosts
the operator adds (`--allow-host`); a redirect from such a host is followed (Hugging Face hands its files to a CDN
on other names), still https only; and never from a private, loopback or link-local address
(node_agent/addresses.py), on every hop. `--allow-http` and `--allow-private` lift the last two for a models
mirror on the operator's own network, and for the tests. Only the owner pulls: nothing here is started by the
tracker (which may suggest a model: `luckrig-node models` lists its wanted ones, never pulls them).

The download is node_agent/pull_http.py, ollama's pull node_agent/pull_ollama.py; this module resolves REF."""

import asyncio
import json
import os
import re
import shutil  # noqa: F401 (pull.shutil is the module pull_http's free-space check reads; tests patch it here)
import sys
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from node_agent import config, model_identity
from node_agent.addresses import url_allowed
from node_agent.pull_http import Downloader, Progress, PullError, Target, reason
from node_agent.pull_ollama import OllamaPull

__all__ = ["Progress", "PullError", "Puller", "Target", "pull"]

CATALOG_FILE = Path(__file__).with_name("model_catalog.json")
HUGGING_FACE = "https://huggingface.co"
DEFAULT_HOSTS = frozenset({"huggingface.co", "hf.co"})
DEFAULT_QUANT = "Q4_K_M"  # what ollama picks for an hf.co name without a tag; the same here
_HF_REF = re.compile(r"^(?:hf\.co|huggingface\.co)/([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w.-]+))?$")
_SPLIT_FILE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)  # one shard of a split model
_SAFE_NAME = re.compile(r"^[\w][\w.+-]*\.gguf$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def default_models_dir() -> Path:
    return Path(os.environ.get(config.ENV_PREFIX + "MODELS_DIR") or Path.home() / ".luckrig" / "models")


def load_catalog(path: Path | None = None) -> list[dict]:
    return json.loads((path or CATALOG_FILE).read_text())["models"]


def find_in_catalog(models: list[dict], name: str) -> dict | None:
    """The entry whose name or alias is `name` (case-insensitively: ollama's names are lowercase, people's not)."""
    wanted = name.strip().lower()
    for entry in models:
        if wanted in [n.lower() for n in [entry["name"], *entry.get("aliases", [])]]:
            return entry
    return None


def _hf_repo_of(url: str) -> str | None:
    """`owner/repo` of a huggingface.co/<owner>/<repo>/resolve/... URL."""
    parts = urlsplit(url)
    segments = parts.path.strip("/").split("/")
    if parts.hostname in DEFAULT_HOSTS and len(segments) >= 4 and segments[2] == "resolve":
        return f"{segments[0]}/{segments[1]}"
    return None


def _ollama_name(entry: dict) -> str | None:
    """The hf.co name ollama pulls a catalog entry's file by (lowercase, for comparing), if it has one."""
    repo = _hf_repo_of(entry.get("url") or "")
    return f"hf.co/{repo}:{entry['quantization']}".lower() if repo and entry.get("quantization") else None


def file_name_of(url: str, name: str | None = None) -> str:
    """The name the file gets in the models folder: the URL's last segment (or the catalog's `file`), which
    must be a plain .gguf name, never a path."""
    name = name or unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    if not _SAFE_NAME.match(name):
        raise PullError(f"{url} does not name a .gguf file (letters, digits, '.', '_', '+' and '-' only)")
    return name


def _size(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def choose_file(siblings: list[dict], quant: str, repo: str) -> dict:
    """The repository's one .gguf file for `quant`: the file with a name part (between '.', '-' and '/') equal to
    it, else the one file whose name contains it, case-insensitively. Split models (-00001-of-00003) are not
    offered: llama.cpp needs all their shards, and this command fetches one file."""
    ggufs = [s for s in siblings if isinstance(s, dict) and str(s.get("rfilename", "")).lower().endswith(".gguf")]
    single = [s for s in ggufs if not _SPLIT_FILE.search(s["rfilename"])]
    q = quant.lower()
    exact = [s for s in single if q in re.split(r"[.\-/]", s["rfilename"].lower())]
    matches = exact or [s for s in single if q in s["rfilename"].lower()]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(s["rfilename"] for s in (matches or single)) or "none"
    if matches:
        raise PullError(f"several files of {repo} match {quant}: {names}; give the URL of the one you want")
    if ggufs and not single:
        raise PullError(f"{repo} offers {quant} only as a split model ({len(ggufs)} files); pull cannot fetch those")
    raise PullError(f"{repo} has no .gguf file for {quant}; its .gguf files: {names}")


class Puller(Downloader, OllamaPull):
    """Resolves a REF and fetches it; every failure is a PullError whose text the command prints."""

    def __init__(
        self,
        *,
        models_dir: Path,
        catalog: list[dict],
        allow_hosts: frozenset[str] = frozenset(),
        allow_http: bool = False,
        allow_private: bool = False,
        hf_endpoint: str = HUGGING_FACE,
        out=None,
    ):
        self.models_dir = models_dir
        self.catalog = catalog
        self.allow_http, self.allow_private = allow_http, allow_private
        self.hf_endpoint = hf_endpoint.rstrip("/")
        catalog_hosts = {urlsplit(e["url"]).hostname for e in catalog if e.get("url")}
        endpoint_host = urlsplit(self.hf_endpoint).hostname  # the operator's choice (HF_ENDPOINT), like a flag
        self.allowed_hosts = DEFAULT_HOSTS | catalog_hosts | {h.lower() for h in allow_hosts} | {endpoint_host}
        self.out = out or sys.stdout

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # Where a REF points.

    def check_url(self, url: str, *, first: bool) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (self.allow_http and parts.scheme == "http"):
            raise PullError(f"{url}: only https downloads are allowed (--allow-http for a mirror on your network)")
        if first and (parts.hostname or "").lower() not in self.allowed_hosts:
            hosts = ", ".join(sorted(h for h in self.allowed_hosts if h))
            raise PullError(f"{parts.hostname} is not an allowed host ({hosts}); add it with --allow-host HOST")
        if not url_allowed(url, allow_private=self.allow_private):
            raise PullError(f"{url}: a private, loopback or link-local address (--allow-private to allow it)")

    async def resolve(self, ref: str, session: aiohttp.ClientSession | None, sha256: str | None = None) -> Target:
        """The file REF names. `session` is only used for an hf.co REF (to list the repository's files); ollama,
        which takes hf.co names itself, passes None and gets a Target with only `ollama_name`, `sha256` (from --sha256
        or the catalog entry of the same hf.co name) and `catalog_name` meaningful."""
        if ref.startswith(("https://", "http://")):
            self.check_url(ref, first=True)
            entry = next((e for e in self.catalog if e.get("url") == ref), None)
            return Target(
                url=ref,
                file=file_name_of(ref),
                sha256=sha256 or (entry or {}).get("sha256"),
                size=_size((entry or {}).get("size")),
                ollama_name=None,
            )
        if hf := _HF_REF.match(ref):
            repo, quant = hf.group(1), hf.group(2) or DEFAULT_QUANT
            if session is None:
                # ollama takes the name as it is; the catalog entry of the same file (if any) says what to expect.
                name = f"hf.co/{repo}:{quant}"
                entry = None if sha256 else next((e for e in self.catalog if _ollama_name(e) == name.lower()), None)
                return Target(
                    url="",
                    file="",
                    sha256=sha256 or (entry or {}).get("sha256"),
                    size=None,
                    ollama_name=name,
                    catalog_name=(entry or {}).get("name"),
                )
            return await self.resolve_hf(session, repo, quant, sha256)
        entry = find_in_catalog(self.catalog, ref)
        if entry is None:
            known = "; ".join(
                e["name"] + (f" (also {', '.join(e['aliases'])})" if e.get("aliases") else "") for e in self.catalog
            )
            raise PullError(
                f"{ref!r} is not a model the catalog knows (it knows: {known or 'nothing'}); "
                "give hf.co/<owner>/<repo>:<quant> or an https URL of a .gguf file instead"
            )
        self.check_url(entry["url"], first=True)
        name = _ollama_name(entry)
        return Target(
            url=entry["url"],
            file=file_name_of(entry["url"], entry.get("file")),
            sha256=entry.get("sha256"),
            size=_size(entry.get("size")),
            ollama_name=f"hf.co/{_hf_repo_of(entry['url'])}:{entry['quantization']}" if name else None,
            catalog_name=entry["name"],
        )

    async def resolve_hf(self, session, repo: str, quant: str, sha256: str | None) -> Target:
        """Hugging Face's model API lists a repository's files with their LFS sha256 and size (`?blobs=true`) and
        the commit it describes: the file is fetched at that commit, so the hash it is checked against is the
        hash of the very file fetched. (That hash comes from the same host as the file: it catches a broken or
        cut download, not a host that lies.)"""
        api = f"{self.hf_endpoint}/api/models/{repo}?blobs=true"
        self.check_url(api, first=True)
        try:
            async with session.get(api, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise PullError(f"Hugging Face answered HTTP {resp.status} for {repo}: is the repository right?")
                info = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise PullError(f"could not list the files of {repo} on Hugging Face: {reason(exc)}") from exc
        if not isinstance(info, dict) or not isinstance(info.get("siblings"), list):
            raise PullError(f"Hugging Face's answer for {repo} lists no files")
        chosen = choose_file(info["siblings"], quant, repo)
        lfs = chosen.get("lfs") if isinstance(chosen.get("lfs"), dict) else {}
        revision = info["sha"] if re.fullmatch(r"[0-9a-f]{40}", str(info.get("sha"))) else "main"
        url = f"{self.hf_endpoint}/{repo}/resolve/{revision}/{quote(chosen['rfilename'])}"
        return Target(
            url=url,
            file=file_name_of(url),
            sha256=sha256 or lfs.get("sha256"),
            size=_size(lfs.get("size")) or _size(chosen.get("size")),
            ollama_name=f"hf.co/{repo}:{quant}",
        )


async def which_backend(args) -> tuple[str, str]:
    """("ollama", its URL) when the rig is an ollama (the flag, else the saved config, else detected at the
    saved upstream), else ("files", "")."""
    from node_agent import upstream

    cfg = config.resolve({"config_dir": args.config_dir, "upstream": args.upstream})
    backend = args.backend or cfg.backend
    if backend == "ollama":
        if not cfg.upstream:
            raise PullError("--backend ollama needs --upstream URL (ollama's, e.g. http://127.0.0.1:11434)")
        return "ollama", cfg.upstream.rstrip("/").removesuffix("/v1")
    if backend or not cfg.upstream:
        return "files", ""
    async with aiohttp.ClientSession() as session:
        found = await upstream.detect(session, cfg.upstream)
    return ("ollama", found.base_url) if found and found.backend == "ollama" else ("files", "")


def ollama_models_dir(args) -> Path:
    """ollama's models folder: --ollama-models, else the saved config's (or LUCKRIG_AGENT_OLLAMA_MODELS), else
    $OLLAMA_MODELS or ~/.ollama/models."""
    cfg = config.resolve({"config_dir": args.config_dir, "ollama_models": args.ollama_models})
    return Path(cfg.ollama_models or model_identity.default_ollama_models()).expanduser()


async def _pull(args, out) -> int:
    if args.sha256 and not _SHA256.match(args.sha256.lower()):
        raise PullError("--sha256 takes 64 hexadecimal digits")
    puller = Puller(
        models_dir=Path(args.models_dir).expanduser() if args.models_dir else default_models_dir(),
        catalog=load_catalog(Path(args.catalog) if args.catalog else None),
        allow_hosts=frozenset(args.allow_host or ()),
        allow_http=args.allow_http,
        allow_private=args.allow_private,
        hf_endpoint=os.environ.get("HF_ENDPOINT") or HUGGING_FACE,
        out=out,
    )
    backend, base = await which_backend(args)
    if backend == "ollama":
        target = await puller.resolve(args.ref, None, args.sha256)
        if not target.ollama_name:
            raise PullError(
                "ollama pulls from its library or by hf.co/<owner>/<repo>:<quant> names, not from a URL; "
                "use --backend files to download the file into the models folder"
            )
        puller.say(f"Pulling {target.ollama_name} through ollama at {base}")
        await puller.ollama_pull(base, target.ollama_name)
        if target.sha256 and not args.no_verify:
            puller.verify_ollama_model(ollama_models_dir(args), target)
        elif not args.no_verify:
            puller.say("No expected sha256 for this model (give one with --sha256): ollama's own digest check only")
        return 0
    async with puller.session() as session:
        target = await puller.resolve(args.ref, session, args.sha256)
    puller.say(f"Downloading {target.url} into {puller.models_dir}")
    await puller.download(target)
    return 0


def pull(args, out=None) -> int:
    try:
        return asyncio.run(_pull(args, out or sys.stdout))
    except PullError as exc:
        print(f"luckrig-node pull: {exc}", file=sys.stderr)
        return 1
