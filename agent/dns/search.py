"""The names glibc's stub resolver tries for one lookup, and where it stops.

A transcription of the control flow of __res_context_search
(resolv/res_query.c, glibc 2.36), driven by the outcome of each query:

1. dots = number of '.' in the name (a trailing dot counts); a trailing dot
   means absolute.
2. dots >= ndots or trailing dot: try the name as is first. An answer, or
   any result at all for an absolute name, ends the lookup.
3. Unless the name is absolute, try name + "." + each search domain in
   order. NXDOMAIN and NODATA go on to the next domain, so does SERVFAIL;
   a timeout, REFUSED/FORMERR/NOTIMP or a name that cannot be encoded ends
   the search loop; an ICMP "port unreachable" (ECONNREFUSED) ends the
   whole lookup. A search domain "." (or "") means the root: it is the
   as-is name.
4. If the name was not tried as is yet (and `no-tld-query` does not forbid
   it for a dotless name), try it as is last.

`plan()` is the list of names tried when every query says NXDOMAIN: the
expansion the resolver performs for a name that exists nowhere. `walk()`
replays the same flow with real outcomes.
"""

import enum
from dataclasses import dataclass

import dns.exception
import dns.name

from netagent.dns.resolvconf import ResolvConf

MAXDNAME = 1025  # glibc's text buffer limit checked before encoding


class Outcome(enum.Enum):
    """A query result in the terms the search loop distinguishes (h_errno)."""

    ANSWER = "answer"  # NOERROR with records: the lookup succeeds
    NXDOMAIN = "nxdomain"  # HOST_NOT_FOUND: keep searching
    NODATA = "nodata"  # NO_DATA: keep searching
    SERVFAIL = "servfail"  # TRY_AGAIN with rcode SERVFAIL: keep searching
    NO_ANSWER = "no-answer"  # TRY_AGAIN: timed out or unreachable; stop searching
    CONN_REFUSED = "connection-refused"  # ECONNREFUSED (ICMP port unreachable): stop the lookup
    NO_RECOVERY = "no-recovery"  # REFUSED/FORMERR/NOTIMP, or unencodable: stop searching


_CONTINUE = {Outcome.NXDOMAIN, Outcome.NODATA, Outcome.SERVFAIL}


@dataclass(frozen=True)
class Candidate:
    name: str  # presentation form as sent, always absolute (trailing dot)
    origin: str  # "as-is" or the search domain that was appended
    step: str  # "as-is-first", "search" or "as-is-last"
    error: str | None = None  # why the resolver cannot even send it

    @property
    def encodable(self) -> bool:
        return self.error is None


@dataclass
class Walk:
    steps: list[tuple[Candidate, Outcome]]
    result: Outcome  # ANSWER, or the error the application would see
    answered_by: Candidate | None

    @property
    def names(self) -> list[str]:
        return [c.name for c, _ in self.steps]


def to_wire_text(name: str) -> str:
    """Non-ASCII characters as \\DDD escapes of their UTF-8 bytes.

    glibc puts the bytes of the name on the wire as they are (no IDNA unless
    the application asks for it); dnspython would IDNA-encode Unicode, so we
    hand it escapes that encode to the same bytes glibc sends.
    """
    if name.isascii():
        return name
    out = []
    for ch in name:
        if ch.isascii():
            out.append(ch)
        else:
            out.extend(f"\\{b:03d}" for b in ch.encode("utf-8", errors="surrogateescape"))
    return "".join(out)


def encode_error(text: str) -> str | None:
    """Why `text` cannot be put in a query (glibc: res_nmkquery fails), or None."""
    try:
        dns.name.from_text(to_wire_text(text), origin=dns.name.root)
    except dns.name.EmptyLabel:
        return "empty label"
    except dns.name.LabelTooLong:
        return "label longer than 63 octets"
    except dns.name.NameTooLong:
        return "name longer than 255 octets"
    except dns.exception.DNSException as exc:
        return type(exc).__name__
    return None


def absolute(text: str) -> str:
    return text if text.endswith(".") else text + "."


def _as_is(name: str, step: str) -> Candidate:
    if len(name) - 1 >= MAXDNAME - 1:
        return Candidate(absolute(name), "as-is", step, "name longer than glibc's MAXDNAME")
    return Candidate(absolute(name), "as-is", step, encode_error(name))


