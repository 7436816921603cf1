"""Memory and disk alarms: publishers get connection.blocked past a node's limit, as with
RabbitMQ, and are unblocked when the alarm clears; consumers are never blocked."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from proton import Message, Timeout
from proton.utils import BlockingConnection

from warrenmq.cluster.config import Member
from warrenmq.cluster.ctl import ApiClient
from warrenmq.cluster.local import LocalCluster

from .operations import api, pika_connection, running_cluster

WATERMARK_BYTES = 160 * 1024 * 1024  # well above a node's ~50 MB at rest, below the queue
BODY = b"m" * (1024 * 1024)
MESSAGES = 300  # 300 MiB: far past the watermark on every node
QUEUE = "flow.q"
WAIT_S = 60.0


class Publisher(threading.Thread):
    """Publishes MESSAGES with confirms on its own connection, noting blocked/unblocked.

    pika's BlockingConnection runs those callbacks only in process_data_events, so they are
    noted when the publisher gets to run again, once it is unblocked.
    """

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(daemon=True)
        self.connection = pika_connection(cluster.members[0])
        self.connection.add_on_connection_blocked_callback(lambda *_: self.blocked.set())
        self.connection.add_on_connection_unblocked_callback(lambda *_: self.unblocked.set())
        self.blocked = threading.Event()
        self.unblocked = threading.Event()
        self.confirmed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            channel = self.connection.channel()
            channel.confirm_delivery()
            for number in range(MESSAGES):
                channel.basic_publish("", QUEUE, BODY, pika.BasicProperties(message_id=str(number)))
                self.confirmed += 1
                self.connection.process_data_events(time_limit=0)
            self.connection.close()
        except BaseException as error:  # reported by the test thread
            self.error = error


def test_a_queue_holding_more_bytes_than_the_memory_limit_works_end_to_end(tmp_path: Path) -> None:
    """Bodies wait on disk (the body store), so a backlog of 300 MiB on nodes limited to 160
    MiB of memory is published without a memory alarm, and drained whole."""
    arguments = ("--memory-high-watermark-bytes", str(WATERMARK_BYTES))
    with running_cluster(tmp_path, extra_arguments=arguments) as cluster:
        setup = pika_connection(cluster.members[0])
        setup.channel().queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        setup.close()
        publisher = Publisher(cluster)
        publisher.start()
        publisher.join(4 * WAIT_S)
        assert publisher.error is None, publisher.error
        assert publisher.confirmed == MESSAGES and not publisher.blocked.is_set()
        client = api(cluster.members[0])
        nodes = client.get("/api/nodes")
        assert all(node["mem_used"] < WATERMARK_BYTES for node in nodes), nodes
        assert client.request("GET", "/api/health/checks/alarms")[0] == 200
        consumer = pika_connection(cluster.members[2])
        channel = consumer.channel()
        channel.basic_qos(prefetch_count=50)
        received: list[str] = []
        deadline_s = time.monotonic() + 4 * WAIT_S
        for method, properties, body in channel.consume(QUEUE, inactivity_timeout=1.0):
            assert time.monotonic() < deadline_s, f"drained {len(received)} of {MESSAGES}"
            if method is None:
                continue
            assert body == BODY
            received.append(properties.message_id)
            channel.basic_ack(method.delivery_tag)
            if len(received) == MESSAGES:
                break
        channel.cancel()
        consumer.close()
        assert received == [str(number) for number in range(MESSAGES)]


def test_a_memory_alarm_blocks_publishers_and_not_consumers(tmp_path: Path) -> None:
    """A watermark below what a node uses at rest: the alarm is set at start and stays."""
    arguments = ("--memory-high-watermark-bytes", str(1024 * 1024))
    with running_cluster(tmp_path, nodes=1, extra_arguments=arguments) as cluster:
        member = cluster.members[0]
        client = api(member)
        deadline_s = time.monotonic() + WAIT_S
        while client.request("GET", "/api/health/checks/alarms")[0] != 503:
            assert time.monotonic() < deadline_s, "no memory alarm"
            time.sleep(0.1)
        assert client.get("/api/nodes")[0]["mem_alarm"] is True
        assert_blocks_publishers_not_consumers(member, "memory.q")
    alarms = [
        json.loads(line)
        for line in (tmp_path / "warren-1.log").read_text().splitlines()
        if '"event":"alarm"' in line
    ]
    assert alarms[0]["resource"] == "memory" and alarms[0]["active"] is True


def assert_blocks_publishers_not_consumers(member: Member, queue: str) -> None:
    """With an alarm in effect: a consumer's channel still gets answers; a publisher's first
    publish gets its connection blocked."""
    consumer = pika_connection(member)
    consuming = consumer.channel()
    consuming.queue_declare(queue)
    assert consuming.basic_get(queue)[0] is None
    blocked = threading.Event()
    publisher = pika_connection(member)
    publisher.add_on_connection_blocked_callback(lambda *_: blocked.set())
    publisher.channel().basic_publish("", queue, b"first")  # the publish that gets it blocked
    publisher.process_data_events(time_limit=5)
    assert blocked.is_set()
    consumer.close()


@contextlib.contextmanager
def disk_alarmed_node(tmp_path: Path) -> Iterator[tuple[Member, ApiClient]]:
    """One node whose free-disk limit no disk meets (an exabyte), once its alarm is on: seen
    by the node, and applied from the log (what blocks publishers and withholds 1.0 credit;
    on a loaded machine it can come later than the node's own check)."""
    arguments = ("--disk-free-limit", str(10**18))
    with running_cluster(tmp_path, nodes=1, extra_arguments=arguments) as cluster:
        member = cluster.members[0]
        client = api(member)
        deadline_s = time.monotonic() + WAIT_S
        for check in ("local-alarms", "alarms"):
            while client.request("GET", f"/api/health/checks/{check}")[0] != 503:
                assert time.monotonic() < deadline_s, f"no disk alarm in {check}"
                time.sleep(0.1)
        yield member, client


def test_a_disk_alarm_blocks_publishers_and_not_consumers(tmp_path: Path) -> None:
    """A free-disk limit no disk meets (an exabyte): the alarm is set at start and stays."""
    with disk_alarmed_node(tmp_path) as (member, client):
        assert client.get("/api/nodes")[0]["disk_free_alarm"] is True
        assert_blocks_publishers_not_consumers(member, "disk.q")
        assert client.get("/api/connections")[-1]["state"] in ("blocked", "running")


def test_a_disk_alarm_withholds_amqp_1_0_publishers_credit_and_not_consumers(
    tmp_path: Path,
) -> None:
    """AMQP 1.0 has no connection.blocked: a publisher link gets no credit while the alarm
    lasts, and a consumer on the same connection still receives and settles."""
    with disk_alarmed_node(tmp_path) as (member, client):
        setup = pika_connection(member)
        channel = setup.channel()
        channel.queue_declare("disk.v1")
        channel.basic_publish("", "disk.v1", b"first")  # 0-9-1's publish that gets it blocked
        connection = BlockingConnection(
            f"amqp://guest:guest@{member.host}:{member.amqp_port}", timeout=5
        )
        sender = connection.create_sender("/queues/disk.v1")
        with pytest.raises(Timeout):  # no credit to send with
            sender.send(Message(body=b"held back"))
        receiver = connection.create_receiver("/queues/disk.v1", credit=1)
        assert bytes(receiver.receive(timeout=5).body) == b"first"
        receiver.accept()
        connection.container.timeout = 0.1  # the client's loop sends the accept meanwhile
        settled = lambda: not client.get("/api/queues/%2F/disk.v1")["messages"]  # noqa: E731
        connection.wait(settled, timeout=WAIT_S, msg="the accept was not read")
        connection.close()  # (the blocked 0-9-1 publisher is not read: it ends with the node)


def test_one_unacked_message_pins_its_own_bytes_while_ten_times_the_memory_limit_flows(
    tmp_path: Path,
) -> None:
    """rabbitmq-server#12141's complaint, turned into a check: one message is left unacked at
    the head of a quorum queue while 10 × the node's memory limit (100 MiB) flows through the
    same queue, published and acknowledged. No alarm goes off, and the bodies on disk stay
    within a few segments: the old message keeps its own bytes, not everything after it."""
    watermark_bytes, segment_bytes, body = 100 * 1024 * 1024, 4 * 1024 * 1024, b"f" * 262_144
    arguments = (
        "--memory-high-watermark-bytes",
        str(watermark_bytes),
        "--body-segment-bytes",
        str(segment_bytes),
        "--journal-compaction-bytes",
        str(32 * 1024 * 1024),
    )
    flowing = 10 * watermark_bytes // len(body)
    with running_cluster(tmp_path, nodes=1, extra_arguments=arguments) as cluster:
        member = cluster.members[0]
        holder = pika_connection(member)
        held = holder.channel()
        held.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        held.basic_qos(prefetch_count=1)
        held.confirm_delivery()
        held.basic_publish("", QUEUE, b"the old one")
        old = next(held.consume(QUEUE, inactivity_timeout=WAIT_S))
        assert old[2] == b"the old one"  # and never acknowledged
        publisher = pika_connection(member)
        publishing = publisher.channel()
        publishing.confirm_delivery()
        consumer = pika_connection(member)
        consuming = consumer.channel()
        consuming.basic_qos(prefetch_count=20)
        received = 0
        consume = consuming.consume(QUEUE, inactivity_timeout=0.001)
        largest_bodies_bytes = 0
        for number in range(flowing):
            publishing.basic_publish("", QUEUE, body)
            for method, _, data in consume:
                if method is None:
                    break
                assert data == body
                consuming.basic_ack(method.delivery_tag)
                received += 1
            if number % 100 == 0:
                largest_bodies_bytes = max(largest_bodies_bytes, _disk_bytes(tmp_path, member))
        deadline_s = time.monotonic() + WAIT_S
        for method, _, _ in consuming.consume(QUEUE, inactivity_timeout=1.0):
            assert time.monotonic() < deadline_s, f"received {received} of {flowing}"
            if method is not None:
                consuming.basic_ack(method.delivery_tag)
                received += 1
            if received == flowing:
                break
        assert api(member).request("GET", "/api/health/checks/alarms")[0] == 200
        # what was live at any moment is the old message and what was in flight: a few
        # segments of them, against the 1 GiB that went through
        assert largest_bodies_bytes < 6 * segment_bytes, largest_bodies_bytes
        holder.close()  # the old message goes back to the queue, its body intact
        consuming.cancel()
        deadline_s = time.monotonic() + WAIT_S
        while (got := consuming.basic_get(QUEUE, auto_ack=True))[0] is None:
            assert time.monotonic() < deadline_s, "the old message never came back"
            time.sleep(0.1)
        assert got[2] == b"the old one"
        publisher.close()
        consumer.close()


def _disk_bytes(data_dir: Path, member: Member) -> int:
    bodies = data_dir / member.node_id / "bodies"
    return sum(path.stat().st_size for path in bodies.glob("*.seg"))
