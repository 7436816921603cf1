"""`warren bench`: PerfTest-style runs against any AMQP broker, RabbitMQ included.

Each producer and each consumer is its own OS process running the lean client (`lean.py`:
pre-encoded frames, a sliding confirm window, hand-parsed acks and deliveries), so a
process costs a few µs per message and the broker sets the pace; the report gives each
process's CPU so a reader can check. The flags are PerfTest's where it has one: `--producers`,
`--consumers`, `--size`, `--confirm` (the window of unconfirmed messages), `--qos`, `--rate`,
`--multi-ack-every`, `--queue-pattern` with `--queue-pattern-from`/`--queue-pattern-to` (many
queues; producers and consumers are spread over them in turn), `--exchange` and `--type`.

Every process connects first and waits at a barrier, so all start together and the
`--duration` seconds are the same for all. Rates count what happened inside those seconds:
confirmed and consumed while publishing. After them, consumers drain until every queue stayed
quiet for `--drain-idle-s`, and the report says how many confirmed messages never arrived in a
queue they were routed to (lost: must be 0) or arrived twice. It prints numbers and asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
import typing
import urllib.parse
from dataclasses import dataclass, field

from warrenmq.cluster import lean

__all__ = ["add_arguments", "run"]

PROGRESS_S = 1.0
COUNTERS_S = 0.1  # how often a process adds its progress to the shared counters
READY_TIMEOUT_S = 60.0  # for every process to connect before the start
DRAIN_TIMEOUT_S = 120.0  # consumers give up draining this long after the publishing ends
RECONNECT_PAUSE_S = 0.2


NUMBERS = (  # (flag, type, default, help): PerfTest's numeric flags, and a few of our own
    ("--queue-pattern-from", int, 1, "the first number of --queue-pattern"),
    ("--queue-pattern-to", int, 1, "the last number of --queue-pattern"),
    ("--producers", int, 1, "producer processes"),
    ("--consumers", int, 1, "consumer processes"),
    ("--size", int, 1024, f"body bytes (at least {lean.MIN_SIZE_BYTES})"),
    ("--confirm", int, 1000, "publisher confirms, at most this many unconfirmed each (0: off)"),
    ("--qos", int, 1000, "consumer prefetch (0: unlimited)"),
    ("--multi-ack-every", int, 0, "one multiple ack for this many messages (0: an ack each)"),
    ("--rate", float, 0.0, "messages per second per producer (0: unlimited)"),
    ("--duration", float, 10.0, "publishing seconds"),
    ("--drain-idle-s", float, 3.0, "consumers stop after this long with nothing to receive"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        dest="urls",
        metavar="AMQP_URL",
        help="a node to use; repeat for several (default amqp://guest:guest@127.0.0.1:5672/)",
    )
    parser.add_argument(
        "--publish-url", action="append", dest="publish_urls", help="producers use these, in turn"
    )
    parser.add_argument(
        "--consume-url", action="append", dest="consume_urls", help="consumers use these, in turn"
    )
    parser.add_argument(
        "--protocol",
        choices=["amqp0-9-1", "amqp1.0"],
        default="amqp0-9-1",
        help="what producers and consumers speak (queues are declared over 0-9-1)",
    )
    parser.add_argument("--queue", default="warren-bench")
    parser.add_argument(
        "--queue-pattern", help="queues named by this pattern and a number, e.g. 'bench-%%d'"
    )
    parser.add_argument("--queue-type", choices=["quorum", "classic"], default="quorum")
    parser.add_argument(
        "--exchange", default="", help="publish here; queues are bound with their names"
    )
    parser.add_argument("--type", choices=["direct", "fanout", "topic"], default="direct")
    parser.add_argument("--persistent", action="store_true", help="delivery_mode 2")
    for flag, kind, default, explained in NUMBERS:
        parser.add_argument(flag, type=kind, default=default, help=explained)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


@dataclass
class _ProducerResult:
    queues: list[str]  # where its messages are routed
    published: int = 0
    confirmed_at_deadline: int = 0
    confirms: lean.Confirms = field(default_factory=lean.Confirms)
    errors: int = 0
    cpu_s: float = 0.0  # the process's CPU time from the start, user and system
    cpu_from_s: float = 0.0  # its CPU time at the start (after imports and connecting)


@dataclass
class _ConsumerResult:
    queue: str
    received_at_deadline: int = 0
    arrivals: lean.Arrivals = field(default_factory=lean.Arrivals)
    errors: int = 0
    cpu_s: float = 0.0
    cpu_from_s: float = 0.0


class _Counters(typing.NamedTuple):
    published: typing.Any  # multiprocessing.Value("q")
    confirmed: typing.Any
    consumed: typing.Any
    ready: typing.Any  # processes connected and waiting for the start
    start_s: typing.Any  # multiprocessing.Value("d"): the wall-clock start, 0 until known
    producers_done: typing.Any


def _add(counter: typing.Any, amount: int) -> None:
    with counter.get_lock():
        counter.value += amount


def _queues(options: dict[str, typing.Any]) -> list[str]:
    if not options["queue_pattern"]:
        return [options["queue"]]
    numbers = range(options["queue_pattern_from"], options["queue_pattern_to"] + 1)
    return [options["queue_pattern"] % number for number in numbers]


def _routes(index: int, options: dict[str, typing.Any]) -> list[str]:
    """The queues producer `index`'s messages reach: its own in turn, or all of a fanout."""
    queues = _queues(options)
    if options["exchange"] and options["type"] == "fanout":
        return queues
    return [queues[index % len(queues)]]


