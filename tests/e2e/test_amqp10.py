"""AMQP 1.0 against three real nodes, with two real clients: RabbitMQ's own
(rabbitmq-amqp-python-client, which refuses any server that is not "RabbitMQ" >= 4.0) and
qpid-proton's blocking client, for the credit, outcome and error cases it lets a test drive."""

from __future__ import annotations

import time
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from proton import ConnectionException, Delivery, Link, Message, int32, symbol
from proton.reactor import LinkOption
from proton.utils import BlockingConnection, LinkDetached
from rabbitmq_amqp_python_client import (
    AddressHelper,
    Environment,
    ExchangeSpecification,
    ExchangeToQueueBindingSpecification,
    QuorumQueueSpecification,
    ValidationCodeException,
)
from rabbitmq_amqp_python_client.qpid.proton import Message as RabbitMessage

from warrenmq.cluster.config import Member
from warrenmq.cluster.local import LocalCluster

from .operations import add_user_with_vhost, api, pika_connection, running_cluster

WAIT_S = 20.0
FAILOVER_MESSAGES = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("amqp10")) as cluster:
        yield cluster


def url(member: Member, user: str = "guest", password: str = "guest") -> str:
    return f"amqp://{user}:{password}@{member.host}:{member.amqp_port}"


def proton_connection(member: Member, **options: object) -> BlockingConnection:
    return BlockingConnection(url(member), timeout=WAIT_S, **options)


def declare_quorum(member: Member, queue: str, **arguments: object) -> None:
    setup = pika_connection(member)
    setup.channel().queue_declare(
        queue, durable=True, arguments={"x-queue-type": "quorum", **arguments}
    )
    setup.close()


def pump(connection: BlockingConnection, seconds: float) -> None:
    """Let the client's event loop run, without waiting for anything in particular."""
    connection.container.timeout = 0.05  # process() waits at most this for I/O
    deadline_s = time.monotonic() + seconds
    while time.monotonic() < deadline_s:
        connection.container.process()


def receive_all(member: Member, queue: str, count: int) -> list[Message]:
    connection = proton_connection(member)
    receiver = connection.create_receiver(f"/queues/{queue}", credit=count)
    messages = []
    for _ in range(count):
        messages.append(receiver.receive(timeout=WAIT_S))
        receiver.accept()
    connection.close()
    return messages


def test_rabbitmq_client_declares_publishes_and_consumes(cluster: LocalCluster) -> None:
    environment = Environment(url(cluster.members[0]) + "/")
    connection = environment.connection()
    connection.dial()
    management = connection.management()
    management.declare_queue(QuorumQueueSpecification(name="v1.orders"))
    assert management.queue_info("v1.orders").message_count == 0
    management.declare_exchange(ExchangeSpecification(name="v1.x"))
    path = management.bind(
        ExchangeToQueueBindingSpecification(
            source_exchange="v1.x", destination_queue="v1.orders", binding_key="k/1"
        )
    )
    publisher = connection.publisher(AddressHelper.exchange_address("v1.x", "k/1"))
    for number in range(50):
        publisher.publish(RabbitMessage(body=f"order {number}".encode(), id=str(number)))
    publisher.close()
    with pytest.raises(ValidationCodeException, match="ErrPreconditionFailed"):
        management.declare_queue(QuorumQueueSpecification(name="v1.orders", max_len=5))
    info = management.queue_info("v1.orders")
    assert (info.message_count, info.queue_type.value) == (50, "quorum")
    received = receive_all(cluster.members[1], "v1.orders", 50)  # any node serves it
    assert [bytes(message.body) for message in received] == [
        f"order {number}".encode() for number in range(50)
    ]
    annotations = received[0].annotations
    assert annotations[symbol("x-exchange")] == "v1.x"
    assert annotations[symbol("x-routing-key")] == "k/1"
    management.unbind(path)
    assert management.purge_queue("v1.orders") == 0
    management.delete_queue("v1.orders")
    management.delete_exchange("v1.x")
    connection.close()
    environment.close()
    assert api(cluster.members[0]).request("GET", "/api/queues/%2F/v1.orders")[0] == 404


