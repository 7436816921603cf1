"""One queue's messages in the replicated state: the backlog of ready ones in order, returned
and higher-priority ones in a heap, length limits and the arguments that rule it (rabbit_fifo_q's
part).

Plain data like the rest of the state (`replication/state.py`); the `apply_<command>`
functions of `replication/machine.py`'s table change it.

The backlog
-----------
A queue's never-delivered messages of the lowest priority level are most of what a node holds
when consumers fall behind. As `Entry` and `Message` objects they cost about 400 bytes each on
every node, and a restart built a million of them again from the snapshot in 4.5 s. `Backlog`
keeps each as four cells of column chunks instead: its seq and expiry in arrays, its `Body`
(whose reference keeps the bytes live in the store, body.py) and its *shape*, a tuple of the
message's other fields. A message whose shape equals the one before it shares that tuple, so
the messages of one publisher hold their exchange, routing key and properties once. A snapshot
pickles the columns whole.

An `Entry` (with its `Message`) is built again as the message leaves the backlog (`take`) or is
looked at (`head`, which keeps it until taken, so `head() is head()`). The message appended
last stays whole until it is taken, so one delivered as it arrives is never taken apart.
"""

from __future__ import annotations

import dataclasses
import heapq
import typing
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from warrenmq.replication import body as body_columns
from warrenmq.replication import commands as c
from warrenmq.replication.body import Body
from warrenmq.replication.message import Message

if typing.TYPE_CHECKING:
    from warrenmq.replication.state import Consumer, DeadLetter

__all__ = ["DEAD_LETTERS_WAITING_MAX", "Backlog", "Entry", "Limits", "Queue"]

# At-least-once dead letters waiting for their targets count toward the source queue's
# x-max-length and x-max-length-bytes, as in RabbitMQ (rabbit_fifo's is_over_limit); a queue
# with neither holds at most this many, and refuses publishes past it as reject-publish does.
DEAD_LETTERS_WAITING_MAX = 100_000


@dataclass(slots=True)
class Entry:
    """One message's place in one queue."""

    seq: int  # position in the queue; a requeued entry sorts back to it
    message: Message
    redelivered: bool  # has been delivered before
    delivery_count: int  # times it was returned to the queue
    expires_at_ms: int | None = None  # by the state's clock; it expires only at the head
    level: int = 0  # priority level: higher levels leave the queue first

    @property
    def order(self) -> tuple[int, int]:
        return (-self.level, self.seq)


# A message's fields but its body, in Message's order: what consecutive messages often share.
Shape = tuple[
    str, str, bytes, typing.Any, tuple[typing.Any, ...], typing.Any, typing.Any, str | None, int
]
BACKLOG_CHUNK = 4096  # cells per column chunk: a drained chunk is dropped whole
_NO_EXPIRY = -(2**63)  # an expiry cell of a message without a TTL


def _shape(message: Message) -> Shape:
    return (
        message.exchange,
        message.routing_key,
        message.properties,
        message.headers,
        message.deaths,
        message.first_death,
        message.last_death,
        message.expiration,
        message.priority,
    )


class _Chunk:
    """BACKLOG_CHUNK cells at most, in seq order; a taken cell lets go of its body and shape."""

    __slots__ = ("bodies", "expiries", "seqs", "shapes")

    def __init__(self) -> None:
        self.seqs = array("q")
        self.expiries = array("q")  # expires_at_ms, or _NO_EXPIRY
        self.shapes: list[Shape | None] = []
        self.bodies: list[Body | None] = []


