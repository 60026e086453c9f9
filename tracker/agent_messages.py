"""The agent's messages that tracker handles, `heartbeat`, `queue` and `usage` (moderation adds `flag`): each
validates its body, records it through one service, and names its answer's fields, for the HTTP views
(tracker.agent_api) and the agent link (tracker.consumers) alike. It may import nodes; it must not import
moderation or showcase."""

from rest_framework.exceptions import ValidationError

from core.api_errors import ApiError
from nodes import services as node_services
from tracker import agent_link, services
from tracker.serializers import HeartbeatIn, QueueIn, UsageIn


class Heartbeat(agent_link.AgentMessage):
    type = "heartbeat"
    serializer = HeartbeatIn
    ack = "heartbeat_ack"

    def apply(self, node, data):
        return services.record_heartbeat(
            node=node,
            queue=data["queue"],
            models=data.get("models", []),
            agent_version=data.get("agent_version", ""),
            telemetry=data.get("telemetry", {}),
            model_identity=data.get("model_identity"),
        )


class Queue(agent_link.AgentMessage):
    """A queue change between heartbeats (the link only): a complete snapshot, answered with nothing."""

    type = "queue"

    def validate(self, body):
        if not isinstance(body.get("queue"), dict):
            raise ValidationError({"queue": ["must be an object"]})
        data = QueueIn(data=body["queue"])
        data.is_valid(raise_exception=True)
        return data.validated_data

    def apply(self, node, data):
        if node.last_heartbeat_at is None:
            # A node is public once its agent has reported in (a heartbeat): a snapshot before that would put it
            # on the all-nodes stream. An agent heartbeats first on every connect anyway.
            raise ApiError(
                409, "heartbeat_first", "Send a heartbeat first: queue changes count once the node reported in."
            )
        node_services.record_queue(node=node, queue=data)
        return None


class Usage(agent_link.AgentMessage):
    type = "usage"
    serializer = UsageIn
    http_status = 202
    ack = "usage_ack"

    def apply(self, node, data):
        return services.record_usage(node=node, report_id=data["report_id"], entries=data["entries"])

    def link_fields(self, data):
        # The link's answers are not matched to requests by a connection: the agent matches them by report_id.
        return {"report_id": data["report_id"]}


HEARTBEAT, QUEUE, USAGE = Heartbeat(), Queue(), Usage()
for _message in (HEARTBEAT, QUEUE, USAGE):
    agent_link.register(_message)
