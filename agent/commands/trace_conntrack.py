"""`netagent trace conntrack`: insert failures, clashes and a full table, per namespace."""

import sys
import time
from collections import Counter

import click

from netagent.errors import ProbeUnavailable
from netagent.commands.options import kubernetes_config_option
from netagent.enrich.cli import command_enricher, pod_netns, pod_option
from netagent.output import DurationParam, JsonLineEmitter, endpoint, note, output_option, pod_cell, resolve_output
from netagent.privileges import require_caps
from netagent.probes.conntrack import PER_PACKET_MODES
from netagent.signals import StopSignals

# (key, header, width): fixed widths keep a streamed table aligned across intervals
TABLE_COLUMNS = [
    ("time", "TIME", 8), ("netns", "NETNS", 16), ("pod", "POD", 24), ("action", "EVENT", 14), ("entries", "ENTRIES/MAX", 15),
    ("fill", "FILL", 6), ("insert_failed", "INS_FAIL", 8), ("drop", "DROP", 8), ("early_drop", "EARLY_DROP", 10),
    ("clash", "CLASH_RES", 9), ("detail", "DETAIL", 0),
]
SUMMED = ("insert_failed", "drop", "early_drop", "clash_resolve", "chaintoolong", "invalid", "search_restart")



class RatioType(click.ParamType):
    """'90%', '0.9' or '90' (taken as percent when above 1)."""

    name = "ratio"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        text = str(value).strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            self.fail(f"{value!r} is not a fraction or percentage (e.g. 90% or 0.9)", param, ctx)
        if number > 1 and not text.endswith("%"):
            number /= 100
        if not 0 < number <= 1:
            self.fail(f"{value!r} must be above 0% and at most 100%", param, ctx)
        return number



def table_row(event: dict) -> dict:
    ct = event["netagent"]["conntrack"]
    deltas = ct.get("deltas") or {}
    row = {
        "time": event["@timestamp"][11:19],
        "netns": ct.get("netns_name") or ct.get("netns"),
        "pod": pod_cell(event),
        "action": event["event"]["action"],
        "entries": f"{ct['entries']}/{ct['max']}" if ct.get("entries") is not None else None,
        "fill": f"{ct['fill_ratio']:.1%}" if ct.get("fill_ratio") is not None else None,
        "insert_failed": deltas.get("insert_failed"),
        "drop": deltas.get("drop"),
        "early_drop": deltas.get("early_drop"),
        "clash": deltas.get("clash_resolve"),
        "detail": "",
    }
    if "count" in ct:  # a per-flow event
        transport = event.get("network", {}).get("transport", "")
        ports = f" ({ct['source_ports']} src ports)" if ct.get("source_ports", 0) > 1 else ""
        row["detail"] = (f"{ct['count']} pkts {transport} {endpoint(event.get('source'), missing='?')} -> "
                         f"{endpoint(event.get('destination'), missing='?')}{ports} [{ct.get('attribution')}]")
    elif event["event"]["action"] != "counters":
        row["detail"] = event.get("message", "")
    return row


class Totals:
    """Counter rises per namespace over the whole run, for the exit summary."""

    def __init__(self):
        self.by_netns: dict[str, Counter] = {}
        self.alerts = Counter()

    def add(self, events):
        for e in events:
            ct = e["netagent"]["conntrack"]
            if e["event"]["kind"] == "alert":
                self.alerts[e["event"]["action"]] += 1
            if e["event"]["action"] != "counters":
                continue
            total = self.by_netns.setdefault(str(ct.get("netns_name") or ct["netns"]), Counter())
            for name in SUMMED:
                total[name] += ct["deltas"].get(name) or 0

    def render(self, losses: dict) -> str:
        lines = ["conntrack counter rises over the run:"]
        for name, total in sorted(self.by_netns.items()):
            lines.append(f"  netns {name}: " + " ".join(f"{k}={total[k]}" for k in SUMMED))
        if self.alerts:
            lines.append("  alerts: " + ", ".join(f"{k} {v}" for k, v in sorted(self.alerts.items())))
        lines.append("lost: " + ", ".join(f"{k} {v}" for k, v in losses.items()))
        return "\n".join(lines)


@click.command()
@click.option("--netns", "netns_specs", multiple=True, metavar="NS",
              help="Namespace to watch: a name under /run/netns, a path, pid:N, or `all` (every namespace "
                   "where conntrack is in use). Repeatable. Default: the agent's own (host) namespace.")
