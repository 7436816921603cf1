"""Random command logs against the broker, checked after every step against a simple model.

The model knows, per queue, which messages are alive (published or dead-lettered there, not yet
consumed for good), how often each went back to its queue, and, per channel, which delivery
tags are outstanding. The queues have rules: q0 is a quorum queue with x-max-length 3
(drop-head) and x-delivery-limit 2, q1 a quorum queue with x-max-length 4, reject-publish,
x-message-ttl 1000 and at-least-once dead-lettering (its waiting dead letters count toward its
length, as in RabbitMQ), and both dead-letter into dlq, a classic
queue of at most 3 ready messages (reject-publish) without a dead-letter exchange of its own.
The model predicts every drop and dead-lettering from those rules (drop-head takes the oldest
ready message; a full dlq refuses q0's dead letters for good and keeps q1's waiting, retried
in order on each Tick). dlq has no consumers, only basic.get, so that its room changes only
between steps. The clock moves by Tick; expiry happens at the head, whenever the broker looks
there, so the model learns which q1 messages expired from the broker and checks that each was
due, ready and the oldest left, arrives in dlq once as expired, and that after a Tick no overdue
message is left at the head.

Invariants: no message lost or duplicated except where a rule drops it, dead-lettered messages
arrive once with the reason and queue the rule gives, ready + unacked = alive for every queue,
x-delivery-count matches the returns, outstanding tags match the broker's, prefetch holds, each
consumer sees first deliveries in publish order, and replaying the encoded log or restoring a
snapshot gives the same state.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from warrenmq.replication import commands as c
from warrenmq.replication import delivery
from warrenmq.replication.queue import Entry
from warrenmq.replication.replies import (
    Annotations,
    Deliver,
    GetEmpty,
    GetOk,
    Ignored,
    MessageCount,
    Ok,
    Refused,
    Routed,
)
from warrenmq.replication.state import Message

from .harness import VHOST, Harness, publish_command

QUEUES = ("q0", "q1", "dlq")
FANOUT = "both"  # q0 and q1
DEAD = "dead"  # the dead-letter exchange of q0 and q1; dlq is bound to it
Q0_MAX_LENGTH, Q0_DELIVERY_LIMIT, Q1_MAX_LENGTH, Q1_TTL_MS, DLQ_MAX_LENGTH = 3, 2, 4, 1000, 3
DELIVERY_LIMITS = {"q0": Q0_DELIVERY_LIMIT, "q1": 20}  # quorum queues; 20 is the default
QUEUE_ARGUMENTS: dict[str, dict[str, object]] = {
    "q0": {
        "x-queue-type": "quorum",
        "x-max-length": Q0_MAX_LENGTH,
        "x-delivery-limit": Q0_DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD,
    },
    "q1": {
        "x-queue-type": "quorum",
        "x-max-length": Q1_MAX_LENGTH,
        "x-overflow": "reject-publish",
        "x-message-ttl": Q1_TTL_MS,
        "x-dead-letter-exchange": DEAD,
        "x-dead-letter-strategy": "at-least-once",
    },
    "dlq": {"x-max-length": DLQ_MAX_LENGTH, "x-overflow": "reject-publish"},
}
# A message in q0 or q1 is (id, ""); dead-lettered into dlq it is (id, "<queue>:<reason>").
Key = tuple[int, str]
# (node, connection, channel): two channels on one connection of n1, one channel on n2
CHANNELS = (("n1", 1, 1), ("n1", 1, 2), ("n2", 2, 1))
channel_indexes = st.integers(0, len(CHANNELS) - 1)
queue_indexes = st.integers(0, len(QUEUES) - 1)


class BrokerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.harness = Harness()
        self.incarnations = {"n1": 1, "n2": 1}
        self.next_id = 0
        self.alive: dict[str, set[Key]] = {queue: set() for queue in QUEUES}
        self.returns: dict[tuple[str, Key], int] = {}  # times each went back to its queue
        self.arrivals: dict[tuple[str, Key], int] = {}  # the order messages entered each queue
        self.clock_ms = 0  # the state machine's clock, moved by Tick
        self.waiting: list[Key] = []  # q1's dead letters that dlq had no room for, in order
        self.held_over: dict[tuple[c.ChannelRef, str], int] = {}  # held past a lowered prefetch
        self.enqueued_ms: dict[Key, int] = {}  # when each q1 message arrived (its TTL starts)
        self.outstanding: dict[c.ChannelRef, dict[int, tuple[str, Key]]] = {}
        self.consumers: dict[c.ChannelRef, dict[str, tuple[str, bool]]] = {}  # tag -> queue, no_ack
        self.failed: set[c.ChannelRef] = set()
        self.down: set[str] = set()  # nodes declared lost and not restarted since
        self.last_first_delivery: dict[tuple[c.ChannelRef, str], int] = {}  # arrival
        setup = self.ref(0)
        for queue in QUEUES:
            assert not isinstance(
                self.harness.declare_queue(setup, queue, arguments=QUEUE_ARGUMENTS[queue]).reply,
                Refused,
            )
        for exchange, queues in ((FANOUT, ("q0", "q1")), (DEAD, ("dlq",))):
            self.harness.apply(
                c.DeclareExchange(
                    channel=setup,
                    vhost=VHOST,
                    exchange=exchange,
                    type="fanout",
                    passive=False,
                    durable=True,
                    auto_delete=False,
                    internal=False,
                    arguments={},
                )
            )
            for queue in queues:
                self.harness.apply(
                    c.BindQueue(
                        channel=setup,
                        vhost=VHOST,
                        queue=queue,
                        exchange=exchange,
                        routing_key="",
                        arguments={},
                    )
                )

    def ignored(self, ref: c.ChannelRef) -> bool:
        """The broker ignores this channel: refused earlier, or its node is lost."""
        return ref in self.failed or ref.node in self.down

    def ref(self, index: int) -> c.ChannelRef:
        node, connection, channel = CHANNELS[index]
        return c.ChannelRef(node, self.incarnations[node], connection, channel)

    # --- the queues' rules, as the model sees them -----------------------------------------

    def ready(self, queue: str) -> set[Key]:
        unacked = {
            key
            for tags in self.outstanding.values()
            for name, key in tags.values()
            if name == queue
        }
        return self.alive[queue] - unacked

    def dead_letter(self, queue: str, key: Key, reason: str) -> None:
        """Gone from `queue`: into dlq if it has room; if not, q1's wait (at least once) and
        q0's are dropped; dlq's own are dropped (it has no dead-letter exchange)."""
        self.alive[queue].discard(key)
        self.returns.pop((queue, key), None)
        if queue == "dlq":
            return
        dead = (key[0], f"{queue}:{reason}")
        if not self.enqueue("dlq", dead) and queue == "q1":
            self.waiting.append(dead)

    def retry_waiting(self) -> None:
        while self.waiting and self.enqueue("dlq", self.waiting[0]):
            self.waiting.pop(0)

    def arrive(self, queue: str, key: Key) -> None:
        self.alive[queue].add(key)
        self.arrivals[(queue, key)] = len(self.arrivals)
        if queue == "q1":
            self.enqueued_ms[key] = self.clock_ms

    def learn_expiries(self) -> None:
        """The q1 messages the broker expired since the last look: each must have been due,
        ready, and the oldest one left; then they are in dlq (checked by the invariants)."""
        queue = self.harness.broker.state.vhosts[VHOST].queues["q1"]
        held = {held_key(entry) for entry in queue.ready}
        held |= {held_key(entry) for _, entry in queue.returned}
        unacked = self.alive["q1"] - self.ready("q1")
        expired = self.ready("q1") - held
        for key in sorted(expired, key=lambda key: self.arrivals[("q1", key)]):
            assert self.enqueued_ms[key] + Q1_TTL_MS < self.clock_ms, "expired before its time"
            older = [k for k in held if self.arrivals[("q1", k)] < self.arrivals[("q1", key)]]
            assert not older, "expired behind an older message (expiry is at the head)"
            self.dead_letter("q1", key, "expired")
        assert unacked <= self.alive["q1"]

    def returned(self, queue: str, key: Key) -> None:
        count = self.returns.get((queue, key), 0) + 1
        self.returns[(queue, key)] = count
        if queue in DELIVERY_LIMITS and count > DELIVERY_LIMITS[queue]:
            self.dead_letter(queue, key, "delivery_limit")

    def enqueue(self, queue: str, key: Key) -> bool:
        limit = {"q1": Q1_MAX_LENGTH, "dlq": DLQ_MAX_LENGTH}.get(queue)
        # q1's dead letters waiting for dlq count toward its length (RabbitMQ's is_over_limit)
        held = len(self.ready(queue)) + (len(self.waiting) if queue == "q1" else 0)
        if limit is not None and held >= limit:
            return False  # reject-publish
        self.arrive(queue, key)
        while queue == "q0" and len(self.ready(queue)) > Q0_MAX_LENGTH:
            oldest = min(self.ready(queue), key=lambda key: self.arrivals[(queue, key)])
            self.dead_letter(queue, oldest, "maxlen")
        return True

    def key_of(self, queue: str, body: bytes, annotations: Annotations | None) -> Key:
        """The model's key for a message handed out from `queue`; checks its annotations."""
        count = self.returns.get((queue, (int(body), "")), 0) if queue != "dlq" else 0
        if queue != "dlq":
            assert (annotations.delivery_count if annotations else 0) == count, "delivery count"
            assert annotations is None or not annotations.deaths
            return (int(body), "")
        if annotations is None:
            return (int(body), "")  # published to dlq directly
        last = annotations.deaths[0]
        assert last.count == 1 and annotations.last_death == annotations.first_death
        return (int(body), f"{last.queue}:{last.reason}")

    # --- feeding the model from what apply says -------------------------------------------

    def run(self, ref: c.ChannelRef, command: c.Command):
        applied = self.harness.apply(command)
        if self.ignored(ref):
            assert applied.reply == Ignored(), (command, applied.reply)
        self.observe(applied.effects)
        return applied

    def observe(self, effects: list) -> None:
        """Deliveries from q0 and q1 first, then what expired in q1 (it may have gone to dlq in
        the same step), then deliveries from dlq; each consumer's own order is kept."""
        assert all(isinstance(effect, Deliver) for effect in effects), effects
        from_dlq = [e for e in effects if self.consumers[e.owner][e.consumer_tag][0] == "dlq"]
        self.deliver([e for e in effects if e not in from_dlq])
        self.learn_expiries()
        self.deliver(from_dlq)

    def deliver(self, effects: list[Deliver]) -> None:
        for effect in effects:
            queue, no_ack = self.consumers[effect.owner][effect.consumer_tag]
            message = self.key_of(queue, effect.body.read(), effect.annotations)
            assert message in self.alive[queue], "delivered a message that is not alive"
            if not effect.redelivered:
                key = (effect.owner, effect.consumer_tag)
                arrival = self.arrivals[(queue, message)]
                assert arrival > self.last_first_delivery.get(key, -1), "order broken"
                self.last_first_delivery[key] = arrival
            self.take(effect.owner, effect.delivery_tag, queue, message, no_ack)

    def take(
        self, ref: c.ChannelRef, delivery_tag: int, queue: str, key: Key, no_ack: bool
    ) -> None:
        if no_ack:
            self.alive[queue].discard(key)
            self.returns.pop((queue, key), None)
        else:
            tags = self.outstanding.setdefault(ref, {})
            assert delivery_tag not in tags
            tags[delivery_tag] = (queue, key)

    def give_back(self, ref: c.ChannelRef) -> None:
        """Every message the channel holds goes back to its queue."""
        for _, (queue, key) in sorted(self.outstanding.pop(ref, {}).items()):
            self.returned(queue, key)

    def release(self, ref: c.ChannelRef) -> None:
        self.give_back(ref)
        self.consumers.pop(ref, None)
        self.held_over = {key: held for key, held in self.held_over.items() if key[0] != ref}
        self.failed.discard(ref)
        for key in [key for key in self.last_first_delivery if key[0] == ref]:
            del self.last_first_delivery[key]

    def draw_holder(self, data: st.DataObject) -> c.ChannelRef:
        """A channel that holds unacknowledged deliveries."""
        return data.draw(
            st.sampled_from(
                sorted(
                    (ref for ref, tags in self.outstanding.items() if tags),
                    key=lambda ref: (ref.node, ref.connection, ref.channel),
                )
            )
        )

    # --- rules ------------------------------------------------------------------------------

    @rule(queue=queue_indexes, channel=channel_indexes, fanout=st.booleans())
    def publish(self, queue: int, channel: int, fanout: bool) -> None:
        ref = self.ref(channel)
        message_id = self.next_id
        self.next_id += 1
        exchange, routing_key = (FANOUT, "") if fanout else ("", QUEUES[queue])
        applied = self.harness.apply(
            publish_command(ref, routing_key, str(message_id).encode(), exchange)
        )
        if self.ignored(ref):
            assert applied.reply == Ignored()
            return
        targets = ("q0", "q1") if fanout else (QUEUES[queue],)
        refused = [target for target in targets if not self.enqueue(target, (message_id, ""))]
        assert applied.reply == Routed(len(targets), bool(refused))
        self.observe(applied.effects)

    @rule(
        channel=channel_indexes,
        queue=queue_indexes,
        no_ack=st.booleans(),
        tag=st.sampled_from(["a", "b", "c"]),
    )
    def consume(self, channel: int, queue: int, no_ack: bool, tag: str) -> None:
        if QUEUES[queue] == "dlq":
            return  # see the module docstring: dlq is drained by basic.get only
        ref = self.ref(channel)
        if tag in self.consumers.get(ref, {}):
            return  # a reused tag is a connection error, covered by its own tests
        channel_state = self.harness.broker.state.channels.get(ref)
        if channel_state is not None and channel_state.global_prefetch_count:
            return  # quorum queues refuse it (540), covered by the conformance scenarios
        if not self.ignored(ref):
            self.consumers.setdefault(ref, {})[tag] = (QUEUES[queue], no_ack)
        self.run(
            ref,
            c.Consume(
                channel=ref,
                vhost=VHOST,
                queue=QUEUES[queue],
                consumer_tag=tag,
                no_ack=no_ack,
                exclusive=False,
                arguments={},
            ),
        )

    @rule(channel=channel_indexes, data=st.data())
    def cancel(self, channel: int, data: st.DataObject) -> None:
        ref = self.ref(channel)
        tags = sorted(self.consumers.get(ref, {}))
        if not tags or self.ignored(ref):
            return
        tag = data.draw(st.sampled_from(tags))
        self.run(ref, c.Cancel(channel=ref, consumer_tag=tag))
        del self.consumers[ref][tag]
        self.held_over.pop((ref, tag), None)
        self.last_first_delivery.pop((ref, tag), None)  # a reused tag is a new consumer

    @rule(channel=channel_indexes, prefetch_count=st.integers(0, 3), global_=st.booleans())
    def qos(self, channel: int, prefetch_count: int, global_: bool) -> None:
        ref = self.ref(channel)
        self.run(ref, c.Qos(channel=ref, prefetch_count=prefetch_count, global_=global_))
        # a lowered prefetch takes back nothing: a consumer may hold more, until it acks
        for queue in self.harness.broker.state.vhosts[VHOST].queues.values():
            for consumer in queue.consumers:
                if consumer.channel == ref and consumer.unacked_count > prefetch_count:
                    self.held_over[(ref, consumer.consumer_tag)] = consumer.unacked_count

    @rule(channel=channel_indexes, queue=queue_indexes, no_ack=st.booleans())
    def get(self, channel: int, queue: int, no_ack: bool) -> None:
        ref = self.ref(channel)
        applied = self.harness.apply(
            c.Get(channel=ref, vhost=VHOST, queue=QUEUES[queue], no_ack=no_ack)
        )
        if self.ignored(ref):
            assert applied.reply == Ignored()
        name = QUEUES[queue]
        if isinstance(applied.reply, GetOk):
            key = self.key_of(name, applied.reply.body.read(), applied.reply.annotations)
            assert key in self.alive[name]
            self.take(ref, applied.reply.delivery_tag, name, key, no_ack)
        self.learn_expiries()  # the get looked at the head first
        if not isinstance(applied.reply, GetOk) and not self.ignored(ref):
            assert applied.reply == GetEmpty()
            assert not self.ready(name), "basic.get said empty while messages were ready"
        self.observe(applied.effects)  # what expired on the way may go to a dlq consumer

    @precondition(lambda self: any(self.outstanding.values()))
    @rule(
        data=st.data(), multiple=st.booleans(), settle=st.sampled_from(["ack", "requeue", "drop"])
    )
    def settle(self, data: st.DataObject, multiple: bool, settle: str) -> None:
        ref = self.draw_holder(data)
        tags = self.outstanding[ref]
        delivery_tag = data.draw(st.sampled_from(sorted(tags)))
        if settle == "ack":
            command: c.Command = c.Settle(channel=ref, delivery_tag=delivery_tag, multiple=multiple)
        else:
            command = c.Reject(
                channel=ref,
                delivery_tag=delivery_tag,
                multiple=multiple,
                requeue=settle == "requeue",
            )
        applied = self.harness.apply(command)
        settled = sorted(
            tag for tag in tags if tag == delivery_tag or (multiple and tag < delivery_tag)
        )
        expected = MessageCount(len(settled)) if settle == "ack" else Ok()
        assert applied.reply == (Ignored() if self.ignored(ref) else expected)
        if not self.ignored(ref):
            for tag in settled:
                queue, key = tags.pop(tag)
                if settle == "requeue":
                    self.returned(queue, key)
                elif settle == "drop":
                    self.dead_letter(queue, key, "rejected")
                else:
                    self.alive[queue].discard(key)
                    self.returns.pop((queue, key), None)
        self.observe(applied.effects)

    @precondition(lambda self: any(self.outstanding.values()))
    @rule(data=st.data(), multiple=st.booleans(), unknown=st.none() | st.integers(1000, 1010))
    def ack_several(self, data: st.DataObject, multiple: bool, unknown: int | None) -> None:
        """One Settle for an ack and the single acks after it (a read's worth, joined by the
        session), one of them perhaps unknown: as if each came alone, in order."""
        ref = self.draw_holder(data)
        tags = self.outstanding[ref]
        first = data.draw(st.sampled_from(sorted(tags)))
        by_first = [tag for tag in sorted(tags) if tag == first or (multiple and tag < first)]
        rest = sorted(set(tags) - set(by_first))
        more = data.draw(
            st.lists(st.sampled_from(rest), unique=True, max_size=6) if rest else st.just([])
        )
        if unknown is not None:
            more.insert(data.draw(st.integers(0, len(more))), unknown)
        command = c.Settle(channel=ref, delivery_tag=first, multiple=multiple, more=tuple(more))
        applied = self.harness.apply(command)
        if self.ignored(ref):
            assert applied.reply == Ignored()
            self.observe(applied.effects)
            return
        settled = by_first + (more[: more.index(unknown)] if unknown is not None else more)
        if unknown is None:
            assert applied.reply == MessageCount(len(settled))
        else:
            assert applied.reply == Refused(406, f"unknown delivery tag {unknown}")
            self.failed.add(ref)
        for tag in settled:
            queue, key = tags.pop(tag)
            self.alive[queue].discard(key)
            self.returns.pop((queue, key), None)
        assert sorted(self.harness.broker.state.channels[ref].unacked) == sorted(tags)
        self.observe(applied.effects)

    @rule(channel=channel_indexes, delivery_tag=st.integers(1000, 1010))
    def ack_unknown_tag(self, channel: int, delivery_tag: int) -> None:
        ref = self.ref(channel)
        applied = self.run(ref, c.Settle(channel=ref, delivery_tag=delivery_tag, multiple=False))
        if not self.ignored(ref):
            assert isinstance(applied.reply, Refused) and applied.reply.reply_code == 406
            self.failed.add(ref)

    @rule(channel=channel_indexes)
    def recover(self, channel: int) -> None:
        ref = self.ref(channel)
        failed = self.ignored(ref)
        if not failed:
            self.give_back(ref)
            self.last_first_delivery = {
                key: value for key, value in self.last_first_delivery.items() if key[0] != ref
            }
        self.run(ref, c.Recover(channel=ref))

    @rule(channel=channel_indexes)
    def close_channel(self, channel: int) -> None:
        ref = self.ref(channel)
        self.release(ref)
        self.observe(self.harness.apply(c.CloseChannel(channel=ref)).effects)

    @rule(channel=channel_indexes, data=st.data())
    def grant_credit(self, channel: int, data: st.DataObject) -> None:
        """A consumer's node credits back deliveries it wrote out (any number, even more than
        it holds: the machine allows no debt); what waited for credit is handed out."""
        ref = self.ref(channel)
        if self.ignored(ref) or not self.consumers.get(ref):
            return
        consumer_tag = data.draw(st.sampled_from(sorted(self.consumers[ref])))
        self.observe(
            self.harness.apply(
                c.GrantCredit(
                    channel=ref,
                    consumer_tag=consumer_tag,
                    messages=data.draw(st.integers(0, 3)),
                    bytes=data.draw(st.integers(0, 10)),
                )
            ).effects
        )

    @rule(connection=st.sampled_from([1, 2]))
    def session_closed(self, connection: int) -> None:
        node = "n1" if connection == 1 else "n2"
        for index, (_, channel_connection, _) in enumerate(CHANNELS):
            if channel_connection == connection:
                self.release(self.ref(index))
        self.observe(
            self.harness.apply(
                c.SessionClosed(
                    node=node, incarnation=self.incarnations[node], connection=connection
                )
            ).effects
        )

    @rule(node=st.sampled_from(["n1", "n2"]))
    def node_restarts(self, node: str) -> None:
        for index, (channel_node, _, _) in enumerate(CHANNELS):
            if channel_node == node:
                self.release(self.ref(index))
        self.incarnations[node] += 1
        self.down.discard(node)
        self.observe(
            self.harness.apply(
                c.NodeUp(node=node, incarnation=self.incarnations[node], pid=1)
            ).effects
        )

    @rule(node=st.sampled_from(["n1", "n2"]))
    def node_lost(self, node: str) -> None:
        applied = self.harness.apply(c.NodeDown(node=node, incarnation=self.incarnations[node]))
        if node in self.down:
            assert applied.reply == Ignored()
            return
        for index, (channel_node, _, _) in enumerate(CHANNELS):
            if channel_node == node:
                self.release(self.ref(index))
        self.down.add(node)
        self.observe(applied.effects)

    @rule(advance_ms=st.sampled_from([0, 400, 1001, 1500]))
    def tick(self, advance_ms: int) -> None:
        self.clock_ms += advance_ms
        applied = self.harness.apply(c.Tick(now_ms=self.clock_ms))
        assert applied.reply == Ok()
        self.learn_expiries()
        self.retry_waiting()
        ready = self.ready("q1")
        if ready:
            oldest = min(ready, key=lambda key: self.arrivals[("q1", key)])
            assert self.enqueued_ms[oldest] + Q1_TTL_MS >= self.clock_ms, "overdue at the head"
        self.observe(applied.effects)

    @rule(queue=queue_indexes, channel=channel_indexes)
    def purge(self, queue: int, channel: int) -> None:
        ref = self.ref(channel)
        applied = self.harness.apply(c.PurgeQueue(channel=ref, vhost=VHOST, queue=QUEUES[queue]))
        if self.ignored(ref):
            assert applied.reply == Ignored()
            return
        name = QUEUES[queue]
        ready = self.ready(name)
        assert applied.reply.message_count == len(ready)  # overdue ones too: still there
        self.alive[name] -= ready
        for key in ready:
            self.returns.pop((name, key), None)

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def every_alive_message_is_in_its_queue_exactly_once(self) -> None:
        self.learn_expiries()  # expiry may happen wherever the broker dispatches q1
        state = self.harness.broker.state
        for name in QUEUES:
            queue = state.vhosts[VHOST].queues[name]
            ready = [held_key(entry) for entry in queue.ready]
            ready += [held_key(entry) for _, entry in queue.returned]
            unacked = [
                held_key(unacked.entry)
                for channel in state.channels.values()
                for unacked in channel.unacked.values()
                if unacked.queue == queue.ref
            ]
            held = ready + unacked
            assert len(held) == len(set(held)), f"{name}: duplicated {held}"
            assert set(held) == self.alive[name], f"{name}: lost or invented messages"
            assert queue.ready_count + queue.unacked_count == len(self.alive[name])
            assert queue.unacked_count == len(unacked)
        waiting = state.vhosts[VHOST].queues["q1"].dead_letters
        assert [held_key_of(p.message) for p in waiting] == self.waiting, "dead letters waiting"
        assert all(not p.taken for p in waiting)

    @invariant()
    def outstanding_tags_match(self) -> None:
        state = self.harness.broker.state
        for ref, tags in self.outstanding.items():
            channel = state.channels.get(ref)
            held = {
                tag: (unacked.queue.name, held_key(unacked.entry))
                for tag, unacked in (channel.unacked.items() if channel else ())
            }
            assert held == tags, ref

    @invariant()
    def credit_holds(self) -> None:
        for (ref, consumer_tag), (messages, _) in self.harness.broker.state.uncredited.items():
            assert messages <= CREDIT_MESSAGES, f"{ref} {consumer_tag} past its credit"

    @invariant()
    def prefetch_holds(self) -> None:
        for vhost in self.harness.broker.state.vhosts.values():
            for queue in vhost.queues.values():
                for consumer in queue.consumers:
                    if not consumer.prefetch_count or consumer.no_ack:
                        continue
                    key = (consumer.channel, consumer.consumer_tag)
                    if consumer.unacked_count <= consumer.prefetch_count:
                        self.held_over.pop(key, None)
                        continue
                    # over it only after qos lowered it, and never by a new delivery
                    assert consumer.unacked_count <= self.held_over.get(key, 0), "prefetch"
                    self.held_over[key] = consumer.unacked_count

    def teardown(self) -> None:
        state = self.harness.broker.state
        assert self.harness.replayed() == state, "replaying the log gave another state"
        assert self.harness.snapshot_restored() == state, "a snapshot restored another state"


def held_key(entry: Entry) -> Key:
    return held_key_of(entry.message)


def held_key_of(message: Message) -> Key:
    deaths = message.deaths
    origin = f"{deaths[0].queue}:{deaths[0].reason}" if deaths else ""
    return (int(message.body.read()), origin)


BrokerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
CREDIT_MESSAGES = 3  # delivery credit small enough to run out within a run


@pytest.fixture(autouse=True)
def small_delivery_credit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "DELIVERY_CREDIT_MESSAGES", CREDIT_MESSAGES)


test_broker_machine = BrokerMachine.TestCase
