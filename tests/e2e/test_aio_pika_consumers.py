"""Consumers, prefetch, acknowledgements, transactions and queue lifetimes, with aio-pika."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest

from .conftest import RunningNode

WAIT_S = 10.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def connection(node: RunningNode) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    connection = await aio_pika.connect(node.url)
    yield connection
    await connection.close()


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer callback for tests that only need a consumer to exist."""


async def collect(queue: asyncio.Queue, count: int) -> list:
    return [await asyncio.wait_for(queue.get(), WAIT_S) for _ in range(count)]


async def test_round_robin_between_consumers_on_two_connections(node: RunningNode) -> None:
    first = await aio_pika.connect(node.url)
    second = await aio_pika.connect(node.url)
    queue_name = unique("q")
    received: dict[str, list[bytes]] = {"first": [], "second": []}
    done = asyncio.Event()

    async def consume(connection, name: str) -> None:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received[name].append(message.body)
            await message.ack()
            if sum(map(len, received.values())) == 20:
                done.set()

        await queue.consume(on_message)

    await consume(first, "first")
    await consume(second, "second")
    publisher = await first.channel(publisher_confirms=True)
    for number in range(20):
        await publisher.default_exchange.publish(
            aio_pika.Message(str(number).encode()), routing_key=queue_name
        )
    await asyncio.wait_for(done.wait(), WAIT_S)
    assert len(received["first"]) == len(received["second"]) == 10
    assert sorted(received["first"] + received["second"], key=int) == [
        str(number).encode() for number in range(20)
    ]
    await first.close()
    await second.close()


async def test_prefetch_limits_unacked_deliveries(connection) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=3)
    queue = await channel.declare_queue(exclusive=True)
    for number in range(10):
        await channel.default_exchange.publish(
            aio_pika.Message(str(number).encode()), routing_key=queue.name
        )
    held: asyncio.Queue = asyncio.Queue()
    await queue.consume(held.put)
    first_three = await collect(held, 3)
    await asyncio.sleep(0.3)  # give the broker every chance to break the limit
    assert held.empty()
    await first_three[0].ack()
    (fourth,) = await collect(held, 1)
    assert fourth.body == b"3"
    assert (await queue.declare()).message_count == 6


async def test_global_prefetch_caps_the_whole_channel(connection) -> None:
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=2, global_=True)
    held: asyncio.Queue = asyncio.Queue()
    for _ in range(2):
        queue = await channel.declare_queue(exclusive=True)
        for number in range(3):
            await channel.default_exchange.publish(
                aio_pika.Message(str(number).encode()), routing_key=queue.name
            )
        await queue.consume(held.put)
    first_two = await collect(held, 2)
    await asyncio.sleep(0.3)  # give the broker every chance to break the limit
    assert held.empty()
    await first_two[0].ack()
    await collect(held, 1)


