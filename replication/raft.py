"""The broker's Raft log, on pysyncobj: the only module that imports it (DESIGN.md §4).

Theory of operation
-------------------
`RaftLog.propose(command, on_reply)` collects the commands of one loop turn; `flush()` sends them
as one log entry (group commit). An entry carries its proposer's identity and a sequence number
that grows per node incarnation: `(node, incarnation, entry_seq)`. pysyncobj replicates the entry
and, once a majority has it, every node applies it through `_Replica.apply_entry` in log order.
There the proposer finds its own entries by sequence number and answers each command's caller
(reply first, then the entry's effects go to the dispatcher, on every node).

What pysyncobj does not promise, this module adds (RAFT-NOTES.md):
- Durability. `DurableJournal` writes through pysyncobj's mmap journal and syncs it (msync) once
  before any message leaves the node (`DurableTransport.send`): a follower's acknowledgement and
  a leader's append-entries imply the entries are on disk — group commit, one sync per round.
  A group of one sends nothing, so it syncs before each tick commits. The current term and vote
  are fsynced before a vote can be sent.
- Raft §5.3, "if an existing entry conflicts with a new one … delete the existing entry and all
  that follow it": pysyncobj truncates on any append-entries whose prevLogIdx is below its log
  end, even a stale duplicate, so a follower could drop entries it already acknowledged.
  `DurableJournal` defers the truncation and only carries it out on a real conflict. A kept
  suffix is not yet verified, so a follower commits no further than the entries the leader's
  message matched (`clamp_commit_index`, Figure 2's "index of last new entry").
- Unknown outcomes. pysyncobj may lose an entry on a leader change without saying so. Each node
  keeps one entry in flight (stop-and-wait; whatever arrives meanwhile batches into the next
  entry, which is group commit anyway). An entry not applied when the leader changes, or after
  `resend_after_s`, is sent again; the state machine admits each `(node, incarnation,
  entry_seq)` once, so a copy that arrives second is not applied twice. Since nothing newer was
  ever sent, a re-send can neither leave a gap nor reorder a channel's commands. After
  `give_up_after_s` the entry's callers hear 320, which closes their connections so clients
  retry on fresh ones.
- Peers authenticate with the cluster secret (pysyncobj's `password`, with `PeerCipher` in place
  of its Fernet); they exchange pickles, so the Raft port must never be reachable from outside
  the cluster.
"""

from __future__ import annotations

import gzip
import hmac
import logging
import os
import struct
import time
import typing
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pysyncobj
import pysyncobj.journal
import pysyncobj.pickle
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.transport
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from warrenmq.replication.commands import Command, decode_entry, encode_entry
from warrenmq.replication.machine import Broker, BrokerState, Meta, upgrade_state
from warrenmq.replication.replies import Effect, Refused, Reply

__all__ = [
    "DurableJournal",
    "PeerCipher",
    "RaftLog",
    "RaftSettings",
    "ReplyCallback",
    "clamp_commit_index",
]

log = logging.getLogger(__name__)

ReplyCallback = typing.Callable[[Reply], None]
CONNECTION_FORCED = 320
_ENTRY_HEADER = struct.Struct(">HQQ")  # node id length, incarnation, entry_seq
_LOST = Refused(CONNECTION_FORCED, "this node's incarnation was declared lost by the cluster")
_GIVEN_UP = Refused(CONNECTION_FORCED, "the cluster did not commit this command in time")
_UNREADABLE = Refused(541, "")  # INTERNAL_ERROR: this node cannot read the entry it proposed


# --- what every node patches the same way -------------------------------------------------


class _NoZlib:
    """pysyncobj's wire without zlib: message bodies are mostly incompressible, and even zlib's
    stored blocks cost a copy and a checksum each way (py-spy: a tenth of a follower's CPU)."""

    @staticmethod
    def compress(data: bytes, level: int = 0) -> bytes:
        return data

    @staticmethod
    def decompress(data: bytes) -> bytes:
        return data


