"""Turning SIGINT and SIGTERM into a stop request, for the commands that run a loop."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopOnSignal:
    """Context manager that turns SIGINT and SIGTERM into a set ``threading.Event``.

    Signal handlers can only be installed from the main thread, so in other
    threads it installs nothing and only the event stops the loop. The
    previous handlers come back on exit.
    """

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event if event is not None else threading.Event()
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def signal_name(self) -> str | None:
        """The name of the signal received, such as ``SIGTERM``, or None."""
        if self.signal_number is None:
            return None
        return signal.Signals(self.signal_number).name

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_number = signum
        self.event.set()

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
