"""`manage.py ban node|contributor|ip <value> --reason "..." [--days N]`, recorded in the moderation log.
For `ip` the raw address is hashed before anything is stored."""

from moderation import services
from moderation.management.commands._decide import DecisionCommand


class Command(DecisionCommand):
    help = "Ban a node, a contributor (id or handle) or an IP address, for N days or for good."

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=["node", "contributor", "ip"])
        parser.add_argument("value")
        parser.add_argument("--days", type=int, default=None, help="ban length; omit for a ban for good")
        super().add_arguments(parser)

    def handle(self, *args, kind, value, days, **options):
        action = self.run(
            services.ban, kind=kind, value=value, days=days, moderator=self.moderator(options), reason=options["reason"]
        )
        self.stdout.write(f"banned {kind} {action.subject_id} " + (f"for {days} days" if days else "for good"))
