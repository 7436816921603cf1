"""The management API's JSON shapes, from read models of a broker driven by commands: no
aiohttp, no sockets. The field names and values are those RabbitMQ 3.x's API returns."""

from __future__ import annotations

import dataclasses

from warrenmq.cluster import definitions, http_messages
from warrenmq.cluster.management import shapes
from warrenmq.replication import commands as c
from warrenmq.replication.machine import Broker, Meta
from warrenmq.replication.queries import QueueView

OWNER = c.ChannelRef("n1", 1, 1, 1)
PLACEMENT = {"node": "n1", "leader": "n1", "members": ["n1"], "online": ["n1"]}


def broker_with(*commands: c.Command) -> Broker:
    broker = Broker()
    setup = [c.NodeUp(node="n1", incarnation=1, pid=1), c.AddVhost(vhost="/"), *commands]
    for index, command in enumerate(setup, start=1):
        reply = broker.apply(Meta(index), command).reply
        assert type(reply).__name__ != "Refused", (command, reply)
    return broker


def declare(queue: str, **arguments: object) -> c.DeclareQueue:
    return definitions.declare_queue_command(OWNER, "/", {"name": queue, "arguments": arguments})


def publish(queue: str, body: bytes) -> c.Publish:
    payload = {"routing_key": queue, "payload": body.decode(), "properties": {}}
    return http_messages.publish_command(OWNER, "/", "", payload)


def consume(queue: str, tag: str, **arguments: object) -> c.Consume:
    return c.Consume(
        channel=OWNER,
        vhost="/",
        queue=queue,
        consumer_tag=tag,
        no_ack=False,
        exclusive=False,
        arguments=dict(arguments),
    )


def queue_view(broker: Broker, name: str) -> QueueView:
    view = broker.query_queue("/", name)
    assert view is not None
    return view


def test_a_queue_counts_ready_unacked_and_ready_bytes() -> None:
    broker = broker_with(
        declare("q", **{"x-queue-type": "quorum"}),
        publish("q", b"abc"),
        publish("q", b"de"),
        c.Qos(channel=OWNER, prefetch_count=1, global_=False),
        consume("q", "ctag"),
    )
    shape = shapes.queue_json(PLACEMENT, queue_view(broker, "q"))
    assert {key: shape[key] for key in shape if key not in PLACEMENT} == {
        "name": "q",
        "vhost": "/",
        "durable": True,
        "auto_delete": False,
        "exclusive": False,
        "arguments": {"x-queue-type": "quorum"},
        "type": "quorum",
        "state": "running",
        "messages": 2,
        "messages_ready": 1,
        "messages_unacknowledged": 1,
        "message_bytes_ready": 2,
        "consumers": 1,
        "single_active_consumer_ctag": None,
        "policy": None,
        "operator_policy": None,
        "effective_policy_definition": {},
    }


def test_a_single_active_consumer_queue_names_its_active_consumer_before_any_message() -> None:
    """Warren elected the active consumer only at the first dispatch: with an empty queue the
    API showed none (RabbitMQ activates a consumer as it registers)."""
    broker = broker_with(
        declare("sac", **{"x-queue-type": "quorum", "x-single-active-consumer": True}),
        consume("sac", "first"),
        consume("sac", "second"),
    )
    view = queue_view(broker, "sac")
    assert shapes.queue_json(PLACEMENT, view)["single_active_consumer_ctag"] == "first"
    assert [(each.consumer_tag, each.active) for each in view.consumers] == [
        ("first", True),
        ("second", False),
    ]
    broker.apply(Meta(99), c.Cancel(channel=OWNER, consumer_tag="first"))
    assert shapes.queue_json(PLACEMENT, queue_view(broker, "sac"))[
        "single_active_consumer_ctag"
    ] == ("second")


def test_the_read_model_is_a_copy_the_broker_does_not_change() -> None:
    broker = broker_with(declare("q"), publish("q", b"x"))
    before = queue_view(broker, "q")
    broker.apply(Meta(99), publish("q", b"y"))
    assert before.ready == 1 and queue_view(broker, "q").ready == 2
    assert dataclasses.is_dataclass(before) and type(before).__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_bindings_list_the_default_exchanges_implicit_ones_first() -> None:
    broker = broker_with(
        declare("q"),
        c.BindQueue(
            channel=OWNER,
            vhost="/",
            queue="q",
            exchange="amq.headers",
            routing_key="",
            arguments={"x-match": "all", "k": "v"},
        ),
        c.BindQueue(
            channel=OWNER,
            vhost="/",
            queue="q",
            exchange="amq.direct",
            routing_key="",
            arguments={},
        ),
    )
    vhost = broker.query_vhost("/")
    assert vhost is not None
    listed = shapes.bindings_json("/", vhost)
    assert listed[0] == {
        "source": "",
        "vhost": "/",
        "destination": "q",
        "destination_type": "queue",
        "routing_key": "q",
        "arguments": {},
        "properties_key": "q",
    }
    by_source = {binding["source"]: binding for binding in listed[1:]}
    assert by_source["amq.direct"]["properties_key"] == "~"  # RabbitMQ's name for key ""
    headers_key = by_source["amq.headers"]["properties_key"]
    assert headers_key.startswith("~") and len(headers_key) == 12  # "~" and a digest
    assert headers_key == shapes.properties_key("", {"k": "v", "x-match": "all"})  # any order


def test_an_exchange_is_its_definition_plus_who_performed_it() -> None:
    vhost = broker_with().query_vhost("/")
    assert vhost is not None
    assert shapes.exchange_json(vhost.exchanges["amq.topic"]) == {
        "name": "amq.topic",
        "vhost": "/",
        "type": "topic",
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
        "user_who_performed_action": "",
    }
