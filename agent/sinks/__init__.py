"""Sinks: where the daemon's events go (see netagent.sinks.base for the contract).

SINK_TYPES maps the `type` of a [[sinks]] table to the class implementing
it, as "module:Class" so a sink's dependencies (prometheus_client, ssl)
load only when a configuration uses it.
"""

import importlib

SINK_TYPES = {
    "stdout": "netagent.sinks.stdout:StdoutSink",
    "file": "netagent.sinks.file:FileSink",
    "syslog": "netagent.sinks.syslog:SyslogSink",
    "prometheus": "netagent.sinks.prometheus:PrometheusSink",
}


def sink_class(type_name: str):
    """The class for a sink type; KeyError if unknown, ImportError if it cannot load."""
    module_name, attr = SINK_TYPES[type_name].split(":")
    return getattr(importlib.import_module(module_name), attr)
