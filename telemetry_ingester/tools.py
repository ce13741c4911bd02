"""Helpers shared by the operator commands: check, dry run and dead-letters.

The commands print their results on stdout and their errors on stderr, and
return one of the exit codes below. They read the same environment variables
as the daemon.
"""

from __future__ import annotations

import logging
import sys
from typing import Mapping, TextIO

import pika
import pika.exceptions

from .consumer import broker_hint, describe_error, connection_parameters
from .settings import Settings, SettingsError

# Exit codes of the operator commands.
EXIT_OK = 0
EXIT_FAILED = 1
# Invalid settings or arguments, and a confirmation that was not given.
EXIT_USAGE = 2
# Stopped by SIGINT (Ctrl-C), as a shell reports it: 128 + SIGINT.
EXIT_INTERRUPTED = 130

# pika failures that the commands report instead of raising.
BROKER_ERRORS = (pika.exceptions.AMQPError, OSError)


class ToolError(Exception):
    """A failure the command reports on stderr before exiting with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_settings(env: Mapping[str, str], require_influx: bool = True) -> Settings:
    """Read the settings like the daemon does, raising ToolError (exit 2) when invalid.

    Commands that never talk to InfluxDB pass ``require_influx=False``, so
    they run without INFLUX_TOKEN.
    """
    try:
        return Settings.from_env(env, require_influx)
    except SettingsError as error:
        raise ToolError(f"Invalid configuration: {error}", EXIT_USAGE) from None


def configure_tool_logging() -> None:
    """Send warnings to stderr and silence pika, whose errors the commands report."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def count_noun(number: int, noun: str) -> str:
    """Return "1 message" or "3 messages"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def broker_address(settings: Settings) -> str:
    return f"{settings.rabbitmq_host}:{settings.rabbitmq_port} vhost {settings.rabbitmq_vhost}"


def describe_broker_failure(settings: Settings, error: BaseException) -> str:
    """Describe a failed RabbitMQ connection, with the setting to check; never the password."""
    return (
        f"cannot connect to RabbitMQ at {broker_address(settings)} as user "
        f"{settings.rabbitmq_user}: {describe_error(error)}; {broker_hint(error, settings.rabbitmq_tls)}"
    )


def connect(settings: Settings, connection_name: str) -> pika.BlockingConnection:
    """Open a connection to RabbitMQ, raising ToolError with a hint when it fails."""
    try:
        return pika.BlockingConnection(connection_parameters(settings, connection_name))
    except BROKER_ERRORS as error:
        raise ToolError(describe_broker_failure(settings, error)) from None


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close ``connection``; the broker then requeues every message left unacked."""
    if connection is None:
        return
    try:
        if connection.is_open:
            connection.close()
    except BROKER_ERRORS:
        pass


def describe_queue_error(error: pika.exceptions.ChannelClosedByBroker, queue: str,
                         settings: Settings, variable: str, remedy: str) -> str:
    """Describe a failed passive declare of ``queue`` and what to do about it.

    ``variable`` is the setting that names the queue, and ``remedy`` is how a
    missing queue gets created, for example "start the ingester, which declares it".
    """
    where = f"queue {queue!r} in vhost {settings.rabbitmq_vhost!r}"
    if error.reply_code == 404:
        return f"{where} not found; {remedy}, or fix {variable}"
    if error.reply_code == 403:
        return (
            f"access to {where} refused ({error.reply_text}): give user "
            f"{settings.rabbitmq_user!r} permissions on the vhost, or fix RABBITMQ_USER"
        )
    return f"{where} could not be used: {error.reply_code} {error.reply_text}"


def confirm(question: str, assume_yes: bool, stdin: TextIO | None = None,
            prompt_stream: TextIO | None = None) -> bool:
    """Ask ``question`` with a y/N prompt and return whether the answer was yes.

    With ``assume_yes`` no prompt is shown. Without it, a stdin that is not a
    terminal raises ToolError (exit 2), so a script cannot wait forever on the
    prompt, and a "y" in piped input cannot confirm.
    """
    if assume_yes:
        return True
    stdin = sys.stdin if stdin is None else stdin
    prompt_stream = sys.stderr if prompt_stream is None else prompt_stream
    if not stdin.isatty():
        raise ToolError(
            "Confirmation is required, but stdin is not a terminal: run the command "
            "in a terminal to answer the prompt, or pass --yes to confirm in a script",
            EXIT_USAGE,
        )
    prompt_stream.write(f"{question} [y/N] ")
    prompt_stream.flush()
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def safe_preview(body: bytes, limit: int) -> str:
    """Return the first ``limit`` bytes of ``body`` as one escaped, printable line.

    Valid UTF-8 stays readable, Korean text included. A backslash appears as
    ``\\\\``, an invalid byte as ``\\xNN``, and a control or other
    non-printable character as ``\\n``, ``\\x1b`` or ``\\uNNNN``. So a body
    cannot move the cursor or change the colours of the operator's terminal.
    A cut body ends in "...".
    """
    text = body[:limit].decode("utf-8", "surrogateescape")
    escaped = "".join(_escape_character(character) for character in text)
    return escaped + ("..." if len(body) > limit else "")


def safe_text(text: str, limit: int) -> str:
    """Return ``text`` escaped like ``safe_preview``, cut at ``limit`` UTF-8 bytes."""
    return safe_preview(text.encode("utf-8", "surrogateescape"), limit)


def _escape_character(character: str) -> str:
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:
        # surrogateescape maps an undecodable byte 0xNN to U+DCNN.
        return f"\\x{code - 0xDC00:02x}"
    if character == "\\":
        return "\\\\"
    if character.isprintable():
        return character
    return character.encode("unicode_escape").decode("ascii")
