"""``ingester.py --dry-run``: show what the ingester would write, and change nothing.

The dry run consumes up to ``--limit`` messages with manual acknowledgement,
maps each one as the daemon does and prints the line protocol that would be
written. A message that would be dead-lettered gets a comment line with the
reason and detail instead. Nothing is written to InfluxDB, no message is
acked, and at the end every message goes back to its queue with one
``basic.nack(requeue=True)``. Closing the connection, which also happens when
the process dies, requeues them as well.

Side effects that remain: while the dry run keeps the messages unacked, no
other consumer receives them, and the broker marks them redelivered, so the
daemon counts them in ``ingester_redeliveries_total`` when it receives them later.

The output is valid line protocol: every line that is not a point starts
with ``#``, which InfluxDB's line protocol parser skips as a comment.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Mapping, TextIO

import pika
import pika.exceptions

from .consumer import preview
from .mapping import InvalidMessage, map_message
from .settings import Settings
from .tools import (
    BROKER_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ToolError,
    close_quietly,
    configure_tool_logging,
    connect,
    count_noun,
    describe_queue_error,
    load_settings,
)

CONNECTION_NAME = "metrics-ingester-dry-run"
DEFAULT_WAIT_SECONDS = 1.0
# How long one wait inside pika's event loop lasts before the loop checks
# whether the limit or the idle time was reached.
POLL_INTERVAL_SECONDS = 0.1


@dataclass
class DryRunReport:
    """Counts of one dry run."""

    messages: int = 0
    points: int = 0
    dead_letters: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def main(env: Mapping[str, str], limit: int | None, wait_seconds: float,
         out: TextIO | None = None) -> int:
    """Run the dry run with the daemon's settings; return the exit status."""
    out = sys.stdout if out is None else out
    configure_tool_logging()
    try:
        settings = load_settings(env, require_influx=False)
        report = dry_run(settings, limit or settings.prefetch_count, wait_seconds, out)
    except ToolError as error:
        print(f"Dry run failed: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        # The connection closes as the process exits, so the broker requeues everything.
        print("Dry run interrupted; every message goes back to the queue", file=sys.stderr)
        return EXIT_INTERRUPTED

    print(
        f"# dry run: {count_noun(report.messages, 'message')} read from {settings.rabbitmq_queue}, "
        f"{count_noun(report.points, 'point')} would be written, "
        f"{count_noun(report.dead_letters, 'message')} would be dead-lettered"
        f"{_describe_reasons(report.reasons)}; nothing was written and every message "
        "was returned to the queue",
        file=out,
    )
    return EXIT_OK



def _describe_reasons(reasons: dict[str, int]) -> str:
    if not reasons:
        return ""
    parts = [f"{reason} {count}" for reason, count in sorted(reasons.items())]
    return " (" + ", ".join(parts) + ")"


def dry_run(settings: Settings, limit: int, wait_seconds: float, out: TextIO) -> DryRunReport:
    """Consume up to ``limit`` messages, print what would be written, then requeue them all.

    Stops at ``limit`` messages or after ``wait_seconds`` without a new one.
    """
    report = DryRunReport()
    connection = connect(settings, CONNECTION_NAME)
    try:
        channel = connection.channel()
        try:
            channel.queue_declare(settings.rabbitmq_queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            raise ToolError(
                describe_queue_error(
                    error, settings.rabbitmq_queue, settings, "RABBITMQ_QUEUE",
                    "start the ingester or the robots' publisher, which declare it",
                )
            ) from None

        # The broker sends at most prefetch_count unacked messages, so the
        # limit is also the prefetch count: no message beyond it is taken.
        channel.basic_qos(prefetch_count=limit)

        def on_message(channel, method, properties, body: bytes) -> None:
            if report.messages >= limit:
                return
            report.messages += 1
            _print_mapping(report, method, properties, body, out)

        consumer_tag = channel.basic_consume(settings.rabbitmq_queue, on_message, auto_ack=False)
        last_message = time.monotonic()
        seen = 0
        while report.messages < limit:
            connection.process_data_events(time_limit=POLL_INTERVAL_SECONDS)
            if report.messages != seen:
                seen = report.messages
                last_message = time.monotonic()
            elif time.monotonic() - last_message >= wait_seconds:
                break

        # Cancel first, so the broker does not deliver the requeued messages
        # to this consumer again. Tag 0 with multiple=True then covers every
        # unacked delivery on the channel.
        channel.basic_cancel(consumer_tag)
        channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
        channel.close()
    except BROKER_ERRORS as error:
        raise ToolError(
            f"the RabbitMQ connection failed: {type(error).__name__}: {error}; the broker "
            "requeues every message of this dry run"
        ) from None
    finally:
        close_quietly(connection)
    return report


def _print_mapping(report: DryRunReport, method, properties: pika.BasicProperties,
                   body: bytes, out: TextIO) -> None:
    try:
        mapped = map_message(body, properties.timestamp, time.time_ns())
    except InvalidMessage as error:
        report.dead_letters += 1
        report.reasons[error.reason] = report.reasons.get(error.reason, 0) + 1
        print(
            f"# delivery tag {method.delivery_tag}: would be dead-lettered, reason "
            f"{error.reason}: {error.detail}; body {len(body)} bytes {preview(body)}",
            file=out,
        )
        return

    report.points += len(mapped.lines)
    for line in mapped.lines:
        print(line, file=out)
