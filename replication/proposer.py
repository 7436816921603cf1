"""The proposing side of the log, as pure bookkeeping: group commit and stop-and-wait.

Commands proposed in one loop turn join a batch; a batch is sealed into one entry, with this
node's identity and a sequence number that grows per incarnation, `(node, incarnation,
entry_seq)`. One entry is in flight at a time; whatever is proposed meanwhile joins the next
(group commit anyway). An entry not applied when the leader changes, or `resend_after_s` after
it was sent, is sent again (the state machine admits each entry once); after `give_up_after_s`
its callers hear 320, which closes their connections so clients retry on fresh ones.

Nothing here reads a clock or a socket: time and the leader are inputs, and what to send is
the answer. `RaftLog` (raft.py) drives it from pysyncobj; tests/replication/test_proposer.py
drives it by hand.
"""

from __future__ import annotations

import struct
import typing
from collections import deque
from dataclasses import dataclass

from warrenmq.replication.commands import Command, encode_entry
from warrenmq.replication.replies import Refused, Reply

__all__ = ["ENTRY_HEADER", "GIVEN_UP", "LOST", "Pending", "Proposer", "ReplyCallback"]

ReplyCallback = typing.Callable[[Reply], None]
CONNECTION_FORCED = 320
ENTRY_HEADER = struct.Struct(">HQQ")  # node id length, incarnation, entry_seq
LOST = Refused(CONNECTION_FORCED, "this node's incarnation was declared lost by the cluster")
GIVEN_UP = Refused(CONNECTION_FORCED, "the cluster did not commit this command in time")
COMMAND_BYTES = 256  # what a command costs in an entry beside its body
TAG_BYTES = 21  # and each further delivery tag of a Settle: up to 20 digits and a comma


@dataclass(slots=True)
class Pending:
    seq: int
    payload: bytes
    callbacks: list[ReplyCallback | None]
    sent_at_s: float = 0.0  # when it was last sent
    first_sent_at_s: float = 0.0  # when it was first sent
    leader: str | None = None  # the leader when it was last sent


class Proposer:
    def __init__(
        self,
        node_id: str,
        incarnation: int,
        *,
        resend_after_s: float,
        give_up_after_s: float,
        entry_size_max_bytes: int,
    ) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.resend_after_s = resend_after_s
        self.give_up_after_s = give_up_after_s
        self.entry_size_max_bytes = entry_size_max_bytes
        self.batch: list[tuple[Command, ReplyCallback | None]] = []
        self._batch_bytes = 0
        self.sealed: deque[Pending] = deque()  # entries waiting for the one in flight
        self.in_flight: Pending | None = None  # sent, not yet applied
        self._next_seq = 1

    def propose(self, command: Command, on_reply: ReplyCallback | None) -> bool:
        """Add `command` to the batch; True if it is the batch's first (flush it this turn).
        A batch that reaches entry_size_max_bytes is sealed at once."""
        first = not self.batch
        self.batch.append((command, on_reply))
        self._batch_bytes += (
            COMMAND_BYTES
            + len(getattr(command, "body", b""))
            + TAG_BYTES * len(getattr(command, "more", ()))
        )
        if self._batch_bytes >= self.entry_size_max_bytes:
            self._seal()
        return first

    def next_to_send(self, now_s: float, leader: str | None) -> Pending | None:
        """The entry to send now, if nothing is in flight and something waits."""
        if self.in_flight is not None:
            return None
        if not self.sealed:
            self._seal()
        if not self.sealed:
            return None
        entry = self.in_flight = self.sealed.popleft()
        entry.first_sent_at_s = now_s
        return self._sent(entry, now_s, leader)

    def check(self, now_s: float, leader: str | None) -> tuple[Pending | None, Pending | None]:
        """(the entry given up, if one is; the entry to send again, if one is): the one in
        flight after a leader change or resend_after_s. After a give-up, the caller answers
        its callers first, then asks `next_to_send` (what they propose then goes along)."""
        entry = self.in_flight
        if entry is None:
            return None, None
        if now_s - entry.first_sent_at_s > self.give_up_after_s:
            self.in_flight = None
            return entry, None
        new_leader = leader is not None and leader != entry.leader
        if new_leader or now_s - entry.sent_at_s > self.resend_after_s:
            return None, self._sent(entry, now_s, leader)  # it may have died with the old leader
        return None, None

    def applied(self, node: str, incarnation: int, seq: int) -> Pending | None:
        """An entry was applied; if it is the one in flight, it is done (its callers are
        answered by the caller) and the next may go."""
        entry = self.in_flight
        if entry is None or (node, incarnation, seq) != (self.node_id, self.incarnation, entry.seq):
            return None
        self.in_flight = None
        return entry

    def change_incarnation(self, incarnation: int) -> list[ReplyCallback]:
        """The cluster declared this incarnation lost: nothing it proposed can be answered.
        Returns every caller waiting, to be told LOST; numbering starts again."""
        waiting = [on_reply for _, on_reply in self.batch]
        entries = [self.in_flight, *self.sealed] if self.in_flight else list(self.sealed)
        waiting += [on_reply for entry in entries for on_reply in entry.callbacks]
        self.batch, self._batch_bytes = [], 0
        self.in_flight = None
        self.sealed.clear()
        self.incarnation = incarnation
        self._next_seq = 1
        return [on_reply for on_reply in waiting if on_reply is not None]

    def _seal(self) -> None:
        if not self.batch:
            return
        batch, self.batch, self._batch_bytes = self.batch, [], 0
        seq = self._next_seq
        self._next_seq += 1
        node = self.node_id.encode()
        payload = b"".join(
            (
                ENTRY_HEADER.pack(len(node), self.incarnation, seq),
                node,
                encode_entry([command for command, _ in batch]),
            )
        )
        self.sealed.append(Pending(seq, payload, [on_reply for _, on_reply in batch]))

    @staticmethod
    def _sent(entry: Pending, now_s: float, leader: str | None) -> Pending:
        entry.sent_at_s = now_s
        entry.leader = leader
        return entry
