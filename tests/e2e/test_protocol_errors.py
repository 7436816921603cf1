"""Every client mistake gets RabbitMQ's reply code, and the node keeps serving everyone else.

The connection machine's own rules (headers, logins, frames, channel numbers) are tested byte
by byte in tests/amqp/test_protocol_errors.py; here one raw-socket case of each kind shows the
server sends the close and hangs up, beside the rules only a running node can check."""

from __future__ import annotations

import struct
import uuid

import pika
import pika.exceptions
import pytest
from pamqp import body as content_body
from pamqp import commands, frame, header

from .conftest import RunningNode
from .rawclient import PROTOCOL_HEADER, RawClient


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def raw(node: RunningNode):
    client = RawClient(node.port)
    yield client
    client.close()


@pytest.fixture
def opened(raw: RawClient) -> RawClient:
    assert isinstance(raw.open(), commands.Connection.OpenOk)
    raw.open_channel(1)
    return raw


def assert_connection_closed(
    client: RawClient, reply_code: int, class_id: int = 0, method_id: int = 0
) -> commands.Connection.Close:
    close = client.expect(commands.Connection.Close, 0)
    assert close.reply_code == reply_code, close.reply_text
    assert (close.class_id, close.method_id) == (class_id, method_id)
    client.send_frame(0, commands.Connection.CloseOk())
    assert client.closed_by_peer(5.0)
    return close


def assert_channel_closed(
    client: RawClient, channel: int, reply_code: int, class_id: int, method_id: int
) -> commands.Channel.Close:
    close = client.expect(commands.Channel.Close, channel)
    assert close.reply_code == reply_code, close.reply_text
    assert (close.class_id, close.method_id) == (class_id, method_id)
    client.send_frame(channel, commands.Channel.CloseOk())
    return close


@pytest.fixture(autouse=True)
def node_still_serves(node: RunningNode):
    """After each mistake, a well-behaved client still gets full service."""
    yield
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"still here")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"still here"
    connection.close()


# --- connection level -------------------------------------------------------------------


def test_wrong_protocol_header_gets_ours_back_and_a_close(raw: RawClient) -> None:
    raw.send(b"AMQP\x01\x01\x00\x0a")
    assert raw.read_raw(8) == PROTOCOL_HEADER
    assert raw.closed_by_peer(5.0)


def test_wrong_password_with_pika(node: RunningNode) -> None:
    parameters = pika.URLParameters(f"amqp://guest:nope@127.0.0.1:{node.port}/")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(parameters)


def test_unknown_vhost_with_pika(node: RunningNode) -> None:
    parameters = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{node.port}/elsewhere")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
        pika.BlockingConnection(parameters)
    assert "(530) 'NOT_ALLOWED - vhost elsewhere not found'" in str(refused.value)


def test_frame_over_frame_max_is_501(opened: RawClient) -> None:
    opened.send(struct.pack(">BHI", 3, 1, 200_000))  # a body frame announcing 200 kB
    assert_connection_closed(opened, 501)


def test_method_on_unopened_channel_is_504(opened: RawClient) -> None:
    opened.send_frame(7, commands.Queue.Declare(queue="q"))
    assert_connection_closed(opened, 504, 50, 10)


def test_immediate_publish_is_540(opened: RawClient) -> None:
    opened.publish(1, "", "q", b"x", immediate=True)
    assert_connection_closed(opened, 540, 60, 40)


def test_prefetch_size_is_540(opened: RawClient) -> None:
    opened.send_frame(1, commands.Basic.Qos(prefetch_size=1024, prefetch_count=1))
    assert_connection_closed(opened, 540, 60, 10)


def test_unknown_exchange_type_is_503(opened: RawClient) -> None:
    opened.send_frame(1, commands.Exchange.Declare(exchange=unique("x"), exchange_type="nope"))
    assert_connection_closed(opened, 503, 40, 10)


def test_reused_consumer_tag_is_530(opened: RawClient) -> None:
    opened.send_frame(1, commands.Queue.Declare(queue="", exclusive=True))
    opened.expect(commands.Queue.DeclareOk, 1)
    for _ in range(2):
        opened.send_frame(1, commands.Basic.Consume(queue="", consumer_tag="same"))
    opened.expect(commands.Basic.ConsumeOk, 1)
    assert_connection_closed(opened, 530, 60, 20)


