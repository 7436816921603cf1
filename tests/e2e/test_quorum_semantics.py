"""Poison messages, dead-lettering and length limits on three real nodes, with pika.

Each test asserts the headers and counts a RabbitMQ 4.x user would see: x-delivery-count on
redeliveries from quorum queues, x-death (most recent first, counted per queue and reason) with
the x-first-death-* and x-last-death-* headers, basic.nack for reject-publish. The tests that
kill the leader midway run on a cluster of their own. One test per feature: the rules' variants
(default and classic delivery limits, length in bytes, expiry at the head, priorities, live
prefetch) are apply calls in tests/replication/test_queue_rules.py.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from pamqp import body as content_body
from pamqp import commands, header

from warrenmq.cluster.config import Member
from warrenmq.cluster.local import LocalCluster

from .operations import READY_S, running_cluster
from .rawclient import RawClient

QUORUM = {"x-queue-type": "quorum"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("quorum-semantics")) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path) as cluster:
        yield cluster


def url(member: Member) -> str:
    return f"amqp://guest:guest@{member.host}:{member.amqp_port}/"


def connect(member: Member) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url(member)))


@pytest.fixture
def channel(
    shared_cluster: LocalCluster,
) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = connect(shared_cluster.members[1])
    yield connection.channel()
    if connection.is_open:
        connection.close()


def dead_letter_pair(channel, *, routing_key: str | None = None, **queue_arguments) -> tuple:
    """A quorum work queue dead-lettering to a direct exchange with one queue behind it."""
    work, dlx, dead = unique("work"), unique("dlx"), unique("dead")
    channel.exchange_declare(dlx, "direct")
    channel.queue_declare(dead, durable=True, arguments=QUORUM)
    channel.queue_bind(dead, dlx, routing_key or work)
    arguments = {**QUORUM, "x-dead-letter-exchange": dlx, **queue_arguments}
    if routing_key is not None:
        arguments["x-dead-letter-routing-key"] = routing_key
    channel.queue_declare(work, durable=True, arguments=arguments)
    return work, dlx, dead


def dead_letter_loop(channel, **retry_arguments) -> tuple[str, str, str, str]:
    """work dead-letters through one fanout exchange to retry, retry through another to work."""
    work, retry, to_retry, to_work = (unique(name) for name in ("work", "retry", "r", "w"))
    for exchange in (to_retry, to_work):
        channel.exchange_declare(exchange, "fanout")
    channel.queue_declare(
        work, durable=True, arguments={**QUORUM, "x-dead-letter-exchange": to_retry}
    )
    channel.queue_declare(
        retry,
        durable=True,
        arguments={**QUORUM, **retry_arguments, "x-dead-letter-exchange": to_work},
    )
    channel.queue_bind(retry, to_retry)
    channel.queue_bind(work, to_work)
    return work, retry, to_retry, to_work


def get(channel, queue: str, timeout_s: float = 10.0):
    """basic.get until a message arrives (dead-lettering is one replicated step, but the get
    may be answered before a confirm from another channel reached this one)."""
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout_s)
    while datetime.datetime.now() < deadline:
        method, properties, body = channel.basic_get(queue)
        if method is not None:
            return method, properties, body
    raise AssertionError(f"nothing arrived in {queue}")


def reject_until_gone(channel, queue: str, deliveries_max: int) -> list[dict]:
    """Take the one message in `queue` and nack it back until the queue lets it go."""
    seen = []
    for _ in range(deliveries_max + 1):
        method, properties, _ = channel.basic_get(queue)
        if method is None:
            return seen
        seen.append({"redelivered": method.redelivered, "headers": properties.headers or {}})
        channel.basic_nack(method.delivery_tag, requeue=True)
    raise AssertionError(f"still there after {deliveries_max} deliveries: {seen[-1]}")


# --- poison messages ----------------------------------------------------------------------


def test_delivery_limit_counts_every_return_then_dead_letters(channel) -> None:
    work, dlx, dead = dead_letter_pair(channel, routing_key="poison", **{"x-delivery-limit": 2})
    channel.confirm_delivery()
    channel.basic_publish("", work, b"poison", pika.BasicProperties(headers={"app": "kept"}))
    seen = reject_until_gone(channel, work, 10)
    assert [d["redelivered"] for d in seen] == [False, True, True]
    assert [d["headers"].get("x-delivery-count") for d in seen] == [None, 1, 2]
    assert all(d["headers"]["app"] == "kept" for d in seen)
    method, properties, body = get(channel, dead)
    assert (method.exchange, method.routing_key, body) == (dlx, "poison", b"poison")
    headers = properties.headers
    (death,) = headers["x-death"]
    assert {key: death[key] for key in ("count", "reason", "queue", "exchange")} == {
        "count": 1,
        "reason": "delivery_limit",
        "queue": work,
        "exchange": "",
    }
    assert death["routing-keys"] == [work]
    assert isinstance(death["time"], datetime.datetime)
    assert headers["x-first-death-reason"] == headers["x-last-death-reason"] == "delivery_limit"
    assert headers["x-first-death-queue"] == work and headers["x-first-death-exchange"] == ""
    assert headers["app"] == "kept"
    channel.basic_ack(method.delivery_tag)


# --- dead-lettering -----------------------------------------------------------------------


def test_reject_without_requeue_dead_letters_with_the_original_routing_key(channel) -> None:
    work, dlx, dead = dead_letter_pair(channel)
    channel.basic_publish("", work, b"no")
    method, _, _ = get(channel, work)
    channel.basic_reject(method.delivery_tag, requeue=False)
    method, properties, body = get(channel, dead)
    assert (method.exchange, method.routing_key, body) == (dlx, work, b"no")
    (death,) = properties.headers["x-death"]
    assert (death["reason"], death["count"], death["queue"]) == ("rejected", 1, work)
    assert channel.queue_declare(work, passive=True).method.message_count == 0


def test_x_death_counts_per_queue_and_reason_most_recent_first(channel) -> None:
    # work -> (rejected) -> back via dlx to retry -> (rejected) -> back to work, twice round
    work, retry, _, dlx_to_work = dead_letter_loop(channel)
    channel.basic_publish("", work, b"loop")
    for queue in (work, retry, work):
        method, _, _ = get(channel, queue)
        channel.basic_nack(method.delivery_tag, requeue=False)
    method, properties, _ = get(channel, retry)
    deaths = [(d["queue"], d["reason"], d["count"]) for d in properties.headers["x-death"]]
    assert deaths == [(work, "rejected", 2), (retry, "rejected", 1)]
    headers = properties.headers
    assert (headers["x-first-death-queue"], headers["x-last-death-queue"]) == (work, work)
    assert headers["x-last-death-exchange"] == dlx_to_work
    assert headers["x-first-death-exchange"] == ""
    channel.basic_ack(method.delivery_tag)


# --- length limits ------------------------------------------------------------------------


def test_max_length_drops_from_the_head_into_the_dead_letter_exchange(channel) -> None:
    work, _, dead = dead_letter_pair(channel, **{"x-max-length": 2})
    channel.confirm_delivery()
    for body in (b"m1", b"m2", b"m3"):
        channel.basic_publish("", work, body)
    assert [get(channel, work, 1)[2] for _ in range(2)] == [b"m2", b"m3"]
    _, properties, body = get(channel, dead)
    assert body == b"m1" and properties.headers["x-death"][0]["reason"] == "maxlen"


def test_reject_publish_nacks_the_publisher_and_keeps_the_queue(channel) -> None:
    full, other = unique("full"), unique("other")
    exchange = unique("both")
    channel.exchange_declare(exchange, "fanout")
    channel.queue_declare(
        full,
        durable=True,
        arguments={**QUORUM, "x-max-length": 1, "x-overflow": "reject-publish"},
    )
    channel.queue_declare(other, durable=True, arguments=QUORUM)
    channel.queue_bind(full, exchange)
    channel.queue_bind(other, exchange)
    channel.confirm_delivery()
    channel.basic_publish(exchange, "", b"first")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish(exchange, "", b"second")
    channel.basic_publish("", other, b"third")  # confirms go on after a nack
    assert channel.queue_declare(full, passive=True).method.message_count == 1
    # a queue that refused the message does not stop the others from taking it
    assert channel.queue_declare(other, passive=True).method.message_count == 3


# --- arguments are checked on declare -----------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"x-max-length": "ten"}, '"expected integer, got longstr"'),
        ({"x-max-length-bytes": -1}, "{value_negative,-1}"),
        ({"x-message-ttl": True}, '"expected integer, got bool"'),
        ({"x-overflow": "drop-tail"}, "invalid_overflow"),
        ({"x-dead-letter-strategy": "twice"}, "invalid_dlx_strategy"),
        ({"x-single-active-consumer": "yes"}, "{unacceptable_type,longstr}"),
        ({"x-expires": 0}, "{value_zero,0}"),
        ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
    ],
)
def test_invalid_queue_arguments_are_refused_with_406(
    shared_cluster: LocalCluster, arguments: dict, reason: str
) -> None:
    connection = connect(shared_cluster.members[0])
    channel = connection.channel()
    queue = unique("bad")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare(queue, durable=True, arguments={**QUORUM, **arguments})
    argument = next(iter(arguments))
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg '{argument}' for queue '{queue}' in vhost '/': {reason}"
    )
    connection.close()


@pytest.mark.parametrize(
    ("argument", "first", "second"),
    [
        ("x-max-length", 5, 6),
        ("x-message-ttl", 1000, 2000),
        ("x-dead-letter-exchange", "a", "b"),
        ("x-single-active-consumer", True, False),
        ("x-consumer-timeout", 60000, 120000),
    ],
)
def test_a_redeclare_with_another_argument_is_inequivalent(
    channel, argument: str, first: object, second: object
) -> None:
    queue = unique("limited")
    channel.queue_declare(queue, durable=True, arguments={**QUORUM, argument: first})
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare(queue, durable=True, arguments={**QUORUM, argument: second})
    assert refused.value.reply_code == 406
    assert f"inequivalent arg '{argument}'" in refused.value.reply_text


# --- the same outcomes across a leader change -----------------------------------------------


def test_delivery_limit_and_dead_letters_survive_killing_the_leader(
    own_cluster: LocalCluster,
) -> None:
    leader = own_cluster.wait_healthy(timeout_s=READY_S)
    follower = next(m for m in own_cluster.members if m.node_id != leader)
    connection = connect(follower)
    channel = connection.channel()
    work, dlx, dead = dead_letter_pair(channel, **{"x-delivery-limit": 3})
    channel.confirm_delivery()
    bodies = [b"m%d" % number for number in range(20)]
    for body in bodies:
        channel.basic_publish("", work, body)
    for _ in range(2):  # every message taken, then all returned: twice, x-delivery-count 2
        taken = [get(channel, work) for _ in bodies]
        channel.basic_nack(taken[-1][0].delivery_tag, multiple=True, requeue=True)
    own_cluster.kill(leader)
    own_cluster.wait_healthy(
        [m.node_id for m in own_cluster.members if m.node_id != leader], timeout_s=READY_S
    )
    if not connection.is_open:  # the node may have closed clients while it lost the majority
        connection = connect(follower)
        channel = connection.channel()
    taken = [get(channel, work) for _ in bodies]
    assert sorted(body for _, _, body in taken) == sorted(bodies)
    assert {properties.headers["x-delivery-count"] for _, properties, _ in taken} == {2}
    returned_again, rejected = set(), set()
    for method, _, body in taken:  # half go back once more, half are rejected outright
        requeue = int(body[1:]) % 2 == 0
        (returned_again if requeue else rejected).add(body)
        channel.basic_nack(method.delivery_tag, requeue=requeue)
    taken = [get(channel, work) for _ in returned_again]
    assert {properties.headers["x-delivery-count"] for _, properties, _ in taken} == {3}
    # the fourth return passes the limit of 3: dead-lettered, not redelivered
    channel.basic_nack(taken[-1][0].delivery_tag, multiple=True, requeue=True)
    reasons: dict[bytes, str] = {}
    for _ in bodies:
        method, properties, body = get(channel, dead)
        assert body not in reasons, "dead-lettered twice"
        reasons[body] = properties.headers["x-death"][0]["reason"]
        channel.basic_ack(method.delivery_tag)
    assert reasons == {
        **dict.fromkeys(returned_again, "delivery_limit"),
        **dict.fromkeys(rejected, "rejected"),
    }
    assert channel.queue_declare(work, passive=True).method.message_count == 0
    assert channel.basic_get(dead)[0] is None
    connection.close()


# --- TTL ----------------------------------------------------------------------------------


def test_queue_ttl_dead_letters_expired_messages(channel) -> None:
    work, _, dead = dead_letter_pair(channel, **{"x-message-ttl": 200})
    channel.confirm_delivery()
    for body in (b"a", b"b", b"c"):
        channel.basic_publish("", work, body)
    arrived = [get(channel, dead) for _ in range(3)]
    assert [body for _, _, body in arrived] == [b"a", b"b", b"c"]
    for method, properties, _ in arrived:
        (death,) = properties.headers["x-death"]
        assert (death["reason"], death["queue"]) == ("expired", work)
        assert "original-expiration" not in death
        channel.basic_ack(method.delivery_tag)
    assert channel.queue_declare(work, passive=True).method.message_count == 0


def test_per_message_expiration_is_removed_and_kept_as_original_expiration(channel) -> None:
    work, _, dead = dead_letter_pair(channel)
    channel.confirm_delivery()
    channel.basic_publish("", work, b"short", pika.BasicProperties(expiration="150"))
    method, properties, body = get(channel, dead)
    assert body == b"short" and properties.expiration is None
    (death,) = properties.headers["x-death"]
    assert (death["reason"], death["original-expiration"]) == ("expired", "150")
    channel.basic_ack(method.delivery_tag)


def test_a_retry_queue_made_of_ttl_and_dead_lettering_brings_the_message_back(channel) -> None:
    work, retry, _, _ = dead_letter_loop(channel, **{"x-message-ttl": 300})
    channel.confirm_delivery()
    channel.basic_publish("", work, b"again")
    method, _, _ = get(channel, work)
    started = time.monotonic()
    channel.basic_reject(method.delivery_tag, requeue=False)
    method, properties, body = get(channel, work)
    assert body == b"again" and time.monotonic() - started >= 0.3
    deaths = [(d["queue"], d["reason"]) for d in properties.headers["x-death"]]
    assert deaths == [(retry, "expired"), (work, "rejected")]
    channel.basic_ack(method.delivery_tag)


def test_x_expires_deletes_a_queue_nobody_uses(channel) -> None:
    unused, consumed = unique("unused"), unique("consumed")
    for queue in (unused, consumed):
        channel.queue_declare(queue, durable=True, arguments={**QUORUM, "x-expires": 500})
    channel.basic_consume(consumed, lambda *_: None)
    deadline = time.monotonic() + 10
    gone = False
    while not gone and time.monotonic() < deadline:
        probe = channel.connection.channel()
        try:
            probe.queue_declare(unused, passive=True)
            probe.close()
            time.sleep(0.2)
        except pika.exceptions.ChannelClosedByBroker as closed:
            assert closed.reply_code == 404
            gone = True
    assert gone, "an unused queue with x-expires was not deleted"
    assert channel.queue_declare(consumed, passive=True).method.consumer_count == 1


@pytest.mark.parametrize(
    ("expiration", "reason"),
    [
        ("soon", "no_integer"),
        ("10s", '{leftover_string,"s"}'),
        ("-5", "{value_negative,-5}"),
    ],
)
def test_an_invalid_expiration_closes_the_channel_with_406(
    channel, expiration: str, reason: str
) -> None:
    queue = unique("expiring")
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    channel.basic_publish("", queue, b"m", pika.BasicProperties(expiration=expiration))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_declare(queue, passive=True)
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == (
        f"PRECONDITION_FAILED - invalid expiration '{expiration}': {reason}"
    )


def test_messages_expire_after_the_leader_is_killed(own_cluster: LocalCluster) -> None:
    leader = own_cluster.wait_healthy(timeout_s=READY_S)
    follower = next(m for m in own_cluster.members if m.node_id != leader)
    connection = connect(follower)
    channel = connection.channel()
    work, _, dead = dead_letter_pair(channel, **{"x-message-ttl": 1500})
    channel.confirm_delivery()
    bodies = [b"t%d" % number for number in range(50)]
    for body in bodies:
        channel.basic_publish("", work, body)
    own_cluster.kill(leader)  # the new leader's clock expires them
    own_cluster.wait_healthy(
        [m.node_id for m in own_cluster.members if m.node_id != leader], timeout_s=READY_S
    )
    if not connection.is_open:
        connection = connect(follower)
        channel = connection.channel()
    arrived = []
    for _ in bodies:
        method, properties, body = get(channel, dead, timeout_s=30)
        assert properties.headers["x-death"][0]["reason"] == "expired"
        arrived.append(body)
        channel.basic_ack(method.delivery_tag)
    assert sorted(arrived) == sorted(bodies)
    assert channel.basic_get(dead)[0] is None
    assert channel.queue_declare(work, passive=True).method.message_count == 0
    connection.close()


# --- consumers ----------------------------------------------------------------------------


class Collector:
    """A pika consumer that keeps what it receives, unacknowledged unless told to ack."""

    def __init__(self, connection: pika.BlockingConnection, queue: str, **consume) -> None:
        self.connection = connection
        self.channel = connection.channel()
        prefetch = consume.pop("prefetch", 0)
        if prefetch:
            self.channel.basic_qos(prefetch_count=prefetch)
        self.received: list[tuple[int, bytes, bool]] = []  # delivery tag, body, redelivered
        self.tag = self.channel.basic_consume(queue, self.on_message, **consume)

    def on_message(self, channel, method, properties, body) -> None:
        self.received.append((method.delivery_tag, body, method.redelivered))

    def pump(self, seconds: float = 0.5) -> list[bytes]:
        self.connection.process_data_events(time_limit=seconds)
        return [body for _, body, _ in self.received]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            self.pump(0.1)
        return [body for _, body, _ in self.received]


def declared_queue(member: Member, prefix: str, **arguments) -> tuple[str, pika.BlockingConnection]:
    """A new quorum queue, and the connection that declared it (close it at the end)."""
    queue, setup = unique(prefix), connect(member)
    setup.channel().queue_declare(queue, durable=True, arguments={**QUORUM, **arguments})
    return queue, setup


def publish_all(member: Member, queue: str, bodies: list[bytes]) -> None:
    connection = connect(member)
    channel = connection.channel()
    channel.confirm_delivery()
    for body in bodies:
        channel.basic_publish("", queue, body)
    connection.close()


def test_single_active_consumer_gets_everything_until_it_goes(shared_cluster) -> None:
    one, two = shared_cluster.members[0], shared_cluster.members[2]
    queue, setup = declared_queue(one, "sac", **{"x-single-active-consumer": True})
    first = Collector(connect(one), queue)
    second = Collector(connect(two), queue)
    publish_all(one, queue, [b"a", b"b", b"c"])
    assert first.wait_for(3) == [b"a", b"b", b"c"]
    assert second.pump() == []
    first.channel.basic_ack(first.received[0][0])  # "a" done; "b" and "c" stay unacked
    first.pump(0.2)
    first.connection.close()  # the active consumer goes: the next one takes over
    assert second.wait_for(2) == [b"b", b"c"]
    assert all(redelivered for _, _, redelivered in second.received)
    publish_all(two, queue, [b"d"])
    assert second.wait_for(3)[-1] == b"d"
    second.connection.close()
    setup.close()


def test_a_consumer_priority_must_be_an_integer(channel) -> None:
    queue = unique("bad-consumer")
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.basic_consume(queue, lambda *_: None, arguments={"x-priority": "high"})
    assert refused.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{queue}' in vhost '/': "
        '"expected integer, got longstr"'
    )


def test_single_active_consumer_moves_on_when_its_node_dies(own_cluster: LocalCluster) -> None:
    leader = own_cluster.wait_healthy(timeout_s=READY_S)
    doomed = own_cluster.member(leader)  # the active consumer is on the leader
    survivor = next(m for m in own_cluster.members if m.node_id != leader)
    queue, setup = declared_queue(survivor, "sac-kill", **{"x-single-active-consumer": True})
    active = Collector(connect(doomed), queue)
    standby = Collector(connect(survivor), queue)
    publish_all(survivor, queue, [b"a", b"b"])
    assert active.wait_for(2) == [b"a", b"b"]  # unacked when its node dies
    own_cluster.kill(doomed.node_id)
    # a new leader, then node_down_after_s later it declares the old one lost: hand-over
    assert sorted(standby.wait_for(2, timeout_s=30)) == [b"a", b"b"]
    publish_all(survivor, queue, [b"c"])
    assert standby.wait_for(3)[-1] == b"c"
    standby.connection.close()
    setup.close()


# --- sender-selected distribution -----------------------------------------------------------


def test_cc_and_bcc_route_to_more_queues_and_bcc_is_never_seen(channel) -> None:
    exchange = unique("cc")
    channel.exchange_declare(exchange, "direct")
    queues = {key: unique(key) for key in ("to", "cc", "bcc")}
    for key, queue in queues.items():
        channel.queue_declare(queue, durable=True, arguments=QUORUM)
        channel.queue_bind(queue, exchange, key)
    channel.confirm_delivery()
    headers = {"CC": ["cc"], "BCC": ["bcc"], "app": 1}
    channel.basic_publish(exchange, "to", b"m", pika.BasicProperties(headers=headers))
    for queue in queues.values():
        method, properties, body = get(channel, queue)
        assert (method.routing_key, body) == ("to", b"m")
        assert properties.headers == {"CC": ["cc"], "app": 1}
        channel.basic_ack(method.delivery_tag)


def test_x_death_routing_keys_include_cc_but_not_bcc(channel) -> None:
    work, dlx, dead = dead_letter_pair(channel)
    copy = unique("copy")
    channel.queue_declare(copy, durable=True, arguments=QUORUM)
    channel.confirm_delivery()
    properties = pika.BasicProperties(headers={"CC": [copy], "BCC": ["hidden"]})
    channel.basic_publish("", work, b"m", properties)
    method, _, _ = get(channel, work)
    channel.basic_reject(method.delivery_tag, requeue=False)
    method, properties, _ = get(channel, dead)
    assert properties.headers["x-death"][0]["routing-keys"] == [work, copy]
    assert "BCC" not in properties.headers
    channel.basic_ack(method.delivery_tag)


def test_a_consumer_past_its_timeout_loses_its_channel_with_406(shared_cluster) -> None:
    member = shared_cluster.members[2]
    queue = unique("slow")
    setup = connect(member)
    setup_channel = setup.channel()
    setup_channel.queue_declare(
        queue, durable=True, arguments={**QUORUM, "x-consumer-timeout": 1000}
    )
    slow = RawClient(member.amqp_port, timeout_s=15)
    slow.open()
    slow.open_channel(1)
    slow.send_frame(1, commands.Basic.Consume(queue=queue))
    slow.expect(commands.Basic.ConsumeOk, 1)
    publish_all(member, queue, [b"held"])
    slow.expect(commands.Basic.Deliver, 1)
    slow.expect(header.ContentHeader, 1)
    slow.expect(content_body.ContentBody, 1)
    close = slow.expect(commands.Channel.Close, 1)  # it never acks
    assert close.reply_code == 406
    assert close.reply_text.startswith(
        "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. "
        "Timeout value used: 1000 ms."
    )
    slow.send_frame(1, commands.Channel.CloseOk())
    method, _, body = get(setup_channel, queue)  # back in the queue, for someone else
    assert body == b"held" and method.redelivered
    setup_channel.basic_ack(method.delivery_tag)
    slow.close()
    setup.close()


# --- the delayed-message exchange -----------------------------------------------------------


def delayed_pair(channel, delayed_type: str = "direct") -> tuple[str, str]:
    exchange, queue = unique("later"), unique("arrivals")
    channel.exchange_declare(
        exchange, "x-delayed-message", arguments={"x-delayed-type": delayed_type}
    )
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    channel.queue_bind(queue, exchange, "k")
    return exchange, queue


def test_a_delayed_message_arrives_after_its_delay(channel) -> None:
    exchange, queue = delayed_pair(channel)
    channel.confirm_delivery()
    started = time.monotonic()
    channel.basic_publish(exchange, "k", b"later", pika.BasicProperties(headers={"x-delay": 800}))
    channel.basic_publish(exchange, "k", b"now")  # no x-delay: routed at once
    assert get(channel, queue)[2] == b"now"
    method, properties, body = get(channel, queue)
    assert body == b"later" and time.monotonic() - started >= 0.8
    assert properties.headers["x-delay"] == 800
    channel.basic_ack(method.delivery_tag, multiple=True)


def test_a_delayed_exchange_needs_an_existing_delayed_type(channel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.exchange_declare(unique("later"), "x-delayed-message", arguments={})
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == (
        "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"
    )


def test_delayed_messages_survive_killing_the_leader(own_cluster: LocalCluster) -> None:
    """RabbitMQ's plugin keeps delayed messages on one node; here they are replicated."""
    leader = own_cluster.wait_healthy(timeout_s=READY_S)
    follower = next(m for m in own_cluster.members if m.node_id != leader)
    connection = connect(follower)
    channel = connection.channel()
    exchange, queue = delayed_pair(channel, "fanout")
    channel.confirm_delivery()
    bodies = [b"d%d" % number for number in range(20)]
    for number, body in enumerate(bodies):
        delay = 2000 + 50 * number
        channel.basic_publish(exchange, "", body, pika.BasicProperties(headers={"x-delay": delay}))
    own_cluster.kill(leader)
    own_cluster.wait_healthy(
        [m.node_id for m in own_cluster.members if m.node_id != leader], timeout_s=READY_S
    )
    if not connection.is_open:
        connection = connect(follower)
        channel = connection.channel()
    arrived = [get(channel, queue, timeout_s=30)[2] for _ in bodies]
    assert arrived == bodies  # in due order, each once
    assert channel.basic_get(queue)[0] is None  # nothing twice
    connection.close()


