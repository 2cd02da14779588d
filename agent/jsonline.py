"""Serialising events as JSON lines (orjson: fast, strict UTF-8)."""

import orjson

_OPTIONS = orjson.OPT_APPEND_NEWLINE
# OPT_NON_STR_KEYS takes orjson's slower path for every dict (about twice the time
# of a whole drop event here), so it is used only for an event that has a key
# that is not a string, which orjson refuses without it.
_OPTIONS_ANY_KEYS = _OPTIONS | orjson.OPT_NON_STR_KEYS


def dumps_line(event: dict) -> bytes:
    """One event as one JSON line (bytes, newline-terminated)."""
    try:
        return orjson.dumps(event, option=_OPTIONS, default=_fallback)
    except orjson.JSONEncodeError:
        return orjson.dumps(event, option=_OPTIONS_ANY_KEYS, default=_fallback)


def _fallback(obj):
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        from netagent.events import safe_text

        return safe_text(obj)
    return str(obj)
