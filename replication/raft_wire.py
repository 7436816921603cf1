"""Everything Warren changes in pysyncobj 0.3.17, and every private name of it Warren touches,
in one place: the wire (no zlib, AES-GCM instead of Fernet, pickle protocol 5), the transport
(sync before send, the commit-index clamp, elections that start when the leader is surely
gone, fault injection) and the accessors of SyncObj's
name-mangled attributes. tests/replication/test_raft_wire.py fails loudly if a pysyncobj
release renames any of them (pyproject.toml pins the version for the same reason).
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import logging
import os
import random
import select
import struct
import time
import typing

import pysyncobj
import pysyncobj.pickle
import pysyncobj.poller
import pysyncobj.syncobj
import pysyncobj.tcp_connection
import pysyncobj.transport
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from warrenmq.replication.raft_journal import DurableJournal, create_journal

__all__ = [
    "PATCHED_GLOBALS",
    "SERIALIZER_PRIVATE_ATTRIBUTES",
    "SYNCOBJ_PRIVATE_ATTRIBUTES",
    "DurableTransport",
    "EpollPoller",
    "PeerCipher",
    "clamp_commit_index",
    "hasten_election",
    "journal_of",
    "last_response_times",
    "poller_of",
    "raft_clock",
    "send_append_entries_now",
    "snapshot_progress",
    "transport_of",
    "tune_pysyncobj",
]

log = logging.getLogger(__name__)

# SyncObj's private attributes that Warren reads or calls (name-mangled ones as they are stored)
SYNCOBJ_PRIVATE_ATTRIBUTES = (
    "_SyncObj__raftLog",
    "_SyncObj__transport",
    "_SyncObj__sendAppendEntries",
    "_SyncObj__lastResponseTime",
    "_SyncObj__raftMatchIndex",
    "_SyncObj__raftNextIndex",
    "_isLeader",
    "_getLeader",
    "_getRaftLogSize",
    "_SyncObj__serializer",
    "_SyncObj__lastSerializedEntry",
    "_SyncObj__forceLogCompaction",
    "_SyncObj__raftElectionDeadline",
    "_poller",
)
# followers that lost their leader's connection stand for election one after another, in
# the order of their ids, this far apart: the first at once, alone, the next only if it must
LEADER_LOST_STAGGER_S = 0.1
# every peer hears from this node at least this often. pysyncobj drops a connection it has
# read nothing from for connectionTimeout (3.5 s), and sees that only when it next sends: the
# two followers' link, silent while a leader lives, died under the first vote request
KEEPALIVE_S = 1.0
KEEPALIVE = {"type": "warren_keepalive"}
QUIET_MARK = "warren_quiet"  # in a quiet leader's append-entries (DurableTransport.quiet)
# pysyncobj's Serializer's, which BodySerializer (raft_snapshot.py) reads and sets
SERIALIZER_PRIVATE_ATTRIBUTES = ("_Serializer__pid", "_Serializer__currentID")
# module globals tune_pysyncobj replaces
PATCHED_GLOBALS = (
    (pysyncobj.syncobj, "getEncryptor"),
    (pysyncobj.pickle, "__protocol"),
    (pysyncobj.tcp_connection, "zlib"),
    (pysyncobj.syncobj, "createJournal"),
)


def journal_of(syncobj: typing.Any) -> DurableJournal:
    journal: DurableJournal = syncobj._SyncObj__raftLog
    return journal


def poller_of(syncobj: typing.Any) -> EpollPoller:
    poller: EpollPoller = syncobj._poller
    return poller


def transport_of(syncobj: typing.Any) -> DurableTransport:
    transport: DurableTransport = syncobj._SyncObj__transport
    return transport


def send_append_entries_now(syncobj: typing.Any) -> None:
    syncobj._SyncObj__sendAppendEntries()


def raft_clock() -> float:
    """pysyncobj's clock, which its deadlines and response times are on: CLOCK_MONOTONIC_RAW
    where the OS has it, not time.monotonic (0.23 s apart on this machine, and drifting)."""
    now_s: float = pysyncobj.syncobj.monotonicTime()
    return now_s


def hasten_election(syncobj: typing.Any, within_s: float) -> None:
    """Have pysyncobj stand for election within `within_s` from now, unless it would sooner."""
    deadline_s = raft_clock() + within_s
    if syncobj._SyncObj__raftElectionDeadline > deadline_s:
        syncobj._SyncObj__raftElectionDeadline = deadline_s


def next_timer_s(syncobj: typing.Any) -> float | None:
    """When pysyncobj's next timer is due (on raft_clock): a leader's next heartbeat, or
    anyone else's election deadline. None for a follower connected to no peer (of a group of
    more than one, pysyncobj's own rule): it does not stand then, however far behind its
    deadline is."""
    if syncobj._isLeader():
        heartbeat_s: float = syncobj._SyncObj__newAppendEntriesTime
        return heartbeat_s
    if not syncobj._SyncObj__connectedToAnyone():
        return None
    deadline_s: float = syncobj._SyncObj__raftElectionDeadline
    return deadline_s


def followers_hold(syncobj: typing.Any, index: int) -> bool:
    """As leader: every follower has the entries up to `index`, and they are committed."""
    match_index: dict[typing.Any, int] = syncobj._SyncObj__raftMatchIndex
    return syncobj.raftCommitIndex >= index and all(
        match_index.get(node, 0) >= index for node in syncobj.otherNodes
    )


def last_response_times(syncobj: typing.Any) -> dict[typing.Any, float]:
    """The leader's bookkeeping: when each follower last answered (on raft_clock)."""
    times: dict[typing.Any, float] = syncobj._SyncObj__lastResponseTime
    return times


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


