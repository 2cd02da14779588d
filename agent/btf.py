"""A reader for the kernel's BTF type data (/sys/kernel/btf/vmlinux and modules).

BCC compiles against whatever kernel headers are installed, which may be of
another kernel version; their struct layouts are then wrong. The running
kernel's BTF is the truth, so every struct field a BPF program reads takes
its byte offset from here and is passed into the C as a macro.

A loadable module's types and function prototypes are not in vmlinux: they
are in /sys/kernel/btf/<module>, "split" BTF stacked on vmlinux's (its type
ids continue after vmlinux's last one, its string offsets after vmlinux's
string section). On 6.12, __nf_conntrack_confirm's prototype lives only in
nf_conntrack's BTF. kernel_btf() looks in vmlinux first, then in modules.

Format: include/uapi/linux/btf.h (header, type section, string section).
"""

import os
import struct
from dataclasses import dataclass

BTF_DIR = "/sys/kernel/btf"
VMLINUX_BTF = f"{BTF_DIR}/vmlinux"
BTF_MAGIC = 0xEB9F

# BTF_KIND_* numbers (uapi, stable)
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)

# bytes of kind-specific data after the 12-byte common header: fixed + per-vlen item
_TRAILER = {
    INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
    FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12),
}
_MODIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}


class BtfError(Exception):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 when not a bitfield

    @property
    def byte_offset(self) -> int:
        return self.bit_offset // 8


class _MemberLookups:
    """Shortcuts over member(), shared by one blob and the kernel's set of blobs."""

    def member(self, struct_name: str, path: str) -> tuple[int, Member]:
        raise NotImplementedError

    def member_offset(self, struct_name: str, path: str) -> int:
        return self.member(struct_name, path)[0]

    def has_member(self, struct_name: str, path: str) -> bool:
        try:
            self.member(struct_name, path)
            return True
        except BtfError:
            return False


