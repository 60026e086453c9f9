"""The agent's durable budgets (node_agent/ledger.py), in process: counting survives a restart, and the rows of
long-expired tokens are pruned (the table used to gain a row per token for as long as the agent ran)."""

import time

from node_agent import ledger as ledger_module
from node_agent.ledger import Ledger


def rows(book: Ledger) -> set[str]:
    return {jti for (jti,) in book.db.execute("SELECT jti FROM budget")}


def test_a_restarted_agent_does_not_hand_a_token_a_fresh_allowance(tmp_path):
    later = int(time.time()) + 900
    book = Ledger(tmp_path)
    assert book.claim_request("j1", 2, later)
    book.close()
    again = Ledger(tmp_path)
    assert again.claim_request("j1", 2, later)
    assert not again.claim_request("j1", 2, later)


def test_budgets_of_tokens_expired_over_an_hour_ago_are_pruned_when_a_new_token_arrives(tmp_path):
    now = int(time.time())
    book = Ledger(tmp_path)
    book.claim_request("live", 3, now + 900)  # the first new token prunes (nothing yet)
    book.claim_request("long-gone", 3, now - ledger_module.KEEP_EXPIRED_SEC - 5)
    book.claim_request("just-expired", 3, now - 60)
    assert rows(book) == {"long-gone", "just-expired", "live"}  # pruned at most every ten minutes: not yet

    book._pruned_at -= ledger_module.PRUNE_EVERY_SEC
    book.claim_request("live", 3, now + 900)  # a known token inserts nothing and prunes nothing
    assert "long-gone" in rows(book)
    book.claim_request("new", 3, now + 900)
    assert rows(book) == {"just-expired", "live", "new"}
    assert book.claim_request("live", 3, now + 900)  # the live token's count is intact: its third of three
    assert not book.claim_request("live", 3, now + 900)
