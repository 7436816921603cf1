"""The broker's Raft log, on pysyncobj (DESIGN.md §4): `RaftLog` and the replicated object.

Theory of operation
-------------------
`RaftLog.propose(command, on_reply)` collects the commands of one loop turn; `flush()` sends them
as one log entry (group commit). proposer.py decides what to send when: one entry in flight,
the rest batching behind it, sent again on a leader change or a timeout, given up after
`give_up_after_s`. pysyncobj replicates the entry and, once a majority has it, every node
applies it through `_Replica.apply_entry` in log order. There the proposer finds its own
entries by sequence number; each command's reply for its caller and the entry's effects for
the dispatcher are collected, and run after pysyncobj's tick returns, in log order (reply
first, then effects), so nothing they do re-enters pysyncobj while it applies.

What pysyncobj does not promise, raft_journal.py, raft_snapshot.py and raft_wire.py add
(RAFT-NOTES.md):
- Durability. `DurableJournal` keeps the entries in a file (an index in memory, not the entries)
  and syncs it, and the body store with it, in a background thread, one group at a time, so the
  loop goes on serving and heartbeating while the disk is slow. A follower's acknowledgement
  waits until what it acknowledges is synced (`DurableTransport`); what applying produced waits
  in the outbox until the node's own journal has synced the entry: a confirm or a delivery
  means the entry is on disk on a majority. The current term and vote are fsynced before a
  vote is sent.
- Bodies outside the state. The broker keeps message bodies in the node's body store
  (body_store.py); snapshots name them by id, and a snapshot sent to a follower carries the live
  ones (`BodySerializer`).
- Raft §5.3, "if an existing entry conflicts with a new one … delete the existing entry and all
  that follow it": pysyncobj truncates on any append-entries whose prevLogIdx is below its log
  end, even a stale duplicate, so a follower could drop entries it already acknowledged.
  `DurableJournal` defers the truncation and only carries it out on a real conflict. A kept
  suffix is not yet verified, so a follower commits no further than the entries the leader's
  message matched (`clamp_commit_index`, Figure 2's "index of last new entry").
- Unknown outcomes. pysyncobj may lose an entry on a leader change without saying so: the
  proposer sends it again, and the state machine admits each `(node, incarnation, entry_seq)`
  once, so a copy that arrives second is not applied twice. Since nothing newer was ever sent,
  a re-send can neither leave a gap nor reorder a channel's commands.
- Peers authenticate with the cluster secret (pysyncobj's `password`, with `PeerCipher` in place
  of its Fernet); they exchange pickles, so the Raft port must never be reachable from outside
  the cluster.
"""

from __future__ import annotations

import logging
import struct
import time
import typing
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pysyncobj

from warrenmq.replication.body_store import BodyStore
from warrenmq.replication.commands import Command, decode_entry
from warrenmq.replication.machine import Broker, BrokerState, Meta, upgrade_state
from warrenmq.replication.proposer import (
    ENTRY_HEADER,
    GIVEN_UP,
    LOST,
    Pending,
    Proposer,
    ReplyCallback,
)
from warrenmq.replication.raft_journal import DurableJournal, align_journal_with_snapshot
from warrenmq.replication.raft_snapshot import BodySerializer
from warrenmq.replication.raft_wire import (
    DurableTransport,
    PeerCipher,
    clamp_commit_index,
    followers_hold,
    journal_of,
    last_response_times,
    next_timer_s,
    poller_of,
    raft_clock,
    send_append_entries_now,
    snapshot_progress,
    transport_of,
    tune_pysyncobj,
    use_serializer,
)
from warrenmq.replication.replies import CancelConsumer, Effect, Refused, Reply

__all__ = [
    "DurableJournal",
    "PeerCipher",
    "RaftLog",
    "RaftSettings",
    "ReplyCallback",
    "clamp_commit_index",
]

log = logging.getLogger(__name__)

_UNREADABLE = Refused(541, "")  # INTERNAL_ERROR: this node cannot read the entry it proposed


