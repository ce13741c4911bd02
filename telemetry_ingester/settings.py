"""Settings read from environment variables, validated in one place.

``Settings.from_env`` takes any mapping, so tests pass a plain dict. Every
error names the variable, the rejected value and what a valid value looks
like. Passwords and tokens are kept in ``Secret`` so that no repr, log line or
error message can show them.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping, TypeVar

T = TypeVar("T")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("plain", "json")
INFLUX_APIS = ("v2", "v1")

# AMQP limits: a queue name is a short string of at most 255 bytes, and
# basic.qos carries prefetch-count as a 16-bit number.
MAX_QUEUE_NAME_BYTES = 255
MAX_PREFETCH_COUNT = 65535
# From this PREFETCH_COUNT up the consumer works in large batches: a batch
# contains at most half the prefetch window, so one half can arrive while the other is
# mapped and written, and MAPPING_PROCESS=auto maps in a helper process.
# Below it the cost of an HTTP request or a hand-over to the helper per batch
# outweighs that overlap (measured by bench/run.py, docs/benchmarks.md).
LARGE_WINDOW_PREFETCH = 200
MAPPING_PROCESS_CHOICES = ("auto", "true", "false")
# RabbitMQ's port for AMQP over TLS, the default when RABBITMQ_TLS is on.
AMQPS_PORT = 5671


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


class Secret:
    """A password or token that never shows its value in repr or str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    """Everything the ingester reads from its environment."""

    rabbitmq_host: str = "localhost"
    rabbitmq_port: int = 5672
    rabbitmq_vhost: str = "/"
    rabbitmq_user: str = "guest"
    rabbitmq_pass: Secret = field(default_factory=lambda: Secret("guest"))
    rabbitmq_heartbeat_seconds: int = 30
    rabbitmq_tls: bool = False
    rabbitmq_tls_ca_file: str | None = None
    rabbitmq_tls_cert_file: str | None = None
    rabbitmq_tls_key_file: str | None = None
    rabbitmq_queue: str = "turtlebot.telemetry"
    dead_letter_queue: str = "turtlebot.telemetry.dead"
    dead_letter_max_length: int = 100_000
    prefetch_count: int = 20
    flush_interval_seconds: float = 0.1
    # "auto", "true" or "false": see uses_mapping_process.
    mapping_process: str = "auto"
    influx_api: str = "v2"
    influx_url: str = "http://localhost:8086"
    influx_token: Secret = field(default_factory=lambda: Secret(""))
    influx_org: str = "keti"
    influx_bucket: str = "turtlebot"
    influx_timeout_seconds: float = 10.0
    influx_gzip: bool = False
    influx_ca_file: str | None = None
    shutdown_timeout_seconds: float = 20.0
    max_hold_seconds: float = 900.0
    log_level: str = "INFO"
    log_format: str = "plain"
    http_port: int = 8080

    @classmethod
    def from_env(cls, env: Mapping[str, str], require_influx: bool = True) -> "Settings":
        """Build settings from ``env``, raising SettingsError on the first bad value.

        With ``require_influx`` false a missing INFLUX_TOKEN is allowed, for
        commands that never talk to InfluxDB.
        """
        reader = _EnvReader(env)
        queue = reader.text("RABBITMQ_QUEUE", cls.rabbitmq_queue)
        tls = reader.boolean("RABBITMQ_TLS", cls.rabbitmq_tls)
        settings = cls(
            rabbitmq_host=reader.text("RABBITMQ_HOST", cls.rabbitmq_host),
            rabbitmq_port=reader.integer(
                "RABBITMQ_PORT", AMQPS_PORT if tls else cls.rabbitmq_port, 1, 65535
            ),
            rabbitmq_vhost=reader.text("RABBITMQ_VHOST", cls.rabbitmq_vhost),
            rabbitmq_user=reader.text("RABBITMQ_USER", cls.rabbitmq_user),
            rabbitmq_pass=reader.secret("RABBITMQ_PASS", "guest"),
            rabbitmq_heartbeat_seconds=reader.integer(
                "RABBITMQ_HEARTBEAT_SECONDS", cls.rabbitmq_heartbeat_seconds, 0, 3600
            ),
            rabbitmq_tls=tls,
            rabbitmq_tls_ca_file=reader.file_path("RABBITMQ_TLS_CA_FILE"),
            rabbitmq_tls_cert_file=reader.file_path("RABBITMQ_TLS_CERT_FILE"),
            rabbitmq_tls_key_file=reader.file_path("RABBITMQ_TLS_KEY_FILE"),
            rabbitmq_queue=queue,
            dead_letter_queue=reader.text("DEAD_LETTER_QUEUE", queue + ".dead"),
            dead_letter_max_length=reader.integer(
                "DEAD_LETTER_MAX_LENGTH", cls.dead_letter_max_length, 1, 2**31 - 1
            ),
            prefetch_count=reader.integer(
                "PREFETCH_COUNT", cls.prefetch_count, 1, MAX_PREFETCH_COUNT
            ),
            flush_interval_seconds=reader.number(
                "FLUSH_INTERVAL_SECONDS", cls.flush_interval_seconds, 0.001, 60.0
            ),
            mapping_process=reader.choice(
                "MAPPING_PROCESS", cls.mapping_process, MAPPING_PROCESS_CHOICES
            ),
            influx_api=reader.choice("INFLUX_API", cls.influx_api, INFLUX_APIS),
            influx_url=reader.url("INFLUX_URL", cls.influx_url),
            influx_token=reader.secret("INFLUX_TOKEN", ""),
            influx_org=reader.text("INFLUX_ORG", cls.influx_org),
            influx_bucket=reader.text("INFLUX_BUCKET", cls.influx_bucket),
            influx_timeout_seconds=reader.number(
                "INFLUX_TIMEOUT_SECONDS", cls.influx_timeout_seconds, 0.1, 300.0
            ),
            influx_gzip=reader.boolean("INFLUX_GZIP", cls.influx_gzip),
            influx_ca_file=reader.file_path("INFLUX_CA_FILE"),
            shutdown_timeout_seconds=reader.number(
                "SHUTDOWN_TIMEOUT_SECONDS", cls.shutdown_timeout_seconds, 1.0, 3600.0
            ),
            max_hold_seconds=reader.number(
                "MAX_HOLD_SECONDS", cls.max_hold_seconds, 1.0, 86400.0
            ),
            log_level=reader.choice("LOG_LEVEL", cls.log_level, LOG_LEVELS, upper=True),
            log_format=reader.choice("LOG_FORMAT", cls.log_format, LOG_FORMATS),
            http_port=reader.integer("HTTP_PORT", cls.http_port, 0, 65535),
        )
        settings._check_consistency(require_influx)
        return settings

    def _check_consistency(self, require_influx: bool) -> None:
        for name, value in (
            ("RABBITMQ_QUEUE", self.rabbitmq_queue),
            ("DEAD_LETTER_QUEUE", self.dead_letter_queue),
        ):
            if len(value.encode("utf-8")) > MAX_QUEUE_NAME_BYTES:
                raise SettingsError(
                    f"{name} is invalid: {value[:40]!r}... is longer than "
                    f"{MAX_QUEUE_NAME_BYTES} bytes, the AMQP limit for a queue name"
                )
            if value.startswith("amq."):
                raise SettingsError(
                    f"{name} is invalid: {value!r} starts with 'amq.', "
                    "which RabbitMQ reserves for its own queues"
                )
        if self.rabbitmq_tls_key_file and not self.rabbitmq_tls_cert_file:
            raise SettingsError(
                "RABBITMQ_TLS_CERT_FILE is missing: RABBITMQ_TLS_KEY_FILE is set, and a "
                "client key needs its certificate"
            )
        if self.dead_letter_queue == self.rabbitmq_queue:
            raise SettingsError(
                f"DEAD_LETTER_QUEUE is invalid: {self.dead_letter_queue!r} is the "
                "telemetry queue itself; choose another name, for example "
                f"{self.rabbitmq_queue + '.dead'!r}"
            )
        if require_influx and not self.influx_token:
            raise SettingsError(
                "INFLUX_TOKEN is missing: set it to an InfluxDB API token with "
                "write access to the bucket (for INFLUX_API=v1, 'user:password')"
            )

    @property
    def large_window(self) -> bool:
        """Whether PREFETCH_COUNT is large enough to split the window (LARGE_WINDOW_PREFETCH)."""
        return self.prefetch_count >= LARGE_WINDOW_PREFETCH

    @property
    def uses_mapping_process(self) -> bool:
        """Whether messages are mapped in a helper process: MAPPING_PROCESS, where auto means a large window."""
        if self.mapping_process == "auto":
            return self.large_window
        return self.mapping_process == "true"

    def describe(self) -> str:
        """Return every setting as ``name=value`` pairs, secrets masked."""
        parts = []
        for item in fields(self):
            parts.append(f"{item.name}={getattr(self, item.name)!r}")
        return " ".join(parts)