def test_silent_peer_is_dropped_after_two_heartbeats(raw: RawClient) -> None:
    assert isinstance(raw.open(heartbeat_s=1), commands.Connection.OpenOk)
    assert raw.closed_by_peer(10.0)
    assert raw.buffer.count(b"\x08\x00\x00\x00\x00\x00\x00\xce") >= 1  # it sent heartbeats


def test_handshake_then_close_from_client(raw: RawClient) -> None:
    assert isinstance(raw.open(), commands.Connection.OpenOk)
    raw.send_frame(
        0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
    )
    raw.expect(commands.Connection.CloseOk, 0)
    assert raw.closed_by_peer(5.0)


# --- channel level: the channel closes, the connection lives on ---------------------------


def test_server_generates_consumer_tag(opened: RawClient) -> None:
    opened.send_frame(1, commands.Queue.Declare(queue="", exclusive=True))
    opened.expect(commands.Queue.DeclareOk, 1)
    opened.send_frame(1, commands.Basic.Consume(queue=""))
    consume_ok = opened.expect(commands.Basic.ConsumeOk, 1)
    assert consume_ok.consumer_tag.startswith("amq.ctag-")


def test_message_over_max_size_closes_only_the_channel(opened: RawClient) -> None:
    opened.send_frame(1, commands.Basic.Publish(exchange="", routing_key="q"))
    opened.send_frame(1, header.ContentHeader(0, 17 * 1024 * 1024, commands.Basic.Properties()))
    close = assert_channel_closed(opened, 1, 406, 60, 40)
    assert "larger than configured max size" in close.reply_text
    opened.open_channel(2)


def test_empty_queue_name_without_declared_queue_is_404(opened: RawClient) -> None:
    opened.send_frame(1, commands.Basic.Get(queue=""))
    assert_channel_closed(opened, 1, 404, 60, 70)
    opened.open_channel(1)  # the number is free again after close-ok


def test_acks_in_one_write_settle_up_to_an_unknown_tag_and_close_the_channel_there(
    opened: RawClient, node: RunningNode
) -> None:
    """The node joins the single acks of one read into one command: the acks before the
    unknown tag still count, the one after it does not, and the close names the tag."""
    queue = unique("acks")
    opened.send_frame(1, commands.Queue.Declare(queue=queue, durable=True))
    opened.expect(commands.Queue.DeclareOk, 1)
    for number in range(4):
        opened.publish(1, "", queue, b"%d" % number)
    opened.send_frame(1, commands.Basic.Consume(queue=queue))
    opened.expect(commands.Basic.ConsumeOk, 1)
    tags = []
    for _ in range(4):
        tags.append(opened.expect(commands.Basic.Deliver, 1).delivery_tag)
        opened.expect(header.ContentHeader, 1)
        opened.expect(content_body.ContentBody, 1)
    assert tags == [1, 2, 3, 4]
    acks = [commands.Basic.Ack(delivery_tag=tag) for tag in (1, 3, 99, 2)]
    opened.send(b"".join(frame.marshal(ack, 1) for ack in acks))
    close = assert_channel_closed(opened, 1, 406, 60, 80)
    assert close.reply_text == "PRECONDITION_FAILED - unknown delivery tag 99"
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    left = connection.channel().queue_declare(queue, passive=True).method.message_count
    connection.close()
    assert left == 2  # 2 and 4 went back with the channel; 1 and 3 were acked
    opened.open_channel(1)


def test_methods_pipelined_after_a_channel_error_are_ignored(opened: RawClient) -> None:
    # one write: the get fails in the session (404), the next two arrive in the same read
    opened.send(
        frame.marshal(commands.Basic.Get(queue=""), 1)
        + frame.marshal(commands.Queue.Declare(queue="after", exclusive=True), 1)
        + frame.marshal(commands.Basic.Qos(prefetch_count=1), 1)
    )
    assert_channel_closed(opened, 1, 404, 60, 70)
    opened.open_channel(1)
    opened.send_frame(1, commands.Queue.Declare(queue="after", passive=True))
    assert_channel_closed(opened, 1, 404, 50, 10)  # the pipelined declare was never carried out


@pytest.fixture
def pika_channel(node: RunningNode):
    connection = pika.BlockingConnection(pika.URLParameters(node.url))
    yield connection, connection.channel()
    if connection.is_open:
        connection.close()


