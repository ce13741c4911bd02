"""Map whole batches of message bodies to line protocol, in a helper process or in this one.

JSON decoding and mapping took about a third of the ingester's CPU in
py-spy profiles of a backlog drain (docs/benchmarks.md), and in one process
they share the GIL with pika's frame decoding. ``ProcessMapper`` runs
``map_message`` in a helper process, so the consumer thread mostly receives
and acks while the helper maps. ``InProcessMapper`` maps on the calling thread.

The helper is ``python -m telemetry_ingester.mapper FD``, started with
``subprocess``: a fresh interpreter that inherits no pika connection and no
threads, and one socket (FD) to the parent that carries pickled batches with
``multiprocessing.connection`` framing. It runs in a session of its own
and ignores SIGINT and SIGTERM, because the parent still needs it while it
drains after such a signal, and a Ctrl-C in a terminal reaches the whole
foreground process group. It exits when its socket to the parent closes,
which also happens when the parent is killed.
"""

from __future__ import annotations

import logging
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

from .mapping import InvalidMessage, map_message

log = logging.getLogger(__name__)

# One message to map: the body, the AMQP timestamp property in seconds (or
# None) and the time of receipt in Unix nanoseconds, the arguments of map_message.
MapRequest = tuple[bytes, Union[int, None], int]

# How often a wait for the helper checks whether the write was abandoned.
ABORT_CHECK_SECONDS = 0.1
# A helper that has not replied in this long is taken as hung and replaced.
# An estimate of the need: mapping took 12 to 25 microseconds per message on
# the 2-core benchmark machine, so half the largest prefetch window (32,767
# messages) takes about 1 s.
HELPER_TIMEOUT_SECONDS = 60.0
# Time a helper gets to exit after its pipe closes, before it is killed.
HELPER_EXIT_SECONDS = 2.0
# The folder that contains the telemetry_ingester package, the helper's
# working folder, so that ``python -m`` finds the package when it is not installed.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


class MapperError(Exception):
    """The helper process failed to map a batch."""


@dataclass
class MappedBatch:
    """The line protocol of a batch of requests, and the counts the consumer reports.

    ``chunks``, ``bots`` and ``points`` run in parallel over the valid
    requests, in request order: a chunk is the message's lines joined by
    newlines, UTF-8 encoded. The parent gets whole lists, so it does no work
    per message; pickle also sends a bot name that repeats as a reference.
    """

    chunks: list[bytes] = field(default_factory=list)
    bots: list[str] = field(default_factory=list)
    points: list[int] = field(default_factory=list)
    # (request index, reason, detail, bot or None) of each invalid request.
    invalid: list[tuple[int, str, str, Union[str, None]]] = field(default_factory=list)
    # The receipt time in Unix nanoseconds of each bot's last valid message.
    last_seen: dict[str, int] = field(default_factory=dict)
    skipped_fields: int = 0
    # Messages whose ts was converted to nanoseconds, by unit converted from.
    converted: Counter = field(default_factory=Counter)
    # The unit and request index of each bot's first converted ts.
    first_conversions: dict[str, tuple[str, int]] = field(default_factory=dict)


def map_batch(requests: Sequence[MapRequest]) -> MappedBatch:
    """Map each request with ``map_message`` and collect the results.

    NOTE: an exception other than InvalidMessage, which would be a bug in
    the mapping, fails the whole batch. The consumer then gives the batch
    back, so the same message fails it again after the redelivery.
    """
    batch = MappedBatch()
    for index, (body, amqp_timestamp, received_ns) in enumerate(requests):
        try:
            mapped = map_message(body, amqp_timestamp, received_ns)
        except InvalidMessage as error:
            batch.invalid.append((index, error.reason, error.detail, error.bot))
            continue
        batch.chunks.append("\n".join(mapped.lines).encode("utf-8"))
        batch.bots.append(mapped.bot)
        batch.points.append(len(mapped.lines))
        batch.last_seen[mapped.bot] = received_ns
        batch.skipped_fields += mapped.skipped_fields
        if mapped.converted_from:
            batch.converted[mapped.converted_from] += 1
            batch.first_conversions.setdefault(mapped.bot, (mapped.converted_from, index))
    return batch


