"""Throughput, CPU, memory and latency of the ingester against real RabbitMQ and VictoriaMetrics.

Run it from the repository root with ``bash bench/run.sh`` (which prepares
.venv first) or ``.venv/bin/python bench/run.py``; docs/benchmarks.md
explains the method and the results. Every server it talks to is on
loopback: the machine's RabbitMQ on 127.0.0.1:5672 (guest/guest) and a
VictoriaMetrics that it starts for each measurement with a temporary data
folder. Every queue it declares is deleted again.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH_FOLDER = Path(__file__).resolve().parent
REPOSITORY_ROOT = BENCH_FOLDER.parent
# The ingester and the test helpers (tests/services.py) are imported from the repository.
sys.path[:0] = [str(REPOSITORY_ROOT), str(REPOSITORY_ROOT / "tests")]

import pika
from services import (
    LOOPBACK_HOST,
    RABBITMQ_PASSWORD,
    RABBITMQ_PORT,
    RABBITMQ_USER,
    Broker,
    IngesterProcess,
    VictoriaMetrics,
    ensure_rabbitmq,
    unique_queue_name,
)

from bench import measure, report, workload
from telemetry_ingester.settings import MAX_PREFETCH_COUNT, Settings

# The consumers measured: bench/ack_only_consumer.py, bench/one_write_per_message.py,
# and the ingester at its default settings or with PREFETCH_COUNT set.
CEILING = "ceiling"
ONE_WRITE = "one-write"
DEFAULTS = "ingester-defaults"
TUNED = "ingester"

CEILING_PREFETCH = 1000
ONE_WRITE_PREFETCH = 20
# The ingester's own default, so the benchmark follows a change of it.
INGESTER_DEFAULT_PREFETCH = Settings.prefetch_count

# How often the benchmark checks the queue depth and the store while a
# consumer drains. Each store check forces a flush, so it polls more slowly.
QUEUE_POLL_SECONDS = 0.02
STORE_POLL_SECONDS = 0.05
LOG_POLL_SECONDS = 0.005
# Time allowed for a consumer to start, and for a drain: a fixed part plus a
# part per message that allows for 200 messages per second.
START_TIMEOUT_SECONDS = 30.0
DRAIN_TIMEOUT_BASE_SECONDS = 120.0
DRAIN_TIMEOUT_SECONDS_PER_MESSAGE = 1 / 200
# Time allowed after the last paced publish for the last write to arrive,
# and then for its points to show up in an export.
LATENCY_SETTLE_TIMEOUT_SECONDS = 60.0
STORE_VISIBLE_TIMEOUT_SECONDS = 10.0

# Before each measurement the benchmark waits until the whole machine is
# busy less than this many cores over the window, or until the timeout.
# After a fill RabbitMQ keeps writing its message store for a while, and
# other work on the machine skews every number.
QUIET_MACHINE_CORES = 0.15
QUIET_WINDOW_SECONDS = 1.0
QUIET_TIMEOUT_SECONDS = 120.0

# Log lines that mean a consumer has subscribed to its queue.
INGESTER_READY = "Connected to RabbitMQ at"
SCRIPT_READY = "consuming"


class BenchScript(IngesterProcess):
    """A script of bench/, started like the ingester: filtered environment, own log, own group."""

    def __init__(self, script: str, env: dict[str, str], log_dir: Path, args: list[str]) -> None:
        super().__init__(env, log_dir, args)
        self.script = script


@dataclasses.dataclass
class DrainResult:
    """One drain of a pre-filled queue by one consumer."""

    design: str
    prefetch: int
    messages: int
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    # Messages whose battery and pose points are both in the store, or None
    # for the ceiling, which writes nothing.
    stored: int | None
    # Messages in the queue after the consumer stopped: unacked ones come back.
    left_in_queue: int
    # CPU time of RabbitMQ, of the store (None for the ceiling) and of every
    # other process on the machine during the drain.
    broker_cpu_seconds: float = 0.0
    store_cpu_seconds: float | None = None
    other_cpu_seconds: float = 0.0
    # Rates of every repeated run of this consumer. This result is the median run.
    run_rates: list[float] = dataclasses.field(default_factory=list)

    @property
    def other_cores(self) -> float:
        return self.other_cpu_seconds / self.seconds

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_per_100k(self) -> float:
        return self.cpu_seconds * 100_000 / self.messages


@dataclasses.dataclass
class LatencyResult:
    """A run at a steady publish rate, with publish-to-stored latency per message."""

    target_rate: float
    prefetch: int
    # Whether the ingester ran with its default settings (PREFETCH_COUNT unset).
    defaults: bool
    published: int
    publish_seconds: float
    max_publish_lag_seconds: float
    recorded: int
    stored: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_share: float
    peak_rss_bytes: int
    # Average load of processes other than the benchmark's own and RabbitMQ.
    other_cores: float


class CpuAccount:
    """CPU time used from creation until ``used()``: by RabbitMQ, the store and everything else.

    On a machine with few cores the broker and the store compete with the
    consumer, so their share explains part of every rate. "Other" is the
    machine's busy time less the consumer, RabbitMQ, the store and this
    benchmark process: load from anything else on the machine, which makes
    a measurement unreliable.
    """

    def __init__(
        self, consumer_pid: int, store: VictoriaMetrics | None, helper_pid: int | None = None
    ) -> None:
        self._pids = (
            consumer_pid,
            measure.rabbitmq_pid(),
            store.pid if store is not None else None,
            helper_pid,
        )
        self._start = self._read()

    def _read(self) -> tuple[float, ...]:
        consumer, *others = self._pids
        processes = (
            measure.tree_cpu_seconds(consumer),
            *(measure.cpu_seconds(pid) if pid is not None else 0.0 for pid in others),
        )
        return (*processes, measure.own_cpu_seconds(), measure.machine_busy_seconds())

    def used(self) -> dict[str, float]:
        """Return CPU seconds since creation by consumer, broker, store, helper, bench and other.

        The helper is a process of the benchmark such as the recording proxy.
        """
        consumer, broker, store, helper, bench, machine = (
            end - start for end, start in zip(self._read(), self._start)
        )
        other = max(0.0, machine - consumer - broker - store - helper - bench)
        return {
            "consumer": consumer,
            "broker": broker,
            "store": store,
            "helper": helper,
            "bench": bench,
            "other": other,
        }


class Bench:
    """Runs the measurements; each one gets a fresh queue and, if it writes, a fresh store."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.parameters = pika.ConnectionParameters(
            host=LOOPBACK_HOST,
            port=RABBITMQ_PORT,
            credentials=pika.PlainCredentials(RABBITMQ_USER, RABBITMQ_PASSWORD),
            heartbeat=0,
        )

    # -- drains of a pre-filled queue ---------------------------------------

    def drain(self, design: str, prefetch: int, messages: int) -> DrainResult:
        label = f"{design} prefetch {prefetch}, {messages:,} messages"
        print(f"== {label}: filling the queue", flush=True)
        broker = Broker()
        queue = unique_queue_name("bench")
        try:
            broker.declare_queue(queue)
            started = time.monotonic()
            self._fill(queue, messages)
            fill_seconds = time.monotonic() - started
            busy = self._wait_for_quiet_machine()
            print(
                f"   filled in {fill_seconds:.1f} s ({messages / fill_seconds:,.0f} messages/s); "
                f"machine busy {busy:.2f} cores before the drain; draining",
                flush=True,
            )
            with tempfile.TemporaryDirectory(dir=self.workdir) as data_dir:
                result = self._drain_filled(broker, queue, design, prefetch, messages, Path(data_dir))
        finally:
            broker.delete(queue)
            broker.delete(queue + ".dead")
            broker.close()
        print(
            f"   CPU s in {result.seconds:.1f} s: consumer {result.cpu_seconds:.1f}, "
            f"RabbitMQ {result.broker_cpu_seconds:.1f}, store {result.store_cpu_seconds or 0:.1f}, "
            f"other processes {result.other_cpu_seconds:.1f}",
            flush=True,
        )
        print(
            f"   {result.rate:,.0f} messages/s, {result.cpu_per_100k:.1f} CPU s per 100k, "
            f"peak RSS {result.peak_rss_bytes / 1e6:.1f} MB, stored {result.stored}, "
            f"left in queue {result.left_in_queue}",
            flush=True,
        )
        return result

    def _wait_for_quiet_machine(self) -> float:
        """Wait until RabbitMQ's disk work from the fill, and any other load, has died down."""
        busy = measure.wait_for_quiet_machine(
            QUIET_MACHINE_CORES, QUIET_WINDOW_SECONDS, QUIET_TIMEOUT_SECONDS
        )
        if busy >= QUIET_MACHINE_CORES:
            print(
                f"   WARNING: the machine stayed busy ({busy:.2f} cores) for "
                f"{QUIET_TIMEOUT_SECONDS:.0f} s; measuring anyway",
                flush=True,
            )
        return busy

    def _fill(self, queue: str, messages: int) -> None:
        robots = workload.bench_fleet(self.args.bots, "bench")
        bodies = workload.backlog_bodies(robots, messages, workload.backlog_start_ns(messages))
        confirmed = workload.ConfirmedFill(self.parameters, queue, bodies, messages).run()
        if confirmed != messages:
            raise RuntimeError(f"The broker confirmed {confirmed} of {messages} messages")

    def _drain_filled(
        self,
        broker: Broker,
        queue: str,
        design: str,
        prefetch: int,
        messages: int,
        data_dir: Path,
    ) -> DrainResult:
        store = None
        if design != CEILING:
            store = VictoriaMetrics(data_dir / "victoria")
            store.start()
        try:
            consumer = self._consumer(design, queue, prefetch, messages, store, data_dir)
            consumer.start()
            try:
                return self._measure_drain(broker, queue, design, prefetch, messages, consumer, store)
            except BaseException:
                print(f"   consumer log:\n{consumer.log_text()[-3000:]}", file=sys.stderr)
                raise
            finally:
                consumer.stop()
        finally:
            if store is not None:
                store.stop()

    def _consumer(
        self,
        design: str,
        queue: str,
        prefetch: int,
        messages: int,
        store: VictoriaMetrics | None,
        data_dir: Path,
    ) -> IngesterProcess:
        if design == CEILING:
            args = [queue, "--prefetch", str(prefetch), "--expect", str(messages)]
            return BenchScript("bench/ack_only_consumer.py", {}, data_dir, args)
        env = store_env(store.url)
        if design == ONE_WRITE:
            env["RABBITMQ_HOST"] = LOOPBACK_HOST
            return BenchScript("bench/one_write_per_message.py", env, data_dir, [queue])
        tuned_prefetch = prefetch if design == TUNED else None
        return IngesterProcess(ingester_env(queue, store.url, tuned_prefetch), data_dir)

    def _measure_drain(
        self,
        broker: Broker,
        queue: str,
        design: str,
        prefetch: int,
        messages: int,
        consumer: IngesterProcess,
        store: VictoriaMetrics | None,
    ) -> DrainResult:
        ready_line = INGESTER_READY if design in (DEFAULTS, TUNED) else SCRIPT_READY
        started = wait_for_line(consumer, ready_line, START_TIMEOUT_SECONDS)
        account = CpuAccount(consumer.pid, store)

        timeout = DRAIN_TIMEOUT_BASE_SECONDS + messages * DRAIN_TIMEOUT_SECONDS_PER_MESSAGE
        measure.poll(
            lambda: broker.depth(queue) == 0, timeout, QUEUE_POLL_SECONDS, f"queue {queue} to empty"
        )
        window = store_window_seconds(messages)
        if store is None:
            done_line = f"acked {messages} messages"
            finished = wait_for_line(consumer, done_line, timeout)
        else:
            finished = measure.poll(
                lambda: measure.count_samples(store, "battery_percentage", window) >= messages
                and measure.count_samples(store, "pose_x", window) >= messages,
                timeout,
                STORE_POLL_SECONDS,
                f"{messages} messages in the store",
            )
        cpu = account.used()
        peak_rss = measure.peak_rss_bytes(consumer.pid)

        consumer.stop()
        stored = None
        if store is not None:
            stored = min(
                measure.count_samples(store, "battery_percentage", window),
                measure.count_samples(store, "pose_x", window),
            )
        return DrainResult(
            design=design,
            prefetch=prefetch,
            messages=messages,
            seconds=finished - started,
            cpu_seconds=cpu["consumer"],
            peak_rss_bytes=peak_rss,
            stored=stored,
            left_in_queue=broker.depth(queue),
            broker_cpu_seconds=cpu["broker"],
            store_cpu_seconds=cpu["store"] if store is not None else None,
            other_cpu_seconds=cpu["other"],
        )

    # -- latency at a steady rate -------------------------------------------

    def latency(self) -> LatencyResult:
        rate = self.args.latency_rate
        seconds = self.args.latency_seconds
        prefetch = self.args.latency_prefetch
        settings = "default settings" if prefetch is None else f"PREFETCH_COUNT {prefetch}"
        print(f"== latency at {rate:g} messages/s for {seconds:g} s, {settings}", flush=True)
        broker = Broker()
        queue = unique_queue_name("bench-latency")
        try:
            broker.declare_queue(queue)
            with tempfile.TemporaryDirectory(dir=self.workdir) as data_dir:
                result = self._latency_run(queue, Path(data_dir))
        finally:
            broker.delete(queue)
            broker.delete(queue + ".dead")
            broker.close()
        print(
            f"   published {result.published} in {result.publish_seconds:.1f} s; "
            f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, max {result.max_ms:.1f} ms; "
            f"ingester CPU {result.cpu_share:.0%} of a core, other processes "
            f"{result.other_cores:.2f} cores",
            flush=True,
        )
        return result

    def _latency_run(self, queue: str, data_dir: Path) -> LatencyResult:
        records_path = data_dir / "writes.txt"
        with VictoriaMetrics(data_dir / "victoria") as store:
            proxy = BenchScript(
                "bench/recording_proxy.py", {}, data_dir, [store.url, str(records_path)]
            )
            with proxy:
                wait_for_line(proxy, "listening", START_TIMEOUT_SECONDS)
                port = int(proxy.log_text().split("listening", 1)[1].split()[0])
                proxy_url = f"http://{LOOPBACK_HOST}:{port}"
                ingester = IngesterProcess(
                    ingester_env(queue, proxy_url, self.args.latency_prefetch), data_dir
                )
                with ingester:
                    wait_for_line(ingester, INGESTER_READY, START_TIMEOUT_SECONDS)
                    busy = self._wait_for_quiet_machine()
                    print(f"   machine busy {busy:.2f} cores before publishing", flush=True)
                    account = CpuAccount(ingester.pid, store, proxy.pid)
                    paced = self._publish_steadily(queue)
                    cpu = account.used()
                    peak_rss = measure.peak_rss_bytes(ingester.pid)
                    measure.poll(
                        lambda: recorded_count(records_path) >= paced.published,
                        LATENCY_SETTLE_TIMEOUT_SECONDS,
                        STORE_POLL_SECONDS,
                        f"{paced.published} messages to pass the proxy",
                    )
            stored = self._stored_after_latency_run(store, paced.published)

        latencies = sorted(read_latencies_ms(records_path))
        return LatencyResult(
            target_rate=self.args.latency_rate,
            prefetch=self.args.latency_prefetch or INGESTER_DEFAULT_PREFETCH,
            defaults=self.args.latency_prefetch is None,
            published=paced.published,
            publish_seconds=paced.seconds,
            max_publish_lag_seconds=paced.max_lag_seconds,
            recorded=len(latencies),
            stored=stored,
            p50_ms=measure.percentile(latencies, 0.50),
            p99_ms=measure.percentile(latencies, 0.99),
            max_ms=latencies[-1],
            cpu_share=cpu["consumer"] / paced.seconds,
            peak_rss_bytes=peak_rss,
            other_cores=cpu["other"] / paced.seconds,
        )

    @staticmethod
    def _stored_after_latency_run(store: VictoriaMetrics, published: int) -> int:
        """Return how many messages have both points in the store.

        The newest samples can take a moment to show up in an export even
        after a forced flush, so the count is repeated for a few seconds.
        """

        def stored() -> int:
            return min(
                measure.export_count(store, "battery_percentage"),
                measure.export_count(store, "pose_x"),
            )

        try:
            measure.poll(
                lambda: stored() >= published,
                STORE_VISIBLE_TIMEOUT_SECONDS,
                STORE_POLL_SECONDS * 4,
                f"{published} messages in the store",
            )
        except TimeoutError:
            pass
        return stored()

    def _publish_steadily(self, queue: str) -> workload.PacedRun:
        robots = workload.bench_fleet(self.args.bots, "latency")
        connection = pika.BlockingConnection(self.parameters)
        try:
            channel = connection.channel()
            return workload.publish_paced(
                channel,
                connection,
                queue,
                robots,
                self.args.latency_rate,
                self.args.latency_seconds,
            )
        finally:
            connection.close()


