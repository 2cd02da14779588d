"""A probe run as ECS events (one per server, candidate name and type) and as a table.

Everything that came from the network goes through safe_text before it
reaches an event: names and record data are escaped by dnspython first
(\\DDD), then by safe_text, so a hostile server cannot put control
characters or invalid UTF-8 into our JSON or onto a terminal.
"""

import socket

from netagent.dns.probe import ProbeResult, ServerResult
from netagent.dns.search import Outcome
from netagent.dns.stats import latency_summary_ms
from netagent.events import new_event, safe_text

DATASET = "netagent.dns"

_RESULT_TEXT = {
    Outcome.ANSWER: "answer",
    Outcome.NXDOMAIN: "NXDOMAIN",
    Outcome.NODATA: "NODATA",
    Outcome.SERVFAIL: "SERVFAIL",
    Outcome.NO_ANSWER: "no-answer",
    Outcome.CONN_REFUSED: "connection-refused",
    Outcome.NO_RECOVERY: "no-recovery",
}


def resolver_summary(res: ServerResult) -> dict:
    walk, rounds = res.usual_walk()
    if walk is None:
        return {}
    return {
        "lookup_ms": latency_summary_ms(res.lookup_ns),
        "resolver_walk": [safe_text(n) for n in walk.names],
        "resolver_result": _RESULT_TEXT[walk.result],
        "resolver_answer": safe_text(walk.answered_by.name) if walk.answered_by else None,
        "resolver_walk_rounds": rounds,
    }


def events(result: ProbeResult, netns_name: str = "host") -> list[dict]:
    s = result.settings
    expansion = [safe_text(c.name) for c in result.plan]
    out = []
    for res in result.servers:
        summary = resolver_summary(res)
        for cand in sorted(res.candidates.values(), key=lambda c: c.index):
            for qtype in s.types:
                tally = cand.tallies.get(qtype)
                if tally is None or tally.queries == 0:
                    continue
                latency = latency_summary_ms(tally.latencies_ns)
                dns = {
                    "type": "answer" if tally.answered else "query",
                    "question": {"name": safe_text(cand.candidate.name.rstrip(".") or "."), "type": qtype, "class": "IN"},
                }
                if tally.main_rcode():
                    dns["response_code"] = tally.main_rcode()
                if tally.resolved_ips:
                    dns["resolved_ip"] = list(tally.resolved_ips)
                if tally.last_answers:
                    dns["answers"] = tally.last_answers
                if tally.last_flags:
                    dns["header_flags"] = tally.last_flags
                detail = {
                    "queries": tally.queries,
                    "answered": tally.answered,
                    "timeouts": tally.timeouts,
                    "refused": tally.refused,
                    "unreachable": tally.unreachable,
                    "errors": tally.errors,
                    "loss_ratio": round(tally.lost / tally.queries, 4),
                    "latency_ms": latency,
                    "rcodes": dict(tally.rcodes),
                    "truncated": tally.truncated,
                    "tcp_retries": tally.tcp_retries,
                    "tcp_retry_answered": tally.tcp_retry_answered,
                    "late_answers": tally.late_answers,
                    "invalid": tally.invalid_total,
                    "invalid_reasons": dict(tally.invalid),
                    "mode": s.mode,
                    "transport": "tcp" if s.tcp else "udp",
                    "timeout_s": s.timeout,
                    "candidate_index": cand.index,
                    "candidate_step": cand.candidate.step,
                    "search_expansion": expansion,
                    "ndots": s.conf.ndots,
                    "search": [safe_text(d) for d in s.conf.search],
                    "resolv_conf": s.conf.path,
                    "netns": netns_name,
                    "race_suspected": cand.race.suspected,
                    "race": cand.race.as_dict(),
                    **summary,
                }
                if tally.invalid_samples:
                    detail["invalid_samples"] = [safe_text(x, 300) for x in tally.invalid_samples]
                if tally.last_error:
                    detail["last_error"] = safe_text(tally.last_error, 300)
                failed = tally.answered < tally.queries
                out.append(new_event(
                    dataset=DATASET,
                    action="dns-probe",
                    category=["network"],
                    type=["protocol"],
                    timestamp=result.started,
                    dns=dns,
                    destination={"ip": res.server.ip, "port": res.server.port},
                    network={
                        "protocol": "dns",
                        "transport": "tcp" if s.tcp else "udp",
                        "type": "ipv6" if res.server.family == socket.AF_INET6 else "ipv4",
                    },
                    netagent={"dns": detail},
                    **{"event": {"outcome": "failure" if failed else "success",
                                 "duration": int(result.duration_s * 1e9)}},
                ))
    return out


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_rows(result: ProbeResult) -> list[dict]:
    rows = []
    for res in result.servers:
        for cand in sorted(res.candidates.values(), key=lambda c: c.index):
            for qtype in result.settings.types:
                tally = cand.tallies.get(qtype)
                if tally is None:
                    continue
                lat = latency_summary_ms(tally.latencies_ns) or {}
                answers = ",".join(tally.resolved_ips) if tally.resolved_ips else ("-" if not tally.answered else "(none)")
                rows.append({
                    "server": str(res.server),
                    "name": safe_text(cand.candidate.name, 200),
                    "type": qtype,
                    "sent": tally.queries,
                    "ok": tally.answered,
                    "lost": tally.timeouts,
                    "other": (tally.refused + tally.unreachable + tally.errors) or "",
                    "invalid": tally.invalid_total or "",
                    "rcode": tally.main_rcode() or "-",
                    "answers": safe_text(answers, 200),
                    "min": _ms(lat.get("min")),
                    "p50": _ms(lat.get("p50")),
                    "p95": _ms(lat.get("p95")),
                    "max": _ms(lat.get("max")),
                    "tc": f"{tally.truncated}/{tally.tcp_retry_answered}" if tally.truncated else "",
                })
    return rows


