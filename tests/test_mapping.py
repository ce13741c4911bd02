"""Unit tests of the message-to-line-protocol mapping."""

import json
import math

import pytest

from telemetry_ingester import mapping
from telemetry_ingester.mapping import InvalidMessage, map_message, to_nanoseconds

# 2024-12-04T08:13:20.123456789Z, the README's example time.
TS_NS = 1733300000123456789
RECEIVED_NS = 1733300005000000000

README_EXAMPLE = {
    "type": "telemetry",
    "ts": TS_NS,
    "bot": "tb3-007",
    "battery": {"percentage": 80.0, "voltage": 12.6, "wh": 50.0},
    "pose": {"x": 1.5, "y": 2.3},
}


@pytest.fixture(autouse=True, params=["orjson", "json"])
def decoder(request, monkeypatch):
    """Run every test with orjson and again with the standard library alone."""
    if request.param == "json":
        monkeypatch.setattr(mapping, "orjson", None)
    elif mapping.orjson is None:
        pytest.skip("orjson is not installed")
    return request.param


def encode(document) -> bytes:
    return json.dumps(document).encode("utf-8")


def message(**changes):
    document = {"type": "telemetry", "ts": TS_NS, "bot": "tb3-001"}
    document.update(changes)
    return document


def lines_of(document, amqp_timestamp=None):
    return map_message(encode(document), amqp_timestamp, RECEIVED_NS).lines


def test_readme_example_maps_to_two_points():
    result = map_message(encode(README_EXAMPLE), None, RECEIVED_NS)

    assert result.lines == [
        "battery,bot=tb3-007 percentage=80.0,voltage=12.6,wh=50.0 1733300000123456789",
        "pose,bot=tb3-007 x=1.5,y=2.3 1733300000123456789",
    ]
    assert result.bot == "tb3-007"
    assert result.timestamp_source == "message"
    assert result.converted_from is None
    assert result.skipped_fields == 0


def test_either_section_may_be_missing():
    assert lines_of(message(pose={"x": 1, "y": 2})) == [
        f"pose,bot=tb3-001 x=1.0,y=2.0 {TS_NS}"
    ]
    assert lines_of(message(battery={"voltage": 12})) == [
        f"battery,bot=tb3-001 voltage=12.0 {TS_NS}"
    ]


def test_integers_are_written_as_floats():
    (line,) = lines_of(message(battery={"percentage": 80, "voltage": 12, "wh": 0}))

    assert line == f"battery,bot=tb3-001 percentage=80.0,voltage=12.0,wh=0.0 {TS_NS}"
    assert "i" not in line.split(" ")[1]


@pytest.mark.parametrize(
    "section, expected_fields",
    [
        ({"linear": 0.2, "angular": -0.5}, "linear=0.2,angular=-0.5"),
        ({"accel": {"x": 0.1, "y": {"raw": 3}}}, "accel_x=0.1,accel_y_raw=3.0"),
        ({"moving": True, "docked": False}, "moving=true,docked=false"),
        ({"mode": "auto"}, 'mode="auto"'),
        ({"note": 'say "hi" \\o/'}, 'note="say \\"hi\\" \\\\o/"'),
        ({"big": 10**20}, "big=1e+20"),
    ],
)
def test_other_sections_become_measurements(section, expected_fields):
    (line,) = lines_of(message(velocity=section))

    assert line == f"velocity,bot=tb3-001 {expected_fields} {TS_NS}"


@pytest.mark.parametrize("absent", [None, float("nan"), float("inf"), float("-inf")])
def test_absent_reading_skips_only_that_field(absent):
    body = json.dumps(message(battery={"percentage": absent, "voltage": 12.5})).encode()
    result = map_message(body, None, RECEIVED_NS)

    assert result.lines == [f"battery,bot=tb3-001 voltage=12.5 {TS_NS}"]
    assert result.skipped_fields == 1


def test_unstorable_values_are_skipped_and_counted():
    section = {"list": [1, 2], "_hidden": 1, "time": 5, "text": "a\nb", "huge": 10**400, "ok": 1}
    result = map_message(encode(message(extra=section)), None, RECEIVED_NS)

    assert result.lines == [f"extra,bot=tb3-001 ok=1.0 {TS_NS}"]
    assert result.skipped_fields == 5


def test_non_object_top_level_keys_are_ignored():
    assert lines_of(message(seq=5, tags=["a"], pose={"x": 1, "y": 2})) == [
        f"pose,bot=tb3-001 x=1.0,y=2.0 {TS_NS}"
    ]


@pytest.mark.parametrize(
    "bot, escaped",
    [
        ("tb3 007", "tb3\\ 007"),
        ("tb3,007", "tb3\\,007"),
        ("tb3=007", "tb3\\=007"),
        ("터틀봇-7", "터틀봇-7"),
        ("a, b=c", "a\\,\\ b\\=c"),
    ],
)
def test_bot_tag_is_escaped(bot, escaped):
    (line,) = lines_of(message(bot=bot, pose={"x": 1, "y": 2}))

    assert line.startswith(f"pose,bot={escaped} x=")