class _StaleAppendFilter(logging.Filter):
    """pysyncobj's CRITICAL "truncating already-applied log entries", said truthfully.

    pysyncobj logs it for every stale append-entries that reaches below the applied index. With
    DurableJournal nothing is truncated unless an entry conflicts (and that is logged where it
    happens), so the record becomes a warning that says what actually happens.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.CRITICAL and str(record.msg).startswith(
            "truncating already-applied"
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = (
                "stale append-entries from index %d reached below the last applied %d; "
                "the journal keeps every entry that does not conflict (Raft 5.3)"
            )
        return True


_STALE_APPEND_FILTER = _StaleAppendFilter()


class PeerCipher:
    """Authenticated encryption of peer messages under the cluster secret: AES-256-GCM.

    pysyncobj's `password` wraps every peer message in Fernet, whose base64 alone took a third of
    a leader's CPU with 64 KiB messages; HMAC-SHA256 beside AES-CTR still took a fifth (py-spy).
    GCM encrypts and authenticates in one pass, several times faster on AES-NI.

    token = header | ciphertext and tag, header = u64 timestamp | 16-byte sender salt | u64
    counter, authenticated as associated data. GCM must never see a nonce twice under one key,
    and random 96-bit nonces wear out after some 2^32 messages, which a cluster's lifetime can
    exceed. So each instance (one per node process) draws a random salt and encrypts under its
    own key, HMAC-SHA256(cluster key, salt), with its message counter as nonce: no nonce repeats
    under a key, and two instances share a key only if they draw the same 128-bit salt.
    pysyncobj asks for the timestamp before decrypting (its replay check), so the tag is checked
    there already and the plaintext kept for `decrypt`.
    """

    _SALT = b"warren raft peer cipher v2"
    _HEADER = struct.Struct(">Q16sQ")
    _TAG_BYTES = 16
    _KEYS_KEPT = 64  # senders' keys a receiver remembers (senders restart, salts change)

    def __init__(self, secret: str) -> None:
        self._master_key = PBKDF2HMAC(
            algorithm=hashes.SHA256(), length=32, salt=self._SALT, iterations=200_000
        ).derive(secret.encode())
        self._salt = os.urandom(16)
        self._aead = self._key_for(self._salt)
        self._counter = 0
        self._keys: dict[bytes, AESGCM] = {}
        self._opened: tuple[bytes, bytes] | None = None  # the last token that checked out

    def _key_for(self, salt: bytes) -> AESGCM:
        return AESGCM(hmac.digest(self._master_key, salt, "sha256"))

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        self._counter += 1
        header = self._HEADER.pack(current_time, self._salt, self._counter)
        return header + self._aead.encrypt(self._counter.to_bytes(12, "big"), data, header)

    def _open(self, token: bytes) -> bytes:
        if self._opened is not None and self._opened[0] is token:
            return self._opened[1]
        if len(token) < self._HEADER.size + self._TAG_BYTES:
            raise ValueError("peer message too short")
        _, salt, counter = self._HEADER.unpack_from(token)
        aead = self._keys.get(salt)
        if aead is None:
            if len(self._keys) >= self._KEYS_KEPT:
                self._keys.clear()
            aead = self._keys[salt] = self._key_for(salt)
        header = token[: self._HEADER.size]
        try:
            plain = aead.decrypt(counter.to_bytes(12, "big"), token[self._HEADER.size :], header)
        except InvalidTag:
            raise ValueError("peer message failed authentication") from None
        self._opened = (token, plain)
        return plain

    def extract_timestamp(self, token: bytes) -> int:
        self._open(token)
        return int(self._HEADER.unpack_from(token)[0])

    def decrypt(self, token: bytes) -> bytes:
        return self._open(token)


def _tune_pysyncobj() -> None:
    logging.getLogger("pysyncobj.syncobj").addFilter(_STALE_APPEND_FILTER)
    pysyncobj.syncobj.getEncryptor = PeerCipher
    # Pickle protocol 5 keeps bytes as bytes (protocol 2 grows them by half and is slow).
    setattr(pysyncobj.pickle, "__protocol", 5)  # noqa: B010 - a module global named __protocol
    pysyncobj.tcp_connection.zlib = _NoZlib
    pysyncobj.syncobj.createJournal = _create_journal


def _create_journal(journal_file: str | None = None) -> pysyncobj.journal.Journal:
    assert journal_file is not None, "Warren always runs pysyncobj with a journal file"
    return DurableJournal(journal_file)


def _fsync_path(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class DurableJournal(pysyncobj.journal.FileJournal):
    """pysyncobj's file journal, synced in groups and truncated only on conflicts."""

    def __init__(self, journal_file: str) -> None:
        super().__init__(journal_file)
        self._path = journal_file
        self._dirty = False
        self._truncate_at: int | None = None  # a deferred deleteEntriesFrom position
        self.size_bytes = sum(len(entry[0]) for entry in super().__getitem__(slice(None)))

    # --- group commit ---------------------------------------------------------------

    def sync(self) -> None:
        """Make every entry written so far durable (msync of the journal's mmap)."""
        self._settle_truncation()
        if self._dirty:
            self.flush()
            self._dirty = False

    def setCurrentTerm(self, term: int, votedForNodeId: typing.Any) -> None:  # noqa: N802, N803
        super().setCurrentTerm(term, votedForNodeId)
        meta_path = self._path + ".meta"
        _fsync_path(meta_path)  # Raft §5.2: persist currentTerm and votedFor before answering
        _fsync_path(os.path.dirname(os.path.abspath(meta_path)))

    # --- Raft §5.3: delete only from the first conflicting entry -------------------------

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803
        self._settle_truncation()
        self._truncate_at = entryFrom

    def add(self, command: bytes, idx: int, term: int) -> None:
        position = self._truncate_at
        if position is not None:
            if position < super().__len__():
                existing = super().__getitem__(position)
                if existing[1] == idx and existing[2] == term:
                    self._truncate_at = position + 1  # the same entry: keep it
                    return
                log.warning(
                    "entry %d of term %d conflicts with the leader's of term %d: "
                    "truncating from there (Raft 5.3)",
                    idx,
                    existing[2],
                    term,
                )
                self.size_bytes -= sum(
                    len(super(DurableJournal, self).__getitem__(index)[0])
                    for index in range(position, super().__len__())
                )
                super().deleteEntriesFrom(position)
            self._truncate_at = None
        super().add(command, idx, term)
        self.size_bytes += len(command)
        self._dirty = True

    def _settle_truncation(self) -> None:
        # Whatever the leader sent matched what we hold: nothing conflicts, nothing goes.
        self._truncate_at = None

    def __getitem__(self, item: typing.Any) -> typing.Any:
        self._settle_truncation()
        return super().__getitem__(item)

    def __len__(self) -> int:
        self._settle_truncation()
        length: int = super().__len__()
        return length

    def clear(self) -> None:
        self._settle_truncation()
        super().clear()
        self.size_bytes = 0
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803
        self._settle_truncation()
        super().deleteEntriesTo(entryTo)
        self._dirty = True


