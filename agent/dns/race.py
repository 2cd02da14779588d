"""The A/AAAA pair signature of the conntrack insertion race.

glibc sends the A and AAAA queries of one lookup back to back from one UDP
socket: same 5-tuple, two packets microseconds apart. When they cross a
NAT (a Kubernetes Service IP) on different CPUs, the second conntrack
entry can lose the insertion race and its packet is dropped: one of the
two queries is answered, its twin never is, and the application waits for
the resolver's timeout (the "DNS takes 5 seconds" story).

The signature per round: both queries in flight together from the same
source port, one answered, the other timed out. Plain random loss produces
it too (with probability 2q(1-q) for a loss rate q), so the counts for
pairs with one lost that were not sent that way (separate sockets, or one
after the other), and for pairs where both were lost, are kept beside it:
a signature that disappears with --mode parallel-sockets or sequential
while the other loss stays is the race.
"""

from dataclasses import dataclass, field

from netagent.dns.exchange import Exchange


def signature(a: Exchange | None, aaaa: Exchange | None) -> str | None:
    """Classify one pair: "race", "one_lost", "both_lost" or None.

    Only a twin that *timed out* counts as lost: a refusal or an ICMP error
    is a different story and is reported as such elsewhere.
    """
    if a is None or aaaa is None:
        return None
    statuses = {a.status, aaaa.status}
    if statuses == {"timeout"}:
        return "both_lost"
    if statuses != {"answer", "timeout"}:
        return None
    first, second = (a, aaaa) if a.sent_ns <= aaaa.sent_ns else (aaaa, a)
    together = first.finished_ns is not None and second.sent_ns < first.finished_ns
    same_socket = (
        a.transport == aaaa.transport == "udp"
        and not a.tcp_retry and not aaaa.tcp_retry
        and a.source_port is not None
        and a.source_port == aaaa.source_port
    )
    return "race" if same_socket and together else "one_lost"


@dataclass
class RaceTally:
    pairs: int = 0
    race: int = 0
    one_lost: int = 0
    both_lost: int = 0
    examples: list[dict] = field(default_factory=list)  # a few rounds with the signature

    def add(self, a: Exchange | None, aaaa: Exchange | None, round_no: int) -> None:
        if a is None or aaaa is None:
            return
        self.pairs += 1
        kind = signature(a, aaaa)
        if kind == "race":
            self.race += 1
            if len(self.examples) < 5:
                answered, lost = (a, aaaa) if a.status == "answer" else (aaaa, a)
                self.examples.append({
                    "round": round_no,
                    "source_port": a.source_port,
                    "answered": answered.query.type_name,
                    "lost": lost.query.type_name,
                })
        elif kind == "one_lost":
            self.one_lost += 1
        elif kind == "both_lost":
            self.both_lost += 1

    @property
    def suspected(self) -> bool:
        return self.race > 0

    def as_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "same_port_one_lost": self.race,
            "other_one_lost": self.one_lost,
            "both_lost": self.both_lost,
            "examples": list(self.examples),
        }