def _endpoint(url: str) -> tuple[str, int, str, str, str]:
    """amqp://user:password@host:port/vhost as the lean client's host, port, user, password
    and virtual host, as pika reads it: percent-escapes decoded, guest by default, and an empty
    vhost is the default one, "/" (`amqp://host/%2F` names it too)."""
    parts = urllib.parse.urlsplit(url)
    return (
        parts.hostname or "127.0.0.1",
        parts.port or 5672,
        urllib.parse.unquote(parts.username or "guest"),
        urllib.parse.unquote(parts.password or "guest"),
        urllib.parse.unquote(parts.path[1:]) or "/",
    )


def _connect(
    urls: list[str], attempt: int, deadline_s: float, result: _ProducerResult | _ConsumerResult
) -> tuple[lean.Connection | None, int]:
    """The next node in turn that answers, and the attempt counter; None past the deadline."""
    while time.monotonic() < deadline_s:
        try:
            return lean.Connection(*_endpoint(urls[attempt % len(urls)])), attempt
        except (OSError, RuntimeError, ConnectionError):
            result.errors += 1
            attempt += 1
            time.sleep(RECONNECT_PAUSE_S)
    return None, attempt


def _await_start(
    counters: _Counters, duration_s: float, result: _ProducerResult | _ConsumerResult
) -> float:
    """Wait at the barrier; the monotonic end of the publishing seconds."""
    _add(counters.ready, 1)
    while not counters.start_s.value:
        time.sleep(0.01)
    time.sleep(max(0.0, counters.start_s.value - time.time()))
    result.cpu_from_s = time.process_time()
    return float(time.monotonic() + duration_s - (time.time() - counters.start_s.value))


class _Progress:
    """Adds a process's counts to the shared counters, at most every COUNTERS_S."""

    def __init__(self, *counters: typing.Any) -> None:
        self.counters = counters
        self.shown = [0] * len(counters)
        self.next_s = 0.0

    def __call__(self, *values: int, force: bool = False) -> None:
        now_s = time.monotonic()
        if now_s < self.next_s and not force:
            return
        self.next_s = now_s + COUNTERS_S
        for position, (counter, value) in enumerate(zip(self.counters, values, strict=True)):
            _add(counter, value - self.shown[position])
            self.shown[position] = value


# --- the processes -------------------------------------------------------------------------