def store_env(store_url: str) -> dict[str, str]:
    """Return the InfluxDB variables that point a writer at the benchmark's store."""
    return {
        "INFLUX_URL": store_url,
        "INFLUX_TOKEN": "bench-token",
        "INFLUX_ORG": "keti",
        "INFLUX_BUCKET": "turtlebot",
    }


def ingester_env(queue: str, store_url: str, prefetch: int | None) -> dict[str, str]:
    """Return the ingester's environment; PREFETCH_COUNT is left unset when ``prefetch`` is None."""
    env = store_env(store_url)
    env.update(
        {
            "RABBITMQ_HOST": LOOPBACK_HOST,
            "RABBITMQ_QUEUE": queue,
            "HTTP_PORT": "0",
            "LOG_LEVEL": "INFO",
        }
    )
    if prefetch is not None:
        env["PREFETCH_COUNT"] = str(prefetch)
    return env


def store_window_seconds(messages: int) -> int:
    """Return a query window that covers every ``ts`` of a backlog of ``messages``."""
    return int(messages * workload.NANOSECONDS_PER_MILLISECOND / 1e9) + 3 * 3600


def wait_for_line(process: IngesterProcess, text: str, timeout: float) -> float:
    """Wait until ``text`` appears in the process's output and return the monotonic time.

    Raises RuntimeError with the output if the process exits first.
    """

    def logged() -> bool:
        if text in process.log_text():
            return True
        if process.returncode is not None:
            raise RuntimeError(
                f"{process.script} exited with code {process.returncode} before printing "
                f"{text!r}:\n{process.log_text()[-3000:]}"
            )
        return False

    return measure.poll(logged, timeout, LOG_POLL_SECONDS, f"{text!r} from {process.script}")