COLUMNS = [
    ("name", "NAME"), ("type", "TYPE"), ("sent", "SENT"), ("ok", "OK"),
    ("lost", "TIMEOUT"), ("other", "FAILED"), ("invalid", "INVALID"), ("rcode", "RCODE"),
    ("answers", "ANSWERS"), ("min", "MIN ms"), ("p50", "P50 ms"), ("p95", "P95 ms"), ("max", "MAX ms"),
    ("tc", "TC/TCP"),
]


def columns(result: ProbeResult) -> list[tuple[str, str]]:
    """The table's columns: a SERVER column only when there is more than one server."""
    if len(result.servers) > 1:
        return [("server", "SERVER"), *COLUMNS]
    return list(COLUMNS)


def summary_lines(result: ProbeResult) -> list[str]:
    """The human part of the table view: expansion, where the resolver stops, the race."""
    s = result.settings
    conf = s.conf
    lines = []
    search_list = " ".join(safe_text(d) for d in conf.search) or "(none)"
    lines.append(
        f"resolv.conf {conf.path or '(defaults)'}: ndots:{conf.ndots} search {search_list}"
        f"  ->  tries: {' '.join(safe_text(c.name) for c in result.plan)}"
    )
    for res in result.servers:
        summary = resolver_summary(res)
        if not summary:
            continue
        walk, rounds = res.usual_walk()
        stop = (f"answered by {summary['resolver_answer']}" if summary["resolver_answer"]
                else f"fails with {summary['resolver_result']}")
        wasted = len(walk.names) - (1 if walk.answered_by else 0)
        lookup = summary["lookup_ms"]
        lines.append(
            f"{res.server}: the resolver {stop} after {len(walk.names)} name(s)"
            f" ({wasted} lookup(s) wasted; same walk in {rounds}/{len(res.walks)} rounds);"
            f" lookup time p50 {_ms(lookup['p50'])} ms, p95 {_ms(lookup['p95'])} ms, max {_ms(lookup['max'])} ms"
        )
        for cand in sorted(res.candidates.values(), key=lambda c: c.index):
            race = cand.race
            if race.suspected:
                ex = race.examples[0]
                lines.append(
                    f"{res.server}: A/AAAA race signature for {safe_text(cand.candidate.name)}: "
                    f"{race.race}/{race.pairs} pairs had one answer and its twin lost from the same "
                    f"source port (e.g. round {ex['round']}: {ex['answered']} answered, {ex['lost']} lost, "
                    f"port {ex['source_port']}); pairs with one lost otherwise {race.one_lost}, "
                    f"both lost {race.both_lost}"
                )
    return lines