def test_bot_is_normalised_to_nfc():
    decomposed = "\u1110\u1165\u1110\u1173\u11af"  # 터틀 as conjoining jamo
    result = map_message(encode(message(bot=decomposed, pose={"x": 1})), None, RECEIVED_NS)

    assert result.bot == "터틀"
    assert result.lines[0].startswith("pose,bot=터틀 ")


def test_section_and_field_names_are_escaped():
    (line,) = lines_of(message(**{"my section": {"a b": 1, "c,d": 2, "e=f": 3}}))

    assert line == f"my\\ section,bot=tb3-001 a\\ b=1.0,c\\,d=2.0,e\\=f=3.0 {TS_NS}"


def test_nanosecond_timestamp_is_exact():
    for ts in (TS_NS, 1733300000000000001, 1733300000999999999):
        (line,) = lines_of(message(ts=ts, pose={"x": 1}))
        assert line.endswith(" " + str(ts))


@pytest.mark.parametrize(
    "value, expected_ns, unit",
    [
        (1733300000, 1733300000000000000, "s"),
        (1733300000.123456, 1733300000123456000, "s"),
        (1733300000.5, 1733300000500000000, "s"),
        (1733300000123, 1733300000123000000, "ms"),
        (1733300000123.5, 1733300000123500000, "ms"),
        (1733300000123456, 1733300000123456000, "us"),
        (TS_NS, TS_NS, None),
    ],
)
def test_timestamp_units_are_converted(value, expected_ns, unit):
    assert to_nanoseconds(value) == (expected_ns, unit)

    result = map_message(encode(message(ts=value, pose={"x": 1})), None, RECEIVED_NS)
    assert result.timestamp_ns == expected_ns
    assert result.converted_from == unit


def test_missing_ts_uses_amqp_timestamp_then_receipt():
    document = message(pose={"x": 1})
    del document["ts"]

    with_amqp = map_message(encode(document), 1733300001, RECEIVED_NS)
    assert with_amqp.timestamp_ns == 1733300001 * 10**9
    assert with_amqp.timestamp_source == "amqp"

    without = map_message(encode(document), None, RECEIVED_NS)
    assert without.timestamp_ns == RECEIVED_NS
    assert without.timestamp_source == "receipt"


def test_utf8_bom_is_stripped():
    result = map_message(b"\xef\xbb\xbf" + encode(README_EXAMPLE), None, RECEIVED_NS)

    assert len(result.lines) == 2


DEAD_LETTER_CASES = [
    ("not utf-8", b"\xff\xfe{}", mapping.REASON_NOT_UTF8),
    ("not json", b'{"type": ', mapping.REASON_NOT_JSON),
    ("empty body", b"", mapping.REASON_NOT_JSON),
    ("json array", b"[1, 2]", mapping.REASON_NOT_OBJECT),
    ("json string", b'"telemetry"', mapping.REASON_NOT_OBJECT),
    ("type missing", encode({"bot": "a", "pose": {"x": 1}}), mapping.REASON_UNKNOWN_TYPE),
    ("type status", encode(message(type="status", pose={"x": 1})), mapping.REASON_UNKNOWN_TYPE),
    ("bot missing", encode({"type": "telemetry", "pose": {"x": 1}}), mapping.REASON_INVALID_BOT),
    ("bot blank", encode(message(bot="  ", pose={"x": 1})), mapping.REASON_INVALID_BOT),
    ("bot number", encode(message(bot=7, pose={"x": 1})), mapping.REASON_INVALID_BOT),
    ("bot backslash", encode(message(bot="tb3\\", pose={"x": 1})), mapping.REASON_INVALID_BOT),
    ("bot newline", encode(message(bot="tb\n3", pose={"x": 1})), mapping.REASON_INVALID_BOT),
    ("ts string", encode(message(ts="1733300000", pose={"x": 1})), mapping.REASON_INVALID_TS),
    ("ts boolean", encode(message(ts=True, pose={"x": 1})), mapping.REASON_INVALID_TS),
    ("ts zero", encode(message(ts=0, pose={"x": 1})), mapping.REASON_INVALID_TS),
    ("ts negative", encode(message(ts=-5, pose={"x": 1})), mapping.REASON_INVALID_TS),
    ("ts 1999", encode(message(ts=915148800, pose={"x": 1})), mapping.REASON_INVALID_TS),
    ("ts far future", encode(message(ts=RECEIVED_NS + 2 * 86400 * 10**9, pose={"x": 1})),
     mapping.REASON_INVALID_TS),
    ("ts NaN", b'{"type":"telemetry","bot":"a","ts":NaN,"pose":{"x":1}}', mapping.REASON_INVALID_TS),
    ("battery string", encode(message(battery={"percentage": "80"})), mapping.REASON_INVALID_FIELD),
    ("battery boolean", encode(message(battery={"voltage": True})), mapping.REASON_INVALID_FIELD),
    ("pose object", encode(message(pose={"x": {"v": 1}})), mapping.REASON_INVALID_FIELD),
    ("pose list", encode(message(pose={"x": [1]})), mapping.REASON_INVALID_FIELD),
    ("no sections", encode(message()), mapping.REASON_NO_DATA),
    ("only nulls", encode(message(battery={"percentage": None})), mapping.REASON_NO_DATA),
    ("empty sections", encode(message(battery={}, pose={})), mapping.REASON_NO_DATA),
]


