"""`netagent check`: a one-shot report of this node (or of --netns namespaces).

It reads the overlay inventory, samples every counter twice over a short
window (deltas, not totals), optionally watches kernel drops with the BPF
drop sensor during that window (--drops), and runs every correlation rule
over the result. Findings are printed worst first; exit code 1 when there
is at least one, 0 when there is none, so cron and CI can act on it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import click

from netagent import netns as netns_mod
from netagent import overlay
from netagent.commands.options import kubernetes_config_option
from netagent.enrich.cli import command_enricher, pod_netns, pod_option
from netagent.enrich.processors import pod_label
from netagent.errors import EXIT_FINDINGS, EXIT_OK, AgentError, ProbeUnavailable, UsageError
from netagent.events import new_event
from netagent.findings.correlator import drop_record
from netagent.findings.model import SEVERITIES, Finding, worst_first
from netagent.findings.rules import Context, RuleConfig, evaluate
from netagent.host import kubeproxy, metrics, snapshot
from netagent.host.sensor import inventory_event
from netagent.privileges import require_caps
from netagent.output import JsonLineEmitter, note, output_option, render_table, resolve_output
from netagent.timefmt import parse_duration

SEVERITY_COLOURS = {"critical": "magenta", "high": "red", "medium": "yellow", "low": "cyan"}


@dataclass
class Report:
    namespaces: list[netns_mod.Netns]
    window: float
    inventory: dict[int, list[overlay.InterfaceInfo]] = field(default_factory=dict)
    node: dict = field(default_factory=dict)
    netns: dict[int, dict] = field(default_factory=dict)
    drops: list[dict] = field(default_factory=list)
    drop_events: list[dict] = field(default_factory=list)
    kube_proxy: dict | None = None
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _parse_thresholds(items: tuple[str, ...]) -> RuleConfig:
    values: dict = {}
    fields = RuleConfig.__dataclass_fields__
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            known = ", ".join(sorted(fields))
            raise UsageError(f"--threshold {item!r}: expected NAME=VALUE with NAME one of {known}")
        kind = fields[name].type
        try:
            values[name] = int(raw) if kind in ("int", int) else float(raw)
        except ValueError:
            raise UsageError(f"--threshold {item!r}: {raw!r} is not a number") from None
    return RuleConfig(**values)


def _start_drop_sensor(namespaces: list[netns_mod.Netns]):
    """The BPF drop sensor for the window, or None with a note saying why not."""
    try:
        from netagent.probes.drops import DropFilters, DropSensor
    except ImportError as exc:
        note(f"check: --drops unavailable ({exc})")
        return None
    # One namespace: let the kernel filter; several: take all and filter here.
    spec = namespaces[0].spec if len(namespaces) == 1 else ""
    sensor = DropSensor(DropFilters(netns=spec), interval=1.0, announce=note)
    try:
        sensor.attach()
    except AgentError as exc:
        note(f"check: --drops unavailable: {exc}")
        return None
    return sensor


def _read_netns(ns: netns_mod.Netns) -> snapshot.NetnsSnapshot:
    try:
        return snapshot.read_netns(ns)
    except OSError as exc:  # the namespace went away while we looked at it
        raise ProbeUnavailable(f"namespace {ns.name} disappeared during the check ({exc.strerror})") from None


def _inventory(ns: netns_mod.Netns) -> list[overlay.InterfaceInfo]:
    try:
        return overlay.inventory(ns)
    except OSError as exc:
        raise ProbeUnavailable(f"namespace {ns.name}: cannot list interfaces ({exc.strerror})") from None


def gather(namespaces: list[netns_mod.Netns], window: float, rules: RuleConfig, with_drops: bool = False,
           enrich=None) -> Report:
    """Everything `check` reports, measured now."""
    report = Report(namespaces, window)
    for ns in namespaces:
        report.inventory[ns.inode] = _inventory(ns)
    sensor = _start_drop_sensor(namespaces) if with_drops else None
    try:
        node_a = snapshot.read_node()
        before = {ns.inode: _read_netns(ns) for ns in namespaces}
        time.sleep(window)
        node_b = snapshot.read_node()
        after = {ns.inode: _read_netns(ns) for ns in namespaces}
        if sensor is not None:
            report.drop_events = sensor.poll()
            if enrich is not None:
                report.drop_events = enrich.enrich_all(report.drop_events)
    finally:
        if sensor is not None:
            sensor.detach()
    wanted = {ns.inode for ns in namespaces}
    report.drop_events = [e for e in report.drop_events
                          if (e.get("netagent", {}).get("drop", {}).get("netns") in wanted)]
    report.drops = [drop_record(e) for e in report.drop_events]
    report.node = metrics.node_delta(node_a, node_b)
    for inode, snap in after.items():
        body = metrics.netns_delta(before[inode], snap)
        owners = snapshot.socket_owners({s["inode"] for s in body["udp_sockets"]}) if body["udp_sockets"] else {}
        for sock in body["udp_sockets"]:
            if sock["inode"] in owners:
                sock["process"] = owners[sock["inode"]]
        report.netns[inode] = body
        report.errors.extend(f"{snap.ns.name}: {e}" for e in body.get("errors", []))
    host = netns_mod.current()
    if host.inode in wanted:
        names = [i.name for i in report.inventory.get(host.inode, [])]
        report.kube_proxy = kubeproxy.detect(names)
    ctx = Context(
        node=report.node,
        netns=report.netns,
        inventory={inode: [i.as_dict() for i in infos] for inode, infos in report.inventory.items()},
        netns_names={ns.inode: ns.name for ns in namespaces},
        drops=report.drops,
        kube_proxy=report.kube_proxy,
        window_s=round(node_b.monotonic - node_a.monotonic, 2),
    )
    report.findings = worst_first(evaluate(ctx, rules, report.errors))
    return report


# --------------------------------------------------------------------------
# Output


def _counters_lines(report: Report) -> list[str]:
    lines = []
    cpu, softnet = report.node.get("cpu", {}), report.node.get("softnet", {})
    lines.append(
        f"node: cpu steal {cpu.get('steal_pct', 0):g}% (max {cpu.get('steal_max_pct', 0):g}% on "
        f"cpu{cpu.get('steal_max_cpu', 0)}), softirq {cpu.get('softirq_pct', 0):g}%, busy {cpu.get('busy_pct', 0):g}%; "
        f"softnet processed {softnet.get('processed', 0)}, dropped {softnet.get('dropped', 0)}, "
        f"time_squeeze {softnet.get('time_squeeze', 0)}"
    )
    for ns in report.namespaces:
        body = report.netns.get(ns.inode, {})
        moved = [f"{k} {v}" for k, v in body.get("snmp", {}).items() if v]
        ct = body.get("conntrack", {})
        ct_text = f"conntrack {ct.get('count')}/{ct.get('max')} ({ct.get('fill_pct')}%)" if "max" in ct else \
            "conntrack not loaded"
        ct_moved = [f"{k} {ct[k]}" for k in ("insert_failed", "drop", "early_drop") if ct.get(k)]
        nic = [f"{i['name']} " + " ".join(f"{k} {i[k]}" for k in metrics.NIC_LOSS_COUNTERS if i.get(k))
               for i in body.get("interfaces", [])]
        parts = [ct_text + (" " + ", ".join(ct_moved) if ct_moved else "")]
        parts.append("counters: " + (", ".join(moved) if moved else "no errors or fragments"))
        if nic:
            parts.append("interface losses: " + "; ".join(nic))
        if body.get("udp_sockets"):
            parts.append("udp sockets dropping: " + ", ".join(f"{s['address']}:{s['port']} +{s['drops']}"
                                                               for s in body["udp_sockets"]))
        lines.append(f"{ns.name}: " + "; ".join(parts))
    if report.drops:
        total = sum(d["count"] for d in report.drops)
        lines.append(f"kernel drops (BPF) in the window: {total}")
    return lines


def _inventory_rows(report: Report) -> list[dict]:
    rows = []
    for ns in report.namespaces:
        for info in report.inventory.get(ns.inode, []):
            u = info.underlay
            if info.mtu_exceeds:
                status = f"MTU {info.mtu} > {info.expected_mtu}"
            elif info.is_tunnel and info.expected_mtu is None:
                status = "underlay unknown"
            else:
                status = "ok"
            rows.append({
                "netns": ns.name, "name": info.name, "type": info.type, "mtu": info.mtu,
                "state": "up" if info.up else "down",
                "underlay": f"{u.device} ({u.found_by})" if u and u.device else None,
                "umtu": u.effective_mtu if u else None, "overhead": info.overhead, "expected": info.expected_mtu,
                "cni": "/".join(x for x in (info.cni, info.role) if x) or None, "status": status,
            })
    return rows


INVENTORY_COLUMNS = [("netns", "NETNS"), ("name", "INTERFACE"), ("type", "TYPE"), ("state", "STATE"), ("mtu", "MTU"),
                     ("underlay", "UNDERLAY"), ("umtu", "UNDERLAY MTU"), ("overhead", "OVERHEAD"),
                     ("expected", "EXPECTED"), ("cni", "CNI"), ("status", "STATUS")]


def _value_text(value) -> str:
    if isinstance(value, dict):
        return "{" + " ".join(f"{k}={_value_text(v)}" for k, v in value.items() if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value)


def _evidence_text(evidence: dict) -> str:
    return " ".join(f"{k}={_value_text(v)}" for k, v in evidence.items() if v not in (None, [], {}))


def render_text(report: Report) -> str:
    out = []
    names = ", ".join(ns.name for ns in report.namespaces)
    out.append(click.style(f"netagent check: {names} (window {report.window:g}s)", bold=True))
    out.append("")
    if report.findings:
        out.append(click.style(f"FINDINGS ({len(report.findings)})", bold=True))
        for severity in SEVERITIES:
            group = [f for f in report.findings if f.severity == severity]
            if not group:
                continue
            colour = SEVERITY_COLOURS[severity]
            out.append(click.style(f"  {severity.upper()} ({len(group)})", fg=colour, bold=True))
            for f in group:
                out.append(click.style(f"  * [{f.rule}] ", fg=colour, bold=True) + f.cause)
                out.append(f"      evidence: {_evidence_text(f.evidence)}")
                out.append(f"      do: {f.remedy}")
    else:
        out.append(click.style("FINDINGS: none", fg="green", bold=True))
    out.append("")
    out.append(click.style("INTERFACES", bold=True))
    table = render_table(_inventory_rows(report), INVENTORY_COLUMNS)
    for i, line in enumerate(table.splitlines()):
        out.append("  " + (click.style(line, fg="red") if ("MTU " in line and " > " in line and i) else line))
    out.append("")
    out.append(click.style(f"COUNTERS (deltas over {report.window:g}s)", bold=True))
    out.extend("  " + line for line in _counters_lines(report))
    if report.errors:
        out.append("")
        out.append(click.style("NOT MEASURED", bold=True))
        out.extend(f"  {e}" for e in report.errors)
    return "\n".join(out)


def emit_json(report: Report, emitter: JsonLineEmitter, exit_code: int) -> None:
    for ns in report.namespaces:
        for info in report.inventory.get(ns.inode, []):
            emitter.emit(inventory_event(info, ns))
    for ns in report.namespaces:
        body = report.netns.get(ns.inode)
        if body is not None:
            emitter.emit(new_event(dataset="netagent.host", action="netns-counters", kind="metric",
                                   category=["host", "network"], type=["info"], netagent={"host": body}))
    emitter.emit(new_event(dataset="netagent.host", action="node-counters", kind="metric", category=["host"],
                           type=["info"], netagent={"host": report.node}))
    for event in report.drop_events:
        emitter.emit(event)
    for f in report.findings:
        emitter.emit(f.to_event())
    by_severity = {s: sum(1 for f in report.findings if f.severity == s) for s in SEVERITIES}
    emitter.emit(new_event(dataset="netagent.check", action="check-summary", kind="event", category=["network"],
                           type=["info"], netagent={"check": {
                               "netns": [{"name": ns.name, "inode": ns.inode} for ns in report.namespaces],
                               "window_s": report.window, "findings": len(report.findings),
                               "by_severity": by_severity, "exit_code": exit_code,
                               "not_measured": report.errors}}))


@click.command()
@click.option("--netns", "netns_specs", multiple=True, metavar="NS",
              help="Namespace to check (name under /run/netns, path, or pid:N); repeatable. Default: this one.")
@click.option("--window", default="1s", show_default=True,
              help="How long to sample counters for deltas (e.g. 500ms, 2s).")
@click.option("--drops", "with_drops", is_flag=True,
              help="Also watch kernel drops with the BPF drop sensor during the window (root/CAP_BPF).")
@click.option("--threshold", "thresholds", multiple=True, metavar="NAME=VALUE",
              help="Override a rule threshold, e.g. steal_pct=5 or conntrack_fill_pct=80; repeatable.")
@pod_option
@kubernetes_config_option
@output_option
def check(netns_specs, pod, kubernetes, window, with_drops, thresholds, output):
    """One-shot report: interfaces and overlays, counters, and every finding.

    Exit status: 0 nothing found, 1 findings, 2 usage, 69 unavailable,
    77 no permission.
    """
    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise UsageError(f"--window: {exc}") from None
    if seconds > 300:
        raise UsageError("--window: at most 5m for a one-shot check")
    rules = _parse_thresholds(thresholds)
    pod_spec, pod_info = pod_netns(pod, netns_specs, runtime_socket=kubernetes["runtime_socket"])
    namespaces: list[netns_mod.Netns] = []
    for spec in ((pod_spec,) if pod_info else netns_specs) or ("",):
        ns = netns_mod.resolve(spec)
        if pod_info is not None:  # findings and tables name the pod, not pid:N
            ns = dataclasses.replace(ns, name=pod_label(pod_info))
        if ns.inode not in {n.inode for n in namespaces}:
            namespaces.append(ns)
    host = netns_mod.current()
    if any(ns.inode != host.inode for ns in namespaces) and os.geteuid() != 0:
        require_caps(["CAP_SYS_ADMIN"], "enter another network namespace")
    enrich = command_enricher(note, kubernetes)
    try:
        report = gather(namespaces, seconds, rules, with_drops, enrich=enrich)
    finally:
        enrich.stop()
    code = EXIT_FINDINGS if report.findings else EXIT_OK
    if resolve_output(output) == "table":
        click.echo(render_text(report))
    else:
        emit_json(report, JsonLineEmitter(), code)
    raise click.exceptions.Exit(code)
