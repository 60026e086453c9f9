"""The writes onto circles, their members and their invites (issue 15): nodes owns these rows, tracker decides who
may do what (tracker.circle_services) and calls down into this. No access checks here; each function does what
it is told, in a bounded number of queries, and says when the database refused (a taken name, a second join).

Must not import tracker, moderation or showcase."""

import secrets
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F, Q

from nodes.models import Circle, CircleInvite, CircleMember, Contributor, Node


class NameTaken(Exception):
    """The owner already has a circle by that name."""


class InviteGone(Exception):
    """The invite is revoked, expired or used up (or was, by the time its use was to be taken)."""


class AlreadyMember(Exception):
    """The contributor is in the circle already."""


def new_circle_id() -> str:
    return "c_" + secrets.token_urlsafe(12)


def new_invite_id() -> str:
    return "inv_" + secrets.token_urlsafe(9)


@transaction.atomic
def create_circle(*, owner: Contributor, name: str, limits: dict | None = None) -> Circle:
    """A new circle with its owner's member row (role owner). Raises NameTaken."""
    fields = {f"default_{k}": v for k, v in (limits or {}).items()}
    try:
        with transaction.atomic():
            circle = Circle.objects.create(id=new_circle_id(), owner=owner, name=name, **fields)
    except IntegrityError:
        raise NameTaken(name) from None
    CircleMember.objects.create(circle=circle, contributor=owner, role=CircleMember.Role.OWNER)
    return circle


def change_circle(circle: Circle, *, name: str | None = None, limits: dict | None = None) -> Circle:
    """Rename the circle and/or change its default limits. Raises NameTaken."""
    changed = []
    if name is not None and name != circle.name:
        circle.name = name
        changed.append("name")
    for key, value in (limits or {}).items():
        setattr(circle, f"default_{key}", value)
        changed.append(f"default_{key}")
    if changed:
        try:
            with transaction.atomic():
                circle.save(update_fields=changed)
        except IntegrityError:
            raise NameTaken(name) from None
    return circle


@transaction.atomic
def delete_circle(circle: Circle) -> list[str]:
    """Delete the circle, its members and invites; the rigs it was shared with stay, no longer shared with it.
    Returns the ids of those rigs."""
    node_ids = list(circle.nodes.values_list("id", flat=True))
    circle.nodes.clear()
    circle.delete()
    return node_ids


def add_invite(
    *,
    circle: Circle,
    created_by: Contributor,
    code_hash: str,
    expires_at: datetime,
    max_uses: int | None,
    role: str,
    limits: dict | None,
) -> CircleInvite:
    limits = limits or {}
    return CircleInvite.objects.create(
        id=new_invite_id(),
        circle=circle,
        code_hash=code_hash,
        created_by=created_by,
        expires_at=expires_at,
        max_uses=max_uses,
        role=role,
        requests_per_day=limits.get("requests_per_day"),
        tokens_per_day=limits.get("tokens_per_day"),
    )


def revoke_invite(invite: CircleInvite, at: datetime) -> None:
    """Revoked once: revoking again keeps the first time."""
    CircleInvite.objects.filter(pk=invite.pk, revoked_at__isnull=True).update(revoked_at=at)


@transaction.atomic
def join(*, invite: CircleInvite, contributor: Contributor, now: datetime) -> CircleMember:
    """Take one use of the invite and add the contributor to its circle with the invite's role and limits.

    The use is taken by a conditional UPDATE (live, not revoked, uses below max_uses), so that two joiners of a
    single-use invite cannot both get in whatever the timing; a second join of the same contributor is refused
    by the unique (circle, contributor) constraint, and the use it took is rolled back with it.
    Raises InviteGone or AlreadyMember."""
    if CircleMember.objects.filter(circle_id=invite.circle_id, contributor=contributor).exists():
        raise AlreadyMember()
    taken = (
        CircleInvite.objects.filter(pk=invite.pk, revoked_at__isnull=True, expires_at__gt=now)
        .filter(Q(max_uses__isnull=True) | Q(uses__lt=F("max_uses")))
        .update(uses=F("uses") + 1)
    )
    if not taken:
        raise InviteGone()
    try:
        with transaction.atomic():
            return CircleMember.objects.create(
                circle_id=invite.circle_id,
                contributor=contributor,
                role=invite.role,
                requests_per_day=invite.requests_per_day,
                tokens_per_day=invite.tokens_per_day,
                invite=invite,
            )
    except IntegrityError:
        # Joined by another request in between: the exception rolls back the use taken above.
        raise AlreadyMember() from None


def change_member(member: CircleMember, *, status=None, role=None, limits=...) -> CircleMember:
    """Set the member's status, role and/or own limits (`limits=None`: back to the circle's defaults)."""
    changed = []
    if status is not None:
        member.status = status
        changed.append("status")
    if role is not None:
        member.role = role
        changed.append("role")
    if limits is not ...:
        member.requests_per_day = limits["requests_per_day"] if limits else None
        member.tokens_per_day = limits["tokens_per_day"] if limits else None
        changed += ["requests_per_day", "tokens_per_day"]
    if changed:
        member.save(update_fields=changed)
    return member


def remove_member(member: CircleMember) -> None:
    member.delete()


def revoke_invites_by(member: CircleMember, at: datetime) -> int:
    """Revoke the live invites the member made to the circle: a paused, demoted or removed inviter's links must
    not keep letting people in. Returns how many were revoked."""
    return CircleInvite.objects.filter(
        circle_id=member.circle_id, created_by_id=member.contributor_id, revoked_at__isnull=True
    ).update(revoked_at=at)


def unshare_rigs_of(circle: Circle, owner_id: str) -> list[str]:
    """Stop sharing with the circle the rigs `owner_id` owns (they are leaving it); returns those rigs' ids."""
    rows = Node.circles.through.objects.filter(circle=circle, node__owner_id=owner_id)
    node_ids = list(rows.values_list("node_id", flat=True))
    rows.delete()
    return node_ids