@pytest.mark.parametrize(
    "body, reason", [case[1:] for case in DEAD_LETTER_CASES], ids=[c[0] for c in DEAD_LETTER_CASES]
)
def test_invalid_message_has_reason(body, reason):
    with pytest.raises(InvalidMessage) as caught:
        map_message(body, None, RECEIVED_NS)

    assert caught.value.reason == reason
    assert caught.value.detail


def test_missing_type_detail_says_missing():
    with pytest.raises(InvalidMessage) as caught:
        map_message(encode({"bot": "a", "pose": {"x": 1}}), None, RECEIVED_NS)

    assert caught.value.detail == "Unknown message type: type is missing, expected 'telemetry'"


def test_non_object_detail_uses_json_names():
    with pytest.raises(InvalidMessage) as caught:
        map_message(b"[1, 2]", None, RECEIVED_NS)

    assert caught.value.detail == "body is a JSON array, expected an object"


def test_unknown_type_detail_uses_log_phrase():
    with pytest.raises(InvalidMessage) as caught:
        map_message(encode(message(type="status", pose={"x": 1})), None, RECEIVED_NS)

    assert "Unknown message type" in caught.value.detail
    assert caught.value.bot == "tb3-001"


def test_ts_window_accepts_small_clock_skew():
    ahead = RECEIVED_NS + 3600 * 10**9
    (line,) = lines_of(message(ts=ahead, pose={"x": 1}))

    assert line.endswith(str(ahead))


def test_float_field_formatting_round_trips():
    for value in (0.1, 12.6, 1e-7, 123456789.123, -0.0):
        (line,) = lines_of(message(pose={"x": value}))
        written = line.split(" ")[1].split("=")[1]
        assert float(written) == value
        assert not math.isnan(float(written))


def test_hash_section_is_skipped_not_commented_out():
    result = map_message(
        encode(message(**{"#hidden": {"v": 1.5}, "ok": {"v": 2.5}})), None, RECEIVED_NS
    )

    assert result.lines == [f"ok,bot=tb3-001 v=2.5 {TS_NS}"]
    assert result.skipped_fields == 1


def test_only_hash_section_is_no_data():
    with pytest.raises(InvalidMessage) as caught:
        map_message(encode(message(**{"#only": {"v": 3.5}})), None, RECEIVED_NS)

    assert caught.value.reason == mapping.REASON_NO_DATA


def test_lone_surrogates_never_reach_the_body():
    body = b'{"type":"telemetry","bot":"b","ok":{"v":2.5,"s":"x\\ud800","k\\udc00":1}}'
    result = map_message(body, None, RECEIVED_NS)

    assert result.lines == ["ok,bot=b v=2.5 " + str(RECEIVED_NS)]
    assert result.skipped_fields == 2
    result.lines[0].encode("utf-8")


def test_bot_with_lone_surrogate_is_invalid():
    with pytest.raises(InvalidMessage) as caught:
        map_message(b'{"type":"telemetry","bot":"b\\ud800","ok":{"v":1}}', None, RECEIVED_NS)

    assert caught.value.reason == mapping.REASON_INVALID_BOT


def test_integer_beyond_parser_limit_is_not_json():
    body = b'{"type":"telemetry","bot":"b","ok":{"v":' + b"9" * 5000 + b"}}"
    with pytest.raises(InvalidMessage) as caught:
        map_message(body, None, RECEIVED_NS)

    assert caught.value.reason == mapping.REASON_NOT_JSON


def test_colliding_flattened_names_keep_the_first():
    result = map_message(
        encode(message(s={"a_b": 1, "a": {"b": 2}})), None, RECEIVED_NS
    )

    assert result.lines == [f"s,bot=tb3-001 a_b=1.0 {TS_NS}"]
    assert result.skipped_fields == 1


@pytest.mark.parametrize(
    "amqp_timestamp, expected_ns, source",
    [
        (1733300001, 1733300001 * 10**9, "amqp"),
        (1733300001000, 1733300001 * 10**9, "amqp"),
        (1, RECEIVED_NS, "receipt"),
    ],
)
def test_amqp_timestamp_is_converted_and_checked(amqp_timestamp, expected_ns, source):
    document = message(pose={"x": 1})
    del document["ts"]
    result = map_message(encode(document), amqp_timestamp, RECEIVED_NS)

    assert result.timestamp_ns == expected_ns
    assert result.timestamp_source == source


@pytest.mark.parametrize("depth", [1010, 5000])
def test_deep_nesting_is_not_json(depth):
    body = b'{"type":"telemetry","bot":"tb3-001","ts":1733300000123456789,"s":' + b'{"a":' * depth + b"1" + b"}" * (depth + 1)

    with pytest.raises(InvalidMessage) as caught:
        map_message(body, None, RECEIVED_NS)

    assert caught.value.reason == "not_json"
    assert "nested too deeply" in caught.value.detail