class DurableTransport(pysyncobj.transport.TCPTransport):
    """Syncs the journal before any message leaves, and notes when the leader last spoke.

    `isolated` (fault injection, off unless a test or `warren nemesis` turns it on) drops every
    peer message both ways while the TCP connections stay up: to the rest of the cluster the
    node is on the far side of a partition, and it sees them the same way.
    """

    last_leader_contact_s = 0.0
    isolated = False

    def send(self, node: typing.Any, message: typing.Any) -> bool:
        if self.isolated:
            return False
        journal = getattr(self._syncObj, "_SyncObj__raftLog", None)
        if isinstance(journal, DurableJournal):
            journal.sync()
        return bool(super().send(node, message))

    def _onMessageReceived(self, node: typing.Any, message: typing.Any) -> None:  # noqa: N802
        if self.isolated:
            return
        if isinstance(message, dict) and message.get("type") == "append_entries":
            self.last_leader_contact_s = time.monotonic()
            clamp_commit_index(message)
        super()._onMessageReceived(node, message)


def clamp_commit_index(append_entries: dict[str, typing.Any]) -> None:
    """Raft Figure 2, AppendEntries rule 5: "set commitIndex = min(leaderCommit, index of last
    new entry)". pysyncobj takes the end of its own log instead, which was the same while it
    truncated on every append; DurableJournal keeps a suffix that does not conflict (§5.3), and
    that suffix may hold entries of an older term the leader never sent. Only what this message
    verified against the leader's log (prevLogIdx and the entries after it) may be committed."""
    if "prevLogIdx" not in append_entries:
        return  # a snapshot: the follower's log becomes the leader's, nothing beyond it
    transmission = append_entries.get("transmission")
    if transmission in ("start", "process"):
        return  # parts of one large entry: pysyncobj commits nothing on these
    new_entries = 1 if transmission == "finish" else len(append_entries.get("entries", ()))
    verified_index = append_entries["prevLogIdx"] + new_entries
    if append_entries["commit_index"] > verified_index:
        append_entries["commit_index"] = verified_index