def channel_error(action) -> tuple[int, str]:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        action()
    return closed.value.reply_code, closed.value.reply_text


def test_passive_declare_of_missing_queue_is_404(pika_channel) -> None:
    connection, channel = pika_channel
    code, text = channel_error(lambda: channel.queue_declare("missing-queue", passive=True))
    assert (code, text) == (404, "NOT_FOUND - no queue 'missing-queue' in vhost '/'")
    assert connection.is_open


def test_passive_declare_of_missing_exchange_is_404(pika_channel) -> None:
    _, channel = pika_channel
    code, text = channel_error(lambda: channel.exchange_declare("missing-x", passive=True))
    assert (code, text) == (404, "NOT_FOUND - no exchange 'missing-x' in vhost '/'")


def test_redeclare_with_other_arguments_is_406(pika_channel) -> None:
    connection, channel = pika_channel
    queue = unique("q")
    channel.queue_declare(queue, arguments={"x-max-length": 10})
    code, text = channel_error(lambda: channel.queue_declare(queue, arguments={"x-max-length": 20}))
    assert code == 406 and "inequivalent arg 'x-max-length'" in text
    channel = connection.channel()
    code, _ = channel_error(lambda: channel.queue_declare(queue, durable=True))
    assert code == 406
    channel = connection.channel()
    channel.queue_declare(queue, arguments={"x-max-length": 10, "x-unchecked": 1})  # same: fine
    channel.queue_delete(queue)


def test_redeclare_exchange_with_other_type_is_406(pika_channel) -> None:
    _, channel = pika_channel
    exchange = unique("x")
    channel.exchange_declare(exchange, "direct")
    code, text = channel_error(lambda: channel.exchange_declare(exchange, "fanout"))
    assert code == 406
    assert text == (
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{exchange}' in "
        "vhost '/': received 'fanout' but current is 'direct'"
    )


def test_ack_of_unknown_delivery_tag_is_406(pika_channel) -> None:
    connection, channel = pika_channel
    channel.basic_ack(42)
    code, text = channel_error(lambda: channel.queue_declare("", exclusive=True))
    assert (code, text) == (406, "PRECONDITION_FAILED - unknown delivery tag 42")
    assert connection.is_open


def test_double_ack_is_406(pika_channel) -> None:
    _, channel = pika_channel
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"x")
    method, _, _ = channel.basic_get(queue)
    channel.basic_ack(method.delivery_tag)
    channel.basic_ack(method.delivery_tag)
    code, _ = channel_error(lambda: channel.queue_declare("", exclusive=True))
    assert code == 406


def test_publish_to_missing_exchange_is_404(pika_channel) -> None:
    _, channel = pika_channel
    channel.basic_publish("no-such-exchange", "k", b"x")
    code, text = channel_error(lambda: channel.queue_declare("", exclusive=True))
    assert (code, text) == (404, "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'")


def test_publish_to_internal_exchange_is_403(pika_channel) -> None:
    _, channel = pika_channel
    exchange = unique("internal")
    channel.exchange_declare(exchange, "fanout", internal=True)
    channel.basic_publish(exchange, "", b"x")
    code, _ = channel_error(lambda: channel.queue_declare("", exclusive=True))
    assert code == 403


def test_reserved_amq_prefix_is_403(pika_channel) -> None:
    connection, channel = pika_channel
    code, text = channel_error(lambda: channel.queue_declare("amq.mine"))
    assert (code, text) == (
        403,
        "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'",
    )
    channel = connection.channel()
    code, _ = channel_error(lambda: channel.exchange_declare("amq.mine", "direct"))
    assert code == 403
    channel = connection.channel()
    channel.exchange_declare("amq.direct", "direct", durable=True)  # existing: fine
    code, _ = channel_error(lambda: channel.exchange_delete("amq.direct"))
    assert code == 403


def test_binding_to_the_default_exchange_is_403(pika_channel) -> None:
    _, channel = pika_channel
    queue = channel.queue_declare("", exclusive=True).method.queue
    code, text = channel_error(lambda: channel.queue_bind(queue, "", "k"))
    assert (code, text) == (403, "ACCESS_REFUSED - operation not permitted on the default exchange")