class Btf(_MemberLookups):
    """One BTF blob. With `base`, a split blob (a module's) whose ids and
    strings continue those of `base` (vmlinux); lookups of base ids and
    strings are answered by `base`."""

    def __init__(self, data: bytes, base: "Btf | None" = None):
        if len(data) < 24:
            raise BtfError("BTF blob too short")
        magic = struct.unpack_from("<H", data, 0)[0]
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x} (big-endian BTF is not supported)")
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, 4)
        self._data = data
        self._base = base
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._str_start = hdr_len + str_off
        self._str_end = self._str_start + str_len
        self.str_len = str_len
        # strings and ids of a split blob continue the base's
        self._first_str = base._first_str + base.str_len if base else 0
        self._first_id = base.type_count if base else 0
        # type id - first id -> byte position of its record; a standalone blob's id 0 is void
        self._offsets = [] if base else [0]
        self._by_name: dict[tuple[int, str], list[int]] | None = None
        self._index_types()

    @classmethod
    def load(cls, path: str = VMLINUX_BTF, base: "Btf | None" = None) -> "Btf":
        try:
            with open(path, "rb") as f:
                return cls(f.read(), base)
        except FileNotFoundError:
            raise BtfError(f"{path} not found: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF)") from None

    @property
    def type_count(self) -> int:
        """Ids in use, void and the base's included (the next split blob's first id)."""
        return self._first_id + len(self._offsets)

    def own_ids(self) -> range:
        """The ids of the types this blob itself defines."""
        return range(max(self._first_id, 1), self.type_count)

    # -- indexing -------------------------------------------------------------
    def _index_types(self):
        data, pos, end = self._data, self._types_start, self._types_end
        offsets = self._offsets
        unpack = struct.unpack_from
        while pos < end:
            offsets.append(pos)
            info = unpack("<I", data, pos + 4)[0]
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            fixed, per_item = _TRAILER.get(kind, (0, 0))
            pos += 12 + fixed + vlen * per_item

    def _record(self, type_id: int) -> tuple[bytes, int]:
        """(blob, byte position) of a type's record, in this blob or its base."""
        if type_id < self._first_id:
            return self._base._record(type_id)
        try:
            return self._data, self._offsets[type_id - self._first_id]
        except IndexError:
            raise BtfError(f"type id {type_id} is beyond this BTF ({self.type_count} types)") from None

    def _header(self, type_id: int) -> tuple[bytes, int, int, int, int, int]:
        """(blob, position, name offset, kind, vlen, size or type) of a type."""
        data, pos = self._record(type_id)
        name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
        return data, pos, name_off, (info >> 24) & 0x1F, info & 0xFFFF, size_or_type | ((info >> 31) << 32)

    def _string(self, off: int) -> str:
        if off < self._first_str:
            return self._base._string(off)
        start = self._str_start + off - self._first_str
        end = self._data.index(b"\0", start, self._str_end)
        return self._data[start:end].decode()

    def kind(self, type_id: int) -> int:
        return self._header(type_id)[3]

    def name(self, type_id: int) -> str:
        return self._string(self._header(type_id)[2])

    def find(self, name: str, kind: int) -> int:
        """Type id of the named type of `kind`: this blob's own first, then its base's."""
        if self._by_name is None:
            self._build_name_index()
        ids = self._by_name.get((kind, name), [])
        if not ids:
            if self._base is not None:
                return self._base.find(name, kind)
            raise BtfError(f"no {_KIND_NAMES.get(kind, kind)} {name!r} in BTF")
        return ids[0]

    def defines(self, name: str, kind: int) -> bool:
        """Whether this blob itself (not its base) has the named type."""
        if self._by_name is None:
            self._build_name_index()
        return (kind, name) in self._by_name

    def _build_name_index(self):
        index: dict[tuple[int, str], list[int]] = {}
        wanted = {STRUCT, UNION, ENUM, ENUM64, TYPEDEF, FUNC}
        data = self._data
        for type_id in self.own_ids():
            pos = self._offsets[type_id - self._first_id]
            name_off, info = struct.unpack_from("<II", data, pos)
            kind = (info >> 24) & 0x1F
            if name_off and kind in wanted:
                index.setdefault((kind, self._string(name_off)), []).append(type_id)
        self._by_name = index

    def resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers."""
        while type_id and self.kind(type_id) in _MODIFIERS:
            type_id = self._header(type_id)[5] & 0xFFFFFFFF
        return type_id

    # -- structs ----------------------------------------------------------------
    def members(self, type_id: int) -> list[Member]:
        data, pos, _, kind, vlen, _ = self._header(type_id)
        if kind not in (STRUCT, UNION):
            raise BtfError(f"type {type_id} is not a struct or union")
        kind_flag = (struct.unpack_from("<I", data, pos + 4)[0] >> 31) & 1
        out = []
        for i in range(vlen):
            name_off, mtype, offset = struct.unpack_from("<III", data, pos + 12 + 12 * i)
            if kind_flag:
                out.append(Member(self._string(name_off), mtype, offset & 0xFFFFFF, offset >> 24))
            else:
                out.append(Member(self._string(name_off), mtype, offset, 0))
        return out

    def size(self, type_id: int) -> int:
        type_id = self.resolve(type_id)
        data, pos, _, kind, _, size_or_type = self._header(type_id)
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return size_or_type & 0xFFFFFFFF
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem_type, _index_type, nelems = struct.unpack_from("<III", data, pos + 12)
            return self.size(elem_type) * nelems
        raise BtfError(f"size of kind {kind} not supported")

    def struct_id(self, name: str) -> int:
        try:
            return self.find(name, STRUCT)
        except BtfError:
            return self.find(name, UNION)

    def member(self, struct_name: str, path: str) -> tuple[int, Member]:
        """Byte offset and Member for a dotted member path, e.g. ("net", "ns.inum").

        Anonymous unions/structs are searched through, as C does.
        """
        type_id = self.struct_id(struct_name)
        total_bits = 0
        member = None
        for part in path.split("."):
            type_id = self.resolve(type_id)
            found = self._find_member(type_id, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path!r} in this kernel's BTF")
            bits, member = found
            total_bits += bits
            type_id = member.type_id
        return total_bits // 8, member

    def _find_member(self, type_id: int, name: str) -> tuple[int, Member] | None:
        for m in self.members(type_id):
            if m.name == name:
                return m.bit_offset, m
            if not m.name:
                inner = self.resolve(m.type_id)
                if self.kind(inner) in (STRUCT, UNION):
                    found = self._find_member(inner, name)
                    if found is not None:
                        return m.bit_offset + found[0], found[1]
        return None

    def member_size(self, struct_name: str, path: str) -> int:
        return self.size(self.member(struct_name, path)[1].type_id)

    # -- tracepoint prototypes -------------------------------------------------------
    def describe(self, type_id: int) -> str:
        """A C-like spelling of a type: 'struct sk_buff *', 'enum skb_drop_reason', 'void *'."""
        type_id = self.resolve(type_id)
        if type_id == 0:
            return "void"
        kind = self.kind(type_id)
        if kind == PTR:
            return self.describe(self._header(type_id)[5] & 0xFFFFFFFF) + " *"
        prefix = {STRUCT: "struct ", UNION: "union ", ENUM: "enum ", ENUM64: "enum ", FWD: "struct "}.get(kind, "")
        return prefix + (self.name(type_id) or "<anon>")

    def function_params(self, name: str) -> list[str] | None:
        """Parameter names of kernel function `name` from its BTF prototype, or
        None when BTF does not describe it (inlined, or static without BTF)."""
        try:
            func_id = self.find(name, FUNC)
        except BtfError:
            return None
        data, pos, _, kind, vlen, _ = self._header(self._header(func_id)[5] & 0xFFFFFFFF)
        if kind != FUNC_PROTO:
            return None
        return [self._string(struct.unpack_from("<II", data, pos + 12 + 8 * i)[0]) for i in range(vlen)]

    def raw_tracepoint_args(self, event: str) -> list[str]:
        """Argument types of a tracepoint as a raw tracepoint sees them (ctx->args[i]).

        The kernel describes each tracepoint with a typedef btf_trace_<event>,
        a pointer to a function whose first parameter is the tracepoint's
        private data; the rest are the TP_PROTO arguments, in order.
        """
        pointer = self.resolve(self.find(f"btf_trace_{event}", TYPEDEF))
        if self.kind(pointer) != PTR:
            raise BtfError(f"btf_trace_{event} is not a function pointer")
        data, pos, _, kind, vlen, _ = self._header(self._header(pointer)[5] & 0xFFFFFFFF)
        if kind != FUNC_PROTO:
            raise BtfError(f"btf_trace_{event} is not a function prototype")
        params = [struct.unpack_from("<II", data, pos + 12 + 8 * i)[1] for i in range(vlen)]
        return [self.describe(t) for t in params[1:]]

    # -- enums ------------------------------------------------------------------
    def enum(self, name: str) -> dict[int, str]:
        """Value -> enumerator name for enum `name`."""
        try:
            type_id = self.find(name, ENUM)
        except BtfError:
            type_id = self.find(name, ENUM64)
        data, pos, _, kind, vlen, _ = self._header(type_id)
        out = {}
        if kind == ENUM:
            for i in range(vlen):
                name_off, val = struct.unpack_from("<Ii", data, pos + 12 + 8 * i)
                out[val] = self._string(name_off)
        else:
            for i in range(vlen):
                name_off, lo, hi = struct.unpack_from("<III", data, pos + 12 + 12 * i)
                out[(hi << 32) | lo] = self._string(name_off)
        return out


_KIND_NAMES = {STRUCT: "struct", UNION: "union", ENUM: "enum", ENUM64: "enum64", TYPEDEF: "typedef", FUNC: "function"}

class KernelBtf(_MemberLookups):
    """The running kernel's BTF: vmlinux, then the BTF of each loaded module.

    Name lookups (struct members, enums, function prototypes, tracepoint
    arguments) are answered by the first blob that defines the name:
    vmlinux, then modules (`prefer` first). A module loaded after we started
    is found on the next miss. Type-id methods (size, kind, ...) are
    vmlinux's.
    """

    def __init__(self, vmlinux: Btf, btf_dir: str = BTF_DIR, prefer: tuple[str, ...] = ("nf_conntrack",)):
        self.vmlinux = vmlinux
        self._dir = btf_dir
        self._prefer = prefer
        self._modules: dict[str, tuple[tuple[int, int], Btf]] = {}  # name -> ((inode, size), blob)

    def __getattr__(self, attr):
        return getattr(self.vmlinux, attr)

    # -- modules ------------------------------------------------------------------
    def module_names(self) -> list[str]:
        """Loaded modules that have BTF, in lookup order."""
        try:
            names = sorted(n for n in os.listdir(self._dir) if n != "vmlinux")
        except OSError:
            return []
        first = [n for n in self._prefer if n in names]
        return first + [n for n in names if n not in first]

    def module(self, name: str) -> Btf | None:
        """A module's split BTF, re-read if the module was reloaded; None if absent."""
        path = os.path.join(self._dir, name)
        try:
            st = os.stat(path)
        except OSError:
            self._modules.pop(name, None)
            return None
        stamp = (st.st_ino, st.st_size)
        cached = self._modules.get(name)
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            blob = Btf.load(path, base=self.vmlinux)
        except (BtfError, OSError, struct.error):
            return None  # unloaded while we read it, or not split on this vmlinux
        self._modules[name] = (stamp, blob)
        return blob

    def owner(self, name: str, kinds: tuple[int, ...]) -> Btf:
        """The blob (vmlinux or a module) that defines `name` as one of `kinds`."""
        for kind in kinds:
            if self.vmlinux.defines(name, kind):
                return self.vmlinux
        for module in self.module_names():
            blob = self.module(module)
            if blob is not None and any(blob.defines(name, kind) for kind in kinds):
                return blob
        raise BtfError(f"no {_KIND_NAMES.get(kinds[0], kinds[0])} {name!r} in vmlinux or module BTF")

    def where(self, name: str, kinds: tuple[int, ...]) -> str:
        """'vmlinux' or the module whose BTF defines `name`."""
        blob = self.owner(name, kinds)
        if blob is self.vmlinux:
            return "vmlinux"
        return next(n for n, (_, b) in self._modules.items() if b is blob)

    # -- name lookups, vmlinux first ----------------------------------------------------
    def member(self, struct_name: str, path: str) -> tuple[int, Member]:
        return self.owner(struct_name, (STRUCT, UNION)).member(struct_name, path)

    def member_size(self, struct_name: str, path: str) -> int:
        blob = self.owner(struct_name, (STRUCT, UNION))
        return blob.size(blob.member(struct_name, path)[1].type_id)

    def struct_size(self, struct_name: str) -> int:
        blob = self.owner(struct_name, (STRUCT, UNION))
        return blob.size(blob.struct_id(struct_name))

    def function_params(self, name: str) -> list[str] | None:
        try:
            return self.owner(name, (FUNC,)).function_params(name)
        except BtfError:
            return None

    def function_id(self, name: str) -> tuple[int, str]:
        """(BTF type id, "vmlinux" or the module) of kernel function `name`: what a fentry/fexit
        program on it is loaded against. BtfError when no BTF describes it."""
        return self.owner(name, (FUNC,)).find(name, FUNC), self.where(name, (FUNC,))

    def raw_tracepoint_args(self, event: str) -> list[str]:
        return self.owner(f"btf_trace_{event}", (TYPEDEF,)).raw_tracepoint_args(event)

    def enum(self, name: str) -> dict[int, str]:
        return self.owner(name, (ENUM, ENUM64)).enum(name)


def module_btf_names(btf_dir: str = BTF_DIR) -> list[str] | None:
    """Loaded modules with BTF, or None when the kernel exposes no BTF at all."""
    try:
        return sorted(n for n in os.listdir(btf_dir) if n != "vmlinux")
    except OSError:
        return None


_cached: KernelBtf | None = None


def forget_kernel_btf() -> None:
    """Drop the parsed BTF (tens of MB); the next kernel_btf() parses it again."""
    global _cached
    _cached = None


def kernel_btf() -> KernelBtf:
    """The running kernel's BTF (vmlinux, parsed once per process, and modules)."""
    global _cached
    if _cached is None:
        _cached = KernelBtf(Btf.load())
    return _cached
