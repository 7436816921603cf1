"""What a node reads of its own process and disk: memory in use, free disk, file descriptors.

The memory and disk alarms (RabbitMQ docs: memory and disk alarms) compare these with the
node's limits. Memory in use is the process's anonymous resident memory, what its objects
occupy: message bodies are in the body store on disk, the journal's entries in its file, and
the page cache that holds them is the kernel's to drop.
A reading over the limit is taken again after freed heap memory is handed back to the kernel
(malloc_trim), so the figure falls once consumers drain queues and an alarm can clear, as
RabbitMQ's does; below the limit the heap is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import shutil
from dataclasses import dataclass

__all__ = ["ResourceMonitor", "ResourceReading", "total_memory_bytes"]

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _libc() -> ctypes.CDLL | None:
    """glibc, for malloc_trim; elsewhere readings fall only as far as the allocator lets them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


@dataclass(frozen=True, slots=True)
class ResourceReading:
    memory_used_bytes: int  # anonymous resident memory of this process
    disk_free_bytes: int  # on the file system of the data dir
    open_fds: int
    max_fds: int


def total_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * _PAGE_BYTES


def read_resources(data_dir: os.PathLike[str], trim: bool = False) -> ResourceReading:
    if trim and _LIBC is not None:
        _LIBC.malloc_trim(0)
    with open("/proc/self/statm") as statm:
        _, resident_pages, shared_pages, *_ = (int(field) for field in statm.read().split())
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_fds = 0
    return ResourceReading(
        memory_used_bytes=(resident_pages - shared_pages) * _PAGE_BYTES,
        disk_free_bytes=shutil.disk_usage(data_dir).free,
        open_fds=open_fds,
        max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )


class ResourceMonitor:
    """This node's readings against its limits, and the alarms (memory, disk) they raise."""

    def __init__(
        self, data_dir: os.PathLike[str], memory_limit_bytes: int, disk_free_limit_bytes: int
    ) -> None:
        self.data_dir = data_dir
        self.memory_limit_bytes = memory_limit_bytes
        self.disk_free_limit_bytes = disk_free_limit_bytes
        self.reading = read_resources(data_dir)
        self.local_alarms: set[str] = set()  # "memory", "disk": RabbitMQ's resource names

    def check(self) -> dict[str, bool]:
        """Read again; return each alarm that began (True) or cleared (False)."""
        self.reading = read_resources(self.data_dir)
        if self.reading.memory_used_bytes > self.memory_limit_bytes:
            self.reading = read_resources(self.data_dir, trim=True)
        alarms = set()
        if self.reading.memory_used_bytes > self.memory_limit_bytes:
            alarms.add("memory")
        if self.reading.disk_free_bytes < self.disk_free_limit_bytes:
            alarms.add("disk")
        changed = dict.fromkeys(alarms - self.local_alarms, True)
        changed.update(dict.fromkeys(self.local_alarms - alarms, False))
        self.local_alarms = alarms
        return changed
