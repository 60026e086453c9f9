"""The circles API (issue 15; docs/api.md "Circles"): circles, their invites and members, the public invite preview
and joining by a code. Each view: validate, ask tracker.circle_services, shape, return. Invite codes appear in one
answer only, the invite's creation; no GET returns one. It may import nodes; it must not import moderation or
showcase."""

from django.db.models import Count, Q
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers as s
from rest_framework.response import Response
from rest_framework.views import APIView

from core.clientip import ip_hash
from core.fields import StrictCharField, StrictIntegerField, StrictSerializer
from core.ratelimits import refuse_if_limited
from core.timefmt import iso
from nodes import schemas
from nodes.models import Circle, CircleInvite, CircleMember, Node
from nodes.public_node import public_node, public_rows
from tracker import bans, circle_usage
from tracker import circle_services as circles
from tracker.api import require
from tracker.auth import ContributorKeyAuthentication

WEEK_SEC = 7 * 24 * 3600

# --- request shapes -------------------------------------------------------------------------------------------


class LimitsIn(StrictSerializer):
    """Daily limits: both numbers, always (a member's or an invite's own, or a circle's defaults)."""

    requests_per_day = StrictIntegerField(min_value=1, max_value=1_000_000)
    tokens_per_day = StrictIntegerField(min_value=1, max_value=1_000_000_000)


class CircleIn(StrictSerializer):
    name = StrictCharField(max_length=80)
    default_limits = LimitsIn(required=False)


class CirclePatch(CircleIn):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].required = False


class InviteIn(StrictSerializer):
    expires_in_sec = StrictIntegerField(required=False, min_value=3600, max_value=30 * 24 * 3600)
    max_uses = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=1000)
    role = s.ChoiceField(choices=["member", "inviter"], required=False)
    limits = LimitsIn(required=False, allow_null=True)


class MemberPatch(StrictSerializer):
    status = s.ChoiceField(choices=["active", "paused"], required=False)
    role = s.ChoiceField(choices=["member", "inviter"], required=False)
    limits = LimitsIn(required=False, allow_null=True)


# --- answer shapes --------------------------------------------------------------------------------------------


def person(contributor) -> dict:
    return {"id": contributor.id, "handle": contributor.handle}


def _limits(requests_per_day, tokens_per_day) -> dict:
    return {"requests_per_day": requests_per_day, "tokens_per_day": tokens_per_day}


def _with_counts(circles_qs, now):
    live = Q(nodes__taken_down_at__isnull=True) & (
        Q(nodes__banned_until__isnull=True) | Q(nodes__banned_until__lte=now)
    )
    return circles_qs.annotate(
        n_members=Count("members", distinct=True), n_nodes=Count("nodes", filter=live, distinct=True)
    )


def circle_json(circle: Circle, me: CircleMember | None) -> dict:
    """`circle` is annotated with its counts (`_with_counts`)."""
    return {
        "id": circle.id,
        "name": circle.name,
        "owner": person(circle.owner),
        "created_at": iso(circle.created_at),
        "default_limits": _limits(circle.default_requests_per_day, circle.default_tokens_per_day),
        "my_role": me.role if me else None,
        "my_status": me.status if me else None,
        "members_count": circle.n_members,
        "nodes_count": circle.n_nodes,
    }


def counted(circle: Circle, now) -> Circle:
    return _with_counts(Circle.objects.select_related("owner").filter(pk=circle.pk), now).get()


def invite_json(invite: CircleInvite, now) -> dict:
    own = invite.requests_per_day is not None or invite.tokens_per_day is not None
    return {
        "id": invite.id,
        "circle_id": invite.circle_id,
        "role": invite.role,
        "created_at": iso(invite.created_at),
        "expires_at": iso(invite.expires_at),
        "max_uses": invite.max_uses,
        "uses": invite.uses,
        "state": circles.invite_state(invite, now),
        "revoked_at": iso(invite.revoked_at),
        "limits": _limits(invite.requests_per_day, invite.tokens_per_day) if own else None,
    }


