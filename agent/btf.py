"""A reader for the kernel's BTF type data (/sys/kernel/btf/vmlinux).

BCC compiles against whatever kernel headers are installed, which may be of
another kernel version; their struct layouts are then wrong. The running
kernel's BTF is the truth, so every struct field a BPF program reads takes
its byte offset from here and is passed into the C as a macro.

Format: include/uapi/linux/btf.h (header, type section, string section).
"""

import struct
from dataclasses import dataclass

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
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


class Btf:
    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BtfError("BTF blob too short")
        magic = struct.unpack_from("<H", data, 0)[0]
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x} (big-endian BTF is not supported)")
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, 4)
        self._data = data
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._str_start = hdr_len + str_off
        self._str_end = self._str_start + str_len
        self._offsets = [0]  # type id -> byte position of its record; id 0 is void
        self._by_name: dict[tuple[int, str], list[int]] | None = None
        self._index_types()

    @classmethod
    def load(cls, path: str = VMLINUX_BTF) -> "Btf":
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except FileNotFoundError:
            raise BtfError(f"{path} not found: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF)") from None

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

    def _header(self, type_id: int) -> tuple[int, int, int, int, int]:
        pos = self._offsets[type_id]
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        return pos, name_off, (info >> 24) & 0x1F, info & 0xFFFF, size_or_type | ((info >> 31) << 32)

    def _string(self, off: int) -> str:
        start = self._str_start + off
        end = self._data.index(b"\0", start, self._str_end)
        return self._data[start:end].decode()

    def kind(self, type_id: int) -> int:
        return self._header(type_id)[2]

    def name(self, type_id: int) -> str:
        return self._string(self._header(type_id)[1])

    def find(self, name: str, kind: int) -> int:
        """Type id of the named type of `kind` (the first with a body for structs)."""
        if self._by_name is None:
            self._build_name_index()
        ids = self._by_name.get((kind, name), [])
        if not ids:
            raise BtfError(f"no {_KIND_NAMES.get(kind, kind)} {name!r} in BTF")
        return ids[0]

    def _build_name_index(self):
        index: dict[tuple[int, str], list[int]] = {}
        wanted = {STRUCT, UNION, ENUM, ENUM64, TYPEDEF, FUNC}
        data = self._data
        for type_id in range(1, len(self._offsets)):
            pos = self._offsets[type_id]
            name_off, info = struct.unpack_from("<II", data, pos)
            kind = (info >> 24) & 0x1F
            if name_off and kind in wanted:
                index.setdefault((kind, self._string(name_off)), []).append(type_id)
        self._by_name = index

    def resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers."""
        while type_id and self.kind(type_id) in _MODIFIERS:
            type_id = self._header(type_id)[4] & 0xFFFFFFFF
        return type_id

    # -- structs ----------------------------------------------------------------
    def members(self, type_id: int) -> list[Member]:
        pos, _, kind, vlen, _ = self._header(type_id)
        if kind not in (STRUCT, UNION):
            raise BtfError(f"type {type_id} is not a struct or union")
        kind_flag = (struct.unpack_from("<I", self._data, pos + 4)[0] >> 31) & 1
        out = []
        for i in range(vlen):
            name_off, mtype, offset = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
            if kind_flag:
                out.append(Member(self._string(name_off), mtype, offset & 0xFFFFFF, offset >> 24))
            else:
                out.append(Member(self._string(name_off), mtype, offset, 0))
        return out

    def size(self, type_id: int) -> int:
        type_id = self.resolve(type_id)
        _, _, kind, _, size_or_type = self._header(type_id)
        if kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT):
            return size_or_type & 0xFFFFFFFF
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem_type, _index_type, nelems = struct.unpack_from("<III", self._data, self._offsets[type_id] + 12)
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

    def member_offset(self, struct_name: str, path: str) -> int:
        return self.member(struct_name, path)[0]

    def has_member(self, struct_name: str, path: str) -> bool:
        try:
            self.member(struct_name, path)
            return True
        except BtfError:
            return False

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
            return self.describe(self._header(type_id)[4] & 0xFFFFFFFF) + " *"
        prefix = {STRUCT: "struct ", UNION: "union ", ENUM: "enum ", ENUM64: "enum ", FWD: "struct "}.get(kind, "")
        return prefix + (self.name(type_id) or "<anon>")

    def function_params(self, name: str) -> list[str] | None:
        """Parameter names of kernel function `name` from its BTF prototype, or
        None when BTF does not describe it (inlined, or static without BTF)."""
        try:
            func_id = self.find(name, FUNC)
        except BtfError:
            return None
        pos, _, kind, vlen, _ = self._header(self._header(func_id)[4] & 0xFFFFFFFF)
        if kind != FUNC_PROTO:
            return None
        return [self._string(struct.unpack_from("<II", self._data, pos + 12 + 8 * i)[0]) for i in range(vlen)]

    def raw_tracepoint_args(self, event: str) -> list[str]:
        """Argument types of a tracepoint as a raw tracepoint sees them (ctx->args[i]).

        The kernel describes each tracepoint with a typedef btf_trace_<event>,
        a pointer to a function whose first parameter is the tracepoint's
        private data; the rest are the TP_PROTO arguments, in order.
        """
        pointer = self.resolve(self.find(f"btf_trace_{event}", TYPEDEF))
        if self.kind(pointer) != PTR:
            raise BtfError(f"btf_trace_{event} is not a function pointer")
        pos, _, kind, vlen, _ = self._header(self._header(pointer)[4] & 0xFFFFFFFF)
        if kind != FUNC_PROTO:
            raise BtfError(f"btf_trace_{event} is not a function prototype")
        params = [struct.unpack_from("<II", self._data, pos + 12 + 8 * i)[1] for i in range(vlen)]
        return [self.describe(t) for t in params[1:]]

    # -- enums ------------------------------------------------------------------
    def enum(self, name: str) -> dict[int, str]:
        """Value -> enumerator name for enum `name`."""
        try:
            type_id = self.find(name, ENUM)
        except BtfError:
            type_id = self.find(name, ENUM64)
        pos, _, kind, vlen, _ = self._header(type_id)
        out = {}
        if kind == ENUM:
            for i in range(vlen):
                name_off, val = struct.unpack_from("<Ii", self._data, pos + 12 + 8 * i)
                out[val] = self._string(name_off)
        else:
            for i in range(vlen):
                name_off, lo, hi = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
                out[(hi << 32) | lo] = self._string(name_off)
        return out


_KIND_NAMES = {STRUCT: "struct", UNION: "union", ENUM: "enum", ENUM64: "enum64", TYPEDEF: "typedef", FUNC: "function"}

_cached: Btf | None = None


def kernel_btf() -> Btf:
    """The running kernel's BTF, parsed once per process."""
    global _cached
    if _cached is None:
        _cached = Btf.load()
    return _cached