class _EnvReader:
    """Typed access to an environment mapping, with errors that name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _parse(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        return parse(raw)

    def text(self, name: str, default: str) -> str:
        return self._parse(name, default, lambda raw: raw)

    def secret(self, name: str, default: str) -> Secret:
        """Read ``name``, or the file named by ``name + "_FILE"`` (a mounted Secret).

        A secret keeps surrounding spaces, which may belong to the password;
        only the line break that ends a file is removed.
        """
        value = self._env.get(name)
        file_variable = name + "_FILE"
        path = self.file_path(file_variable)
        if path is not None:
            if value:
                raise SettingsError(
                    f"{name} and {file_variable} are both set: keep only one of them"
                )
            try:
                with open(path, encoding="utf-8") as secret_file:
                    value = secret_file.read().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as error:
                raise SettingsError(
                    f"{file_variable} is invalid: cannot read {path!r}: {error}"
                ) from None
            if not value:
                raise SettingsError(f"{file_variable} is invalid: {path!r} is empty")
        if value is None or value == "":
            return Secret(default)
        return Secret(value)

    def file_path(self, name: str) -> str | None:
        def parse(raw: str) -> str:
            if not os.path.isfile(raw):
                raise SettingsError(f"{name} is invalid: {raw!r} is not a file")
            if not os.access(raw, os.R_OK):
                raise SettingsError(f"{name} is invalid: {raw!r} is not readable")
            return raw

        return self._parse(name, None, parse)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        def parse(raw: str) -> int:
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(
                    f"{name} is invalid: {raw!r} is not a whole number "
                    f"(expected {low} to {high})"
                ) from None
            if not low <= value <= high:
                raise SettingsError(
                    f"{name} is invalid: {value} is out of range (expected {low} to {high})"
                )
            return value

        return self._parse(name, default, parse)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        def parse(raw: str) -> float:
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(
                    f"{name} is invalid: {raw!r} is not a number (expected {low} to {high})"
                ) from None
            if not low <= value <= high:
                raise SettingsError(
                    f"{name} is invalid: {raw} is out of range (expected {low} to {high})"
                )
            return value

        return self._parse(name, default, parse)

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise SettingsError(f"{name} is invalid: {raw!r} (expected true or false)")

        return self._parse(name, default, parse)

    def choice(
        self, name: str, default: str, allowed: tuple[str, ...], upper: bool = False
    ) -> str:
        def parse(raw: str) -> str:
            value = raw.upper() if upper else raw.lower()
            if value not in allowed:
                raise SettingsError(
                    f"{name} is invalid: {raw!r} (expected one of {', '.join(allowed)})"
                )
            return value

        return self._parse(name, default, parse)

    def url(self, name: str, default: str) -> str:
        def parse(raw: str) -> str:
            parsed = urllib.parse.urlsplit(raw)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise SettingsError(
                    f"{name} is invalid: {_mask_url(raw)!r} (expected an http:// or "
                    "https:// URL with a host, for example http://influxdb:8086)"
                )
            if parsed.username or parsed.password:
                raise SettingsError(
                    f"{name} is invalid: {_mask_url(raw)!r} carries credentials; "
                    "put the token in INFLUX_TOKEN instead"
                )
            try:
                parsed.port
            except ValueError:
                raise SettingsError(
                    f"{name} is invalid: {_mask_url(raw)!r} has an invalid port"
                ) from None
            return raw.rstrip("/")

        return self._parse(name, default, parse)


def _mask_url(raw: str) -> str:
    """Hide any ``user:password@`` part of a URL before it goes into a message."""
    parsed = urllib.parse.urlsplit(raw)
    if "@" not in parsed.netloc:
        return raw
    host = parsed.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parsed._replace(netloc="***@" + host))