def start_mapper(use_process: bool) -> "InProcessMapper | ProcessMapper":
    """Return a started ProcessMapper, or an InProcessMapper when ``use_process`` is false or the helper cannot start."""
    if not use_process:
        log.info("Mapping messages in this process")
        return InProcessMapper()
    mapper = ProcessMapper()
    try:
        mapper.start()
    except OSError as error:
        log.warning(
            "Cannot start the mapping process: %s; mapping messages in this process instead",
            error,
        )
        return InProcessMapper()
    return mapper


class InProcessMapper:
    """Maps on the calling thread."""

    def map(self, requests: Sequence[MapRequest], abort: threading.Event) -> MappedBatch | None:
        return map_batch(requests)

    def close(self) -> None:
        pass


class ProcessMapper:
    """Maps in one long-lived helper process, one batch at a time.

    ``map`` returns None when ``abort`` is set before the helper replies. The
    helper is then replaced, because its late reply would be read as the
    reply for the next batch. A helper that dies or hangs is replaced and the
    batch sent once more. A batch that fails twice raises ``MapperError``.
    """

    def __init__(self, timeout: float = HELPER_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._connection: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The helper's process id, or None while no helper runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the helper now, so a failure to start shows at start-up."""
        with self._lock:
            self._start()

    def map(self, requests: Sequence[MapRequest], abort: threading.Event) -> MappedBatch | None:
        with self._lock:
            try:
                return self._map_once(requests, abort)
            except MapperError as error:
                log.error("ingest error: %s; starting a new mapping process", error)
                self._stop(kill=True)
            return self._map_once(requests, abort)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _map_once(self, requests: Sequence[MapRequest], abort: threading.Event) -> MappedBatch | None:
        if self._process is None:
            self._start()
        try:
            self._connection.send(requests)
            waited = 0.0
            while not self._connection.poll(ABORT_CHECK_SECONDS):
                waited += ABORT_CHECK_SECONDS
                if abort.is_set():
                    self._stop(kill=True)
                    return None
                if waited >= self._timeout:
                    raise MapperError(
                        f"the mapping process (pid {self._process.pid}) has not replied "
                        f"in {self._timeout:g} s"
                    )
            status, payload = self._connection.recv()
        except (EOFError, OSError) as error:
            try:
                code = self._process.wait(HELPER_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                code = None
            raise MapperError(
                f"the mapping process (pid {self._process.pid}) exited with code {code} "
                f"({type(error).__name__})"
            ) from None
        if status != "ok":
            raise MapperError(f"mapping a batch of {len(requests)} messages failed: {payload}")
        return payload

    def _start(self) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "telemetry_ingester.mapper", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                cwd=PACKAGE_PARENT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            # The parent keeps only its own end, so the helper reads EOF when
            # the parent closes it or dies.
            child_end.close()
        # A send to a helper that stopped reading fails after the timeout
        # instead of blocking the map thread for good.
        seconds = int(self._timeout)
        microseconds = int((self._timeout - seconds) * 1_000_000)
        parent_end.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, microseconds)
        )
        self._process = process
        self._connection = Connection(parent_end.detach())
        log.info("Started the mapping process (pid %d)", process.pid)

    def _stop(self, kill: bool = False) -> None:
        """Close the socket and wait for the helper to exit; kill it at once if ``kill``."""
        if self._process is None:
            return
        self._connection.close()
        if kill:
            self._process.kill()
        try:
            self._process.wait(HELPER_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._connection = None


def serve(connection: Connection) -> None:
    """Run in the helper: map each batch that arrives until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            requests = connection.recv()
        except (EOFError, OSError):
            return
        try:
            reply = ("ok", map_batch(requests))
        except Exception:  # sent to the parent, which logs it and gives the batch back
            reply = ("error", traceback.format_exc(limit=5))
        try:
            connection.send(reply)
        except OSError:
            # The parent closed its end or died while this batch was mapped.
            return


if __name__ == "__main__":
    # Run the package's module, not this __main__ copy, so that the replies
    # pickle MappedBatch under its importable name.
    from telemetry_ingester import mapper

    mapper.serve(Connection(int(sys.argv[1])))
