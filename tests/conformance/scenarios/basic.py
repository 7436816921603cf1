"""basic.*: publish, consume, get, acknowledgements, qos; confirms, returns and tx ordering."""

from __future__ import annotations

import datetime

from pamqp import commands, header

from ..probe import CLOSE_CHANNEL, Broker
from ..registry import confirm, confirmed, consume, filled, get, queue_declare, scenario


@scenario
def publish_mandatory_unroutable(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.publish(1, "", name, b"lost", mandatory=True)
    return connection.sync()


@scenario
def publish_mandatory_then_confirm_select(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.publish(1, "", name, b"lost", mandatory=True)
    return connection.call(1, commands.Confirm.Select())


@scenario
def publish_mandatory_then_qos(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.publish(1, "", name, b"lost", mandatory=True)
    return connection.call(1, commands.Basic.Qos(prefetch_count=5))


@scenario
def publish_mandatory_then_tx_select(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.publish(1, "", name, b"lost", mandatory=True)
    return connection.call(1, commands.Tx.Select())


@scenario
def publish_mandatory_then_channel_close(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.publish(1, "", name, b"lost", mandatory=True)
    return connection.call(1, CLOSE_CHANNEL)


@scenario
def publish_then_cancel_unknown(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.publish(1, "", name, b"lost", mandatory=True)
    return connection.call(1, commands.Basic.Cancel(consumer_tag="none"))


@scenario
def publish_confirm_mandatory_unroutable(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    confirm(connection)
    connection.publish(1, "", name, b"lost", mandatory=True)
    return confirmed(connection, 1)


@scenario
def publish_confirm_sequence(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    confirm(connection)
    connection.publish(1, "", name)
    lines = confirmed(connection, 1)
    connection.publish(1, "", name)
    return lines + confirmed(connection, 2)


@scenario
def publish_confirm_nowait(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Confirm.Select(nowait=True))
    connection.publish(1, "", name)
    return confirmed(connection, 1)


@scenario
def publish_immediate(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Publish(exchange="", routing_key=name, immediate=True))
    connection.send(1, header.ContentHeader(0, 0, commands.Basic.Properties()))
    return connection.sync()


@scenario
def publish_user_id_mismatch(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    properties = commands.Basic.Properties(user_id="mallory")
    connection.publish(1, "", name, properties=properties)
    return connection.sync()


@scenario
def publish_user_id_match(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.publish(1, "", name, properties=commands.Basic.Properties(user_id="guest"))
    connection.sync()
    return get(connection, name)


@scenario
def publish_all_properties(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    properties = commands.Basic.Properties(
        content_type="text/plain",
        content_encoding="utf-8",
        headers={"s": "v", "i": 5, "b": True, "f": 1.5, "t": {"n": 1}, "a": [1, "x"]},
        delivery_mode=2,
        priority=3,
        correlation_id="cid",
        reply_to="rq",
        expiration="60000",
        message_id="mid",
        timestamp=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        message_type="kind",
        user_id="guest",
        app_id="app",
    )
    connection.publish(1, "", name, b"body", properties=properties)
    connection.sync()
    return get(connection, name)


@scenario
def publish_empty_body(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.publish(1, "", name, b"")
    connection.sync()
    return get(connection, name)


@scenario
def publish_cc_bcc(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    for suffix in ("a", "b", "c"):
        queue_declare(connection, f"{name}.{suffix}", exclusive=True)
    headers = {"CC": [f"{name}.b"], "BCC": [f"{name}.c"]}
    connection.publish(1, "", f"{name}.a", properties=commands.Basic.Properties(headers=headers))
    connection.sync()
    return [line for suffix in "abc" for line in get(connection, f"{name}.{suffix}")]


@scenario
def get_empty(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    return get(connection, name)


@scenario
def get_missing_queue(broker: Broker, name: str) -> list[str]:
    return get(broker.connect(), name)


@scenario
def get_message_count(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name, b"1", b"2", b"3")
    return get(connection, name) + get(connection, name, no_ack=False)


@scenario
def consume_missing_queue(broker: Broker, name: str) -> list[str]:
    return consume(broker.connect(), name)


@scenario
def consume_duplicate_tag(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    return consume(connection, name) + consume(connection, name)


@scenario
def consume_same_tag_other_channel(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.call(2, commands.Channel.Open())
    return consume(connection, name) + consume(connection, name, channel=2)


@scenario
def consume_exclusive_when_consumed(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    consume(connection, name, consumer_tag="a")
    return consume(connection, name, consumer_tag="b", exclusive=True)


@scenario
def consume_when_exclusive_consumer(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    consume(connection, name, consumer_tag="a", exclusive=True)
    return consume(connection, name, consumer_tag="b")


@scenario
def consume_server_tag(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    return consume(connection, name, consumer_tag="")


@scenario
def consume_delivers_in_order(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name, b"1", b"2", b"3")
    return consume(connection, name, no_ack=True) + connection.expect(3)


@scenario
def consume_prefetch_one(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.call(1, commands.Basic.Qos(prefetch_count=1))
    for body in (b"1", b"2"):
        connection.publish(1, "", name, body)
    connection.sync()
    lines = consume(connection, name) + connection.expect(1) + connection.drain()
    connection.send(1, commands.Basic.Ack(delivery_tag=1))
    return lines + connection.expect(1)


@scenario
def consume_priorities(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.call(2, commands.Channel.Open())
    consume(connection, name, consumer_tag="low", arguments={"x-priority": 1})
    consume(connection, name, channel=2, consumer_tag="high", arguments={"x-priority": 5})
    connection.publish(1, "", name, b"1")
    return connection.expect(1)


@scenario
def consume_priority_string(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    return consume(connection, name, arguments={"x-priority": "high"})


@scenario
def cancel_unknown(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Basic.Cancel(consumer_tag="none"))


@scenario
def cancel_requeues_nothing_unacked(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    consume(connection, name)
    lines = connection.expect(1)
    lines += connection.call(1, commands.Basic.Cancel(consumer_tag="ctag"))
    lines += queue_declare(connection, name, passive=True)
    connection.send(1, commands.Basic.Ack(delivery_tag=1))
    return lines + connection.sync() + queue_declare(connection, name, passive=True)


@scenario
def ack_unknown_tag(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Ack(delivery_tag=99))
    return connection.sync()


@scenario
def ack_twice(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    get(connection, name, no_ack=False)
    connection.send(1, commands.Basic.Ack(delivery_tag=1))
    connection.send(1, commands.Basic.Ack(delivery_tag=1))
    return connection.sync()


@scenario
def ack_multiple_zero_nothing(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Ack(delivery_tag=0, multiple=True))
    return connection.sync()


@scenario
def ack_zero_not_multiple(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Ack(delivery_tag=0))
    return connection.sync()


@scenario
def ack_multiple_zero_all(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name, b"m", b"m")
    get(connection, name, no_ack=False)
    get(connection, name, no_ack=False)
    connection.send(1, commands.Basic.Ack(delivery_tag=0, multiple=True))
    connection.sync()
    connection.call(1, commands.Basic.Recover(requeue=True))
    return queue_declare(connection, name, passive=True)


@scenario
def ack_on_other_channel(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    get(connection, name, no_ack=False)
    connection.call(2, commands.Channel.Open())
    connection.send(2, commands.Basic.Ack(delivery_tag=1))
    return connection.sync(2)


@scenario
def reject_requeue_redelivered(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    get(connection, name, no_ack=False)
    connection.send(1, commands.Basic.Reject(delivery_tag=1, requeue=True))
    return connection.sync() + get(connection, name)


@scenario
def reject_unknown_tag(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Reject(delivery_tag=7))
    return connection.sync()


@scenario
def nack_multiple_requeue_order(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name, b"1", b"2", b"3")
    for _ in range(3):
        get(connection, name, no_ack=False)
    connection.send(1, commands.Basic.Nack(delivery_tag=2, multiple=True, requeue=True))
    connection.sync()
    return get(connection, name) + get(connection, name) + get(connection, name)


@scenario
def nack_unknown_tag(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.Nack(delivery_tag=3))
    return connection.sync()


@scenario
def recover_requeue(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    get(connection, name, no_ack=False)
    return connection.call(1, commands.Basic.Recover(requeue=True)) + get(connection, name)


@scenario
def recover_no_requeue(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Basic.Recover(requeue=False))


@scenario
def recover_async(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.send(1, commands.Basic.RecoverAsync(requeue=True))
    return connection.sync()


@scenario
def qos_prefetch_size(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Basic.Qos(prefetch_size=10, prefetch_count=1))


@scenario
def qos_global(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Basic.Qos(prefetch_count=10, global_=True))


@scenario
def closed_channel_requeues(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    get(connection, name, no_ack=False)
    connection.call(1, CLOSE_CHANNEL)
    connection.call(2, commands.Channel.Open())
    return get(connection, name, channel=2)


@scenario
def tx_commit_without_select(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Tx.Commit())


@scenario
def tx_rollback_without_select(broker: Broker, name: str) -> list[str]:
    return broker.connect().call(1, commands.Tx.Rollback())


@scenario
def tx_then_confirm(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.call(1, commands.Tx.Select())
    return confirm(connection)


@scenario
def confirm_then_tx(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    confirm(connection)
    return connection.call(1, commands.Tx.Select())


@scenario
def tx_publish_rollback(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.call(1, commands.Tx.Select())
    connection.publish(1, "", name)
    lines = get(connection, name)
    lines += connection.call(1, commands.Tx.Rollback())
    return lines + get(connection, name)


@scenario
def tx_publish_commit(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    queue_declare(connection, name, exclusive=True)
    connection.call(1, commands.Tx.Select())
    connection.publish(1, "", name, b"1")
    connection.publish(1, "", name, b"2")
    lines = connection.call(1, commands.Tx.Commit())
    return lines + get(connection, name) + get(connection, name)


@scenario
def tx_mandatory_return_then_commit(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.call(1, commands.Tx.Select())
    connection.publish(1, "", name, mandatory=True)
    return connection.call(1, commands.Tx.Commit())


@scenario
def tx_ack_rollback(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    filled(connection, name)
    connection.call(1, commands.Tx.Select())
    get(connection, name, no_ack=False)
    connection.send(1, commands.Basic.Ack(delivery_tag=1))
    lines = connection.call(1, commands.Tx.Rollback())
    lines += connection.call(1, commands.Basic.Recover(requeue=True))
    return lines + get(connection, name)


@scenario
def tx_publish_missing_exchange(broker: Broker, name: str) -> list[str]:
    connection = broker.connect()
    connection.call(1, commands.Tx.Select())
    connection.publish(1, f"{name}.none", "k")
    return connection.call(1, commands.Tx.Commit())
