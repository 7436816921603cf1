"""Snapshots that hold metadata only, and a snapshot transfer that carries the bodies.

pysyncobj writes a snapshot by pickling the state in a forked child; the state holds each body
as its id and size (body.py), so the file is O(queues + messages' metadata), not O(bodies).
A follower too far behind for the journal gets the leader's snapshot file in chunks. Alone that
would leave it naming bodies it never stored (a wiped follower has none), so `BodySerializer`
sends, after the file, every body the leader's store holds live, read one by one as the chunks
go (bounded memory), and the follower stores them before it installs the state.

A chunk is whole parts, each `<kind u8, body id u64, length u32>` and its bytes: a piece of the
snapshot file (kind S) or one body (kind B). A body whose message died on the leader while the
transfer ran is skipped: the entries after the snapshot, which the follower applies next, let
go of it there too before anything could ask for it.
"""

from __future__ import annotations

import logging
import os
import struct
import typing
from collections.abc import Iterator

import pysyncobj.serializer
from pysyncobj.config import SERIALIZER_STATE

from warrenmq.replication.body_store import BodyStore

__all__ = ["BodySerializer"]

log = logging.getLogger(__name__)

PART = struct.Struct("<BQI")
SNAPSHOT_PART = 1
BODY_PART = 2


class BodySerializer(pysyncobj.serializer.Serializer):
    """pysyncobj's serializer, with the bodies streamed after the snapshot file."""

    def __init__(self, conf: typing.Any, bodies: BodyStore) -> None:
        super().__init__(
            conf.fullDumpFile, conf.logCompactionBatchSize, conf.useFork, None, None, None
        )
        self._path: str = conf.fullDumpFile
        self._chunk_bytes: int = conf.logCompactionBatchSize
        self._bodies = bodies
        self._outgoing: dict[typing.Any, tuple[Iterator[bytes], list[bool]]] = {}
        self._incoming: typing.BinaryIO | None = None

    def serialize(self, data: typing.Any, id: int) -> None:  # noqa: A002 - pysyncobj's name
        # pysyncobj cuts the journal at the snapshot once it is written: the bodies that the
        # cut entries brought must be on disk here by then
        self._bodies.sync()
        super().serialize(data, id)

    def checkSerializing(self) -> tuple[int, int | None]:  # noqa: N802
        state, snapshot_id = super().checkSerializing()
        if state == SERIALIZER_STATE.SUCCESS:
            self._outgoing.clear()  # a newer snapshot: transfers start over with it
        return state, snapshot_id

    # --- the leader's side ----------------------------------------------------------------

    def getTransmissionData(self, transmissionID: typing.Any) -> typing.Any:  # noqa: N802, N803
        if self._Serializer__pid != 0:  # a snapshot being written
            return None
        outgoing = self._outgoing.get(transmissionID)
        if outgoing is None:
            try:
                outgoing = self._outgoing[transmissionID] = (self._chunks(), [True])
            except OSError:
                log.exception("the snapshot cannot be read for a transfer")
                return None
        chunks, first = outgoing
        try:
            chunk = next(chunks, b"")
        except (OSError, LookupError):
            log.exception("a snapshot transfer failed: it starts over")
            self._outgoing.pop(transmissionID, None)
            return False
        is_first, first[0] = first[0], False
        is_last = not chunk
        if is_last:
            self._outgoing.pop(transmissionID, None)
        return chunk, is_first, is_last

    def cancelTransmisstion(self, id: typing.Any) -> None:  # noqa: N802, A002 - pysyncobj's
        self._outgoing.pop(id, None)

    def _chunks(self) -> Iterator[bytes]:
        snapshot = open(self._path, "rb")  # opened now: a later snapshot replaces the name only
        ids = self._bodies.live_ids()
        return self._parts_in_chunks(snapshot, ids)

    def _parts_in_chunks(self, snapshot: typing.BinaryIO, ids: typing.Any) -> Iterator[bytes]:
        chunk = bytearray()
        with snapshot:
            while piece := snapshot.read(self._chunk_bytes):
                yield PART.pack(SNAPSHOT_PART, 0, len(piece)) + piece
        for body_id, data in self._bodies.records(ids):
            chunk += PART.pack(BODY_PART, body_id, len(data))
            chunk += data
            if len(chunk) >= self._chunk_bytes:
                yield bytes(chunk)
                chunk.clear()
        if chunk:
            yield bytes(chunk)

    # --- the follower's side --------------------------------------------------------------

    def setTransmissionData(self, data: typing.Any) -> bool:  # noqa: N802
        if not data:
            return False
        chunk, is_first, is_last = data
        temporary = self._path + ".1.tmp"
        if is_first:
            if self._incoming is not None:
                self._incoming.close()
            self._incoming = open(temporary, "wb")
        incoming = self._incoming
        if incoming is None:
            return False
        try:
            self._take(incoming, memoryview(chunk))
        except (OSError, struct.error, ValueError):
            log.exception("a snapshot transfer could not be taken: waiting for it again")
            incoming.close()
            self._incoming = None
            return False
        if not is_last:
            return False
        incoming.flush()
        os.fsync(incoming.fileno())
        incoming.close()
        self._incoming = None
        self._bodies.sync()  # the bodies before the state that names them
        os.replace(temporary, self._path)
        return True

    def _take(self, incoming: typing.BinaryIO, chunk: memoryview) -> None:
        offset = 0
        while offset < len(chunk):
            kind, body_id, length = PART.unpack_from(chunk, offset)
            offset += PART.size
            payload = chunk[offset : offset + length]
            if len(payload) != length:
                raise ValueError("a part was cut short")
            offset += length
            if kind == SNAPSHOT_PART:
                incoming.write(payload)
            elif kind == BODY_PART:
                self._bodies.receive(body_id, bytes(payload))
            else:
                raise ValueError(f"a part of unknown kind {kind}")
