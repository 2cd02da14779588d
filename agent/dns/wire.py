"""DNS queries out, responses in: built and checked strictly, hostile input survived.

A response is accepted for a query only if, like a careful stub resolver
(RFC 5452 section 9, glibc's res_queriesmatch):
  - it came from the address and port the query went to (checked by the
    socket layer in exchange.py; TCP gets it from the connection),
  - the ID matches a query still waiting on that socket,
  - QR is set, the opcode is QUERY,
  - it parses completely (no compression loops or forward pointers, no
    name over 255 octets, no label types beyond 0/3, no section running
    past the end of the packet, no trailing bytes),
  - it carries exactly our question (name case-insensitively, type, class),
  - no name in its records contains a control character, unless it is
    our own question name (glibc's check-names rejects such answers too).
Anything else is an *invalid* packet: counted by reason, and the query
keeps waiting for the genuine answer until its deadline, as resolvers do.
"""

import secrets
import struct
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from netagent.dns.search import to_wire_text
from netagent.errors import MalformedData
from netagent.events import safe_text

HEADER = struct.Struct("!HHHHHH")
QTYPES = {"A": dns.rdatatype.A, "AAAA": dns.rdatatype.AAAA}
MAX_CNAME_HOPS = 16  # glibc follows at most a handful; dnspython allows 16
MAX_REPORTED_ANSWERS = 32  # records copied into an event, to bound its size

# Invalid-packet reasons (a fixed vocabulary: they are counted per reason).
SHORT_HEADER = "short_header"
WRONG_SOURCE = "wrong_source"
WRONG_ID = "wrong_id"
NOT_RESPONSE = "not_a_response"
WRONG_OPCODE = "wrong_opcode"
COMPRESSION = "bad_compression_pointer"  # loops and forward pointers
NAME_TOO_LONG = "name_too_long"
BAD_LABEL = "bad_label_type"
TRUNCATED_PACKET = "truncated_packet"
TRAILING_JUNK = "trailing_junk"
MALFORMED = "malformed"
QUESTION_MISMATCH = "question_mismatch"
CONTROL_CHARS = "control_characters_in_name"
DUPLICATE = "duplicate_answer"
BAD_TCP_FRAME = "bad_tcp_frame"

REASONS = (
    SHORT_HEADER, WRONG_SOURCE, WRONG_ID, NOT_RESPONSE, WRONG_OPCODE, COMPRESSION,
    NAME_TOO_LONG, BAD_LABEL, TRUNCATED_PACKET, TRAILING_JUNK, MALFORMED,
    QUESTION_MISMATCH, CONTROL_CHARS, DUPLICATE, BAD_TCP_FRAME,
)


