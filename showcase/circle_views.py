"""The circle pages (issue 15): "My circles" and the join page `/join/<code>`.

My circles renders no circle: like My rigs, the contributor key lives in the visitor's localStorage and only the
page's script sends it, to the API under /api/circles. The join page is drawn on the server from the invite alone
(a link is opened before the visitor has any key): the circle, its owner, the role and the expiry, or the one
"no longer works" page (410) for an expired, used-up or revoked link, or the ordinary 404 for a code that never
was. The code is a credential: the page is never cached and sends no Referer, so the link does not leak to any
other site the visitor goes on to."""

from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from core.api_errors import ApiError
from core.timefmt import iso
from nodes.models import CircleMember
from showcase import display, script_strings
from tracker import circle_services, tiers


def strings() -> dict:
    """The page scripts' sentences (script_strings.py) with those of the circle pages (my_circles.js, join.js)."""
    return {**script_strings.js_strings(), "circles": _circle_strings()}


def _circle_strings() -> dict:
    return {
        "loading": _("Loading your circles…"),
        "count": _("Circles of %(who)s: %(n)s."),
        "none": _("%(who)s is in no circle yet: create one below, or open an invite link a friend sent you."),
        "roles": {"owner": _("owner"), "inviter": _("inviter"), "member": _("member")},
        "statuses": {"active": _("active"), "paused": _("paused")},
        "meta": _("Owner: %(owner)s · members: %(members)s · rigs: %(rigs)s"),
        "created": _("Circle “%(name)s” created: share a rig with it and invite your friends."),
        "rigs_none": _("No rig is shared with this circle yet."),
        "badge": _("Circle: %(name)s"),
        "not_serving": _("not serving right now"),
        "paused_note": _("Your membership is paused by the circle's owner: no tasting for now."),
        "taste_title": _("Taste %(rig)s"),
        "requests_today": _("Requests today: %(used)s of %(limit)s"),
        "tokens_today": _("Tokens today: %(used)s of %(limit)s"),
        "limits_own": _("limits of their own"),
        "limits_circle": _("the circle's limits"),
        "resets": _("Today's counts reset at 00:00 UTC, in %(wait)s (%(at)s here)."),
        "confirm_remove": _("Remove for good? Press again"),
        "confirm_leave": _("Leave for good? Press again"),
        "paused": _("%(who)s is paused: their tokens for this circle stopped working."),
        "resumed": _("%(who)s may taste again."),
        "removed": _("%(who)s is no longer in this circle; their tokens for it stopped working."),
        "limits_saved": _("Limits saved for %(who)s."),
        "left": _("You left “%(name)s”."),
        "confirm_delete": _("Delete for good? Press again"),
        "deleted": _("“%(name)s” is deleted: its members no longer reach its rigs through it."),
        "invite_made": _(
            "Anyone with this link can join “%(name)s” until it expires (%(when)s) and taste the rigs shared with "
            "it. It is shown only now: copy it, or let them scan the QR code."
        ),
        "invite_limits": _("%(requests)s requests and %(tokens)s tokens a day"),
        "invite_uses": _("%(uses)s of %(max)s used"),
        "invite_uses_any": _("%(uses)s used, no limit"),
        "invite_states": {
            "active": _("active"),
            "expired": _("expired"),
            "used_up": _("used up"),
            "revoked": _("revoked"),
        },
        "invites_none": _("No invite yet."),
        "revoke": _("Revoke"),
        "invite_revoked": _("Invite revoked: its link no longer works."),
        "shared": _("%(rig)s is now shared with “%(name)s”."),
        "unshared": _("%(rig)s is no longer shared with “%(name)s”."),
        "join_checking": _("Checking the contributor key in this browser…"),
        "join_as": _("You join as %(who)s, with the contributor key in this browser."),
        "joining": _("Joining…"),
        "joined": _("You joined “%(name)s”."),
    }


@require_GET
def my_circles(request):
    """The circles this browser's key owns or belongs to, with their rigs, members and invites: all drawn by
    showcase/static/showcase/my_circles.js from the API. The one tasting panel here is pointed at a rig when its
    Taste button is pressed (taste.js, `dynamic`)."""
    context = {
        "js_strings": strings(),
        "dynamic": True,
        "taste_config": {
            "output_cap": tiers.of(tiers.LIMITED).output_tokens_per_request,
            "output_cap_contributor": tiers.of(tiers.CONTRIBUTOR).output_tokens_per_request,
        },
        "roles": [(CircleMember.Role.MEMBER, _("member")), (CircleMember.Role.INVITER, _("inviter"))],
    }
    return render(request, "showcase/my_circles.html", context)


def _private(response):
    """The join page's headers: the code in its address must not reach another site (no Referer) or a cache."""
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_GET
@never_cache
def join(request, code):
    """What the link joins, from the same lookup as `GET /api/circles/invites/<code>` (tracker.circle_services):
    404 `invite_not_found` is the site's 404 page, 410 `invite_gone` the one "no longer works" page."""
    try:
        invite = circle_services.invite_by_code(code)
    except ApiError as exc:
        if exc.status_code == 410:
            return _private(render(request, "showcase/join_gone.html", {"message": exc.message}, status=410))
        return _private(render(request, "404.html", status=404))
    role_labels = {CircleMember.Role.MEMBER: _("member"), CircleMember.Role.INVITER: _("inviter")}
    context = {
        "circle": invite.circle,
        "uses_left": None if invite.max_uses is None else invite.max_uses - invite.uses,
        "role_label": role_labels.get(invite.role, invite.role),
        "expires_label": display.when(iso(invite.expires_at)),
        "js_strings": strings(),
    }
    return _private(render(request, "showcase/join.html", context))