def _align_journal_with_snapshot(journal: DurableJournal, snapshot_path: str) -> None:
    """Start the journal at the snapshot's last entries before pysyncobj loads the snapshot.

    pysyncobj writes a snapshot in a forked child, renames it into place, and trims the journal
    to it only on a later tick. A crash in between leaves a journal that starts before the
    snapshot; on restart pysyncobj finds the mismatch and clears the whole journal, losing every
    entry after the snapshot. Trimming first keeps them (measured: a one-node log lost its last
    entries in 3 of 5 restarts under CPU load without this).
    """
    if not os.path.exists(snapshot_path):
        return
    with open(snapshot_path, "rb") as snapshot, gzip.GzipFile(fileobj=snapshot) as unzipped:
        _, last_applied, before_last, _ = pysyncobj.pickle.load(unzipped)
    for position in range(len(journal) - 1):
        if journal[position] == before_last and journal[position + 1] == last_applied:
            if position:
                journal.deleteEntriesTo(position)
            return


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
        self._raft_log.broker.state = upgrade_state(data)


@dataclass(frozen=True, slots=True)
class RaftSettings:
    """Timing that makes failover fast on loopback (RAFT-NOTES.md, "Failover")."""

    election_timeout_s_min: float = 0.25
    election_timeout_s_max: float = 0.5
    append_entries_period_s: float = 0.02
    leader_fallback_timeout_s: float = 1.0  # a leader without majority answers steps down
    connection_retry_s: float = 0.5
    resend_after_s: float = 1.0
    give_up_after_s: float = 10.0
    entry_size_max_bytes: int = 1024 * 1024  # a batch is cut here; one big message still fits
    message_size_max_bytes: int = 16 * 1024 * 1024
    compaction_min_entries: int = 50_000
    compaction_min_time_s: float = 600.0
    # pysyncobj keeps the whole journal in memory and compacts only by entry count or time;
    # past this many journal bytes a snapshot is forced, which bounds memory and disk
    compaction_bytes: int = 256 * 1024 * 1024


COMMIT_LATENCY_SAMPLES = 256