class Backlog:
    """A queue's ready messages of level 0 that were never delivered, in seq order, as columns
    (see "The backlog" above)."""

    __slots__ = ("_chunks", "_count", "_head", "_head_entry", "_last")

    def __init__(self) -> None:
        self._chunks: deque[_Chunk] = deque()
        self._head = 0  # cells of the first chunk taken already
        self._count = 0  # cells not taken
        self._head_entry: Entry | None = None  # the first cell's, once `head` built it
        self._last: tuple[int, Message] | None = None  # the last appended (seq, message), whole

    def __len__(self) -> int:
        return self._count

    def append(self, seq: int, message: Message, expires_at_ms: int | None) -> None:
        chunks = self._chunks
        shape = _shape(message)
        if self._count:
            previous = chunks[-1].shapes[-1]
            # one tuple for a run of equal shapes; the headers only if the same table, since
            # equal is not alike there: {"a": 1} == {"a": True} == {"a": 1.0}
            if previous is not None and previous[3] is shape[3] and previous == shape:
                shape = previous
        if not chunks or len(chunks[-1].seqs) == BACKLOG_CHUNK:
            chunks.append(_Chunk())
        chunk = chunks[-1]
        chunk.seqs.append(seq)
        chunk.expiries.append(_NO_EXPIRY if expires_at_ms is None else expires_at_ms)
        chunk.shapes.append(shape)
        chunk.bodies.append(message.body)
        self._count += 1
        self._last = (seq, message)

    def first_seq(self) -> int:
        return self._chunks[0].seqs[self._head]

    def head(self) -> Entry | None:
        if not self._count:
            return None
        if self._head_entry is None:
            self._head_entry = self._entry(self._chunks[0], self._head)
        return self._head_entry

    def take(self) -> Entry:
        chunk, position = self._chunks[0], self._head
        entry = self._head_entry
        if entry is None:
            entry = self._entry(chunk, position)
        self._head_entry = None
        chunk.shapes[position] = chunk.bodies[position] = None
        self._count -= 1
        self._head = position + 1
        if self._head == len(chunk.seqs):
            self._chunks.popleft()
            self._head = 0
        return entry

    def clear(self) -> None:
        self._chunks.clear()
        self._head = self._count = 0
        self._head_entry = self._last = None

    def _entry(self, chunk: _Chunk, position: int) -> Entry:
        """The cell's entry, with the last appended message itself if it is that one's."""
        last = self._last
        if last is not None and last[0] == chunk.seqs[position]:
            self._last = None
            return _built(chunk, position, last[1])
        return _built(chunk, position)

    def _live(self) -> Iterator[tuple[_Chunk, int]]:
        """Each chunk with the position of its first cell not taken."""
        start = self._head
        for chunk in self._chunks:
            yield chunk, start
            start = 0

    def _cells(self) -> Iterator[tuple[_Chunk, int]]:
        for chunk, start in self._live():
            for position in range(start, len(chunk.seqs)):
                yield chunk, position

    def __iter__(self) -> Iterator[Entry]:
        """The entries in order, built anew (but the head's): for queries and tests."""
        for chunk, position in self._cells():
            first = chunk is self._chunks[0] and position == self._head
            if first and self._head_entry is not None:
                yield self._head_entry
            else:
                yield _built(chunk, position)

    def body_runs(self) -> Iterator[list[Body]]:
        """The bodies in order, a chunk's at a time."""
        for chunk, start in self._live():
            yield typing.cast(list[Body], chunk.bodies[start:])

    def replace_bytes(self, convert: Callable[[bytes], Body]) -> None:
        """Bodies held as bytes (a snapshot from before the body store) become `convert`'s."""
        for chunk in self._chunks:
            bodies = typing.cast(list[typing.Any], chunk.bodies)
            if bytes in map(type, bodies):  # a restart's million cells: no Python call each
                chunk.bodies = [convert(b) if isinstance(b, bytes) else b for b in bodies]
                self._head_entry = self._last = None  # they held the bytes

    def _columns(self) -> tuple[array[int], array[int], list[Shape | None], list[Body | None]]:
        seqs, expiries = array("q"), array("q")
        shapes: list[Shape | None] = []
        bodies: list[Body | None] = []
        for chunk, start in self._live():
            seqs += chunk.seqs[start:]
            expiries += chunk.expiries[start:]
            shapes += chunk.shapes[start:]
            bodies += chunk.bodies[start:]
        return seqs, expiries, shapes, bodies

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Backlog):
            return NotImplemented
        return self._columns() == other._columns()

    def __reduce__(self) -> tuple[typing.Any, ...]:
        seqs, expiries, shapes, bodies = self._columns()
        return (
            _backlog_from_columns,
            (seqs, expiries, shapes, body_columns.as_columns(typing.cast(list[Body], bodies))),
        )

    def __repr__(self) -> str:
        return f"Backlog({self._count} messages)"


def _backlog_from_columns(
    seqs: array[int],
    expiries: array[int],
    shapes: list[Shape | None],
    columns: body_columns.Columns,
) -> Backlog:
    """A pickled backlog, in chunks again: slices of the columns, no cell at a time."""
    bodies = typing.cast(list[Body | None], body_columns.from_columns(*columns))
    backlog = Backlog()
    for start in range(0, len(seqs), BACKLOG_CHUNK):
        chunk = _Chunk()
        end = start + BACKLOG_CHUNK
        chunk.seqs, chunk.expiries = seqs[start:end], expiries[start:end]
        chunk.shapes, chunk.bodies = shapes[start:end], bodies[start:end]
        backlog._chunks.append(chunk)
    backlog._count = len(seqs)
    return backlog


def _message(shape: Shape, body: Body) -> Message:
    exchange, routing_key, properties, headers, deaths, first, last, expiration, priority = shape
    return Message(
        exchange, routing_key, properties, body, headers, deaths, first, last, expiration, priority
    )


