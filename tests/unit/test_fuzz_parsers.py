"""Property tests: the parsers of kernel and network input never fail with anything but our typed error.

Hypothesis throws arbitrary bytes and text (and mutations of real captures
from tests/fixtures) at the DNS answer parser, the tracefs format parser and
the /proc parsers. The only exception allowed out is errors.MalformedData
(or its subclasses): one clear line for the user, never a traceback.
"""

import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netagent.conntrack import stats as ct_stats
from netagent.dns import wire
from netagent.errors import MalformedData
from netagent.host import procfs
from netagent.tracefs import parse_format

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fixture_texts(*globs: str) -> list[str]:
    return [p.read_text() for g in globs for p in sorted(FIXTURES.glob(g))]


def as_text(data: bytes) -> str:
    """Bytes as the readers hand them over: UTF-8, undecodable bytes kept as surrogates."""
    return data.decode("utf-8", "surrogateescape")


@st.composite
def mutated(draw, samples: list[str]):
    """A real capture with a few lines cut, swapped, duplicated or overwritten."""
    lines = draw(st.sampled_from(samples)).splitlines()
    for _ in range(draw(st.integers(0, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["cut", "dup", "junk", "truncate", "swap"]))
        if action == "cut":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "junk":
            lines[i] = draw(st.text(max_size=80))
        elif action == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def inputs(samples: list[str]):
    return st.one_of(st.binary(max_size=600).map(as_text), st.text(max_size=600), mutated(samples))


PROC_PARSERS = [
    (procfs.parse_proc_stat, "host/stat.*"),
    (procfs.parse_softnet_stat, "host/softnet_stat.*"),
    (procfs.parse_snmp_table, "host/snmp.*"),
    (procfs.parse_snmp_table, "host/netstat.*"),
    (procfs.parse_snmp6, "host/snmp6.*"),
    (procfs.parse_nf_conntrack_stat, "host/nf_conntrack_stat.*"),
    (ct_stats.parse, "conntrack/*.stat"),
]


@pytest.mark.parametrize("parser, pattern", PROC_PARSERS, ids=lambda v: getattr(v, "__qualname__", v))
def test_proc_parsers_raise_only_malformed_data(parser, pattern):
    samples = fixture_texts(pattern)
    assert samples, pattern
    for text in samples:
        parser(text)  # the real captures parse

    @FUZZ
    @given(inputs(samples))
    def check(text):
        try:
            parser(text)
        except MalformedData:
            pass

    check()


def test_tracefs_format_parser_raises_only_malformed_data():
    samples = fixture_texts("tracefs/*.format")
    for text in samples:
        assert parse_format(text).fields

    @FUZZ
    @given(inputs(samples))
    def check(text):
        try:
            parse_format(text, "skb", "kfree_skb")
        except MalformedData:
            pass

    check()


def _answer(query: wire.Query, ips: list[str]) -> bytes:
    import dns.message
    import dns.rrset

    request = dns.message.from_wire(query.wire)
    response = dns.message.make_response(request)
    if ips:
        response.answer.append(dns.rrset.from_text(query.qname, 60, "IN", "A", *ips))
    return response.to_wire()


QUERY = wire.build_query("www.example.test.", "A", msg_id=0x1234)
GOOD = _answer(QUERY, ["192.0.2.1", "192.0.2.2"])


@st.composite
def dns_packets(draw):
    kind = draw(st.sampled_from(["bytes", "flip", "cut", "splice"]))
    if kind == "bytes":
        body = draw(st.binary(max_size=512))
        return GOOD[:2] + body  # keep the ID so the parser goes past the first check
    data = bytearray(GOOD)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(2, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "cut":
        return bytes(data[: draw(st.integers(0, len(data)))])
    at = draw(st.integers(12, len(data)))
    return bytes(data[:at]) + draw(st.binary(max_size=64)) + bytes(data[at:])


def test_dns_answer_parser_raises_only_invalid_response():
    assert sorted(wire.parse_response(GOOD, QUERY).resolved_ips) == ["192.0.2.1", "192.0.2.2"]

    @settings(max_examples=400, deadline=None)
    @given(dns_packets())
    def check(packet):
        try:
            response = wire.parse_response(packet, QUERY)
        except wire.InvalidResponse as exc:
            assert isinstance(exc, MalformedData)
            assert exc.reason in wire.REASONS
        else:
            assert response.rcode and response.size == len(packet)

    check()
