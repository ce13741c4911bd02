"""The module that writes to InfluxDB.

Only ``check`` also sends requests to InfluxDB, for its read-only checks and
an empty write.

``InfluxWriter.write`` sends one request of line protocol and turns whatever
happens into a ``WriteOutcome`` of one of five kinds. The callers branch only
on the kind:

- ``OK``: stored.
- ``RETRY``: not the data's fault (network, timeout, 5xx, 429); try again later.
- ``CONFIG``: the data is fine but a setting is wrong (token, org, bucket).
- ``BAD_DATA``: InfluxDB rejected some line in the request (400, 422).
- ``TOO_LARGE``: the request body was too large (413); send smaller ones.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Mapping

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from .settings import Settings

log = logging.getLogger(__name__)

OK = "ok"
RETRY = "retry"
CONFIG = "config"
BAD_DATA = "bad_data"
TOO_LARGE = "too_large"

# Status codes whose cause is outside the request: InfluxDB overloaded,
# restarting or behind a proxy that lost it.
RETRY_STATUSES = frozenset((408, 429, 500, 502, 503, 504))

# Maximum length of InfluxDB's error text kept in a log line or a dead-letter header.
MAX_ERROR_TEXT = 500

# gzip level of a request body when INFLUX_GZIP is on. On a batch of 1,000
# telemetry messages, level 6 shrinks the body about 10 times for about 1 us
# of CPU per message. Level 9 saves 2 % more bytes for three times the CPU.
GZIP_LEVEL = 6


@dataclass(frozen=True)
class WriteOutcome:
    kind: str
    status: int | None = None
    detail: str = ""
    # Seconds the server asked us to wait (Retry-After), if it did.
    retry_after: float | None = None
    # For CONFIG: the environment variable to fix.
    variable: str | None = None


WRITTEN = WriteOutcome(OK)


def classify_response(
    status: int, headers: dict[str, str] | None, body: str, api: str = "v2"
) -> WriteOutcome:
    """Classify the HTTP response to a write request. Pure, so it is tested by table."""
    if 200 <= status < 300:
        return WRITTEN
    detail = error_text(body) or f"HTTP {status}"
    retry_after = parse_retry_after(header_value(headers, "Retry-After"))

    if status in RETRY_STATUSES:
        return WriteOutcome(RETRY, status, detail, retry_after)
    if status == 401:
        variable = "INFLUX_TOKEN"
        return WriteOutcome(CONFIG, status, f"unauthorized: {detail}", variable=variable)
    if status == 403:
        reason = "the user may not write to this database" if api == "v1" else (
            "the token may not write to this bucket"
        )
        return WriteOutcome(CONFIG, status, f"forbidden, {reason}: {detail}", variable="INFLUX_TOKEN")
    if status == 404:
        variable = "INFLUX_BUCKET" if api == "v1" else _missing_variable(detail)
        return WriteOutcome(CONFIG, status, f"not found: {detail}", variable=variable)
    if status == 413:
        return WriteOutcome(TOO_LARGE, status, detail)
    if status in (400, 422):
        return WriteOutcome(BAD_DATA, status, detail)
    # Any other status is unexpected; retrying keeps the data safe while an
    # operator looks at the error in the log.
    return WriteOutcome(RETRY, status, detail, retry_after)


def header_value(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Return the value of header ``name``; HTTP header names are case-insensitive."""
    expected = name.lower()
    for key, value in (headers or {}).items():
        if key.lower() == expected:
            return value
    return None


def classify_exception(error: BaseException) -> WriteOutcome:
    """Classify a network failure: always RETRY, with a readable reason."""
    # NameResolutionError is a subclass of NewConnectionError, which is a
    # subclass of urllib3's TimeoutError, so they come first, in this order.
    if isinstance(error, urllib3.exceptions.NameResolutionError):
        reason = "host name not found (check INFLUX_URL)"
    elif isinstance(error, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)):
        reason = "connection refused (check INFLUX_URL and that InfluxDB is running)"
    elif isinstance(error, urllib3.exceptions.TimeoutError):
        reason = "timed out"
    elif isinstance(error, (urllib3.exceptions.ProtocolError, ConnectionError)):
        reason = "connection lost"
    else:
        reason = "request failed"
    return WriteOutcome(RETRY, None, f"{reason}: {type(error).__name__}: {error}"[:MAX_ERROR_TEXT])


def classify_transport_failure(reason: str) -> WriteOutcome:
    """Classify a failure below HTTP that arrived as text: always RETRY, on one line."""
    detail = " ".join(reason.split())
    if "CERTIFICATE_VERIFY_FAILED" in detail or "SSL" in detail:
        detail = f"TLS handshake failed: {detail}; check INFLUX_CA_FILE and INFLUX_URL's host name"
    return WriteOutcome(RETRY, None, detail[:MAX_ERROR_TEXT])


