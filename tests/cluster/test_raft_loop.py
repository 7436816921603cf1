"""When the node's Raft loop wakes between ticks: on a readable descriptor or its timeout,
never on readiness that the tick before the wait already took in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import typing

import pytest

from warrenmq.cluster.node import _Wakeup


@pytest.fixture
async def wakeup() -> typing.AsyncIterator[tuple[_Wakeup, int]]:
    descriptor = os.eventfd(0, os.EFD_NONBLOCK)
    wakeup = _Wakeup(asyncio.get_running_loop(), (descriptor,))
    try:
        yield wakeup, descriptor
    finally:
        wakeup.close()
        os.close(descriptor)


def take(descriptor: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(descriptor)


async def test_a_descriptor_that_turns_readable_wakes_the_wait(
    wakeup: tuple[_Wakeup, int],
) -> None:
    waker, descriptor = wakeup
    asyncio.get_running_loop().call_later(0.05, os.eventfd_write, descriptor, 1)
    await asyncio.wait_for(waker.wait(60.0), timeout=10.0)


async def test_the_wait_ends_at_its_timeout(wakeup: tuple[_Wakeup, int]) -> None:
    waker, _ = wakeup
    await asyncio.wait_for(waker.wait(0.01), timeout=10.0)


async def test_readiness_the_tick_took_in_does_not_wake_the_wait_after_it(
    wakeup: tuple[_Wakeup, int],
) -> None:
    """The event loop reports the descriptor in the same turn as it resumes the tick, which
    takes it in and waits again: that report must not end the new wait (it did, and every
    Raft message cost an idle node two ticks)."""
    waker, descriptor = wakeup
    loop = asyncio.get_running_loop()
    os.eventfd_write(descriptor, 1)
    await asyncio.sleep(0)  # resumed in the turn whose poll reports the descriptor ready
    take(descriptor)  # the tick
    started_s = loop.time()
    await waker.wait(0.5)  # in this task, as the node's loop waits
    assert loop.time() - started_s >= 0.45  # the timeout ended it (a timer never fires early)


async def test_readiness_while_nothing_waits_wakes_the_next_wait(
    wakeup: tuple[_Wakeup, int],
) -> None:
    """A descriptor that turned readable during a tick, after it had looked, is still
    readable: the wait after the tick ends at once."""
    waker, descriptor = wakeup
    os.eventfd_write(descriptor, 1)
    await asyncio.sleep(0.01)  # reported, while nothing waits
    await asyncio.wait_for(waker.wait(60.0), timeout=10.0)
