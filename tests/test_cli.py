"""Unit tests of the command line's stop request and argument routing."""

import pytest

from telemetry_ingester.cli import StopRequest, build_parser, main


def test_stop_request_keeps_first_time():
    stop = StopRequest()
    assert stop.requested_at is None

    stop.set()
    first = stop.requested_at
    stop.set()

    assert stop.is_set()
    assert first is not None
    assert stop.requested_at == first


def test_simulate_help_reaches_simulator(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["simulate", "--help"])

    assert caught.value.code == 0
    assert "ingester.py simulate" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["bogus"])

    assert caught.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
