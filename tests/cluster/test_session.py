"""The AMQP 0-9-1 session over a fake log: what it proposes, when, and what it sends back once
the broker has applied it. Real connection machine, real broker, no Raft, no sockets."""

from __future__ import annotations

import asyncio

from pamqp import commands, frame
from pamqp import header as content_header

from warrenmq.amqp.connection import ConnectionState
from warrenmq.amqp.properties import parse_properties
from warrenmq.cluster.methods import basic
from warrenmq.cluster.passwords import hash_password
from warrenmq.replication import commands as broker

from .fake_node import Client, FakeNode


def declared(client: Client, queue: str, **arguments: object) -> None:
    client.send_method(1, commands.Queue.Declare(queue=queue, durable=True, arguments=arguments))
    client.node.log.commit()
    assert isinstance(client.methods()[-1], commands.Queue.DeclareOk)


def opened(node: FakeNode | None = None) -> Client:
    client = Client(node or FakeNode())
    client.send_method(1, commands.Channel.Open())
    assert isinstance(client.methods()[-1], commands.Channel.OpenOk)
    return client


def publishes(node: FakeNode) -> list[broker.Publish]:
    return [command for command in node.log.proposed if isinstance(command, broker.Publish)]


async def test_the_confirms_of_one_turn_go_out_as_one_multiple_ack() -> None:
    client = opened()
    declared(client, "q")
    client.send_method(1, commands.Confirm.Select())
    assert isinstance(client.methods()[-1], commands.Confirm.SelectOk)
    for number in range(5):
        client.publish(1, "q", b"%d" % number)
    client.node.log.commit()
    assert client.sent() == []  # collected for this turn
    await asyncio.sleep(0)  # the turn ends
    assert client.sent() == [("Basic.Ack", {"delivery_tag": 5, "multiple": True})]


async def test_a_refused_publish_is_nacked_after_the_acks_before_it() -> None:
    client = opened()
    declared(client, "q", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    client.send_method(1, commands.Confirm.Select())
    client.methods()
    for number in range(3):
        client.publish(1, "q", b"%d" % number)
    client.node.log.commit()
    await asyncio.sleep(0)
    nack = {"multiple": False, "requeue": True}  # the field's default, as RabbitMQ sends it
    assert client.sent() == [
        ("Basic.Ack", {"delivery_tag": 1, "multiple": False}),
        ("Basic.Nack", {"delivery_tag": 2, **nack}),
        ("Basic.Nack", {"delivery_tag": 3, **nack}),
    ]


def test_a_transaction_proposes_nothing_until_commit_and_rollback_drops_it() -> None:
    client = opened()
    declared(client, "q")
    client.send_method(1, commands.Tx.Select())
    assert isinstance(client.methods()[-1], commands.Tx.SelectOk)
    client.publish(1, "q", b"dropped")
    client.send_method(1, commands.Tx.Rollback())
    assert isinstance(client.methods()[-1], commands.Tx.RollbackOk)
    client.publish(1, "q", b"kept")
    client.publish(1, "q", b"kept too")
    assert publishes(client.node) == []
    client.send_method(1, commands.Tx.Commit())
    assert client.sent() == []  # CommitOk waits for the broker's replies
    assert [publish.body for publish in publishes(client.node)] == [b"kept", b"kept too"]
    client.node.log.commit()
    assert client.sent() == [("Tx.CommitOk", {})]
    assert client.node.broker.query_queue("/", "q").ready == 2


def test_reading_pauses_at_the_window_and_resumes_when_half_has_drained() -> None:
    node = FakeNode(proposals_in_flight_max=4)
    client = opened(node)
    declared(client, "q")
    for number in range(4):
        client.publish(1, "q", b"%d" % number)
    assert not client.transport.reading
    node.log.commit(1)
    assert not client.transport.reading  # 3 in flight: not yet half
    node.log.commit(1)
    assert client.transport.reading  # 2: half the window
    assert client.transport.pauses == 1


def test_a_reply_to_of_direct_reply_to_becomes_the_channels_own_address() -> None:
    client = opened()
    client.send_method(1, commands.Basic.Consume(queue=broker.REPLY_TO, no_ack=True))
    client.node.log.commit()
    client.methods()
    client.publish(1, "q", b"request", reply_to=broker.REPLY_TO)
    (publish,) = publishes(client.node)
    reply_to = parse_properties(publish.properties).text("reply_to")
    assert publish.replies_to_channel and reply_to is not None
    assert reply_to.startswith(broker.REPLY_TO + ".") and reply_to != broker.REPLY_TO
    assert broker.ChannelRef.from_reply_to(reply_to) == publish.channel


def test_bcc_routes_the_message_but_no_receiver_sees_it() -> None:
    client = opened()
    declared(client, "q")
    declared(client, "secret")
    client.publish(1, "q", b"m", headers={"BCC": ["secret"], "keep": "me"})
    (publish,) = publishes(client.node)
    assert publish.headers == {"BCC": ["secret"], "keep": "me"}  # routing sees it
    assert parse_properties(publish.properties).headers == {"keep": "me"}  # receivers do not
    client.node.log.commit()
    assert [client.node.broker.query_queue("/", name).ready for name in ("q", "secret")] == [1, 1]


def test_a_refusal_closes_the_channel_and_what_it_sent_after_is_not_proposed() -> None:
    client = opened()
    client.send_method(1, commands.Queue.Declare(queue="missing", passive=True))
    client.send_method(1, commands.Queue.Declare(queue="missing", passive=True))
    client.node.log.commit()
    (close,) = client.methods()
    assert isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
    assert close.reply_text == "NOT_FOUND - no queue 'missing' in vhost '/'"
    closing = [
        command for command in client.node.log.proposed if isinstance(command, broker.CloseChannel)
    ]
    assert len(closing) == 1


def test_a_redelivered_message_carries_its_delivery_count() -> None:
    client = opened()
    declared(client, "q", **{"x-queue-type": "quorum"})
    client.publish(1, "q", b"m")
    client.send_method(1, commands.Basic.Consume(queue="q", consumer_tag="ctag"))
    client.node.log.commit()
    client.received()
    client.send_method(1, commands.Basic.Reject(delivery_tag=1, requeue=True))
    client.node.log.commit()
    frames = client.received()
    deliver = next(value for _, value in frames if isinstance(value, commands.Basic.Deliver))
    header = next(value for _, value in frames if type(value).__name__ == "ContentHeader")
    assert deliver.redelivered and deliver.delivery_tag == 2
    assert header.properties.headers == {"x-delivery-count": 1}


def _mandatory_unroutable(client: Client) -> None:
    client.send_method(
        1, commands.Basic.Publish(exchange="", routing_key="nowhere", mandatory=True)
    )
    client.send(frame.marshal(content_header.ContentHeader(body_size=0), 1))


def test_a_local_answer_waits_for_the_replies_before_it() -> None:
    """RabbitMQ handles a channel's methods in order: the basic.return of a mandatory publish
    goes out before the confirm.select-ok, tx.select-ok and close-ok sent after it."""
    for method, answer in (
        (commands.Confirm.Select(), "Confirm.SelectOk"),
        (commands.Tx.Select(), "Tx.SelectOk"),
        (
            commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0),
            "Channel.CloseOk",
        ),
    ):
        client = opened()
        _mandatory_unroutable(client)
        client.send_method(1, method)
        assert client.sent() == []  # nothing overtakes the publish's reply
        client.node.log.commit()
        assert [name for name, _ in client.sent()] == ["Basic.Return", answer]


