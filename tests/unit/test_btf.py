"""The BTF reader, on a synthetic blob (exact expectations) and on this kernel's BTF."""

import os
import struct

import pytest

from netagent import btf as B


class BtfBuilder:
    """Encodes a small BTF blob the way the kernel lays it out (uapi/linux/btf.h)."""

    def __init__(self, base=None):
        # a split blob (a module's) continues its base's type ids and string offsets
        self.strings = b"" if base else b"\0"
        self.first_str = len(base.strings) if base else 0
        self.types = b""
        self.count = base.count if base else 0

    def s(self, name):
        if not name:
            return 0
        off = self.first_str + len(self.strings)
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


def test_module_split_btf_continues_the_base_ids_and_strings(tmp_path):
    """A module's BTF (/sys/kernel/btf/<module>) refers to vmlinux's types by
    id and to vmlinux's strings by offset; its own start after vmlinux's."""
    base = BtfBuilder()
    u32 = base.int_("unsigned int", 4)
    ptr = base.add("", B.PTR, 0, 0)
    base.struct_("sk_buff", 16, [("len", u32, 0), ("head", ptr, 64)])
    skb_ptr = base.add("", B.PTR, 0, 3)
    base.add("tcp_v4_rcv", B.FUNC, 0, base.add("", B.FUNC_PROTO, 1, u32, struct.pack("<II", base.s("skb"), skb_ptr)))
    (tmp_path / "vmlinux").write_bytes(base.blob())

    mod = BtfBuilder(base)
    # member names reuse a vmlinux string ("len") and add new ones
    tup = mod.struct_("nf_conntrack_tuple", 40, [("pad", u32, 0), ("len", u32, 32), ("dst", u32, 288)])
    conn = mod.struct_("nf_conn", 128, [("status", u32, 0), ("tuple", tup, 256)])
    proto = mod.add("", B.FUNC_PROTO, 2, u32, struct.pack("<II", mod.s("skb"), skb_ptr)
                    + struct.pack("<II", mod.s("net"), ptr))
    mod.add("__nf_conntrack_confirm", B.FUNC, 0, proto)
    (tmp_path / "nf_conntrack").write_bytes(mod.blob())
    assert conn > base.count  # the module's ids come after vmlinux's

    kb = B.KernelBtf(B.Btf.load(str(tmp_path / "vmlinux")), btf_dir=str(tmp_path))
    assert kb.module_names() == ["nf_conntrack"]
    assert kb.member_offset("sk_buff", "head") == 8  # vmlinux
    assert kb.member_offset("nf_conn", "tuple.dst") == 32 + 36  # module struct inside module struct
    assert kb.member_offset("nf_conn", "tuple.len") == 32 + 4
    assert kb.member_size("nf_conn", "status") == 4  # a module member of a vmlinux type
    assert kb.struct_size("nf_conntrack_tuple") == 40
    assert kb.function_params("__nf_conntrack_confirm") == ["skb", "net"]
    assert kb.function_params("tcp_v4_rcv") == ["skb"]
    assert kb.where("nf_conn", (B.STRUCT,)) == "nf_conntrack" and kb.where("sk_buff", (B.STRUCT,)) == "vmlinux"
    split = kb.module("nf_conntrack")
    assert split.describe(split.members(split.struct_id("nf_conn"))[1].type_id) == "struct nf_conntrack_tuple"
    assert kb.function_params("nowhere") is None
    with pytest.raises(B.BtfError, match="vmlinux or module BTF"):
        kb.member_offset("nf_conn_help", "x")


def test_a_module_loaded_later_is_found_on_the_next_lookup(tmp_path):
    base = BtfBuilder()
    u32 = base.int_("unsigned int", 4)
    (tmp_path / "vmlinux").write_bytes(base.blob())
    kb = B.KernelBtf(B.Btf.load(str(tmp_path / "vmlinux")), btf_dir=str(tmp_path))
    assert not kb.has_member("nf_conn", "status")
    mod = BtfBuilder(base)
    mod.struct_("nf_conn", 8, [("status", u32, 32)])
    (tmp_path / "nf_conntrack").write_bytes(mod.blob())
    assert kb.member_offset("nf_conn", "status") == 4


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
