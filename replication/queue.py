"""One queue's messages in the replicated state: ready ones in order, returned and higher-priority
ones in a heap, length limits and the arguments that rule it (rabbit_fifo_q's part).

Plain data like the rest of the state (`replication/state.py`); the `apply_<command>`
functions of `replication/machine.py`'s table change it.
"""

from __future__ import annotations

import dataclasses
import heapq
import typing
from collections import deque
from dataclasses import dataclass, field

from warrenmq.replication import commands as c
from warrenmq.replication.body import Body

if typing.TYPE_CHECKING:
    from warrenmq.replication.state import Consumer, DeadLetter, Message

__all__ = ["DEAD_LETTERS_WAITING_MAX", "Entry", "Limits", "Queue"]

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
    ready: deque[Entry] = field(default_factory=deque)  # never delivered, level 0, in seq order
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

    def append(self, message: Message, now_ms: int) -> Entry:
        ttls = (self.limits.message_ttl_ms, _expiration_ms(message))
        known = [ttl for ttl in ttls if ttl is not None]
        expires_at_ms = now_ms + min(known) if known else None
        level = self.limits.priority_level(message.priority)
        entry = Entry(self.next_seq, message, False, 0, expires_at_ms, level)
        self.next_seq += 1
        if level:  # above the lowest level: it may overtake what waits
            heapq.heappush(self.returned, (entry.order, entry))
        else:
            self.ready.append(entry)
        self.ready_bytes += len(message.body)
        return entry

    def _returned_first(self) -> bool:
        return bool(self.returned) and (not self.ready or self.returned[0][0] < self.ready[0].order)

    def head(self) -> Entry | None:
        if self._returned_first():
            return self.returned[0][1]
        return self.ready[0] if self.ready else None

    def take(self) -> Entry:
        if self._returned_first():
            entry = heapq.heappop(self.returned)[1]
        else:
            entry = self.ready.popleft()
        self.ready_bytes -= len(entry.message.body)
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

    # --- snapshots: a queue's entries as rows of plain values -------------------------------

    def __getstate__(self) -> dict[str, typing.Any]:
        """Pickled field by field, the entries as rows: a million messages pickle in about a
        second and a half this way, against half a minute as objects (bench-backlog)."""
        # a field an older snapshot lacked stays missing: upgrade_state fills it in
        state = {name: getattr(self, name) for name in _QUEUE_FIELDS if hasattr(self, name)}
        state["ready"] = _ENTRY_ROWS, [_row(entry) for entry in self.ready]
        state["returned"] = _ENTRY_ROWS, [_row(entry) for _, entry in self.returned]
        return state

    def __setstate__(self, state: typing.Any) -> None:
        if isinstance(state, tuple):  # pickled as objects, before rows
            state = state[1]
        for name, value in state.items():
            setattr(self, name, value)
        from warrenmq.replication.state import Message  # state.py imports this module

        if _is_rows(self.ready):
            rows = typing.cast(typing.Any, self.ready)[1]
            self.ready = deque(_entry(row, Message) for row in rows)
        if _is_rows(self.returned):
            rows = typing.cast(typing.Any, self.returned)[1]
            entries = [_entry(row, Message) for row in rows]
            self.returned = [(entry.order, entry) for entry in entries]  # the heap's own order


_QUEUE_FIELDS = tuple(field.name for field in dataclasses.fields(Queue))
_ENTRY_ROWS = "entry rows v1"  # marks a list of rows; a deque of entries has none


def _is_rows(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and value[0] == _ENTRY_ROWS


def _row(entry: Entry) -> tuple[typing.Any, ...]:
    message = entry.message
    body = message.body
    return (
        entry.seq,
        entry.redelivered,
        entry.delivery_count,
        entry.expires_at_ms,
        entry.level,
        message.exchange,
        message.routing_key,
        message.properties,
        body if body.in_memory else body.id,  # one in memory keeps its bytes
        body.size,
        message.headers,
        message.deaths,
        message.first_death,
        message.last_death,
        message.expiration,
        message.priority,
    )


def _entry(row: tuple[typing.Any, ...], message_class: type[Message]) -> Entry:
    seq, redelivered, delivery_count, expires_at_ms, level, *message, priority = row
    exchange, routing_key, properties, body, size, headers, deaths, first, last, expiration = (
        message
    )
    if not isinstance(body, Body):
        body = Body.stored(body, size)
    return Entry(
        seq,
        message_class(
            exchange,
            routing_key,
            properties,
            body,
            headers,
            deaths,
            first,
            last,
            expiration,
            priority,
        ),
        redelivered,
        delivery_count,
        expires_at_ms,
        level,
    )


def _expiration_ms(message: Message) -> int | None:
    """The per-message TTL; the proposing session refused malformed ones already."""
    if message.expiration is None:
        return None
    try:
        return max(0, int(message.expiration))
    except ValueError:
        return None
