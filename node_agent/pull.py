"""`luckrig-node pull REF`: fetch a model onto this machine, and check it is the file that was meant.

REF is a short name from the catalog (node_agent/model_catalog.json: its `name` or one of its `aliases`), a
Hugging Face repository and quantization (`hf.co/<owner>/<repo>:<quant>`), or an https URL of a `.gguf` file.

With an ollama rig, ollama does the fetching (`POST /api/pull`, its progress shown): ollama pulls from its own
library or from Hugging Face by `hf.co/...` names, so a short name becomes the `hf.co/<repo>:<quant>` of the file
the catalog names, and a plain URL is refused. Otherwise (llama.cpp, or no rig yet) the file is downloaded into the
models folder: into `<file>.part`, resumed with an HTTP Range request when a `.part` is already there, hashed while
it is written (a resume first re-hashes the part it keeps), checked against the expected sha256 and size, and only
then renamed to its name, so that a llama.cpp pointed at the folder never loads a partial or a wrong file.

Where it may download from: https only, from huggingface.co, hf.co, the hosts of the catalog's URLs and the hosts
the operator adds (`--allow-host`); a redirect from such a host is followed (Hugging Face hands its files to a CDN
on other names), still https only; and never from a private, loopback or link-local address
(node_agent/addresses.py), on every hop. `--allow-http` and `--allow-private` lift the last two for a models
mirror on the operator's own network, and for the tests. Only the owner pulls: nothing here is started by the
tracker."""

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import aiohttp

from node_agent import config
from node_agent.addresses import BlockedAddress, PublicOnlyResolver, url_allowed
from node_agent.terminal import printable

