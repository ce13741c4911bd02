"""``ingester.py dead-letters list|show|replay|purge``: inspect and settle dead letters.

``list`` and ``show`` browse the dead-letter queue without consuming it:
they take messages with ``basic.get`` and no ack, then close the channel, so
the broker requeues every one of them at its old place. While a command
browses, it keeps the messages it took unacked, and no other consumer receives them.
Browsing is bounded by ``--max`` and by the queue depth at the start, so
dead letters that arrive meanwhile are not read.

``replay`` moves dead letters back to the telemetry queue, one at a time:
publish to the telemetry queue with publisher confirms, wait for the broker's
confirm, then ack the dead letter. The contract is at least once. If the
process dies, every message is still in one of the two queues, and only the
one message between its confirm and its ack can be in both.
"""

from __future__ import annotations

import copy
import datetime
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Mapping, TextIO

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from .consumer import DETAIL_HEADER, MAX_HEADER_TEXT, QUEUE_HEADER, REASON_HEADER, TIME_HEADER
from .settings import Settings
from .signals import StopOnSignal
from .tools import (
    BROKER_ERRORS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ToolError,
    close_quietly,
    configure_tool_logging,
    confirm,
    connect,
    count_noun,
    describe_queue_error,
    load_settings,
    safe_preview,
    safe_text,
)

CONNECTION_NAME = "metrics-ingester-dead-letters"
# Maximum body prefix that ``show`` prints, in bytes.
SHOW_PREVIEW_BYTES = 200
# Headers the ingester adds to a dead letter; replay removes every header
# with this prefix, so the message goes back as the robot published it.
INGESTER_HEADER_PREFIX = "x-ingester-"
# Shown for a dead letter without the reason header, for example one that
# another program put in the queue.
NO_REASON = "(no reason header)"

# Remedy for a missing queue, for the error message.
QUEUE_REMEDY = "start the ingester, which declares it"


@dataclass(frozen=True)
class DeadLetter:
    """One message taken from the dead-letter queue and not yet settled."""

    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes

    def header(self, name: str) -> str | None:
        value = (self.properties.headers or {}).get(name)
        if value is None:
            return None
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return str(value)

    @property
    def reason(self) -> str:
        """The reason header, escaped for printing, because another program may have set it."""
        reason = self.header(REASON_HEADER)
        return safe_text(reason, MAX_HEADER_TEXT) if reason else NO_REASON

    @property
    def dead_lettered_at(self) -> datetime.datetime | None:
        text = self.header(TIME_HEADER)
        if text is None:
            return None
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return moment


@dataclass
class ReasonSummary:
    count: int = 0
    oldest: datetime.datetime | None = None
    newest: datetime.datetime | None = None

    def add(self, moment: datetime.datetime | None) -> None:
        self.count += 1
        if moment is None:
            return
        if self.oldest is None or moment < self.oldest:
            self.oldest = moment
        if self.newest is None or moment > self.newest:
            self.newest = moment


@dataclass
class QueueBrowse:
    """Result of browsing for ``list``: counts and times per reason."""

    depth: int
    inspected: int = 0
    reasons: dict[str, ReasonSummary] = field(default_factory=dict)


# The settings that name the dead-letter queue, for error messages.
DEAD_LETTER_QUEUE_VARIABLES = "DEAD_LETTER_QUEUE or RABBITMQ_QUEUE (the default is its name + '.dead')"


