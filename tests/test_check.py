"""Unit tests of how ``check`` classifies responses of InfluxDB 2.x, 1.x and VictoriaMetrics.

No InfluxDB 2.x server runs in the tests. So its responses are written out
here, and served by a stub on 127.0.0.1, as InfluxDB 2.x sends them. Errors
are JSON objects with ``code`` and ``message``, with the messages of
InfluxDB's source. The responses of InfluxDB 1.6 and VictoriaMetrics 1.79
are exercised against the real servers in test_tools.py.
"""

import http.server
import json
import threading
import urllib.parse

import pytest

from telemetry_ingester.check import (
    FAIL,
    OK,
    SKIP,
    StoreResponse,
    check_store,
    classify_bucket_lookup,
    classify_empty_write,
    offers_bucket_api,
)
from telemetry_ingester.settings import Settings


def influx_error(status, code, message):
    return StoreResponse(status, json.dumps({"code": code, "message": message}), {})


def settings(**env):
    return Settings.from_env({"INFLUX_TOKEN": "secret-token", **env})


BUCKETS_LISTED = json.dumps(
    {"links": {}, "buckets": [{"id": "0123456789abcdef", "name": "turtlebot", "orgID": "1"}]}
)
BUCKETS_EMPTY = json.dumps({"links": {}, "buckets": []})

BUCKET_LOOKUP_CASES = [
    # (response, status, words the line must contain)
    (StoreResponse(200, BUCKETS_LISTED, {}), OK, "bucket 'turtlebot' exists in org 'keti'"),
    (StoreResponse(200, BUCKETS_EMPTY, {}), SKIP, "the empty write decides"),
    (influx_error(401, "unauthorized", "unauthorized access"), FAIL, "check INFLUX_TOKEN"),
    (
        influx_error(404, "not found", 'organization name "keti" not found'),
        SKIP,
        'organization name "keti" not found',
    ),
    (
        StoreResponse(400, 'unsupported path requested: "/api/v2/buckets"\n', {}),
        SKIP,
        "does not offer the bucket API",
    ),
    (StoreResponse(404, "404 page not found\n", {}), SKIP, "does not offer the bucket API"),
    (influx_error(500, "internal error", "boltdb closed"), FAIL, "HTTP 500: boltdb closed"),
]


@pytest.mark.parametrize("response, status, words", BUCKET_LOOKUP_CASES)
def test_bucket_lookup_classification(response, status, words):
    result = classify_bucket_lookup(response, "turtlebot", "keti")

    assert result.status == status
    assert words in result.text


EMPTY_WRITE_CASES = [
    # (INFLUX_API, response, status, words the line must contain)
    ("v2", StoreResponse(204, "", {}), OK, "the bucket exists and the token may write to it"),
    # InfluxDB 2.x before 2.0.9 rejects an empty body after every permission check.
    (
        "v2",
        influx_error(400, "invalid", "writing requires points"),
        OK,
        "the bucket exists and the token may write to it",
    ),
    ("v2", influx_error(401, "unauthorized", "unauthorized access"), FAIL, "check INFLUX_TOKEN"),
    (
        "v2",
        influx_error(403, "forbidden", "insufficient permissions for write"),
        FAIL,
        "grant it write permission on the bucket",
    ),
    (
        "v2",
        influx_error(404, "not found", 'bucket "turtlebot" not found'),
        FAIL,
        "create the bucket, or fix INFLUX_BUCKET",
    ),
    (
        "v2",
        influx_error(404, "not found", 'organization name "keti" not found'),
        FAIL,
        "create the organization, or fix INFLUX_ORG",
    ),
    (
        "v2",
        influx_error(400, "invalid", "invalid precision"),
        FAIL,
        "HTTP 400: invalid precision",
    ),
    ("v1", StoreResponse(204, "", {}), OK, "the database exists"),
    (
        "v1",
        StoreResponse(404, '{"error":"database not found: \\"turtlebot\\""}\n', {}),
        FAIL,
        "create the database (CREATE DATABASE), or fix INFLUX_BUCKET",
    ),
    (
        "v1",
        StoreResponse(401, '{"error":"authorization failed"}\n', {}),
        FAIL,
        "check INFLUX_TOKEN (user:password for INFLUX_API=v1)",
    ),
    (
        "v1",
        StoreResponse(403, '{"error":"\\"tb\\" user is not authorized to write to database"}', {}),
        FAIL,
        "the user may not write there",
    ),
    (
        "v1",
        StoreResponse(500, '{"error":"retention policy not found: week"}\n', {}),
        FAIL,
        "fix the part of INFLUX_BUCKET after the '/'",
    ),
]


@pytest.mark.parametrize("api, response, status, words", EMPTY_WRITE_CASES)
def test_empty_write_classification(api, response, status, words):
    result = classify_empty_write(response, settings(INFLUX_API=api))

    assert result.status == status
    assert words in result.text


