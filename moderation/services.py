"""The moderators' workflows. Each takes the moderator and a reason, writes its effect onto the owning rows,
and appends one ModerationAction. The admin actions and the management commands both call these."""

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.clientip import hash_ip
from moderation import addresses
from moderation.models import AbuseReport, FilterRule, ModerationAction, ModerationFlag
from nodes import queue_feed
from nodes import services as node_services
from nodes.models import Contributor, Node
from tracker import agent_link, bans, scoring
from tracker.models import Ban, Counter, TastingToken


class UnknownSubject(ValueError):
    """The node, contributor or report does not exist."""


@dataclass(frozen=True)
class Moderator:
    """Who decided: a staff user in the admin, or an operator's name on the command line."""

    user: object | None
    name: str

    @classmethod
    def of(cls, user) -> "Moderator":
        return cls(user, user.get_username())


def record(
    moderator: Moderator, action: str, kind: str, subject: str, reason: str, *, report=None, **details
) -> ModerationAction:
    if not reason or not reason.strip():
        raise ValueError("a reason is required")
    return ModerationAction.objects.create(
        moderator=moderator.user,
        moderator_name=moderator.name[:150],
        action=action,
        subject_kind=kind,
        subject_id=str(subject)[:200],
        reason=reason.strip(),
        details=details,
        report=report,
    )


def file_report(report: dict, *, reporter_hash: str) -> AbuseReport:
    """A validated report (AbuseReportIn) arrives as an open report for a person to review; it changes nothing
    by itself. The API and the website's report form both come through here."""
    return AbuseReport.objects.create(
        subject_kind=report["subject_kind"],
        subject_id=report.get("subject_id", ""),
        reason=report["reason"],
        evidence=report.get("evidence", ""),
        reporter_hash=reporter_hash,
    )


def _resolve_report(report: AbuseReport | None, state: str) -> None:
    if report is not None:
        AbuseReport.objects.filter(pk=report.pk).update(state=state, updated_at=timezone.now())


def get_node(node_id: str) -> Node:
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        raise UnknownSubject(f"no node {node_id!r}")
    return node


def get_contributor(value: str) -> Contributor:
    contributor = Contributor.objects.filter(pk=value).first() or Contributor.objects.filter(handle=value).first()
    if contributor is None:
        raise UnknownSubject(f"no contributor {value!r} (give an id or a handle)")
    return contributor


def _relist(node: Node) -> None:
    """A node left or rejoined the public surfaces: rarity of its combination, scores, showcase."""
    scoring.refresh_listing({node.combo_key})
    scoring.refresh_contributors({node.owner_id})


def _revoke(node: Node) -> int:
    """Revoke the node's outstanding tokens and, once committed, push the jtis down its agent link (the agent
    also finds them in its next heartbeat answer)."""
    now = timezone.now()
    outstanding = TastingToken.objects.filter(node=node, revoked_at__isnull=True, expires_at__gt=now)
    jtis = list(outstanding.values_list("jti", flat=True)[:1000])
    revoked = outstanding.update(revoked_at=now)
    if jtis:
        transaction.on_commit(lambda: agent_link.push(node.pk, {"type": "revoke", "jtis": jtis}))
    return revoked


def _gone(node: Node) -> None:
    """The node left the public surfaces: close its queue subscribers once this is committed."""
    transaction.on_commit(lambda: queue_feed.announce_removal(node.pk))


@transaction.atomic
def take_down(*, node: Node, moderator: Moderator, reason: str, report: AbuseReport | None = None):
    """Notice and takedown: the node disappears from every public surface and its tokens stop working."""
    node_services.set_taken_down(node, timezone.now())
    revoked = _revoke(node)
    _relist(node)
    _gone(node)
    _resolve_report(report, AbuseReport.State.ACTIONED)
    return record(
        moderator, ModerationAction.Action.TAKE_DOWN, "node", node.pk, reason, report=report, tokens_revoked=revoked
    )


@transaction.atomic
def restore(*, node: Node, moderator: Moderator, reason: str):
    node_services.set_taken_down(node, None)
    _relist(node)
    return record(moderator, ModerationAction.Action.RESTORE, "node", node.pk, reason)


