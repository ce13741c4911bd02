"""Turn one telemetry message into InfluxDB line protocol. Pure: no I/O.

The rules, also given in the README:

- ``battery`` becomes measurement ``battery`` and ``pose`` becomes ``pose``.
  Their known fields (percentage, voltage, wh; x, y) must be numbers.
- Any other object section becomes a measurement of the same name, with nested
  keys joined by ``_``. Numbers become float fields, booleans boolean fields
  and strings string fields.
- Every point carries the tag ``bot``, normalised to Unicode NFC.
- Every JSON number is written as a float, never as an ``i`` integer, so that
  ``80`` and ``80.5`` never conflict in one field.
- A null, NaN or infinite value is an absent reading: the field is skipped.
- ``ts`` in integer nanoseconds is written exactly. A ``ts`` in seconds,
  milliseconds or microseconds (a float included) is converted to
  nanoseconds. Without ``ts`` the AMQP timestamp is used, else the time of
  receipt.

A message that can never be written raises ``InvalidMessage`` with a short
reason code for the dead-letter queue.
"""

from __future__ import annotations

import decimal
import functools
import json
import math
import re
import unicodedata

try:
    # orjson decodes a telemetry message about 5 times faster than the
    # standard library (0.9 against 4.7 microseconds on the benchmark machine).
    import orjson
except ImportError:  # the standard library alone gives the same results
    orjson = None
from typing import NamedTuple

MESSAGE_TYPE = "telemetry"

# Sections whose fields are checked: each listed field must be a number.
KNOWN_SECTIONS = {
    "battery": ("percentage", "voltage", "wh"),
    "pose": ("x", "y"),
}
# Top-level keys that are not sections.
RESERVED_KEYS = frozenset(("type", "ts", "bot"))

UTF8_BOM = b"\xef\xbb\xbf"

# Characters that line protocol cannot carry exactly in a key or tag value:
# control characters (below U+0020, and U+007F), the backslash, and lone
# UTF-16 surrogates, which JSON's \u escapes allow but UTF-8 cannot encode.
UNWRITABLE_KEY_CHARACTER = re.compile(r"[\x00-\x1f\x7f\\\ud800-\udfff]")
# Characters a string field value cannot carry: line breaks, which end the
# line, and lone UTF-16 surrogates.
UNWRITABLE_STRING_CHARACTER = re.compile(r"[\n\r\ud800-\udfff]")

NANOSECONDS_PER_SECOND = 1_000_000_000

# The oldest accepted point time, 2000-01-01T00:00:00Z. Earlier times come
# from robots whose clock was never set.
MIN_TIMESTAMP_NS = 946_684_800 * NANOSECONDS_PER_SECOND
# How far past the time of receipt a point time may lie before it counts as a
# broken clock rather than a small clock skew.
MAX_FUTURE_SKEW_NS = 24 * 3600 * NANOSECONDS_PER_SECOND

# Magnitude limits that tell the unit of a numeric ``ts``: below 1e11 it is
# seconds (up to the year 5138), below 1e14 milliseconds, below 1e17
# microseconds, and nanoseconds above that. Each unit's present-day values lie
# far from these limits (about 1.7e9, 1.7e12, 1.7e15 and 1.7e18).
TIMESTAMP_UNITS = (
    (1e11, "s", NANOSECONDS_PER_SECOND),
    (1e14, "ms", 1_000_000),
    (1e17, "us", 1_000),
)

# Dead-letter reason codes.
REASON_NOT_UTF8 = "not_utf8"
REASON_NOT_JSON = "not_json"
REASON_NOT_OBJECT = "not_object"
REASON_UNKNOWN_TYPE = "unknown_type"
REASON_INVALID_BOT = "invalid_bot"
REASON_INVALID_TS = "invalid_ts"
REASON_INVALID_FIELD = "invalid_field"
REASON_NO_DATA = "no_data"


