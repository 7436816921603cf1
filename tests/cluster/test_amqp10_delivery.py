"""What an AMQP 1.0 consumer is sent for a stored message: the publisher's bare message byte
for byte, RabbitMQ's header and annotations around it, and 0-9-1 messages mapped."""

from __future__ import annotations

from pamqp import commands
from proton import Message, symbol

from warrenmq.amqp.codec import encode_properties
from warrenmq.amqp.v1.message import parse_message
from warrenmq.cluster.amqp10.session import consumer_message
from warrenmq.replication import commands as c
from warrenmq.replication.body import Body
from warrenmq.replication.replies import Annotations, Death, Deliver

OWNER = c.ChannelRef("warren-1", 1, 1, c.LINK_CHANNEL_BASE + 1)


def deliver(properties: bytes, body: bytes, annotations: Annotations | None = None) -> Deliver:
    return Deliver(OWNER, "tag", 7, True, "ex", "rk", properties, Body(0, body), annotations)


def test_a_1_0_message_keeps_its_bare_message_and_gets_rabbitmqs_annotations() -> None:
    published = Message(body=[1, "two"], id="id-1", properties={"k": "v"}, durable=True)
    published.annotations = {symbol("x-exchange"): "forged", symbol("x-mine"): 1}
    payload = bytes(published.encode())
    death = Death("work", "rejected", 1, 1_700_000_000_000, "ex", ("rk",))
    annotations = Annotations(
        delivery_count=3, deaths=(death,), first_death=death, last_death=death
    )
    sent = consumer_message(deliver(c.AMQP_1_0_PROPERTIES, payload, annotations))
    assert sent.endswith(parse_message(payload).bare)
    received = Message()
    received.decode(sent)
    assert received.body == [1, "two"] and received.durable
    assert received.delivery_count == 3 and received.first_acquirer is False
    got = received.annotations
    assert got[symbol("x-exchange")] == "ex"  # the broker's, not the client's
    assert got[symbol("x-routing-key")] == "rk" and got[symbol("x-mine")] == 1
    (entry,) = got[symbol("x-opt-deaths")]
    assert entry[symbol("queue")] == "work" and entry[symbol("reason")] == "rejected"
    assert got[symbol("x-first-death-queue")] == "work"


def test_a_0_9_1_message_is_mapped_for_a_1_0_consumer() -> None:
    properties = encode_properties(
        commands.Basic.Properties(content_type="text/plain", headers={"h": 1})
    )
    received = Message()
    received.decode(consumer_message(deliver(properties, b"raw")))
    assert bytes(received.body) == b"raw" and received.content_type == "text/plain"
    assert dict(received.properties) == {"h": 1}
    assert received.annotations[symbol("x-routing-key")] == "rk"