def _missing_variable(detail: str) -> str:
    lowered = detail.lower()
    if "organization" in lowered or "org " in lowered:
        return "INFLUX_ORG"
    return "INFLUX_BUCKET"


def error_text(body: str | bytes | None) -> str:
    """Return InfluxDB's error message from a response body, shortened."""
    if not body:
        return ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = body.strip()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict):
        text = str(document.get("message") or document.get("error") or text)
    return text[:MAX_ERROR_TEXT]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date) into seconds from now."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


class InfluxWriter:
    """Writes line protocol to InfluxDB 2.x (influxdb-client) or 1.x (``/write``).

    InfluxDB 2.x is written through influxdb-client's synchronous write API,
    which sends the request before it returns (its batching WriteApi would
    return before anything is sent). InfluxDB 1.x has no ``/api/v2/write``
    before 1.8, so its ``/write`` endpoint is called through urllib3, the HTTP
    library influxdb-client itself uses.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._api = settings.influx_api
        if self._api == "v2":
            self._client = InfluxDBClient(
                url=settings.influx_url,
                token=settings.influx_token.reveal(),
                org=settings.influx_org,
                timeout=int(settings.influx_timeout_seconds * 1000),
                enable_gzip=settings.influx_gzip,
                ssl_ca_cert=settings.influx_ca_file,
            )
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
            return

        url, self._headers = v1_request(settings)
        self._gzip = settings.influx_gzip
        self._http = urllib3.PoolManager(
            num_pools=1,
            maxsize=1,
            retries=False,
            timeout=urllib3.Timeout(total=settings.influx_timeout_seconds),
            ca_certs=settings.influx_ca_file,
        )
        # The pool is looked up once, so a write skips PoolManager's per-request lookup.
        self._pool = self._http.connection_from_url(url)
        parts = urllib.parse.urlsplit(url)
        self._request_path = f"{parts.path}?{parts.query}"

    @property
    def target(self) -> str:
        """The write destination for log lines, without credentials."""
        return f"{self._settings.influx_url} ({self._api}, bucket {self._settings.influx_bucket})"

    def write(self, body: bytes) -> WriteOutcome:
        """Send ``body`` (newline-separated line protocol) in one request."""
        try:
            if self._api == "v2":
                return self._write_v2(body)
            return self._write_v1(body)
        except ApiException as error:
            if not error.status:
                # influxdb-client reports a failure below HTTP, such as a TLS
                # handshake error, as an ApiException without a status.
                return classify_transport_failure(str(error.reason))
            headers = dict(error.headers or {})
            return classify_response(error.status, headers, error.body or error.reason)
        except urllib3.exceptions.SSLError as error:
            return classify_transport_failure(f"{type(error).__name__}: {error}")
        except (urllib3.exceptions.HTTPError, OSError) as error:
            return classify_exception(error)

    def _write_v2(self, body: bytes) -> WriteOutcome:
        self._write_api.write(
            bucket=self._settings.influx_bucket,
            org=self._settings.influx_org,
            record=body,
            write_precision=WritePrecision.NS,
        )
        return WRITTEN

    def _write_v1(self, body: bytes) -> WriteOutcome:
        if self._gzip:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
        response = self._pool.urlopen(
            "POST", self._request_path, body=body, headers=self._headers, retries=False
        )
        if 200 <= response.status < 300:
            return WRITTEN
        return classify_response(
            response.status,
            dict(response.headers),
            response.data.decode("utf-8", "replace"),
            "v1",
        )

    def close(self) -> None:
        if self._api == "v2":
            self._client.close()
        else:
            self._http.clear()


def v1_request(settings: Settings) -> tuple[str, dict[str, str]]:
    """Build the InfluxDB 1.x ``/write`` URL and headers.

    INFLUX_BUCKET is ``database`` or ``database/retention_policy``, and
    INFLUX_TOKEN is ``user:password`` (or empty credentials as ``:``), the
    same convention InfluxDB 1.8 uses for its v2 compatibility API.
    """
    database, _, policy = settings.influx_bucket.partition("/")
    query = {"db": database, "precision": "ns"}
    if policy:
        query["rp"] = policy
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if settings.influx_gzip:
        headers["Content-Encoding"] = "gzip"
    user, _, password = settings.influx_token.reveal().partition(":")
    if user:
        headers.update(urllib3.make_headers(basic_auth=f"{user}:{password}"))
    url = settings.influx_url + "/write?" + urllib.parse.urlencode(query)
    return url, headers
