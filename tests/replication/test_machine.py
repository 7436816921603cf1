"""Broker rules that are easiest to see without a socket: releases, ownership, refusals."""

from __future__ import annotations

import dataclasses
import pickle

from warrenmq.replication import commands as c
from warrenmq.replication import machine
from warrenmq.replication import queue as queue_module
from warrenmq.replication import state as state_module
from warrenmq.replication.machine import Permission, upgrade_state
from warrenmq.replication.replies import (
    CancelConsumer,
    Deliver,
    GetEmpty,
    GetOk,
    Ignored,
    MessageCount,
    Ok,
    QueueDeclared,
    Refused,
    Routed,
)

from .harness import (
    VHOST,
    Harness,
    channel_ref,
    consume_command,
    declare_exchange_command,
    declare_queue_command,
    publish_command,
)


def delivered_bodies(applied) -> list[bytes]:
    return [effect.body.read() for effect in applied.effects if isinstance(effect, Deliver)]


def test_deliveries_name_their_owner_and_count_tags_per_channel() -> None:
    harness = Harness()
    first, second = channel_ref(1), channel_ref(2)
    harness.declare_queue(first, "q")
    harness.consume(first, "q", "ctag-a")
    harness.consume(second, "q", "ctag-b")
    deliveries = [harness.publish(first, "q", str(n).encode()).effects[0] for n in range(4)]
    assert [(d.owner, d.consumer_tag, d.delivery_tag) for d in deliveries] == [
        (first, "ctag-a", 1),
        (second, "ctag-b", 1),
        (first, "ctag-a", 2),
        (second, "ctag-b", 2),
    ]


def test_a_node_builds_only_the_deliveries_it_sends_and_reaches_the_same_state() -> None:
    """Every node applies every delivery, and only the consumer's node sends it: the others
    skip building the effect, and nothing else about the step may differ."""
    everything, on_n2 = Harness(), Harness()
    on_n2.broker.node_id = "n2"
    here, there = channel_ref(1, node="n1"), channel_ref(2, connection=2, node="n2")
    commands = [
        declare_queue_command(here, "q"),
        c.Qos(channel=here, prefetch_count=1, global_=False),
        consume_command(here, "q", "a"),
        consume_command(there, "q", "b"),
        *(publish_command(here, "q", str(n).encode()) for n in range(4)),
        c.Settle(channel=there, delivery_tag=2, multiple=True),
    ]
    sent: list[tuple[str, int, bytes]] = []
    for command in commands:
        applied, mine = everything.apply(command), on_n2.apply(command)
        assert mine.reply == applied.reply
        others = [e for e in applied.effects if not isinstance(e, Deliver) or e.owner == there]
        assert mine.effects == others
        sent += [(e.consumer_tag, e.delivery_tag, e.body.read()) for e in mine.effects]
    assert sent == [("b", 1, b"1"), ("b", 2, b"2"), ("b", 3, b"3")]
    assert pickle.dumps(on_n2.broker.state) == pickle.dumps(everything.broker.state)


def test_node_up_releases_what_older_incarnations_held() -> None:
    harness = Harness()
    old = channel_ref(1, incarnation=1)
    other_node = channel_ref(1, node="n2")
    harness.declare_queue(old, "shared")
    harness.declare_queue(old, "private", exclusive=True, durable=False)
    harness.publish(old, "shared", b"m")
    assert delivered_bodies(harness.consume(old, "shared", "t")) == [b"m"]
    harness.consume(other_node, "shared", "t2")
    applied = harness.apply(c.NodeUp(node="n1", incarnation=2, pid=101))
    assert applied.reply == Ok()
    # the unacked message goes back and straight on to the surviving consumer on n2
    assert [(d.owner, d.body.read(), d.redelivered) for d in applied.effects] == [
        (other_node, b"m", True)
    ]
    assert "private" not in harness.broker.state.vhosts[VHOST].queues
    assert old not in harness.broker.state.channels


