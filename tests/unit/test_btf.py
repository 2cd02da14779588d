"""The BTF reader, on a synthetic blob (exact expectations) and on this kernel's BTF."""

import os
import struct

import pytest

from netagent import btf as B


class BtfBuilder:
    """Encodes a small BTF blob the way the kernel lays it out (uapi/linux/btf.h)."""

    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def s(self, name):
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, name, kind, vlen, size_or_type, trailer=b"", kind_flag=0):
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + trailer
        self.count += 1
        return self.count

    def int_(self, name, size):
        return self.add(name, B.INT, 0, size, struct.pack("<I", size * 8))

    def struct_(self, name, size, members, union=False, kind_flag=0):
        trailer = b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in members)
        return self.add(name, B.UNION if union else B.STRUCT, len(members), size, trailer, kind_flag)

    def blob(self):
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + self.types + self.strings


@pytest.fixture
def synthetic():
    b = BtfBuilder()
    u32 = b.int_("unsigned int", 4)
    u16 = b.int_("short unsigned int", 2)
    ptr = b.add("", B.PTR, 0, 0)
    inner = b.struct_("inner", 8, [("a", u32, 0), ("b", u16, 32)])
    anon = b.struct_("", 8, [("x", inner, 0), ("y", u32, 0)], union=True)
    # kind_flag: member offsets carry a bitfield size in the top 8 bits
    outer = b.struct_("outer", 24, [("first", ptr, 0), ("", anon, 64), ("flags", u32, (3 << 24) | 128)],
                      kind_flag=1)
    b.add("color", B.ENUM, 2, 4, struct.pack("<Ii", b.s("RED"), 0) + struct.pack("<Ii", b.s("BLUE"), -5))
    tdef = b.add("inner_t", B.TYPEDEF, 0, inner)
    b.struct_("holder", 16, [("pad", u32, 0), ("t", tdef, 64)])
    return B.Btf(b.blob()), outer


def test_members_through_anonymous_unions(synthetic):
    btf, _ = synthetic
    assert btf.member_offset("outer", "first") == 0
    assert btf.member_offset("outer", "y") == 8  # inside the anonymous union at bit 64
    assert btf.member_offset("outer", "x.b") == 12  # union at 8 + inner.b at 4


def test_bitfield_members(synthetic):
    btf, _ = synthetic
    off, member = btf.member("outer", "flags")
    assert member.bitfield_size == 3 and member.bit_offset == 128 and off == 16


def test_typedefs_are_followed(synthetic):
    btf, _ = synthetic
    assert btf.member_offset("holder", "t.b") == 8 + 4
    assert btf.member_size("holder", "t.a") == 4


def test_enum_values_including_negative(synthetic):
    btf, _ = synthetic
    assert btf.enum("color") == {0: "RED", -5: "BLUE"}


def test_missing_names_raise(synthetic):
    btf, _ = synthetic
    with pytest.raises(B.BtfError, match="no member"):
        btf.member_offset("outer", "nope")
    with pytest.raises(B.BtfError):
        btf.member_offset("nosuchstruct", "a")
    assert not btf.has_member("outer", "z")


def test_bad_magic_is_rejected():
    with pytest.raises(B.BtfError, match="magic"):
        B.Btf(b"\0" * 32)


@pytest.mark.skipif(not os.path.exists(B.VMLINUX_BTF), reason="kernel has no BTF (CONFIG_DEBUG_INFO_BTF)")
def test_running_kernel_btf_has_the_fields_the_drop_sensor_reads():
    from netagent.probes.drops import BTF_FIELDS

    btf = B.Btf.load()
    for struct_name, path in BTF_FIELDS.values():
        assert btf.has_member(struct_name, path), (struct_name, path)
    # sk_buff header offsets are u16 each, adjacent in struct_group(headers)
    assert btf.member_size("sk_buff", "network_header") == 2
    reasons = btf.enum("skb_drop_reason")
    assert "SKB_DROP_REASON_NO_SOCKET" in reasons.values()


@pytest.mark.skipif(not os.path.exists(B.VMLINUX_BTF), reason="kernel has no BTF (CONFIG_DEBUG_INFO_BTF)")
def test_running_kernel_function_prototypes_and_tracepoint_args():
    btf = B.Btf.load()
    assert btf.function_params("tcp_v4_rcv") == ["skb"]
    assert btf.function_params("no_such_function_xyz") is None
    args = btf.raw_tracepoint_args("kfree_skb")
    assert args[:2] == ["struct sk_buff *", "void *"]