def snapshot_progress(syncobj: typing.Any) -> tuple[int, bool]:
    """The entry before the last one the newest snapshot holds (pysyncobj's mark), and whether
    a snapshot is asked for or being written."""
    written = syncobj._SyncObj__lastSerializedEntry or 0
    serializer = syncobj._SyncObj__serializer
    busy = bool(syncobj._SyncObj__forceLogCompaction) or serializer._Serializer__pid != 0
    return int(written), busy


def use_serializer(syncobj: typing.Any, serializer: typing.Any) -> None:
    """Snapshots are written, sent and taken by `serializer` from now on. pysyncobj makes its
    own in its constructor (and loads the local snapshot with it), and has no hook for it."""
    syncobj._SyncObj__serializer = serializer


# What one turn reads from one peer at most; the rest waits in the socket for the next turn.
READ_BYTES_PER_TURN = 8 * 1024 * 1024


def _read_a_share(connection: typing.Any) -> None:
    """pysyncobj's read of a peer's socket, bounded to READ_BYTES_PER_TURN a turn.

    pysyncobj read until the socket had nothing more. A leader streaming 64 KiB publishes to a
    follower behind it kept the follower reading: one turn took 4.2 s (growing its buffer by
    copies, bytes +=), over and over, while its replies and timers waited, so the leader
    declared it lost and it called elections (terms passed 15 in a 20 s run). The socket stays
    readable (epoll is level-triggered here) and the next turn reads on."""
    buffered = len(connection._TcpConnection__readBuffer)
    while connection._TcpConnection__processRead():
        if len(connection._TcpConnection__readBuffer) - buffered >= READ_BYTES_PER_TURN:
            break
    connection._TcpConnection__lastReadTime = pysyncobj.tcp_connection.monotonicTime()


def tune_pysyncobj() -> None:
    logging.getLogger("pysyncobj.syncobj").addFilter(_STALE_APPEND_FILTER)
    pysyncobj.tcp_connection.TcpConnection._TcpConnection__tryReadBuffer = _read_a_share
    pysyncobj.syncobj.getEncryptor = PeerCipher
    # Pickle protocol 5 keeps bytes as bytes (protocol 2 grows them by half and is slow).
    setattr(pysyncobj.pickle, "__protocol", 5)  # noqa: B010 - a module global named __protocol
    pysyncobj.tcp_connection.zlib = _NoZlib
    pysyncobj.syncobj.createJournal = create_journal


def _translated(mask: int, pairs: tuple[tuple[int, int], ...]) -> int:
    """`mask` with each (bit, other) pair's bit turned into the other's."""
    translated = 0
    for bit, other in pairs:
        if mask & bit:
            translated |= other
    return translated


class EpollPoller(pysyncobj.poller.Poller):
    """pysyncobj's poller over epoll, whose own descriptor (`fileno`) turns readable when any
    Raft socket is ready: the node's event loop sleeps on it instead of ticking pysyncobj a
    thousand times a second to look."""

    # pysyncobj's event types and epoll's, both ways (a hang-up is an error to pysyncobj)
    _TO_EPOLL = (
        (pysyncobj.poller.POLL_EVENT_TYPE.READ, select.EPOLLIN),
        (pysyncobj.poller.POLL_EVENT_TYPE.WRITE, select.EPOLLOUT),
        (pysyncobj.poller.POLL_EVENT_TYPE.ERROR, select.EPOLLERR),
    )
    _FROM_EPOLL = (
        *((theirs, ours) for ours, theirs in _TO_EPOLL),
        (select.EPOLLHUP, pysyncobj.poller.POLL_EVENT_TYPE.ERROR),
    )

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, typing.Callable[[int, int], None]] = {}

    def fileno(self) -> int:
        return self._epoll.fileno()

    def subscribe(
        self,
        descr: int,
        callback: typing.Callable[[int, int], None],
        eventMask: int,  # noqa: N803
    ) -> None:
        mask = _translated(eventMask, self._TO_EPOLL)
        self._callbacks[descr] = callback
        try:
            self._epoll.modify(descr, mask)
        except FileNotFoundError:  # new, or closed since (epoll forgets closed descriptors)
            self._epoll.register(descr, mask)

    def unsubscribe(self, descr: int) -> None:
        if self._callbacks.pop(descr, None) is not None:
            with contextlib.suppress(OSError, ValueError):  # closed already: epoll forgot it
                self._epoll.unregister(descr)

    def poll(self, timeout: float) -> None:
        for descr, events in self._epoll.poll(timeout):
            callback = self._callbacks.get(descr)
            if callback is not None:
                callback(descr, _translated(events, self._FROM_EPOLL))

    def close(self) -> None:
        self._epoll.close()