def test_session_closed_deletes_exclusive_queues_and_requeues() -> None:
    harness = Harness()
    ref = channel_ref(1, connection=7)
    harness.declare_queue(ref, "mine", exclusive=True, durable=False)
    harness.declare_queue(ref, "kept")
    harness.publish(ref, "kept", b"x")
    harness.apply(c.Get(channel=ref, vhost=VHOST, queue="kept", no_ack=False))
    harness.apply(c.SessionClosed(node="n1", incarnation=1, connection=7))
    queues = harness.broker.state.vhosts[VHOST].queues
    assert "mine" not in queues
    assert queues["kept"].ready_count == 1 and queues["kept"].unacked_count == 0


def test_a_refused_channel_ignores_its_pipelined_commands_until_closed() -> None:
    harness = Harness()
    ref = channel_ref(1)
    harness.declare_queue(ref, "q")
    refused = harness.publish(ref, "k", b"lost", exchange="missing")
    assert isinstance(refused.reply, Refused) and refused.reply.reply_code == 404
    assert harness.publish(ref, "q", b"after").reply == Ignored()
    harness.apply(c.CloseChannel(channel=ref))
    assert harness.publish(ref, "q", b"reopened").reply == Routed(1)
    assert harness.broker.query_queue(VHOST, "q").ready == 1


def test_a_hard_error_ignores_every_channel_of_the_connection() -> None:
    harness = Harness()
    first, second = channel_ref(1), channel_ref(2)
    refused = harness.apply(
        c.DeclareExchange(
            channel=first,
            vhost=VHOST,
            exchange="x",
            type="bogus",
            passive=False,
            durable=False,
            auto_delete=False,
            internal=False,
            arguments={},
        )
    )
    assert isinstance(refused.reply, Refused) and refused.reply.reply_code == 503
    assert harness.declare_queue(second, "q").reply == Ignored()
    harness.apply(c.SessionClosed(node="n1", incarnation=1, connection=1))
    assert isinstance(harness.declare_queue(second, "q").reply, QueueDeclared)


def test_deleting_a_queue_cancels_its_consumers_and_orphans_unacked() -> None:
    harness = Harness()
    ref = channel_ref(1)
    harness.declare_queue(ref, "q")
    harness.publish(ref, "q", b"m")
    harness.consume(ref, "q", "t")
    applied = harness.apply(
        c.DeleteQueue(channel=ref, vhost=VHOST, queue="q", if_unused=False, if_empty=False)
    )
    assert applied.effects == [CancelConsumer(ref, "t")]
    # the delivered message's ack still succeeds and settles into nothing
    assert harness.apply(
        c.Settle(channel=ref, delivery_tag=1, multiple=False)
    ).reply == MessageCount(1)
    harness.declare_queue(ref, "q")  # a new queue of the same name starts empty
    assert (
        harness.apply(c.Get(channel=ref, vhost=VHOST, queue="q", no_ack=True)).reply == GetEmpty()
    )


def test_reject_without_requeue_of_a_basic_get() -> None:
    harness = Harness()
    ref = channel_ref(1)
    harness.declare_queue(ref, "q")
    harness.publish(ref, "q", b"m")
    got = harness.apply(c.Get(channel=ref, vhost=VHOST, queue="q", no_ack=False)).reply
    assert isinstance(got, GetOk) and got.delivery_tag == 1 and got.message_count == 0
    harness.apply(c.Reject(channel=ref, delivery_tag=1, multiple=False, requeue=False))
    assert harness.broker.query_queue(VHOST, "q").ready == 0


def test_a_rejected_message_counts_its_dead_letter_queues_ttl_from_the_reject() -> None:
    """The state's clock lags until the next Tick; the reject carries its proposer's clock, so
    a retry queue's TTL runs from the reject (the e2e retry-queue test saw it run 0.3 ms short)."""
    harness = Harness()
    ref = channel_ref(1)
    harness.declare_queue(
        ref,
        "work",
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "retry"},
    )
    harness.declare_queue(
        ref,
        "retry",
        arguments={
            "x-message-ttl": 300,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "work",
        },
    )
    harness.apply(dataclasses.replace(publish_command(ref, "work", b"m"), now_ms=1_000))
    harness.apply(c.Get(channel=ref, vhost=VHOST, queue="work", no_ack=False))
    harness.apply(
        c.Reject(channel=ref, delivery_tag=1, multiple=False, requeue=False, now_ms=5_000)
    )
    ready = {}
    for now_ms in (5_250, 5_301):
        harness.apply(c.Tick(now_ms=now_ms))
        ready[now_ms] = [
            harness.broker.query_queue(VHOST, name).ready for name in ("retry", "work")
        ]
    assert ready == {5_250: [1, 0], 5_301: [0, 1]}


