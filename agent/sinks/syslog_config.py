"""Configuration of the syslog sink: its keys, defaults and cross-key rules.

Kept apart from the sink itself so `netagent config check` validates a
[[sinks]] table of type "syslog" with exactly the rules the sink runs with
(SyslogSink.CONFIG_SCHEMA = SCHEMA, SyslogSink.validate_config = validate).
"""

import os

from netagent.configschema import SchemaError, positive, readable_file

SCHEMA = {
    # collector as host:port (IPv6 as [addr]:port)
    "address": ("address", "127.0.0.1:6514"),
    # RFC 5425 TLS; false sends plain RFC 6587 octet-counted TCP
    "tls": ("bool", True),
    # CA bundle that signed the collector's certificate (required with tls)
    "ca_file": ("str", "/etc/netagent/ca.pem"),
    # client certificate and key for mutual TLS; both or neither
    "cert_file": ("str", ""),
    "key_file": ("str", ""),
    # name the collector's certificate must carry; default: the host of `address`
    "server_name": ("str", ""),
    # disk spool used while the collector is unreachable
    "spool_dir": ("str", "/var/lib/netagent/spool"),
    "spool_max_bytes": ("size", 256 * 2**20),
    # events held in memory while the spool's disk refuses writes (full, I/O error), written
    # out in order once it takes them again; only what exceeds this is lost (counted)
    "spool_memory_bytes": ("size", 16 * 2**20),
    # reconnect backoff bounds
    "reconnect_min": ("duration", 0.5, positive),
    "reconnect_max": ("duration", 30.0, positive),
    # RFC 5424 APP-NAME and facility (local0..local7, daemon, user)
    "app_name": ("str", "netagent"),
    "facility": ("str", "local0"),
}

FACILITIES = {"user": 1, "daemon": 3, **{f"local{i}": 16 + i for i in range(8)}}


def validate(cfg: dict) -> None:
    if cfg["tls"]:
        if not cfg["ca_file"]:
            raise SchemaError("ca_file", "required when tls = true (the CA that signed the collector's certificate)")
        _readable("ca_file", cfg["ca_file"])
    if bool(cfg["cert_file"]) != bool(cfg["key_file"]):
        missing = "key_file" if cfg["cert_file"] else "cert_file"
        raise SchemaError(missing, "cert_file and key_file go together (mutual TLS needs both)")
    for key in ("cert_file", "key_file"):
        if cfg[key]:
            if not cfg["tls"]:
                raise SchemaError(key, "a client certificate needs tls = true")
            _readable(key, cfg[key])
    if not cfg["spool_dir"]:
        raise SchemaError("spool_dir", "must name a directory (events wait there while the collector is down)")
    if not os.path.isabs(cfg["spool_dir"]):
        raise SchemaError("spool_dir", f"{cfg['spool_dir']!r} must be an absolute path")
    if cfg["reconnect_min"] > cfg["reconnect_max"]:
        raise SchemaError("reconnect_min", "must not exceed reconnect_max")
    if cfg["facility"] not in FACILITIES:
        raise SchemaError("facility", f"must be one of {', '.join(FACILITIES)}")
    if not cfg["app_name"] or len(cfg["app_name"]) > 48 or not all(33 <= ord(c) <= 126 for c in cfg["app_name"]):
        raise SchemaError("app_name", "must be 1-48 printable ASCII characters without spaces (RFC 5424)")


def _readable(key: str, path: str) -> None:
    try:
        readable_file(path)
    except ValueError as exc:
        raise SchemaError(key, f"cannot use: {exc}") from None
