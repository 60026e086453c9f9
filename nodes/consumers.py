"""The public, read-only queue websockets: `/ws/queue/<node_id>/` (one node) and `/ws/queue/` (every listed
node). A snapshot on connect, then the changes, latest state wins: a snapshot superseded before it could be
sent is skipped (nodes/fanout.py). Close codes: 4404 unknown or taken-down node, 1009 a message too large
(subscribers have nothing to say; anything they send is ignored)."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

from nodes import queue_feed
from nodes.fanout import FANOUT
from nodes.models import Node

MAX_INBOUND_BYTES = 4096
CLOSE_NOT_FOUND = 4404


@database_sync_to_async
def _visible_node(node_id: str):
    return Node.objects.visible_by_id(node_id)


class QueueConsumer(AsyncJsonWebsocketConsumer):
    # No channel of its own: messages arrive through the process's fan-out (nodes/fanout.py). A consumer that
    # listened on the layer itself would be torn down, socket and all, the moment Redis went away; this one
    # stays open and is told that the view is stale until Redis is back.
    channel_layer_alias = "luckrig-queue-subscribers-have-no-channel"

    async def connect(self):
        self.group = None
        node_id = self.scope["url_route"]["kwargs"].get("node_id")
        if node_id is None:
            group = queue_feed.ALL_GROUP
        else:
            node = await _visible_node(node_id)
            if node is None:
                await self.accept()
                await self.close(code=CLOSE_NOT_FOUND)
                return
            group = queue_feed.node_group(node.id)
        await self.accept()
        self.group = group
        # The fan-out sends the first snapshot(s) itself, so that they are ordered with the changes after them.
        await FANOUT.join(get_channel_layer(), group, self)

    async def disconnect(self, code):
        if getattr(self, "group", None):
            await FANOUT.leave(get_channel_layer(), self.group, self)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if len(text_data or bytes_data or "") > MAX_INBOUND_BYTES:
            await self.close(code=1009)