def test_a_held_back_answer_is_dropped_when_the_channel_fails_before_it() -> None:
    """A publish to a missing exchange closes the channel (404): the confirm.select-ok held
    back behind it must not follow the channel.close (AMQP 0-9-1: nothing but close-ok then)."""
    client = opened()
    client.send_method(1, commands.Basic.Publish(exchange="missing", routing_key="k"))
    client.send(frame.marshal(content_header.ContentHeader(body_size=0), 1))
    client.send_method(1, commands.Confirm.Select())
    client.node.log.commit()
    assert [name for name, _ in client.sent()] == ["Channel.Close"]


def carol_proposed(node: FakeNode, permissions: bool = True) -> None:
    """User carol, as another node's management API adds her: in the log, not applied here."""
    node.log.propose(broker.AddUser(user="carol", password_hash=hash_password("pw"), tags=()))
    if permissions:
        node.log.propose(
            broker.SetPermissions(user="carol", vhost="/", configure=".*", write=".*", read=".*")
        )


def test_a_login_this_node_has_not_yet_applied_waits_for_it_then_goes_on() -> None:
    """The login is held, reading paused, until the node's barrier comes back applied; then
    it is decided again and the frames the client sent meanwhile are read."""
    node = FakeNode()
    carol_proposed(node)
    client = Client(node, user="carol", password="pw")
    assert client.methods() == [] and not client.transport.reading
    assert isinstance(node.log.proposed[-1], broker.Barrier)
    node.log.commit()
    assert [method.name for method in client.methods()] == [
        "Connection.Tune",
        "Connection.OpenOk",
    ]
    assert client.transport.reading and client.session.user == "carol"