def members_json(circle: Circle, members: list[CircleMember], now) -> list[dict]:
    """Member rows with today's usage: one usage query for any number of members."""
    usage = circle_usage.usage_today(circle.id, [m.contributor_id for m in members], now)
    resets_at = iso(circle_usage.resets_at(now))
    out = []
    for m in members:
        limits = circle_usage.limits_of(m, circle)
        out.append(
            {
                "contributor": person(m.contributor),
                "role": m.role,
                "status": m.status,
                "joined_at": iso(m.joined_at),
                "limits": limits.as_dict(),
                "limits_source": limits.source,
                "usage_today": usage[m.contributor_id].as_dict(),
                "resets_at": resets_at,
            }
        )
    return out


# --- OpenAPI descriptions -------------------------------------------------------------------------------------


class LimitsDoc(s.Serializer):
    requests_per_day = s.IntegerField()
    tokens_per_day = s.IntegerField()


class CircleDoc(s.Serializer):
    id = s.CharField()
    name = s.CharField()
    owner = schemas.OwnerDoc()
    created_at = s.DateTimeField()
    default_limits = LimitsDoc()
    my_role = s.ChoiceField(choices=["owner", "inviter", "member"])
    my_status = s.ChoiceField(choices=["active", "paused"])
    members_count = s.IntegerField()
    nodes_count = s.IntegerField()


class InviteDoc(s.Serializer):
    id = s.CharField()
    circle_id = s.CharField()
    role = s.ChoiceField(choices=["member", "inviter"])
    created_at = s.DateTimeField()
    expires_at = s.DateTimeField()
    max_uses = s.IntegerField(allow_null=True, help_text="null: any number of uses until it expires")
    uses = s.IntegerField()
    state = s.ChoiceField(choices=["active", "expired", "used_up", "revoked"])
    revoked_at = s.DateTimeField(allow_null=True)
    limits = LimitsDoc(allow_null=True, help_text="null: the circle's defaults")


class UsageDoc(s.Serializer):
    requests = s.IntegerField()
    tokens = s.IntegerField()


class MemberDoc(s.Serializer):
    contributor = schemas.OwnerDoc()
    role = s.ChoiceField(choices=["owner", "inviter", "member"])
    status = s.ChoiceField(choices=["active", "paused"])
    joined_at = s.DateTimeField()
    limits = LimitsDoc()
    limits_source = s.ChoiceField(choices=["member", "circle"])
    usage_today = UsageDoc()
    resets_at = s.DateTimeField(help_text="the next 00:00 UTC")


class InvitePreviewDoc(s.Serializer):
    circle = inline_serializer(
        "InvitePreviewCircle", {"id": s.CharField(), "name": s.CharField(), "owner": schemas.OwnerDoc()}
    )
    role = s.ChoiceField(choices=["member", "inviter"])
    expires_at = s.DateTimeField()
    uses_left = s.IntegerField(allow_null=True, help_text="null: any number until it expires")


def _doc(name: str, **fields):
    return inline_serializer(name, {"schema_version": s.IntegerField(), **fields})


CircleOutDoc = _doc("CircleOut", circle=CircleDoc())
ERRORS = {400: schemas.ErrorDoc, 401: schemas.ErrorDoc, 403: schemas.ErrorDoc, 404: schemas.ErrorDoc}


def _errors(*codes: int) -> dict:
    return {code: schemas.ErrorDoc for code in codes}


# --- views ----------------------------------------------------------------------------------------------------


class CircleCollectionApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        operation_id="circles_list",
        summary="The circles I own or belong to",
        responses={200: _doc("CircleList", circles=CircleDoc(many=True)), **_errors(401)},
    )
    def get(self, request):
        me = require(request.user, "a contributor key")
        now = timezone.now()
        rows = circles.my_circles(me)
        annotated = {c.pk: c for c in _with_counts(Circle.objects.filter(pk__in=[m.circle_id for m in rows]), now)}
        out = []
        for m in rows:
            circle = m.circle
            circle.n_members, circle.n_nodes = annotated[circle.pk].n_members, annotated[circle.pk].n_nodes
            out.append(circle_json(circle, m))
        return Response({"schema_version": 1, "circles": out})

    @extend_schema(
        request=CircleIn,
        summary="Create a circle (I am its owner)",
        responses={201: CircleOutDoc, **_errors(400, 401, 403, 409)},
    )
    def post(self, request):
        me = require(request.user, "a contributor key")
        bans.refuse_writer(contributor_id=me.id, ip_hash=ip_hash(request))
        data = CircleIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        circle = circles.create_circle(owner=me, name=v["name"], limits=v.get("default_limits"))
        mine = CircleMember.objects.get(circle=circle, contributor=me)
        return Response({"schema_version": 1, "circle": circle_json(counted(circle, timezone.now()), mine)}, 201)


class CircleItemApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        summary="One circle and the rigs shared with it (members only)",
        responses={200: _doc("CircleDetail", circle=CircleDoc(), nodes=schemas.PublicNodeDoc(many=True)), **ERRORS},
    )
    def get(self, request, circle_id):
        access = circles.get_circle(request.user, circle_id)
        now = timezone.now()
        # Rigs in service (a taken-down or banned rig is gone inside circles too), each shown with this circle, the
        # one the caller is known to be in.
        nodes = public_rows(Node.objects.in_service().filter(circles=access.circle).order_by("created_at", "id"))
        seen = [{"id": access.circle.id, "name": access.circle.name}]
        return Response(
            {
                "schema_version": 1,
                "circle": circle_json(counted(access.circle, now), access.me),
                "nodes": [public_node({**n, "circles": seen}) for n in nodes],
            }
        )

    @extend_schema(
        request=CirclePatch,
        summary="Rename a circle or change its default limits (owner)",
        responses={200: CircleOutDoc, **ERRORS, 409: schemas.ErrorDoc},
    )
    def patch(self, request, circle_id):
        me = require(request.user, "a contributor key")
        bans.refuse_writer(contributor_id=me.id, ip_hash=ip_hash(request))
        access = circles.get_circle(me, circle_id)
        data = CirclePatch(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        circle = circles.change_circle(access, name=v.get("name"), limits=v.get("default_limits"))
        return Response({"schema_version": 1, "circle": circle_json(counted(circle, timezone.now()), access.me)})

    @extend_schema(
        summary="Delete a circle (owner): members' circle tokens revoked, rigs unshared",
        responses={204: None, **_errors(401, 403, 404)},
    )
    def delete(self, request, circle_id):
        access = circles.get_circle(require(request.user, "a contributor key"), circle_id)
        circles.delete_circle(access)
        return Response(status=204)


class CircleInvitesApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        summary="The circle's invites, never their codes (owner: all; inviter: their own)",
        responses={200: _doc("InviteList", invites=InviteDoc(many=True)), **_errors(401, 403, 404)},
    )
    def get(self, request, circle_id):
        access = circles.get_circle(require(request.user, "a contributor key"), circle_id)
        now = timezone.now()
        return Response({"schema_version": 1, "invites": [invite_json(i, now) for i in circles.invites_of(access)]})

    @extend_schema(
        request=InviteIn,
        summary="Create an invite link (owner or inviter; the code is shown only here)",
        responses={
            201: _doc("InviteCreated", invite=InviteDoc(), code=s.CharField(), url=s.URLField(), qr_svg=s.CharField()),
            **ERRORS,
            429: schemas.ErrorDoc,
        },
    )
    def post(self, request, circle_id):
        me = require(request.user, "a contributor key")
        bans.refuse_writer(contributor_id=me.id, ip_hash=ip_hash(request))
        access = circles.get_circle(me, circle_id)
        access.require_inviter()
        data = InviteIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        refuse_if_limited(
            request, "RATE_CIRCLE_INVITE", "circle-invite", client_hash=me.id, code="rate_limited", who="this key"
        )
        made = circles.create_invite(
            access,
            expires_in_sec=v.get("expires_in_sec", WEEK_SEC),
            max_uses=v.get("max_uses", 1),
            role=v.get("role", "member"),
            limits=v.get("limits"),
        )
        return Response(
            {
                "schema_version": 1,
                "invite": invite_json(made.invite, timezone.now()),
                "code": made.code,
                "url": made.url,
                "qr_svg": made.qr_svg,
            },
            status=201,
        )


class CircleInviteItemApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        summary="Revoke an invite (owner, or the inviter who made it; idempotent)",
        responses={204: None, **_errors(401, 403, 404)},
    )
    def delete(self, request, circle_id, invite_id):
        access = circles.get_circle(require(request.user, "a contributor key"), circle_id)
        circles.revoke_invite(access, invite_id)
        return Response(status=204)


class InvitePreviewApi(APIView):
    @extend_schema(
        operation_id="circle_invite_preview",
        summary="What an invite link opens (no credential needed)",
        responses={200: _doc("InvitePreview", invite=InvitePreviewDoc()), **_errors(404, 410)},
    )
    def get(self, request, code):
        invite = circles.invite_by_code(code)
        circle = invite.circle
        left = None if invite.max_uses is None else invite.max_uses - invite.uses
        return Response(
            {
                "schema_version": 1,
                "invite": {
                    "circle": {"id": circle.id, "name": circle.name, "owner": person(circle.owner)},
                    "role": invite.role,
                    "expires_at": iso(invite.expires_at),
                    "uses_left": left,
                },
            }
        )


class InviteJoinApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        request=None,
        summary="Join a circle by an invite link's code",
        responses={
            201: _doc("Joined", circle=CircleDoc(), membership=MemberDoc()),
            **_errors(400, 401, 403, 404, 409, 410),
        },
    )
    def post(self, request, code):
        me = require(request.user, "a contributor key")
        bans.refuse_writer(contributor_id=me.id, ip_hash=ip_hash(request))
        StrictSerializer(data=request.data).is_valid(raise_exception=True)  # only schema_version
        member = circles.join(contributor=me, code=code)
        now = timezone.now()
        circle = counted(member.circle, now)
        member.contributor = me
        return Response(
            {
                "schema_version": 1,
                "circle": circle_json(circle, member),
                "membership": members_json(circle, [member], now)[0],
            },
            status=201,
        )


class CircleMembersApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        summary="The circle's members with today's usage (owner and inviters: all; a member: their own row)",
        responses={
            200: _doc("MemberList", members=MemberDoc(many=True), resets_at=s.DateTimeField()),
            **_errors(401, 403, 404),
        },
    )
    def get(self, request, circle_id):
        access = circles.get_circle(require(request.user, "a contributor key"), circle_id)
        now = timezone.now()
        members = members_json(access.circle, circles.members_of(access), now)
        return Response({"schema_version": 1, "members": members, "resets_at": iso(circle_usage.resets_at(now))})


class CircleMemberItemApi(APIView):
    authentication_classes = [ContributorKeyAuthentication]

    @extend_schema(
        request=MemberPatch,
        summary="Pause or resume a member, change their role or limits (owner)",
        responses={200: _doc("MemberOut", member=MemberDoc()), **ERRORS, 409: schemas.ErrorDoc},
    )
    def patch(self, request, circle_id, contributor_id):
        me = require(request.user, "a contributor key")
        bans.refuse_writer(contributor_id=me.id, ip_hash=ip_hash(request))
        access = circles.get_circle(me, circle_id)
        access.require_owner()
        data = MemberPatch(data=request.data)
        data.is_valid(raise_exception=True)
        member = circles.change_member(access, contributor_id, changes=dict(data.validated_data))
        return Response({"schema_version": 1, "member": members_json(access.circle, [member], timezone.now())[0]})

    @extend_schema(
        summary="Remove a member (owner), or leave (`me`); their circle tokens are revoked",
        responses={204: None, **_errors(401, 403, 404, 409)},
    )
    def delete(self, request, circle_id, contributor_id):
        access = circles.get_circle(require(request.user, "a contributor key"), circle_id)
        circles.remove_member(access, contributor_id)
        return Response(status=204)