def test_publisher_outcomes_accepted_released_rejected(cluster: LocalCluster) -> None:
    member = cluster.members[0]
    declare_quorum(member, "v1.full", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    connection = proton_connection(member)
    full = connection.create_sender("/queues/v1.full")
    assert full.send(Message(body=b"first")).remote_state == Delivery.ACCEPTED
    second = full.send(Message(body=b"second"), error_states=[])
    assert second.remote_state == Delivery.REJECTED  # reject-publish: 0-9-1 would nack
    unroutable = connection.create_sender("/exchanges/amq.direct/nobody")
    assert unroutable.send(Message(body=b"x"), error_states=[]).remote_state == Delivery.RELEASED
    anonymous = connection.create_sender(None)
    missing = anonymous.send(Message(body=b"x", address="/exchanges/v1.missing"), error_states=[])
    assert missing.remote_state == Delivery.REJECTED
    assert missing.remote.condition.name == "amqp:not-found"
    bad_to = anonymous.send(Message(body=b"x", address="/topics/x"), error_states=[])
    assert bad_to.remote_state == Delivery.REJECTED
    assert bad_to.remote.condition.name == "amqp:invalid-field"
    routed = anonymous.send(Message(body=b"via to", address="/queues/v1.full"), error_states=[])
    assert routed.remote_state == Delivery.REJECTED  # still full
    connection.close()


def test_a_user_and_vhost_made_through_another_node_open_at_once(cluster: LocalCluster) -> None:
    """The login (SASL) and the open (vhost) wait for the node to catch up before refusing."""
    for round_number in range(6):
        user, vhost = f"v1fresh{round_number}", f"v1fresh-v{round_number}"
        add_user_with_vhost(cluster.members[round_number % 3], user, vhost)
        member = cluster.members[(round_number + 1) % 3]
        connection = BlockingConnection(
            url(member, user, "pw"), timeout=WAIT_S, virtual_host=f"vhost:{vhost}"
        )
        connection.close()


def test_attach_and_login_errors(cluster: LocalCluster) -> None:
    member = cluster.members[2]
    with pytest.raises(ConnectionException):
        BlockingConnection(url(member, password="wrong"), timeout=WAIT_S)
    with pytest.raises(ConnectionException):  # as RabbitMQ: the socket closes, no frame
        BlockingConnection(url(member), timeout=WAIT_S, virtual_host="vhost:nowhere")
    log = (cluster.directory / f"{member.node_id}.log").read_text()
    assert "virtual host 'nowhere' does not exist" in log
    connection = proton_connection(member)
    with pytest.raises(LinkDetached, match="amqp:not-found.*no queue 'v1.nope' in vhost '/'"):
        connection.create_receiver("/queues/v1.nope")
    with pytest.raises(LinkDetached, match="amqp:invalid-field"):
        connection.create_sender("/exchanges/")
    with pytest.raises(LinkDetached, match="amqp:invalid-field"):
        connection.create_receiver("/exchanges/amq.direct")
    with pytest.raises(LinkDetached, match="rcv-settle-mode second not supported"):
        connection.create_sender("/queues/v1.nope", options=_ReceiverSettlesSecond())
    # the connection survives its links' errors
    declare_quorum(member, "v1.alive")
    sender = connection.create_sender("/queues/v1.alive")
    assert sender.send(Message(body=b"ok")).remote_state == Delivery.ACCEPTED
    connection.close()
    assert [bytes(m.body) for m in receive_all(member, "v1.alive", 1)] == [b"ok"]


class _ReceiverSettlesSecond(LinkOption):
    def apply(self, link: typing.Any) -> None:
        link.rcv_settle_mode = Link.RCV_SECOND


class _Priority(LinkOption):
    def __init__(self, priority: int) -> None:
        self.priority = priority

    def apply(self, link: typing.Any) -> None:
        link.properties = {symbol("rabbitmq:priority"): int32(self.priority)}


def test_consumer_priority_from_the_link_property(cluster: LocalCluster) -> None:
    member = cluster.members[0]
    declare_quorum(member, "v1.priority")
    connection = proton_connection(member)
    low = connection.create_receiver("/queues/v1.priority", credit=5, name="low")
    high = connection.create_receiver(
        "/queues/v1.priority", credit=5, name="high", options=_Priority(10)
    )
    sender = connection.create_sender("/queues/v1.priority")
    for number in range(3):
        sender.send(Message(body=b"p", id=str(number)))
    connection.wait(lambda: high.fetcher.has_message == 3, timeout=WAIT_S)
    pump(connection, 0.5)
    assert low.fetcher.has_message == 0  # the higher priority had credit for them all
    connection.close()


def test_consumer_credit_and_drain(cluster: LocalCluster) -> None:
    member = cluster.members[1]
    declare_quorum(member, "v1.credit")
    connection = proton_connection(member)
    sender = connection.create_sender("/queues/v1.credit")
    for number in range(5):
        sender.send(Message(body=b"credit", id=str(number)))
    receiver = connection.create_receiver("/queues/v1.credit", credit=0)
    link, fetcher = receiver.link, receiver.fetcher
    link.flow(3)
    connection.wait(lambda: fetcher.has_message >= 3, timeout=WAIT_S)
    pump(connection, 1.0)  # no credit, no more messages
    assert fetcher.has_message == 3
    link.drain(10)  # 10 credits for the 2 left: only the server's drained flow zeroes it
    connection.wait(lambda: fetcher.has_message == 5 and link.credit == 0, timeout=WAIT_S)
    ids = []
    for _ in range(5):
        ids.append(receiver.receive(timeout=WAIT_S).id)
        receiver.accept()
    assert ids == ["0", "1", "2", "3", "4"]
    connection.close()


def test_consumer_outcomes_requeue_count_and_dead_letter(cluster: LocalCluster) -> None:
    member = cluster.members[0]
    declare_quorum(member, "v1.dlq")
    declare_quorum(
        member,
        "v1.work",
        **{
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "v1.dlq",
            "x-delivery-limit": 1,
        },
    )
    connection = proton_connection(member)
    sender = connection.create_sender("/queues/v1.work")
    for message_id in ("r", "j", "p", "u"):
        sender.send(Message(body=b"work", id=message_id))
    receiver = connection.create_receiver("/queues/v1.work", credit=0)

    def settle(outcome: int, failed: bool = False, undeliverable: bool = False) -> None:
        """Settle the last message received, and let the disposition reach the server before
        the next receive's credit does."""
        delivery = receiver.fetcher.unsettled.popleft()
        delivery.local.failed = failed
        delivery.local.undeliverable = undeliverable
        delivery.update(outcome)
        delivery.settle()
        pump(connection, 0.3)

    def next_message() -> tuple[str, int, bool]:
        message = receiver.receive(timeout=WAIT_S)  # one credit at a time: no prefetch
        return message.id, message.delivery_count, message.first_acquirer

    assert next_message() == ("r", 0, True)
    settle(Delivery.RELEASED)  # requeued, not counted
    assert next_message() == ("r", 0, False)
    settle(Delivery.MODIFIED)  # modified, delivery-failed false: not counted either
    assert next_message() == ("r", 0, False)
    settle(Delivery.ACCEPTED)
    assert next_message()[0] == "j"
    settle(Delivery.REJECTED)  # dead-lettered
    for expected_count in (0, 1):  # modified, delivery-failed: counted, up to the limit
        assert next_message()[:2] == ("p", expected_count)
        settle(Delivery.MODIFIED, failed=True)
    assert next_message()[0] == "u"
    settle(Delivery.MODIFIED, undeliverable=True)  # undeliverable here: dead-lettered
    connection.close()

    dead = {message.id: message for message in receive_all(member, "v1.dlq", 3)}
    assert set(dead) == {"j", "p", "u"}
    for message_id, reason in (("j", "rejected"), ("p", "delivery_limit"), ("u", "rejected")):
        annotations = dead[message_id].annotations
        deaths = annotations[symbol("x-opt-deaths")]
        assert deaths[0][symbol("queue")] == "v1.work"
        assert deaths[0][symbol("reason")] == reason
        assert annotations[symbol("x-first-death-reason")] == reason


def test_cross_protocol_property_mapping(cluster: LocalCluster) -> None:
    member = cluster.members[2]
    declare_quorum(member, "v1.to-091")
    declare_quorum(member, "v1.to-10")
    connection = proton_connection(member)
    sender = connection.create_sender("/queues/v1.to-091")
    message_uuid = uuid.uuid4()
    sent = Message(
        body=b"payload",
        inferred=True,
        durable=True,
        priority=7,
        ttl=60.0,
        id=message_uuid,
        correlation_id="corr-1",
        user_id=b"guest",
        reply_to="/queues/replies",
        content_type="text/plain",
        content_encoding="utf-8",
        creation_time=1_700_000_000.0,
        group_id="app-7",
        subject="order.created",
        properties={"color": "blue", "size": 3},
        annotations={symbol("x-tenant"): "acme"},
    )
    sender.send(sent)
    pika_side = pika_connection(member)
    channel = pika_side.channel()
    method, properties, body = channel.basic_get("v1.to-091", auto_ack=True)
    assert method is not None and body == b"payload"
    assert properties.delivery_mode == 2
    assert properties.priority == 7
    assert properties.expiration == "60000"
    assert properties.message_id == f"urn:uuid:{message_uuid}"
    assert properties.correlation_id == "corr-1"
    assert properties.user_id == "guest"
    assert properties.reply_to == "replies"
    assert properties.content_type == "text/plain"
    assert properties.content_encoding == "utf-8"
    assert properties.timestamp == 1_700_000_000
    assert properties.app_id == "app-7"
    assert properties.type == "order.created"
    assert properties.headers["color"] == "blue" and properties.headers["size"] == 3
    assert properties.headers["x-tenant"] == "acme"

    header_uuid = uuid.uuid4()
    channel.basic_publish(
        "",
        "v1.to-10",
        b"from 0-9-1",
        pika.BasicProperties(
            delivery_mode=2,
            priority=3,
            message_id=f"urn:uuid:{header_uuid}",
            correlation_id="c-2",
            reply_to="answers",
            content_type="application/json",
            timestamp=1_700_000_123,
            app_id="billing",
            type="invoice",
            headers={"region": "eu", "x-trace": "t-1", "nested": {"dropped": True}},
        ),
    )
    pika_side.close()
    receiver = connection.create_receiver("/queues/v1.to-10", credit=1)
    got = receiver.receive(timeout=WAIT_S)
    receiver.accept()
    assert bytes(got.body) == b"from 0-9-1"
    assert got.durable is True and got.priority == 3
    assert got.id == header_uuid
    assert got.correlation_id == "c-2"
    assert got.reply_to == "/queues/answers"
    assert got.content_type == "application/json"
    assert got.creation_time == 1_700_000_123
    assert got.group_id == "billing"
    assert got.annotations[symbol("x-basic-type")] == "invoice"
    assert got.annotations[symbol("x-trace")] == "t-1"
    assert dict(got.properties) == {"region": "eu"}

    # 1.0 to 1.0: every field as sent, the body's amqp-value type included
    same = connection.create_sender("/queues/v1.to-10")
    value_body = {"answer": 42, "list": [1, "two"]}
    same.send(Message(body=value_body, id="v", properties={"k": "v"}, subject="s"))
    echoed = receiver.receive(timeout=WAIT_S)
    receiver.accept()
    assert (echoed.body, echoed.id, echoed.subject, dict(echoed.properties)) == (
        value_body,
        "v",
        "s",
        {"k": "v"},
    )
    connection.close()


def test_connections_show_the_protocol(cluster: LocalCluster) -> None:
    member = cluster.members[0]
    connection = proton_connection(member)
    client = api(member)
    deadline_s = time.monotonic() + WAIT_S
    while True:
        listed = [c for c in client.get("/api/connections") if c["protocol"] == "AMQP 1-0"]
        if listed or time.monotonic() > deadline_s:
            break
        time.sleep(0.1)
    assert listed and listed[0]["user"] == "guest" and listed[0]["auth_mechanism"] == "PLAIN"
    connection.close()


def test_the_open_frame_says_rabbitmq_and_warren(cluster: LocalCluster) -> None:
    connection = proton_connection(cluster.members[1])
    properties = {str(key): value for key, value in connection.conn.remote_properties.items()}
    assert properties["product"] == "RabbitMQ" and properties["version"] >= "4.0.0"
    assert properties["warren_product"] == "Warren"
    offered = {str(name) for name in connection.conn.remote_offered_capabilities}
    assert {"LINK_PAIR_V1_0", "ANONYMOUS-RELAY"} <= offered
    connection.close()


def test_sigkill_the_leader_under_amqp10_load(tmp_path: Path) -> None:
    """Publisher and consumer on the survivors keep going; what a consumer on the killed leader
    held unsettled is redelivered to one on a survivor; every accepted message arrives."""
    with running_cluster(tmp_path) as cluster:
        leader_id = cluster.wait_healthy(timeout_s=WAIT_S * 3)
        leader = cluster.member(leader_id)
        publisher_node, consumer_node = (m for m in cluster.members if m.node_id != leader_id)
        declare_quorum(publisher_node, "v1.failover")
        doomed = proton_connection(leader)
        holder = doomed.create_receiver("/queues/v1.failover", credit=20)
        publisher = proton_connection(publisher_node)
        sender = publisher.create_sender("/queues/v1.failover")
        accepted: set[str] = set()
        held: list[str] = []
        for number in range(FAILOVER_MESSAGES):
            message_id = str(number)
            while True:  # at least once: a message the dying leader never took is sent again
                outcome = sender.send(Message(body=b"m", id=message_id), error_states=[])
                if outcome.remote_state == Delivery.ACCEPTED:
                    accepted.add(message_id)
                    break
            if number == FAILOVER_MESSAGES // 3:
                while len(held) < 20:  # unsettled on the leader's consumer
                    held.append(holder.receive(timeout=WAIT_S).id)
                cluster.kill(leader_id)
        publisher.close()
        received: set[str] = set()
        redelivered: set[str] = set()
        consumer = proton_connection(consumer_node)
        receiver = consumer.create_receiver("/queues/v1.failover", credit=100)
        deadline_s = time.monotonic() + WAIT_S * 3
        while not accepted <= received:
            assert time.monotonic() < deadline_s, f"{len(accepted - received)} never arrived"
            message = receiver.receive(timeout=WAIT_S)
            received.add(message.id)
            if message.delivery_count or not message.first_acquirer:
                redelivered.add(message.id)
            receiver.accept()
        consumer.close()
        assert len(accepted) == FAILOVER_MESSAGES
        assert set(held) <= redelivered  # the dead consumer's deliveries came back, flagged
        del doomed  # its node is gone: nothing to close


def test_hostile_management_requests_and_transfers(cluster: LocalCluster) -> None:
    """Bad requests get RabbitMQ's 400s, a payload that is no message is rejected, a link
    without `paired` is refused; the connection, and the node (no traceback), go on."""
    member = cluster.members[1]
    connection = proton_connection(member)
    with pytest.raises(LinkDetached, match="Link property 'paired' is not set"):
        connection.create_sender("/management")
    requests = connection.create_sender("/management", name="pair", options=_Paired())
    responses = connection.create_receiver("/management", name="pair", options=_Paired())

    def ask(path: str, method: str, body: object) -> tuple[str, object]:
        request = Message(id=str(uuid.uuid4()), address=path, subject=method, body=body)
        request.reply_to = "$me"
        requests.send(request)
        response = responses.receive(timeout=WAIT_S)  # sent settled: nothing to accept
        assert response.correlation_id == request.id
        return str(response.subject), response.body

    assert ask("/queues/v1.hostile", "PUT", ["not", "a", "map"])[0] == "400"
    assert ask("/queues/v1.hostile", "PUT", {"durable": "yes"})[0] == "400"
    assert ask("/queues/v1.hostile", "PUT", {"colour": True})[0] == "400"
    assert ask("/nowhere", "GET", None)[0] == "400"
    assert ask("/bindings/src=x;bad", "DELETE", None)[0] == "400"
    assert ask("/queues/amq.reserved", "PUT", {})[0] == "403"
    assert ask("/exchanges/", "PUT", {})[0] == "403"  # the default exchange
    assert ask("/queues/v1.hostile", "GET", None)[0] == "404"
    status, queue = ask("/queues/v1.hostile", "PUT", {"arguments": {"x-max-length": 10}})
    assert status == "201" and isinstance(queue, dict) and queue["message_count"] == 0
    assert ask("/queues/v1.hostile", "PUT", {"arguments": {"x-max-length": 11}})[0] == "409"
    sender = connection.create_sender("/queues/v1.hostile")
    link = sender.link
    garbage = link.delivery("garbage")
    link.send(b"\x00\x53\x77\xa1\xff")  # an amqp-value string that runs past the end
    link.advance()
    connection.wait(lambda: garbage.remote_state != 0, timeout=WAIT_S)
    assert garbage.remote_state == Delivery.REJECTED
    assert garbage.remote.condition.name == "amqp:decode-error"
    assert sender.send(Message(body=b"still fine", inferred=True)).remote_state == (
        Delivery.ACCEPTED
    )
    connection.close()
    assert [bytes(m.body) for m in receive_all(member, "v1.hostile", 1)] == [b"still fine"]


class _Paired(LinkOption):
    """What RabbitMQ's management node asks of both links of a pair."""

    def apply(self, link: typing.Any) -> None:
        link.properties = {symbol("paired"): True}
        link.snd_settle_mode = Link.SND_SETTLED
        link.rcv_settle_mode = Link.RCV_FIRST


def test_a_deleted_queue_detaches_its_consumer_links(cluster: LocalCluster) -> None:
    member = cluster.members[2]
    declare_quorum(member, "v1.doomed")
    connection = proton_connection(member)
    receiver = connection.create_receiver("/queues/v1.doomed", credit=1)
    setup = pika_connection(member)
    setup.channel().queue_delete("v1.doomed")
    setup.close()
    with pytest.raises(LinkDetached, match="amqp:resource-deleted"):
        receiver.receive(timeout=WAIT_S)
    connection.close()