@dataclass(slots=True)
class _Pending:
    seq: int
    payload: bytes
    callbacks: list[ReplyCallback | None]
    sent_at_s: float  # when it was last sent
    first_sent_at_s: float  # when it was first sent


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
        self.incarnation = incarnation
        self.broker = broker
        self.settings = settings or RaftSettings()
        self._dispatch = dispatch
        self._schedule = schedule
        self._batch: list[tuple[Command, ReplyCallback | None]] = []
        self._batch_bytes = 0
        self._sealed: deque[_Pending] = deque()  # entries waiting for the one in flight
        self._in_flight: _Pending | None = None  # sent, not yet applied
        # seconds from first sending to applying, of this node's last entries (for /metrics)
        self.commit_latencies_s: deque[float] = deque(maxlen=COMMIT_LATENCY_SAMPLES)
        self._leader_seen: str | None = None  # the leader when the in-flight entry was sent
        self._leader_logged: str | None = None  # the leader the log last reported
        self._next_seq = 1
        self._leader_progress = (0, 0)  # log size and commit index the followers last heard
        self._replica = _Replica(self)
        directory.mkdir(parents=True, exist_ok=True)
        _tune_pysyncobj()
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
        _align_journal_with_snapshot(self._syncobj._SyncObj__raftLog, conf.fullDumpFile)

    # --- the log interface ------------------------------------------------------------

    def propose(self, command: Command, on_reply: ReplyCallback | None = None) -> None:
        if not self._batch:
            self._schedule(self.flush)
        self._batch.append((command, on_reply))
        body = getattr(command, "body", b"")
        self._batch_bytes += len(body) + 256
        if self._batch_bytes >= self.settings.entry_size_max_bytes:
            self._seal()
            self._send_next()

    def flush(self) -> None:
        """Send what was proposed, unless an entry is in flight: then it waits and grows.

        While one entry travels, everything proposed meanwhile joins one next entry (group
        commit); it is sealed and sent when the one in flight has been applied.
        """
        if self._in_flight is None:
            self._send_next()
            self.tick()

    def _seal(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        seq = self._next_seq
        self._next_seq += 1
        node = self.node_id.encode()
        payload = b"".join(
            (
                _ENTRY_HEADER.pack(len(node), self.incarnation, seq),
                node,
                encode_entry([command for command, _ in batch]),
            )
        )
        self._sealed.append(_Pending(seq, payload, [on_reply for _, on_reply in batch], 0.0, 0.0))

    def _send_next(self) -> None:
        if self._in_flight is not None:
            return
        if not self._sealed:
            self._seal()
        if self._sealed:
            self._in_flight = self._sealed.popleft()
            now_s = time.monotonic()
            self._in_flight.first_sent_at_s = now_s
            self._send(self._in_flight, now_s)

    def _send(self, entry: _Pending, now_s: float) -> None:
        entry.sent_at_s = now_s
        self._leader_seen = self.leader_address
        self._replica.apply_entry(entry.payload)

    def tick(self) -> None:
        """One round of pysyncobj's work (network, elections, applying), then our timers."""
        syncobj = self._syncobj
        journal = syncobj._SyncObj__raftLog
        if not syncobj.otherNodes:
            # A group of one commits without sending anything, so nothing would sync the
            # journal: sync here, before this tick commits and applies what earlier ones wrote.
            journal.sync()
        syncobj.doTick(0.0)
        if syncobj._isLeader():
            # pysyncobj's batch mode sends only every append_entries_period_s. A leader whose
            # log grew or whose commit index moved tells the followers now: new entries start
            # replicating at once, and followers learn of commits without waiting a period.
            progress = (syncobj._getRaftLogSize(), syncobj.raftCommitIndex)
            if progress != self._leader_progress:
                self._leader_progress = progress
                syncobj._SyncObj__sendAppendEntries()
        if journal.size_bytes > self.settings.compaction_bytes:
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
        if self._in_flight is not None:
            self._check_in_flight(self._in_flight, time.monotonic())

    def _check_in_flight(self, entry: _Pending, now_s: float) -> None:
        if now_s - entry.first_sent_at_s > self.settings.give_up_after_s:
            self._in_flight = None
            self._fail(entry.callbacks, _GIVEN_UP)
            self._send_next()
            return
        leader = self.leader_address
        new_leader = leader is not None and leader != self._leader_seen
        if new_leader or now_s - entry.sent_at_s > self.settings.resend_after_s:
            self._send(entry, now_s)  # it may have died with the old leader

    def change_incarnation(self, incarnation: int) -> None:
        """The cluster declared this incarnation lost: nothing it proposed can be answered."""
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        entries = [self._in_flight, *self._sealed] if self._in_flight else list(self._sealed)
        self._in_flight = None
        self._sealed.clear()
        for on_reply in [on_reply for _, on_reply in batch if on_reply is not None]:
            on_reply(_LOST)
        for entry in entries:
            self._fail(entry.callbacks, _LOST)
        self.incarnation = incarnation
        self._next_seq = 1

    def isolate(self, isolated: bool) -> None:
        """Fault injection: drop all peer traffic (True) or carry it again (False)."""
        self._syncobj._SyncObj__transport.isolated = isolated

    def compact(self) -> None:
        """Snapshot the state and drop the journal entries before it, now (pysyncobj ignores
        the request while a compaction runs): the journal holds every entry in memory."""
        self._syncobj.forceLogCompaction()

    def close(self) -> None:
        self._syncobj.destroy()

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
        transport: DurableTransport = self._syncobj._SyncObj__transport
        return time.monotonic() - transport.last_leader_contact_s

    def peers_silent_for_s(self) -> dict[str, float]:
        """As leader: how long each follower has not answered (pysyncobj's own bookkeeping)."""
        if not self.is_leader:
            return {}
        last_response = self._syncobj._SyncObj__lastResponseTime
        now_s = time.monotonic()
        return {node.id: now_s - seen_s for node, seen_s in last_response.items()}

    # --- applying -------------------------------------------------------------------------

    def _apply_entry(self, payload: bytes) -> None:
        try:
            node_length, incarnation, seq = _ENTRY_HEADER.unpack_from(payload)
            start = _ENTRY_HEADER.size
            node = payload[start : start + node_length].decode()
        except (struct.error, UnicodeDecodeError):
            log.error("a log entry without a readable header was skipped (%d bytes)", len(payload))
            return
        if not self.broker.admit_entry(node, incarnation, seq):
            return  # a re-sent entry that had arrived after all
        callbacks: list[ReplyCallback | None] = []
        entry = self._in_flight
        if (
            entry is not None
            and entry.seq == seq
            and node == self.node_id
            and incarnation == self.incarnation
        ):
            callbacks = entry.callbacks
            self.commit_latencies_s.append(time.monotonic() - entry.first_sent_at_s)
            self._in_flight = None
            self._send_next()  # it only queues the entry: pysyncobj sends it later this tick
        try:
            commands = decode_entry(payload[start + node_length :])
        except Exception:
            # Written by a node of another version (a rolling upgrade) or broken: every node of
            # this version skips it alike, and its proposer's callers hear 541, not silence.
            log.exception("log entry %d of %s could not be decoded: skipped", seq, node)
            self._fail(callbacks, _UNREADABLE)
            return
        for position, command in enumerate(commands):
            applied = self.broker.apply(Meta(self.broker.state.last_index + 1), command)
            on_reply = callbacks[position] if position < len(callbacks) else None
            if on_reply is not None:
                try:
                    on_reply(applied.reply)
                except Exception:
                    log.exception("answering %s failed", type(command).__name__)
            if applied.effects:
                self._dispatch(applied.effects)  # it guards each effect on its own

    @staticmethod
    def _fail(callbacks: list[ReplyCallback | None], refused: Refused) -> None:
        for on_reply in callbacks:
            if on_reply is not None:
                try:
                    on_reply(refused)
                except Exception:
                    log.exception("failing a lost proposal raised")