async def test_nack_requeue_keeps_position_and_marks_redelivered(connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    for body in (b"a", b"b", b"c"):
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
    first = await queue.get()
    second = await queue.get()
    await second.nack(requeue=True)
    await first.reject(requeue=True)
    again = [await queue.get(no_ack=True) for _ in range(3)]
    assert [(message.body, message.redelivered) for message in again] == [
        (b"a", True),
        (b"b", True),
        (b"c", False),
    ]


async def test_nack_without_requeue_drops_and_multiple_settles_many(connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    for number in range(5):
        await channel.default_exchange.publish(
            aio_pika.Message(str(number).encode()), routing_key=queue.name
        )
    messages = [await queue.get() for _ in range(5)]
    await messages[2].nack(requeue=False, multiple=True)  # drops 0, 1, 2
    await messages[4].ack(multiple=True)  # acks 3, 4
    assert (await queue.declare()).message_count == 0
    assert await queue.get(fail=False) is None


async def test_recover_redelivers_unacked_messages(connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(b"kept"), routing_key=queue.name)
    first = await queue.get()
    assert not first.redelivered
    await (await channel.get_underlay_channel()).basic_recover(requeue=True)
    second = await queue.get(no_ack=True)
    assert (second.body, second.redelivered) == (b"kept", True)


async def test_closing_a_channel_requeues_its_unacked_messages(connection) -> None:
    holder = await connection.channel()
    queue = await holder.declare_queue(unique("q"), auto_delete=False)
    await holder.default_exchange.publish(aio_pika.Message(b"held"), routing_key=queue.name)
    message = await queue.get()
    assert message.body == b"held"
    await holder.close()
    other = await connection.channel()
    again = await (await other.get_queue(queue.name)).get(no_ack=True)
    assert (again.body, again.redelivered) == (b"held", True)
    await other.queue_delete(queue.name)


async def test_transactions_commit_and_rollback(connection) -> None:
    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue(exclusive=True)
    transaction = channel.transaction()
    await transaction.select()
    await channel.default_exchange.publish(aio_pika.Message(b"rolled-back"), routing_key=queue.name)
    await transaction.rollback()
    await channel.default_exchange.publish(aio_pika.Message(b"committed"), routing_key=queue.name)
    assert (await queue.declare()).message_count == 0  # nothing visible before commit
    await transaction.commit()
    assert (await queue.get(no_ack=True)).body == b"committed"
    assert await queue.get(fail=False) is None


async def test_exclusive_queue_is_private_and_dies_with_its_connection(node: RunningNode) -> None:
    owner = await aio_pika.connect(node.url)
    channel = await owner.channel()
    queue = await channel.declare_queue(unique("excl"), exclusive=True)
    other = await aio_pika.connect(node.url)
    other_channel = await other.channel()
    with pytest.raises(aiormq.exceptions.ChannelLockedResource):
        await other_channel.declare_queue(queue.name, passive=True)
    await owner.close()
    checker = await other.channel()
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await checker.declare_queue(queue.name, passive=True)
    await other.close()


async def test_auto_delete_queue_goes_with_its_last_consumer(connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(unique("auto"), auto_delete=True)
    first_tag = await queue.consume(ignore)
    second_tag = await queue.consume(ignore)
    await queue.cancel(first_tag)
    assert (await channel.declare_queue(queue.name, passive=True)).name == queue.name
    await queue.cancel(second_tag)
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await channel.declare_queue(queue.name, passive=True)


async def test_consumer_is_told_when_its_queue_is_deleted(connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(unique("doomed"))
    await queue.consume(ignore, consumer_tag="watcher")
    underlying = await channel.get_underlay_channel()
    assert "watcher" in underlying.consumers
    admin = await connection.channel()
    await admin.queue_delete(queue.name)
    for _ in range(100):
        if "watcher" not in underlying.consumers:
            break
        await asyncio.sleep(0.05)
    assert "watcher" not in underlying.consumers  # aiormq drops a consumer on basic.cancel


async def test_exclusive_consumer_keeps_others_out(connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.consume(ignore, exclusive=True)
    other = await connection.channel()
    other_queue = await other.get_queue(queue.name)
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await other_queue.consume(ignore)


async def test_server_named_queue(connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    assert queue.name.startswith("amq.gen-") and len(queue.name) == len("amq.gen-") + 22


async def test_headers_with_floats_decimals_and_timestamps_round_trip(connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    headers = {
        "float": 2.5,
        "decimal": decimal.Decimal("12.345"),
        "when": when,
        "list": [1, 2.5, "x", [True]],
        "table": {"a": {"b": None}},
    }
    await channel.default_exchange.publish(
        aio_pika.Message(b"", headers=headers, timestamp=when), routing_key=queue.name
    )
    message = await queue.get(no_ack=True)
    assert message.body == b""
    assert message.headers["float"] == 2.5
    assert message.headers["decimal"] == decimal.Decimal("12.345")
    assert message.headers["when"].replace(tzinfo=datetime.UTC) == when
    assert message.headers["list"] == [1, 2.5, "x", [True]]
    assert message.headers["table"] == {"a": {"b": None}}


async def test_many_confirmed_publishes_all_arrive_once(connection) -> None:
    channel = await connection.channel(publisher_confirms=True)
    queue = await channel.declare_queue(exclusive=True)
    count = 2000
    await asyncio.gather(
        *(
            channel.default_exchange.publish(
                aio_pika.Message(str(number).encode()), routing_key=queue.name
            )
            for number in range(count)
        )
    )
    received: asyncio.Queue = asyncio.Queue()
    await queue.consume(received.put, no_ack=True)
    bodies = [message.body for message in await collect(received, count)]
    assert bodies == [str(number).encode() for number in range(count)]
