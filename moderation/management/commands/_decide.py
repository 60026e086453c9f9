"""What the moderation commands share: the moderator's name and turning a refusal into a clean exit."""

import getpass

from django.core.management.base import BaseCommand, CommandError

from moderation import services


class DecisionCommand(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--reason", required=True, help="why: written to the moderation log")
        parser.add_argument("--moderator", default=None, help="who decides (default: your login name)")

    def moderator(self, options) -> services.Moderator:
        return services.Moderator(None, options["moderator"] or f"{getpass.getuser()} (command line)")

    def node(self, node_id: str):
        try:
            return services.get_node(node_id)
        except services.UnknownSubject as exc:
            raise CommandError(str(exc)) from exc

    def run(self, fn, **kwargs):
        try:
            return fn(**kwargs)
        except (services.UnknownSubject, ValueError) as exc:
            raise CommandError(str(exc)) from exc