def _produce(
    index: int, options: dict[str, typing.Any], counters: _Counters, result: _ProducerResult
) -> None:
    urls = options["publish_urls"]
    connection, attempt = _connect(urls, index, time.monotonic() + READY_TIMEOUT_S, result)
    deadline_s = _await_start(counters, options["duration"], result)
    progress = _Progress(counters.published, counters.confirmed)
    confirmed = 0  # by the connections before this one
    while connection is not None:
        publisher = lean.Publisher(
            connection,
            options["exchange"],
            result.queues[0],
            options["size"],
            options["confirm"],
            first_id=(index << 40) | result.published,
            persistent=options["persistent"],
            confirms=result.confirms,
        )

        def tick(publisher: lean.Publisher = publisher, before: int = confirmed) -> None:
            progress(result.published + publisher.sent, before + publisher.confirmed)

        try:
            publisher.run(deadline_s, rate=options["rate"], tick=tick)
        except (OSError, RuntimeError, ConnectionError):
            result.errors += 1  # its unconfirmed messages are not counted; go on elsewhere
            attempt += 1
        result.published += publisher.sent
        result.confirmed_at_deadline += publisher.confirmed_at_deadline
        confirmed += publisher.confirmed
        connection.close()
        connection, attempt = _connect(urls, attempt, deadline_s, result)
    progress(result.published, confirmed, force=True)


def _consume(
    index: int, options: dict[str, typing.Any], counters: _Counters, result: _ConsumerResult
) -> None:
    urls = options["consume_urls"]
    connection, attempt = _connect(urls, index, time.monotonic() + READY_TIMEOUT_S, result)
    deadline_s = _await_start(counters, options["duration"], result)
    give_up_s = deadline_s + DRAIN_TIMEOUT_S
    progress = _Progress(counters.consumed)
    quiet_since = [time.monotonic(), 0]  # when the count last changed, and the count

    def stop() -> bool:
        now_s = time.monotonic()
        received = len(result.arrivals.ids)
        progress(received)
        if received != quiet_since[1]:
            quiet_since[:] = [now_s, received]
        drained = counters.producers_done.value and now_s - quiet_since[0] > options["drain_idle_s"]
        return bool(drained) or now_s > give_up_s

    while connection is not None:
        consumer = lean.Consumer(
            connection,
            result.queue,
            options["qos"],
            options["multi_ack_every"],
            arrivals=result.arrivals,
        )
        try:
            consumer.run(stop, deadline_s=deadline_s)
        except (OSError, RuntimeError, ConnectionError):
            result.errors += 1
            attempt += 1
        result.received_at_deadline += consumer.received_at_deadline
        connection.close()
        if stop():
            break
        connection, attempt = _connect(urls, attempt, give_up_s, result)
    progress(len(result.arrivals.ids), force=True)


def _worker(
    role: str,
    index: int,
    options: dict[str, typing.Any],
    counters: _Counters,
    results: multiprocessing.Queue[typing.Any],
) -> None:
    """One producer or consumer process: run it, hand its result back to the parent."""
    queues = _queues(options)
    result: _ProducerResult | _ConsumerResult
    if role == "producer":
        result = _ProducerResult(_routes(index, options))
    else:
        result = _ConsumerResult(queues[index % len(queues)])
    if options["protocol"] == "amqp1.0":
        from warrenmq.cluster import bench_amqp10  # proton is loaded by the 1.0 runs only

        options = {**options, "deadline_s": _await_start(counters, options["duration"], result)}
        if isinstance(result, _ProducerResult):
            bench_amqp10.produce(index, options, counters, result)
        else:
            bench_amqp10.consume(index, options, counters, result)
    elif isinstance(result, _ProducerResult):
        _produce(index, options, counters, result)
    else:
        _consume(index, options, counters, result)
    result.cpu_s = time.process_time() - result.cpu_from_s
    results.put((role, result))


# --- the parent ----------------------------------------------------------------------------


def _declare(options: dict[str, typing.Any]) -> None:
    """The queues, empty, and the exchange with a binding for each."""
    connection = lean.Connection(*_endpoint(options["publish_urls"][0]))
    try:
        if options["exchange"]:
            connection.declare_exchange(options["exchange"], options["type"])
        for queue in _queues(options):
            connection.declare_queue(queue, options["queue_type"])
            connection.purge(queue)
            if options["exchange"]:
                connection.bind(queue, options["exchange"], queue)
    finally:
        connection.close()