class InvalidResponse(MalformedData):
    """A packet that is not a valid answer to our query; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Query:
    id: int
    qname: dns.name.Name
    qtype: int
    wire: bytes

    @property
    def type_name(self) -> str:
        return dns.rdatatype.to_text(self.qtype)


@dataclass
class Response:
    rcode: str  # "NOERROR", "NXDOMAIN", ... (unknown codes as their number)
    flags: list[str]  # header flags set, ECS style: ["QR", "RD", "RA", ...]
    truncated: bool
    ancount: int
    resolved_ips: list[str] = field(default_factory=list)
    answers: list[dict] = field(default_factory=list)  # ECS dns.answers entries
    size: int = 0


def build_query(name: str, qtype: str, *, edns: bool = False, ad: bool = False,
                msg_id: int | None = None, payload: int = 1232) -> Query:
    """A recursive query as glibc sends it: RD set, EDNS only with options edns0.

    `name` is the candidate as the resolver spells it; it must be encodable
    (search.encode_error() said None).
    """
    qname = dns.name.from_text(to_wire_text(name), origin=dns.name.root)
    rdtype = QTYPES[qtype]
    msg = dns.message.Message(id=secrets.randbits(16) if msg_id is None else msg_id)
    msg.flags = dns.flags.RD | (dns.flags.AD if ad else 0)
    msg.find_rrset(msg.question, qname, dns.rdataclass.IN, rdtype, create=True, force_unique=True)
    if edns:
        msg.use_edns(0, payload=payload)
    return Query(msg.id, qname, rdtype, msg.to_wire())


def peek_id(data: bytes) -> int | None:
    return struct.unpack_from("!H", data)[0] if len(data) >= 2 else None


def _classify(exc: Exception) -> str:
    if isinstance(exc, dns.name.BadPointer):
        return COMPRESSION
    if isinstance(exc, dns.name.NameTooLong):
        return NAME_TOO_LONG
    if isinstance(exc, dns.name.BadLabelType):
        return BAD_LABEL
    if isinstance(exc, dns.message.ShortHeader):
        return SHORT_HEADER
    if isinstance(exc, dns.message.TrailingJunk):
        return TRAILING_JUNK
    if type(exc) is dns.exception.FormError:
        # dnspython's plain FormError is what its parser raises when a read
        # runs past the end of the packet
        return TRUNCATED_PACKET
    return MALFORMED


def _has_control_chars(name: dns.name.Name) -> bool:
    return any(b < 0x20 or b == 0x7F for label in name.labels for b in label)


_NAME_FIELDS = ("target", "exchange", "mname", "rname", "next", "replacement")


def _names_in(rrset):
    yield rrset.name
    for rd in rrset:
        for attr in _NAME_FIELDS:
            value = getattr(rd, attr, None)
            if isinstance(value, dns.name.Name):
                yield value


def parse_response(data: bytes, query: Query) -> Response:
    """Validate `data` as the answer to `query`; raise InvalidResponse if it is not.

    Never raises anything else, whatever the bytes are.
    """
    try:
        return _parse(data, query)
    except InvalidResponse:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile input must never escape as a crash
        raise InvalidResponse(_classify(exc), safe_text(f"{type(exc).__name__}: {exc}", 200)) from None


def _parse(data: bytes, query: Query) -> Response:
    if len(data) < HEADER.size:
        raise InvalidResponse(SHORT_HEADER, f"{len(data)} bytes")
    msg_id, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(data)
    if msg_id != query.id:
        raise InvalidResponse(WRONG_ID, f"id {msg_id}, expected {query.id}")
    if not flags & dns.flags.QR:
        raise InvalidResponse(NOT_RESPONSE)
    if dns.opcode.from_flags(flags) != dns.opcode.QUERY:
        raise InvalidResponse(WRONG_OPCODE, f"opcode {dns.opcode.from_flags(flags)}")
    truncated = bool(flags & dns.flags.TC)
    # A truncated (TC) answer is only a signal to retry over TCP: glibc reads
    # nothing past its question, so neither do we.
    msg = dns.message.from_wire(data, question_only=truncated, ignore_trailing=truncated)
    if qdcount != 1 or len(msg.question) != 1:
        raise InvalidResponse(QUESTION_MISMATCH, f"{qdcount} questions")
    question = msg.question[0]
    if question.name != query.qname or question.rdtype != query.qtype or question.rdclass != dns.rdataclass.IN:
        raise InvalidResponse(
            QUESTION_MISMATCH,
            safe_text(f"{question.name} {dns.rdatatype.to_text(question.rdtype)}", 300),
        )
    sections = [] if truncated else [msg.answer, msg.authority, msg.additional]
    for section in sections:
        for rrset in section:
            for name in _names_in(rrset):
                # our own question may carry them (a search domain from the
                # namespace's resolv.conf): only names the server chose count
                if name != query.qname and _has_control_chars(name):
                    raise InvalidResponse(CONTROL_CHARS, safe_text(name.to_text(), 300))
    rcode_value = msg.rcode()
    try:
        rcode = dns.rcode.to_text(rcode_value)
    except ValueError:
        rcode = str(rcode_value)
    response = Response(
        rcode=rcode,
        flags=_flag_names(flags),
        truncated=truncated,
        ancount=0 if truncated else sum(len(r) for r in msg.answer),
        size=len(data),
    )
    if not truncated:
        response.resolved_ips = _chain_addresses(msg, query)
        response.answers = _render_answers(msg)
    return response


def _flag_names(flags: int) -> list[str]:
    names = []
    for flag, text in ((dns.flags.QR, "QR"), (dns.flags.AA, "AA"), (dns.flags.TC, "TC"),
                       (dns.flags.RD, "RD"), (dns.flags.RA, "RA"), (dns.flags.AD, "AD"),
                       (dns.flags.CD, "CD")):
        if flags & flag:
            names.append(text)
    return names


def _chain_addresses(msg: dns.message.Message, query: Query) -> list[str]:
    """Addresses of the queried type reachable from the question through CNAMEs.

    Records for other owners are ignored (a resolver does not believe them).
    """
    owners = {query.qname}
    current = query.qname
    for _ in range(MAX_CNAME_HOPS):
        step = None
        for rrset in msg.answer:
            if rrset.rdtype == dns.rdatatype.CNAME and rrset.name == current:
                step = next(iter(rrset)).target
                break
        if step is None or step in owners:
            break
        owners.add(step)
        current = step
    found: list[str] = []
    for rrset in msg.answer:
        if rrset.rdtype == query.qtype and rrset.rdclass == dns.rdataclass.IN and rrset.name in owners:
            for rd in rrset:
                text = rd.to_text()
                if text not in found:
                    found.append(text)
    return found


def _render_answers(msg: dns.message.Message) -> list[dict]:
    out = []
    for rrset in msg.answer:
        for rd in rrset:
            if len(out) >= MAX_REPORTED_ANSWERS:
                return out
            out.append({
                "name": safe_text(rrset.name.to_text(), 300),
                "type": dns.rdatatype.to_text(rrset.rdtype),
                "class": dns.rdataclass.to_text(rrset.rdclass),
                "ttl": rrset.ttl,
                "data": safe_text(rd.to_text(), 300),
            })
    return out


def tcp_frame(query: Query) -> bytes:
    return struct.pack("!H", len(query.wire)) + query.wire
