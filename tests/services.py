"""Start and control the real services that the integration tests use.

Every service listens on loopback only:

- ``VictoriaMetrics`` starts ``victoria-metrics`` with its HTTP API on
  127.0.0.1 and a free port, over HTTPS when given certificates. Its Graphite,
  OpenTSDB and InfluxDB TCP/UDP listeners stay off, because their address
  flags are left empty.
- ``InfluxDB1`` starts ``influxd`` 1.x from a generated config file. The HTTP
  API and the RPC (backup and restore) service listen on 127.0.0.1 and free
  ports, and all other listeners stay off.
- ``ensure_rabbitmq`` checks the machine's RabbitMQ on 127.0.0.1:5672
  (guest/guest) and starts it with ``rabbitmq-server -detached`` when it is
  down. ``Broker`` is a small pika client for the tests.
  ``RabbitTlsListener`` adds an AMQPS listener on 127.0.0.1 and a free port to
  that running broker, and removes it again, without a restart.
- ``make_certificates`` creates a test CA with a server and a client
  certificate, using the ``openssl`` command.
- ``IngesterProcess`` starts ``python ingester.py`` from the repository root.

The server and ingester processes started here receive SIGKILL from the kernel
when the thread that started them exits (PR_SET_PDEATHSIG). So a killed pytest
run leaves none of them behind. RabbitMQ is the exception because it belongs to
the machine.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pika
from pika.adapters.blocking_connection import BlockingChannel

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent

LOOPBACK_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
RABBITMQ_USER = "guest"
RABBITMQ_PASSWORD = "guest"
AMQP_URL = f"amqp://{RABBITMQ_USER}:{RABBITMQ_PASSWORD}@{LOOPBACK_HOST}:{RABBITMQ_PORT}/%2F"

START_TIMEOUT_SECONDS = 30.0
"""Maximum time for a server to pass its health check after it starts."""

STOP_TIMEOUT_SECONDS = 10.0
"""Time a process gets to exit after SIGTERM before it receives SIGKILL."""

HTTP_TIMEOUT_SECONDS = 10.0
RABBITMQ_START_TIMEOUT_SECONDS = 90.0

# Searched after PATH, because a non-login root shell may lack the sbin folders.
SYSTEM_PROGRAM_FOLDERS = "/usr/sbin:/usr/bin:/sbin:/bin"

# Environment variables that a child process started by the tests inherits.
# Anything else, such as the developer's own ingester settings, stays out.
INHERITED_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

T = TypeVar("T")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when this function ran.

    NOTE: another process may bind the port before the caller does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_HOST, 0))
        return probe.getsockname()[1]


def is_port_open(port: int, host: str = LOOPBACK_HOST) -> bool:
    """Return whether a TCP connection to host:port succeeds within one second."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.1,
    message: str | None = None,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    Raises AssertionError after ``timeout`` seconds. The error names ``message``
    (or the predicate) and shows the last value. Exceptions from the predicate
    propagate at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            description = message or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(
                f"Timed out after {timeout:g} s waiting for {description}; last value: {value!r}"
            )
        time.sleep(interval)


def find_program(name: str, package: str) -> str:
    """Return the path of the program ``name`` or raise FileNotFoundError."""
    path = shutil.which(name) or shutil.which(name, path=SYSTEM_PROGRAM_FOLDERS)
    if path is None:
        raise FileNotFoundError(
            f"Program {name!r} not found. Install the Debian package {package!r}, "
            "or run scripts/test.sh, which installs it."
        )
    return path


