"""The response parser against malformed and hostile packets: reject, classify, never crash."""

import json
import random
import struct

import dns.message
import pytest
from dns_lab import answer, encode_name, header, hostile_variants, rr

from netagent.dns import wire
from netagent.jsonline import dumps_line


def make_query(name="www.lab.test", qtype="A", qid=0x1234):
    return wire.build_query(name, qtype, msg_id=qid)


def test_build_query_is_what_glibc_sends():
    q = make_query()
    msg = dns.message.from_wire(q.wire)
    assert msg.id == 0x1234
    assert msg.flags & dns.flags.RD and not msg.flags & dns.flags.AD
    assert msg.edns < 0  # no OPT record unless options edns0
    assert str(msg.question[0].name) == "www.lab.test."
    q2 = wire.build_query("www.lab.test", "AAAA", edns=True, ad=True, msg_id=7)
    msg2 = dns.message.from_wire(q2.wire)
    assert msg2.edns == 0 and msg2.payload == 1232 and msg2.flags & dns.flags.AD


def test_non_ascii_names_go_on_the_wire_as_utf8_bytes_like_glibc():
    q = wire.build_query("bücher.example", "A", msg_id=1)
    assert encode_name("bücher.example".encode()) in q.wire


def test_a_good_answer_is_accepted_with_addresses_and_rendered_answers():
    q = make_query()
    resp = wire.parse_response(answer(q.wire, ["10.1.1.1", "10.1.1.2", "fd00::1"]), q)
    assert resp.rcode == "NOERROR"
    assert resp.resolved_ips == ["10.1.1.1", "10.1.1.2"]
    assert resp.ancount == 2
    assert resp.answers[0] == {"name": "www.lab.test.", "type": "A", "class": "IN", "ttl": 30, "data": "10.1.1.1"}
    assert resp.flags == ["QR", "RD", "RA"]


def test_question_matches_case_insensitively():
    q = make_query("WWW.Lab.Test")
    assert wire.parse_response(answer(make_query("www.lab.test", qid=0x1234).wire, ["10.1.1.1"]), q).rcode == "NOERROR"


@pytest.mark.parametrize("qtype", ["A", "AAAA"])
def test_every_hostile_variant_is_rejected_with_its_reason(qtype):
    q = make_query(qtype=qtype)
    for expected, packet in hostile_variants(q.wire):
        with pytest.raises(wire.InvalidResponse) as info:
            wire.parse_response(packet, q)
        assert info.value.reason == expected, (expected, packet)
        # details may quote hostile names: they must already be escaped
        assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in info.value.detail)


def test_forward_pointer_and_pointer_pair_loop_are_rejected():
    q = make_query()
    question = encode_name("www.lab.test") + struct.pack("!HH", 1, 1)
    # owner at offset 30 points to 32, which points back to 30: a two-pointer loop
    loop = header(0x1234, an=1) + question + rr(b"\xc0\x20\xc0\x1e", 1, b"\x0a\x00\x00\x01")
    with pytest.raises(wire.InvalidResponse) as info:
        wire.parse_response(loop, q)
    assert info.value.reason == wire.COMPRESSION


def test_truncated_tc_answer_is_valid_and_flagged():
    q = make_query()
    full = answer(q.wire, ["10.1.1.1"] * 3, flags=0x8380)  # QR RD RA + TC
    cut = full[: len(full) - 5]  # TC answers may be cut anywhere after the question
    resp = wire.parse_response(cut, q)
    assert resp.truncated and resp.resolved_ips == [] and "TC" in resp.flags


def test_cname_chain_is_followed_and_unrelated_records_ignored():
    q = make_query()
    qsec = encode_name("www.lab.test") + struct.pack("!HH", 1, 1)
    target = encode_name("edge.cdn.example")
    body = (
        rr(b"\xc0\x0c", 5, target)
        + rr(target, 1, bytes([10, 2, 2, 2]))
        + rr(encode_name("other.example"), 1, bytes([6, 6, 6, 6]))  # not on the chain: ignored
    )
    resp = wire.parse_response(header(0x1234, an=3) + qsec + body, q)
    assert resp.resolved_ips == ["10.2.2.2"]
    assert len(resp.answers) == 3


def test_nxdomain_and_unknown_rcodes():
    q = make_query()
    qsec = encode_name("www.lab.test") + struct.pack("!HH", 1, 1)
    assert wire.parse_response(header(0x1234, flags=0x8183) + qsec, q).rcode == "NXDOMAIN"
    assert wire.parse_response(header(0x1234, flags=0x818C) + qsec, q).rcode == "12"


def test_random_mutations_never_escape_as_anything_but_invalid():
    """10,000 mutated answers: each is accepted or rejected, nothing else, and
    anything accepted serialises to clean JSON."""
    rng = random.Random(20240601)
    q = make_query()
    seeds = [answer(q.wire, ["10.1.1.1", "10.1.1.2"])] + [p for _, p in hostile_variants(q.wire)]
    accepted = rejected = 0
    for _ in range(10_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.5 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.7:
                del data[rng.randrange(len(data) + 1):]
            elif op < 0.85:
                data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
            else:
                pos = rng.randrange(len(data) + 1)
                data[pos:pos] = b"\xc0" + bytes([rng.randrange(256)])
        data[0:2] = b"\x12\x34"  # keep the ID so the parser goes past the header check
        try:
            resp = wire.parse_response(bytes(data), q)
        except wire.InvalidResponse as bad:
            assert bad.reason in wire.REASONS
            rejected += 1
            continue
        accepted += 1
        line = dumps_line({"answers": resp.answers, "ips": resp.resolved_ips, "rcode": resp.rcode})
        assert not any(b < 0x20 for b in line[:-1])
        json.loads(line)
    assert rejected > 1000 and accepted > 10  # the fuzzer exercised both paths
