"""A path MTU result as an ECS event, a one-line verdict and a table."""

from __future__ import annotations

import ipaddress

from netagent.events import new_event
from netagent.mtu.probe import MtuReport
from netagent.mtu.search import (
    STATUS_BLACKHOLE,
    STATUS_ICMP,
    STATUS_LOCAL,
    STATUS_OK,
    STATUS_UNREACHABLE,
)
from netagent.output import render_table

DATASET = "netagent.mtu"

SUMMARY_COLUMNS = [
    ("target", "TARGET"), ("proto", "PROTO"), ("interface", "IFACE"), ("interface_mtu", "IF_MTU"),
    ("path_mtu", "PATH_MTU"), ("status", "STATUS"), ("icmp_from", "ICMP_FROM"), ("largest_ok", "LARGEST_OK"),
    ("smallest_lost", "SMALLEST_LOST"), ("probes", "PROBES"), ("time", "TIME"),
]
TRACE_COLUMNS = [("n", "#"), ("size", "SIZE"), ("result", "RESULT"), ("rtt", "RTT_MS"), ("from", "FROM"),
                 ("note", "NOTE")]


def _target_label(report: MtuReport) -> str:
    t = report.target
    return f"{t.name} ({t.ip})" if t.name else t.ip


def verdict(report: MtuReport) -> str:
    """One sentence an operator can paste into an incident channel."""
    r = report.result
    who = _target_label(report)
    iface = f"{report.interface} (MTU {report.interface_mtu})" if report.interface else "the egress device"
    if r.status == STATUS_OK:
        text = f"path MTU to {who} is {r.path_mtu}: every probe up to {report.hi} bytes arrived over {iface}"
    elif r.status == STATUS_ICMP:
        text = (f"path MTU to {who} is {r.path_mtu}: {r.icmp_from} answered frag-needed/Packet Too Big "
                f"announcing MTU {r.icmp_mtu}; PMTU discovery works")
    elif r.status == STATUS_BLACKHOLE:
        text = (f"PMTU black hole toward {who}: packets up to {r.largest_ok} bytes arrive, "
                f"{r.smallest_lost} bytes and larger vanish without an ICMP answer; "
                f"senders using {iface} stall on full-size packets")
        if r.error:
            text += f" ({r.error} from {r.error_from} for large probes)"
    elif r.status == STATUS_LOCAL:
        text = f"the local kernel refuses packets above {r.path_mtu} bytes toward {who} over {iface}"
        if r.icmp_from:
            text += f" (ICMP from our own address {r.icmp_from})"
    else:
        why = r.error or "no answer"
        if r.error_from:
            why += f" from {r.error_from}"
        text = f"{who} is unreachable with {report.options.proto} probes of {report.lo} bytes: {why}"
        if r.path_mtu:
            text = (f"even the smallest probe ({report.lo} bytes) to {who} is too big: "
                    f"{r.icmp_from} announced MTU {r.path_mtu}")
    return text


def overlay_verdict(report: MtuReport) -> str | None:
    o = report.overlay
    if not o or not o.get("mismatch"):
        return None
    text = (f"{report.interface} ({o['type']} over {o.get('underlay')}) has MTU {o.get('configured_mtu')} but its "
            f"underlay {o.get('underlay')} (MTU {o.get('underlay_mtu')}) leaves room for {o.get('expected_mtu')} after "
            f"{o.get('overhead')} bytes of {o['type']} overhead: larger packets are fragmented on the underlay or dropped")
    path_mtu = report.result.path_mtu
    expected = o.get("expected_mtu")
    if path_mtu and expected and path_mtu > expected:
        text += f" (here probes above {expected} bytes arrived only because the underlay fragmented them)"
    return text


def is_finding(report: MtuReport) -> bool:
    """Something an operator must fix: a black hole or an overlay MTU above what its underlay carries."""
    return report.result.status == STATUS_BLACKHOLE or bool(report.overlay and report.overlay.get("mismatch"))


