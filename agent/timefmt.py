"""Clock conversions and human duration/size parsing shared by CLI and config."""

import functools
import re
import time
from datetime import datetime, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}


def parse_duration(text) -> float:
    """'1s', '500ms', '2m' or a bare number of seconds -> seconds (float)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"bad duration {text!r} (use e.g. 500ms, 1s, 2m)")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


def parse_size(text) -> int:
    """'256MiB', '100MB', '4096' -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise ValueError(f"bad size {text!r} (use e.g. 100MiB, 1GiB, 4096)")
        value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "B"])
    if value <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return value


def iso_timestamp(epoch_seconds: float | None = None) -> str:
    """RFC 3339 UTC timestamp with microseconds, as ECS @timestamp expects."""
    if epoch_seconds is None:
        epoch_seconds = time.time()
    return _iso(epoch_seconds)


@functools.lru_cache(maxsize=4096)
def _iso(epoch_seconds: float) -> str:
    # Cached: a sensor stamps thousands of events per poll with the same few
    # values (the poll time; first/last times quantized to the kernel tick).
    dt = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


class MonotonicToWall:
    """Converts bpf_ktime_get_ns() (CLOCK_MONOTONIC) stamps to wall-clock epoch seconds."""

    def __init__(self):
        self.offset = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)

    def __call__(self, mono_ns: int) -> float:
        return mono_ns / 1e9 + self.offset