def test_auto_delete_exchange_goes_with_its_last_binding() -> None:
    harness = Harness()
    ref = channel_ref(1)
    harness.apply(
        c.DeclareExchange(
            channel=ref,
            vhost=VHOST,
            exchange="ax",
            type="fanout",
            passive=False,
            durable=False,
            auto_delete=True,
            internal=False,
            arguments={},
        )
    )
    harness.declare_queue(ref, "q")
    harness.apply(
        c.BindQueue(
            channel=ref, vhost=VHOST, queue="q", exchange="ax", routing_key="", arguments={}
        )
    )
    harness.apply(
        c.UnbindQueue(
            channel=ref, vhost=VHOST, queue="q", exchange="ax", routing_key="", arguments={}
        )
    )
    assert "ax" not in harness.broker.state.vhosts[VHOST].exchanges


def test_unknown_vhost_is_refused_with_530() -> None:
    harness = Harness()
    applied = harness.apply(
        c.DeclareQueue(
            channel=channel_ref(1),
            vhost="nowhere",
            queue="q",
            server_named=False,
            passive=False,
            durable=True,
            exclusive=False,
            auto_delete=False,
            arguments={},
        )
    )
    assert applied.reply == Refused(530, "vhost 'nowhere' not found")


def test_regression_release_never_hands_messages_to_a_dying_sibling_channel() -> None:
    """Shrunk from the stateful test: two channels of one connection consume the same queue."""
    harness = Harness()
    first, second = channel_ref(1), channel_ref(2)
    survivor = channel_ref(1, connection=2)
    harness.declare_queue(first, "q")
    harness.consume(first, "q", "a")
    harness.publish(first, "q", b"m")  # delivered to the first channel, unacked
    harness.consume(second, "q", "a")
    harness.consume(survivor, "q", "s")
    applied = harness.apply(c.SessionClosed(node="n1", incarnation=1, connection=1))
    assert [(effect.owner, effect.body.read()) for effect in applied.effects] == [(survivor, b"m")]
    (unacked,) = harness.broker.state.channels[survivor].unacked.values()
    assert unacked.entry.delivery_count == 1


# --- users, vhosts, permissions, alarms -------------------------------------------------


def test_permissions_match_anywhere_and_empty_matches_nothing() -> None:
    permission = Permission(configure="^app\\.", write="orders", read="")
    assert permission.permits("configure", "app.q") and not permission.permits(
        "configure", "x.app.q"
    )
    assert permission.permits("write", "eu.orders.new")  # re.search, as RabbitMQ's re:run
    assert not permission.permits("read", "") and not permission.permits("read", "anything")


def test_deleting_a_vhost_takes_its_queues_consumers_and_permissions() -> None:
    harness = Harness()
    ref = channel_ref(1)
    harness.apply(c.AddUser(user="u", password_hash="", tags=()))
    harness.apply(c.SetPermissions(user="u", vhost=VHOST, configure=".*", write=".*", read=".*"))
    harness.declare_queue(ref, "q")
    harness.publish(ref, "q", b"m")
    harness.consume(ref, "q", "t")
    applied = harness.apply(c.DeleteVhost(vhost=VHOST))
    assert applied.reply == Ok()
    assert CancelConsumer(ref, "t") in applied.effects
    assert harness.broker.query_permission("u", VHOST) is None
    assert not harness.broker.query_vhost_exists(VHOST)
    assert harness.apply(c.DeleteVhost(vhost=VHOST)).reply.reply_code == 404  # type: ignore[union-attr]
    assert harness.replayed() == harness.broker.state


