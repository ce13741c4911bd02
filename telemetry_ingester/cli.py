"""The command line: ``python3 ingester.py [run|simulate] ...``.

With no command it runs the daemon, as version 0.8 did.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from .settings import Settings, SettingsError

log = logging.getLogger("telemetry_ingester")

# Exit codes.
EXIT_OK = 0
EXIT_CONFIG = 2
# A second SIGTERM or SIGINT during shutdown exits at once with 128 + SIGTERM,
# the status a shell reports for a process killed by SIGTERM.
EXIT_FORCED = 128 + signal.SIGTERM


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        # The simulator parses its own options, --help included.
        from . import simulator

        return simulator.main(argv[1:])
    build_parser().parse_args(argv)
    return run_daemon(os.environ)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingester.py",
        description=(
            "Move TurtleBot telemetry from RabbitMQ into InfluxDB. Settings come "
            "from environment variables; see README.md."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="run the ingester daemon (the default)")
    simulate = commands.add_parser(
        "simulate",
        help="publish simulated fleet telemetry; see 'simulate --help'",
        add_help=False,
    )
    simulate.add_argument("simulate_args", nargs=argparse.REMAINDER)
    return parser


def run_daemon(env) -> int:
    """Run the daemon: settings, HTTP endpoint, consume until stopped, drain, close."""
    try:
        settings = Settings.from_env(env)
    except SettingsError as error:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        log.error("Invalid configuration: %s", error)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)

    from .batch import BatchWriter
    from .consumer import Consumer
    from .health import HealthServer
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

    stop = threading.Event()
    install_signal_handlers(stop)
    metrics = Metrics()
    health = HealthState()

    server = None
    if settings.http_port:
        try:
            server = HealthServer("0.0.0.0", settings.http_port, health, metrics)
        except OSError as error:
            log.error("Cannot listen on HTTP_PORT %d: %s", settings.http_port, error)
            return EXIT_CONFIG
        server.start()

    writer = InfluxWriter(settings)
    consumer = Consumer(settings, BatchWriter(writer, metrics, health), metrics, health, stop)
    consumer.run()

    writer.close()
    if server is not None:
        server.stop()
    log.info("Stopped metrics ingester")
    return EXIT_OK


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
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pika logs every connection step at INFO; keep its warnings and errors.
    logging.getLogger("pika").setLevel(max(logging.WARNING, logging.getLevelName(level)))
