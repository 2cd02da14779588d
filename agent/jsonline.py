"""Serialising events as JSON lines (orjson: fast, strict UTF-8)."""

import orjson

_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def dumps_line(event: dict) -> bytes:
    """One event as one JSON line (bytes, newline-terminated)."""
    return orjson.dumps(event, option=_OPTIONS, default=_fallback)


def _fallback(obj):
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        from netagent.events import safe_text

        return safe_text(obj)
    return str(obj)
