"""One output convention for every command (data on stdout, diagnostics on stderr).

`--output table|json`: table on a terminal by default, JSON lines otherwise.
"""

import shutil
import sys

import click

from netagent.events import Sequencer
from netagent.jsonline import dumps_line
from netagent.timefmt import parse_duration


def output_option(func):
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["table", "json"]),
        default=None,
        help="table (default on a terminal) or json (one JSON object per line).",
    )(func)


class DurationParam(click.ParamType):
    """A command-line duration: "500ms", "1s", "2m" or a bare number of seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def resolve_output(value: str | None) -> str:
    if value:
        return value
    return "table" if sys.stdout.isatty() else "json"


def note(message: str) -> None:
    """A diagnostic line for the operator: stderr, never mixed with data."""
    click.echo(message, err=True)


class JsonLineEmitter:
    """Writes events to stdout as JSON lines, numbering them contiguously."""

    def __init__(self, stream=None, sequencer: Sequencer | None = None):
        self.stream = stream or sys.stdout.buffer
        self.sequencer = sequencer or Sequencer()

    def emit(self, event: dict) -> None:
        self.sequencer.stamp(event)
        self.stream.write(dumps_line(event))
        self.stream.flush()


def host_port(ip: str, port) -> str:
    """'10.0.0.1:53' or '[fd00::1]:53': IPv6 addresses are bracketed before a port."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def endpoint(obj: dict | None, missing: str = "-") -> str:
    """An ECS source/destination object as 'ip:port' (or just 'ip' without a port)."""
    if not obj or not obj.get("ip"):
        return missing
    return host_port(obj["ip"], obj["port"]) if "port" in obj else obj["ip"]


def pod_cell(event: dict) -> str | None:
    """The POD column: namespace/name, "(host)" for the node's own namespace, else None."""
    k8s = event.get("kubernetes") or {}
    pod = k8s.get("pod")
    if pod:
        return f"{k8s.get('namespace')}/{pod.get('name')}"
    if (event.get("netagent") or {}).get("host_network"):
        return "(host)"
    return None


def render_table(rows: list[dict], columns: list[tuple[str, str]], max_width: int | None = None) -> str:
    """Plain aligned table; `columns` is [(key, header)]. Long cells are cut with '…'."""
    if max_width is None:
        # cut lines to the terminal only on a terminal; piped output stays whole
        max_width = shutil.get_terminal_size((160, 24)).columns if sys.stdout.isatty() else 10_000
    cells = [[str(row.get(key, "") if row.get(key) is not None else "-") for key, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    widths = [len(h) for h in headers]
    for line in cells:
        for i, cell in enumerate(line):
            widths[i] = min(max(widths[i], len(cell)), 48)

    def fmt(line):
        parts = []
        for i, cell in enumerate(line):
            if len(cell) > widths[i]:
                cell = cell[: widths[i] - 1] + "…"
            parts.append(cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()[:max_width]

    out = [fmt(headers)]
    out.extend(fmt(line) for line in cells)
    return "\n".join(out)
