"""`manage.py takedown <node_id> --reason "..."`: notice and takedown, recorded in the moderation log."""

from moderation import services
from moderation.management.commands._decide import DecisionCommand


class Command(DecisionCommand):
    help = "Take a node down: it leaves every public surface and its outstanding tokens are revoked."

    def add_arguments(self, parser):
        parser.add_argument("node_id")
        super().add_arguments(parser)

    def handle(self, *args, node_id, **options):
        node = self.node(node_id)
        action = self.run(services.take_down, node=node, moderator=self.moderator(options), reason=options["reason"])
        self.stdout.write(f"took down {node.pk} ({action.details.get('tokens_revoked', 0)} tokens revoked)")
