"""The HTTP endpoint: ``/healthz``, ``/readyz`` and ``/metrics``.

It runs on a daemon thread, builds its responses from ``HealthState`` and the metrics
registry only, and logs no requests, so scrapes stay out of the log.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import HealthState, Metrics

log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    server: "HealthServer"

    def do_GET(self) -> None:  # noqa: N802 (name set by BaseHTTPRequestHandler)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send_check(*self.server.health.alive())
        elif path == "/readyz":
            self._send_check(*self.server.health.ready())
        else:
            self._send(404, b"not found: try /healthz, /readyz or /metrics\n")

    def _send_check(self, ok: bool, reason: str) -> None:
        self._send(200 if ok else 503, (reason + "\n").encode("utf-8"))

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature from the base class)
        """Log nothing: probes and scrapes would flood the log."""


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, health: HealthState, metrics: Metrics) -> None:
        super().__init__((host, port), _Handler)
        self.health = health
        self.metrics = metrics
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> None:
        self._thread.start()
        log.info("Serving /healthz, /readyz and /metrics on port %d", self.port)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
