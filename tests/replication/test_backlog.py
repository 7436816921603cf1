"""A queue's backlog (queue.py's `Backlog`): messages as column cells, taken in order, built
back whole, pickled as columns, and letting go of each body as it leaves."""

from __future__ import annotations

import dataclasses
import pickle
import typing
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warrenmq.replication import commands as c
from warrenmq.replication import queue as queue_module
from warrenmq.replication.body import Body
from warrenmq.replication.body_store import BodyStore
from warrenmq.replication.message import Message
from warrenmq.replication.queue import Backlog

from .harness import VHOST, Harness, channel_ref, consume_command, publish_command

REF = channel_ref(1)


def message(number: int, routing_key: str = "q") -> Message:
    return Message("", routing_key, b"\x00\x00", Body(number, b"%d" % number))


# what a test does to a backlog and to its model, a deque of (seq, message, expires_at_ms)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(["q", "q", "other"]), st.booleans()),
        st.tuples(st.just("take")),
        st.tuples(st.just("head")),
        st.tuples(st.just("pickle")),
        st.tuples(st.just("clear")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_a_backlog_gives_back_what_was_appended_in_order_across_chunks_and_pickles(
    steps: list[tuple[typing.Any, ...]],
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(queue_module, "BACKLOG_CHUNK", 3)  # chunk boundaries within reach
        backlog, model = Backlog(), deque[tuple[int, Message, int | None]]()
        seq = 0
        for step in steps:
            if step[0] == "append":
                expires_at_ms = seq * 10 if step[2] else None
                model.append((seq, message(seq, step[1]), expires_at_ms))
                backlog.append(*model[-1])
                seq += 1
            elif step[0] == "take" and model:
                expected = model.popleft()
                entry = backlog.take()
                assert (entry.seq, entry.message, entry.expires_at_ms) == expected
                assert not entry.redelivered and entry.delivery_count == 0 and entry.level == 0
            elif step[0] == "head":
                head = backlog.head()
                assert (head.seq, head.message) == model[0][:2] if model else head is None
                assert backlog.head() is head
            elif step[0] == "pickle":
                restored = pickle.loads(pickle.dumps(backlog, protocol=5))
                assert restored == backlog
                backlog = restored
            elif step[0] == "clear":
                backlog.clear()
                model.clear()
            assert len(backlog) == len(model)
            assert [(e.seq, e.message, e.expires_at_ms) for e in backlog] == list(model)
            assert [body.id for run in backlog.body_runs() for body in run] == [
                m.body.id for _, m, _ in model
            ]
            if model:
                assert backlog.first_seq() == model[0][0]


def test_messages_of_one_shape_share_one_tuple_and_come_back_with_their_own_bodies() -> None:
    backlog = Backlog()
    for number in range(5):
        backlog.append(number, message(number), None)
    backlog.append(5, message(5, "other"), None)
    shapes = [cell for chunk in backlog._chunks for cell in chunk.shapes]
    assert len({id(shape) for shape in shapes}) == 2
    restored = pickle.loads(pickle.dumps(backlog, protocol=5))
    assert [entry.message.body.id for entry in restored] == list(range(6))
    assert [entry.message.routing_key for entry in restored][-2:] == ["q", "other"]


def test_a_message_taken_from_the_backlog_lets_go_of_its_body(tmp_path: Path) -> None:
    """A cell keeps its Body alive (body.py: liveness is the reference count): once taken and
    acknowledged, the body must die, though the chunk it sat in still holds others."""
    store = BodyStore(tmp_path)
    harness = Harness()
    harness.broker.bodies = store
    harness.declare_queue(REF, "q", arguments={"x-queue-type": "quorum"})
    for number in range(3):
        harness.apply(publish_command(REF, "q", b"body %d" % number))
    assert store.live_count == 3
    harness.apply(c.Qos(channel=REF, prefetch_count=1, global_=False))
    harness.apply(consume_command(REF, "q", "ctag"))
    harness.apply(c.Settle(channel=REF, delivery_tag=1, multiple=False))
    assert store.live_count == 2  # one delivered and unacked, one waiting
    assert harness.broker.query_queue(VHOST, "q").ready == 1
    store.close()


def test_headers_that_are_equal_but_not_alike_are_not_shared() -> None:
    """An AMQP 1.0 publish has fixed properties and its own headers table: 1, True and 1.0
    compare equal, but each message must keep its own."""
    backlog = Backlog()
    values = [1, True, 1.0]
    for number, value in enumerate(values):
        backlog.append(number, dataclasses.replace(message(number), headers={"a": value}), None)
    restored = pickle.loads(pickle.dumps(backlog, protocol=5))
    for each in (backlog, restored):
        kept = [entry.message.headers["a"] for entry in each]  # type: ignore[index]
        assert [type(value) for value in kept] == [int, bool, float]
