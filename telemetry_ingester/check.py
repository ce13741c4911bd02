"""``ingester.py check``: test the settings against the real broker and store.

Each check prints one line: ``OK``, ``FAIL`` or ``SKIP``, what was checked,
and for a failure the setting to fix. The exit status is 0 when no check
failed, 1 when one did and 2 when the settings are invalid. A ``SKIP`` is a
check that the server does not support or that an earlier failure made
pointless. It does not fail the command.

How the store checks prove write permission without writing data
-----------------------------------------------------------------

The command sends a write request with an empty body to the same endpoint
the ingester writes to. Nothing is stored, because the request contains no
point.

- InfluxDB 2.x (``POST /api/v2/write``) authenticates the token, then looks
  up the organization and the bucket, then checks the token's write
  permission on that bucket, and only then parses the body (read in the
  write handler of InfluxDB's source, ``http/write_handler.go``). So 401,
  404 and 403 name the token, the org or bucket, and the permission. Since
  InfluxDB 2.0.9 (its release notes: "Allow empty request bodies to write
  api") an empty body passing those checks gets 204. Older 2.x releases
  return 400 "writing requires points" after the same checks, which counts
  as accepted too.
- InfluxDB 1.x (``POST /write?db=``) checks that the database exists (404),
  then, with authentication on, the user's write privilege (403), and
  returns 204 for an empty body. Observed on InfluxDB 1.6.7: an unknown
  retention policy (``INFLUX_BUCKET=db/rp``) gets 500 "retention policy not
  found", and a missing database 404.

What this does not prove: that InfluxDB will accept the ingester's points,
which a field type conflict with older data, a retention period shorter than
the point age or a full disk can still prevent. With InfluxDB 1.x
authentication off, it proves nothing about credentials either, because any
credentials pass.

The InfluxDB 2.x bucket API (``GET /api/v2/buckets?name=&org=``) is queried
first, because it tells "the bucket exists" apart from "the token may
write". It lists only buckets that the token may read (``FindBuckets`` in
InfluxDB's ``authorizer/bucket.go``), so a write-only token sees no bucket
there. An unlisted bucket is therefore a SKIP, and the empty write decides. ``GET /api/v2/authorizations`` would list the token's
permissions, but only for a token that may read authorizations, so it is
not used.

Servers without the bucket API, such as VictoriaMetrics (1.79 returns 400
"unsupported path requested"), accept any write at this URL, whatever the
token and bucket. For them the output says that only the write endpoint was
checked.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Mapping, TextIO

import pika
import pika.exceptions
import urllib3

from .consumer import connection_parameters
from .settings import Settings
from .writer import header_value, v1_request
from .tools import (
    BROKER_ERRORS,
    EXIT_FAILED,
    EXIT_OK,
    ToolError,
    broker_address,
    close_quietly,
    configure_tool_logging,
    count_noun,
    describe_broker_failure,
    describe_queue_error,
    load_settings,
    safe_text,
)

OK = "OK"
FAIL = "FAIL"
SKIP = "SKIP"

# InfluxDB 2.x before 2.0.9 returns HTTP 400 with this message for an empty
# write that passed every permission check.
EMPTY_WRITE_MESSAGE = "writing requires points"

# Maximum length, in characters, of a server message quoted in an output line.
MAX_DETAIL_CHARS = 200

CONNECTION_NAME = "metrics-ingester-check"


@dataclass(frozen=True)
class CheckResult:
    status: str
    name: str
    text: str

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.text}"


@dataclass(frozen=True)
class StoreResponse:
    status: int
    body: str
    headers: Mapping[str, str]

    @property
    def message(self) -> str:
        """The server's error message: InfluxDB's JSON ``message`` or ``error``, or the text."""
        text = self.body.strip()
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if isinstance(document, dict):
            text = str(document.get("message") or document.get("error") or text)
        return safe_text(" ".join(text.split()), MAX_DETAIL_CHARS) or f"HTTP {self.status}"

    @property
    def is_influxdb_error(self) -> bool:
        """Whether the body is an InfluxDB 2.x error object: JSON with ``code`` and ``message``."""
        try:
            document = json.loads(self.body)
        except ValueError:
            return False
        return isinstance(document, dict) and "code" in document and "message" in document


class StoreUnreachable(Exception):
    """The request to the store got no response: connection refused, timeout, TLS failure."""


def main(env: Mapping[str, str], out: TextIO | None = None) -> int:
    """Run every check, print one line each and a summary, and return the exit status."""
    out = sys.stdout if out is None else out
    configure_tool_logging()
    try:
        settings = load_settings(env)
    except ToolError as error:
        print(error, file=sys.stderr)
        return error.exit_code

    results: list[CheckResult] = []
    for result in check_broker(settings):
        results.append(result)
        print(result.line(), file=out, flush=True)
    for result in check_store(settings):
        results.append(result)
        print(result.line(), file=out, flush=True)

    failed = sum(1 for result in results if result.status == FAIL)
    if failed:
        print(f"{failed} of {len(results)} checks failed", file=out)
        return EXIT_FAILED
    skipped = sum(1 for result in results if result.status == SKIP)
    passed = len(results) - skipped
    summary = f"All checks passed ({passed} passed"
    summary += f", {skipped} skipped)" if skipped else ")"
    print(summary, file=out)
    return EXIT_OK


# -- RabbitMQ ---------------------------------------------------------------


def check_broker(settings: Settings):
    """Yield the results of the RabbitMQ checks: connection, queue, dead-letter queue."""
    try:
        connection = pika.BlockingConnection(connection_parameters(settings, CONNECTION_NAME))
    except BROKER_ERRORS as error:
        yield CheckResult(FAIL, "RabbitMQ connection", describe_broker_failure(settings, error))
        for name in ("RabbitMQ queue", "RabbitMQ dead-letter queue"):
            yield CheckResult(SKIP, name, "not checked, because the broker connection failed")
        return

    try:
        yield CheckResult(
            OK,
            "RabbitMQ connection",
            f"connected to {broker_address(settings)} as user {settings.rabbitmq_user}",
        )
        yield _check_queue(
            connection,
            settings,
            "RabbitMQ queue",
            settings.rabbitmq_queue,
            "RABBITMQ_QUEUE",
            "start the ingester or the robots' publisher, which declare it",
        )
        yield _check_queue(
            connection,
            settings,
            "RabbitMQ dead-letter queue",
            settings.dead_letter_queue,
            "DEAD_LETTER_QUEUE",
            "start the ingester, which declares it",
        )
    finally:
        close_quietly(connection)


def _check_queue(connection: pika.BlockingConnection, settings: Settings, name: str,
                 queue: str, variable: str, remedy: str) -> CheckResult:
    try:
        # A passive declare fails with 404 instead of creating the queue. The
        # broker closes the channel on failure, so each check opens its own.
        channel = connection.channel()
        declared = channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        return CheckResult(FAIL, name, describe_queue_error(error, queue, settings, variable, remedy))
    except BROKER_ERRORS as error:
        return CheckResult(FAIL, name, f"checking queue {queue!r} failed: {type(error).__name__}: {error}")
    channel.close()

    method = declared.method
    return CheckResult(
        OK,
        name,
        f"queue {queue!r} exists: {count_noun(method.message_count, 'message')} ready, "
        f"{count_noun(method.consumer_count, 'consumer')}",
    )



# -- InfluxDB ---------------------------------------------------------------


class StoreClient:
    """HTTP client of the store checks, with the ingester's URL, CA file and timeout."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http = urllib3.PoolManager(
            num_pools=1,
            retries=False,
            timeout=urllib3.Timeout(total=settings.influx_timeout_seconds),
            ca_certs=settings.influx_ca_file,
        )

    def request(self, method: str, path: str, query: Mapping[str, str], body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> StoreResponse:
        url = self._settings.influx_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        try:
            raw = self._http.request(method, url, body=body, headers=dict(headers or {}))
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise StoreUnreachable(_describe_network_error(error)) from None
        return StoreResponse(raw.status, raw.data.decode("utf-8", "replace"), dict(raw.headers))

    def close(self) -> None:
        self._http.clear()


def _describe_network_error(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    if isinstance(reason, (ssl.SSLError, urllib3.exceptions.SSLError)):
        return (
            f"TLS failed: {reason}; check INFLUX_CA_FILE and that INFLUX_URL names the host "
            "in the certificate"
        )
    if isinstance(error, urllib3.exceptions.NameResolutionError) or isinstance(
        reason, urllib3.exceptions.NameResolutionError
    ):
        return "host name not found; check the host in INFLUX_URL"
    connection_refused = isinstance(error, urllib3.exceptions.NewConnectionError) or isinstance(
        reason, ConnectionRefusedError
    )
    if connection_refused:
        return "connection refused; check INFLUX_URL and that InfluxDB is running"
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return "timed out; check INFLUX_URL, INFLUX_TIMEOUT_SECONDS and that InfluxDB is running"
    return f"request failed: {type(error).__name__}: {error}"[:300]


def check_store(settings: Settings):
    """Yield the results of the InfluxDB checks: server, bucket (v2 only), empty write."""
    client = StoreClient(settings)
    try:
        try:
            yield _check_server(client, settings)
        except StoreUnreachable as error:
            yield CheckResult(FAIL, "InfluxDB server", f"{settings.influx_url}: {error}")
            names = ("InfluxDB bucket", "InfluxDB write") if settings.influx_api == "v2" else (
                "InfluxDB write",
            )
            for name in names:
                yield CheckResult(SKIP, name, "not checked, because InfluxDB is unreachable")
            return
        try:
            if settings.influx_api == "v2":
                yield from _check_v2(client, settings)
            else:
                yield _check_v1_write(client, settings)
        except StoreUnreachable as error:
            yield CheckResult(FAIL, "InfluxDB write", f"{settings.influx_url}: {error}")
    finally:
        client.close()


def _check_server(client: StoreClient, settings: Settings) -> CheckResult:
    """Check with ``GET /ping``, which InfluxDB 1.x and 2.x and VictoriaMetrics serve without a token."""
    response = client.request("GET", "/ping", {})
    if response.status >= 400:
        return CheckResult(
            FAIL,
            "InfluxDB server",
            f"{settings.influx_url}/ping returned HTTP {response.status} ({response.message}); "
            "check that INFLUX_URL is InfluxDB's base URL",
        )
    version = header_value(response.headers, "X-Influxdb-Version")
    server = f"InfluxDB {version}" if version else "a server that does not report an InfluxDB version"
    return CheckResult(OK, "InfluxDB server", f"{settings.influx_url} responds to /ping ({server})")


def _check_v2(client: StoreClient, settings: Settings):
    token_header = {"Authorization": "Token " + settings.influx_token.reveal()}
    bucket = settings.influx_bucket
    org = settings.influx_org

    lookup = client.request("GET", "/api/v2/buckets", {"name": bucket, "org": org}, headers=token_header)
    yield classify_bucket_lookup(lookup, bucket, org)
    if lookup.status == 401:
        yield CheckResult(SKIP, "InfluxDB write", "not tried, because InfluxDB rejected the token")
        return

    response = client.request(
        "POST",
        "/api/v2/write",
        {"org": org, "bucket": bucket, "precision": "ns"},
        body=b"",
        headers={**token_header, "Content-Type": "text/plain; charset=utf-8"},
    )
    yield classify_empty_write(response, settings, offers_bucket_api(lookup))


def offers_bucket_api(response: StoreResponse) -> bool:
    """Return whether the server that sent ``response`` to ``GET /api/v2/buckets`` has that API.

    InfluxDB 2.x sends every error as a JSON object with ``code`` and
    ``message``. Anything else with 400, 404 or 405 means that the path is unknown.
    """
    return response.status not in (400, 404, 405) or response.is_influxdb_error


def classify_bucket_lookup(response: StoreResponse, bucket: str, org: str) -> CheckResult:
    """Turn the response to ``GET /api/v2/buckets?name=&org=`` into a check result."""
    name = "InfluxDB bucket"
    if response.status == 200:
        try:
            listed = json.loads(response.body).get("buckets") or []
        except (ValueError, AttributeError):
            listed = None
        if listed is None:
            return CheckResult(
                SKIP, name, "the bucket API returned unexpected content; the empty write decides"
            )
        if any(item.get("name") == bucket for item in listed if isinstance(item, dict)):
            return CheckResult(OK, name, f"bucket {bucket!r} exists in org {org!r}")
        return CheckResult(
            SKIP,
            name,
            f"bucket {bucket!r} is not among the buckets of org {org!r} that the token may read "
            "(it is missing, or the token may write but not read); the empty write decides",
        )
    if response.status == 401:
        return CheckResult(
            FAIL, name, f"InfluxDB rejected the token (HTTP 401: {response.message}); check INFLUX_TOKEN"
        )
    if response.status == 404 and response.is_influxdb_error:
        # "organization name \"keti\" not found": missing, or not readable with this token.
        return CheckResult(
            SKIP,
            name,
            f"InfluxDB returned HTTP 404: {response.message} (the org is missing, or the token "
            "may not read it); the empty write decides",
        )
    if not offers_bucket_api(response):
        return CheckResult(
            SKIP,
            name,
            f"the server does not offer the bucket API (HTTP {response.status} on "
            "/api/v2/buckets, as from VictoriaMetrics); only the write endpoint can be checked",
        )
    return CheckResult(
        FAIL,
        name,
        f"the bucket API returned HTTP {response.status}: {response.message}; check the InfluxDB log",
    )


def classify_empty_write(
    response: StoreResponse, settings: Settings, has_bucket_api: bool = True
) -> CheckResult:
    """Turn the response to an empty write request into a check result."""
    name = "InfluxDB write"
    v1 = settings.influx_api == "v1"
    target = _write_target(settings)
    accepted = 200 <= response.status < 300 or (
        response.status == 400 and EMPTY_WRITE_MESSAGE in response.message.lower()
    )

    if accepted:
        if v1:
            proven = (
                "the database exists, and the user may write to it unless InfluxDB runs "
                "with authentication off, where any credentials pass"
            )
        elif has_bucket_api:
            proven = "the bucket exists and the token may write to it"
        else:
            proven = (
                "the server has no bucket API, so it is not InfluxDB 2.x, and this shows only "
                "that it accepts writes at this URL, not that the token or bucket are right"
            )
        return CheckResult(
            OK,
            name,
            f"an empty write to {target} was accepted (HTTP {response.status}): {proven}; "
            "nothing was written",
        )

    detail = f"HTTP {response.status}: {response.message}"
    if response.status == 401:
        fix = "check INFLUX_TOKEN" + (" (user:password for INFLUX_API=v1)" if v1 else "")
        return CheckResult(FAIL, name, f"{target}: credentials rejected ({detail}); {fix}")
    if response.status == 403:
        grantee = "user" if v1 else "token"
        return CheckResult(
            FAIL,
            name,
            f"{target}: the {grantee} may not write there ({detail}); grant it write "
            "permission on the bucket, or set INFLUX_TOKEN to one that has it",
        )
    if response.status == 404:
        return CheckResult(FAIL, name, f"{target}: {detail}; {_missing_fix(response.message, v1)}")
    if "retention policy not found" in response.message.lower():
        return CheckResult(
            FAIL,
            name,
            f"{target}: {detail}; create the retention policy, or fix the part of "
            "INFLUX_BUCKET after the '/'",
        )
    return CheckResult(FAIL, name, f"{target}: {detail}; check INFLUX_URL and the InfluxDB log")


def _write_target(settings: Settings) -> str:
    if settings.influx_api == "v1":
        return f"database {settings.influx_bucket!r}"
    return f"org {settings.influx_org!r} bucket {settings.influx_bucket!r}"


def _missing_fix(message: str, v1: bool) -> str:
    lowered = message.lower()
    if v1:
        return "create the database (CREATE DATABASE), or fix INFLUX_BUCKET"
    if "organization" in lowered or "org " in lowered:
        return "create the organization, or fix INFLUX_ORG"
    return "create the bucket, or fix INFLUX_BUCKET"


def _check_v1_write(client: StoreClient, settings: Settings) -> CheckResult:
    # The same URL and credentials as the ingester's own writes.
    url, headers = v1_request(settings)
    path_and_query = url[len(settings.influx_url):]
    response = client.request("POST", path_and_query, {}, body=b"", headers=headers)
    return classify_empty_write(response, settings)
