"""Unit tests of BatchWriter's split logic, with a scripted writer and no HTTP."""

import random
import threading

import pytest

from telemetry_ingester import writer
from telemetry_ingester.batch import Batch, BatchWriter, Delivery
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


def line_of(tag: int) -> str:
    return BAD_LINE if tag == 5 else f"battery,bot=tb3-{tag:03d} percentage={tag}.0 {tag}"


def batch_of(tags: list[int]) -> Batch:
    """Return a batch with one delivery and one line per tag."""
    lines = [line_of(tag) for tag in tags]
    deliveries = [
        Delivery(tag, line.encode(), None, redelivered=False, received_ns=0)
        for tag, line in zip(tags, lines)
    ]
    bots = [f"tb3-{tag:03d}" for tag in tags]
    return Batch(deliveries, [line.encode() for line in lines], bots, [1] * len(tags))


@pytest.mark.parametrize("status", [400, 422])
def test_split_isolates_one_bad_message(status):
    scripted = ScriptedWriter(status)
    batch_writer = BatchWriter(scripted, Metrics(), HealthState(), random.Random(1))
    tags = list(range(1, 9))

    result = batch_writer.write(batch_of(tags), threading.Event())

    assert [rejection.delivery.tag for rejection in result.rejected] == [5]
    assert result.rejected[0].bot == "tb3-005"
    assert result.rejected[0].outcome.kind == writer.BAD_DATA
    assert result.rejected[0].outcome.status == status
    assert "field type conflict" in result.rejected[0].outcome.detail
    assert result.messages_written == 7
    assert result.points_written == 7
    assert not result.abandoned
    accepted = [line for lines in scripted.requests if BAD_LINE not in lines for line in lines]
    assert sorted(accepted) == sorted(line_of(tag) for tag in tags if tag != 5)
    # 8 -> 4 + 4; the bad half 4 -> 2 + 2; the bad quarter 2 -> 1 + 1.
    assert [len(lines) for lines in scripted.requests] == [8, 4, 4, 2, 1, 1, 2]