def recorded_count(path: Path) -> int:
    """Return how many messages the recording proxy has seen stored so far."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    return sum(len(line.split()) - 1 for line in text.splitlines())


def read_latencies_ms(path: Path) -> list[float]:
    """Return publish-to-2xx latency in milliseconds for every message the proxy recorded."""
    latencies = []
    for line in path.read_text().splitlines():
        answered_ns, *timestamps = (int(value) for value in line.split())
        latencies.extend((answered_ns - ts) / 1e6 for ts in timestamps)
    return latencies


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=(
            "Measure the ingester against real RabbitMQ and VictoriaMetrics on loopback, "
            "print a table and write it to docs/benchmarks.md and docs/benchmarks.ko.md."
        ),
    )
    parser.add_argument(
        "--messages", type=int, default=100_000,
        help="messages in each throughput drain (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="runs of each ceiling and ingester drain; the median is reported (default: %(default)s)",
    )
    parser.add_argument(
        "--one-write-messages", type=int, default=None,
        help="messages for the one-write-per-message drain (default: the same as --messages)",
    )
    parser.add_argument(
        "--bots", type=int, default=50, help="simulated robots in the fleet (default: %(default)s)"
    )
    parser.add_argument(
        "--prefetch", default="200,500,1000,2000,5000",
        help="comma-separated PREFETCH_COUNT values to try for the tuned ingester "
        "(default: %(default)s)",
    )

    parser.add_argument(
        "--latency-rate", type=float, default=1000.0,
        help="messages per second of the latency run (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=30.0,
        help="length of the latency run in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-prefetch", type=int, default=None,
        help="PREFETCH_COUNT of the latency run (default: unset, the ingester's default)",
    )

    parser.add_argument(
        "--backlog", type=int, default=1_000_000,
        help="also drain a backlog of this many messages with default settings, for peak "
        "memory; 0 skips it (default: %(default)s)",
    )

    parser.add_argument(
        "--no-docs", action="store_true",
        help="print the results without writing them into docs/benchmarks*.md",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    return parser


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line; an invalid value exits with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)

    try:
        args.prefetch_values = [int(value) for value in args.prefetch.split(",") if value]
    except ValueError:
        parser.error(f"invalid --prefetch {args.prefetch!r}: expected numbers separated by commas")
    if args.one_write_messages is None:
        args.one_write_messages = args.messages

    for option, value in (
        ("--messages", args.messages),
        ("--repeat", args.repeat),
        ("--one-write-messages", args.one_write_messages),
        ("--bots", args.bots),
    ):
        if value < 1:
            parser.error(f"invalid {option} {value}: expected 1 or more")
    if args.backlog < 0:
        parser.error(f"invalid --backlog {args.backlog}: expected 0 (skip) or more")
    if not (args.latency_rate > 0 and args.latency_seconds > 0):
        parser.error("invalid --latency-rate or --latency-seconds: expected numbers above 0")

    prefetch_values = list(args.prefetch_values)
    if args.latency_prefetch is not None:
        prefetch_values.append(args.latency_prefetch)
    for prefetch in prefetch_values:
        if not 1 <= prefetch <= MAX_PREFETCH_COUNT:
            parser.error(f"invalid PREFETCH_COUNT {prefetch}: expected 1 to {MAX_PREFETCH_COUNT}")
    return args


def run_drains(bench: Bench, args: argparse.Namespace) -> list[DrainResult]:
    """Drain a backlog with each consumer and return one result per consumer.

    The ceiling and the ingester runs are repeated ``args.repeat`` times in
    rounds, so slow drift of the machine touches every consumer alike, and
    the run with the median rate stands for its consumer. The
    one-write-per-message drain runs once: it lasts long enough to average
    out short disturbances.
    """
    repeated = [(CEILING, CEILING_PREFETCH), (DEFAULTS, INGESTER_DEFAULT_PREFETCH)]
    repeated += [(TUNED, prefetch) for prefetch in args.prefetch_values]
    runs: dict[tuple[str, int], list[DrainResult]] = {config: [] for config in repeated}

    one_write = bench.drain(ONE_WRITE, ONE_WRITE_PREFETCH, args.one_write_messages)
    for round_number in range(1, args.repeat + 1):
        print(f"-- round {round_number} of {args.repeat}", flush=True)
        for design, prefetch in repeated:
            runs[(design, prefetch)].append(bench.drain(design, prefetch, args.messages))

    drains = [median_run(runs[repeated[0]]), one_write]
    drains += [median_run(runs[config]) for config in repeated[1:]]
    return drains


def median_run(runs: list[DrainResult]) -> DrainResult:
    """Return the run with the median rate, carrying the rates of all runs."""
    ordered = sorted(runs, key=lambda run: run.rate)
    chosen = ordered[(len(ordered) - 1) // 2]
    chosen.run_rates = [run.rate for run in runs]
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    os.chdir(REPOSITORY_ROOT)
    ensure_rabbitmq()

    with tempfile.TemporaryDirectory(prefix="ingester-bench-") as workdir:
        bench = Bench(args, Path(workdir))
        facts = measure.machine_facts(str(REPOSITORY_ROOT))
        started = time.monotonic()

        drains = run_drains(bench, args)
        latency = bench.latency()
        backlog = None
        if args.backlog:
            backlog = bench.drain(DEFAULTS, INGESTER_DEFAULT_PREFETCH, args.backlog)
        facts["runtime_minutes"] = f"{(time.monotonic() - started) / 60:.1f}"

    results = report.Results(facts, drains, latency, backlog, args.repeat)
    print()
    print(report.render(results, "en"))
    if args.json:
        measure.dump_json(args.json, results.as_dict())
    if not args.no_docs:
        for path, language in (("docs/benchmarks.md", "en"), ("docs/benchmarks.ko.md", "ko")):
            report.update_document(REPOSITORY_ROOT / path, report.render(results, language))
            print(f"Updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
