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

import contextlib
import gc
import gzip
import logging
import os
import struct
import typing
from collections.abc import Iterator

import pysyncobj.pickle
import pysyncobj.serializer
from pysyncobj.config import SERIALIZER_STATE

from warrenmq.replication import body
from warrenmq.replication.body_store import BodyStore

__all__ = ["BodySerializer", "last_entries", "load_snapshot"]

log = logging.getLogger(__name__)

# A snapshot file: this header, the last two entries it holds (pickled: what a restart checks the
# journal against, read without the state), then the whole snapshot, pickled and gzipped.
# Snapshots of earlier versions are the gzipped pickle alone.
SNAPSHOT_MAGIC = b"WARRENS1"
SNAPSHOT_HEADER = struct.Struct("<8sI")
PART = struct.Struct("<BQI")
SNAPSHOT_PART = 1
BODY_PART = 2


def skip_snapshot_header(file: typing.BinaryIO) -> typing.Any:
    """Past the header, to the gzipped snapshot; the last two entries, if it had a header."""
    header = file.read(SNAPSHOT_HEADER.size)
    if len(header) == SNAPSHOT_HEADER.size and header[: len(SNAPSHOT_MAGIC)] == SNAPSHOT_MAGIC:
        _, length = SNAPSHOT_HEADER.unpack(header)
        return pysyncobj.pickle.loads(file.read(length))
    file.seek(0)  # an earlier version's: gzip from the start
    return None


def load_snapshot(path: str | os.PathLike[str]) -> typing.Any:
    """A snapshot file's whole content: (state data, last applied, before last, cluster)."""
    with open(path, "rb") as file:
        skip_snapshot_header(file)
        with gzip.GzipFile(fileobj=file) as unzipped, body.loading(), _no_collections():
            return pysyncobj.pickle.load(unzipped)


@contextlib.contextmanager
def _no_collections() -> typing.Iterator[None]:
    """The collector paused: what a snapshot load makes is all live, and with a million
    messages' bodies the collections it set off took a fifth of the load (bench-backlog)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def last_entries(path: str) -> typing.Any:
    """The snapshot's (last applied, before last) entries, read cheaply when it has a header."""
    with open(path, "rb") as file:
        entries = skip_snapshot_header(file)
    if entries is not None:
        return entries
    _, last_applied, before_last, _ = load_snapshot(path)  # an earlier version's: all of it
    return last_applied, before_last


class BodySerializer(pysyncobj.serializer.Serializer):
    """pysyncobj's serializer, with the bodies streamed after the snapshot file."""

    # pysyncobj's own (name-mangled): the writing child's pid, 0 when none writes
    _Serializer__pid: int
    _Serializer__currentID: int

    def __init__(self, conf: typing.Any, bodies: BodyStore) -> None:
        super().__init__(
            conf.fullDumpFile,
            conf.logCompactionBatchSize,
            tryUseFork=True,  # serialize() below always forks
            serializer=None,
            deserializer=None,
            serializeChecker=None,
        )
        self._path: str = conf.fullDumpFile
        self._chunk_bytes: int = conf.logCompactionBatchSize
        self._bodies = bodies
        self._outgoing: dict[typing.Any, tuple[Iterator[bytes], list[bool]]] = {}
        self._incoming: typing.BinaryIO | None = None

    def serialize(self, data: typing.Any, id: int) -> None:  # noqa: A002 - pysyncobj's name
        """As pysyncobj's: a forked child writes the file, the tick goes on. It compresses at
        gzip's level 1, not 9: the metadata of a million messages takes seconds at 9."""
        if self._Serializer__pid != 0:
            return  # one is being written
        # pysyncobj cuts the journal at the snapshot once it is written: the bodies that the
        # cut entries brought must be on disk here by then
        self._bodies.sync()
        self._Serializer__currentID = id
        pid = os.fork()
        if pid:
            self._Serializer__pid = pid
            return
        status = 1
        try:
            os.nice(10)  # the node's own loop comes first: its heartbeats keep the leader
            temporary = self._path + ".tmp"
            with open(temporary, "wb") as file:
                _, last_applied, before_last, _ = data
                entries = pysyncobj.pickle.dumps((last_applied, before_last))
                file.write(SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, len(entries)) + entries)
                with gzip.GzipFile(fileobj=file, mode="wb", compresslevel=1) as zipped:
                    pysyncobj.pickle.dump(data, zipped)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path)
            status = 0
        except BaseException:
            log.exception("writing the snapshot failed")
        finally:
            os._exit(status)  # the child never returns into pysyncobj

    def deserialize(self) -> typing.Any:
        return load_snapshot(self._path)

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
