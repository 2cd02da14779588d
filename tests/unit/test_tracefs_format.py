"""The tracepoint format parser against formats of three kernel generations."""

from pathlib import Path

import pytest

from netagent.tracefs import parse_format, parse_print_symbolic

FIXTURES = Path(__file__).parent.parent / "fixtures" / "tracefs"


def load(name):
    return parse_format((FIXTURES / name).read_text(), "skb", "kfree_skb")


def test_515_layout_has_no_reason_and_no_symbolic_table():
    fmt = load("kfree_skb-5.15.format")
    assert [f.name for f in fmt.fields if not f.name.startswith("common_")] == ["skbaddr", "location", "protocol"]
    assert not fmt.has_field("reason")
    assert fmt.symbolic == {}
    assert fmt.id == 1447


def test_61_layout_reason_without_rx_sk():
    fmt = load("kfree_skb-6.1.format")
    assert fmt.has_field("reason") and not fmt.has_field("rx_sk")
    reason = fmt.field("reason")
    assert (reason.offset, reason.size, reason.ctype) == (28, 4, "enum skb_drop_reason")
    names = fmt.symbolic["reason"]
    assert names[2] == "NOT_SPECIFIED" and names[3] == "NO_SOCKET" and names[8] == "NETFILTER_DROP"
    assert len(names) == 65


def test_618_layout_with_rx_sk_and_shifted_fields():
    fmt = load("kfree_skb-6.18.format")
    assert fmt.has_field("rx_sk")
    assert fmt.field("protocol").offset == 32 and fmt.field("reason").offset == 36
    names = fmt.symbolic["reason"]
    # the numbering differs from 6.1: that is why names are never hard-coded
    assert names[12] == "NETFILTER_DROP" and names[3] == "NO_SOCKET"


@pytest.mark.parametrize("name", ["kfree_skb-5.15.format", "kfree_skb-6.1.format", "kfree_skb-6.18.format"])
def test_generated_struct_places_every_field_at_its_offset(name):
    fmt = load(name)
    c = fmt.c_struct("args")
    assert c.startswith("struct args {") and c.endswith("__attribute__((packed));")
    # walk the generated members and recompute offsets
    pos, seen = 0, {}
    sizes = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "s8": 1, "s16": 2, "s32": 4}
    for line in c.splitlines()[1:-1]:
        ctype, ident = line.strip().rstrip(";").split()
        if "[" in ident:
            ident, n = ident.split("[")
            size = int(n.rstrip("]"))
        else:
            size = sizes[ctype]
        seen[ident] = pos
        pos += size
    for f in fmt.fields:
        assert seen[f.name] == f.offset
    assert pos == fmt.record_size()


def test_print_symbolic_with_hex_values_and_nested_calls():
    fmt = 'print fmt: "%s %s", __print_symbolic(REC->a, { 0x1, "ONE" }, { 16, "SIXTEEN" }), __print_flags(REC->b, "|", { 1, "X" })'
    assert parse_print_symbolic(fmt) == {"a": {1: "ONE", 16: "SIXTEEN"}}


def test_array_and_data_loc_fields():
    text = (
        "\tfield:__u8 saddr[4];\toffset:8;\tsize:4;\tsigned:0;\n"
        "\tfield:__data_loc char[] name;\toffset:12;\tsize:4;\tsigned:0;\n"
    )
    fmt = parse_format(text)
    assert fmt.field("saddr").array_len == 4
    assert fmt.field("name").size == 4
