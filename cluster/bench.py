"""`warren bench`: producers and consumers in separate processes, like RabbitMQ's PerfTest.

A Python client is slower than the broker it measures, so each producer and each consumer is its
own OS process with its own event loop. Every message carries a unique id and its send time in
the first 16 bytes of its body (so a 16-byte body is the smallest); consumers compute end-to-end
latency from it (one host, one clock). After the run, consumers drain until every confirmed id
arrived or the queue stays quiet for `--drain-idle-s`: the report then says how many confirmed
messages were lost (must be 0) or delivered twice.

Works against any AMQP 0-9-1 broker, RabbitMQ included. It prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing
import resource
import statistics
import struct
import sys
import time
import typing
from dataclasses import dataclass, field

import aio_pika

__all__ = ["add_arguments", "run"]

_STAMP = struct.Struct(">QQ")  # message id, send time in ns
MIN_SIZE_BYTES = _STAMP.size
CONNECT_TIMEOUT_S = 5.0
PROGRESS_S = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="AMQP_URL",
        help="a node to use; repeat for several (default amqp://guest:guest@127.0.0.1:5672/)",
    )
    parser.add_argument(
        "--publish-url",
        action="append",
        dest="publish_urls",
        help="producers use these (default: --url)",
    )
    parser.add_argument(
        "--consume-url",
        action="append",
        dest="consume_urls",
        help="consumers use these (default: --url)",
    )
    parser.add_argument(
        "--protocol",
        choices=["amqp0-9-1", "amqp1.0"],
        default="amqp0-9-1",
        help="what producers and consumers speak (the queue is declared over 0-9-1)",
    )
    parser.add_argument("--queue", default="warren-bench")
    parser.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--size", type=int, default=1024, help="body bytes (at least 16)")
    parser.add_argument(
        "--confirm",
        type=int,
        default=100,
        metavar="WINDOW",
        help="publisher confirms, this many unconfirmed at most (0: off)",
    )
    parser.add_argument("--persistent", action="store_true", help="delivery_mode 2")
    parser.add_argument("--prefetch", type=int, default=200)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages per second per producer (0: unlimited)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="publishing seconds")
    parser.add_argument(
        "--drain-idle-s",
        type=float,
        default=3.0,
        help="consumers stop after this long with nothing left to receive",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


@dataclass
class _ProducerResult:
    published: int = 0
    confirmed_ids: array.array[int] = field(default_factory=lambda: array.array("Q"))
    confirm_latencies_ms: array.array[float] = field(default_factory=lambda: array.array("d"))
    errors: int = 0
    cpu_s: float = 0.0  # the process's user and system CPU time


@dataclass
class _ConsumerResult:
    received_ids: array.array[int] = field(default_factory=lambda: array.array("Q"))
    latencies_ms: array.array[float] = field(default_factory=lambda: array.array("d"))
    first_received_s: float = 0.0  # wall clock: comparable across processes on one host
    last_received_s: float = 0.0
    errors: int = 0
    cpu_s: float = 0.0

    def record(self, body: bytes) -> None:
        """A message arrived: its id, and its latency from the send time in its body."""
        message_id, sent_ns = _STAMP.unpack_from(body)
        self.received_ids.append(message_id)
        now_ns = time.time_ns()
        self.latencies_ms.append((now_ns - sent_ns) / 1e6)
        self.last_received_s = now_ns / 1e9
        if not self.first_received_s:
            self.first_received_s = self.last_received_s


class _Counters(typing.NamedTuple):
    published: typing.Any  # multiprocessing.Value("q")
    confirmed: typing.Any
    consumed: typing.Any
    producers_done: typing.Any


def _add(counter: typing.Any, amount: int) -> None:
    with counter.get_lock():
        counter.value += amount


async def _connect(
    urls: list[str], attempt: int, deadline_s: float, result: _ProducerResult | _ConsumerResult
) -> tuple[aio_pika.abc.AbstractConnection | None, int]:
    """The next node in turn that answers, and the attempt counter; None past the deadline."""
    while time.monotonic() < deadline_s:
        try:
            connection = await aio_pika.connect(
                urls[attempt % len(urls)], timeout=CONNECT_TIMEOUT_S
            )
            return connection, attempt
        except Exception:
            result.errors += 1
            attempt += 1
            await asyncio.sleep(0.2)
    return None, attempt


# --- producer process --------------------------------------------------------------------


async def _produce_async(
    index: int, options: dict[str, typing.Any], counters: _Counters, result: _ProducerResult
) -> None:
    urls = options["publish_urls"]
    deadline_s = time.monotonic() + options["duration"]
    padding = bytes(options["size"] - MIN_SIZE_BYTES)
    delivery_mode = (
        aio_pika.DeliveryMode.PERSISTENT
        if options["persistent"]
        else aio_pika.DeliveryMode.NOT_PERSISTENT
    )
    window = max(1, options["confirm"])
    next_seq = 0
    attempt = index
    while time.monotonic() < deadline_s:
        connection, attempt = await _connect(urls, attempt, deadline_s, result)
        if connection is None:
            break
        async with connection:
            channel = await connection.channel(publisher_confirms=options["confirm"] > 0)
            exchange = channel.default_exchange
            started_s = time.monotonic()
            sent = 0
            try:
                while time.monotonic() < deadline_s:
                    ids = [(index << 40) | (next_seq + offset) for offset in range(window)]
                    next_seq += window
                    sent_at = [time.perf_counter() for _ in ids]
                    await asyncio.gather(
                        *(
                            exchange.publish(
                                aio_pika.Message(
                                    _STAMP.pack(message_id, time.time_ns()) + padding,
                                    delivery_mode=delivery_mode,
                                ),
                                routing_key=options["queue"],
                            )
                            for message_id in ids
                        )
                    )
                    confirmed_at = time.perf_counter()
                    result.published += len(ids)
                    _add(counters.published, len(ids))
                    if options["confirm"]:
                        result.confirmed_ids.extend(ids)
                        result.confirm_latencies_ms.extend(
                            (confirmed_at - start) * 1000 for start in sent_at
                        )
                        _add(counters.confirmed, len(ids))
                    sent += len(ids)
                    if options["rate"]:
                        ahead_s = sent / options["rate"] - (time.monotonic() - started_s)
                        if ahead_s > 0:
                            await asyncio.sleep(ahead_s)
            except Exception:
                result.errors += 1  # this window is unconfirmed; go on elsewhere
                attempt += 1


# --- consumer process --------------------------------------------------------------------


async def _consume_async(
    index: int, options: dict[str, typing.Any], counters: _Counters, result: _ConsumerResult
) -> None:
    urls = options["consume_urls"]
    hard_deadline_s = time.monotonic() + options["duration"] + 120.0
    last_message_s = time.monotonic()
    pending = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal last_message_s, pending
        result.record(message.body)
        last_message_s = time.monotonic()
        pending += 1
        if pending >= 100:
            _add(counters.consumed, pending)
            pending = 0
        await message.ack()

    attempt = index
    while time.monotonic() < hard_deadline_s:
        connection, attempt = await _connect(urls, attempt, hard_deadline_s, result)
        if connection is None:
            break
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=options["prefetch"])
            queue = await channel.get_queue(options["queue"])
            await queue.consume(on_message)
            while time.monotonic() < hard_deadline_s:
                await asyncio.sleep(0.1)
                if not connection.connected.is_set():
                    result.errors += 1
                    attempt += 1
                    break
                idle_s = time.monotonic() - last_message_s
                if counters.producers_done.value and idle_s > options["drain_idle_s"]:
                    _add(counters.consumed, pending)
                    return


def _worker(
    role: str,
    index: int,
    options: dict[str, typing.Any],
    counters: _Counters,
    results: multiprocessing.Queue[typing.Any],
) -> None:
    """One producer or consumer process: run it, hand its result back to the parent."""
    result: _ProducerResult | _ConsumerResult
    if options["protocol"] == "amqp1.0":
        from warrenmq.cluster import bench_amqp10  # proton is loaded by the 1.0 runs only

        if role == "producer":
            result = _ProducerResult()
            bench_amqp10.produce(index, options, counters, result)
        else:
            result = _ConsumerResult()
            bench_amqp10.consume(index, options, counters, result)
    elif role == "producer":
        result = _ProducerResult()
        asyncio.run(_produce_async(index, options, counters, result))
    else:
        result = _ConsumerResult()
        asyncio.run(_consume_async(index, options, counters, result))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_s = usage.ru_utime + usage.ru_stime
    results.put((role, result))


# --- the parent ----------------------------------------------------------------------------


def _percentiles(values: typing.Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 3)

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1], 3),
        "mean": round(statistics.fmean(ordered), 3),
    }


async def _declare(options: dict[str, typing.Any]) -> None:
    connection = await aio_pika.connect(options["publish_urls"][0], timeout=CONNECT_TIMEOUT_S)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            options["queue"], durable=True, arguments={"x-queue-type": options["queue_type"]}
        )
        await queue.purge()


def run(arguments: argparse.Namespace) -> int:
    if arguments.size < MIN_SIZE_BYTES:
        print(f"--size must be at least {MIN_SIZE_BYTES} bytes", file=sys.stderr)
        return 2
    urls = arguments.urls or ["amqp://guest:guest@127.0.0.1:5672/"]
    options = dict(vars(arguments))
    options["publish_urls"] = arguments.publish_urls or urls
    options["consume_urls"] = arguments.consume_urls or urls
    asyncio.run(_declare(options))
    context = multiprocessing.get_context("spawn")  # no event loop is ever forked
    counters = _Counters(*(context.Value("q", 0) for _ in range(4)))
    results: multiprocessing.Queue[typing.Any] = context.Queue()
    consumers = [
        context.Process(target=_worker, args=("consumer", i, options, counters, results))
        for i in range(arguments.consumers)
    ]
    producers = [
        context.Process(target=_worker, args=("producer", i, options, counters, results))
        for i in range(arguments.producers)
    ]
    for process in consumers + producers:
        process.start()
    collected: list[tuple[str, typing.Any]] = []
    started_s = time.monotonic()
    last = (0, 0, 0, started_s)
    while len(collected) < len(consumers) + len(producers):
        time.sleep(PROGRESS_S / 10)
        while not results.empty():
            collected.append(results.get())
        if (
            not any(process.is_alive() for process in producers)
            and not counters.producers_done.value
        ):
            counters.producers_done.value = 1
        now_s = time.monotonic()
        if now_s - last[3] >= PROGRESS_S and not arguments.json:
            published, confirmed, consumed = (
                counters.published.value,
                counters.confirmed.value,
                counters.consumed.value,
            )
            elapsed_s = now_s - last[3]
            print(
                f"\r{now_s - started_s:6.1f} s  published {(published - last[0]) / elapsed_s:8.0f}"
                f"/s  confirmed {(confirmed - last[1]) / elapsed_s:8.0f}/s  consumed "
                f"{(consumed - last[2]) / elapsed_s:8.0f}/s",
                end="",
                flush=True,
            )
            last = (published, confirmed, consumed, now_s)
        if not any(process.is_alive() for process in consumers + producers) and results.empty():
            break
    for process in consumers + producers:
        process.join(timeout=10)
    report = _report(arguments, collected)
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print()
        _print_report(report)
    return 0 if report["lost"] == 0 else 1


def _report(
    arguments: argparse.Namespace, collected: list[tuple[str, typing.Any]]
) -> dict[str, typing.Any]:
    producers = [result for kind, result in collected if kind == "producer"]
    consumers = [result for kind, result in collected if kind == "consumer"]
    confirmed = {message_id for result in producers for message_id in result.confirmed_ids}
    received: dict[int, int] = {}
    for result in consumers:
        for message_id in result.received_ids:
            received[message_id] = received.get(message_id, 0) + 1
    duration_s = arguments.duration
    published = sum(result.published for result in producers)
    receiving = [result for result in consumers if result.first_received_s]
    consuming_s = (
        (max(r.last_received_s for r in receiving) - min(r.first_received_s for r in receiving))
        if receiving
        else 0.0
    )
    return {
        "workload": {
            name: getattr(arguments, name)
            for name in (
                "protocol",
                "queue_type",
                "producers",
                "consumers",
                "size",
                "confirm",
                "persistent",
                "prefetch",
                "rate",
                "duration",
            )
        },
        "published_per_s": round(published / duration_s, 1),
        "confirmed_per_s": round(len(confirmed) / duration_s, 1),
        "consumed_per_s": round(sum(received.values()) / consuming_s, 1) if consuming_s else 0.0,
        "confirm_latency_ms": _percentiles(
            [value for result in producers for value in result.confirm_latencies_ms]
        ),
        "end_to_end_latency_ms": _percentiles(
            [value for result in consumers for value in result.latencies_ms]
        ),
        "published": published,
        "confirmed": len(confirmed),
        "consumed": sum(received.values()),
        "lost": len(confirmed - received.keys()),
        "duplicated": sum(count - 1 for count in received.values() if count > 1),
        "client_errors": sum(result.errors for result in producers + consumers),
        # a client near 100% of a core per process measures itself, not the broker
        "client_cpu_percent": {
            "producers": [round(100 * r.cpu_s / duration_s, 1) for r in producers],
            "consumers": [round(100 * r.cpu_s / duration_s, 1) for r in consumers],
        },
    }


def _print_report(report: dict[str, typing.Any]) -> None:
    print(f"workload: {report['workload']}")
    print(
        f"published {report['published_per_s']}/s, confirmed {report['confirmed_per_s']}/s, "
        f"consumed {report['consumed_per_s']}/s"
    )
    for name in ("confirm_latency_ms", "end_to_end_latency_ms"):
        print(f"{name}: {report[name]}")
    print(
        f"published {report['published']}, confirmed {report['confirmed']}, consumed "
        f"{report['consumed']}, lost {report['lost']}, duplicated {report['duplicated']}, "
        f"client errors {report['client_errors']}"
    )
    print(f"client CPU (% of one core over the run): {report['client_cpu_percent']}")