# --- the replicated object ---------------------------------------------------------------


class _Replica(pysyncobj.SyncObjConsumer):
    """The one replicated object: every entry goes through `apply_entry` on every node."""

    def __init__(self, raft_log: RaftLog) -> None:
        super().__init__()
        self._raft_log = raft_log

    @pysyncobj.replicated
    def apply_entry(self, payload: bytes) -> None:
        self._raft_log._apply_entry(payload)

    def _serialize(self) -> BrokerState:
        return self._raft_log.broker.state

    def _deserialize(self, data: BrokerState) -> None:
        self._raft_log.broker.install(upgrade_state(data))


@dataclass(frozen=True, slots=True)
class RaftSettings:
    """Timing that makes failover fast on loopback (RAFT-NOTES.md, "Failover"). A SIGKILLed
    leader is noticed by its closed connections, not by the election timeout, which is left
    for what closes nothing (a partition, a stopped process). Heartbeats were most of an idle
    cluster's CPU at 20 a second: at 10, a stalled loop still has 0.25 s before an election
    (pysyncobj wants the timeout above three periods), and a quiet cluster slows them down
    further (below)."""

    election_timeout_s_min: float = 0.35
    election_timeout_s_max: float = 0.7
    append_entries_period_s: float = 0.1
    leader_fallback_timeout_s: float = 1.0  # a leader without majority answers steps down
    # A leader whose followers hold its whole log, and whose log has grown by no more than
    # QUIET_ENTRIES_PER_S (the clock's Ticks) for quiet_after_s, is quiet: it heartbeats at the
    # slower pace below and its followers wait the longer timeout for it. Its next busier
    # second ends it. Entries are sent as they come either way: only the silences change.
    quiet_after_s: float = 3.0
    quiet_append_entries_period_s: float = 0.9
    quiet_election_timeout_s_min: float = 3.0
    quiet_election_timeout_s_max: float = 3.4  # pysyncobj drops a link silent for 3.5 s
    quiet_leader_fallback_timeout_s: float = 3.0
    connection_retry_s: float = 0.5
    resend_after_s: float = 1.0
    give_up_after_s: float = 10.0
    entry_size_max_bytes: int = 1024 * 1024  # a batch is cut here; one big message still fits
    message_size_max_bytes: int = 16 * 1024 * 1024
    # pysyncobj's own trigger, by entry count, fires on every node at the same entry: the
    # journal's bytes (below, staggered across nodes) are what triggers compaction instead
    compaction_min_entries: int = 10**9
    compaction_min_time_s: float = 600.0
    # pysyncobj compacts only by entry count or time; past this many journal bytes a snapshot
    # is forced, which bounds the journal's disk and what a restart replays
    compaction_bytes: int = 256 * 1024 * 1024


COMMIT_LATENCY_SAMPLES = 256
QUIET_ENTRIES_PER_S = 2  # the leader's clock proposes a Tick a second, at a 0.1 s granularity