def _built(chunk: _Chunk, position: int, message: Message | None = None) -> Entry:
    """A cell's entry, its message built from the shape and body unless given."""
    if message is None:
        shape = typing.cast(Shape, chunk.shapes[position])
        message = _message(shape, typing.cast(Body, chunk.bodies[position]))
    expiry = chunk.expiries[position]
    return Entry(chunk.seqs[position], message, False, 0, None if expiry == _NO_EXPIRY else expiry)


@dataclass(frozen=True, slots=True)
class Limits:
    """A queue's length limits, overflow, delivery limit and dead-lettering, from its arguments."""

    max_length: int | None = None  # ready messages
    max_length_bytes: int | None = None  # body bytes of ready messages
    overflow: str = "drop-head"  # or reject-publish, reject-publish-dlx
    delivery_limit: int | None = None  # returns allowed before the message is dead-lettered
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None  # None: the message's own routing key
    message_ttl_ms: int | None = None  # x-message-ttl
    expires_ms: int | None = None  # x-expires: unused this long, the queue is deleted
    single_active_consumer: bool = False  # x-single-active-consumer
    consumer_timeout_ms: int = 0  # x-consumer-timeout; set from CONSUMER_TIMEOUT_MS if absent
    max_priority: int | None = None  # x-max-priority (classic); quorum queues have two levels
    quorum: bool = False
    # x-dead-letter-strategy at-least-once; RabbitMQ honours it only for quorum queues with
    # x-overflow reject-publish and otherwise dead-letters at most once
    at_least_once: bool = False

    def priority_level(self, priority: int) -> int:
        """RabbitMQ 4.x: classic priority queues have levels 0..x-max-priority; quorum queues
        two, priorities above 4 being the high one."""
        if self.quorum:
            return int(priority > 4)
        return min(priority, self.max_priority or 0)


class QueueRef(typing.NamedTuple):
    """A queue by name and id: a queue deleted and declared again has another id, so what
    referred to the old one finds nothing (state.find_queue)."""

    vhost: str
    name: str
    id: int


