"""Facts about loaded BPF programs that BCC does not expose (via bpf(2))."""

import ctypes
import ctypes.util
import os

from netagent.btf import BtfError, kernel_btf

_SYS_BPF = 321  # x86_64
BPF_OBJ_GET_INFO_BY_FD = 15
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def prog_recursion_misses(prog_fd: int) -> int | None:
    """How many times the kernel skipped this program because another BPF
    program was already running on that CPU (bpf_prog_info.recursion_misses).
    Each miss is a drop we did not see; None when the kernel does not say."""
    try:
        btf = kernel_btf()
        size = btf.size(btf.struct_id("bpf_prog_info"))
        offset = btf.member_offset("bpf_prog_info", "recursion_misses")
    except BtfError:
        return None
    buf = ctypes.create_string_buffer(size)
    attr = _InfoAttr(prog_fd, size, ctypes.addressof(buf))
    if _libc.syscall(_SYS_BPF, BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        return None
    return int.from_bytes(buf.raw[offset : offset + 8], "little")


def loaded_program_ids() -> set[int]:
    """IDs of every BPF program loaded on this node (BPF_PROG_GET_NEXT_ID)."""
    BPF_PROG_GET_NEXT_ID = 11

    class _NextAttr(ctypes.Structure):
        _fields_ = [("start_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]

    ids, current = set(), 0
    while True:
        attr = _NextAttr(current, 0, 0)
        if _libc.syscall(_SYS_BPF, BPF_PROG_GET_NEXT_ID, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            err = ctypes.get_errno()
            if err == 2:  # ENOENT: end of list
                return ids
            raise OSError(err, os.strerror(err))
        current = attr.next_id
        ids.add(current)