# --- direct reply-to ----------------------------------------------------------------------


def test_direct_reply_to_answers_a_requester_on_another_node(shared_cluster) -> None:
    client_node, server_node = shared_cluster.members[0], shared_cluster.members[2]
    requests = unique("rpc")
    server = connect(server_node)
    server_channel = server.channel()
    server_channel.queue_declare(requests, durable=True, arguments=QUORUM)
    client = connect(client_node)
    client_channel = client.channel()
    replies: list[tuple[str, bytes]] = []
    client_channel.basic_consume(
        "amq.rabbitmq.reply-to",
        lambda ch, method, properties, body: replies.append((properties.correlation_id, body)),
        auto_ack=True,
    )
    client_channel.basic_publish(
        "",
        requests,
        b"ping",
        pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"),
    )
    method, properties, body = get(server_channel, requests)
    assert body == b"ping" and properties.reply_to.startswith("amq.rabbitmq.reply-to.")
    server_channel.basic_publish(
        "", properties.reply_to, b"pong", pika.BasicProperties(correlation_id="c1")
    )
    server_channel.basic_ack(method.delivery_tag)
    deadline = time.monotonic() + 10
    while not replies and time.monotonic() < deadline:
        client.process_data_events(time_limit=0.1)
    assert replies == [("c1", b"pong")]
    client.close()
    server.close()