@transaction.atomic
def revoke_tokens(*, node: Node, moderator: Moderator, reason: str, report: AbuseReport | None = None):
    """Revoke the node's outstanding tasting tokens; its agent learns the jtis with its next heartbeat."""
    revoked = _revoke(node)
    _resolve_report(report, AbuseReport.State.ACTIONED)
    return record(
        moderator, ModerationAction.Action.REVOKE_TOKENS, "node", node.pk, reason, report=report, tokens_revoked=revoked
    )


def subject_value(kind: str, value: str, *, hashed: bool = False) -> str:
    """The stored form of a ban subject: node and contributor ids as they are, an IP address as its keyed hash
    (raw IPs are never stored). Raises UnknownSubject for a node or contributor that does not exist.

    For `ip` there are two ways in. An operator names an address (`manage.py ban ip 203.0.113.7`) and it is
    hashed here; a value that already is an IP hash is kept as it is (the Replay admin passes the stored hash
    this way). A caller holding a stored hash (the flag admin) says so with `hashed=True`: then only a hash is
    accepted, and anything else (a raw address passed by mistake in particular) is refused, never stored."""
    if hashed and kind != Ban.Kind.IP:
        raise UnknownSubject(f"only an ip ban takes a hash, not a {kind} ban")
    if kind == Ban.Kind.NODE:
        return get_node(value).pk
    if kind == Ban.Kind.CONTRIBUTOR:
        return get_contributor(value).pk
    if kind == Ban.Kind.IP:
        if addresses.is_ip_hash(value):
            return value
        if hashed:
            raise UnknownSubject("expected a stored IP hash; a raw address is never stored unhashed")
        try:
            return hash_ip(str(ipaddress.ip_address(value.strip())))
        except ValueError:
            raise UnknownSubject(f"{value!r} is neither an IP address nor an IP hash") from None
    raise UnknownSubject(f"unknown ban kind {kind!r} (node, contributor or ip)")


def shown_subject(kind: str, stored: str) -> str:
    """A ban subject as the audit log and the admin show it: an IP hash only as its label."""
    return addresses.address_label(stored) if kind == Ban.Kind.IP else stored


@transaction.atomic
def ban(
    *,
    kind: str,
    value: str,
    moderator: Moderator,
    reason: str,
    days: int | None = None,
    report: AbuseReport | None = None,
    hashed: bool = False,
    context: dict | None = None,
):
    """Ban a node, a contributor or an address for `days` days, or for good when `days` is None. `value` is a
    node id, a contributor id or handle, or an IP address (an IP hash with `hashed=True`; see subject_value).
    `context` (e.g. the flag that led here) goes into the audit row's details.

    A node ban revokes the node's outstanding tokens, as a takedown does: the node is gone from every surface,
    and tokens for it must stop working on its agent too."""
    if days is not None and days < 1:
        raise ValueError("days must be at least 1 (or omitted for a ban for good)")
    stored = subject_value(kind, value, hashed=hashed)
    if not reason or not reason.strip():
        raise ValueError("a reason is required")
    expires = timezone.now() + timedelta(days=days) if days else None
    Ban.objects.create(kind=kind, value=stored, reason=reason.strip(), expires_at=expires)
    details = {**(context or {}), "days": days}
    if kind == Ban.Kind.NODE:
        node = Node.objects.get(pk=stored)
        bans.refresh_node_ban(node.pk)
        details["tokens_revoked"] = _revoke(node)
        _relist(node)
        _gone(node)
    elif kind == Ban.Kind.CONTRIBUTOR:
        # Access control is tracker's: the contributor's nodes leave every surface, their tokens stop working.
        details["tokens_revoked"] = bans.apply_contributor_ban(stored)
    _resolve_report(report, AbuseReport.State.ACTIONED)
    return record(
        moderator, ModerationAction.Action.BAN, kind, shown_subject(kind, stored), reason, report=report, **details
    )


@transaction.atomic
def unban(*, kind: str, value: str, moderator: Moderator, reason: str, hashed: bool = False):
    """Lift every active ban on the subject (`value` and `hashed` as for ban)."""
    stored = subject_value(kind, value, hashed=hashed)
    now = timezone.now()
    lifted = Ban.objects.filter(kind=kind, value=stored, lifted_at__isnull=True).update(lifted_at=now)
    if kind == Ban.Kind.NODE:
        bans.refresh_node_ban(stored)
        _relist(Node.objects.get(pk=stored))
    elif kind == Ban.Kind.CONTRIBUTOR:
        bans.reconcile(now)  # their nodes come back at once, not at the next monitor cycle
    return record(
        moderator, ModerationAction.Action.UNBAN, kind, shown_subject(kind, stored), reason, bans_lifted=lifted
    )