class InvalidMessage(Exception):
    """A message that can never be written: it goes to the dead-letter queue."""

    def __init__(self, reason: str, detail: str, bot: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.bot = bot


class MappedMessage(NamedTuple):
    """The points of one message, ready to write.

    A named tuple: it is built for every message, and a tuple is built and
    pickled (for the mapping process) faster than a frozen dataclass.
    """

    bot: str
    lines: list[str]
    timestamp_ns: int
    # "message", "amqp" or "receipt": where the point time came from.
    timestamp_source: str
    # "s", "ms" or "us" when ``ts`` was converted to nanoseconds, else None.
    converted_from: str | None
    skipped_fields: int


def map_message(body: bytes, amqp_timestamp: int | None, received_ns: int) -> MappedMessage:
    """Map a raw message body to line protocol, or raise InvalidMessage.

    ``amqp_timestamp`` is the message's AMQP ``timestamp`` property in
    seconds, and ``received_ns`` the time of receipt in Unix nanoseconds.
    """
    document = _decode(body)

    message_type = document.get("type")
    if message_type != MESSAGE_TYPE:
        if message_type is None:
            detail = f"Unknown message type: type is missing, expected {MESSAGE_TYPE!r}"
        else:
            detail = f"Unknown message type {repr(message_type)[:60]}, expected {MESSAGE_TYPE!r}"
        raise InvalidMessage(
            REASON_UNKNOWN_TYPE,
            detail,
            _bot_or_none(document.get("bot")),
        )

    bot, tag_set = _read_bot(document.get("bot"))
    timestamp_ns, source, converted_from = _read_timestamp(
        document, amqp_timestamp, received_ns, bot
    )
    time_suffix = " " + str(timestamp_ns)

    lines: list[str] = []
    skipped = 0
    for name, section in document.items():
        if name in RESERVED_KEYS or not isinstance(section, dict):
            continue
        fields: list[str] = []
        try:
            skipped += _collect_fields(name, section, "", fields, bot)
        except RecursionError:
            # orjson decodes up to 1,024 levels, more than the recursion
            # limit lets _collect_fields flatten.
            raise InvalidMessage(REASON_NOT_JSON, "body is JSON nested too deeply", bot) from None
        if not fields:
            continue
        measurement = escape_measurement(name)
        if measurement is None:
            skipped += len(fields)
            continue
        lines.append(measurement + tag_set + " " + ",".join(fields) + time_suffix)

    if not lines:
        raise InvalidMessage(
            REASON_NO_DATA,
            "no field with a value to write (no battery, pose or other section with data)",
            bot,
        )
    return MappedMessage(bot, lines, timestamp_ns, source, converted_from, skipped)


def _decode(body: bytes) -> dict:
    if orjson is None:
        document = _decode_with_json(body)
    else:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            # orjson rejects what the standard library reads (NaN, Infinity,
            # 1e400, lone surrogates, a UTF-8 BOM), and it reports other
            # errors in other words, so the standard library decides.
            document = _decode_with_json(body)
    if not isinstance(document, dict):
        raise InvalidMessage(
            REASON_NOT_OBJECT,
            f"body is a JSON {_json_type(document)}, expected an object",
        )
    return document


def _decode_with_json(body: bytes) -> object:
    if body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM):]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidMessage(
            REASON_NOT_UTF8, f"body is not valid UTF-8 at byte {error.start}"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidMessage(
            REASON_NOT_JSON,
            f"body is not JSON: {error.msg} at line {error.lineno} column {error.colno}",
        ) from None
    except ValueError as error:
        # Python refuses integers of more than 4300 digits with a plain ValueError.
        raise InvalidMessage(REASON_NOT_JSON, f"body is not usable JSON: {error}"[:300]) from None
    except RecursionError:
        raise InvalidMessage(REASON_NOT_JSON, "body is JSON nested too deeply") from None
    return document


def _bot_or_none(value: object) -> str | None:
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else None


def _read_bot(value: object) -> tuple[str, str]:
    """Return the normalised bot and its line protocol tag set, or raise InvalidMessage."""
    if value is None:
        raise InvalidMessage(REASON_INVALID_BOT, "bot is missing")
    if not isinstance(value, str):
        raise InvalidMessage(
            REASON_INVALID_BOT, f"bot is a {_json_type(value)}, expected a string"
        )
    return _checked_bot(value)


# A fleet sends the same few bot names over and over, so their checks are
# cached. An invalid name raises, and lru_cache stores no exceptions.
@functools.lru_cache(maxsize=4096)
def _checked_bot(value: str) -> tuple[str, str]:
    bot = unicodedata.normalize("NFC", value)
    if not bot.strip():
        raise InvalidMessage(REASON_INVALID_BOT, "bot is blank")
    if not _is_writable_key(bot):
        raise InvalidMessage(
            REASON_INVALID_BOT,
            f"bot {bot[:60]!r} contains a backslash, a control character or a lone surrogate, "
            "which line protocol cannot carry exactly",
        )
    return bot, ",bot=" + escape_tag(bot)


def _read_timestamp(
    document: dict, amqp_timestamp: int | None, received_ns: int, bot: str
) -> tuple[int, str, str | None]:
    value = document.get("ts")
    if type(value) is int and MIN_TIMESTAMP_NS <= value <= received_ns + MAX_FUTURE_SKEW_NS:
        # The common case: integer nanoseconds inside the window, written as they are.
        return value, "message", None
    if value is None:
        if amqp_timestamp is not None and amqp_timestamp > 0:
            # The property is meant to be seconds, but some publishers put
            # milliseconds there; a value outside the window is not trusted.
            amqp_ns, _ = to_nanoseconds(amqp_timestamp)
            if MIN_TIMESTAMP_NS <= amqp_ns <= received_ns + MAX_FUTURE_SKEW_NS:
                return amqp_ns, "amqp", None
        return received_ns, "receipt", None

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMessage(
            REASON_INVALID_TS, f"ts is a {_json_type(value)}, expected a number", bot
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidMessage(REASON_INVALID_TS, f"ts is {value}, expected a number", bot)

    timestamp_ns, converted_from = to_nanoseconds(value)
    if not MIN_TIMESTAMP_NS <= timestamp_ns <= received_ns + MAX_FUTURE_SKEW_NS:
        raise InvalidMessage(
            REASON_INVALID_TS,
            f"ts {value!r} is outside the accepted window "
            "(from 2000-01-01 to one day after receipt)",
            bot,
        )
    return timestamp_ns, "message", converted_from


def to_nanoseconds(value: int | float) -> tuple[int, str | None]:
    """Convert a Unix time in s, ms, us or ns to integer nanoseconds.

    Return the nanoseconds and the unit converted from, or None when the value
    already was nanoseconds. An integer is converted exactly, and a float
    through its shortest decimal form, so 1733300000.123456 keeps its last
    digit instead of picking up binary rounding.
    """
    magnitude = abs(value)
    for limit, unit, factor in TIMESTAMP_UNITS:
        if magnitude < limit:
            break
    else:
        unit, factor = None, 1

    if isinstance(value, int):
        return value * factor, unit
    exact = decimal.Decimal(repr(value)) * factor
    return int(exact.to_integral_value(rounding=decimal.ROUND_HALF_EVEN)), unit


def _collect_fields(
    section_name: str,
    section: dict,
    prefix: str,
    out: list[str],
    bot: str,
    seen: set[str] | None = None,
) -> int:
    """Append encoded fields of ``section`` to ``out``; return how many were skipped.

    ``seen`` contains the field names already in the point.
    """
    if not prefix:
        skipped = _collect_flat_fields(section_name, section, out, bot)
        if skipped is not None:
            return skipped
        # A nested object: start again on the general path, which flattens.
        out.clear()
    if seen is None:
        seen = set()
    required = KNOWN_SECTIONS.get(section_name, ()) if not prefix else ()
    skipped = 0
    for key, value in section.items():
        key = str(key)
        name = prefix + key
        if key in required:
            if isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
                raise InvalidMessage(
                    REASON_INVALID_FIELD,
                    f"{section_name}.{key} is a {_json_type(value)}, expected a number",
                    bot,
                )
        if isinstance(value, dict):
            skipped += _collect_fields(section_name, value, name + "_", out, bot, seen)
            continue
        encoded = _encode_field_value(value)
        escaped_key = escape_field_key(name)
        # Flattening can give two fields one name ({"a_b": 1, "a": {"b": 2}});
        # InfluxDB would keep only one of them, so the later one is skipped.
        if encoded is None or escaped_key is None or name in seen:
            skipped += 1
            continue
        seen.add(name)
        out.append(escaped_key + "=" + encoded)
    return skipped


def _collect_flat_fields(section_name: str, section: dict, out: list[str], bot: str) -> int | None:
    """Append encoded fields of a section without nested objects; return how many were skipped.

    Return None, with part of the fields appended, when a value is an object.
    This is the common case of ``_collect_fields``, made faster. The keys of
    one decoded JSON object are unique, so without flattening no two fields
    get one name, and a float value is encoded inline.
    """
    skipped = 0
    for key, value in section.items():
        field_prefix, required = _field_prefix(section_name, key)
        if type(value) is float and math.isfinite(value):
            if field_prefix is None:
                skipped += 1
            else:
                out.append(field_prefix + repr(value))
            continue
        if isinstance(value, dict):
            return None
        if required and (isinstance(value, bool) or not isinstance(value, (int, float, type(None)))):
            raise InvalidMessage(
                REASON_INVALID_FIELD,
                f"{section_name}.{key} is a {_json_type(value)}, expected a number",
                bot,
            )
        encoded = _encode_field_value(value)
        if encoded is None or field_prefix is None:
            skipped += 1
            continue
        out.append(field_prefix + encoded)
    return skipped


@functools.lru_cache(maxsize=4096)
def _field_prefix(section_name: str, key: str) -> tuple[str | None, bool]:
    """Return the escaped ``key=`` of a top-level field (None when unwritable) and whether it must be a number."""
    escaped = escape_field_key(key)
    required = key in KNOWN_SECTIONS.get(section_name, ())
    return (None if escaped is None else escaped + "="), required


def _encode_field_value(value: object) -> str | None:
    """Encode a JSON value as a line protocol field value, or None to skip it."""
    if type(value) is float:
        # The common case first: most readings are JSON numbers with a fraction.
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return None
        if not math.isfinite(number):
            return None
        return repr(number)
    if isinstance(value, str):
        if UNWRITABLE_STRING_CHARACTER.search(value):
            return None
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    # null, and lists, which have no field type in InfluxDB.
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_writable_key(text: str) -> bool:
    return UNWRITABLE_KEY_CHARACTER.search(text) is None


@functools.lru_cache(maxsize=4096)
def escape_tag(value: str) -> str:
    """Escape a tag value (or tag key) for line protocol."""
    return value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


@functools.lru_cache(maxsize=4096)
def escape_field_key(name: str) -> str | None:
    """Escape a field key, or return None for a key InfluxDB cannot store.

    InfluxDB reserves names that start with ``_``, and 1.x rejects a field
    called ``time``.
    """
    if not name or name.startswith("_") or name == "time" or not _is_writable_key(name):
        return None
    return escape_tag(name)


@functools.lru_cache(maxsize=1024)
def escape_measurement(name: str) -> str | None:
    """Escape a measurement name, or return None for a name InfluxDB cannot store.

    A line that starts with ``#`` is a comment in line protocol, so InfluxDB
    would accept it and store nothing.
    """
    if not name or name.startswith(("_", "#")) or not _is_writable_key(name):
        return None
    return name.replace(",", "\\,").replace(" ", "\\ ")
