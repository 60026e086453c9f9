"""Durable local state: per-jti budgets (requests and output tokens) and the append-only usage log.

Budgets live in SQLite (stdlib) so that an agent restart cannot hand a token a fresh allowance. Usage goes to
an append-only JSON-lines file; the reporter sends everything past the last acknowledged offset, with a
report id derived from the byte range, so a retry after a crash is recognised by the tracker as the same
report and nothing is lost or counted twice."""

import json
import os
import sqlite3
import time
from pathlib import Path

# A budget row outlives its token by this long (the token check's clock leeway is far shorter), then it goes: without
# pruning the table gained a row per token for as long as the agent ran.
KEEP_EXPIRED_SEC = 3600
PRUNE_EVERY_SEC = 600


class Ledger:
    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(state_dir, 0o700)  # budgets, usage and cached keys are the operator's business only
        self.db = sqlite3.connect(state_dir / "budgets.sqlite3", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS budget (jti TEXT PRIMARY KEY, requests INTEGER NOT NULL, "
            "completion_tokens INTEGER NOT NULL, expires_at INTEGER NOT NULL)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS budget_expires ON budget (expires_at)")
        self._pruned_at = 0.0
        self.usage_path = state_dir / "usage.jsonl"
        self.acked_path = state_dir / "usage.acked"
        self.pending_path = state_dir / "usage.pending"
        self.usage_path.touch(mode=0o600, exist_ok=True)

    # --- budgets ----------------------------------------------------------------------------------------

    def claim_request(self, jti: str, max_requests: int, expires_at: int) -> bool:
        """Count one request against the token; False when its requests are used up (nothing is counted)."""
        if self.db.execute("INSERT OR IGNORE INTO budget VALUES (?, 0, 0, ?)", (jti, expires_at)).rowcount:
            self._prune_expired()
        cur = self.db.execute(
            "UPDATE budget SET requests = requests + 1 WHERE jti = ? AND requests < ?", (jti, max_requests)
        )
        return cur.rowcount == 1

    def release_request(self, jti: str) -> None:
        """Give back a request that never reached the model (refused by policy, queue full, upstream down)."""
        self.db.execute("UPDATE budget SET requests = requests - 1 WHERE jti = ? AND requests > 0", (jti,))

    def reserve_output_tokens(self, jti: str, wanted: int | None, *, budget: int, cap: int) -> int:
        """Set aside output for one request before it runs; returns how many tokens. A request takes what it asks
        for, but never more than the token's per-request cap (`auth.Claims.per_request_cap`), nor more than is left
        of its whole budget (`auth.Claims.output_budget`). Without the cap a request with no max_tokens took
        everything left, and the first ordinary answer of a "3 requests" token spent its whole budget. Read and
        update happen with no await in between, so concurrent requests of one token in this event loop can never
        reserve more than the budget together."""
        row = self.db.execute("SELECT completion_tokens FROM budget WHERE jti = ?", (jti,)).fetchone()
        left = max(0, budget - (row[0] if row else 0))
        reserved = min(cap if wanted is None else min(wanted, cap), left)
        if reserved > 0:
            self.db.execute(
                "UPDATE budget SET completion_tokens = completion_tokens + ? WHERE jti = ?", (reserved, jti)
            )
        return reserved

    def refund_output_tokens(self, jti: str, tokens: int) -> None:
        if tokens > 0:
            self.db.execute(
                "UPDATE budget SET completion_tokens = MAX(0, completion_tokens - ?) WHERE jti = ?", (tokens, jti)
            )

    def _prune_expired(self, now: float | None = None) -> None:
        """Forget the budgets of tokens that expired over an hour ago, at most every ten minutes (on a new token:
        an idle agent has nothing to prune)."""
        now = time.time() if now is None else now
        if now - self._pruned_at >= PRUNE_EVERY_SEC:
            self._pruned_at = now
            self.db.execute("DELETE FROM budget WHERE expires_at < ?", (int(now) - KEEP_EXPIRED_SEC,))

    # --- usage log --------------------------------------------------------------------------------------

    def append_usage(self, entry: dict) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.usage_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def acked_offset(self) -> int:
        try:
            return int(self.acked_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def pending_batch(self, limit: int = 500) -> tuple[str, int, list[dict]] | None:
        """(report_id, end, entries) of the next report. A batch, once formed, is saved with a random report
        id and resent unchanged until acknowledged: a retry after a lost answer is then recognised by the
        tracker as the same report (never counted twice), and new lines go into the next batch."""
        try:
            saved = json.loads(self.pending_path.read_text())
            start, end = self.acked_offset(), int(saved["end"])
            entries = self._read(start, end)
            return saved["report_id"], end, entries
        except (FileNotFoundError, ValueError, KeyError):
            pass
        start, end, entries = self.pending_usage(limit)
        if end == start:
            return None
        report_id = "u_" + os.urandom(12).hex()
        tmp = self.pending_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"report_id": report_id, "end": end}))
        os.replace(tmp, self.pending_path)
        return report_id, end, entries

    def _read(self, start: int, end: int) -> list[dict]:
        with open(self.usage_path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start)
        entries = []
        for raw in data.splitlines():
            try:
                entries.append(json.loads(raw))
            except ValueError:
                continue
        return entries

    def pending_usage(self, limit: int = 500) -> tuple[int, int, list[dict]]:
        """(start, end, entries): whole lines after the acknowledged offset, at most `limit` of them."""
        start = self.acked_offset()
        entries, end = [], start
        with open(self.usage_path, "rb") as fh:
            fh.seek(start)
            for raw in fh:
                if not raw.endswith(b"\n") or len(entries) >= limit:
                    break  # a half-written last line waits for the next round
                end += len(raw)
                try:
                    entries.append(json.loads(raw))
                except ValueError:
                    continue
        return start, end, entries

    def ack_usage(self, end: int) -> None:
        tmp = self.acked_path.with_suffix(".tmp")
        tmp.write_text(str(end))
        os.replace(tmp, self.acked_path)
        self.pending_path.unlink(missing_ok=True)

    def close(self) -> None:
        self.db.close()