def test_users_and_permissions_need_each_other() -> None:
    harness = Harness()
    unknown = harness.apply(
        c.SetPermissions(user="nobody", vhost=VHOST, configure="", write="", read="")
    ).reply
    assert isinstance(unknown, Refused) and unknown.reply_code == 404
    harness.apply(c.AddUser(user="u", password_hash="h", tags=("management",)))
    harness.apply(c.SetPermissions(user="u", vhost=VHOST, configure="a", write="b", read="c"))
    assert harness.broker.query_permission("u", VHOST) == Permission("a", "b", "c")
    assert harness.apply(c.DeleteUser(user="u")).reply == Ok()
    assert harness.broker.query_permission("u", VHOST) is None
    assert harness.broker.query_user("u") is None


def test_a_lost_node_takes_its_alarms_with_it() -> None:
    harness = Harness()
    harness.apply(c.SetAlarm(node="n1", resource="memory", active=True))
    harness.apply(c.SetAlarm(node="n2", resource="disk", active=True))
    assert harness.broker.query_alarms() == {("n1", "memory"), ("n2", "disk")}
    harness.apply(c.NodeDown(node="n1", incarnation=1))
    assert harness.broker.query_alarms() == {("n2", "disk")}
    harness.apply(c.SetAlarm(node="n2", resource="disk", active=False))
    assert harness.broker.query_alarms() == set()


def test_a_refused_management_operation_leaves_the_next_one_free() -> None:
    """The management API's channels never fail: each operation stands alone."""
    harness = Harness()
    ref = c.ChannelRef("n1", 1, c.MANAGEMENT_CONNECTION, 1)
    refused = harness.apply(declare_queue_command(ref, "q", passive=True)).reply
    assert isinstance(refused, Refused) and refused.reply_code == 404
    missing_vhost = dataclasses.replace(declare_queue_command(ref, "q"), vhost="nowhere")
    assert harness.apply(missing_vhost).reply.reply_code == 530  # type: ignore[union-attr]
    assert isinstance(harness.declare_queue(ref, "q").reply, QueueDeclared)


def test_a_snapshot_from_before_access_control_keeps_everyones_access() -> None:
    harness = Harness()
    harness.apply(c.AddUser(user="u", password_hash="", tags=()))
    old = harness.broker.state
    del old.permissions, old.alarms  # what a snapshot written before these fields holds
    restored = upgrade_state(pickle.loads(pickle.dumps(old, protocol=5)))
    assert restored.permissions == {("u", VHOST): Permission(".*", ".*", ".*")}
    assert restored.alarms == set()


REF = channel_ref(1)


def test_a_snapshot_from_before_the_byte_counts_counts_what_it_holds() -> None:
    """Exchange.delayed_bytes, Queue.dead_letter_bytes and BrokerState.uncredited came with the
    limits: an older snapshot's exchanges and queues get them, counted from what they hold."""
    harness = Harness()
    harness.declare_queue(REF, "q")
    harness.apply(
        declare_exchange_command(
            REF, "later", "x-delayed-message", arguments={"x-delayed-type": "direct"}
        )
    )
    harness.publish(REF, "q", b"12345", exchange="later", headers={"x-delay": 10_000})
    old = harness.broker.state
    exchange = old.vhosts[VHOST].exchanges["later"]
    queue = old.vhosts[VHOST].queues["q"]
    del exchange.delayed_bytes, queue.dead_letter_bytes, old.uncredited
    restored = upgrade_state(pickle.loads(pickle.dumps(old, protocol=5)))
    assert restored.vhosts[VHOST].exchanges["later"].delayed_bytes == 5
    assert restored.vhosts[VHOST].queues["q"].dead_letter_bytes == 0
    assert restored.uncredited == {}


def test_a_snapshot_pickled_before_the_state_moved_out_of_machine_py_restores() -> None:
    """Snapshots written before state.py and queue.py existed name every state class as
    warrenmq.replication.machine.<Name>: machine.py must still have each of them."""
    harness = Harness()
    harness.declare_queue(REF, "q")
    harness.consume(REF, "q", "ctag")
    harness.publish(REF, "q", b"m")
    moved = [
        cls
        for module in (state_module, queue_module)
        for cls in vars(module).values()
        if isinstance(cls, type)
        and dataclasses.is_dataclass(cls)
        and cls.__module__ == module.__name__
    ]
    assert {cls.__name__ for cls in moved} >= {"BrokerState", "Queue", "Entry", "Unacked"}
    for cls in moved:
        cls.__module__ = machine.__name__  # as pickle saw them before the move
    try:
        old = pickle.dumps(harness.broker.state, protocol=5)
    finally:
        for cls in moved:
            cls.__module__ = (
                queue_module.__name__
                if cls.__name__ in vars(queue_module)
                else state_module.__name__
            )
    assert b"warrenmq.replication.state" not in old
    assert upgrade_state(pickle.loads(old)) == harness.broker.state


