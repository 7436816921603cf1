"""Prometheus metrics (port 15692, `/metrics`), under RabbitMQ's metric names where it has them.

RabbitMQ reports a queue's metrics from the node that hosts its leader, so that summing over
all nodes counts each queue once. Every Warren queue lives in the one Raft group, so the Raft
leader reports every queue (all of them, however many) and the cluster-wide totals; followers
report what is their own: connections, channels, consumers, message counters, memory, disk,
Raft progress. Counters are per node process and start at zero, as RabbitMQ's do.
"""

from __future__ import annotations

import dataclasses
import platform
import typing
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

if typing.TYPE_CHECKING:
    from warrenmq.cluster.node import Node

__all__ = ["ClientCounters", "MessageCounters", "start_metrics"]


@dataclass(slots=True)
class MessageCounters:
    """Messages this node's clients sent and received, since the process started."""

    received: int = 0  # basic.publish
    received_confirm: int = 0  # basic.publish on a channel in confirm mode
    routed: int = 0  # reached at least one queue
    unroutable_returned: int = 0  # mandatory and unroutable: basic.return
    unroutable_dropped: int = 0  # unroutable and dropped
    confirmed: int = 0  # basic.ack sent to publishers, counted per message
    delivered: int = 0  # basic.deliver and basic.get-ok
    redelivered: int = 0  # of those, with redelivered set
    acknowledged: int = 0  # messages settled by consumers' basic.ack
    get_empty: int = 0  # basic.get on an empty queue


@dataclass(slots=True)
class ClientCounters:
    """Client connections and channels of this node, since the process started."""

    connections_opened: int = 0  # connection.open accepted
    connections_closed: int = 0  # of those, ended however they ended
    channels_opened: int = 0
    channels_closed: int = 0