def tail(path: Path, line_count: int = 40) -> str:
    """Return the last lines of a log file, or a note when the file is missing."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return f"(log file {path} does not exist)"
    return "\n".join(lines[-line_count:])


def _die_with_parent() -> None:
    """Ask the kernel to send SIGKILL to this child when its parent thread exits.

    Runs in the child between fork and exec. NOTE: the signal fires when the
    starting *thread* exits, so start processes from the main test thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop_process(process: subprocess.Popen, timeout: float) -> int:
    """Send SIGTERM, then SIGKILL after ``timeout`` seconds, and return the exit code."""
    if process.poll() is None:
        # A stopped process handles SIGTERM only after SIGCONT.
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# ---------------------------------------------------------------------------
# HTTP


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def http_request(
    method: str,
    url: str,
    body: bytes | None = None,
    auth: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_SECONDS,
    context: ssl.SSLContext | None = None,
) -> HttpResponse:
    """Send one HTTP request and return the response, whatever its status.

    ``context`` verifies an https:// server, for example against a test CA.
    Network and TLS errors (connection refused, timeout, an unknown CA) raise
    OSError subclasses.
    """
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return HttpResponse(response.status, response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, error.read())


# ---------------------------------------------------------------------------
# TLS certificates

CERTIFICATE_VALIDITY_DAYS = 2
"""Validity of the test certificates, which a test uses for seconds or minutes."""


@dataclass(frozen=True)
class Certificates:
    """PEM files of a test CA and of a server and a client certificate it signed.

    The server certificate is valid for the DNS name ``localhost`` and the IP
    address 127.0.0.1. The client certificate has the common name
    ``metrics-ingester``. The keys are P-256 keys without a passphrase.
    """

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path


