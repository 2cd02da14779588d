"""Typed configuration tables: one schema format for sensors and sinks.

A schema maps each key to ``(type, default)`` or ``(type, default, check)``:

    CONFIG_SCHEMA = {
        "enabled": ("bool", True),
        "interval": ("duration", 1.0),
        "address": ("address", "127.0.0.1:6514"),
        "ca_file": ("str", "/etc/netagent/ca.pem", readable_file),
    }

Types: bool, int, float, str, list, duration (seconds, from "500ms"/"1s"),
size (bytes, from "256MiB"), address ("host:port", checked, kept as text).
Defaults are given already coerced (seconds, bytes). `check(value)` may
return a cleaned value or raise ValueError with a message for the user.

Cross-key rules (e.g. "tls needs a readable ca_file") live on the owning
class as ``validate_config(cfg)`` raising `SchemaError(key, message)`.

This module imports nothing from the rest of netagent beyond timefmt so
sensor and sink modules can use its helpers without import cycles.
"""

import ipaddress
import json
import os
import re

from netagent.timefmt import parse_duration, parse_size

TYPES = ("bool", "int", "float", "str", "list", "duration", "size", "address")


class SchemaError(ValueError):
    """A value that does not fit its schema; `key` is relative to its table."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    """A key as TOML spells it: bare when it can be, else quoted with escapes, so an error
    naming a key the user mistyped (a newline, a dot, a space in it) stays one readable line."""
    if _BARE_KEY.fullmatch(key):
        return key
    return json.dumps(key).replace("\x7f", "\\u007f")


def _type_name(value) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )


def coerce(key: str, kind: str, value):
    """One value to its schema type, or SchemaError naming the key."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise SchemaError(key, f"expected true or false, got {_type_name(value)} {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(key, f"expected an integer, got {_type_name(value)} {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(key, f"expected a number, got {_type_name(value)} {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise SchemaError(key, f"expected a string, got {_type_name(value)} {value!r}")
        return value
    if kind == "list":
        if not isinstance(value, list):
            raise SchemaError(key, f"expected an array, got {_type_name(value)} {value!r}")
        return list(value)
    if kind == "duration":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SchemaError(key, f"expected a duration like \"500ms\" or \"1s\", got {_type_name(value)} {value!r}")
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise SchemaError(key, str(exc)) from None
    if kind == "size":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise SchemaError(key, f"expected a size like \"256MiB\", got {_type_name(value)} {value!r}")
        try:
            return parse_size(value)
        except ValueError as exc:
            raise SchemaError(key, str(exc)) from None
    if kind == "address":
        if not isinstance(value, str):
            raise SchemaError(key, f"expected \"host:port\", got {_type_name(value)} {value!r}")
        try:
            parse_address(value)
        except ValueError as exc:
            raise SchemaError(key, str(exc)) from None
        return value
    raise SchemaError(key, f"schema bug: unknown type {kind!r}")


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:6514', '[::1]:6514', 'collector.example:6514' -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"bad address {text!r} (use [v6addr]:port)")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"bad address {text!r} (use host:port, e.g. 127.0.0.1:6514)")
        if ":" in host:
            raise ValueError(f"bad address {text!r} (write IPv6 addresses as [addr]:port)")
        if not _valid_hostname(host):
            raise ValueError(f"bad address {text!r}: {host!r} is not an IP address or host name")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad address {text!r}: port must be 1-65535")
    return host, int(port_text)


def _valid_hostname(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if len(host) > 253:
        return False
    labels = host.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-" and all(c.isalnum() or c == "-" for c in label)
        for label in labels
    )


def readable_file(path: str) -> str:
    """A check for file options: the path must name a readable regular file."""
    if not path:
        return path
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path}: not readable by uid {os.geteuid()}")
    return path


def non_negative(value):
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def positive(value):
    if value <= 0:
        raise ValueError(f"must be more than 0, got {value}")
    return value


def one_of(*choices):
    def check(value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return check


def apply_schema(schema: dict, values: dict, *, ignore: tuple[str, ...] = ()) -> dict:
    """Defaults merged with `values`, every value coerced and checked.

    Unknown keys raise SchemaError naming the key and the keys that exist,
    so a typo (`intreval`) is caught rather than silently ignored.
    """
    unknown = [k for k in values if k not in schema and k not in ignore]
    if unknown:
        known = ", ".join(sorted(schema))
        raise SchemaError(toml_key(unknown[0]), f"unknown key (known keys: {known})")
    out = {}
    for key, spec in schema.items():
        kind, default = spec[0], spec[1]
        check = spec[2] if len(spec) > 2 else None
        if key in values:
            value = coerce(key, kind, values[key])
            if check is not None:
                try:
                    cleaned = check(value)
                except ValueError as exc:
                    raise SchemaError(key, str(exc)) from None
                if cleaned is not None:
                    value = cleaned
        else:
            value = default
        out[key] = value
    return out


def format_value(kind: str, value):
    """A coerced value back in the form a user writes it (for `config show`)."""
    if kind == "duration" and isinstance(value, (int, float)):
        return format_duration(value)
    if kind == "size" and isinstance(value, int):
        return format_size(value)
    return value


def format_duration(seconds: float) -> str:
    for unit, scale in (("h", 3600), ("m", 60), ("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        count = seconds / scale
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{int(round(count))}{unit}"
    return f"{seconds:g}s"


def format_size(size: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"
