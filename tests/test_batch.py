"""Unit tests of BatchWriter's split logic, with a scripted writer and no HTTP."""

import random
import threading

import pytest

from telemetry_ingester import writer
from telemetry_ingester.batch import BatchWriter, Delivery
from telemetry_ingester.mapping import MappedMessage
from telemetry_ingester.metrics import HealthState, Metrics
from telemetry_ingester.writer import WriteOutcome

BAD_LINE = "battery,bot=tb3-005 percentage=\"bad\" 5"


class ScriptedWriter:
    """Rejects with ``status`` any request that contains ``BAD_LINE``; accepts the rest."""

    target = "scripted writer"

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[list[str]] = []

    def write(self, body: bytes) -> WriteOutcome:
        lines = body.decode("utf-8").split("\n")
        self.requests.append(lines)
        if BAD_LINE in lines:
            return writer.classify_response(self.status, {}, '{"message":"field type conflict"}')
        return writer.WRITTEN


def delivery(tag: int) -> Delivery:
    line = BAD_LINE if tag == 5 else f"battery,bot=tb3-{tag:03d} percentage={tag}.0 {tag}"
    mapped = MappedMessage(f"tb3-{tag:03d}", [line], tag, "message", None, 0)
    return Delivery(tag, line.encode(), properties=None, redelivered=False, mapped=mapped)


@pytest.mark.parametrize("status", [400, 422])
def test_split_isolates_one_bad_message(status):
    scripted = ScriptedWriter(status)
    batch_writer = BatchWriter(scripted, Metrics(), HealthState(), random.Random(1))
    deliveries = [delivery(tag) for tag in range(1, 9)]

    result = batch_writer.write(deliveries, threading.Event())

    assert [rejection.delivery.tag for rejection in result.rejected] == [5]
    assert result.rejected[0].outcome.kind == writer.BAD_DATA
    assert result.rejected[0].outcome.status == status
    assert "field type conflict" in result.rejected[0].outcome.detail
    assert result.messages_written == 7
    assert result.points_written == 7
    assert not result.abandoned
    accepted = [line for lines in scripted.requests if BAD_LINE not in lines for line in lines]
    assert sorted(accepted) == sorted(d.mapped.lines[0] for d in deliveries if d.tag != 5)
    # 8 -> 4 + 4; the bad half 4 -> 2 + 2; the bad quarter 2 -> 1 + 1.
    assert [len(lines) for lines in scripted.requests] == [8, 4, 4, 2, 1, 1, 2]