class DeadLetterQueue:
    """A connection to RabbitMQ with the dead-letter queue checked to exist."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.dead_letter_queue
        self.connection = connect(settings, CONNECTION_NAME)
        try:
            self.depth = self._passive_declare(self.name, DEAD_LETTER_QUEUE_VARIABLES)
        except BaseException:
            close_quietly(self.connection)
            raise

    def _passive_declare(self, queue: str, variable: str) -> int:
        channel = self.connection.channel()
        try:
            declared = channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as error:
            message = describe_queue_error(error, queue, self.settings, variable, QUEUE_REMEDY)
            raise ToolError(message) from None
        channel.close()
        return declared.method.message_count

    def check_telemetry_queue(self) -> None:
        self._passive_declare(self.settings.rabbitmq_queue, "RABBITMQ_QUEUE")

    def browse(self, channel: BlockingChannel, max_count: int) -> Iterator[DeadLetter]:
        """Get up to ``max_count`` dead letters without ack, oldest first.

        Stops early at the queue depth seen when the connection opened, so
        messages that arrive meanwhile, including ones dead-lettered again
        after a replay, are not read.
        """
        for _ in range(min(max_count, self.depth)):
            method, properties, body = channel.basic_get(self.name, auto_ack=False)
            if method is None:
                return
            yield DeadLetter(method.delivery_tag, properties, body)

    def close(self) -> None:
        close_quietly(self.connection)

    def __enter__(self) -> DeadLetterQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def main(env: Mapping[str, str], command: str, options: Any, out: TextIO | None = None) -> int:
    """Run one dead-letters command with the daemon's settings; return the exit status."""
    out = sys.stdout if out is None else out
    configure_tool_logging()
    commands = {"list": list_command, "show": show_command, "replay": replay_command, "purge": purge_command}
    try:
        settings = load_settings(env, require_influx=False)
        return commands[command](settings, options, out)
    except ToolError as error:
        print(f"dead-letters {command} failed: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"dead-letters {command} interrupted; every message left unacked goes back "
              "to its queue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BROKER_ERRORS as error:
        print(
            f"dead-letters {command} failed: the RabbitMQ connection failed: "
            f"{type(error).__name__}: {error}; the broker requeues every message left unacked",
            file=sys.stderr,
        )
        return EXIT_FAILED


# -- list -------------------------------------------------------------------


def list_command(settings: Settings, options: Any, out: TextIO) -> int:
    with DeadLetterQueue(settings) as queue:
        found = browse_reasons(queue, options.max)

    if found.depth == 0:
        print(f"Dead-letter queue {queue.name} is empty", file=out)
        return EXIT_OK
    print(
        f"Dead-letter queue {queue.name}: {count_noun(found.depth, 'message')} ready, "
        f"{found.inspected} inspected",
        file=out,
    )
    width = max(len("reason"), *(len(reason) for reason in found.reasons))
    print(f"{'reason':<{width}}  {'count':>7}  {'oldest':<32}  newest", file=out)
    for reason, summary in sorted(found.reasons.items(), key=lambda item: -item[1].count):
        print(
            f"{reason:<{width}}  {summary.count:>7}  {_format_time(summary.oldest):<32}  "
            f"{_format_time(summary.newest)}",
            file=out,
        )
    if found.inspected < found.depth:
        print(
            f"Only the oldest {found.inspected} of {found.depth} messages were inspected "
            f"(--max {options.max}); the counts and times cover those only",
            file=out,
        )
    return EXIT_OK


def browse_reasons(queue: DeadLetterQueue, max_count: int) -> QueueBrowse:
    """Count the dead letters per reason; every one stays in the queue."""
    found = QueueBrowse(queue.depth)
    channel = queue.connection.channel()
    for letter in queue.browse(channel, max_count):
        found.inspected += 1
        found.reasons.setdefault(letter.reason, ReasonSummary()).add(letter.dead_lettered_at)
    # Closing the channel requeues every message it took.
    channel.close()
    return found


def _format_time(moment: datetime.datetime | None) -> str:
    return moment.isoformat(timespec="milliseconds") if moment is not None else "-"


# -- show -------------------------------------------------------------------


def show_command(settings: Settings, options: Any, out: TextIO) -> int:
    shown_count = 0
    inspected = 0
    with DeadLetterQueue(settings) as queue:
        channel = queue.connection.channel()
        for letter in queue.browse(channel, options.max):
            inspected += 1
            if options.reason is not None and letter.reason != options.reason:
                continue
            shown_count += 1
            _print_letter(shown_count, letter, out)
            if shown_count >= options.count:
                break
        channel.close()

    reason_text = f" with reason {options.reason}" if options.reason is not None else ""
    if queue.depth == 0:
        print(f"Dead-letter queue {queue.name} is empty", file=out)
    elif shown_count == 0:
        print(f"No dead letter{reason_text} among the {inspected} inspected in {queue.name}", file=out)
    else:
        print(
            f"Showed {count_noun(shown_count, 'dead letter')}{reason_text}; {inspected} of "
            f"{queue.depth} in {queue.name} inspected, and every one stays in the queue",
            file=out,
        )
    return EXIT_OK


def _print_letter(number: int, letter: DeadLetter, out: TextIO) -> None:
    moment = letter.dead_lettered_at
    origin = safe_text(letter.header(QUEUE_HEADER) or "-", MAX_HEADER_TEXT)
    content_type = safe_text(letter.properties.content_type or "-", MAX_HEADER_TEXT)
    detail = safe_text(letter.header(DETAIL_HEADER) or "-", MAX_HEADER_TEXT)
    print(
        f"[{number}] reason {letter.reason}, dead-lettered at {_format_time(moment)}, "
        f"from queue {origin}",
        file=out,
    )
    print(f"    detail: {detail}", file=out)
    print(
        f"    body: {count_noun(len(letter.body), 'byte')}, content type {content_type}: "
        f"{safe_preview(letter.body, SHOW_PREVIEW_BYTES)}",
        file=out,
    )


# -- replay -----------------------------------------------------------------


def replay_command(settings: Settings, options: Any, out: TextIO) -> int:
    with DeadLetterQueue(settings) as queue:
        queue.check_telemetry_queue()
        if queue.depth == 0:
            print(f"Dead-letter queue {queue.name} is empty: nothing to replay", file=out)
            return EXIT_OK

        reason_text = f" with reason {options.reason}" if options.reason is not None else ""
        limit = min(options.max, queue.depth) if options.max is not None else queue.depth
        question = (
            f"Move the dead letters{reason_text} among the oldest {limit} of {queue.depth} in "
            f"{queue.name} back to {settings.rabbitmq_queue}?"
        )
        if not confirm(question, options.yes):
            print("Nothing replayed", file=out)
            return EXIT_FAILED

        with StopOnSignal() as stop:
            result = replay(queue, settings.rabbitmq_queue, options.reason, limit, stop.event)

    print(
        f"Replayed {count_noun(result.replayed, 'dead letter')}{reason_text} from {queue.name} to "
        f"{settings.rabbitmq_queue}; {result.other_reasons} with other reasons stay in {queue.name}",
        file=out,
    )
    if result.replayed == 0 and options.reason is not None:
        seen = ", ".join(sorted(result.reasons_seen)) or "none"
        print(f"No dead letter had reason {options.reason}; reasons seen: {seen}", file=out)
    if result.error is not None:
        print(
            f"Replay stopped early: {result.error}. The message in flight stays in "
            f"{queue.name}; run the command again to replay the rest",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if stop.signal_number is not None:
        name = signal.Signals(stop.signal_number).name
        print(f"Replay stopped by {name}; run the command again to replay the rest", file=out)
        # The status a shell reports for a process killed by that signal.
        return 128 + stop.signal_number
    return EXIT_OK


@dataclass
class ReplayResult:
    replayed: int = 0
    other_reasons: int = 0
    reasons_seen: set[str] = field(default_factory=set)
    error: str | None = None


def replay(queue: DeadLetterQueue, target: str, reason: str | None, limit: int,
           stop: threading.Event) -> ReplayResult:
    """Move dead letters to ``target``: publish, wait for the confirm, then ack.

    Dead letters of other reasons stay unacked until the end, when closing
    the channel requeues them. A publish the broker rejects (nack, or no
    route to the queue) stops the replay with that message still in the
    dead-letter queue.
    """
    result = ReplayResult()
    get_channel = queue.connection.channel()
    publish_channel = queue.connection.channel()
    publish_channel.confirm_delivery()

    for letter in queue.browse(get_channel, limit):
        result.reasons_seen.add(letter.reason)
        if reason is not None and letter.reason != reason:
            result.other_reasons += 1
            continue
        try:
            publish_channel.basic_publish(
                exchange="",
                routing_key=target,
                body=letter.body,
                properties=replay_properties(letter.properties),
                mandatory=True,
            )
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as error:
            result.error = f"the broker did not accept the message for {target}: {type(error).__name__}"
            break
        # Only a confirmed publish lets the dead letter go.
        get_channel.basic_ack(letter.delivery_tag)
        result.replayed += 1
        if stop.is_set():
            break

    get_channel.close()
    publish_channel.close()
    return result


def replay_properties(properties: pika.BasicProperties) -> pika.BasicProperties:
    """Return a copy of ``properties`` without the headers the ingester added."""
    replayed = copy.copy(properties)
    headers = {
        name: value
        for name, value in (properties.headers or {}).items()
        if not name.startswith(INGESTER_HEADER_PREFIX)
    }
    replayed.headers = headers or None
    return replayed


# -- purge ------------------------------------------------------------------


def purge_command(settings: Settings, options: Any, out: TextIO) -> int:
    with DeadLetterQueue(settings) as queue:
        if queue.depth == 0:
            print(f"Dead-letter queue {queue.name} is empty: nothing to purge", file=out)
            return EXIT_OK
        question = f"Delete all {queue.depth} ready messages in {queue.name} for good?"
        if not confirm(question, options.yes):
            print("Nothing purged", file=out)
            return EXIT_FAILED
        channel = queue.connection.channel()
        purged = channel.queue_purge(queue.name).method.message_count
        channel.close()

    print(f"Purged {count_noun(purged, 'message')} from {queue.name}", file=out)
    return EXIT_OK