def test_empty_write_without_bucket_api_says_unverified():
    result = classify_empty_write(StoreResponse(204, "", {}), settings(), has_bucket_api=False)

    assert result.status == OK
    assert "not InfluxDB 2.x" in result.text
    assert "not that the token or bucket are right" in result.text


def test_bucket_api_detection():
    assert offers_bucket_api(StoreResponse(200, BUCKETS_EMPTY, {}))
    assert offers_bucket_api(influx_error(404, "not found", 'organization name "x" not found'))
    assert not offers_bucket_api(StoreResponse(400, "unsupported path requested", {}))
    assert not offers_bucket_api(StoreResponse(404, "404 page not found", {}))


class InfluxDB2Stub:
    """An HTTP server on 127.0.0.1 that responds like InfluxDB 2.x to the check's requests.

    It serves one org, one bucket and one token with write permission, and
    records every request as (method, path, query, Authorization header, body).
    """

    def __init__(self, org="keti", bucket="turtlebot", token="right-token"):
        self.org, self.bucket, self.token = org, bucket, token
        self.requests = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._serve()

            def do_POST(self):
                self._serve()

            def _serve(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                authorization = self.headers.get("Authorization")
                stub.requests.append((self.command, url.path, query, authorization, body))
                status, document = stub.respond(self.command, url.path, query, authorization)
                payload = json.dumps(document).encode() if document is not None else b""
                self.send_response(status)
                self.send_header("X-Influxdb-Version", "v2.7.11")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def respond(self, method, path, query, authorization):
        if path == "/ping":
            return 204, None
        if authorization != f"Token {self.token}":
            return 401, {"code": "unauthorized", "message": "unauthorized access"}
        if query.get("org") != self.org:
            message = f'organization name "{query.get("org")}" not found'
            return 404, {"code": "not found", "message": message}
        if path == "/api/v2/buckets":
            found = []
            if query.get("name") == self.bucket:
                found.append({"id": "0a1b2c3d4e5f6071", "name": self.bucket})
            return 200, {"links": {}, "buckets": found}
        if path == "/api/v2/write" and method == "POST":
            if query.get("bucket") != self.bucket:
                return 404, {"code": "not found", "message": f'bucket "{query.get("bucket")}" not found'}
            return 204, None
        return 404, {"code": "not found", "message": "path not found"}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.server.shutdown()
        self.server.server_close()


def store_lines(url, **env):
    return [result.line() for result in check_store(settings(INFLUX_URL=url, **env))]


def test_store_checks_pass_on_influxdb2_stub():
    with InfluxDB2Stub(token="secret-token") as stub:
        lines = store_lines(stub.url)

    assert lines == [
        f"OK   InfluxDB server: {stub.url} responds to /ping (InfluxDB v2.7.11)",
        "OK   InfluxDB bucket: bucket 'turtlebot' exists in org 'keti'",
        "OK   InfluxDB write: an empty write to org 'keti' bucket 'turtlebot' was accepted "
        "(HTTP 204): the bucket exists and the token may write to it; nothing was written",
    ]
    method, path, query, authorization, body = stub.requests[-1]
    assert (method, path) == ("POST", "/api/v2/write")
    assert query == {"org": "keti", "bucket": "turtlebot", "precision": "ns"}
    assert authorization == "Token secret-token"
    assert body == b""


def test_store_checks_wrong_token_on_stub():
    with InfluxDB2Stub(token="another-token") as stub:
        lines = store_lines(stub.url)

    assert lines[1].startswith("FAIL InfluxDB bucket: InfluxDB rejected the token (HTTP 401")
    assert lines[1].endswith("check INFLUX_TOKEN")
    assert lines[2] == "SKIP InfluxDB write: not tried, because InfluxDB rejected the token"
    assert [path for _, path, _, _, _ in stub.requests] == ["/ping", "/api/v2/buckets"]


def test_store_checks_missing_bucket_on_stub():
    with InfluxDB2Stub(token="secret-token") as stub:
        lines = store_lines(stub.url, INFLUX_BUCKET="absent")

    assert lines[1].startswith("SKIP InfluxDB bucket: bucket 'absent' is not among the buckets")
    assert lines[2].startswith("FAIL InfluxDB write: org 'keti' bucket 'absent': HTTP 404")
    assert lines[2].endswith("create the bucket, or fix INFLUX_BUCKET")


def test_store_checks_missing_org_on_stub():
    with InfluxDB2Stub(token="secret-token") as stub:
        lines = store_lines(stub.url, INFLUX_ORG="kti")

    assert lines[1].startswith("SKIP InfluxDB bucket: InfluxDB returned HTTP 404")
    assert lines[2].endswith("create the organization, or fix INFLUX_ORG")