def test_direct_reply_to_needs_a_no_ack_reply_consumer_first(channel) -> None:
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.basic_publish(
            "", "anything", b"m", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to")
        )
        channel.queue_declare(unique("after"), durable=True, arguments=QUORUM)
    assert refused.value.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"


def test_a_reply_consumer_cannot_acknowledge(shared_cluster) -> None:
    connection = connect(shared_cluster.members[1])
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.basic_consume("amq.rabbitmq.reply-to", lambda *_: None, auto_ack=False)
    assert refused.value.reply_text == "PRECONDITION_FAILED - reply consumer cannot acknowledge"
    connection.close()


# --- message priorities -------------------------------------------------------------------


# --- at-least-once dead-lettering -----------------------------------------------------------

AT_LEAST_ONCE = {
    **QUORUM,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def test_at_least_once_keeps_dead_letters_until_the_target_takes_them(channel) -> None:
    source, dlx, target = unique("source"), unique("dlx"), unique("narrow")
    channel.exchange_declare(dlx, "fanout")
    channel.queue_declare(
        target,
        durable=True,
        arguments={**QUORUM, "x-max-length": 1, "x-overflow": "reject-publish"},
    )
    channel.queue_bind(target, dlx)
    channel.queue_declare(
        source, durable=True, arguments={**AT_LEAST_ONCE, "x-dead-letter-exchange": dlx}
    )
    channel.confirm_delivery()
    bodies = [b"one", b"two", b"three"]
    for body in bodies:
        channel.basic_publish("", source, body)
    taken = [get(channel, source) for _ in bodies]
    channel.basic_nack(taken[-1][0].delivery_tag, multiple=True, requeue=False)
    arrived = []
    for _ in bodies:  # the target holds one at a time; the rest wait with the source queue
        method, properties, body = get(channel, target)
        assert properties.headers["x-death"][0]["reason"] == "rejected"
        arrived.append(body)
        channel.basic_ack(method.delivery_tag)
    assert arrived == bodies
    time.sleep(1.5)
    assert channel.basic_get(target)[0] is None  # each once
    assert channel.queue_declare(source, passive=True).method.message_count == 0


def test_at_least_once_waits_for_a_missing_dead_letter_exchange(channel) -> None:
    source, dlx, target = unique("source"), unique("late-dlx"), unique("late")
    channel.queue_declare(
        source, durable=True, arguments={**AT_LEAST_ONCE, "x-dead-letter-exchange": dlx}
    )
    channel.confirm_delivery()
    channel.basic_publish("", source, b"kept")
    method, _, _ = get(channel, source)
    channel.basic_reject(method.delivery_tag, requeue=False)
    time.sleep(1.5)  # nowhere to go yet: it stays with the source queue
    channel.exchange_declare(dlx, "fanout")
    channel.queue_declare(target, durable=True, arguments=QUORUM)
    channel.queue_bind(target, dlx)
    method, _, body = get(channel, target)
    assert body == b"kept"
    channel.basic_ack(method.delivery_tag)
