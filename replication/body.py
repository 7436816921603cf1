"""A message body by reference: what the replicated state holds instead of the bytes.

Theory of operation
-------------------
A publish arrives with its body inside the log entry. Applying it makes a `Body` that still
holds the bytes; once a queue keeps the message, `Step.keep` hands it to the node's body store
(`body_store.py`), which writes the bytes to disk and leaves the `Body` holding only its id and
size. The id is the publish command's `Meta.index`, so every node names the same body alike.

Liveness is Python's own reference count: a `Body` is shared by every queue entry, unacked
delivery, dead letter and pending effect of its message, and when the last of them lets go,
`__del__` tells the store, which may then reclaim the bytes. Nothing can release a body twice
or forget one the state still holds, and a delivery effect waiting in the outbox keeps its
body readable until it is sent. When a node installs a whole new state (a snapshot), the store
is given a new `Holder`: bodies of the replaced state fall silent as they die, and the store
learns the live set from the new state (`BodyStore.adopt`).

Snapshots pickle a stored body as its id and size; a body not (yet) in a store pickles with
its bytes, so a state without a store (the pure tests) round-trips whole.
"""

from __future__ import annotations

import contextlib
import typing
from array import array
from collections.abc import Iterable, Iterator

__all__ = ["Body", "Holder", "Keeper", "as_columns", "attach_stored", "from_columns", "loading"]

# While a snapshot is loaded (`loading`): the bodies made so far by id, so that every reference
# to one body in the snapshot gets the one object (two would each release it).
_loaded: dict[int, Body] | None = None


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Unpickle a snapshot inside: a body named many times becomes one object."""
    global _loaded
    _loaded = {}
    try:
        yield
    finally:
        _loaded = None


class Keeper(typing.Protocol):
    """What the state machine needs of a body store."""

    def keep(self, body: Body) -> None: ...

    def read(self, body_id: int) -> bytes: ...

    def release(self, body_id: int) -> None: ...

    def adopt(self, runs: Iterable[Iterable[Body]]) -> None: ...


class Holder:
    """A store's current generation: bodies attached to a retired one release nothing."""

    __slots__ = ("live", "store")

    def __init__(self, store: Keeper) -> None:
        self.store = store
        self.live = True  # False once the store adopted another state


class Body:
    __slots__ = ("_data", "_holder", "id", "size")

    def __init__(self, body_id: int, data: bytes) -> None:
        self.id = body_id  # the Meta.index of the publish that brought it; 0: never stored
        self.size = len(data)  # bytes
        self._data: bytes | None = data  # the bytes, until a store keeps them
        self._holder: Holder | None = None  # the store that keeps them

    @classmethod
    def stored(cls, body_id: int, size: int) -> Body:
        """A body a snapshot named: its bytes are in the store that will adopt it."""
        if _loaded is not None and (known := _loaded.get(body_id)) is not None:
            return known
        body = cls.__new__(cls)
        body.id, body.size, body._data, body._holder = body_id, size, None, None
        if _loaded is not None:
            _loaded[body_id] = body
        return body

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        if self._data is not None:
            return self._data
        holder = self._holder
        if holder is None:
            raise LookupError(f"body {self.id} is in no store")
        return holder.store.read(self.id)

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def attach(self, holder: Holder) -> None:
        """The store `holder` names keeps the bytes now."""
        self._data = None
        self._holder = holder

    def __del__(self) -> None:
        holder = self._holder
        if holder is not None and holder.live:
            holder.store.release(self.id)

    def __reduce__(self) -> tuple[typing.Any, ...]:
        if self._data is not None:
            return (Body, (self.id, self._data))
        return (Body.stored, (self.id, self.size))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Body):
            return NotImplemented
        return self.id == other.id and self.size == other.size

    def __hash__(self) -> int:
        return hash((self.id, self.size))

    def __repr__(self) -> str:
        return f"Body({self.id}, {self.size} bytes)"


def attach_stored(bodies: Iterable[Body], holder: Holder) -> tuple[array[int], list[Body]]:
    """`attach` each body that holds no bytes to `holder`: their ids, in order, and the bodies
    that still hold their bytes (a store adopting a state: one loop for a million bodies)."""
    ids = array("q")
    holding: list[Body] = []
    for body in bodies:
        if body._data is None:
            body._holder = holder
            ids.append(body.id)
        else:
            holding.append(body)
    return ids, holding


# How a queue's backlog pickles its bodies (queue.py): a million of them, one __reduce__ and one
# Body.stored call each, took 3 s of a snapshot and 1 s of a restart; columns take milliseconds
# to write, and one loop here to read.
Columns = tuple["array[int]", "array[int]", dict[int, Body]]


def as_columns(bodies: list[Body]) -> Columns:
    """The bodies' ids and sizes, and those still holding their bytes by position."""
    ids = array("q", [body.id for body in bodies])
    sizes = array("q", [body.size for body in bodies])
    in_memory = {position: body for position, body in enumerate(bodies) if body._data is not None}
    return ids, sizes, in_memory


def from_columns(ids: array[int], sizes: array[int], in_memory: dict[int, Body]) -> list[Body]:
    """`as_columns` undone; as `Body.stored`, a body named twice in a snapshot is one object."""
    loaded = _loaded
    if in_memory or loaded is None or not loaded.keys().isdisjoint(ids) or _repeats(ids):
        return [
            in_memory[position] if position in in_memory else Body.stored(body_id, size)
            for position, (body_id, size) in enumerate(zip(ids, sizes, strict=True))
        ]
    # each id new: no lookup per body (a restart makes a million of them here)
    new = Body.__new__
    bodies = [new(Body) for _ in ids]
    for body, body_id, size in zip(bodies, ids, sizes, strict=True):
        body.id, body.size, body._data, body._holder = body_id, size, None, None
    loaded.update(zip(ids, bodies, strict=True))
    return bodies


def _repeats(ids: array[int]) -> bool:
    return len(set(ids)) != len(ids)
