"""A recording HTTP reverse proxy on loopback, for the benchmark's latency run.

It forwards every request to the store unchanged and returns the store's
response. For each write that the store accepts with a 2xx status, the proxy
appends one line to the output file. The line contains the Unix time in
nanoseconds at which the whole response had been read, then the ``ts`` of
every ``battery`` line in the request body. The benchmark publishes each
message with its publish time as ``ts``, so the line gives publish-to-stored
latency for every message in that write.

Usage: python bench/recording_proxy.py TARGET_URL OUTPUT_FILE

It listens on 127.0.0.1 on a free port, prints ``listening PORT`` and runs
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN_HOST = "127.0.0.1"
UPSTREAM_TIMEOUT_SECONDS = 30.0
# Request headers passed on to the store. Hop-by-hop headers are dropped.
FORWARDED_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "Accept", "User-Agent")
MEASUREMENT_PREFIX = b"battery,"


def battery_timestamps(body: bytes) -> list[bytes]:
    """Return the timestamp field of each ``battery`` line in a line protocol body."""
    return [
        line.rsplit(b" ", 1)[1]
        for line in body.split(b"\n")
        if line.startswith(MEASUREMENT_PREFIX)
    ]


class Recorder:
    """Appends one record line per successful write to a file, from any thread."""

    def __init__(self, path: str) -> None:
        # Open for the proxy's whole life, and closed by close().
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115
        self._lock = threading.Lock()

    def record(self, answered_ns: int, timestamps: list[bytes]) -> None:
        line = b" ".join([str(answered_ns).encode("ascii"), *timestamps]) + b"\n"
        with self._lock:
            self._file.write(line)

    def close(self) -> None:
        self._file.close()


def make_handler(target: urllib.parse.SplitResult, recorder: Recorder):
    local = threading.local()

    class ProxyHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _upstream(self) -> http.client.HTTPConnection:
            if getattr(local, "connection", None) is None:
                local.connection = http.client.HTTPConnection(
                    target.hostname, target.port, timeout=UPSTREAM_TIMEOUT_SECONDS
                )
            return local.connection

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name: self.headers[name] for name in FORWARDED_HEADERS if name in self.headers}
            connection = self._upstream()
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                local.connection = None
                self.send_error(502, "the store did not answer")
                return
            answered_ns = time.time_ns()

            if 200 <= response.status < 300 and self.command == "POST":
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                recorder.record(answered_ns, battery_timestamps(body))

            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, format: str, *args) -> None:
            # One line per request would cost more than the request itself.
            pass

    return ProxyHandler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="base URL of the store, such as http://127.0.0.1:8428")
    parser.add_argument("output", help="file that receives one line per successful write")
    args = parser.parse_args()

    target = urllib.parse.urlsplit(args.target)
    if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"invalid target {args.target!r}: expected an http:// URL on loopback")

    recorder = Recorder(args.output)
    server = ThreadingHTTPServer((LISTEN_HOST, 0), make_handler(target, recorder))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"listening {server.server_address[1]}", flush=True)

    server.serve_forever()
    server.server_close()
    recorder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
