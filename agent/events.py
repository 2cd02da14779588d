"""ECS event construction, shared by every sensor, check and sink.

An event is a plain nested dict using Elastic Common Schema field names
(see docs/SCHEMA.md). Sensors build the body with `new_event`; whoever
emits events (the CLI or the daemon pipeline) stamps `event.sequence`
with one `Sequencer`, so the sequence is contiguous across everything a
run emits and a SIEM can see gaps.
"""

import itertools
import socket
import threading

from netagent import __version__
from netagent.timefmt import iso_timestamp

ECS_VERSION = "8.11.0"
_HOSTNAME = socket.gethostname()


def new_event(
    *,
    dataset: str,
    action: str,
    kind: str = "event",
    category: list[str] | None = None,
    type: list[str] | None = None,  # noqa: A002 - the ECS field name
    timestamp: float | None = None,
    **fields,
) -> dict:
    """Return an ECS event with the common fields set.

    Extra keyword arguments are top-level ECS objects (``source=...``,
    ``netagent=...``) merged into the event as they are.
    """
    event = {
        "@timestamp": iso_timestamp(timestamp),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": kind,
            "category": category or ["network"],
            "type": type or ["info"],
            "action": action,
            "dataset": dataset,
            "module": "netagent",
        },
        "host": {"name": _HOSTNAME},
        "agent": {"name": "netagent", "type": "netagent", "version": __version__},
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(event.get(key), dict):
            event[key].update(value)
        else:
            event[key] = value
    return event


class Sequencer:
    """Thread-safe contiguous `event.sequence` numbering for one run."""

    def __init__(self, start: int = 1):
        self._counter = itertools.count(start)
        self._lock = threading.Lock()
        self.last = start - 1

    def stamp(self, event: dict) -> dict:
        with self._lock:
            self.last = next(self._counter)
        event.setdefault("event", {})["sequence"] = self.last
        return event


def safe_text(value, limit: int = 1024) -> str:
    """Text from the network or the kernel made safe for JSON and terminals.

    Bytes that are not UTF-8 become \\xNN escapes, control characters are
    escaped, and over-long values are cut (with a marker) so a hostile
    peer cannot blow up an event.
    """
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="backslashreplace")
    else:
        value = str(value)
        # lone surrogates cannot be encoded as JSON
        value = value.encode("utf-8", errors="backslashreplace").decode("utf-8")
    out = []
    for ch in value:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    text = "".join(out)
    if len(text) > limit:
        text = text[:limit] + "...(truncated)"
    return text
