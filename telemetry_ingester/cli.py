"""The command line: ``python3 ingester.py [run|simulate|check|dead-letters] ...``.

With no command it runs the daemon, as version 0.8 did. ``--dry-run`` runs
it without writing or acking anything. The operator commands live in
``check``, ``dryrun`` and ``deadletters``; this module only parses the
arguments and hands over.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time

from .settings import MAX_PREFETCH_COUNT, Settings, SettingsError

log = logging.getLogger("telemetry_ingester")

# Exit codes.
EXIT_OK = 0
EXIT_CONFIG = 2
# A second SIGTERM or SIGINT during shutdown exits at once with 128 + SIGTERM,
# the status a shell reports for a process killed by SIGTERM.
EXIT_FORCED = 128 + signal.SIGTERM

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Defaults of the dead-letters commands: messages read at most, and dead
# letters printed by ``show``.
DEFAULT_MAX_INSPECTED = 10_000
DEFAULT_SHOW_COUNT = 10

# Every reason code the ingester writes into the x-ingester-reason header.
DEAD_LETTER_REASONS = (
    "not_utf8",
    "not_json",
    "not_object",
    "unknown_type",
    "invalid_bot",
    "invalid_ts",
    "invalid_field",
    "no_data",
    "rejected_by_store",
    "too_large",
)

SETTINGS_EPILOG = (
    "Settings come from the same environment variables as the daemon: RABBITMQ_HOST, "
    "RABBITMQ_PORT, RABBITMQ_VHOST, RABBITMQ_USER, RABBITMQ_PASS, RABBITMQ_QUEUE, "
    "DEAD_LETTER_QUEUE, INFLUX_API, INFLUX_URL, INFLUX_TOKEN, INFLUX_ORG, INFLUX_BUCKET "
    "and the others in README.md (README.ko.md in Korean). Invalid settings exit with status 2."
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        # The simulator parses its own options, --help included.
        from . import simulator

        return simulator.main(argv[1:])

    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    dry_run = getattr(args, "dry_run", False)
    limit = getattr(args, "limit", None)
    wait_seconds = getattr(args, "wait", None)
    if command != "run" and (dry_run or limit is not None or wait_seconds is not None):
        parser.error(f"--dry-run, --limit and --wait apply only to the daemon, not to {command}")
    if not dry_run and (limit is not None or wait_seconds is not None):
        parser.error("--limit and --wait apply only to --dry-run")

    if command == "check":
        from . import check

        return check.main(os.environ)
    if command == "dead-letters":
        from . import deadletters

        return deadletters.main(os.environ, args.dead_letters_command, args)

    if dry_run:
        from . import dryrun

        if wait_seconds is None:
            wait_seconds = dryrun.DEFAULT_WAIT_SECONDS
        return dryrun.main(os.environ, limit, wait_seconds)
    return run_daemon(os.environ)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingester.py",
        usage="%(prog)s [-h] [--dry-run] [--limit N] [--wait SECONDS] [COMMAND ...]",
        description=(
            "Move TurtleBot telemetry from RabbitMQ into InfluxDB. Without a command, run "
            "the ingester daemon."
        ),
        epilog=SETTINGS_EPILOG,
    )
    _add_run_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        prog="ingester.py run",
        help="run the ingester daemon (the default)",
        description="Run the ingester daemon, or with --dry-run show what it would write.",
        epilog=SETTINGS_EPILOG,
    )
    _add_run_options(run)

    simulate = commands.add_parser(
        "simulate",
        help="publish simulated fleet telemetry; see 'simulate --help'",
        add_help=False,
    )
    simulate.add_argument("simulate_args", nargs=argparse.REMAINDER)

    commands.add_parser(
        "check",
        prog="ingester.py check",
        help="check the settings against RabbitMQ and InfluxDB, writing nothing",
        description=(
            "Connect to RabbitMQ and check that the telemetry queue and the dead-letter "
            "queue exist, then check that InfluxDB responds, that the bucket exists and that "
            "the token may write to it. The write check sends an empty write request, "
            "which stores nothing. Prints one line per check (OK, FAIL or SKIP) and, for "
            "a failure, the setting to fix. Exits with 0 when no check failed, 1 when one "
            "did, and 2 when the settings are invalid."
        ),
        epilog=SETTINGS_EPILOG,
    )

    _add_dead_letter_commands(commands)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS keeps a subcommand's unset option from overwriting the same
    # option given before the subcommand name.
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=argparse.SUPPRESS,
        help=(
            "read messages, print the line protocol the ingester would write and a "
            "comment line for each message it would dead-letter, then return every "
            "message to the queue; writes nothing to InfluxDB and acks nothing"
        ),
    )
    parser.add_argument(
        "--limit",
        type=_bounded_int(1, MAX_PREFETCH_COUNT),
        default=argparse.SUPPRESS,
        metavar="N",
        help=(
            "with --dry-run: stop after N messages, 1 to %d (default: PREFETCH_COUNT, "
            "20 unless set)" % MAX_PREFETCH_COUNT
        ),
    )
    parser.add_argument(
        "--wait",
        type=_positive_seconds,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="with --dry-run: stop after this many seconds without a new message (default: 1)",
    )


def _add_dead_letter_commands(commands) -> None:
    dead_letters = commands.add_parser(
        "dead-letters",
        prog="ingester.py dead-letters",
        help="list, show, replay or purge the messages in the dead-letter queue",
        description=(
            "Inspect and settle the messages that the ingester moved to the dead-letter "
            "queue (DEAD_LETTER_QUEUE, default RABBITMQ_QUEUE + '.dead')."
        ),
        epilog=SETTINGS_EPILOG,
    )
    actions = dead_letters.add_subparsers(
        dest="dead_letters_command", metavar="ACTION", required=True
    )

    listing = actions.add_parser(
        "list",
        prog="ingester.py dead-letters list",
        help="count the dead letters by reason, with the oldest and newest of each",
        description=(
            "Count the dead letters by reason (header x-ingester-reason) and show the "
            "oldest and newest time each was dead-lettered (header "
            "x-ingester-dead-lettered-at, UTC). Reads the messages without removing "
            "them: they stay unacked while the command runs and then return to the queue."
        ),
        epilog=SETTINGS_EPILOG,
    )
    _add_max_option(listing)

    show = actions.add_parser(
        "show",
        prog="ingester.py dead-letters show",
        help="print the first dead letters with reason, detail and a body preview",
        description=(
            "Print the oldest dead letters: reason, detail, time, original queue, body "
            "size and an escaped preview of the first 200 bytes of the body. Reads the "
            "messages without removing them."
        ),
        epilog=SETTINGS_EPILOG,
    )
    show.add_argument(
        "--count",
        type=_bounded_int(1, 1_000_000),
        default=DEFAULT_SHOW_COUNT,
        metavar="N",
        help="number of dead letters to print (default: %(default)s)",
    )
    _add_reason_option(show, "print only dead letters with this reason, for example not_json")
    _add_max_option(show)

    replay = actions.add_parser(
        "replay",
        prog="ingester.py dead-letters replay",
        help="move dead letters back to the telemetry queue",
        description=(
            "Move dead letters back to the telemetry queue (RABBITMQ_QUEUE) with their "
            "original body and properties, without the x-ingester-* headers. Each message "
            "is published with a publisher confirm and acked in the dead-letter queue only "
            "after the confirm, so an interrupted replay loses nothing: at most the one "
            "message in flight ends up in both queues (at-least-once delivery). Dead "
            "letters with other reasons stay in the dead-letter queue. Asks for "
            "confirmation unless --yes is given, and refuses without --yes when stdin is "
            "not a terminal (exit status 2)."
        ),
        epilog=SETTINGS_EPILOG,
    )
    _add_reason_option(replay, "replay only dead letters with this reason, for example unknown_type")
    _add_max_option(
        replay,
        "inspect at most the N oldest dead letters, replaying those that match "
        "(default: every message in the queue when the command starts)",
        default=None,
    )
    _add_yes_option(replay, "replay without asking for confirmation")

    purge = actions.add_parser(
        "purge",
        prog="ingester.py dead-letters purge",
        help="delete every message in the dead-letter queue",
        description=(
            "Delete every ready message in the dead-letter queue and print how many were "
            "deleted. Asks for confirmation unless --yes is given, and refuses without "
            "--yes when stdin is not a terminal (exit status 2)."
        ),
        epilog=SETTINGS_EPILOG,
    )
    _add_yes_option(purge, "purge without asking for confirmation")


def _add_max_option(
    parser: argparse.ArgumentParser,
    text: str = "read at most the N oldest dead letters; the output notes when the queue "
    "contained more (default: %(default)s)",
    default: int | None = DEFAULT_MAX_INSPECTED,
) -> None:
    parser.add_argument(
        "--max", type=_bounded_int(1, 2**31 - 1), default=default, metavar="N", help=text
    )


def _add_reason_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument(
        "--reason",
        metavar="REASON",
        choices=DEAD_LETTER_REASONS,
        help=f"{text}; one of {', '.join(DEAD_LETTER_REASONS)} (default: every reason)",
    )


def _add_yes_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--yes", "-y", action="store_true", help=text)


def _bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid value {text!r}: expected a whole number from {low} to {high}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"invalid value {value}: expected a whole number from {low} to {high}"
            )
        return value

    return parse


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected a number of seconds greater than 0, at most 3600"
        )
    return value


def run_daemon(env) -> int:
    """Run the daemon: settings, HTTP endpoint, consume until stopped, drain, close."""
    try:
        settings = Settings.from_env(env)
    except SettingsError as error:
        # LOG_FORMAT is read on its own here, so that a log collector that
        # expects JSON gets this line as JSON too.
        handler = logging.StreamHandler(sys.stdout)
        use_json = str(env.get("LOG_FORMAT", "")).strip().lower() == "json"
        handler.setFormatter(JsonFormatter() if use_json else logging.Formatter(PLAIN_FORMAT))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        log.error("Invalid configuration: %s", error)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)

    from .batch import BatchWriter
    from .consumer import Consumer
    from .health import HealthServer
    from .mapper import start_mapper
    from .metrics import HealthState, Metrics
    from .writer import InfluxWriter

    log.info(
        "Starting metrics ingester: rabbitmq %s:%d vhost %s queue %s, "
        "InfluxDB %s (%s) org %s bucket %s",
        settings.rabbitmq_host,
        settings.rabbitmq_port,
        settings.rabbitmq_vhost,
        settings.rabbitmq_queue,
        settings.influx_url,
        settings.influx_api,
        settings.influx_org,
        settings.influx_bucket,
    )
    log.debug("Settings: %s", settings.describe())

    stop = StopRequest()
    install_signal_handlers(stop)
    metrics = Metrics()
    health = HealthState()

    server = None
    if settings.http_port:
        try:
            server = HealthServer("0.0.0.0", settings.http_port, health, metrics)
        except OSError as error:
            log.error(
                "Cannot listen on HTTP_PORT %d: %s; set HTTP_PORT to a free port, "
                "or to 0 to turn off /healthz, /readyz and /metrics",
                settings.http_port,
                error,
            )
            return EXIT_CONFIG
        server.start()

    mapper = start_mapper(settings.uses_mapping_process)
    writer = InfluxWriter(settings)
    consumer = Consumer(
        settings, BatchWriter(writer, metrics, health), mapper, metrics, health, stop
    )
    try:
        consumer.run()
    finally:
        mapper.close()
    writer.close()
    if server is not None:
        server.stop()
    log.info("Stopped metrics ingester")
    return EXIT_OK


class StopRequest(threading.Event):
    """A stop event that also records when it was set, to bound the drain from then."""

    def __init__(self) -> None:
        super().__init__()
        self.requested_at: float | None = None

    def set(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        super().set()


def install_signal_handlers(stop: threading.Event) -> None:
    """Set ``stop`` on the first SIGTERM or SIGINT; exit at once on the second."""

    def handle(signum, frame) -> None:
        if stop.is_set():
            log.warning("Received %s again: exiting now", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(EXIT_FORCED)
        log.info("Received %s: finishing the messages in hand", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pika logs every connection step at INFO; keep its warnings and errors.
    logging.getLogger("pika").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # pika's adapters log each failed connection attempt as several ERROR lines
    # with tracebacks, and the consumer logs one line per attempt with a hint.
    if level != "DEBUG":
        logging.getLogger("pika.adapters").setLevel(logging.CRITICAL)
