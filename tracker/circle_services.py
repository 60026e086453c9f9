"""Circles (issue 15), the tracker's side: who may see or change a circle, its invites and its members, and the
workflows that reach beyond circle rows: revoking a removed or paused member's circle tokens (pushed to the rigs'
agents at once), and telling each rig's agent when a deleted circle leaves it. The rows are written by nodes.circles.

A circle whose owner is banned is gone for everyone (404 `circle_not_found`, its invites 410 `invite_gone`), as a
banned contributor's rigs are; moderators still see it in the admin. Invite codes are bearer secrets: shown once,
stored as their sha256, and every dead code answers with the same message whatever made it dead."""

import io
from dataclasses import dataclass
from datetime import datetime, timedelta

import segno
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.api_errors import ApiError
from nodes import circles as circle_rows
from nodes.models import Circle, CircleInvite, CircleMember, Contributor
from tracker import bans, credentials
from tracker.circle_push import push_circle_policy
from tracker.models import TastingToken

CIRCLE_ID_MAX = 32  # Circle.id, CircleInvite.id max_length
CODE_MAX = 100
INVITE_GONE = "This invite link no longer works. Ask the circle's owner for a new one."
Role = CircleMember.Role
Status = CircleMember.Status


def _not_found(circle_id) -> ApiError:
    return ApiError(404, "circle_not_found", f"No circle {str(circle_id)[:CIRCLE_ID_MAX]!r}.")


@dataclass
class Access:
    """A circle as one caller may reach it: their member row (None for no key) decides what they may do."""

    circle: Circle
    me: CircleMember | None

    @property
    def is_owner(self) -> bool:
        return self.me is not None and self.me.role == Role.OWNER

    @property
    def can_invite(self) -> bool:
        return self.me is not None and self.me.role in (Role.OWNER, Role.INVITER)

    def require_owner(self) -> None:
        if not self.is_owner:
            raise ApiError(403, "not_circle_owner", "Only the circle's owner may do this.")

    def require_inviter(self) -> None:
        """The owner, or an inviter whose membership is not paused."""
        if not self.can_invite:
            raise ApiError(403, "not_circle_owner", "Only the circle's owner and its inviters may do this.")
        if self.me.status == Status.PAUSED:
            raise ApiError(403, "membership_paused", "Your membership of this circle is paused by its owner.")


def get_circle(contributor: Contributor | None, circle_id) -> Access:
    """The circle as this caller may see it: 404 `circle_not_found` for an unknown id, a circle whose owner is
    banned, or no key at all (its existence does not leak); 403 `not_in_circle` for a key that is not a member
    (paused members included: they still see their circle)."""
    key = str(circle_id)
    circle = None
    if len(key) <= CIRCLE_ID_MAX and "\x00" not in key:
        circle = Circle.objects.select_related("owner").filter(pk=key).first()
    if circle is None or contributor is None or bans.active("contributor", circle.owner_id) is not None:
        raise _not_found(circle_id)
    me = CircleMember.objects.filter(circle=circle, contributor=contributor).first()
    if me is None:
        raise ApiError(403, "not_in_circle", "You are not a member of this circle.")
    return Access(circle, me)


def my_circles(contributor: Contributor):
    """The caller's member rows, of circles whose owner is not banned, oldest first (circle and owner joined)."""
    rows = list(
        CircleMember.objects.filter(contributor=contributor)
        .select_related("circle", "circle__owner")
        .order_by("joined_at", "circle_id")
    )
    banned = bans.banned_contributors({m.circle.owner_id for m in rows})
    return [m for m in rows if m.circle.owner_id not in banned]


# --- circles ------------------------------------------------------------------------------------------------


def create_circle(*, owner: Contributor, name: str, limits: dict | None) -> Circle:
    try:
        return circle_rows.create_circle(owner=owner, name=name, limits=limits)
    except circle_rows.NameTaken:
        raise ApiError(409, "circle_exists", f"You already have a circle named {name!r}.") from None


def change_circle(access: Access, *, name: str | None, limits: dict | None) -> Circle:
    access.require_owner()
    try:
        return circle_rows.change_circle(access.circle, name=name, limits=limits)
    except circle_rows.NameTaken:
        raise ApiError(409, "circle_exists", f"You already have a circle named {name!r}.") from None


@transaction.atomic
def delete_circle(access: Access) -> None:
    """The members' live tokens for it are revoked (and pushed); its rigs stay, no longer shared with it, and
    each rig's agent is told its new circles once this commits."""
    access.require_owner()
    bans.revoke_outstanding(TastingToken.objects.filter(circle=access.circle), timezone.now())
    for node_id in circle_rows.delete_circle(access.circle):
        push_circle_policy(node_id)


# --- invites ------------------------------------------------------------------------------------------------


def invite_state(invite: CircleInvite, now: datetime) -> str:
    if invite.revoked_at is not None:
        return "revoked"
    if invite.max_uses is not None and invite.uses >= invite.max_uses:
        return "used_up"
    if invite.expires_at <= now:
        return "expired"
    return "active"


def join_url(code: str) -> str:
    return f"{settings.SITE_URL}/join/{code}"


def qr_svg(url: str) -> str:
    """The join link as a QR code, an SVG document drawn here so that the page needs no script to show it (the
    same link gives the same drawing)."""
    out = io.BytesIO()
    segno.make_qr(url, error="m").save(out, kind="svg", xmldecl=False, scale=4, border=4, nl=False)
    return out.getvalue().decode()


@dataclass
class NewInvite:
    invite: CircleInvite
    code: str
    url: str
    qr_svg: str