class DurableTransport(pysyncobj.transport.TCPTransport):
    """Holds back a follower's acknowledgement until the journal has synced what it
    acknowledges (and whatever was sent after it, in order), and notes when the leader last
    spoke. The leader's own entries count toward a commit before its sync ends; what it
    applied leaves the node only once synced (raft.py's outbox), so a confirm still means "on
    disk on a majority".

    `isolated` (fault injection, off unless a test or `warren nemesis` turns it on) drops every
    peer message both ways while the TCP connections stay up: to the rest of the cluster the
    node is on the far side of a partition, and it sees them the same way.
    """

    last_leader_contact_s = 0.0
    isolated = False
    # a quiet leader (RaftLog's heartbeat pace) marks its append-entries; a follower that
    # reads the mark waits `quiet_election_timeout_s` (low, high) for the next one. Every
    # answer to append-entries carries the mark too: this node reads it
    quiet = False
    quiet_election_timeout_s = (0.0, 0.0)
    # pysyncobj's last turn read a peer's message that it acts on only in its next: a
    # forwarded command to append, an acknowledgement that may commit, a commit to apply
    received = False
    # messages waiting for the journal to sync: (node, message, its write sequence number)
    _held: collections.deque[tuple[typing.Any, typing.Any, int]] | None = None

    def __init__(self, syncObj: typing.Any, *nodes: typing.Any) -> None:  # noqa: N803
        # SyncObj made its poller just before; the transport is the first to subscribe to it
        syncObj._poller = EpollPoller()
        self._last_sent_s: dict[str, float] = {}  # when each peer was last sent to
        self._quiet_readers: set[str] = set()  # peers whose answers say they read QUIET_MARK
        super().__init__(syncObj, *nodes)

    def quiet_understood(self) -> bool:
        """Every peer has said it reads QUIET_MARK: a node of an earlier version would stand
        for election in a quiet leader's longer silences."""
        return all(node.id in self._quiet_readers for node in self._syncObj.otherNodes)

    def keep_alive(self) -> None:
        """Send KEEPALIVE to every connected peer not sent anything for KEEPALIVE_S."""
        now_s = time.monotonic()
        syncobj = self._syncObj
        for node in syncobj.otherNodes:
            if syncobj.isNodeConnected(node) and (
                now_s - self._last_sent_s.get(node.id, 0.0) >= KEEPALIVE_S
            ):
                self.send(node, KEEPALIVE)

    def send(self, node: typing.Any, message: typing.Any) -> bool:
        if self.isolated:
            return False
        self._last_sent_s[node.id] = time.monotonic()
        kind = message.get("type") if isinstance(message, dict) else None
        if (self.quiet and kind == "append_entries") or kind == "next_node_idx":
            message[QUIET_MARK] = True  # pysyncobj makes a new dict for every send
        journal = getattr(self._syncObj, "_SyncObj__raftLog", None)  # None while it starts
        # what follows a held acknowledgement waits behind it, in order; a command forwarded
        # to the leader holds nothing of this journal's and goes at once
        if (
            kind != "apply_command"
            and isinstance(journal, DurableJournal)
            and (self._held or (_acknowledges(message) and not journal.synced))
        ):
            if self._held is None:
                self._held = collections.deque()
            self._held.append((node, message, journal.write_seq))
            journal.begin_sync()
            return True
        return bool(super().send(node, message))

    def send_synced(self, synced_seq: int) -> None:
        """Send the held messages the journal has now synced, in order."""
        held = self._held
        while held and held[0][2] <= synced_seq:
            node, message, _ = held.popleft()
            if not self.isolated:
                super().send(node, message)

    def _onMessageReceived(self, node: typing.Any, message: typing.Any) -> None:  # noqa: N802
        if self.isolated:
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == KEEPALIVE["type"]:
            return  # reading it was the point
        if kind == "append_entries":
            self.last_leader_contact_s = time.monotonic()
            clamp_commit_index(message)
        stands_instead = kind == "request_vote" and self._is_behind(message)
        syncobj = self._syncObj
        # the entries sent to `node` so far, for an acknowledgement to a leader (below)
        sent_up_to = (
            syncobj._SyncObj__raftNextIndex.get(node)
            if kind == "next_node_idx" and syncobj._isLeader()
            else None
        )
        super()._onMessageReceived(node, message)
        if sent_up_to is not None and not message["reset"]:
            # pysyncobj sets the follower's next index to the end of what the answer covers,
            # also when it answers an earlier message than the last sent, so everything sent
            # since went again (RAFT-NOTES defect 2; at 64 KiB, half the leader's turns went
            # into those sends). Only a reset, a follower without what a message followed on,
            # sends the leader back.
            next_index = syncobj._SyncObj__raftNextIndex
            next_index[node] = max(next_index.get(node, 0), sent_up_to)
        if stands_instead and not self._syncObj._isLeader():
            hasten_election(self._syncObj, 0.0)
        if kind == "append_entries" and message.get(QUIET_MARK):
            self._wait_for_a_quiet_leader(node)
        elif kind == "next_node_idx" and message.get(QUIET_MARK):
            self._quiet_readers.add(node.id)
        self.received = self.received or self._acted_on_next_turn(kind, message)

    def _wait_for_a_quiet_leader(self, node: typing.Any) -> None:
        """pysyncobj has just set the election deadline for this node's leader's next
        heartbeat at the busy pace: a quiet leader's comes later (RaftLog's heartbeat pace)."""
        syncobj = self._syncObj
        leader = syncobj._getLeader()
        if leader is None or leader.id != node.id or syncobj._isLeader():
            return  # a stale leader's message: pysyncobj ignored it
        if syncobj._SyncObj__transferInProgress:
            return  # the leader asked for an election (TimeoutNow): not to be postponed
        low_s, high_s = self.quiet_election_timeout_s
        syncobj._SyncObj__raftElectionDeadline = raft_clock() + random.uniform(low_s, high_s)

    def _acted_on_next_turn(self, kind: object, message: typing.Any) -> bool:
        """Whether pysyncobj still has to act on a message it has just read, in its next
        turn. An idle heartbeat and its answer change nothing: no turn for them."""
        syncobj = self._syncObj
        if kind == "append_entries":
            return "serialized" in message or syncobj.raftCommitIndex > syncobj.raftLastApplied
        if kind == "next_node_idx":
            return bool(message["reset"]) or message["next_node_idx"] - 1 > syncobj.raftCommitIndex
        return True

    def _is_behind(self, request_vote: dict[str, typing.Any]) -> bool:
        """A candidate of a new term (or a rival of this one's own) whose log is behind this
        node's cannot win this node's vote (Raft §5.4.1), so the election waited for this
        node's own election timeout: another 0.35-0.7 s in every other failover. This node
        stands at once instead; the candidate, behind, votes for it. (No PreVote in pysyncobj:
        the new term has already deposed any leader, so standing disturbs nothing that still
        works.)"""
        syncobj, journal = self._syncObj, journal_of(self._syncObj)
        if request_vote["term"] < syncobj.raftCurrentTerm:
            return False  # pysyncobj ignores it
        if request_vote["term"] == syncobj.raftCurrentTerm and (
            journal.getVotedForNodeId() != syncobj.selfNode.id
        ):
            return False  # this term's election goes on; only a rival candidate starts anew
        _, index, term = journal[-1]
        theirs = (request_vote["last_log_term"], request_vote["last_log_index"])
        return bool(theirs < (term, index))

    def _onNodeDisconnected(self, node: typing.Any) -> None:  # noqa: N802
        """The leader's connection closed: its process is gone (a crash closes its sockets),
        or the network between the two failed. Either way heartbeats will not come; stand
        for election now rather than after the election timeout, as Ra's followers do when
        Erlang reports the leader's node down."""
        super()._onNodeDisconnected(node)
        syncobj = self._syncObj
        leader = syncobj._getLeader()
        if leader is not None and leader.id == node.id and not syncobj._isLeader():
            followers = sorted(
                [syncobj.selfNode.id] + [peer.id for peer in syncobj.otherNodes if peer != node]
            )
            rank = followers.index(syncobj.selfNode.id)
            hasten_election(syncobj, rank * LEADER_LOST_STAGGER_S)


def _acknowledges(message: typing.Any) -> bool:
    """A follower's answer to append-entries: the leader counts it toward a commit."""
    return isinstance(message, dict) and message.get("type") == "next_node_idx"


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