def make_certificates(
    folder: str | os.PathLike[str], ca_name: str = "ingester test CA"
) -> Certificates:
    """Create a CA named ``ca_name`` in ``folder`` and sign a server and a client certificate.

    Raises FileNotFoundError when the ``openssl`` command is missing, and
    subprocess.CalledProcessError when it fails.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    certificates = Certificates(
        ca_file=folder / "ca.pem",
        server_cert_file=folder / "server.pem",
        server_key_file=folder / "server.key",
        client_cert_file=folder / "client.pem",
        client_key_file=folder / "client.key",
    )
    ca_key_file = folder / "ca.key"

    _run_openssl(
        "req", "-x509", *_NEW_KEY_OPTIONS,
        "-keyout", ca_key_file,
        "-out", certificates.ca_file,
        "-days", str(CERTIFICATE_VALIDITY_DAYS),
        "-subj", f"/CN={ca_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    _sign_certificate(
        certificates, ca_key_file, "localhost",
        certificates.server_cert_file, certificates.server_key_file,
        ["subjectAltName=DNS:localhost,IP:127.0.0.1", "extendedKeyUsage=serverAuth"],
    )
    _sign_certificate(
        certificates, ca_key_file, "metrics-ingester",
        certificates.client_cert_file, certificates.client_key_file,
        ["extendedKeyUsage=clientAuth"],
    )
    return certificates


# openssl options that create a new P-256 key without a passphrase.
_NEW_KEY_OPTIONS = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def _sign_certificate(
    certificates: Certificates,
    ca_key_file: Path,
    common_name: str,
    cert_file: Path,
    key_file: Path,
    extensions: list[str],
) -> None:
    request_file = cert_file.with_suffix(".csr")
    extensions_file = cert_file.with_suffix(".ext")
    extensions_file.write_text("\n".join(["basicConstraints=CA:FALSE", *extensions]) + "\n")

    _run_openssl(
        "req", "-new", *_NEW_KEY_OPTIONS,
        "-keyout", key_file,
        "-out", request_file,
        "-subj", f"/CN={common_name}",
    )
    _run_openssl(
        "x509", "-req",
        "-in", request_file,
        "-CA", certificates.ca_file,
        "-CAkey", ca_key_file,
        "-set_serial", str(uuid.uuid4().int >> 64),
        "-days", str(CERTIFICATE_VALIDITY_DAYS),
        "-extfile", extensions_file,
        "-out", cert_file,
    )


def _run_openssl(*args: str | os.PathLike[str]) -> None:
    subprocess.run(
        [find_program("openssl", "openssl"), *map(str, args)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=HTTP_TIMEOUT_SECONDS,
    )


# ---------------------------------------------------------------------------
# Time-series servers


class ServerProcess:
    """Base class for a server process with an HTTP health check on 127.0.0.1.

    The port and data folder stay the same across ``restart()``.
    """

    program = ""
    package = ""
    health_path = ""
    # A subclass that serves HTTPS sets both, and ``request`` verifies the
    # server with the context.
    scheme = "http"
    ssl_context: ssl.SSLContext | None = None

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.auth = (username, password or "") if username else None
        self.log_path = self.data_dir / f"{self.program}.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Base URL, such as ``http://127.0.0.1:8428``."""
        return f"{self.scheme}://{LOOPBACK_HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start the server and wait until its health check succeeds."""
        if self.running:
            raise RuntimeError(f"{self.program} is already running with pid {self.pid}")

        command = self._command()
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                preexec_fn=_die_with_parent,
            )

        try:
            wait_until(self._is_healthy, timeout, message=f"{self.program} at {self.url}")
        except AssertionError as error:
            self.stop()
            raise RuntimeError(
                f"{self.program} did not start: {error}\n"
                f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
            ) from None

    def _is_healthy(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            code = self._process.returncode if self._process else None
            raise RuntimeError(
                f"{self.program} exited with code {code} during start.\n"
                f"Last lines of {self.log_path}:\n{tail(self.log_path)}"
            )
        try:
            response = self.request("GET", self.health_path, timeout=1.0)
        except OSError:
            return False
        return 200 <= response.status < 300

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """Stop the server with SIGTERM, or SIGKILL after ``timeout`` seconds.

        Also stops a frozen server. Returns the exit code, or None when the
        server was not started.
        """
        if self._process is None:
            return None
        code = _stop_process(self._process, timeout)
        self._process = None
        return code

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash does, and wait until it is gone.

        ``start()`` brings it back on the same port and data folder.
        """
        process = self._require_process()
        process.kill()
        process.wait()
        self._process = None

    def restart(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Stop the server and start it again on the same port and data folder."""
        self.stop()
        self.start(timeout)

    def freeze(self) -> None:
        """Suspend the server with SIGSTOP, so that its port accepts but never responds."""
        self._require_process().send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a server suspended by ``freeze()``."""
        self._require_process().send_signal(signal.SIGCONT)

    def _require_process(self) -> subprocess.Popen:
        if not self.running:
            raise RuntimeError(f"{self.program} is not running; call start() first")
        assert self._process is not None
        return self._process

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> HttpResponse:
        """Send a request to this server with its own credentials, if any."""
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        return http_request(
            method,
            url,
            body=body,
            auth=self.auth,
            headers=headers,
            timeout=timeout,
            context=self.ssl_context,
        )

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class VictoriaMetrics(ServerProcess):
    """A single-node VictoriaMetrics server storing its data under ``data_dir``.

    It accepts InfluxDB line protocol on ``/write`` and ``/api/v2/write`` and
    stores each numeric field as the metric ``{measurement}_{field}`` with the
    tags as labels.
    NOTE: VictoriaMetrics 1.79 (Debian bookworm) also stores a string field, as
    a series whose values are all 0.

    With ``certificates`` it serves HTTPS with the server certificate, and
    ``url`` starts with ``https://``. Clients verify it against
    ``certificates.ca_file``.
    """

    program = "victoria-metrics"
    package = "victoria-metrics"
    health_path = "/health"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        username: str | None = None,
        password: str | None = None,
        certificates: Certificates | None = None,
    ) -> None:
        super().__init__(data_dir, username, password)
        self.certificates = certificates
        if certificates is not None:
            self.scheme = "https"
            self.ssl_context = ssl.create_default_context(cafile=str(certificates.ca_file))

    def _command(self) -> list[str]:
        command = [
            find_program(self.program, self.package),
            f"-httpListenAddr={LOOPBACK_HOST}:{self.port}",
            f"-storageDataPath={self.data_dir / 'storage'}",
            "-retentionPeriod=100y",
        ]
        if self.auth is not None:
            command += [
                f"-httpAuth.username={self.auth[0]}",
                f"-httpAuth.password={self.auth[1]}",
            ]
        if self.certificates is not None:
            command += [
                "-tls",
                f"-tlsCertFile={self.certificates.server_cert_file}",
                f"-tlsKeyFile={self.certificates.server_key_file}",
            ]
        return command

    def flush(self) -> None:
        """Make all accepted samples visible to queries and exports."""
        response = self.request("GET", "/internal/force_flush")
        if response.status != 200:
            raise RuntimeError(f"force_flush failed with HTTP {response.status}: {response.text()}")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Flush, then return every series that the selector ``match`` selects.

        Each item is one line of ``/api/v1/export``: ``{"metric": {labels},
        "values": [...], "timestamps": [milliseconds...]}``.
        """
        self.flush()
        response = self.request("GET", "/api/v1/export", params={"match[]": match})
        if response.status != 200:
            raise RuntimeError(
                f"Export of {match!r} failed with HTTP {response.status}: {response.text()}"
            )
        return [json.loads(line) for line in response.text().splitlines() if line.strip()]

    def points(self, metric_name: str, **labels: str) -> list[tuple[int, float]]:
        """Return (timestamp in ms, value) pairs of all matching series, sorted by time."""
        found: list[tuple[int, float]] = []
        for series in self.export(series_selector(metric_name, **labels)):
            found.extend(zip(series["timestamps"], series["values"]))
        return sorted(found)


def series_selector(metric_name: str, **labels: str) -> str:
    """Build a PromQL series selector such as ``robot_battery{robot="r1"}``."""
    matchers = [f"__name__={_promql_string(metric_name)}"]
    matchers += [f"{name}={_promql_string(value)}" for name, value in sorted(labels.items())]
    return "{" + ",".join(matchers) + "}"


def _promql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class InfluxDB1(ServerProcess):
    """An InfluxDB 1.x server with its meta, data and WAL folders under ``data_dir``.

    The HTTP API listens on ``port`` and the RPC service on ``rpc_port``, both
    on 127.0.0.1. Authentication is off.
    """

    program = "influxd"
    package = "influxdb"
    health_path = "/ping"

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        super().__init__(data_dir)
        self.rpc_port = free_port()
        while self.rpc_port == self.port:
            self.rpc_port = free_port()
        self.config_path = self.data_dir / "influxdb.conf"

    def _command(self) -> list[str]:
        self.config_path.write_text(self._config_text())
        return [find_program(self.program, self.package), "run", "-config", str(self.config_path)]

    def _environment(self) -> dict[str, str]:
        # influxd lets INFLUXDB_* variables override the config file.
        return {key: value for key, value in os.environ.items() if not key.startswith("INFLUXDB_")}

    def _config_text(self) -> str:
        # Debian's build reads "reporting-enabled"; upstream 1.x reads
        # "reporting-disabled". Both are set, and influxd ignores the unknown one.
        return f"""\
reporting-enabled = false
reporting-disabled = true
bind-address = "{LOOPBACK_HOST}:{self.rpc_port}"

[meta]
  dir = "{self.data_dir / 'meta'}"

[data]
  dir = "{self.data_dir / 'data'}"
  wal-dir = "{self.data_dir / 'wal'}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  bind-address = "{LOOPBACK_HOST}:{self.port}"
  log-enabled = false
"""

    def create_database(self, name: str) -> None:
        self.query("", f"CREATE DATABASE {_influxql_identifier(name)}", method="POST")

    def write(self, db: str, lines: str, precision: str = "ns") -> None:
        """Write line protocol to ``db`` and raise RuntimeError unless HTTP 204 comes back."""
        response = self.request(
            "POST", "/write", params={"db": db, "precision": precision}, body=lines.encode()
        )
        if response.status != 204:
            raise RuntimeError(f"Write to {db!r} failed with HTTP {response.status}: {response.text()}")

    def query(self, db: str, q: str, method: str = "GET") -> dict[str, Any]:
        """Run InfluxQL with timestamps as integer nanoseconds and return the parsed JSON.

        Raises RuntimeError when the HTTP status or any statement reports an error.
        """
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        if method == "GET":
            response = self.request("GET", "/query", params=params)
        else:
            response = self.request(
                "POST",
                "/query",
                body=urllib.parse.urlencode(params).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        if response.status != 200:
            raise RuntimeError(f"Query {q!r} failed with HTTP {response.status}: {response.text()}")

        result = response.json()
        errors = [statement["error"] for statement in result.get("results", []) if "error" in statement]
        if errors:
            raise RuntimeError(f"Query {q!r} failed: {'; '.join(errors)}")
        return result


def _influxql_identifier(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# ---------------------------------------------------------------------------
# RabbitMQ


def ensure_rabbitmq(timeout: float = RABBITMQ_START_TIMEOUT_SECONDS) -> None:
    """Start the machine's RabbitMQ when 127.0.0.1:5672 refuses connections.

    Waits until ``rabbitmqctl await_startup`` returns and the port accepts
    connections. The broker keeps running after the tests.
    """
    if is_port_open(RABBITMQ_PORT):
        return

    subprocess.run(
        [find_program("rabbitmq-server", "rabbitmq-server"), "-detached"],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    # The port check below decides whether the broker is up. await_startup
    # only saves polling, so its exit code is ignored.
    subprocess.run(
        [find_program("rabbitmqctl", "rabbitmq-server"), "--timeout", str(int(timeout)), "await_startup"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout + 10,
    )
    wait_until(
        lambda: is_port_open(RABBITMQ_PORT),
        timeout,
        interval=0.5,
        message=f"RabbitMQ on {LOOPBACK_HOST}:{RABBITMQ_PORT}",
    )


def unique_queue_name(prefix: str = "test") -> str:
    """Return ``prefix`` with a random suffix, such as ``telemetry.3f9c0a1b2d4e``."""
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def add_rabbitmq_user(name: str, password: str) -> None:
    """Create a RabbitMQ user with full permissions on the default vhost ``/``.

    NOTE: ``rabbitmqctl add_user`` takes the password as an argument, so other
    local users can see it in the process list while the command runs. Use
    test passwords only.
    """
    _rabbitmqctl("add_user", name, password)
    _rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")


def delete_rabbitmq_user(name: str) -> None:
    """Delete a RabbitMQ user created by ``add_rabbitmq_user``, closing its connections."""
    _rabbitmqctl("delete_user", name)


def _rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` with ``args`` and return its standard output, stripped."""
    completed = subprocess.run(
        [find_program("rabbitmqctl", "rabbitmq-server"), *args],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RABBITMQ_START_TIMEOUT_SECONDS,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"rabbitmqctl {args[0]} failed with code {completed.returncode}: "
            f"{completed.stderr.strip() or completed.stdout.strip()}"
        )
    return completed.stdout.strip()


class Broker:
    """A blocking pika connection to the local RabbitMQ for test set-up and checks.

    Heartbeats are off, because the test thread does not service the connection
    while it waits for other things. Publishing uses publisher confirms.
    """

    def __init__(self) -> None:
        parameters = pika.ConnectionParameters(
            host=LOOPBACK_HOST,
            port=RABBITMQ_PORT,
            credentials=pika.PlainCredentials(RABBITMQ_USER, RABBITMQ_PASSWORD),
            heartbeat=0,
        )
        self._parameters = parameters
        self.connection = pika.BlockingConnection(parameters)
        self.declared_queues: set[str] = set()
        self._channel: BlockingChannel | None = None

    @property
    def channel(self) -> BlockingChannel:
        """Channel in confirm mode, opened again after the broker closed it.

        The broker closes a channel on errors such as a passive declare of a
        missing queue.
        """
        if self._channel is None or self._channel.is_closed:
            self._channel = self.connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def reconnect(self) -> None:
        """Open a new connection after the broker closed the old one, as a restart does."""
        try:
            if self.connection.is_open:
                self.connection.close()
        except pika.exceptions.AMQPError:
            # The broker already dropped the connection.
            pass
        self.connection = pika.BlockingConnection(self._parameters)
        self._channel = None

    def declare_queue(self, name: str) -> None:
        """Declare a durable queue with the same arguments as the team's publisher."""
        self.channel.queue_declare(queue=name, durable=True)
        self.declared_queues.add(name)

    def publish(self, queue: str, body: bytes, **properties: Any) -> None:
        """Publish a persistent message to ``queue`` through the default exchange.

        ``properties`` are pika.BasicProperties fields, such as content_type or
        headers. Returns after the broker confirms. Raises pika's
        UnroutableError when the queue does not exist, and NackError when the
        broker rejects the message.
        """
        properties.setdefault("delivery_mode", pika.DeliveryMode.Persistent)
        self.channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=body,
            properties=pika.BasicProperties(**properties),
            mandatory=True,
        )

    def depth(self, queue: str) -> int:
        """Return the number of ready messages in ``queue``.

        Messages delivered to a consumer and not yet acknowledged are not
        counted. Raises pika's ChannelClosedByBroker (404) when the queue is missing.
        """
        return self.channel.queue_declare(queue=queue, passive=True).method.message_count

    def drain(self, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
        """Get and acknowledge every ready message in ``queue``, oldest first."""
        messages = []
        while True:
            method, properties, body = self.channel.basic_get(queue=queue, auto_ack=False)
            if method is None:
                return messages
            messages.append((properties, body))
            self.channel.basic_ack(method.delivery_tag)

    def delete(self, queue: str) -> None:
        self.channel.queue_delete(queue=queue)
        self.declared_queues.discard(queue)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RabbitTlsListener:
    """An AMQPS listener on 127.0.0.1 and a free port, added to the running RabbitMQ.

    ``start`` calls ``rabbit_networking:start_ssl_listener`` and ``stop`` calls
    ``rabbit_networking:stop_tcp_listener``, both through ``rabbitmqctl eval``
    (checked on RabbitMQ 3.10.8). The broker keeps running, and neither its
    configuration files nor its other listeners change. With
    ``require_client_certificate`` the listener rejects a client without a
    certificate that the test CA signed.

    The broker process reads the certificate files as its own user, so
    ``start`` copies the CA and server files to a new folder that every user
    can read, and ``stop`` deletes that folder.
    NOTE: a test run killed before ``stop`` leaves the listener open on
    127.0.0.1 until the broker restarts.
    """

    def __init__(
        self, certificates: Certificates, require_client_certificate: bool = False
    ) -> None:
        self.certificates = certificates
        self.require_client_certificate = require_client_certificate
        self.port = free_port()
        self._folder: Path | None = None

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start the listener and wait until its port accepts connections."""
        if self._folder is not None:
            raise RuntimeError(f"The TLS listener on port {self.port} is already started")
        self._folder = self._copy_files_for_broker()

        verify = "verify_peer" if self.require_client_certificate else "verify_none"
        require = "true" if self.require_client_certificate else "false"
        options = (
            f"[{{cacertfile, {_erlang_string(self._folder / 'ca.pem')}}}, "
            f"{{certfile, {_erlang_string(self._folder / 'server.pem')}}}, "
            f"{{keyfile, {_erlang_string(self._folder / 'server.key')}}}, "
            f"{{verify, {verify}}}, {{fail_if_no_peer_cert, {require}}}]"
        )
        # ensure_ssl() starts the Erlang ssl application if no TLS listener
        # was configured at boot. The last argument is the acceptor count.
        output = _rabbitmqctl_eval(
            "rabbit_networking:ensure_ssl(), "
            f"rabbit_networking:start_ssl_listener({self._address()}, "
            f"rabbit_networking:fix_ssl_options({options}), 1)."
        )
        if output != "ok":
            self._remove_folder()
            raise RuntimeError(
                f"RabbitMQ did not start a TLS listener on port {self.port}: {output}"
            )
        wait_until(
            lambda: is_port_open(self.port),
            timeout,
            message=f"the RabbitMQ TLS listener on {LOOPBACK_HOST}:{self.port}",
        )

    def stop(self) -> None:
        """Stop the listener, which also closes its connections. Does nothing when not started."""
        if self._folder is None:
            return
        output = _rabbitmqctl_eval(f"rabbit_networking:stop_tcp_listener({self._address()}).")
        self._remove_folder()
        if output != "ok":
            raise RuntimeError(
                f"RabbitMQ did not stop the TLS listener on port {self.port}: {output}"
            )

    def _address(self) -> str:
        return f"{{{_erlang_string(LOOPBACK_HOST)}, {self.port}}}"

    def _copy_files_for_broker(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="rabbitmq-tls-"))
        folder.chmod(0o755)
        for source, name in (
            (self.certificates.ca_file, "ca.pem"),
            (self.certificates.server_cert_file, "server.pem"),
            (self.certificates.server_key_file, "server.key"),
        ):
            target = folder / name
            shutil.copyfile(source, target)
            target.chmod(0o644)
        return folder

    def _remove_folder(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> RabbitTlsListener:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _rabbitmqctl_eval(expression: str) -> str:
    """Evaluate an Erlang expression on the local broker and return its printed result."""
    return _rabbitmqctl("eval", expression)


def _erlang_string(value: str | os.PathLike[str]) -> str:
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# ---------------------------------------------------------------------------
# The ingester under test


class IngesterProcess:
    """The ingester, run as ``python ingester.py [args]`` from the repository root.

    The child gets only PATH, HOME, the locale variables, TMPDIR and TZ from
    this process, PYTHONUNBUFFERED=1, and then ``env`` on top. Its stdout and
    stderr go to a new log file in ``log_dir`` on every ``start()``.
    """

    script = "ingester.py"

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: str | os.PathLike[str],
        args: Sequence[str] = (),
    ) -> None:
        self.env = dict(env)
        self.log_dir = Path(log_dir)
        self.args = list(args)
        self.log_path: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """Exit code, or None while the process runs or before it started."""
        return self._process.poll() if self._process else None

    def start(self) -> IngesterProcess:
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError(f"The ingester is already running with pid {self._process.pid}")

        environment = {key: os.environ[key] for key in INHERITED_ENVIRONMENT if key in os.environ}
        environment["PYTHONUNBUFFERED"] = "1"
        environment.update(self.env)

        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_fd, log_name = tempfile.mkstemp(prefix="ingester-", suffix=".log", dir=self.log_dir)
        self.log_path = Path(log_name)
        with os.fdopen(log_fd, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, self.script, *self.args],
                cwd=REPOSITORY_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A process group of its own lets stop() reach any children too.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    def log_text(self) -> str:
        """Return everything the current run has written to stdout and stderr so far."""
        if self.log_path is None:
            return ""
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, substring: str, timeout: float = 10.0) -> str:
        """Wait until ``substring`` appears in the log, and return the whole log.

        Raises AssertionError on timeout, or as soon as the process exits
        without having written ``substring``.
        """

        def substring_logged() -> bool:
            if substring in self.log_text():
                return True
            if self.returncode is not None:
                raise AssertionError(
                    f"The ingester exited with code {self.returncode} before logging {substring!r}"
                )
            return False

        try:
            wait_until(substring_logged, timeout, message=f"{substring!r} in the ingester log")
        except AssertionError as error:
            raise AssertionError(f"{error}\nIngester log:\n{self.log_text()}") from None
        return self.log_text()

    def terminate(self) -> None:
        """Send SIGTERM, as a service manager does to stop the ingester."""
        self._require_process().send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL, which the ingester cannot handle, to simulate a crash."""
        self._require_process().send_signal(signal.SIGKILL)

    def wait(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """Wait for the process to exit and return its exit code.

        Raises AssertionError, with the log, when it still runs after ``timeout`` seconds.
        """
        process = self._require_process()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"The ingester (pid {process.pid}) still runs after {timeout:g} s. "
                f"Log:\n{self.log_text()}"
            ) from None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """Stop the ingester with SIGTERM, or SIGKILL after ``timeout`` seconds.

        Then sends SIGKILL to whatever is left of its process group. Returns
        the exit code, or None when it was never started.
        """
        if self._process is None:
            return None
        code = _stop_process(self._process, timeout)
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return code

    def _require_process(self) -> subprocess.Popen:
        if self._process is None:
            raise RuntimeError("The ingester was not started; call start() first")
        return self._process

    def __enter__(self) -> IngesterProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
