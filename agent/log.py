"""The agent's own diagnostics, through structlog: one line each, parseable where a machine reads them.

    on a terminal           structlog's console renderer (time, level, message, key=value)
    under systemd, or when  one JSON object a line with the base fields of an event
    stderr is not a TTY     (netagent.events.new_event): @timestamp, log.level, message,
                            agent.*, host.name, ecs.version, event.dataset "netagent.log";
                            extra key=value pairs go under netagent.log

so `journalctl -u netagent -o cat` and a SIEM parse the agent's health like its
events. Under systemd (JOURNAL_STREAM set) each line starts with the syslog
priority prefix `<N>`, which journald turns into the entry's priority and strips.
NETAGENT_LOG_FORMAT=json|console overrides the choice.

This is for the daemon's running diagnostics ("sensor drops: on ...", reload
errors, sink reconnects, watchdog restarts). A command's fatal error stays one
plain line, `netagent: ...` (see netagent.cli.main): that is the CLI's contract.
"""

import os
import sys
import threading

import orjson
import structlog

from netagent.events import new_event

# syslog priorities (what callers pass) -> log.level names
LEVELS = {0: "emergency", 1: "alert", 2: "critical", 3: "error", 4: "warning", 5: "notice", 6: "info", 7: "debug"}
DATASET = "netagent.log"

_lock = threading.Lock()
_logger = None
_logger_key = None


class _StderrWriter:
    """structlog's logger at the end of the chain: one write + flush per line, under a lock."""

    def msg(self, line: str) -> None:
        with _lock:
            try:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # stderr gone (closed pipe): diagnostics are best effort

    info = warning = error = critical = debug = notice = msg


def _output_format() -> str:
    forced = os.environ.get("NETAGENT_LOG_FORMAT", "").lower()
    if forced in ("json", "console"):
        return forced
    if os.environ.get("JOURNAL_STREAM"):
        return "json"
    try:
        return "console" if sys.stderr.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def _ecs_json(_logger, _method, event_dict: dict) -> str:
    """The final processor for machines: the event's base fields, one JSON line."""
    level = event_dict.pop("syslog_priority")
    message = event_dict.pop("event")
    event_dict.pop("level", None)
    record = new_event(dataset=DATASET, action="log", kind="event", category=["process"], type=["info"])
    record["log"] = {"level": LEVELS.get(level, "info"), "logger": "netagent"}
    record["message"] = message
    if event_dict:
        record["netagent"] = {"log": event_dict}
    line = orjson.dumps(record, default=str).decode()
    return f"<{level}>{line}" if os.environ.get("JOURNAL_STREAM") else line


def _console_fields(_logger, _method, event_dict: dict) -> dict:
    event_dict.pop("syslog_priority", None)
    return event_dict


def _build():
    fmt = _output_format()
    if fmt == "json":
        processors = [_ecs_json]
    else:
        colors = False
        try:
            colors = sys.stderr.isatty()
        except (AttributeError, ValueError):
            pass
        processors = [
            _console_fields,
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=0),
        ]
    return structlog.wrap_logger(_StderrWriter(), processors=processors, cache_logger_on_first_use=False)


def _get():
    # rebuilt when stderr or the environment changes (tests swap both)
    global _logger, _logger_key
    key = (id(sys.stderr), os.environ.get("NETAGENT_LOG_FORMAT"), os.environ.get("JOURNAL_STREAM"))
    if _logger is None or key != _logger_key:
        _logger, _logger_key = _build(), key
    return _logger


def log(message: str, level: int = 6, **fields) -> None:
    """One diagnostic line on stderr; `level` is a syslog priority (3 error, 4 warning, 6 info)."""
    logger = _get()
    method = {3: "error", 4: "warning", 6: "info", 7: "debug"}.get(level, "info")
    if level < 3:
        method = "critical"
    getattr(logger, method)(message, syslog_priority=level, level=LEVELS.get(level, "info"), **fields)