@click.option("--interval", type=DurationParam(), default="1s", show_default=True,
              help="Time between counter readings, e.g. 500ms, 1s, 10s.")
@click.option("--duration", type=DurationParam(), default=None,
              help="Stop after this long (default: until Ctrl-C / SIGTERM).")
@click.option("--threshold", type=RatioType(), default="90%", show_default=True,
              help="Alert (table-full) when entries / nf_conntrack_max reaches this.")
@click.option("--per-packet", type=click.Choice(PER_PACKET_MODES), default="auto",
              show_default=True,
              help="Per-flow events: fentry/fexit programs where the kernel takes them, else kprobes, else "
                   "correlation with NETFILTER_DROP drops; `off` for counters only.")
@click.option("--counters", type=click.Choice(["always", "changes", "never"]), default="always",
              show_default=True, help="Emit the per-interval counters event always, only when a counter moved, "
                                      "or never (alerts are always emitted).")
@pod_option
@kubernetes_config_option
@output_option
def conntrack(netns_specs, pod, kubernetes, interval, duration, threshold, per_packet, counters, output):
    """Conntrack insert failures, clashes and a full table, per namespace, counted exactly."""
    if interval < 0.05:
        raise click.BadParameter("must be at least 50ms", param_hint="--interval")
    spec, _pod = pod_netns(pod, netns_specs, runtime_socket=kubernetes["runtime_socket"])
    netns_specs = (spec,) if pod else netns_specs
    require_caps(["CAP_SYS_ADMIN"], "enter network namespaces and attach BPF programs for `trace conntrack`")
    from netagent.probes.conntrack import ConntrackSensor  # noqa: PLC0415 - BCC only when run

    fmt = resolve_output(output)
    sensor = ConntrackSensor(netns=list(netns_specs), interval=interval, threshold=threshold,
                             per_packet=per_packet, counters=counters, announce=note)
    status = sensor.check()
    if not status.can_run:
        raise ProbeUnavailable(status.reason or "the conntrack sensor cannot run here")
    totals = Totals()
    emitter = JsonLineEmitter()
    printer = TablePrinter()
    enrich = command_enricher(note, kubernetes)
    with StopSignals() as signals:
        path = sensor.attach()
        started = time.monotonic()  # --duration counts from here: attaching BPF takes a while
        try:
            names = ", ".join(ns.name for ns in sensor.namespaces) if not sensor.watch_all else \
                f"all namespaces with conntrack ({len(sensor.namespaces)} now)"
            if sensor.waiting:
                note(f"netagent: conntrack {path}; checking every {interval:g}s")
            else:
                note(f"netagent: watching conntrack in {names} via {path}; interval {interval:g}s")
            if sensor.per_packet_reason:
                note(f"netagent: {sensor.per_packet_reason}")
            if sensor.caveat:
                note(f"netagent: caveat: {sensor.caveat}")
            deadline = started + duration if duration else None
            while not signals.stop.is_set():
                wait = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
                signals.stop.wait(wait)
                if signals.stop.is_set():
                    break
                events = enrich.enrich_all(sensor.poll())
                totals.add(events)
                _show(events, fmt, emitter, printer)
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            try:
                if signals.stop.is_set():
                    # stopped early: one last reading so nothing counted so far is lost
                    events = enrich.enrich_all(sensor.poll())
                    totals.add(events)
                    _show(events, fmt, emitter, printer)
            finally:
                losses = sensor.losses()
                sensor.detach()
                enrich.stop()
                note(totals.render(losses))


def _cell(value, width: int) -> str:
    text = "-" if value is None or value == "" else str(value)
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text.ljust(width) if width else text


class TablePrinter:
    """A streamed table: the header once, then rows as intervals pass."""

    def __init__(self):
        self.header_done = False

    def rows(self, events) -> str | None:
        lines = []
        if not self.header_done:
            lines.append("  ".join(_cell(h, w) for _, h, w in TABLE_COLUMNS).rstrip())
            self.header_done = True
        for event in events:
            row = table_row(event)
            lines.append("  ".join(_cell(row.get(k), w) for k, _, w in TABLE_COLUMNS).rstrip())
        return "\n".join(lines) if events else None


def _show(events, fmt, emitter, printer):
    if fmt == "json":
        for e in events:
            emitter.emit(e)
        return
    text = printer.rows(events)
    if text:
        print(text)
        sys.stdout.flush()
