"""Per (server, name, type) tallies and latency percentiles.

Percentiles use the nearest-rank method: p95 of 20 samples is the 19th
smallest, and of fewer than 20 samples it is the largest. It never
invents a value between two measurements, so every figure reported is a
latency that was actually measured.
"""

import collections
import math
from dataclasses import dataclass, field

from netagent.dns.exchange import Exchange


def percentile(sorted_values: list, p: float):
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_values:
        return None
    if not 0 < p <= 100:
        raise ValueError("percentile must be in (0, 100]")
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


def latency_summary_ms(latencies_ns: list[int]) -> dict | None:
    """min/p50/p95/max/mean in milliseconds (3 decimals), or None without samples."""
    if not latencies_ns:
        return None
    values = sorted(latencies_ns)

    def ms(ns):
        return round(ns / 1e6, 3)

    return {
        "min": ms(values[0]),
        "p50": ms(percentile(values, 50)),
        "p95": ms(percentile(values, 95)),
        "max": ms(values[-1]),
        "mean": ms(sum(values) / len(values)),
        "samples": len(values),
    }


@dataclass
class Tally:
    """Everything measured for one (server, candidate name, query type)."""

    queries: int = 0
    answered: int = 0
    timeouts: int = 0
    refused: int = 0
    unreachable: int = 0
    errors: int = 0
    truncated: int = 0
    tcp_retries: int = 0
    tcp_retry_answered: int = 0
    late_answers: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    rcodes: collections.Counter = field(default_factory=collections.Counter)
    invalid: collections.Counter = field(default_factory=collections.Counter)
    invalid_samples: list[str] = field(default_factory=list)
    resolved_ips: list[str] = field(default_factory=list)
    last_answers: list[dict] = field(default_factory=list)
    last_flags: list[str] = field(default_factory=list)
    last_error: str | None = None
    transports: collections.Counter = field(default_factory=collections.Counter)

    def add(self, ex: Exchange) -> None:
        self.queries += 1
        self.transports[ex.transport] += 1
        self.invalid.update(ex.invalid)
        for sample in ex.invalid_samples:
            if len(self.invalid_samples) < 5:
                self.invalid_samples.append(sample)
        self.late_answers += ex.late_answers
        if ex.truncated:
            self.truncated += 1
        if ex.tcp_retry:
            self.tcp_retries += 1
        if ex.status == "answer":
            self.answered += 1
            self.latencies_ns.append(ex.latency_ns)
            resp = ex.response
            self.rcodes[resp.rcode] += 1
            for ip in resp.resolved_ips:
                if ip not in self.resolved_ips:
                    self.resolved_ips.append(ip)
            self.last_answers = resp.answers
            self.last_flags = resp.flags
            if ex.tcp_retry:
                self.tcp_retry_answered += 1
            return
        if ex.status == "timeout":
            self.timeouts += 1
        elif ex.status == "refused":
            self.refused += 1
        elif ex.status == "unreachable":
            self.unreachable += 1
        else:
            self.errors += 1
        if ex.error:
            self.last_error = ex.error

    @property
    def lost(self) -> int:
        return self.queries - self.answered

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())

    def main_rcode(self) -> str | None:
        return self.rcodes.most_common(1)[0][0] if self.rcodes else None