def test_a_vhost_permission_not_yet_applied_holds_the_open_the_same_way() -> None:
    node = FakeNode()
    carol_proposed(node, permissions=False)
    node.log.commit()
    node.log.propose(
        broker.SetPermissions(user="carol", vhost="/", configure="", write="", read="")
    )
    client = Client(node, user="carol", password="pw")
    assert client.connection.state is ConnectionState.AWAITING_OPEN  # logged in, open held
    assert client.methods() == [] and not client.transport.reading
    node.log.commit()
    assert [method.name for method in client.methods()] == ["Connection.OpenOk"]
    assert sum(isinstance(command, broker.Barrier) for command in node.log.proposed) == 1


def test_a_refusal_that_stands_after_catching_up_is_final() -> None:
    node = FakeNode()
    carol_proposed(node)
    client = Client(node, user="carol", password="wrong")
    assert not client.connection.closed
    node.log.commit()
    assert client.connection.closed  # no authentication_failure_close: no frame, as RabbitMQ
    assert client.session.serial not in node.sessions  # the session has ended
    assert sum(isinstance(command, broker.Barrier) for command in node.log.proposed) == 1


def test_a_refused_permission_waits_too_and_what_came_after_it_waits_behind_it() -> None:
    node = FakeNode()
    carol_proposed(node, permissions=False)
    node.log.propose(
        broker.SetPermissions(user="carol", vhost="/", configure="", write="", read="")
    )
    node.log.commit()
    client = Client(node, user="carol", password="pw")
    client.send_method(1, commands.Channel.Open())
    client.methods()
    node.log.propose(  # the grant, through another node: not applied here yet
        broker.SetPermissions(user="carol", vhost="/", configure=".*", write=".*", read=".*")
    )
    client.send(
        frame.marshal(commands.Queue.Declare(queue="carol.q"), 1)
        + frame.marshal(commands.Basic.Qos(prefetch_count=5), 1)
    )
    assert client.methods() == [] and not client.transport.reading
    assert not any(isinstance(command, broker.Qos) for command in node.log.proposed)
    node.log.commit()  # the grant, then the barrier: the declare is decided again
    node.log.commit()
    assert [method.name for method in client.methods()] == ["Queue.DeclareOk", "Basic.QosOk"]
    assert client.transport.reading


def test_single_acks_back_to_back_on_a_channel_go_to_the_log_as_one_settle() -> None:
    client = opened()
    client.send_method(2, commands.Channel.Open())
    client.methods()

    def ack(channel: int, tag: int, multiple: bool = False) -> bytes:
        return frame.marshal(commands.Basic.Ack(delivery_tag=tag, multiple=multiple), channel)

    one_read = (
        ack(1, 1)
        + ack(1, 3)
        + ack(1, 2)
        + ack(2, 1)  # another channel: a new Settle
        + ack(1, 4)
        + ack(1, 6, multiple=True)  # a multiple ack is not joined to the ones before it
        + ack(1, 7)
    )
    client.send(one_read)
    client.send(ack(1, 8))  # another read
    one, two = client.session.channels[1].ref, client.session.channels[2].ref
    assert client.node.log.proposed[-5:] == [
        broker.Settle(channel=one, delivery_tag=1, multiple=False, more=(3, 2)),
        broker.Settle(channel=two, delivery_tag=1, multiple=False),
        broker.Settle(channel=one, delivery_tag=4, multiple=False),
        broker.Settle(channel=one, delivery_tag=6, multiple=True, more=(7,)),
        broker.Settle(channel=one, delivery_tag=8, multiple=False),
    ]


def test_a_joined_ack_of_an_unknown_tag_closes_the_channel_as_a_lone_one_would() -> None:
    client = opened()
    declared(client, "q")
    client.send_method(1, commands.Basic.Consume(queue="q", consumer_tag="ctag"))
    for number in range(3):
        client.publish(1, "q", b"%d" % number)
    client.node.log.commit()
    client.received()
    acks = [commands.Basic.Ack(delivery_tag=tag) for tag in (1, 2, 9, 3)]
    client.send(b"".join(frame.marshal(method, 1) for method in acks))
    client.node.log.commit()
    assert client.sent() == [
        (
            "Channel.Close",
            {
                "reply_code": 406,
                "reply_text": "PRECONDITION_FAILED - unknown delivery tag 9",
                "class_id": 60,
                "method_id": 80,
            },
        )
    ]
    queue = client.node.broker.state.vhosts["/"].queues["q"]
    assert queue.unacked_count == 1  # 3 is still held, until the channel's close gives it back


def test_no_more_single_acks_join_one_settle_than_the_most() -> None:
    client = opened()
    tags = range(1, basic.JOINED_ACKS_MAX + 3)
    client.send(b"".join(frame.marshal(commands.Basic.Ack(delivery_tag=t), 1) for t in tags))
    settles = client.node.log.proposed[-2:]
    assert [len(settle.more) for settle in settles] == [basic.JOINED_ACKS_MAX, 0]
    assert [settle.delivery_tag for settle in settles] == [1, basic.JOINED_ACKS_MAX + 2]
