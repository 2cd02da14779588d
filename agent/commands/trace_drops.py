"""`netagent trace drops`: kernel packet drops with reasons, per flow and interval."""

import sys
import time
from collections import Counter

import click

from netagent.commands.options import kubernetes_config_option
from netagent.enrich.cli import command_enricher, pod_netns, pod_option
from netagent.output import JsonLineEmitter, endpoint, note, output_option, pod_cell, render_table, resolve_output
from netagent.probes.drops import ATTACH_MODES, FLOW_EVENTS  # no BCC import: that happens at attach
from netagent.signals import StopSignals

TABLE_COLUMNS = [
    ("count", "COUNT"), ("reason", "REASON"), ("transport", "PROTO"), ("src", "SOURCE"),
    ("dst", "DESTINATION"), ("interface", "IFACE"), ("netns", "NETNS"), ("pod", "POD"), ("location", "LOCATION"),
]



def table_row(event: dict) -> dict:
    drop = event["netagent"]["drop"]
    return {
        "count": drop["count"],
        "reason": event["event"]["reason"],
        "transport": event.get("network", {}).get("transport") or event.get("network", {}).get("type"),
        # a summary of many flows has no one source: say how many it stands for
        "src": f"({drop['flows']} flows)" if drop.get("flows") else endpoint(event.get("source")),
        "dst": endpoint(event.get("destination")),
        "interface": drop.get("interface") or (drop["ifindex"] or "-"),
        "netns": drop.get("netns_name") or drop["netns"],
        "pod": pod_cell(event),
        "location": drop["location"],
    }


class DropSummary:
    """Totals by reason for the exit summary."""

    def __init__(self):
        self.count = Counter()
        self.bytes = Counter()

    def add(self, events):
        for e in events:
            self.count[e["event"]["reason"]] += e["netagent"]["drop"]["count"]
            self.bytes[e["event"]["reason"]] += e["netagent"]["drop"]["bytes"]

    def render(self, losses: dict) -> str:
        lines = [f"drops by reason ({sum(self.count.values())} total):"]
        for reason, n in self.count.most_common():
            lines.append(f"  {n:>10}  {self.bytes[reason]:>12} B  {reason}")
        lost = ", ".join(f"{k} {v}" for k, v in losses.items())
        lines.append(f"lost: {lost}")
        return "\n".join(lines)


@click.command()
@click.option("--netns", default="", help="Namespace: name under /run/netns, a path, or pid:N.")
@pod_option
@kubernetes_config_option
@click.option("--reason", "reasons", multiple=True, help="Only this kernel drop reason (repeatable), e.g. NO_SOCKET.")
@click.option("--iface", default="", help="Only drops on this interface (in --netns, or the host namespace).")
@click.option("--proto", type=click.Choice(["tcp", "udp", "icmp", "other"]), default=None, help="Only this protocol.")
@click.option("--host", default="", help="Only drops to or from this IPv4/IPv6 address.")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Only drops to or from this port.")
@click.option("--interval", type=click.FloatRange(0.05, 3600), default=1.0, show_default=True,
              help="Seconds between flushes of the in-kernel counters.")
@click.option("--duration", type=click.FloatRange(0, None, min_open=True), default=None,
              help="Stop after this many seconds (default: until Ctrl-C / SIGTERM).")
@click.option("--top", type=click.IntRange(1, 1000), default=20, show_default=True, help="Rows in the table view.")
@click.option("--flow-events", type=click.IntRange(0, None), default=FLOW_EVENTS, show_default=True,
              help="Flows per interval reported one by one, the busiest first; the others are summed up per "
                   "reason and place (netagent.drop.flows). 0: every flow.")
@click.option("--attach", "attach_mode", type=click.Choice(ATTACH_MODES), default="auto", show_default=True,
              help="Attach path: auto takes the first this kernel offers (raw_tracepoint, tracepoint, kprobe); "
                   "a path this kernel lacks exits 69.")
@output_option
def drops(netns, pod, kubernetes, reasons, iface, proto, host, port, interval, duration, top, flow_events, attach_mode,
          output):
    """Every packet the kernel drops, with the kernel's reason, per flow."""
    from netagent.probes.drops import DropFilters, DropSensor

    fmt = resolve_output(output)
    netns, _pod = pod_netns(pod, netns, runtime_socket=kubernetes["runtime_socket"])
    held_notes: list[str] = []  # notes from attaching (e.g. tracefs mounted) follow the "attached to" line
    sensor = DropSensor(
        DropFilters(netns=netns, reasons=list(reasons), iface=iface, proto=proto or "", host=host, port=port or 0),
        interval=interval,
        announce=held_notes.append,
        attach=attach_mode,
        flow_events=flow_events,
    )
    summary = DropSummary()
    emitter = JsonLineEmitter()
    enrich = command_enricher(note, kubernetes)
    with StopSignals() as signals:
        path = sensor.attach()
        sensor.announce = note
        started = time.monotonic()  # --duration counts from attach: the time spent watching
        try:
            # the first line on stderr says which attach path was taken
            note(f"netagent: attached to {path} (reasons from {sensor.reason_source}, "
                 f"offsets from {sensor.offset_source}); interval {interval:g}s")
            for text in held_notes:
                note(text)
            deadline = started + duration if duration else None
            while not signals.stop.is_set():
                wait = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
                signals.stop.wait(wait)
                events = enrich.enrich_all(sensor.poll())
                summary.add(events)
                _show(events, fmt, emitter, top, sensor)
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            # one last flush so nothing counted in the kernel is lost at exit
            try:
                events = enrich.enrich_all(sensor.poll())
                summary.add(events)
                _show(events, fmt, emitter, top, sensor, final=True)
            finally:
                losses = sensor.losses()
                sensor.detach()
                enrich.stop()
                note(summary.render(losses))
                if enrich.failures.total:
                    note(f"enrich failed (events kept, names missing): {enrich.failures.by_cause}")


def _show(events, fmt, emitter, top, sensor, final=False):
    if fmt == "json":
        for e in events:
            emitter.emit(e)
        return
    if final and not events:
        return
    rows = [table_row(e) for e in events[:top]]
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[H\x1b[2J")
    stamp = time.strftime("%H:%M:%S")
    flows = sum(e["netagent"]["drop"].get("flows", 1) for e in events)
    more = f" (+{len(events) - top} more rows)" if len(events) > top else ""
    lost = sensor.losses().get("kernel", 0)
    print(f"{stamp}  {sum(e['netagent']['drop']['count'] for e in events)} drops in {flows} flows{more}"
          f"{f'  LOST in kernel: {lost}' if lost else ''}")
    if rows:
        print(render_table(rows, TABLE_COLUMNS))
    sys.stdout.flush()