def create_invite(
    access: Access, *, expires_in_sec: int, max_uses: int | None, role: str, limits: dict | None
) -> NewInvite:
    """Owner or inviter. Only the owner may hand out the inviter role or limits other than the circle's: an
    inviter invites friends on the owner's terms."""
    access.require_inviter()
    if (role != Role.MEMBER or limits is not None) and not access.is_owner:
        raise ApiError(403, "not_circle_owner", "Only the circle's owner may invite inviters or set limits.")
    code = credentials.new_secret(credentials.INVITE_PREFIX)
    invite = circle_rows.add_invite(
        circle=access.circle,
        created_by=access.me.contributor,
        code_hash=credentials.digest(code),
        expires_at=timezone.now() + timedelta(seconds=expires_in_sec),
        max_uses=max_uses,
        role=role,
        limits=limits,
    )
    url = join_url(code)
    return NewInvite(invite, code, url, qr_svg(url))


def invites_of(access: Access):
    """The owner sees every invite of the circle; an inviter the ones they made."""
    access.require_inviter()
    invites = CircleInvite.objects.filter(circle=access.circle).order_by("-created_at", "id")
    return invites if access.is_owner else invites.filter(created_by=access.me.contributor)


def revoke_invite(access: Access, invite_id) -> None:
    """Idempotent: revoking a revoked invite changes nothing."""
    invite = invites_of(access).filter(pk=str(invite_id)[:CIRCLE_ID_MAX]).first()
    if invite is None:
        raise ApiError(404, "invite_not_found", f"No invite {str(invite_id)[:CIRCLE_ID_MAX]!r} in this circle.")
    circle_rows.revoke_invite(invite, timezone.now())


def invite_by_code(code) -> CircleInvite:
    """The live invite this code opens: 404 `invite_not_found` for a code that never was one, 410 `invite_gone`
    (one message for every cause) for one that is revoked, used up, expired, or of a banned owner's circle."""
    code = str(code)
    invite = None
    if code.startswith(credentials.INVITE_PREFIX) and len(code) <= CODE_MAX:
        invite = (
            CircleInvite.objects.select_related("circle", "circle__owner")
            .filter(code_hash=credentials.digest(code))
            .first()
        )
    if invite is None:
        raise ApiError(404, "invite_not_found", "No such invite link.")
    if invite_state(invite, timezone.now()) != "active" or bans.active("contributor", invite.circle.owner_id):
        raise ApiError(410, "invite_gone", INVITE_GONE)
    return invite


def join(*, contributor: Contributor, code) -> CircleMember:
    invite = invite_by_code(code)
    try:
        return circle_rows.join(invite=invite, contributor=contributor, now=timezone.now())
    except circle_rows.AlreadyMember:
        raise ApiError(409, "already_member", "You are already a member of this circle.") from None
    except circle_rows.InviteGone:
        raise ApiError(410, "invite_gone", INVITE_GONE) from None


# --- members ------------------------------------------------------------------------------------------------


def members_of(access: Access):
    """The owner and inviters see every member, the owner first; a member sees their own row."""
    rows = CircleMember.objects.filter(circle=access.circle).select_related("contributor")
    if not access.can_invite:
        rows = rows.filter(pk=access.me.pk)
    return sorted(rows, key=lambda m: (m.role != Role.OWNER, m.joined_at, m.contributor_id))


def _member(access: Access, contributor_id) -> CircleMember:
    key = str(contributor_id)[:CIRCLE_ID_MAX]
    member = CircleMember.objects.select_related("contributor").filter(circle=access.circle, contributor_id=key).first()
    if member is None:
        raise ApiError(404, "member_not_found", f"No member {key!r} in this circle.")
    return member


def _revoke_circle_tokens(member: CircleMember) -> int:
    """The member's live tokens issued through this circle stop working, and the rigs' agents hear so at once."""
    tokens = TastingToken.objects.filter(circle_id=member.circle_id, contributor_id=member.contributor_id)
    return bans.revoke_outstanding(tokens, timezone.now())


@transaction.atomic
def change_member(access: Access, contributor_id, *, changes: dict) -> CircleMember:
    """Owner only. The owner's own role and status stay as they are; pausing revokes the member's circle tokens."""
    access.require_owner()
    member = _member(access, contributor_id)
    if member.role == Role.OWNER and ("status" in changes or "role" in changes):
        raise ApiError(409, "owner_role_fixed", "The owner's role and status cannot change.")
    was_inviter = member.role == Role.INVITER
    member = circle_rows.change_member(member, **changes)
    if changes.get("status") == Status.PAUSED:
        _revoke_circle_tokens(member)
    if was_inviter and (member.role != Role.INVITER or member.status == Status.PAUSED):
        circle_rows.revoke_invites_by(member, timezone.now())
    return member


@transaction.atomic
def remove_member(access: Access, contributor_id) -> None:
    """The owner removes a member, or (`me`) a member leaves; either way their circle tokens are revoked, and the
    rigs they shared with the circle are unshared from it (with the tokens issued through it for those rigs)."""
    member = access.me if contributor_id == "me" else _member(access, contributor_id)
    if member.pk != access.me.pk:
        access.require_owner()
    if member.role == Role.OWNER:
        raise ApiError(409, "owner_cannot_leave", "The owner cannot leave their own circle; delete the circle instead.")
    _revoke_circle_tokens(member)
    # Their rigs leave with them: a rig is shared only with circles its owner is in, and the members left behind
    # (the circle's owner first) must not keep tasting a friends-only rig of someone who is no longer a friend.
    node_ids = circle_rows.unshare_rigs_of(access.circle, member.contributor_id)
    if node_ids:
        tokens = TastingToken.objects.filter(circle=access.circle, node_id__in=node_ids)
        bans.revoke_outstanding(tokens, timezone.now())
    for node_id in node_ids:
        push_circle_policy(node_id)
    circle_rows.revoke_invites_by(member, timezone.now())
    circle_rows.remove_member(member)