def _with_domain(name: str, domain: str) -> Candidate:
    text = f"{name}.{domain}"
    if len(name) + len(domain) + 1 >= MAXDNAME:
        return Candidate(absolute(text), domain or ".", "search", "name longer than glibc's MAXDNAME")
    return Candidate(absolute(text), domain or ".", "search", encode_error(text))


def walk(name: str, conf: ResolvConf, outcome) -> Walk:
    """Replay __res_context_search for `name`; `outcome(candidate)` answers each query.

    `outcome` is called only for encodable candidates, in the resolver's order.
    """
    steps: list[tuple[Candidate, Outcome]] = []

    def query(candidate: Candidate) -> Outcome:
        result = Outcome.NO_RECOVERY if not candidate.encodable else outcome(candidate)
        steps.append((candidate, result))
        return result

    dots = name.count(".")
    trailing_dot = name.endswith(".")
    saved: Outcome | None = None
    last: Outcome = Outcome.NXDOMAIN  # glibc: HOST_NOT_FOUND if we never query
    tried_as_is = False
    searched = False
    root_on_list = False
    got_nodata = got_servfail = False

    if dots >= conf.ndots or trailing_dot:
        result = query(_as_is(name, "as-is-first"))
        if result is Outcome.ANSWER or trailing_dot:
            return Walk(steps, result, steps[-1][0] if result is Outcome.ANSWER else None)
        saved = last = result
        tried_as_is = True

    # RES_DEFNAMES and RES_DNSRCH are always on: resolv.conf cannot clear them.
    if not trailing_dot:
        for domain in conf.search:
            searched = True
            if domain.startswith("."):
                domain = domain[1:]
            if domain == "":
                root_on_list = True
            result = query(_with_domain(name, domain))
            if result is Outcome.ANSWER:
                return Walk(steps, result, steps[-1][0])
            if result is Outcome.CONN_REFUSED:
                return Walk(steps, result, None)
            last = result
            if result is Outcome.NODATA:
                got_nodata = True
            elif result is Outcome.SERVFAIL:
                got_servfail = True
            if result not in _CONTINUE:
                break

    if (dots or not searched or "no-tld-query" not in conf.options) and not (tried_as_is or root_on_list):
        result = query(_as_is(name, "as-is-last"))
        if result is Outcome.ANSWER:
            return Walk(steps, result, steps[-1][0])
        last = result

    if saved is not None:
        final = saved
    elif got_nodata:
        final = Outcome.NODATA
    elif got_servfail:
        final = Outcome.SERVFAIL
    else:
        final = last
    return Walk(steps, final, None)


def plan(name: str, conf: ResolvConf) -> list[Candidate]:
    """The names tried, in order, when every one of them is NXDOMAIN."""
    return [c for c, _ in walk(name, conf, lambda _c: Outcome.NXDOMAIN).steps]


def pair_outcome(a, aaaa) -> Outcome:
    """Combine the A and AAAA results of one name as __res_context_query does.

    Each argument is None (not asked), or a (status, rcode, ancount) triple
    with status "answer", "timeout", "refused", "unreachable" or "error". The twin that
    got no reply stands in for the missing one, as glibc's hp/hp2 swap does.
    """
    got = [r for r in (a, aaaa) if r is not None and r[0] == "answer"]
    asked = [r for r in (a, aaaa) if r is not None]
    if not got:
        if asked and all(r[0] == "refused" for r in asked):
            return Outcome.CONN_REFUSED
        return Outcome.NO_ANSWER
    hp = a if a is not None and a[0] == "answer" else got[0]
    hp2 = aaaa if aaaa is not None and aaaa[0] == "answer" else hp
    _, rc1, an1 = hp
    _, rc2, an2 = hp2
    if (rc1 == "NOERROR" and an1) or (rc2 == "NOERROR" and an2):
        return Outcome.ANSWER
    code = rc2 if rc1 == "NOERROR" else rc1
    if code == "NXDOMAIN":
        return Outcome.NXDOMAIN
    if code == "SERVFAIL":
        return Outcome.SERVFAIL
    if code == "NOERROR":
        return Outcome.NODATA
    return Outcome.NO_RECOVERY
