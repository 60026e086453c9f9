"""`manage.py restore <node_id> --reason "..."`: undo a takedown, recorded in the moderation log."""

from moderation import services
from moderation.management.commands._decide import DecisionCommand


class Command(DecisionCommand):
    help = "Restore a taken-down node."

    def add_arguments(self, parser):
        parser.add_argument("node_id")
        super().add_arguments(parser)

    def handle(self, *args, node_id, **options):
        node = self.node(node_id)
        self.run(services.restore, node=node, moderator=self.moderator(options), reason=options["reason"])
        self.stdout.write(f"restored {node.pk}")