_COUNTER_HELP = {
    "received": "Total number of messages received from publishers",
    "received_confirm": "Total number of messages received from publishers expecting confirms",
    "routed": "Total number of messages routed to queues",
    "unroutable_returned": "Total number of messages published as mandatory and returned",
    "unroutable_dropped": "Total number of messages published as non-mandatory and dropped",
    "confirmed": "Total number of messages confirmed to publishers",
    "delivered": "Total number of messages delivered to consumers",
    "redelivered": "Total number of messages redelivered to consumers",
    "acknowledged": "Total number of messages acknowledged by consumers",
    "get_empty": "Total number of times basic.get operations fetched no message",
}


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class _NodeCollector:
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> typing.Iterator[Metric]:
        node = self.node
        yield from self._identity()
        yield from self._clients()
        for name, documentation in _COUNTER_HELP.items():
            yield CounterMetricFamily(
                f"rabbitmq_global_messages_{name}",
                documentation,
                value=getattr(node.counters, name),
            )
        for counter in dataclasses.fields(ClientCounters):
            name = counter.name
            kind, what = name.split("_")
            yield CounterMetricFamily(
                f"rabbitmq_{name}",
                f"Total number of {kind} {what}",
                value=getattr(node.client_counters, name),
            )
        yield from self._resources()
        yield from self._raft()
        if node.log.is_leader:
            yield from self._queues()

    def _identity(self) -> typing.Iterator[Metric]:
        identity = GaugeMetricFamily(
            "rabbitmq_identity_info",
            "RabbitMQ node & cluster identity info",
            labels=["rabbitmq_node", "rabbitmq_cluster"],
        )
        identity.add_metric([self.node.config.node_id, "warren"], 1)
        yield identity
        build = GaugeMetricFamily(
            "rabbitmq_build_info",
            "RabbitMQ & Erlang/OTP version info (here: Warren's and Python's)",
            labels=["rabbitmq_version", "product_name", "python_version"],
        )
        build.add_metric([self.node.version, "Warren", platform.python_version()], 1)
        yield build

    def _clients(self) -> typing.Iterator[Metric]:
        sessions = list(self.node.sessions.values())
        yield _gauge("rabbitmq_connections", "Connections currently open", len(sessions))
        yield _gauge(
            "rabbitmq_channels",
            "Channels currently open",
            sum(len(session.channels) for session in sessions),
        )
        yield _gauge(
            "rabbitmq_consumers",
            "Consumers currently connected",
            self.node.broker.query_consumer_count(self.node.config.node_id),
        )

    def _resources(self) -> typing.Iterator[Metric]:
        reading = self.node.resources.reading
        limits = self.node.resources
        yield _gauge(
            "rabbitmq_process_resident_memory_bytes",
            "Memory used in bytes",
            reading.memory_used_bytes,
        )
        yield _gauge(
            "rabbitmq_resident_memory_limit_bytes",
            "Memory high watermark in bytes",
            limits.memory_limit_bytes,
        )
        yield _gauge(
            "rabbitmq_disk_space_available_bytes",
            "Disk space available in bytes",
            reading.disk_free_bytes,
        )
        yield _gauge(
            "rabbitmq_disk_space_available_limit_bytes",
            "Free disk space low watermark in bytes",
            limits.disk_free_limit_bytes,
        )
        yield _gauge("rabbitmq_process_open_fds", "Open file descriptors", reading.open_fds)
        yield _gauge("rabbitmq_process_max_fds", "Open file descriptors limit", reading.max_fds)
        local = limits.local_alarms
        yield _gauge(
            "rabbitmq_alarms_memory_used_watermark",
            "is 1 when VM memory watermark is reached",
            int("memory" in local),
        )
        yield _gauge(
            "rabbitmq_alarms_free_disk_space_watermark",
            "is 1 when free disk space alarm is in effect",
            int("disk" in local),
        )

    def _raft(self) -> typing.Iterator[Metric]:
        log = self.node.log
        yield CounterMetricFamily("rabbitmq_raft_term", "Current Raft term number", value=log.term)
        yield _gauge("rabbitmq_raft_log_commit_index", "Raft log commit index", log.commit_index)
        yield _gauge(
            "rabbitmq_raft_log_last_applied_index",
            "Raft log last applied index",
            log.last_applied_index,
        )
        latencies = log.commit_latencies_s
        yield _gauge(
            "rabbitmq_raft_entry_commit_latency_seconds",
            "Time taken for a log entry to be committed (mean of this node's last entries)",
            sum(latencies) / len(latencies) if latencies else 0.0,
        )

    def _queues(self) -> typing.Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(
                f"rabbitmq_queue_{name}", documentation, labels=["vhost", "queue"]
            )
            for name, documentation in (
                ("messages", "Sum of ready and unacknowledged messages - total queue depth"),
                ("messages_ready", "Messages ready to be delivered to consumers"),
                ("messages_unacked", "Messages delivered to consumers but not yet acknowledged"),
                ("messages_ready_bytes", "Size in bytes of ready messages"),
                ("consumers", "Consumers on a queue"),
            )
        }
        queue_count = exchange_count = 0
        broker = self.node.broker
        for vhost_name in broker.query_vhost_names():
            vhost = broker.query_vhost(vhost_name)
            if vhost is None:
                continue
            exchange_count += len(vhost.exchanges)
            for queue in vhost.queues.values():
                queue_count += 1
                labels = [vhost_name, queue.name]
                ready = queue.ready
                families["messages"].add_metric(labels, ready + queue.unacked)
                families["messages_ready"].add_metric(labels, ready)
                families["messages_unacked"].add_metric(labels, queue.unacked)
                families["messages_ready_bytes"].add_metric(labels, queue.ready_bytes)
                families["consumers"].add_metric(labels, len(queue.consumers))
        yield _gauge("rabbitmq_queues", "Queues available", queue_count)
        yield _gauge("rabbitmq_exchanges", "Exchanges available", exchange_count)
        yield from families.values()


async def start_metrics(node: Node) -> web.AppRunner:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(node))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total and friends

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/metrics/per-object", metrics)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, node.config.listen_host, node.config.prometheus_port).start()
    return runner
