"""One DNS probe run: for each round and server, the resolver's walk, measured.

Per round and server, the candidates of the search expansion are queried in
the resolver's order and the walk stops where glibc would stop (or goes
through every candidate with all_candidates). Each candidate is queried for
A and/or AAAA in one of three patterns:

  parallel-same-socket  A then AAAA back to back from one UDP socket
                        (glibc's default; the conntrack race pattern)
  parallel-sockets      A and AAAA at once, each from its own socket
  sequential            A, wait for it, then AAAA on the same socket
                        (glibc's `options single-request`)

Each server is probed on its own (the resolver would fail over from one to
the next; here every server gets the same walk, so they can be compared).
Runs in whatever network namespace the calling thread is in.
"""

import collections
import secrets
import time
from dataclasses import dataclass, field

from netagent.dns import search, wire
from netagent.dns.exchange import Engine, Exchange, Server
from netagent.dns.race import RaceTally
from netagent.dns.resolvconf import ResolvConf
from netagent.dns.stats import Tally

MODES = ("parallel-same-socket", "parallel-sockets", "sequential")


@dataclass
class ProbeSettings:
    name: str
    servers: list[Server]
    conf: ResolvConf
    types: tuple[str, ...] = ("A", "AAAA")
    count: int = 1
    interval: float = 1.0
    timeout: float = 5.0
    mode: str = "parallel-same-socket"
    tcp: bool = False
    all_candidates: bool = False
    edns: bool = False
    ad: bool = False


@dataclass
class CandidateResult:
    candidate: search.Candidate
    index: int  # position in the search expansion
    tallies: dict[str, Tally] = field(default_factory=dict)
    race: RaceTally = field(default_factory=RaceTally)


@dataclass
class ServerResult:
    server: Server
    candidates: dict[str, CandidateResult] = field(default_factory=dict)
    walks: list[search.Walk] = field(default_factory=list)
    # per round: how long the resolver's walk took with these answers (the sum
    # over its steps of first send to last answer or timeout; no retries)
    lookup_ns: list[int] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(t.answered for c in self.candidates.values() for t in c.tallies.values())

    @property
    def queries(self) -> int:
        return sum(t.queries for c in self.candidates.values() for t in c.tallies.values())

    def usual_walk(self) -> tuple[search.Walk | None, int]:
        """The walk seen most often over the rounds, and in how many rounds."""
        if not self.walks:
            return None, 0
        counts = collections.Counter((tuple(w.names), w.result) for w in self.walks)
        (names, result), n = counts.most_common(1)[0]
        for w in self.walks:
            if tuple(w.names) == names and w.result == result:
                return w, n
        return None, 0


@dataclass
class ProbeResult:
    settings: ProbeSettings
    plan: list[search.Candidate]
    servers: list[ServerResult]
    started: float  # epoch seconds
    duration_s: float


def _unique_ids(n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        value = secrets.randbits(16)
        if value not in ids:
            ids.append(value)
    return ids


def query_candidate(settings: ProbeSettings, server: Server, candidate: search.Candidate) -> dict[str, Exchange]:
    """Query one candidate name for each type, in the configured pattern."""
    ids = _unique_ids(len(settings.types))
    exchanges = {
        qtype: Exchange(
            query=wire.build_query(candidate.name, qtype, edns=settings.edns, ad=settings.ad, msg_id=ids[i]),
            server=server,
            timeout=settings.timeout,
        )
        for i, qtype in enumerate(settings.types)
    }
    engine = Engine()
    try:
        def channel():
            return engine.tcp(server) if settings.tcp else engine.udp(server)

        if settings.mode == "sequential":
            # one socket (over TCP one connection, as use-vc keeps it open)
            shared = channel()
            for ex in exchanges.values():
                engine.send(shared, ex)
                engine.wait()
        elif settings.mode == "parallel-sockets":
            for ex in exchanges.values():
                engine.send(channel(), ex)
            engine.wait()
        else:
            shared = channel()
            for ex in exchanges.values():
                engine.send(shared, ex)
            engine.wait()
        stray = engine.stray_invalid()
    finally:
        engine.close()
    if stray:
        # invalid packets that arrived when no exchange could take the blame
        first = next(iter(exchanges.values()))
        for reason, n in stray.items():
            first.invalid[reason] += n
    return exchanges


def _outcome(exchanges: dict[str, Exchange]) -> search.Outcome:
    def triple(ex):
        if ex is None:
            return None
        if ex.status == "answer":
            return ("answer", ex.response.rcode, ex.response.ancount)
        return (ex.status, None, 0)

    return search.pair_outcome(triple(exchanges.get("A")), triple(exchanges.get("AAAA")))


def validate(settings: ProbeSettings) -> str | None:
    """Why these settings cannot run (a usage problem), or None."""
    name = settings.name
    if not name or name == ".":
        return "the name to look up is empty"
    if name.startswith("."):
        return f"name {name!r}: empty first label"
    problem = search.encode_error(name)
    if problem:
        return f"name {name!r}: {problem}"
    if settings.mode not in MODES:
        return f"mode {settings.mode!r}: use one of {', '.join(MODES)}"
    if not settings.servers:
        return "no DNS server to query"
    return None


def run_probe(settings: ProbeSettings, should_stop=None) -> ProbeResult:
    """Run `count` rounds; `should_stop()` (optional) ends the run between rounds."""
    plan = search.plan(settings.name, settings.conf)
    results = [ServerResult(server) for server in settings.servers]
    started = time.time()
    t0 = time.monotonic()
    for round_no in range(1, settings.count + 1):
        round_start = time.monotonic()
        for res in results:
            _run_round(settings, res, plan, round_no)
        if round_no < settings.count:
            if should_stop is not None and should_stop():
                break
            delay = settings.interval - (time.monotonic() - round_start)
            if delay > 0:
                time.sleep(delay)
    return ProbeResult(settings, plan, results, started, time.monotonic() - t0)


def _record(res: ServerResult, candidate: search.Candidate, plan_index: dict, exchanges: dict, round_no: int):
    entry = res.candidates.get(candidate.name)
    if entry is None:
        entry = res.candidates[candidate.name] = CandidateResult(candidate, plan_index.get(candidate.name, -1))
    for qtype, ex in exchanges.items():
        entry.tallies.setdefault(qtype, Tally()).add(ex)
    entry.race.add(exchanges.get("A"), exchanges.get("AAAA"), round_no)


def _run_round(settings: ProbeSettings, res: ServerResult, plan: list, round_no: int) -> None:
    plan_index = {c.name: i for i, c in enumerate(plan)}
    outcomes: dict[str, search.Outcome] = {}
    step_ns: dict[str, int] = {}

    def ask(candidate: search.Candidate) -> search.Outcome:
        if candidate.name in outcomes:
            return outcomes[candidate.name]
        exchanges = query_candidate(settings, res.server, candidate)
        _record(res, candidate, plan_index, exchanges, round_no)
        done = [e for e in exchanges.values() if e.finished_ns is not None and e.sent_ns]
        if done:
            step_ns[candidate.name] = max(e.finished_ns for e in done) - min(e.sent_ns for e in done)
        outcomes[candidate.name] = _outcome(exchanges)
        return outcomes[candidate.name]

    if settings.all_candidates:
        for candidate in plan:
            if candidate.encodable:
                ask(candidate)
    walk = search.walk(settings.name, settings.conf, ask)
    res.walks.append(walk)
    res.lookup_ns.append(sum(step_ns.get(c.name, 0) for c, _ in walk.steps))