def _left_in_queues(options: dict[str, typing.Any]) -> int | None:
    """The messages the queues still hold after the drain (unacked ones went back when their
    consumers closed): a confirmed message counted lost but left here was not lost by the
    broker, its consumer gave up waiting. None if no node answers."""
    for url in options["consume_urls"]:
        try:
            connection = lean.Connection(*_endpoint(url))
        except (OSError, RuntimeError, ConnectionError):
            continue
        try:
            return sum(connection.message_count(queue) for queue in _queues(options))
        except (OSError, RuntimeError, ConnectionError):
            continue
        finally:
            connection.close()
    return None


def run(arguments: argparse.Namespace) -> int:
    problem = _problem(arguments)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    urls = arguments.urls or ["amqp://guest:guest@127.0.0.1:5672/"]
    options = dict(vars(arguments))
    options["publish_urls"] = arguments.publish_urls or urls
    options["consume_urls"] = arguments.consume_urls or urls
    _declare(options)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter for each process
    counters = _Counters(
        published=context.Value("q", 0),
        confirmed=context.Value("q", 0),
        consumed=context.Value("q", 0),
        ready=context.Value("q", 0),
        start_s=context.Value("d", 0.0),
        producers_done=context.Value("q", 0),
    )
    results: multiprocessing.Queue[typing.Any] = context.Queue()
    processes = {
        role: [
            context.Process(target=_worker, args=(role, index, options, counters, results))
            for index in range(count)
        ]
        for role, count in (("consumer", arguments.consumers), ("producer", arguments.producers))
    }
    everyone = processes["consumer"] + processes["producer"]
    for process in everyone:
        process.start()
    ready_by_s = time.monotonic() + READY_TIMEOUT_S
    while counters.ready.value < len(everyone) and time.monotonic() < ready_by_s:
        time.sleep(0.05)
    counters.start_s.value = time.time() + 0.2
    collected = _collect(arguments, processes, counters, results)
    report = _report(arguments, collected)
    report["left_in_queues"] = _left_in_queues(options)
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print()
        _print_report(report)
    return 0 if report["lost"] == 0 else 1


def _problem(arguments: argparse.Namespace) -> str:
    if arguments.size < lean.MIN_SIZE_BYTES:
        return f"--size must be at least {lean.MIN_SIZE_BYTES} bytes"
    if arguments.queue_pattern and arguments.queue_pattern_to < arguments.queue_pattern_from:
        return "--queue-pattern-to must not be below --queue-pattern-from"
    if arguments.protocol == "amqp1.0" and (arguments.exchange or arguments.queue_pattern):
        return "--protocol amqp1.0 publishes to one queue: no --exchange or --queue-pattern"
    return ""


def _collect(
    arguments: argparse.Namespace,
    processes: dict[str, list[typing.Any]],
    counters: _Counters,
    results: multiprocessing.Queue[typing.Any],
) -> list[tuple[str, typing.Any]]:
    """Every process's result, printing progress each second meanwhile."""
    everyone = processes["consumer"] + processes["producer"]
    collected: list[tuple[str, typing.Any]] = []
    last = (0, 0, 0, time.monotonic())
    while len(collected) < len(everyone):
        time.sleep(PROGRESS_S / 10)
        while not results.empty():
            collected.append(results.get())
        if not any(process.is_alive() for process in processes["producer"]):
            counters.producers_done.value = 1
        now_s = time.monotonic()
        if now_s - last[3] >= PROGRESS_S and not arguments.json:
            values = (counters.published.value, counters.confirmed.value, counters.consumed.value)
            elapsed_s = now_s - last[3]
            rates = [
                (value - before) / elapsed_s for value, before in zip(values, last[:3], strict=True)
            ]
            print(
                f"\rpublished {rates[0]:8.0f}/s  confirmed {rates[1]:8.0f}/s  consumed "
                f"{rates[2]:8.0f}/s",
                end="",
                flush=True,
            )
            last = (*values, now_s)
        if not any(process.is_alive() for process in everyone) and results.empty():
            break
    for process in everyone:
        process.join(timeout=10)
    return collected


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


WORKLOAD_KEYS = (
    "protocol",
    "queue_type",
    "producers",
    "consumers",
    "size",
    "confirm",
    "persistent",
    "qos",
    "multi_ack_every",
    "rate",
    "duration",
    "exchange",
    "type",
)


