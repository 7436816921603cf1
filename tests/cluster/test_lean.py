"""The benchmark's lean client and its loss accounting, without sockets: confirms in any order
the broker may send them, deliveries split across body frames, acks for complete messages only,
and a lost message counted in the queue it was routed to."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, frame, header

from warrenmq.cluster import bench, lean


def _publisher(sent: int) -> lean.Publisher:
    publisher = lean.Publisher(_unconnected(), "", "q", 16, window=sent, first_id=1000)
    publisher.sent = sent
    publisher._sent_at.extend([0.0] * sent)
    return publisher


def _unconnected() -> lean.Connection:
    return lean.Connection.__new__(lean.Connection)  # no handshake: the tests feed frames


@st.composite
def settlements(draw: st.DrawFn) -> tuple[int, list[tuple[int, bool, bool]], set[int]]:
    """A broker's basic.ack/basic.nack frames for `sent` tags: each tag settled once, singly
    or by a multiple one, in any order a broker may use, with resends of settled tags mixed
    in (which a client must not count again). Also: the tags acked (not nacked)."""
    sent = draw(st.integers(1, 60))
    unsettled = list(range(1, sent + 1))
    frames: list[tuple[int, bool, bool]] = []
    acked: set[int] = set()
    while unsettled:
        acked_now = draw(st.booleans())
        if draw(st.booleans()):  # a multiple settle up to some tag
            upto = draw(st.sampled_from(unsettled))
            covered = [tag for tag in unsettled if tag <= upto]
            frames.append((upto, True, acked_now))
        else:
            covered = [draw(st.sampled_from(unsettled))]
            frames.append((covered[0], False, acked_now))
        if acked_now:
            acked.update(covered)
        unsettled = [tag for tag in unsettled if tag not in covered]
        if draw(st.integers(0, 4)) == 0:
            settled_before = draw(st.sampled_from(covered))
            frames.append((settled_before, False, draw(st.booleans())))
    return sent, frames, acked


@given(settlements())
def test_every_tag_is_counted_once_however_the_broker_settles(
    case: tuple[int, list[tuple[int, bool, bool]], set[int]],
) -> None:
    sent, frames, acked = case
    publisher = _publisher(sent)
    for delivery_tag, multiple, is_ack in frames:
        publisher._settle(delivery_tag, multiple, is_ack)
    assert publisher.confirmed + publisher.nacked == sent
    assert sorted(publisher.confirms.ids) == sorted(1000 + tag - 1 for tag in acked)
    assert len(publisher.confirms.latencies_ms) == publisher.confirmed
    assert publisher._lowest == sent + 1 and not publisher._ahead


def test_a_tag_never_sent_is_not_counted() -> None:
    publisher = _publisher(3)
    publisher._settle(7, multiple=False, acked=True)
    assert publisher.confirmed == 0


def _delivery(delivery_tag: int, body: bytes, frame_max: int) -> bytes:
    """basic.deliver, its content header and the body in frames of at most frame_max."""
    method = commands.Basic.Deliver("bench", delivery_tag, False, "", "q")
    data = frame.marshal(method, lean.CHANNEL)
    data += frame.marshal(
        header.ContentHeader(0, len(body), commands.Basic.Properties()), lean.CHANNEL
    )
    room = frame_max - 8
    for start in range(0, len(body), room):
        chunk = body[start : start + room]
        data += lean.FRAME_HEADER.pack(lean.BODY_FRAME, lean.CHANNEL, len(chunk))
        data += chunk + lean.FRAME_END
    return data


def _acks(data: bytes) -> list[tuple[int, bool]]:
    found = []
    for offset in range(0, len(data), lean.ACK_FRAME.size):
        fields = lean.ACK_FRAME.unpack_from(data, offset)
        assert fields[:5] == (lean.METHOD_FRAME, lean.CHANNEL, 13, *lean.BASIC_ACK)
        found.append((fields[5], bool(fields[6])))
    return found


@settings(deadline=None)  # a cut of 1 byte takes 60,000 reads: time is no property here
@given(
    sizes=st.lists(st.integers(16, 20_000), min_size=1, max_size=12),
    frame_max=st.integers(4096, 8192),
    cut=st.integers(1, 30_000),
    multi_ack_every=st.integers(0, 5),
)
def test_deliveries_split_anywhere_are_recorded_and_acked_when_complete(
    sizes: list[int], frame_max: int, cut: int, multi_ack_every: int
) -> None:
    bodies = [
        lean.STAMP.pack(number, 0) + bytes(size - lean.MIN_SIZE_BYTES)
        for number, size in enumerate(sizes)
    ]
    stream = b"".join(_delivery(tag, body, frame_max) for tag, body in enumerate(bodies, 1))
    connection = _unconnected()
    connection.buffer = bytearray()
    consumer = lean.Consumer(connection, "q", qos=0, multi_ack_every=multi_ack_every)
    acks = bytearray()
    for start in range(0, len(stream), cut):  # the socket returns any number of bytes
        connection.buffer += stream[start : start + cut]
        consumer._read_deliveries(acks)
        if consumer._unacked:  # a quiet moment after each read
            consumer._ack(acks, multiple=True)
        # tags run 1, 2, …: an ack never covers a message whose body is still coming
        assert all(tag <= consumer.received for tag, _ in _acks(bytes(acks)))
    assert list(consumer.arrivals.ids) == list(range(len(sizes)))
    assert consumer.received == len(sizes)
    acked = _acks(bytes(acks))
    assert acked[-1][0] == len(sizes)  # the last ack covers the last message
    tags = [tag for tag, _ in acked]
    assert tags == sorted(tags) and len(set(tags)) == len(tags)
    if not multi_ack_every:
        assert acked == [(tag, False) for tag in range(1, len(sizes) + 1)]


def test_a_confirmed_message_missing_from_one_fanout_queue_is_lost() -> None:
    producer = bench._ProducerResult(queues=["a", "b", "c"])
    producer.confirms.ids.extend([1, 2])
    consumers = []
    for queue, ids in (("a", [1, 2]), ("b", [1, 2, 2]), ("c", [2])):
        consumer = bench._ConsumerResult(queue=queue)
        consumer.arrivals.ids.extend(ids)
        consumers.append(consumer)
    assert bench._losses([producer], consumers) == (1, 1)


def test_ack_frame_is_what_pamqp_encodes() -> None:
    packed = lean.ACK_FRAME.pack(
        lean.METHOD_FRAME, lean.CHANNEL, 13, *lean.BASIC_ACK, 2**40 + 3, True, lean.FRAME_END[0]
    )
    assert packed == frame.marshal(commands.Basic.Ack(2**40 + 3, multiple=True), lean.CHANNEL)
    assert struct.unpack_from(">Q", packed, 11)[0] == 2**40 + 3


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", ("127.0.0.1", 5672, "guest", "guest", "/")),
        ("amqp://node-2", ("node-2", 5672, "guest", "guest", "/")),
        ("amqp://a%40b:p%3Aw%2F@h:5999/%2F", ("h", 5999, "a@b", "p:w/", "/")),
        ("amqp://ops:secret@[::1]:5673/orders%2Feu", ("::1", 5673, "ops", "secret", "orders/eu")),
    ],
)
def test_a_bench_url_gives_its_credentials_and_vhost_to_the_lean_client(
    url: str, endpoint: tuple[str, int, str, str, str]
) -> None:
    assert bench._endpoint(url) == endpoint
