"""How a moderator's decision runs in the admin: an action that asks for a reason (and a ban length) on a page
of its own, checks the permissions the decision needs, calls a service for each selected object and says what
was done; and the mixin that offers a user only the decisions they may take."""

from django.contrib import messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from moderation import services
from moderation.forms import DecisionForm


class Shown:
    """An object as a moderator may see it on the decision page and in messages: its pk and a label."""

    def __init__(self, obj, label: str):
        self.pk, self.label = obj.pk, label

    def __str__(self) -> str:
        return self.label


def described(modeladmin, obj) -> str:
    # A model admin may say how its objects are shown (BanAdmin: never an IP hash); str() otherwise.
    describe = getattr(modeladmin, "describe", None)
    return describe(obj) if describe else str(obj)


def decision_action(label: str, perform, *, with_days: bool = False, own: str = "change", needs: tuple = ()):
    """An admin action that first asks for a reason (and a ban length), then calls `perform(obj, moderator,
    reason, days)` for each selected object.

    A decision changes things, so seeing the objects is not enough: it needs the `own` permission ("change"
    unless said otherwise) on the admin's model, and the change permission of every model it also writes,
    named in `needs` ("tracker.change_ban" for a ban made from a report). Checked on the user's permissions
    themselves, not the admin's has_change_permission, which says whether the row's fields may be edited
    (never, for bans, flags and replays). `DecisionsNeedPermission` hides what a user may not do; the check
    here refuses it even when asked directly."""

    def permitted(user, model) -> bool:
        opts = model._meta
        return user.has_perms([f"{opts.app_label}.{get_permission_codename(own, opts)}", *needs])

    def action(modeladmin, request, queryset):
        if not permitted(request.user, modeladmin.model):
            raise PermissionDenied
        form = DecisionForm(request.POST if "apply" in request.POST else None, with_days=with_days)
        if "apply" in request.POST and form.is_valid():
            moderator = services.Moderator.of(request.user)
            done, failed = 0, []
            for obj in queryset:
                try:
                    perform(obj, moderator, form.cleaned_data["reason"], form.cleaned_data.get("days"))
                    done += 1
                except (services.UnknownSubject, ValueError) as exc:
                    failed.append(f"{described(modeladmin, obj)}: {exc}")
            modeladmin.message_user(request, f"{label}: {done} done.", messages.SUCCESS)
            for failure in failed:
                modeladmin.message_user(request, failure, messages.ERROR)
            return None
        return TemplateResponse(
            request,
            "admin/moderation/decision.html",
            {
                **modeladmin.admin_site.each_context(request),
                "title": label,
                "label": label,
                "form": form,
                "queryset": [Shown(obj, described(modeladmin, obj)) for obj in queryset],
                "action_name": action.__name__,
                "opts": modeladmin.model._meta,
            },
        )

    action.__name__ = label.lower().replace(" ", "_").replace("/", "_")
    action.short_description = label
    action.permitted = permitted
    return action


class DecisionsNeedPermission:
    """Offer a user only the decisions their permissions allow (see decision_action)."""

    def get_actions(self, request):
        return {
            name: entry
            for name, entry in super().get_actions(request).items()
            if getattr(entry[0], "permitted", None) is None or entry[0].permitted(request.user, self.model)
        }


NODE = ("nodes.change_node",)
BAN = ("tracker.change_ban",)