def flagged_token(flag: ModerationFlag) -> TastingToken:
    """The token a flag is about: the jti must be one this tracker issued for the flag's node (an agent could
    report any jti; a stranger's token is never taken for the flagged one)."""
    token = TastingToken.objects.filter(jti=flag.jti, node_id=flag.node_id).only("contributor_id", "ip_hash").first()
    if token is None:
        raise UnknownSubject("this tracker issued no token with that jti for that node: there is no holder to ban")
    return token


def ban_flagged(
    *, flag: ModerationFlag, moderator: Moderator, reason: str, days: int | None = None, address: bool = False
):
    """Ban whoever held the flagged token: the contributor when there was one, else the address it was issued
    to. With `address=True`, the address in any case (it also stops new contributor keys from there)."""
    token = flagged_token(flag)
    context = {"flag_id": flag.pk, "jti": flag.jti}
    if token.contributor_id and not address:
        return ban(
            kind=Ban.Kind.CONTRIBUTOR,
            value=token.contributor_id,
            moderator=moderator,
            reason=reason,
            days=days,
            context=context,
        )
    return ban(
        kind=Ban.Kind.IP,
        value=token.ip_hash,
        hashed=True,
        moderator=moderator,
        reason=reason,
        days=days,
        context=context,
    )


@transaction.atomic
def set_report_state(*, report: AbuseReport, state: str, moderator: Moderator, reason: str):
    _resolve_report(report, state)
    action = ModerationAction.Action.DISMISS if state == AbuseReport.State.DISMISSED else ModerationAction.Action.REVIEW
    return record(moderator, action, "report", report.pk, reason, report=report, state=state)


def publish_filter_rules() -> None:
    """Bump the filter-rules version: connected agents are told at once, the others see it in their next
    heartbeat answer; either way they fetch /api/filter-rules."""
    counter, _ = Counter.objects.get_or_create(name="filter_rules")
    Counter.objects.filter(pk=counter.pk).update(value=F("value") + 1)
    version = Counter.objects.get(pk=counter.pk).value
    transaction.on_commit(lambda: agent_link.push_to_all({"type": "filter_rules", "version": version}))


def _rule_state(rule: FilterRule) -> dict:
    return {**rule.as_wire(), "enabled": rule.enabled}


@transaction.atomic
def save_filter_rule(*, rule: FilterRule, moderator: Moderator, reason: str) -> ModerationAction:
    """Add or change a filter rule: validated as the agents will compile it, saved, published to the agents,
    and written to the audit log with the rule as it was (for a change) and as it is now."""
    if not reason or not reason.strip():
        raise ValueError("a reason is required")
    before = FilterRule.objects.filter(pk=rule.pk).first()
    rule.full_clean(validate_unique=before is None)
    rule.save()
    publish_filter_rules()
    action = ModerationAction.Action.ADD_RULE if before is None else ModerationAction.Action.CHANGE_RULE
    return record(
        moderator,
        action,
        "filter_rule",
        rule.pk,
        reason,
        before=_rule_state(before) if before else None,
        after=_rule_state(rule),
    )


@transaction.atomic
def delete_filter_rule(*, rule: FilterRule, moderator: Moderator, reason: str) -> ModerationAction:
    """Delete a filter rule; the audit row keeps what it was."""
    entry = record(
        moderator, ModerationAction.Action.DELETE_RULE, "filter_rule", rule.pk, reason, before=_rule_state(rule)
    )
    FilterRule.objects.filter(pk=rule.pk).delete()
    publish_filter_rules()
    return entry


def record_flag(*, node: Node, jti: str, stage: str, categories: list[str], mode: str) -> ModerationFlag:
    """An agent's moderation flag; linked to the token's holder when the jti is one issued for this node."""
    token = TastingToken.objects.filter(jti=jti, node=node).only("contributor_id").first()
    return ModerationFlag.objects.create(
        node=node,
        jti=jti,
        stage=stage,
        categories=categories,
        mode=mode,
        contributor_id=token.contributor_id if token else None,
    )
