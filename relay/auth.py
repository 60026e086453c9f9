"""Offline checks at the relay, with the tracker's published keys (pinned EdDSA, known kids only, typed tokens):
tunnel tickets from agents, and tasting tokens from tasters, refused early with the agent's own codes so that a
forged or expired token never crosses a tunnel."""

from dataclasses import dataclass

from node_agent import auth as agent_auth
from node_agent.errors import AgentError

TICKET_TYPE = "luckrig-tunnel+jwt"


@dataclass(frozen=True)
class Ticket:
    node_id: str
    jti: str
    exp: int


class Keys:
    """The tracker's keys, swapped whole when refreshed (readers never see a half-built set)."""

    def __init__(self, issuer: str):
        self.issuer = issuer.rstrip("/")
        self.keys: dict = {}
        self.tokens = agent_auth.TokenVerifier(node_id="", issuer=self.issuer, keys={})

    def set(self, keys: dict) -> None:
        self.keys = keys
        self.tokens = agent_auth.TokenVerifier(node_id="", issuer=self.issuer, keys=keys)

    def ticket(self, authorization: str | None, relay_id: str) -> Ticket:
        """A tunnel ticket's node, or AgentError 401 (forged, expired, garbage, or for another relay)."""
        token = agent_auth.bearer(authorization, "tunnel ticket")
        claims = agent_auth.decode(token, self.keys, issuer=self.issuer, typ=TICKET_TYPE, what="tunnel ticket")
        if claims.get("aud") != relay_id:
            raise AgentError(401, "wrong_relay", "This tunnel ticket is for another relay.")
        node_id = claims.get("sub")
        if not isinstance(node_id, str) or not node_id or len(node_id) > 64:
            raise AgentError(401, "invalid_token", "The tunnel ticket names no node.")
        return Ticket(node_id=node_id, jti=str(claims["jti"]), exp=int(claims["exp"]))

    def tasting(self, authorization: str | None, node_id: str) -> agent_auth.Claims:
        return self.tokens.verify(authorization, node_id=node_id)
