"""Unit tests of write outcome classification and retry backoff."""

import random

import pytest
import urllib3

from telemetry_ingester import writer
from telemetry_ingester.backoff import MAX_DELAY_SECONDS, backoff_delay
from telemetry_ingester.writer import classify_exception, classify_response, parse_retry_after

CLASSIFICATION_CASES = [
    # status, headers, body, api, kind, variable
    (204, {}, "", "v2", writer.OK, None),
    (200, {}, "", "v1", writer.OK, None),
    (500, {}, '{"code":"internal error","message":"boom"}', "v2", writer.RETRY, None),
    (502, {}, "bad gateway", "v2", writer.RETRY, None),
    (503, {"Retry-After": "7"}, "", "v2", writer.RETRY, None),
    (504, {}, "", "v2", writer.RETRY, None),
    (429, {"Retry-After": "3"}, "", "v2", writer.RETRY, None),
    (401, {}, '{"code":"unauthorized","message":"unauthorized access"}', "v2", writer.CONFIG,
     "INFLUX_TOKEN"),
    (403, {}, "", "v2", writer.CONFIG, "INFLUX_TOKEN"),
    (404, {}, '{"code":"not found","message":"bucket \\"x\\" not found"}', "v2", writer.CONFIG,
     "INFLUX_BUCKET"),
    (404, {}, '{"code":"not found","message":"organization name \\"o\\" not found"}', "v2",
     writer.CONFIG, "INFLUX_ORG"),
    (404, {}, '{"error":"database not found: \\"x\\""}', "v1", writer.CONFIG, "INFLUX_BUCKET"),
    (400, {}, '{"code":"invalid","message":"unable to parse"}', "v2", writer.BAD_DATA, None),
    (422, {}, '{"code":"unprocessable entity","message":"field type conflict"}', "v2",
     writer.BAD_DATA, None),
    (400, {}, '{"error":"partial write: field type conflict"}', "v1", writer.BAD_DATA, None),
    (413, {}, "", "v2", writer.TOO_LARGE, None),
    (418, {}, "teapot", "v2", writer.RETRY, None),
]


@pytest.mark.parametrize("status, headers, body, api, kind, variable", CLASSIFICATION_CASES)
def test_classify_response(status, headers, body, api, kind, variable):
    outcome = classify_response(status, headers, body, api)

    assert outcome.kind == kind
    assert outcome.variable == variable


def test_classify_response_keeps_influx_message():
    outcome = classify_response(422, {}, '{"code":"x","message":"field type conflict: f"}')

    assert outcome.detail == "field type conflict: f"


def test_forbidden_names_user_on_v1():
    assert "the user may not write" in classify_response(403, {}, "", "v1").detail
    assert "the token may not write" in classify_response(403, {}, "", "v2").detail


def test_retry_after_is_kept():
    assert classify_response(429, {"Retry-After": "3"}, "").retry_after == 3.0
    assert classify_response(503, {}, "").retry_after is None


def test_parse_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-4") == 0.0


@pytest.mark.parametrize(
    "error, words",
    [
        (urllib3.exceptions.NewConnectionError(None, "refused"), "connection refused"),
        (
            urllib3.exceptions.NameResolutionError("influxdb", None, OSError("no such name")),
            "host name not found",
        ),
        (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), "timed out"),
        (urllib3.exceptions.ProtocolError("reset"), "connection lost"),
        (ConnectionResetError("reset by peer"), "connection lost"),
    ],
)
def test_network_errors_are_retried(error, words):
    outcome = classify_exception(error)

    assert outcome.kind == writer.RETRY
    assert outcome.detail.startswith(words)


def test_backoff_grows_to_the_cap_with_jitter():
    rng = random.Random(7)
    delays = [backoff_delay(attempt, rng) for attempt in range(1, 12)]

    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0
    assert all(MAX_DELAY_SECONDS / 2 <= d <= MAX_DELAY_SECONDS for d in delays[7:])
    assert len(set(delays)) == len(delays)


def test_backoff_honours_retry_after():
    rng = random.Random(1)

    assert backoff_delay(1, rng, retry_after=12.0) == 12.0
    assert backoff_delay(1, rng, retry_after=10_000.0) == 300.0


def test_backoff_rejects_attempt_zero():
    with pytest.raises(ValueError):
        backoff_delay(0, random.Random())