def _report(
    arguments: argparse.Namespace, collected: list[tuple[str, typing.Any]]
) -> dict[str, typing.Any]:
    producers = [result for kind, result in collected if kind == "producer"]
    consumers = [result for kind, result in collected if kind == "consumer"]
    lost, duplicated = _losses(producers, consumers)
    duration_s = arguments.duration
    confirmed = sum(len(result.confirms.ids) for result in producers)
    consumed = sum(len(result.arrivals.ids) for result in consumers)
    receiving = [result.arrivals for result in consumers if result.arrivals.first_s]
    consuming_s = (
        max(arrivals.last_s for arrivals in receiving)
        - min(arrivals.first_s for arrivals in receiving)
        if receiving
        else 0.0
    )
    # a client near 100% of a core per process measures itself, not the broker
    client_cpu = {
        role: [round(100 * result.cpu_s / duration_s, 1) for result in group]
        for role, group in (("producers", producers), ("consumers", consumers))
    }
    return {
        "workload": {
            "queues": len(_queues(vars(arguments))),
            **{name: getattr(arguments, name) for name in WORKLOAD_KEYS},
        },
        "published_per_s": round(sum(result.published for result in producers) / duration_s, 1),
        "confirmed_per_s": round(
            sum(result.confirmed_at_deadline for result in producers) / duration_s, 1
        ),
        "consumed_while_publishing_per_s": round(
            sum(result.received_at_deadline for result in consumers) / duration_s, 1
        ),
        "consumed_per_s": round(consumed / consuming_s, 1) if consuming_s else 0.0,
        "confirm_latency_ms": _percentiles(
            [value for result in producers for value in result.confirms.latencies_ms]
        ),
        "end_to_end_latency_ms": _percentiles(
            [value for result in consumers for value in result.arrivals.latencies_ms]
        ),
        "published": sum(result.published for result in producers),
        "confirmed": confirmed,
        "consumed": consumed,
        "lost": lost,
        "duplicated": duplicated,
        "client_errors": sum(result.errors for result in producers + consumers),
        "client_cpu_percent": client_cpu,
        "client_cpu_us_per_message": {
            "producers": round(1e6 * sum(r.cpu_s for r in producers) / max(1, confirmed), 2),
            "consumers": round(1e6 * sum(r.cpu_s for r in consumers) / max(1, consumed), 2),
        },
    }


def _losses(producers: list[_ProducerResult], consumers: list[_ConsumerResult]) -> tuple[int, int]:
    """Confirmed messages that never reached a queue they were routed to, and arrivals of a
    message in one queue after its first."""
    received: dict[str, dict[int, int]] = {}
    for consumer in consumers:
        counts = received.setdefault(consumer.queue, {})
        for message_id in consumer.arrivals.ids:
            counts[message_id] = counts.get(message_id, 0) + 1
    lost = 0
    for producer in producers:
        for queue in producer.queues:
            arrived = received.get(queue, {})
            lost += sum(1 for message_id in producer.confirms.ids if message_id not in arrived)
    duplicated = sum(n - 1 for counts in received.values() for n in counts.values() if n > 1)
    return lost, duplicated


def _print_report(report: dict[str, typing.Any]) -> None:
    print(f"workload: {report['workload']}")
    print(
        f"published {report['published_per_s']}/s, confirmed {report['confirmed_per_s']}/s, "
        f"consumed while publishing {report['consumed_while_publishing_per_s']}/s, "
        f"consumed overall {report['consumed_per_s']}/s"
    )
    for name in ("confirm_latency_ms", "end_to_end_latency_ms"):
        print(f"{name}: {report[name]}")
    print(
        f"published {report['published']}, confirmed {report['confirmed']}, consumed "
        f"{report['consumed']}, lost {report['lost']} (left in the queues "
        f"{report['left_in_queues']}), duplicated {report['duplicated']}, "
        f"client errors {report['client_errors']}"
    )
    print(f"client CPU (% of one core over the publishing seconds): {report['client_cpu_percent']}")
    print(f"client CPU per message (µs): {report['client_cpu_us_per_message']}")
