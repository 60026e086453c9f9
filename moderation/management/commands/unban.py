"""`manage.py unban node|contributor|ip <value> --reason "..."`, recorded in the moderation log."""

from moderation import services
from moderation.management.commands._decide import DecisionCommand


class Command(DecisionCommand):
    help = "Lift every active ban on a node, a contributor (id or handle) or an IP address."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=["node", "contributor", "ip"])
        parser.add_argument("value")
        super().add_arguments(parser)

    def handle(self, *args, kind, value, **options):
        action = self.run(
            services.unban, kind=kind, value=value, moderator=self.moderator(options), reason=options["reason"]
        )
        self.stdout.write(f"lifted {action.details.get('bans_lifted', 0)} ban(s) on {kind} {action.subject_id}")