class _HeartbeatPace:
    """Whether a leader is quiet (RaftSettings.quiet_after_s): it heartbeats ten times a
    second only while it has work, not in an idle cluster, where those heartbeats were most
    of the CPU. Counted per second of the log's growth, on time.monotonic."""

    def __init__(self, settings: RaftSettings, transport: DurableTransport) -> None:
        self._settings = settings
        self._transport = transport  # its `quiet` is the one record of the pace
        self._busy_s = time.monotonic()  # when the log last grew faster, or a follower lagged
        self._second_s = 0.0  # when the second being counted began
        self._second_last = 0  # the log's last index then
        self._quiet_fallback_until_s: float | None = None

    @property
    def quiet(self) -> bool:
        return self._transport.quiet

    def update(self, syncobj: typing.Any, now_s: float) -> None:
        """Called on every tick; sets pysyncobj's pace and the transport's mark."""
        settings = self._settings
        quiet = False
        if syncobj._isLeader():
            last = journal_of(syncobj)[-1][1]  # the last index: compaction leaves it
            if now_s - self._second_s >= 1.0:
                # a follower that has not caught up with the second before lags
                if not followers_hold(syncobj, self._second_last):
                    self._busy_s = now_s
                self._second_s, self._second_last = now_s, last
            if last - self._second_last > QUIET_ENTRIES_PER_S:
                self._busy_s = now_s
            quiet = now_s - self._busy_s >= settings.quiet_after_s and (
                self._transport.quiet_understood()
            )
        else:
            self._busy_s = now_s  # a new leader starts busy
        conf = syncobj.conf
        if quiet != self._transport.quiet:
            self._transport.quiet = quiet
            if quiet:
                conf.appendEntriesPeriod = settings.quiet_append_entries_period_s
                conf.leaderFallbackTimeout = settings.quiet_leader_fallback_timeout_s
            else:
                conf.appendEntriesPeriod = settings.append_entries_period_s
                # the followers' last answers may be a quiet period old: the busy fallback
                # only once they have answered at the busy pace
                self._quiet_fallback_until_s = now_s + settings.quiet_append_entries_period_s
        until_s = self._quiet_fallback_until_s
        if until_s is not None and now_s >= until_s:
            conf.leaderFallbackTimeout = settings.leader_fallback_timeout_s
            self._quiet_fallback_until_s = None


