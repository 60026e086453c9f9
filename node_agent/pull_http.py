"""The download half of `luckrig-node pull` (node_agent/pull.py): a model file fetched into the models folder,
resumable, hashed while written, checked, then renamed. What it checks and why is said in pull.py's docstring;
this module holds the HTTP and the disk: redirects followed by hand so every hop is checked, `<file>.part` resumed
with a Range request, the free-space check, the progress line."""

import hashlib
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from node_agent.addresses import BlockedAddress, PublicOnlyResolver

CHUNK = 1 << 20
MAX_REDIRECTS = 8


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
    catalog_name: str | None = None  # the catalog entry the expected sha256 comes from, if it comes from one


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


class Downloader:
    """Puller's download methods (node_agent/pull.py mixes them in): they use its `models_dir`, `allow_private`,
    `out`, `say` and `check_url`."""

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
            raise PullError(f"could not reach {urlsplit(target.url).hostname}: {reason(exc)}") from exc
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
                    f"the download stopped at {done} of {total or '?'} bytes ({reason(exc)}); "
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


def reason(exc: BaseException) -> str:
    """What went wrong, in words: aiohttp wraps the resolver's refusal (BlockedAddress) in a connection error
    whose own text does not say why."""
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, BlockedAddress):
        return str(os_error)
    return str(exc) or type(exc).__name__
