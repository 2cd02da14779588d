"""Events as JSON lines: one line each, whatever the keys are."""

import enum

import orjson

from netagent.jsonline import dumps_line


class Reason(str, enum.Enum):
    NO_SOCKET = "NO_SOCKET"


def test_event_with_string_keys_is_one_line():
    line = dumps_line({"event": {"reason": "NO_SOCKET", "sequence": 7}, "tags": ["a"]})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {"event": {"reason": "NO_SOCKET", "sequence": 7}, "tags": ["a"]}


def test_keys_that_are_not_strings_are_still_written():
    # counts by kernel reason number, by an enum: orjson refuses these without OPT_NON_STR_KEYS
    line = dumps_line({"counts": {2: 10, 77: 1}, "by": {Reason.NO_SOCKET: 3}, "ok": True})
    assert orjson.loads(line) == {"counts": {"2": 10, "77": 1}, "by": {"NO_SOCKET": 3}, "ok": True}


def test_values_orjson_lacks_go_through_the_fallback():
    line = dumps_line({"raw": b"\xffabc", "ids": (1, 2), "set": frozenset({3})})
    data = orjson.loads(line)
    assert data["ids"] == [1, 2] and data["set"] == [3] and isinstance(data["raw"], str) and "abc" in data["raw"]