def test_a_single_active_consumer_is_active_before_the_first_message() -> None:
    """The active consumer was elected at the first dispatch only: an empty queue showed none
    (RabbitMQ activates a consumer as it registers, and the next one as it goes)."""
    harness = Harness()
    ref = channel_ref(1)
    arguments = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    harness.declare_queue(ref, "sac", arguments=arguments)
    harness.consume(ref, "sac", "first")
    harness.consume(ref, "sac", "second")
    assert harness.broker.query_queue(VHOST, "sac").active_consumer_tag == "first"
    harness.apply(c.Cancel(channel=ref, consumer_tag="first"))
    assert harness.broker.query_queue(VHOST, "sac").active_consumer_tag == "second"


def _as_before_ids(state: state_module.BrokerState) -> state_module.BrokerState:
    """`state` in the shape snapshots had before queues and consumers had ids: deliveries and
    channels held Queue and Consumer objects, a queue its active Consumer, a deleted queue
    a True where `id` is now (and a live one False)."""
    vhost = state.vhosts[VHOST]
    queues = {queue.id: queue for queue in vhost.queues.values()}
    gone = dataclasses.replace(next(iter(queues.values())), name="gone", consumers=[])
    consumers = {each.id: each for queue in queues.values() for each in queue.consumers}
    for channel in state.channels.values():
        channel.consumers = {
            tag: queues.get(ref.id, gone) for tag, ref in channel.consumers.items()
        }  # type: ignore[misc]
        for unacked in channel.unacked.values():
            unacked.queue = queues.get(unacked.queue.id, gone)  # type: ignore[assignment]
            unacked.consumer = consumers.get(unacked.consumer)  # type: ignore[assignment]
    for queue in queues.values():
        queue.active = consumers.get(queue.active)  # type: ignore[assignment]
        queue.id = False
    gone.id = True
    for consumer in consumers.values():
        del consumer.id
    del state.next_id
    return state


def test_a_snapshot_with_object_references_restores_as_references_by_id() -> None:
    harness = Harness()
    other = channel_ref(2)
    sac = {"x-queue-type": "quorum", "x-single-active-consumer": True}
    harness.declare_queue(REF, "sac", arguments=sac)
    harness.consume(REF, "sac", "a")
    harness.consume(other, "sac", "b")
    harness.declare_queue(REF, "gone")
    harness.consume(REF, "gone", "g")
    for queue in ("sac", "sac", "gone"):
        harness.publish(REF, queue, b"m")
    harness.apply(
        c.DeleteQueue(channel=REF, vhost=VHOST, queue="gone", if_unused=False, if_empty=False)
    )
    old = pickle.dumps(_as_before_ids(harness.broker.state), protocol=5)
    broker = machine.Broker(upgrade_state(pickle.loads(old)))
    assert broker.query_queue(VHOST, "sac").active_consumer_tag == "a"
    assert broker.query_queue(VHOST, "sac").unacked == 2
    index = 100
    after = [
        c.Settle(channel=REF, delivery_tag=0, multiple=True),  # both of sac's, and gone's
        declare_queue_command(REF, "gone"),
    ]
    replies = []
    for command in after:
        index += 1
        replies.append(broker.apply(machine.Meta(index), command).reply)
    assert replies == [MessageCount(3), QueueDeclared("gone", 0, 0)]
    assert broker.query_queue(VHOST, "sac").unacked == 0
    ids = [queue.id for queue in broker.state.vhosts[VHOST].queues.values()]
    consumer_ids = [each.id for each in broker.state.vhosts[VHOST].queues["sac"].consumers]
    assert len(set(ids + consumer_ids)) == 4  # the new queue took an id nobody had