@dataclass(slots=True)
class Queue:
    vhost: str
    name: str
    durable: bool
    exclusive_owner: tuple[str, int, int] | None  # connection of an exclusive queue
    auto_delete: bool  # deleted when its last consumer goes
    arguments: c.Arguments
    queue_type: str  # one of QUEUE_TYPES
    ready: Backlog = field(default_factory=Backlog)  # never delivered, level 0, in seq order
    # a heap by (-level, seq): requeued entries, and entries of a priority level above 0
    returned: list[tuple[tuple[int, int], Entry]] = field(default_factory=list)
    next_seq: int = 0  # seq of the next enqueued message
    consumers: list[Consumer] = field(default_factory=list)  # in round-robin order
    next_consumer: int = 0  # index into consumers of the next one to try
    had_consumer: bool = False  # auto-delete only applies after a first consumer
    unacked_count: int = 0  # entries delivered and not yet settled
    # unique in the state (BrokerState.next_id); in snapshots before ids this slot held a
    # "deleted" flag, which upgrade_state replaces
    id: int = 0
    limits: Limits = field(default_factory=Limits)
    ready_bytes: int = 0  # body bytes of the ready entries (x-max-length-bytes)
    last_used_ms: int = 0  # the Tick after its last use (x-expires counts from there)
    used: bool = True  # declared, consumed from or read since the last Tick
    active: int | None = None  # with x-single-active-consumer: the id of the one that receives
    top_priority: int = 0  # the highest x-priority among the consumers
    dead_letters: list[DeadLetter] = field(default_factory=list)  # at least once, not yet taken
    dead_letter_bytes: int = 0  # body bytes of the messages in `dead_letters`
    policy: str | None = None  # the name of the policy that applies to it
    operator_policy: str | None = None  # the name of the operator policy that applies to it
    # what its policies set, merged (the management API's effective_policy_definition)
    policy_definition: dict[str, typing.Any] = field(default_factory=dict)

    @property
    def ref(self) -> QueueRef:
        return QueueRef(self.vhost, self.name, self.id)

    @property
    def ready_count(self) -> int:
        return len(self.ready) + len(self.returned)

    def append(self, message: Message, now_ms: int) -> int:
        """Enqueue `message`; its seq."""
        ttls = (self.limits.message_ttl_ms, _expiration_ms(message))
        known = [ttl for ttl in ttls if ttl is not None]
        expires_at_ms = now_ms + min(known) if known else None
        level = self.limits.priority_level(message.priority)
        seq = self.next_seq
        self.next_seq += 1
        if level:  # above the lowest level: it may overtake what waits
            entry = Entry(seq, message, False, 0, expires_at_ms, level)
            heapq.heappush(self.returned, (entry.order, entry))
        else:
            self.ready.append(seq, message, expires_at_ms)
        self.ready_bytes += message.body.size
        return seq

    def _returned_first(self) -> bool:
        # a backlog entry's order is (0, seq)
        return bool(self.returned) and (
            not self.ready or self.returned[0][0] < (0, self.ready.first_seq())
        )

    def head(self) -> Entry | None:
        if self._returned_first():
            return self.returned[0][1]
        return self.ready.head()

    def take(self) -> Entry:
        if self._returned_first():
            entry = heapq.heappop(self.returned)[1]
        else:
            entry = self.ready.take()
        self.ready_bytes -= entry.message.body.size
        return entry

    def give_back(self, entry: Entry) -> None:
        heapq.heappush(self.returned, (entry.order, entry))
        self.ready_bytes += len(entry.message.body)

    def clear(self) -> None:
        self.ready.clear()
        self.returned.clear()
        self.ready_bytes = 0

    def over_limit(self, adding: Message | None = None) -> bool:
        """Whether the ready messages and the waiting dead letters (with `adding`) exceed
        x-max-length or -bytes, or the dead letters their own bound."""
        limits = self.limits
        waiting = len(self.dead_letters)
        count = self.ready_count + waiting + (adding is not None)
        size = self.ready_bytes + self.dead_letter_bytes
        size += len(adding.body) if adding is not None else 0
        return (
            (limits.max_length is not None and count > limits.max_length)
            or (limits.max_length_bytes is not None and size > limits.max_length_bytes)
            or waiting >= DEAD_LETTERS_WAITING_MAX
        )

    def hold_dead_letter(self, pending: DeadLetter) -> None:
        self.dead_letters.append(pending)
        self.dead_letter_bytes += len(pending.message.body)

    # --- snapshots: the backlog as columns, returned entries as rows of plain values --------

    def __getstate__(self) -> dict[str, typing.Any]:
        """Pickled field by field, the returned entries as rows: a million messages pickle in
        about a second and a half this way, against half a minute as objects (bench-backlog)."""
        # a field an older snapshot lacked stays missing: upgrade_state fills it in
        state = {name: getattr(self, name) for name in _QUEUE_FIELDS if hasattr(self, name)}
        state["returned"] = _ENTRY_ROWS, [_row(entry) for _, entry in self.returned]
        return state

    def __setstate__(self, state: typing.Any) -> None:
        if isinstance(state, tuple):  # pickled as objects, before rows
            state = state[1]
        for name, value in state.items():
            setattr(self, name, value)
        if _is_rows(self.returned):
            rows = typing.cast(typing.Any, self.returned)[1]
            entries = [_entry(row) for row in rows]
            self.returned = [(entry.order, entry) for entry in entries]  # the heap's own order
        if not isinstance(self.ready, Backlog):  # before backlogs: entries, or rows of them
            self._to_backlog(typing.cast(typing.Any, self.ready))

    def _to_backlog(self, ready: typing.Any) -> None:
        entries: Iterable[Entry] = (_entry(row) for row in ready[1]) if _is_rows(ready) else ready
        self.ready = Backlog()
        for entry in entries:
            if entry.redelivered or entry.delivery_count or entry.level:
                heapq.heappush(self.returned, (entry.order, entry))  # not a backlog entry
            else:
                self.ready.append(entry.seq, entry.message, entry.expires_at_ms)


_QUEUE_FIELDS = tuple(field.name for field in dataclasses.fields(Queue))
_ENTRY_ROWS = "entry rows v1"  # marks a list of rows; a deque of entries has none


def _is_rows(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and value[0] == _ENTRY_ROWS


def _row(entry: Entry) -> tuple[typing.Any, ...]:
    """The entry's fields, then its message's in Message's order, the body as id and size."""
    body = entry.message.body
    shape = _shape(entry.message)
    return (
        entry.seq,
        entry.redelivered,
        entry.delivery_count,
        entry.expires_at_ms,
        entry.level,
        *shape[:3],
        body if body.in_memory else body.id,  # one in memory keeps its bytes
        body.size,
        *shape[3:],
    )


def _entry(row: tuple[typing.Any, ...]) -> Entry:
    seq, redelivered, delivery_count, expires_at_ms, level, *message = row
    exchange, routing_key, properties, body, size, *rest = message
    if not isinstance(body, Body):
        body = Body.stored(body, size)
    shape = typing.cast(Shape, (exchange, routing_key, properties, *rest))
    return Entry(seq, _message(shape, body), redelivered, delivery_count, expires_at_ms, level)


def _expiration_ms(message: Message) -> int | None:
    """The per-message TTL; the proposing session refused malformed ones already."""
    if message.expiration is None:
        return None
    try:
        return max(0, int(message.expiration))
    except ValueError:
        return None
