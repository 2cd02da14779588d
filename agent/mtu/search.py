"""Path MTU search and classification: pure logic, probing injected.

The search asks a `Prober` to send DF probes of given sizes and learns from
each outcome. It assumes what path MTU means: every size up to the path MTU
arrives, every size above it fails. Probes are counted; a lost probe is
re-sent only when its size would decide the answer, so a black hole costs
few probes while a chance loss of the deciding size is caught by its retries
(a chance loss of any larger size does not change the answer):

1. the smallest size (`lo`) and the largest (`hi`, default the egress
   interface MTU) go out together: `lo` proves the path is alive and gives
   the round-trip time the prober sizes its timeouts from;
2. a router's frag-needed / Packet Too Big names the next size to try;
3. otherwise the common sizes (overlay MTUs, `hi` minus tunnel overheads)
   between the largest size that arrived and the smallest that failed are
   tried, in the order that keeps the worst case smallest (pick_candidate);
4. then the gap is bisected, trying "largest ok + 1" first because real
   path MTUs sit on those common sizes;
5. the smallest failed size is re-sent `retries` times before it is called
   lost; if a retry arrives, the search goes on above it.

Outcomes that arrive late (after the prober gave up on them) are folded in
before every decision, so a slow answer corrects the search instead of
skewing it.
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass, field
from typing import Protocol

# Probe protocols (packets.py builds them). Here, not in packets.py, so the
# daemon reads the sensor schema without importing scapy.
PROTOS = ("icmp", "udp", "tcp")

# Outcome kinds a prober reports for one probe.
OK = "ok"  # the target answered: the probe arrived
TOO_BIG = "too_big"  # frag-needed / Packet Too Big from a router
LOCAL = "local"  # the local kernel refused the size (EMSGSIZE, or an ICMP from our own address)
LOST = "lost"  # no answer within the timeout
ERROR = "error"  # another ICMP error (host/net unreachable, prohibited, time exceeded)

# Path statuses.
STATUS_OK = "ok"
STATUS_ICMP = "icmp"
STATUS_BLACKHOLE = "blackhole"
STATUS_LOCAL = "local"
STATUS_UNREACHABLE = "unreachable"
STATUSES = (STATUS_OK, STATUS_ICMP, STATUS_BLACKHOLE, STATUS_LOCAL, STATUS_UNREACHABLE)

# MTUs found on real paths: Ethernet, PPPoE, VXLAN/Geneve (1450), IPv6
# VXLAN (1430 from hi-70), WireGuard (1420/1440), IPsec and cloud VPN
# gateways (1400, 1380), and the IPv6 minimum (1280).
COMMON_MTUS = (1500, 1480, 1450, 1440, 1420, 1400, 1380, 1280)
# Per-byte overheads of the tunnels an egress MTU is commonly shrunk by:
# IPIP 20, GRE 24, VXLAN/Geneve 50 (IPv4) and 70 (IPv6), WireGuard 60/80.
TUNNEL_OVERHEADS = (20, 24, 50, 60, 70, 80)


@dataclass(frozen=True)
class Outcome:
    """What became of one probe."""

    kind: str  # OK, TOO_BIG, LOCAL, LOST, ERROR
    mtu: int | None = None  # the MTU a too-big / local refusal announced
    sender: str | None = None  # who answered (target, router, our own address)
    rtt: float | None = None  # seconds, for answers
    detail: str | None = None  # e.g. "host-unreachable" for ERROR

    @property
    def failed(self) -> bool:
        return self.kind != OK


class Prober(Protocol):
    """Sends probes; the search never touches a socket."""

    def probe(self, sizes: list[int], attempt: int = 0) -> list[Outcome]:
        """Send one probe per size at once and wait for their outcomes."""

    def late(self) -> list[tuple[int, Outcome]]:
        """(size, outcome) for answers that came after their probe was given up."""


@dataclass
class Step:
    """One probe as the search saw it (the event's `trace`)."""

    size: int
    attempt: int
    outcome: Outcome
    late: bool = False

    def as_dict(self) -> dict:
        out = {"size": self.size, "result": self.outcome.kind}
        if self.attempt:
            out["attempt"] = self.attempt
        if self.outcome.rtt is not None:
            out["rtt_ms"] = round(self.outcome.rtt * 1000, 3)
        if self.outcome.mtu is not None:
            out["mtu"] = self.outcome.mtu
        if self.outcome.sender and self.outcome.kind != OK:
            out["from"] = self.outcome.sender
        if self.outcome.detail:
            out["detail"] = self.outcome.detail
        if self.late:
            out["late"] = True
        return out


@dataclass
class SearchResult:
    status: str
    path_mtu: int | None
    largest_ok: int | None
    smallest_lost: int | None  # smallest size that did not arrive (any failure kind)
    probes: int
    icmp_from: str | None = None  # the router that announced a smaller MTU
    icmp_mtu: int | None = None  # the MTU it announced
    error: str | None = None  # for unreachable: what answered instead, if anything
    error_from: str | None = None
    rtt_ms: float | None = None  # median round trip of the probes that arrived
    steps: list[Step] = field(default_factory=list)


def candidate_sizes(lo: int, hi: int) -> list[int]:
    """Sizes worth trying first, strictly between lo and hi, ascending."""
    sizes = set(COMMON_MTUS) | {hi - o for o in TUNNEL_OVERHEADS}
    return sorted(s for s in sizes if lo < s < hi)


def bisect_cost(ok: int, bad: int, common_ok: bool) -> int:
    """Probes bisection needs, at worst, to find the boundary between sizes `ok` and `bad`."""
    span = bad - ok  # the path MTU is one of ok .. bad-1
    if span <= 1:
        return 0
    if common_ok and span > 2:
        # "ok + 1" goes first; if it arrives, bisection covers the rest
        return 1 + math.ceil(math.log2(span - 1))
    return math.ceil(math.log2(span))


# Path MTUs below this are rare enough (IPv6 forbids them) that the search
# bounds the worst case above it first, and below it second.
REALISTIC_MIN = 1280


def pick_candidate(ok: int, bad: int, between: list[int], is_common=lambda size: True) -> int:
    """The common size to probe next between `ok` and `bad`.

    A minimax choice over the sorted candidates: the probe that keeps the
    worst case (candidate probes plus the final bisection of the gap the
    path MTU falls in) smallest — first for path MTUs of 1280 and above,
    then for all. Ties go to the largest size, so the common case (an
    overlay MTU just below the interface MTU) is tried first.
    """
    points = [ok, *between, bad]
    n = len(points)

    @functools.lru_cache(maxsize=None)
    def cost(i: int, j: int) -> tuple[tuple[int, int], int]:
        """((worst for MTU >= 1280, worst overall), split index) for MTU between points i and j."""
        if j == i + 1:
            c = bisect_cost(points[i], points[j], i > 0 or is_common(points[i]))
            realistic = c if points[j] - 1 >= REALISTIC_MIN else 0
            return (realistic, c), -1
        best = None
        for k in range(j - 1, i, -1):  # from the top: ties keep the larger size
            (lr, la), (hr, ha) = cost(i, k)[0], cost(k, j)[0]
            worst = (1 + max(lr, hr), 1 + max(la, ha))
            if best is None or worst < best[0]:
                best = (worst, k)
        return best

    return points[cost(0, n - 1)[1]]


class _Failure:
    """How a size failed; `final` once no retry can change it."""

    __slots__ = ("kind", "attempts", "final", "outcome", "inferred")

    def __init__(self, outcome: Outcome, attempts: int, final: bool, inferred: bool = False):
        self.kind = outcome.kind
        self.outcome = outcome
        self.attempts = attempts
        self.final = final
        self.inferred = inferred  # never sent: implied by an announced MTU


class MtuSearch:
    """One search between `lo` and `hi` (inclusive probe sizes in bytes)."""

    def __init__(self, prober: Prober, lo: int, hi: int, retries: int = 2, candidates: list[int] | None = None,
                 max_probes: int = 100):
        if lo > hi:
            raise ValueError(f"min {lo} is above max {hi}")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.prober = prober
        self.lo, self.hi, self.retries = lo, hi, retries
        self.max_probes = max_probes  # a safety net against a prober that contradicts itself forever
        self.candidates = candidate_sizes(lo, hi) if candidates is None else sorted(
            c for c in candidates if lo < c < hi)
        self.ok: set[int] = set()
        self.failed: dict[int, _Failure] = {}
        self.hints: list[int] = []  # MTUs announced by routers, to try next
        self.steps: list[Step] = []
        self.icmp_from: str | None = None
        self.icmp_mtu: int | None = None

    # -- bookkeeping ------------------------------------------------------

    def _largest_ok(self) -> int | None:
        return max(self.ok) if self.ok else None

    def _smallest_failed(self) -> int | None:
        return min(self.failed) if self.failed else None

    def _record(self, size: int, attempt: int, outcome: Outcome, late: bool = False) -> None:
        self.steps.append(Step(size, attempt, outcome, late))
        if outcome.kind == OK:
            self.ok.add(size)
            # Arrival at `size` means every smaller size arrives too: losses
            # at or below it were random (or slow), not the path MTU.
            for s in [s for s in self.failed if s <= size]:
                del self.failed[s]
            return
        if late:
            return  # a late failure adds nothing to the loss already recorded
        if outcome.kind == LOST:
            prev = self.failed.get(size)
            if prev is not None and prev.kind != LOST:
                return  # a definitive refusal seen earlier stands
            attempts = attempt + 1
            self.failed[size] = _Failure(outcome, attempts, attempts > self.retries)
            return
        if outcome.kind in (TOO_BIG, LOCAL):
            announced = outcome.mtu
            usable = announced is not None and 68 <= announced < size
            if outcome.sender:
                self.icmp_from, self.icmp_mtu = outcome.sender, announced
            if usable:
                # The hop refuses everything above `announced`: record the
                # refusal at announced+1 and try `announced` next.
                if announced + 1 not in self.failed or self.failed[announced + 1].inferred:
                    self.failed[announced + 1] = _Failure(outcome, attempt + 1, True, inferred=True)
                if announced >= self.lo and announced not in self.ok and announced not in self.hints:
                    self.hints.append(announced)
            # The probe itself was refused too (announced MTU bogus or not).
            self.failed[size] = _Failure(outcome, attempt + 1, True)
            return
        # ERROR: an explicit "no" that is not about size; retrying cannot help.
        self.failed[size] = _Failure(outcome, attempt + 1, True)

    def _absorb_late(self) -> None:
        for size, outcome in self.prober.late():
            self._record(size, 0, outcome, late=True)

    def _send(self, sizes: list[int], attempt: int = 0) -> None:
        outcomes = self.prober.probe(sizes, attempt)
        for size, outcome in zip(sizes, outcomes):
            self._record(size, attempt, outcome)
        self._absorb_late()

    # -- the search -------------------------------------------------------

    def run(self) -> SearchResult:
        first = [self.lo] if self.lo == self.hi else [self.lo, self.hi]
        self._send(first)
        # Something must arrive before sizes mean anything (an arrival at
        # `hi` implies `lo` arrives too, whatever became of the `lo` probe).
        while not self.ok:
            f = self.failed.get(self.lo)
            if f is None or f.final:
                return self._unreachable()
            self._send([self.lo], f.attempts)
        while True:
            size, attempt = self._next_probe()
            if size is None or self._sent() >= self.max_probes:
                return self._result()
            self._send([size], attempt)

    def _sent(self) -> int:
        return sum(1 for s in self.steps if not s.late)

    def _next_probe(self) -> tuple[int | None, int]:
        lo_ok = self._largest_ok()
        bad = self._smallest_failed()
        if bad is None:
            if self.hi in self.ok:
                return None, 0
            return self.hi, 0
        if bad <= lo_ok:  # cannot happen: _record keeps failures above oks
            raise AssertionError("failure below a success")
        # 1. a router told us the size to try
        self.hints = [h for h in self.hints if lo_ok < h < bad]
        if self.hints:
            return self.hints.pop(0), 0
        # 2. the boundary is found: confirm it, unless it is definitive
        if bad == lo_ok + 1:
            f = self.failed[bad]
            if f.final:
                return None, 0
            return bad, f.attempts
        # 3. common sizes between, in the order that bounds the worst case
        between = [c for c in self.candidates if lo_ok < c < bad and c not in self.ok]
        if between:
            return pick_candidate(lo_ok, bad, between, self._is_common), 0
        # 4. bisect, trying lo_ok + 1 first when lo_ok is a common size
        probed = {s.size for s in self.steps}
        if self._is_common(lo_ok) and bad - lo_ok > 2 and lo_ok + 1 not in probed:
            return lo_ok + 1, 0
        return (lo_ok + bad) // 2, 0

    def _is_common(self, size: int) -> bool:
        return size in self.candidates or size in self._announced()

    def _announced(self) -> set[int]:
        return {s.outcome.mtu for s in self.steps if s.outcome.kind in (TOO_BIG, LOCAL) and s.outcome.mtu}

    def _rtt_ms(self) -> float | None:
        rtts = [s.outcome.rtt for s in self.steps if s.outcome.kind == OK and s.outcome.rtt is not None]
        return round(statistics.median(rtts) * 1000, 3) if rtts else None

    def _unreachable(self) -> SearchResult:
        f = self.failed.get(self.lo)
        error = error_from = None
        path_mtu = None
        status = STATUS_UNREACHABLE
        if f is not None and f.kind in (TOO_BIG, LOCAL):
            # Even the smallest probe is too big: the announced MTU is all we know.
            status = STATUS_ICMP if f.kind == TOO_BIG else STATUS_LOCAL
            announced = f.outcome.mtu
            path_mtu = announced if announced and 68 <= announced < self.lo else None
        elif f is not None and f.kind == ERROR:
            error, error_from = f.outcome.detail, f.outcome.sender
        else:
            error = "no answer"
            # an ICMP error to another probe still says why (routers rate-limit
            # them, so not every probe gets one)
            for step in self.steps:
                if step.outcome.kind == ERROR:
                    error = f"no answer; {step.outcome.detail}"
                    error_from = step.outcome.sender
                    break
        return SearchResult(
            status=status, path_mtu=path_mtu, largest_ok=None, smallest_lost=self.lo,
            probes=self._sent(), icmp_from=self.icmp_from, icmp_mtu=self.icmp_mtu,
            error=error, error_from=error_from, rtt_ms=None, steps=self.steps,
        )

    def _result(self) -> SearchResult:
        largest = self._largest_ok()
        bad = self._smallest_failed()
        error = error_from = None
        if bad is None:
            status = STATUS_OK
        else:
            boundary = self.failed[bad]
            status = {TOO_BIG: STATUS_ICMP, LOCAL: STATUS_LOCAL}.get(boundary.kind, STATUS_BLACKHOLE)
            if boundary.kind == ERROR:
                # Refused without an MTU (e.g. admin-prohibited for large
                # packets only): no PMTU signal, so it is a black hole to
                # PMTUD, but say what answered.
                error, error_from = boundary.outcome.detail, boundary.outcome.sender
        sent_failures = [s for s, f in self.failed.items() if not f.inferred]
        return SearchResult(
            status=status, path_mtu=largest, largest_ok=largest,
            smallest_lost=min(sent_failures) if sent_failures else None,
            probes=self._sent(), icmp_from=self.icmp_from, icmp_mtu=self.icmp_mtu,
            error=error, error_from=error_from, rtt_ms=self._rtt_ms(), steps=self.steps,
        )


def search(prober: Prober, lo: int, hi: int, retries: int = 2) -> SearchResult:
    return MtuSearch(prober, lo, hi, retries).run()
