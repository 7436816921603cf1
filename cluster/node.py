"""One Warren node process: the Raft log, the broker it feeds, listeners, effect dispatch.

Start-up order: join the Raft group and catch up (the log or a snapshot), announce this process
as a new incarnation (`NodeUp`), and only then accept AMQP clients: every session this node holds
belongs to an incarnation the whole cluster knows.

While running, a watcher does three things the log cannot do by itself:
- as leader, it declares a member lost (`NodeDown`) once it has been silent for
  `node_down_after_s`: that member's consumers go and their unacked messages return to queues;
- if this node has been cut off from the majority for `minority_close_after_s`, it closes its
  client connections with 320 and takes no new ones until it is back (clients reconnect to the
  majority side);
- if the cluster declared this incarnation lost (a long pause, a partition), the sessions it held
  are already released: it closes them, becomes a new incarnation and announces it.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import os
import ssl
import sys
import time
import typing
from importlib import metadata

from aiohttp import web

from warrenmq.amqp.connection import Settings
from warrenmq.amqp.server import AmqpServerProtocol, Protocols, serve
from warrenmq.amqp.spec import ReplyCode
from warrenmq.amqp.v1.engine import V1Settings
from warrenmq.amqp.v1.transport import V1Protocol
from warrenmq.cluster.amqp10.session import V1Session
from warrenmq.cluster.config import NodeConfig
from warrenmq.cluster.logs import log_event
from warrenmq.cluster.management import start_management
from warrenmq.cluster.metrics import ClientCounters, MessageCounters, start_metrics
from warrenmq.cluster.passwords import hash_password
from warrenmq.cluster.resources import ResourceMonitor, total_memory_bytes
from warrenmq.cluster.session import Session
from warrenmq.replication import commands as c
from warrenmq.replication.body_store import BodyStore
from warrenmq.replication.machine import Broker
from warrenmq.replication.raft import RaftLog, RaftSettings
from warrenmq.replication.replies import Deliver, Effect, Reply

__all__ = ["Node"]

log = logging.getLogger(__name__)

EXIT_RAFT_LOOP_FAILED = 70  # EX_SOFTWARE: the node's Raft loop raised
SHUTDOWN_GRACE_S = 2.0  # how long clients get to answer connection.close on shutdown
DATA_DIR_LOCK_WAIT_S = 120.0  # how long a starting node waits for its data dir's lock
SNAPSHOT_AT_STOP_S = 60.0  # how long a stopping node waits for its snapshot to be written
# The longest Raft sleep: our own timers (resends, keepalives, reconnects) fall due every
# 0.5 s at the soonest.
IDLE_TICK_S = 0.5
WATCH_S = 0.1  # how often a leader's watcher looks at membership and proposes due expiries
# A follower's watcher checks only alarms (each second), deleted users and vhosts, and a lost
# majority (after seconds). Each wake-up of an idle node costs about 0.2 ms of CPU.
FOLLOWER_WATCH_S = 0.5
STATUS_LOG_S = 5.0  # how often a waiting node says what it waits for
CATCH_UP_TIMEOUT_S = 1.0  # how long a refusal waits for the node to catch up (no majority)
TICK_MS = 1000  # how often the leader proposes its clock (Tick)
RESOURCE_CHECK_S = 1.0  # how often memory and free disk are compared with their limits
ALARM_REASONS = {"memory": "low on memory", "disk": "low on disk"}  # connection.blocked reason


class _Wakeup:
    """Wakes the Raft loop when one of `descriptors` is readable, or when `wait`'s timeout
    passes. The descriptors are watched for as long as the loop runs: adding and removing
    them around every wait cost a fifth of an idle node's CPU. Readiness while nothing waits
    costs one no-op call per turn of the event loop, until the next tick takes it in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, descriptors: tuple[int, ...]) -> None:
        self._loop = loop
        self._descriptors = descriptors
        self._waiter: asyncio.Future[None] | None = None
        for descriptor in descriptors:
            loop.add_reader(descriptor, self._wake)

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)

    def _arm(self, waiter: asyncio.Future[None]) -> None:
        self._waiter = waiter

    async def wait(self, timeout_s: float) -> None:
        waiter = self._loop.create_future()
        # readiness reported in this turn of the event loop was seen before the tick that
        # has just run took it in: only the next turn's reports wake (a level-triggered
        # descriptor still ready is reported again then)
        self._loop.call_soon(self._arm, waiter)
        timer = self._loop.call_later(timeout_s, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        for descriptor in self._descriptors:
            self._loop.remove_reader(descriptor)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _version() -> str:
    try:
        return metadata.version("warrenmq")
    except metadata.PackageNotFoundError:
        return "0+unknown"


CLUSTER_NAME = "warren"
# RabbitMQ's own AMQP 1.0 clients refuse a server whose open frame does not say product
# RabbitMQ, version 4.0.0 or later: Warren says so there, the version whose AMQP 1.0 it
# implements, and keeps its own name and version in warren_product and warren_version.
V1_COMPATIBLE_PRODUCT = ("RabbitMQ", "4.0.0")


def v1_server_properties(config: NodeConfig) -> dict[str, typing.Any]:
    """What the AMQP 1.0 open frame tells clients (RabbitMQ's keys, no capabilities table)."""
    properties = server_properties(config)
    del properties["capabilities"]
    properties["node"] = config.node_id  # RabbitMQ names the node over AMQP 1.0 only
    properties["product"], properties["version"] = V1_COMPATIBLE_PRODUCT
    properties["warren_product"], properties["warren_version"] = "Warren", _version()
    return properties


def server_properties(config: NodeConfig) -> dict[str, typing.Any]:
    """What connection.start tells clients: RabbitMQ's keys and the capabilities we honour."""
    return {
        "product": "Warren",
        "version": _version(),
        "platform": f"Python {sys.version.split()[0]}",
        "cluster_name": CLUSTER_NAME,
        "copyright": "The Warren authors",
        "information": "Licensed under the Apache License 2.0",
        "capabilities": {
            "publisher_confirms": True,
            "exchange_exchange_bindings": True,
            "basic.nack": True,
            "consumer_cancel_notify": True,
            "connection.blocked": True,
            "consumer_priorities": True,
            "authentication_failure_close": True,
            "per_consumer_qos": True,
            "direct_reply_to": True,
        },
    }


def _next_incarnation(directory: os.PathLike[str], after: int = 0) -> int:
    """A number that grows with every start of this node, kept in its data dir.

    `after` is the last incarnation the cluster knows of this node, for a data dir that lost
    its count (a replaced disk).
    """
    path = os.path.join(directory, "incarnation")
    try:
        with open(path) as previous:
            incarnation = max(int(previous.read().strip() or 0), after) + 1
    except FileNotFoundError:
        incarnation = after + 1
    temporary = path + ".tmp"
    with open(temporary, "w") as current:
        current.write(str(incarnation))
        current.flush()
        os.fsync(current.fileno())
    os.replace(temporary, path)
    return incarnation


async def _lock_data_dir(directory: os.PathLike[str]) -> None:
    """Hold the data dir's lock for as long as this process lives (the lock goes with it).

    One process at a time writes a data dir: not two nodes by mistake, and not a node with a
    snapshot writer left from its previous life. The writer is a forked child that outlives a
    SIGKILLed node; it inherits the lock, so a restarted node waits until it is done rather
    than have it rename an old snapshot over a newer one.
    """
    descriptor = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    deadline_s = time.monotonic() + DATA_DIR_LOCK_WAIT_S
    waiting = False
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return  # the descriptor stays open (and locked) until the process ends
        except BlockingIOError:
            if time.monotonic() > deadline_s:
                os.close(descriptor)
                raise RuntimeError(f"{directory} is in use by another process") from None
            if not waiting:
                log.info("waiting for %s: another process holds its lock", directory)
                waiting = True
            await asyncio.sleep(0.2)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.broker = Broker(node_id=config.node_id)
        self.sessions: dict[int, Session | V1Session] = {}
        self.incarnation = 0
        self.serving = False  # AMQP clients are welcome (announced, in the majority)
        self.log: RaftLog
        self._connection_serial = 0
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._declared_down: set[tuple[str, int]] = set()  # NodeDown proposals already sent
        self._isolated = False  # fault injection: peer traffic dropped both ways
        self._last_tick_ms = 0  # when this node, as leader, last proposed Tick
        self._node_by_raft_address = {m.raft_address: m.node_id for m in config.cluster}
        self._listeners: list[asyncio.Server] = []  # amqps, when TLS is configured
        self._web: list[web.AppRunner] = []  # management API and Prometheus metrics
        self._management_channels = itertools.count(1)
        self.counters = MessageCounters()
        self.client_counters = ClientCounters()
        self.resources: ResourceMonitor
        self._last_resource_check_s = 0.0
        self._blocked_reason: str | None = None  # what the sessions were last told
        self.started_at_s = time.time()
        self.version = _version()
        self.pid = os.getpid()

    def next_connection_serial(self) -> int:
        self._connection_serial += 1
        return self._connection_serial

    # --- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        directory = config.node_data_dir
        directory.mkdir(parents=True, exist_ok=True)
        await _lock_data_dir(directory)
        self.incarnation = _next_incarnation(directory)
        self.broker.bodies = BodyStore(
            directory / "bodies", segment_bytes=config.body_segment_bytes
        )
        self.resources = ResourceMonitor(
            directory,
            config.memory_high_watermark_bytes
            or int(config.memory_high_watermark * total_memory_bytes()),
            config.disk_free_limit_bytes,
        )
        loop = asyncio.get_running_loop()
        self.log = RaftLog(
            node_id=self.config.node_id,
            incarnation=self.incarnation,
            raft_address=self.config.me.raft_address,
            bind_address=f"{self.config.listen_host}:{self.config.raft_port}",
            partner_addresses=[member.raft_address for member in self.config.peers],
            directory=directory,
            broker=self.broker,
            dispatch=self.dispatch,
            schedule=loop.call_soon,
            password=self.config.cluster_secret or None,
            settings=RaftSettings(
                message_size_max_bytes=config.message_size_max_bytes,
                compaction_bytes=config.journal_compaction_bytes,
            ),
        )
        self._tasks.append(loop.create_task(self._tick_forever()))
        tls = self._tls_context()
        self._web.append(await start_management(self, tls if config.management_tls else None))
        self._web.append(await start_metrics(self))
        await self._wait_for(lambda: self.log.is_ready, "catching up with the cluster")
        known = self.broker.query_last_incarnation(self.config.node_id)
        if known >= self.incarnation:
            # the data dir lost its count: entries under a number the cluster has seen would
            # be turned away as duplicates, so this node goes on after the last one it knows
            self.incarnation = _next_incarnation(directory, after=known)
            log.warning(
                "node %s: the cluster knows incarnation %d of this node; starting as %d",
                self.config.node_id,
                known,
                self.incarnation,
            )
            self.log.change_incarnation(self.incarnation)
        self.log.propose(
            c.BootstrapDefaults(
                vhost=self.config.default_vhost,
                user=self.config.default_user,
                password_hash=hash_password(self.config.default_pass),
                tags=("administrator",),
            )
        )
        await self._announce()
        settings = Settings(
            channel_max=self.config.channel_max,
            frame_max_bytes=self.config.frame_max_bytes,
            heartbeat_s=self.config.heartbeat_s,
            message_size_max_bytes=self.config.message_size_max_bytes,
            write_buffer_high_bytes=self.config.write_buffer_high_bytes,
            server_properties=server_properties(self.config),
        )
        v1_settings = V1Settings(
            max_frame_bytes=self.config.frame_max_bytes,
            channel_max=self.config.channel_max,
            idle_timeout_s=float(self.config.heartbeat_s),
            message_size_max_bytes=self.config.message_size_max_bytes,
            container_id=CLUSTER_NAME,
            properties=v1_server_properties(self.config),
        )
        protocols = Protocols(settings, self._new_session, v1_settings, self._new_v1_session)
        self._server = await serve(self.config.listen_host, self.config.amqp_port, protocols)
        if tls is not None:
            self._listeners.append(
                await serve(config.listen_host, config.amqps_port, protocols, ssl=tls)
            )
        self._tasks.append(loop.create_task(self._watch_forever()))
        log.info(
            "node %s (incarnation %s) serving AMQP on %s:%s, Raft on %s, data in %s",
            self.config.node_id,
            self.incarnation,
            self.config.host,
            self.config.amqp_port,
            self.config.me.raft_address,
            directory,
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        """The server side of TLS (amqps, and HTTPS when management_tls is set), or None."""
        config = self.config
        if not config.tls_certificate_file:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(config.tls_certificate_file, config.tls_key_file or None)
        if config.tls_ca_file:
            context.load_verify_locations(config.tls_ca_file)
        if config.tls_verify_peer:
            # RabbitMQ's verify_peer with fail_if_no_peer_cert=false asks for a certificate
            # and checks any that comes; with it true, a client without one is refused
            context.verify_mode = (
                ssl.CERT_REQUIRED if config.tls_fail_if_no_peer_cert else ssl.CERT_OPTIONAL
            )
        return context

    def local_listeners(self) -> dict[str, int]:
        """Port of each protocol this node listens for, by RabbitMQ's protocol names."""
        config = self.config
        listeners = {
            "amqp": config.amqp_port,
            "https" if config.management_tls else "http": config.management_port,
            "http/prometheus": config.prometheus_port,
        }
        if config.tls_certificate_file:
            listeners["amqp/ssl"] = config.amqps_port
        return listeners

    async def submit(self, command: c.Command) -> Reply:
        """Propose one command and wait until it is applied (the management API's writes)."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()

        def on_reply(reply: Reply) -> None:
            if not future.done():
                future.set_result(reply)

        self.log.propose(command, on_reply)
        return await future

    def catch_up(self, then: typing.Callable[[], None]) -> None:
        """Call `then` once this node has applied everything the cluster committed before this
        call (its own Barrier has come back applied), or after CATCH_UP_TIMEOUT_S if that takes
        longer (no majority): a refusal read from this node's state must not miss a user,
        vhost or permission just added through another node."""
        done = False

        def finish(_: object = None) -> None:
            nonlocal done
            if not done:
                done = True
                timer.cancel()
                then()

        timer = asyncio.get_running_loop().call_later(CATCH_UP_TIMEOUT_S, finish)
        self.log.propose(c.Barrier(), finish)

    async def caught_up(self) -> None:
        """`catch_up`, awaited."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.catch_up(lambda: done.set_result(None))
        await done

    def management_channel(self) -> c.ChannelRef:
        """A channel identity for one management operation (declare, bind, delete)."""
        return c.ChannelRef(
            self.config.node_id,
            self.incarnation,
            c.MANAGEMENT_CONNECTION,
            next(self._management_channels),
        )

    async def _announce(self) -> None:
        self.resources.local_alarms = set()  # the cluster forgot them with the old incarnation
        self.log.propose(
            c.NodeUp(node=self.config.node_id, incarnation=self.incarnation, pid=self.pid)
        )
        await self._wait_for(
            lambda: self.broker.query_live_incarnation(self.config.node_id) == self.incarnation,
            f"announcing incarnation {self.incarnation}",
        )
        self.serving = True

    async def _wait_for(self, condition: typing.Callable[[], bool], what: str) -> None:
        waited_s = 0.0
        while not condition():
            await asyncio.sleep(WATCH_S)
            waited_s += WATCH_S
            if waited_s >= STATUS_LOG_S:
                log.info(
                    "node %s still %s (needs a majority of %d members)",
                    self.config.node_id,
                    what,
                    len(self.config.cluster) // 2 + 1,
                )
                waited_s = 0.0

    async def stop(self) -> None:
        """Tell every client why (320, as RabbitMQ does on shutdown), then leave the cluster."""
        if self._server is not None:
            self._server.close()
        for listener in self._listeners:
            listener.close()
        self._close_sessions("broker forced connection closure with reason 'shutdown'")
        deadline_s = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_S
        while self.sessions and asyncio.get_running_loop().time() < deadline_s:
            await asyncio.sleep(0.02)  # clients answer close-ok; their sessions end
        for session in list(self.sessions.values()):
            session.protocol.abort()
        await asyncio.sleep(0.05)  # let the SessionClosed proposals go out
        await self._snapshot_for_restart()
        for task in self._tasks:
            task.cancel()
        # ended before the log closes, so none still watches a descriptor the close ends
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.log.flush()
        self.log.tick()
        self.log.close()
        for runner in self._web:
            await runner.cleanup()
        log.info("node %s stopped", self.config.node_id)

    async def _snapshot_for_restart(self) -> None:
        """A snapshot of the state as it stops, so the node restarts from it in a moment
        instead of replaying its journal; past SNAPSHOT_AT_STOP_S it replays after all."""
        self.log.snapshot()
        deadline_s = asyncio.get_running_loop().time() + SNAPSHOT_AT_STOP_S
        while self.log.snapshot_pending:
            if asyncio.get_running_loop().time() > deadline_s:
                log.warning(
                    "no snapshot within %.0f s: the restart replays the journal",
                    SNAPSHOT_AT_STOP_S,
                )
                return
            await asyncio.sleep(0.02)  # the tick task carries the writing on

    # --- the loop's regular work ----------------------------------------------------------

    async def _tick_forever(self) -> None:
        """pysyncobj's turns. If one ever fails, this node can no longer take part in the log:
        it exits non-zero (a supervisor restarts it, and it catches up from its journal) rather
        than keep serving AMQP with a dead Raft loop."""
        wakeup = _Wakeup(asyncio.get_running_loop(), self.log.wakeup_fds)
        try:
            while True:
                self.log.tick()
                if self.log.has_work:
                    await asyncio.sleep(0)  # clients' reads and writes first, then at once
                else:
                    await wakeup.wait(self.log.idle_wait_s(IDLE_TICK_S))
        except Exception:
            log.critical(
                "node %s: the Raft loop failed; exiting", self.config.node_id, exc_info=True
            )
            logging.shutdown()
            os._exit(EXIT_RAFT_LOOP_FAILED)
        finally:
            wakeup.close()  # the node stops: cancelled before the log closes its descriptors

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(WATCH_S if self.log.is_leader else FOLLOWER_WATCH_S)
            try:
                await self._watch()
            except Exception:
                log.exception("node %s: membership watch failed", self.config.node_id)

    async def _watch(self) -> None:
        if self.log.is_leader:
            self._declare_silent_members_down()
            self._tick_clock()
        self._check_resources()
        self._close_sessions_of_deleted()
        if self.config.fault_injection:
            self._follow_fault_file()
        if self.log.seconds_since_majority_contact() > self.config.minority_close_after_s:
            if self.serving:
                log.warning(
                    "node %s lost the majority: closing client connections", self.config.node_id
                )
                self.serving = False
                self._close_sessions("node lost contact with the cluster majority")
            return
        if self.broker.query_live_incarnation(self.config.node_id) != self.incarnation:
            log.warning(
                "node %s: the cluster declared incarnation %s lost; rejoining",
                self.config.node_id,
                self.incarnation,
            )
            self.serving = False
            self._close_sessions("node was declared lost by the cluster and rejoins")
            self.incarnation = _next_incarnation(self.config.node_data_dir)
            self.log.change_incarnation(self.incarnation)
            await self._announce()
        elif not self.serving:
            self.serving = True
            log.info("node %s is back in the majority", self.config.node_id)

    def _follow_fault_file(self) -> None:
        """Fault injection for partition tests: while the file says "isolate", no peer message
        reaches or leaves this node (DurableTransport.isolated)."""
        fault_file = self.config.node_data_dir / "fault"
        isolated = fault_file.exists() and fault_file.read_text().strip() == "isolate"
        if isolated != self._isolated:
            self._isolated = isolated
            log.warning("node %s: fault injection: isolated=%s", self.config.node_id, isolated)
            self.log.isolate(isolated)

    def _tick_clock(self) -> None:
        """The state machine's clock is the leader's: proposed once a second, and as soon as a
        message or queue expiry falls due (so TTLs are kept to about a watch period)."""
        now_ms = int(time.time() * 1000)
        deadline_ms = self.broker.query_next_deadline_ms()
        due = deadline_ms is not None and deadline_ms <= now_ms
        if due or now_ms - self._last_tick_ms >= TICK_MS:
            self._last_tick_ms = now_ms
            self.log.propose(c.Tick(now_ms=now_ms))

    def _declare_silent_members_down(self) -> None:
        for raft_address, silent_s in self.log.peers_silent_for_s().items():
            node_id = self._node_by_raft_address.get(raft_address)
            if node_id is None or silent_s < self.config.node_down_after_s:
                continue
            incarnation = self.broker.query_live_incarnation(node_id)
            if incarnation is None or (node_id, incarnation) in self._declared_down:
                continue
            self._declared_down.add((node_id, incarnation))
            log.warning(
                "node %s silent for %.1f s: declaring incarnation %s lost",
                node_id,
                silent_s,
                incarnation,
            )
            self.log.propose(c.NodeDown(node=node_id, incarnation=incarnation))

    def _check_resources(self) -> None:
        """Raise or clear this node's alarms through the log, and block or unblock publishers
        wherever an alarm is in effect (RabbitMQ blocks publishers on every node)."""
        now_s = time.monotonic()
        if now_s - self._last_resource_check_s >= RESOURCE_CHECK_S:
            self._last_resource_check_s = now_s
            changed = self.resources.check()
            for resource, active in changed.items():
                reading = self.resources.reading
                log_event(
                    log,
                    "alarm",
                    f"{resource} alarm {'set' if active else 'cleared'} on {self.config.node_id}",
                    logging.WARNING,
                    resource=resource,
                    active=active,
                    memory_used_bytes=reading.memory_used_bytes,
                    disk_free_bytes=reading.disk_free_bytes,
                )
                self.log.propose(
                    c.SetAlarm(node=self.config.node_id, resource=resource, active=active)
                )
        reason = self.blocked_reason
        if reason != self._blocked_reason:
            self._blocked_reason = reason
            for session in list(self.sessions.values()):
                session.update_blocked()

    @property
    def blocked_reason(self) -> str | None:
        """Why publishers are blocked: a resource alarm somewhere in the cluster, as applied
        here. A publisher that starts is blocked at once, not at the next watch."""
        alarms = sorted(resource for _, resource in self.broker.query_alarms())
        return ALARM_REASONS[alarms[0]] if alarms else None

    def _close_sessions_of_deleted(self) -> None:
        """RabbitMQ closes the connections of a deleted user or vhost (320)."""
        broker = self.broker
        for session in list(self.sessions.values()):
            if not session.vhost:
                continue  # not open yet: connection.open checks the vhost
            if broker.query_user(session.user) is None:
                session.close(ReplyCode.CONNECTION_FORCED, f"user '{session.user}' is deleted")
            elif not broker.query_vhost_exists(session.vhost):
                session.close(ReplyCode.CONNECTION_FORCED, f"vhost '{session.vhost}' is deleted")

    def _close_sessions(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            session.close(ReplyCode.CONNECTION_FORCED, reason)

    # --- sessions and effects ------------------------------------------------------------

    def _new_session(self, protocol: AmqpServerProtocol) -> Session:
        session = Session(self, protocol)
        self.sessions[session.serial] = session
        return session

    def _new_v1_session(self, protocol: V1Protocol) -> V1Session:
        session = V1Session(self, protocol)
        self.sessions[session.serial] = session
        return session

    def dispatch(self, effects: list[Effect]) -> None:
        """Carry out the effects this node owns; every other node drops them (DESIGN.md §2.6).

        Effects fail one at a time: one that cannot be carried out closes its own connection
        (541, whose close returns its unacked messages to their queues) and the rest go out."""
        held: c.ChannelRef | None = None  # the channel found held last: a run of deliveries
        for effect in effects:  # names one ChannelRef object, and hashing it costs 0.5 us
            owner = effect.owner
            if owner.node != self.config.node_id or owner.incarnation != self.incarnation:
                continue
            if isinstance(effect, Deliver) and owner is not held:
                if not self.broker.query_holds_channel(owner):
                    # A node catching up (after a pause or a partition) applies a delivery
                    # and, in the same tick, the release of its channel: the message went back
                    # to its queue and on to another consumer, flagged redelivered. Sent now,
                    # it would arrive a second time, unflagged.
                    continue
                held = owner
            session = self.sessions.get(owner.connection)
            if session is None:
                continue
            try:
                session.deliver(effect)
            except Exception:
                log.exception("connection %s: %s failed", owner.connection, type(effect).__name__)
                session.close(ReplyCode.INTERNAL_ERROR, "")

    # --- what operators see ------------------------------------------------------------

    def cluster_status(self) -> dict[str, typing.Any]:
        leader_address = self.log.leader_address
        members = []
        for member in self.config.cluster:
            me = member.node_id == self.config.node_id
            members.append(
                {
                    "node_id": member.node_id,
                    "host": member.host,
                    "amqp_port": member.amqp_port,
                    "raft_port": member.raft_port,
                    "management_port": member.management_port,
                    "pid": self.pid if me else self.broker.query_pid(member.node_id),
                    "alive": True if me else self.log.is_connected(member.raft_address),
                }
            )
        return {
            "leader": self._node_by_raft_address.get(leader_address or ""),
            "members": members,
        }