def to_event(report: MtuReport) -> dict:
    r = report.result
    opts = report.options
    mtu = {
        "path_mtu": r.path_mtu,
        "status": r.status,
        "interface": report.interface,
        "interface_type": report.interface_type,
        "interface_mtu": report.interface_mtu,
        "probes": r.probes,
        "icmp_from": r.icmp_from,
        "icmp_mtu": r.icmp_mtu,
        "largest_ok": r.largest_ok,
        "smallest_lost": r.smallest_lost,
        "overlay": report.overlay,
        "proto": opts.proto,
        "min": report.lo,
        "max": report.hi,
        "retries": opts.retries,
        "timeout_ms": round(opts.timeout * 1000),
        "rtt_ms": r.rtt_ms,
        "kernel_pmtu": report.kernel_mtu_after,
        "netns": report.netns,
        "netns_inode": report.netns_inode,
        "trace": [s.as_dict() for s in r.steps],
    }
    if report.port is not None:
        mtu["port"] = report.port
    if r.error:
        mtu["error"] = r.error
        if r.error_from:
            mtu["error_from"] = r.error_from
    if report.kernel_mtu_before != report.kernel_mtu_after and report.kernel_mtu_before is not None:
        mtu["kernel_pmtu_before"] = report.kernel_mtu_before
    if report.notes:
        mtu["notes"] = list(report.notes)
    overlay_text = overlay_verdict(report)
    message = verdict(report) + (f"; {overlay_text}" if overlay_text else "")
    transport = opts.proto if opts.proto != "icmp" or report.target.family == 4 else "ipv6-icmp"
    destination = {"ip": report.target.ip}
    if report.target.name:
        destination["domain"] = report.target.name
    if report.port is not None:
        destination["port"] = report.port
    return new_event(
        dataset=DATASET,
        action="mtu-probe",
        kind="event",
        category=["network"],
        type=["info"] if r.status != STATUS_UNREACHABLE else ["error"],
        timestamp=report.started,
        event={
            "duration": report.duration_ns,
            "outcome": "failure" if r.status == STATUS_UNREACHABLE else "success",
        },
        message=message,
        source={"ip": report.source},
        destination=destination,
        network={"type": f"ipv{report.target.family}", "transport": transport},
        netagent={"mtu": mtu},
    )


def summary_row(event: dict) -> dict:
    m = event["netagent"]["mtu"]
    dest = event["destination"]
    target = f"{dest['domain']} ({dest['ip']})" if dest.get("domain") else dest["ip"]
    return {
        "target": target,
        "proto": m["proto"] + (f"/{m['port']}" if m.get("port") else ""),
        "interface": m["interface"],
        "interface_mtu": m["interface_mtu"],
        "path_mtu": m["path_mtu"],
        "status": m["status"],
        "icmp_from": m["icmp_from"],
        "largest_ok": m["largest_ok"],
        "smallest_lost": m["smallest_lost"],
        "probes": m["probes"],
        "time": f"{event['event']['duration'] / 1e9:.2f}s",
    }


def render(event: dict, verbose: bool = False) -> str:
    """The terminal view: a summary row, the verdict, the overlay facts, optionally each probe."""
    m = event["netagent"]["mtu"]
    lines = [render_table([summary_row(event)], SUMMARY_COLUMNS), "", event["message"]]
    o = m.get("overlay")
    if o:
        lines.append(
            f"overlay: {m['interface']} is {o['type']}"
            + (f" (VNI {o['vni']})" if o.get("vni") is not None else "")
            + f" over {o.get('underlay') or '?'} MTU {o.get('underlay_mtu') or '?'}, overhead {o.get('overhead')}, "
            f"expected MTU {o.get('expected_mtu') or '?'}, configured {o.get('configured_mtu')}"
            + (" -> MISMATCH" if o.get("mismatch") else "")
        )
    if m.get("kernel_pmtu"):
        lines.append(f"kernel route MTU toward {event['destination']['ip']}: {m['kernel_pmtu']}")
    for note in m.get("notes", []):
        lines.append(f"note: {note}")
    if verbose:
        rows = []
        for i, step in enumerate(m["trace"], 1):
            rows.append({
                "n": i, "size": step["size"], "result": step["result"] + (" (late)" if step.get("late") else ""),
                "rtt": step.get("rtt_ms"), "from": step.get("from"),
                "note": " ".join(x for x in (
                    f"mtu {step['mtu']}" if step.get("mtu") else "",
                    f"retry {step['attempt']}" if step.get("attempt") else "",
                    step.get("detail") or "",
                ) if x),
            })
        lines += ["", render_table(rows, TRACE_COLUMNS)]
    return "\n".join(lines)


def error_event(target_text: str, netns: str, opts, error: str, started: float, duration_ns: int) -> dict:
    """The event for a target that could not be probed at all (no route, bad name, namespace gone)."""
    destination: dict = {"address": target_text}
    try:
        ip = ipaddress.ip_address(target_text.split("%", 1)[0])
        destination["ip"] = str(ip)
        family = ip.version
    except ValueError:
        destination["domain"] = target_text
        family = None
    mtu = {
        "path_mtu": None, "status": STATUS_UNREACHABLE, "interface": None, "interface_mtu": None,
        "probes": 0, "icmp_from": None, "largest_ok": None, "smallest_lost": None, "overlay": None,
        "proto": opts.proto, "netns": netns, "error": error,
    }
    network = {"transport": opts.proto if opts.proto != "icmp" or family != 6 else "ipv6-icmp"}
    if family:
        network["type"] = f"ipv{family}"
    return new_event(
        dataset=DATASET, action="mtu-probe", kind="event", category=["network"], type=["error"],
        timestamp=started, event={"duration": duration_ns, "outcome": "failure"},
        message=f"cannot probe the path MTU to {target_text}: {error}",
        destination=destination, network=network, netagent={"mtu": mtu},
    )