def test_bind_to_missing_queue_or_exchange_is_404(pika_channel) -> None:
    connection, channel = pika_channel
    code, _ = channel_error(lambda: channel.queue_bind("no-queue", "amq.direct", "k"))
    assert code == 404
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    code, _ = channel_error(lambda: channel.queue_bind(queue, "no-exchange", "k"))
    assert code == 404


def test_delete_if_empty_and_if_unused_are_406(pika_channel) -> None:
    connection, channel = pika_channel
    queue = channel.queue_declare(unique("q")).method.queue
    channel.basic_publish("", queue, b"x")
    code, text = channel_error(lambda: channel.queue_delete(queue, if_empty=True))
    assert (code, text) == (406, f"PRECONDITION_FAILED - queue '{queue}' in vhost '/' not empty")
    channel = connection.channel()
    channel.basic_consume(queue, lambda *args: None)
    code, _ = channel_error(lambda: connection.channel().queue_delete(queue, if_unused=True))
    assert code == 406
    assert connection.channel().queue_delete(queue).method.message_count == 0  # one was delivered


def test_exchange_delete_if_unused_is_406(pika_channel) -> None:
    _, channel = pika_channel
    exchange = unique("x")
    channel.exchange_declare(exchange, "fanout")
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, exchange)
    code, _ = channel_error(lambda: channel.exchange_delete(exchange, if_unused=True))
    assert code == 406


def test_quorum_queue_must_be_durable(pika_channel) -> None:
    _, channel = pika_channel
    code, text = channel_error(
        lambda: channel.queue_declare(
            unique("qq"), durable=False, arguments={"x-queue-type": "quorum"}
        )
    )
    assert code == 406 and "non-durable" in text


def test_tx_commit_without_select_and_mode_switches_are_406(pika_channel) -> None:
    connection, channel = pika_channel
    code, text = channel_error(channel.tx_commit)
    assert (code, text) == (406, "PRECONDITION_FAILED - channel is not transactional")
    channel = connection.channel()
    channel.confirm_delivery()
    code, text = channel_error(channel.tx_select)
    assert text == "PRECONDITION_FAILED - cannot switch from confirm to tx mode"


def test_exclusive_queue_of_another_connection_is_405(node: RunningNode, pika_channel) -> None:
    _, channel = pika_channel
    queue = channel.queue_declare("", exclusive=True).method.queue
    other = pika.BlockingConnection(pika.URLParameters(node.url))
    code, _ = channel_error(lambda: other.channel().basic_get(queue))
    assert code == 405
    other.close()


def test_commands_pipelined_after_a_channel_error_are_ignored(pika_channel) -> None:
    connection, channel = pika_channel
    queue = channel.queue_declare(unique("q")).method.queue
    channel.basic_publish("no-such-exchange", "k", b"x")  # closes the channel with 404 …
    channel.basic_publish("", queue, b"after the error")  # … so this one must not be enqueued
    code, _ = channel_error(lambda: channel.queue_declare("", exclusive=True))
    assert code == 404
    checker = connection.channel()
    assert checker.queue_declare(queue, passive=True).method.message_count == 0
    checker.queue_delete(queue)


def test_confirms_of_one_batch_arrive_as_one_multiple_ack(opened: RawClient) -> None:
    opened.send_frame(1, commands.Confirm.Select())
    opened.expect(commands.Confirm.SelectOk, 1)
    opened.send_frame(1, commands.Queue.Declare(queue="", exclusive=True))
    queue = opened.expect(commands.Queue.DeclareOk, 1).queue
    burst = b""
    for _ in range(20):
        burst += frame.marshal(commands.Basic.Publish(exchange="", routing_key=queue), 1)
        burst += frame.marshal(header.ContentHeader(0, 1, commands.Basic.Properties()), 1)
        burst += frame.marshal(content_body.ContentBody(b"x"), 1)
    opened.send(burst)  # one write: the node reads it in one go and proposes one batch
    confirmed, acks = 0, []
    while confirmed < 20:
        ack = opened.expect(commands.Basic.Ack, 1)
        assert ack.delivery_tag > confirmed and (ack.multiple or ack.delivery_tag == confirmed + 1)
        confirmed = ack.delivery_tag
        acks.append(ack)
    assert confirmed == 20
    assert any(ack.multiple for ack in acks) and len(acks) < 20
