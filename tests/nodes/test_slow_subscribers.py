"""A public queue subscriber that stops reading is dropped, not buffered for (issue 11). Under Daphne the fan-out
writes straight to each subscriber's Twisted transport; here the subscribers are stand-ins for Daphne's
protocols with the same attributes, one reading and one that never reads, fed by the real fan-out through the
real (in-memory) channel layer."""

import functools

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from nodes import fanout, queue_feed
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


class Transport:
    """Twisted's TCP transport as the fan-out sees it: what a peer has not read waits in dataBuffer."""

    def __init__(self, reads: bool):
        self.reads, self.dataBuffer, self.offset, self._tempDataLen = reads, b"", 0, 0
        self.received, self.aborted = 0, False

    def write(self, data: bytes):
        if self.aborted:
            return
        if self.reads:
            self.received += 1
        else:
            self.dataBuffer += data

    def abortConnection(self):  # noqa: N802 - Twisted's name
        self.aborted = True
        self.dataBuffer = b""


class Protocol:
    """autobahn's server protocol under Daphne: open, no compression, nothing queued inside autobahn."""

    STATE_OPEN = 1
    state = 1
    _perMessageCompress = None
    send_queue = ()

    def __init__(self, reads: bool):
        self.transport = Transport(reads)
        self.factory = self

    def prepareMessage(self, payload: bytes):  # noqa: N802 - autobahn's name
        return type("Prepared", (), {"payloadHybi": payload})()

    def sendPreparedMessage(self, prepared):  # noqa: N802
        self.transport.write(prepared.payloadHybi)


class Subscriber:
    """A queue consumer as Daphne runs it: its base_send is `partial(server.handle_reply, protocol)`."""

    def __init__(self, reads: bool):
        self.protocol = Protocol(reads)
        self.base_send = functools.partial(lambda protocol, message: None, self.protocol)

    async def send(self, text_data=None):
        self.protocol.transport.write(text_data.encode())


def test_a_subscriber_that_stops_reading_is_dropped_and_the_others_keep_getting_changes(api, owner):
    node, secret = factories.make_node(owner)
    factories.heartbeat(api, node, secret)
    group = queue_feed.node_group(node.pk)
    big = '{"type":"queue","node_id":"%s","pad":"%s"}' % (node.pk, "x" * 60_000)  # noqa: UP031

    async def scenario():
        layer, fan = get_channel_layer(), fanout.LocalFanout()
        reader, stalled = Subscriber(reads=True), Subscriber(reads=False)
        await fan.join(layer, group, reader)
        await fan.join(layer, group, stalled)
        for n in range(12):
            update = {"type": "queue.update", "node_id": node.pk, "text": big.replace("x", "y", n)}
            await layer.group_send(group, update)
            await fanout.asyncio.sleep(fanout.INTERVAL_SEC * 1.5)  # one batch each, at the fan-out's pace
        entry = fan._groups[fan._key(group)]  # noqa: SLF001
        members = set(entry.members)
        await fan.leave(layer, group, reader)
        await fan.leave(layer, group, stalled)
        return reader, stalled, members

    reader, stalled, members = async_to_sync(scenario)()
    assert stalled.protocol.transport.aborted and stalled not in members
    assert reader in members and not reader.protocol.transport.aborted
    assert reader.protocol.transport.received >= 12  # the snapshot on joining, then every change