class RaftLog:
    def __init__(
        self,
        *,
        node_id: str,
        incarnation: int,
        raft_address: str,
        bind_address: str,
        partner_addresses: list[str],
        directory: Path,
        broker: Broker,
        dispatch: typing.Callable[[list[Effect]], None],
        schedule: typing.Callable[[typing.Callable[[], None]], object],
        password: str | None,
        settings: RaftSettings | None = None,
    ) -> None:
        self.node_id = node_id
        self.broker = broker
        self.settings = settings or RaftSettings()
        self._dispatch = dispatch
        self._schedule = schedule
        self.proposer = Proposer(
            node_id,
            incarnation,
            resend_after_s=self.settings.resend_after_s,
            give_up_after_s=self.settings.give_up_after_s,
            entry_size_max_bytes=self.settings.entry_size_max_bytes,
        )
        # what applying produced, run once pysyncobj's tick has returned and this node's journal
        # has synced the entry: a reply for a caller (the entry's Raft index, callback, reply)
        # or effects for the dispatcher (index, None, effects), in log order
        self._outbox: deque[tuple[int, ReplyCallback | None, Reply | list[Effect]]] = deque()
        # seconds from first sending to applying, of this node's last entries (for /metrics)
        self.commit_latencies_s: deque[float] = deque(maxlen=COMMIT_LATENCY_SAMPLES)
        self._leader_logged: str | None = None  # the leader the log last reported
        self._leader_progress = (0, 0)  # log size and commit index the followers last heard
        self._snapshot_wanted = 0  # the applied index a snapshot was asked for at
        # Nodes take their snapshots at different journal sizes (the first member at the limit,
        # the next a quarter later, ...): all three at once starved the two cores of this
        # machine for a second, long enough for elections (bench-backlog, 250k messages in).
        rank = sorted([raft_address, *partner_addresses]).index(raft_address)
        self._compaction_bytes = int(self.settings.compaction_bytes * (1 + rank / 4))
        self._replica = _Replica(self)
        directory.mkdir(parents=True, exist_ok=True)
        bodies = broker.bodies
        self._bodies = bodies if isinstance(bodies, BodyStore) else None  # None: in memory
        if self._bodies is not None:
            # nothing is live until a snapshot says so or the journal's publishes keep it again
            self._bodies.adopt(())
        tune_pysyncobj()
        settings = self.settings
        conf = pysyncobj.SyncObjConf(
            autoTick=False,
            journalFile=str(directory / "raft.journal"),
            fullDumpFile=str(directory / "raft.snapshot"),
            password=password,
            # pysyncobj binds 0.0.0.0 unless told: the Raft port speaks pickle, keep it inside
            bindAddress=bind_address,
            raftMinTimeout=settings.election_timeout_s_min,
            raftMaxTimeout=settings.election_timeout_s_max,
            appendEntriesPeriod=settings.append_entries_period_s,
            leaderFallbackTimeout=settings.leader_fallback_timeout_s,
            connectionRetryTime=settings.connection_retry_s,
            # one entry never takes pysyncobj's chunked path (RAFT-NOTES.md, defect 1)
            appendEntriesBatchSizeBytes=settings.message_size_max_bytes
            + settings.entry_size_max_bytes,
            sendBufferSize=4 * 1024 * 1024,
            recvBufferSize=4 * 1024 * 1024,
            logCompactionMinEntries=settings.compaction_min_entries,
            logCompactionMinTime=settings.compaction_min_time_s,
            maxBindRetries=50,
            bindRetryTime=0.1,
        )
        self._syncobj = pysyncobj.SyncObj(
            raft_address,
            partner_addresses,
            conf,
            consumers=[self._replica],
            transportClass=DurableTransport,
        )
        transport = transport_of(self._syncobj)
        transport.quiet_election_timeout_s = (
            settings.quiet_election_timeout_s_min,
            settings.quiet_election_timeout_s_max,
        )
        self._heartbeat_pace = _HeartbeatPace(settings, transport)
        journal = journal_of(self._syncobj)
        journal.on_commit = self._tell_commit
        align_journal_with_snapshot(journal, conf.fullDumpFile)
        if self._bodies is not None:
            journal.sync_with(self._bodies)  # one group commit for entries and bodies
            use_serializer(self._syncobj, BodySerializer(conf, self._bodies))

    # --- the log interface ------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self.proposer.incarnation

    def propose(self, command: Command, on_reply: ReplyCallback | None = None) -> None:
        if self.proposer.propose(command, on_reply):
            self._schedule(self.flush)
        if self.proposer.sealed:  # the batch reached entry_size_max_bytes
            self._send_next()

    def flush(self) -> None:
        """Send what was proposed, unless an entry is in flight: then it waits and grows.

        While one entry travels, everything proposed meanwhile joins one next entry (group
        commit); it is sealed and sent when the one in flight has been applied.
        """
        if self.proposer.in_flight is None:
            self._send_next()
            self.tick()

    def _send_next(self) -> None:
        entry = self.proposer.next_to_send(time.monotonic(), self.leader_address)
        if entry is not None:
            self._send(entry)

    def _send(self, entry: Pending) -> None:
        self._replica.apply_entry(entry.payload)  # pysyncobj forwards it to the leader

    def tick(self) -> None:
        """One round of pysyncobj's work (network, elections, applying), then what applying
        produced, then our timers."""
        syncobj = self._syncobj
        journal = journal_of(syncobj)
        transport = transport_of(syncobj)
        journal.poll_sync()
        transport.send_synced(journal.synced_seq)
        transport.keep_alive()
        transport.received = False
        syncobj.doTick(0.0)
        journal.begin_sync()  # what this turn wrote starts for the disk now
        self._run_outbox()
        if self._bodies is not None and self._bodies.reclaimable:
            self._bodies.compact_step(written=journal.write_seq, durable=journal.synced_seq)
        if syncobj._isLeader():
            # a leader is in contact with a majority: pysyncobj demotes it after
            # leader_fallback_timeout_s without one, and the silence counts from then
            transport.last_leader_contact_s = time.monotonic()
            self._tell_followers_of_progress()
        self._heartbeat_pace.update(syncobj, time.monotonic())
        if journal.size_bytes > self._compaction_bytes:
            syncobj.forceLogCompaction()  # pysyncobj starts it once; the journal shrinks after
        leader = self.leader_address
        if leader != self._leader_logged:
            self._leader_logged = leader
            log.info(
                "%s: leader is now %s (term %d)",
                self.node_id,
                leader,
                self.term,
                # the node's structured log (cluster/logs.py) writes these as fields
                extra={"fields": {"event": "leader_changed", "leader": leader, "term": self.term}},
            )
        given_up, again = self.proposer.check(time.monotonic(), leader)
        if given_up is not None:
            self._fail(given_up.callbacks, GIVEN_UP)
            self._send_next()
        elif again is not None:
            self._send(again)

    def _tell_commit(self) -> None:
        """A leader tells the followers of a commit before applying it itself: applying a big
        entry (the settles and deliveries of 900 acks: 14 ms) no longer delays theirs."""
        if self._syncobj._isLeader():
            self._tell_followers_of_progress()

    def _tell_followers_of_progress(self) -> None:
        """pysyncobj's batch mode sends only every append_entries_period_s. A leader whose log
        grew or whose commit index moved tells the followers now: new entries start replicating
        at once, and followers learn of commits without waiting a period."""
        syncobj = self._syncobj
        progress = (syncobj._getRaftLogSize(), syncobj.raftCommitIndex)
        if progress != self._leader_progress:
            self._leader_progress = progress
            send_append_entries_now(syncobj)

    def change_incarnation(self, incarnation: int) -> None:
        """The cluster declared this incarnation lost: nothing it proposed can be answered."""
        self._fail(list(self.proposer.change_incarnation(incarnation)), LOST)

    def isolate(self, isolated: bool) -> None:
        """Fault injection: drop all peer traffic (True) or carry it again (False)."""
        transport_of(self._syncobj).isolated = isolated

    def snapshot(self) -> None:
        """Write a snapshot of what is applied now (a node about to stop: it then restarts
        from the snapshot, not by replaying its journal). See `snapshot_pending`."""
        self._snapshot_wanted = self.last_applied_index
        self._syncobj.forceLogCompaction()

    @property
    def snapshot_pending(self) -> bool:
        """The snapshot `snapshot` asked for is still being written (ticks carry it on);
        False once it is on disk, or once pysyncobj gave up on it (it logs why)."""
        written, busy = snapshot_progress(self._syncobj)
        return busy and written + 1 < self._snapshot_wanted  # the mark is the entry before

    def close(self) -> None:
        self._syncobj.destroy()
        poller_of(self._syncobj).close()
        if self._bodies is not None:
            self._bodies.close()

    @property
    def has_work(self) -> bool:
        """The last tick read a peer's message that pysyncobj acts on only in its next turn:
        waiting for a socket to turn readable instead would hold every hop of a commit round
        (forward, acknowledge, apply) up to a whole idle tick."""
        return transport_of(self._syncobj).received

    def idle_wait_s(self, longest_s: float) -> float:
        """How long the loop may sleep when no descriptor wakes it: until pysyncobj's next
        timer (a leader's heartbeat, a follower's election deadline), at most `longest_s`
        (for the timers of our own: resends, keepalives, reconnects). A follower connected
        to no peer waits `longest_s`: its deadline has passed, and a loop that took that as
        due now would spin (at start, before the peers are up, or on the last node up)."""
        due_s = next_timer_s(self._syncobj)
        if due_s is None:
            return longest_s
        return max(0.0, min(longest_s, due_s - raft_clock()))

    @property
    def wakeup_fds(self) -> tuple[int, int]:
        """Descriptors that turn readable when a tick has work to do: a Raft socket is ready,
        or a background sync has finished (`has_work`: the last tick left some). Otherwise
        only timers want a tick (`idle_wait_s`)."""
        return poller_of(self._syncobj).fileno(), journal_of(self._syncobj).sync_wake_fd

    # --- status (local views: "there could be multiple leaders at the same time") -----

    @property
    def is_ready(self) -> bool:
        return bool(self._syncobj.isReady())

    @property
    def is_leader(self) -> bool:
        return bool(self._syncobj._isLeader())

    @property
    def leader_address(self) -> str | None:
        leader = self._syncobj._getLeader()
        return None if leader is None else str(leader.id)

    @property
    def term(self) -> int:
        return int(self._syncobj.raftCurrentTerm)

    @property
    def commit_index(self) -> int:
        return int(self._syncobj.raftCommitIndex)

    @property
    def last_applied_index(self) -> int:
        """The Raft index of the last entry this node applied."""
        return int(self._syncobj.raftLastApplied)

    def is_connected(self, address: str) -> bool:
        return any(
            node.id == address and self._syncobj.isNodeConnected(node)
            for node in self._syncobj.otherNodes
        )

    def seconds_since_majority_contact(self) -> float:
        """0 while this node leads with a majority or follows a live leader."""
        if not self._syncobj.otherNodes:
            return 0.0
        if self.is_leader:
            return 0.0  # pysyncobj demotes a leader after leader_fallback_timeout_s alone
        return time.monotonic() - transport_of(self._syncobj).last_leader_contact_s

    def peers_silent_for_s(self) -> dict[str, float]:
        """As leader: how long each follower has not answered (pysyncobj's own bookkeeping)."""
        if not self.is_leader:
            return {}
        last_response = last_response_times(self._syncobj)
        now_s = raft_clock()
        return {node.id: now_s - seen_s for node, seen_s in last_response.items()}

    # --- applying -------------------------------------------------------------------------

    def _apply_entry(self, payload: bytes) -> None:
        """Called by pysyncobj inside its tick, on every node, in log order."""
        try:
            node_length, incarnation, seq = ENTRY_HEADER.unpack_from(payload)
            start = ENTRY_HEADER.size
            node = payload[start : start + node_length].decode()
        except (struct.error, UnicodeDecodeError):
            log.error("a log entry without a readable header was skipped (%d bytes)", len(payload))
            return
        if not self.broker.admit_entry(node, incarnation, seq):
            return  # a re-sent entry that had arrived after all
        callbacks: list[ReplyCallback | None] = []
        entry = self.proposer.applied(node, incarnation, seq)
        if entry is not None:
            callbacks = entry.callbacks
            self.commit_latencies_s.append(time.monotonic() - entry.first_sent_at_s)
            self._send_next()  # it only queues the entry: pysyncobj sends it later this tick
        index = self.last_applied_index + 1  # pysyncobj counts it applied once it returns
        try:
            commands = decode_entry(payload[start + node_length :])
        except Exception:
            # Written by a node of another version (a rolling upgrade) or broken: every node of
            # this version skips it alike, and its proposer's callers hear 541, not silence.
            log.exception("log entry %d of %s could not be decoded: skipped", seq, node)
            self._outbox += [(index, on_reply, _UNREADABLE) for on_reply in callbacks]
            return
        for position, command in enumerate(commands):
            applied = self.broker.apply(Meta(self.broker.state.last_index + 1), command)
            on_reply = callbacks[position] if position < len(callbacks) else None
            # the consumers of a removed queue hear of it before the command's reply (as from
            # RabbitMQ: basic.cancel, then delete-ok); every other effect follows the reply
            # (consume-ok precedes the first delivery)
            effects = applied.effects
            cancels: list[Effect] = [e for e in effects if isinstance(e, CancelConsumer)]
            if cancels:
                self._outbox.append((index, None, cancels))
                effects = [e for e in effects if not isinstance(e, CancelConsumer)]
            if on_reply is not None:
                self._outbox.append((index, on_reply, applied.reply))
            if effects:
                self._outbox.append((index, None, effects))

    def _run_outbox(self) -> None:
        """Answer callers and dispatch effects, in the order applying produced them, as far
        as the journal has synced."""
        outbox = self._outbox
        synced_index = journal_of(self._syncobj).synced_index
        while outbox and outbox[0][0] <= synced_index:
            _, on_reply, result = outbox.popleft()
            if on_reply is None:
                self._dispatch(typing.cast(list[Effect], result))  # it guards each effect
                continue
            try:
                on_reply(typing.cast(Reply, result))
            except Exception:
                log.exception("answering %s failed", type(result).__name__)

    @staticmethod
    def _fail(callbacks: list[ReplyCallback | None], refused: Refused) -> None:
        for on_reply in callbacks:
            if on_reply is not None:
                try:
                    on_reply(refused)
                except Exception:
                    log.exception("failing a lost proposal raised")