CATALOG_FILE = Path(__file__).with_name("model_catalog.json")
HUGGING_FACE = "https://huggingface.co"
DEFAULT_HOSTS = frozenset({"huggingface.co", "hf.co"})
DEFAULT_QUANT = "Q4_K_M"  # what ollama picks for an hf.co name without a tag; the same here
CHUNK = 1 << 20
MAX_REDIRECTS = 8
_HF_REF = re.compile(r"^(?:hf\.co|huggingface\.co)/([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w.-]+))?$")
_SPLIT_FILE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)  # one shard of a split model
_SAFE_NAME = re.compile(r"^[\w][\w.+-]*\.gguf$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PullError(Exception):
    """A sentence for the operator: the pull failed, and what to do about it."""


@dataclass
class Target:
    """One model file to fetch: where from, its name here, and what it must hash to (None: nothing to check)."""

    url: str
    file: str
    sha256: str | None
    size: int | None
    ollama_name: str | None  # the name ollama's /api/pull takes for the same file, when there is one


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


class Progress:
    """One line rewritten in place on a terminal; elsewhere (a log, a pipe) a plain line every tenth."""

    def __init__(self, label: str, total: int | None, done: int = 0, out=None):
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.label, self.total, self.start_done = label, total, done
        self.started, self.last_shown = time.monotonic(), float("-inf")
        self.last_tenth = -1
        self.show(done)

    def _line(self, done: int) -> str:
        rate = (done - self.start_done) / max(time.monotonic() - self.started, 1e-3) / 2**20
        if self.total:
            share = f"{done * 100 // self.total:3d}% {done / 2**20:.1f}/{self.total / 2**20:.1f} MiB"
            return f"{self.label}: {share} {rate:.1f} MiB/s"
        return f"{self.label}: {done / 2**20:.1f} MiB {rate:.1f} MiB/s"

    def show(self, done: int) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self.last_shown >= 0.1 or done == self.total:
                self.out.write("\r" + self._line(done) + "\x1b[K")
                self.out.flush()
                self.last_shown = now
            return
        tenth = done * 10 // self.total if self.total else done // (256 * 2**20)
        if tenth != self.last_tenth:
            print(self._line(done), file=self.out, flush=True)
            self.last_tenth = tenth

    def end(self) -> None:
        if self.tty:
            self.out.write("\n")


class Puller:
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
        which takes hf.co names itself, passes None and gets a Target with only `ollama_name` meaningful."""
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
                return Target(url="", file="", sha256=None, size=None, ollama_name=f"hf.co/{repo}:{quant}")
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
        repo = _hf_repo_of(entry["url"])
        self.check_url(entry["url"], first=True)
        return Target(
            url=entry["url"],
            file=file_name_of(entry["url"], entry.get("file")),
            sha256=entry.get("sha256"),
            size=_size(entry.get("size")),
            ollama_name=f"hf.co/{repo}:{entry['quantization']}" if repo and entry.get("quantization") else None,
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
            raise PullError(f"could not list the files of {repo} on Hugging Face: {_reason(exc)}") from exc
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

    # Downloading into the models folder.

    def session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(self.allow_private))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def get(self, session, url: str, headers: dict) -> aiohttp.ClientResponse:
        """GET, following redirects by hand so that every hop is checked (https, no private address)."""
        for _ in range(MAX_REDIRECTS):
            resp = await session.get(url, headers=headers, allow_redirects=False)
            if resp.status not in (301, 302, 303, 307, 308):
                return resp
            location = resp.headers.get("Location", "")
            resp.release()
            url = urljoin(url, location)
            self.check_url(url, first=False)
        raise PullError(f"more than {MAX_REDIRECTS} redirects from {url}")

    async def download(self, target: Target) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        dest = self.models_dir / target.file
        part = dest.with_name(dest.name + ".part")
        if dest.exists():
            return self.already_there(dest, target)
        done = part.stat().st_size if part.exists() else 0
        if target.size is not None and done > target.size:
            part.unlink()
            done = 0
        hasher = hashlib.sha256()
        if done:
            self.say(f"Resuming {part.name}: checking the {done / 2**20:.1f} MiB already downloaded")
            with part.open("rb") as fh:
                while block := fh.read(CHUNK):
                    hasher.update(block)
        if target.size is None or done < target.size:
            async with self.session() as session:
                done, hasher = await self.fetch(session, target, part, done, hasher)
        self.verify(target, part, done, hasher.hexdigest())
        os.replace(part, dest)
        self.say(f"Saved {dest} ({done} bytes, sha256 {hasher.hexdigest()})")
        return dest

    async def fetch(self, session, target: Target, part: Path, done: int, hasher) -> tuple[int, "hashlib._Hash"]:
        headers = {"Range": f"bytes={done}-"} if done else {}
        try:
            resp = await self.get(session, target.url, headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PullError(f"could not reach {urlsplit(target.url).hostname}: {_reason(exc)}") from exc
        async with resp:
            if done and resp.status == 200:  # the server ignored the Range: start again from the first byte
                self.say("The server cannot resume this download; starting again from the beginning")
                part.unlink()
                done, hasher = 0, hashlib.sha256()
            elif done and resp.status == 206:
                start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                if not start or int(start.group(1)) != done:
                    raise PullError(f"the server resumed at the wrong place ({resp.headers.get('Content-Range')})")
            elif resp.status != 200:
                raise PullError(f"{urlsplit(target.url).hostname} answered HTTP {resp.status} for {target.file}")
            total = done + resp.content_length if resp.content_length is not None else target.size
            if target.size is not None and total != target.size:
                raise PullError(
                    f"the server offers {total} bytes of {target.file}, not the {target.size} expected; not downloaded"
                )
            self.check_free_space(None if total is None else total - done)
            progress = Progress(target.file, total, done, self.out)
            try:
                with part.open("ab") as fh:
                    async for block in resp.content.iter_chunked(CHUNK):
                        if target.size is not None and done + len(block) > target.size:
                            raise PullError(f"the server sent more than the {target.size} bytes expected; stopped")
                        fh.write(block)
                        hasher.update(block)
                        done += len(block)
                        progress.show(done)
                    fh.flush()
                    os.fsync(fh.fileno())
            except (TimeoutError, aiohttp.ClientError) as exc:
                progress.end()
                raise PullError(
                    f"the download stopped at {done} of {total or '?'} bytes ({_reason(exc)}); "
                    f"{part} is kept: run the same command again to resume"
                ) from exc
            except OSError as exc:
                progress.end()
                raise PullError(
                    f"could not write {part} ({exc.strerror or exc}) at {done} bytes; it is kept: "
                    "free some space and run the same command again to resume"
                ) from exc
            progress.end()
        if total is not None and done < total:
            raise PullError(
                f"the download stopped at {done} of {total} bytes; {part} is kept: run the same command again to resume"
            )
        return done, hasher

    def check_free_space(self, needed: int | None) -> None:
        if needed is None:
            return
        free = shutil.disk_usage(self.models_dir).free
        if needed > free:
            raise PullError(
                f"not enough free space in {self.models_dir}: the download needs {needed / 2**20:.1f} MiB more and "
                f"{free / 2**20:.1f} MiB are free"
            )

    def verify(self, target: Target, part: Path, done: int, digest: str) -> None:
        """The last step before the file gets its name: a wrong file is deleted (downloading it again would give
        the same wrong bytes; a resume cannot mend it)."""
        if target.size is not None and done != target.size:
            part.unlink()
            raise PullError(f"{target.file} has {done} bytes, not the {target.size} expected: deleted, not used")
        if target.sha256 and digest != target.sha256.lower():
            part.unlink()
            raise PullError(
                f"{target.file} does not have the expected sha256 (got {digest}, expected {target.sha256}): "
                "the download was deleted and not used"
            )
        if not target.sha256:
            self.say("No expected sha256 for this file (give one with --sha256): its hash is printed, not checked")

    def already_there(self, dest: Path, target: Target) -> Path:
        hasher = hashlib.sha256()
        with dest.open("rb") as fh:
            while block := fh.read(CHUNK):
                hasher.update(block)
        if target.sha256 and hasher.hexdigest() != target.sha256.lower():
            raise PullError(f"{dest} exists but is not the expected file (sha256 {hasher.hexdigest()}); move it away")
        self.say(f"{dest} is already here (sha256 {hasher.hexdigest()})")
        return dest

    # Pulling through ollama.

    async def ollama_pull(self, base: str, name: str) -> None:
        """ollama's POST /api/pull streams one JSON object a line: `status`, and while a layer downloads its
        `digest`, `total` and `completed`; `{"error": ...}` when it fails, and `"success"` last. Its status
        texts come from the ollama being run (and, through it, a registry): printed without control characters."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None)  # verifying can be silent
        progress, digest, succeeded = None, None, False
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                async with session.post(f"{base.rstrip('/')}/api/pull", json={"model": name, "stream": True}) as resp:
                    if resp.status != 200:
                        body = await resp.text()
                        with contextlib.suppress(ValueError, AttributeError):
                            body = json.loads(body).get("error", body)
                        raise PullError(f"ollama refused to pull {name} (HTTP {resp.status}): {printable(body)[:300]}")
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if not isinstance(event, dict):
                            raise ValueError(line)
                        if "error" in event:
                            if progress:
                                progress.end()
                            raise PullError(f"ollama could not pull {name}: {printable(event['error'])[:300]}")
                        status = printable(event.get("status", ""))
                        if event.get("total") and event.get("digest"):
                            if event["digest"] != digest:
                                if progress:
                                    progress.end()
                                digest = event["digest"]
                                progress = Progress(f"ollama {printable(digest)[:19]}", event["total"], 0, self.out)
                            progress.show(event.get("completed") or 0)
                            continue
                        if progress:
                            progress.end()
                            progress, digest = None, None
                        self.say(f"ollama: {status}")
                        succeeded = succeeded or status == "success"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise PullError(f"could not reach ollama at {base}: {_reason(exc)}") from exc
            except ValueError as exc:
                raise PullError(f"ollama at {base} answered something that is not its pull progress") from exc
        if not succeeded:
            raise PullError(f"ollama's pull of {name} ended without saying success; run it again")
        self.say(f"ollama has {name}")


def _reason(exc: BaseException) -> str:
    """What went wrong, in words: aiohttp wraps the resolver's refusal (BlockedAddress) in a connection error
    whose own text does not say why."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, BlockedAddress):
        return str(os_error)
    return str(exc) or type(exc).__name__


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
