"""Facts about loaded BPF programs that BCC does not expose (via bpf(2))."""

import os
from dataclasses import dataclass

from netagent import bpfsys, btfcache
from netagent.btf import BtfError, kernel_btf


_layout: dict[str, int] | None = None  # bpf_prog_info: "size" and member offsets, from BTF once


def _prog_info_layout() -> dict[str, int] | None:
    """Read once: sensors ask every poll, and the daemon drops its parsed BTF after start-up."""
    global _layout
    if _layout is None:
        def compute():
            btf = kernel_btf()
            layout = {"size": btf.size(btf.struct_id("bpf_prog_info"))}
            for field in ("id", "name", "run_time_ns", "run_cnt", "recursion_misses"):
                if btf.has_member("bpf_prog_info", field):
                    layout[field] = btf.member_offset("bpf_prog_info", field)
            return layout

        try:
            _layout = btfcache.fact("bpf_prog_info", compute)
        except BtfError:
            return None
    return _layout


def _prog_info_field(prog_fd: int, field: str, size: int = 8) -> int | None:
    """One integer member of bpf_prog_info, at its offset in this kernel's BTF; None when absent."""
    layout = _prog_info_layout()
    if layout is None or field not in layout:
        return None
    try:
        raw = bpfsys.obj_info(prog_fd, layout["size"])
    except OSError:
        return None
    return int.from_bytes(raw[layout[field]:layout[field] + size], "little")


def prog_recursion_misses(prog_fd: int) -> int | None:
    """How many times the kernel skipped this program because another BPF
    program was already running on that CPU (bpf_prog_info.recursion_misses).
    Each miss is a drop we did not see; None when the kernel does not say."""
    return _prog_info_field(prog_fd, "recursion_misses")


@dataclass
class ProgStats:
    prog_id: int
    name: str
    run_time_ns: int
    run_cnt: int


def prog_stats(prog_fd: int) -> ProgStats | None:
    """Cumulative run time and run count (counted while kernel.bpf_stats_enabled = 1)."""
    offs = _prog_info_layout()
    if offs is None or "run_cnt" not in offs:
        return None
    try:
        raw = bpfsys.obj_info(prog_fd, offs["size"])
    except OSError:
        return None

    def u(field, size=8):
        return int.from_bytes(raw[offs[field]:offs[field] + size], "little")

    name = raw[offs["name"]:offs["name"] + 16].split(b"\0", 1)[0].decode(errors="replace")
    return ProgStats(u("id", 4), name, u("run_time_ns"), u("run_cnt"))


def all_prog_stats() -> list[ProgStats]:
    """ProgStats of every program loaded on the node."""
    out = []
    for prog_id in bpfsys.prog_ids():
        try:
            fd = bpfsys.prog_fd_by_id(prog_id)
        except OSError:
            continue  # unloaded in between
        try:
            stats = prog_stats(fd)
        finally:
            os.close(fd)
        if stats is not None:
            out.append(stats)
    return out


def loaded_program_ids() -> set[int]:
    """IDs of every BPF program loaded on this node (BPF_PROG_GET_NEXT_ID)."""
    return set(bpfsys.prog_ids())
