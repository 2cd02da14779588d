"""Per-flow conntrack events without kprobes: attribution by correlation.

When the kernel has no kprobes, nothing shows which packet conntrack
refused. But every verdict NF_DROP ends in kfree_skb_reason(skb,
SKB_DROP_REASON_NETFILTER_DROP) (nf_hook_slow), which the drop sensor's
tracepoint sees with the packet's flow and namespace. Conntrack's own
refusals (table full in nf_conntrack_in, failed insert in
__nf_conntrack_confirm) are among them, and so are packets dropped by
firewall rules. So: in a namespace and interval where conntrack's counters
rose, its NETFILTER_DROP flows are the candidates, and every event says the
attribution is by correlation and how many drops each side counted; when
the two numbers match, no rule drop hid among them.
"""

from netagent.conntrack.flows import MergedFlow, merge
from netagent.conntrack.report import DATASET, Interval
from netagent.events import new_event
from netagent.timefmt import iso_timestamp

NETFILTER_DROP = "NETFILTER_DROP"


def netfilter_drops_by_netns(drop_events: list[dict]) -> dict[int, dict[tuple, MergedFlow]]:
    """NETFILTER_DROP drop events merged per namespace and service (see flows.py;
    the drop sensor also splits a flow by interface and kernel location)."""
    out: dict[int, dict[tuple, MergedFlow]] = {}
    for ev in drop_events:
        if ev.get("event", {}).get("reason") != NETFILTER_DROP:
            continue
        drop = ev["netagent"]["drop"]
        inode = int(drop.get("netns") or 0)
        merge(out.setdefault(inode, {}), netns=inode, network=ev.get("network") or {}, source=ev.get("source"),
              destination=ev.get("destination"), icmp=drop.get("icmp"), count=int(drop["count"]),
              start=ev["event"].get("start"), end=ev["event"].get("end"), interface=drop.get("interface"))
    return out


def likely_action(interval: Interval) -> tuple[str, list[str]]:
    """The refusal the counters point at, and every candidate."""
    candidates = []
    if interval.table_full and (interval.allocation_drops or interval.rise("early_drop")):
        candidates.append("table-full")
    if interval.insert_failed:
        candidates.append("insert-failed")
    if not candidates:
        candidates.append("table-full" if interval.table_full else "insert-failed")
    if len(candidates) == 1:
        return candidates[0], candidates
    insert_drops = max(0, interval.rise("insert_failed") - interval.rise("chaintoolong"))
    return ("table-full" if interval.allocation_drops >= insert_drops else "insert-failed"), candidates


def correlated_events(intervals: dict[int, Interval], drop_events: list[dict], *, max_flows: int = 20,
                      now: float | None = None) -> list[dict]:
    """Per-flow events for namespaces whose conntrack counters rose.

    NETFILTER_DROP flows in namespaces where conntrack refused nothing this
    interval are firewall-rule drops, not ours: they are left alone.
    """
    out = []
    for inode, flows in netfilter_drops_by_netns(drop_events).items():
        interval = intervals.get(inode)
        if interval is None or not interval.troubled:
            continue
        action, candidates = likely_action(interval)
        total = sum(f.count for f in flows.values())
        ranked = sorted(flows.values(), key=lambda f: f.count, reverse=True)
        shown, omitted = ranked[:max_flows], ranked[max_flows:]
        correlation = {
            "netfilter_drops": total,
            "counter_drops": interval.counter_drops,
            "matches": total == interval.counter_drops,
            "flows": len(ranked),
            "flows_omitted": len(omitted),
            "drops_omitted": sum(f.count for f in omitted),
        }
        for flow in shown:
            body = {
                "netns": inode,
                "netns_name": interval.after.netns.name,
                "count": flow.count,
                "source_ports": len(flow.source_ports),
                "attribution": "correlation",
                "candidates": candidates,
                "correlation": correlation,
                "interfaces": sorted(flow.interfaces),
            }
            if flow.icmp:
                body["icmp"] = flow.icmp
            event = new_event(dataset=DATASET, action=action, kind="alert", category=["network"],
                              type=["denied"], timestamp=now, netagent={"conntrack": body}, **flow.ecs())
            event["event"]["start"] = flow.start or iso_timestamp(interval.before.wall)
            event["event"]["end"] = flow.end or iso_timestamp(interval.after.wall)
            text = (f"{flow.count} packets of {flow.describe()} dropped by netfilter (NETFILTER_DROP) in netns "
                    f"{interval.after.netns.name} while conntrack counted {interval.counter_drops} drops "
                    f"({', '.join(candidates)}): attributed by correlation, not observed per packet")
            if not correlation["matches"]:
                text += (f"; netfilter dropped {total} packets against conntrack's {interval.counter_drops}, "
                         "so firewall-rule drops (or conntrack refusals its drop counter misses) are mixed in")
            event["message"] = text
            event["event"]["reason"] = text
            out.append(event)
    return out
