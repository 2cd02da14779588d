"""The bpf(2) system call, without BCC or LLVM in the process.

The daemon keeps only file descriptors of loaded programs, maps and links
(see bpfchild.py); everything it does with them afterwards (read and clear
maps, read program facts) goes through these few commands. System call
numbers differ per architecture: they come from ARCHES, and an architecture
not in the table is refused with one clear line instead of calling a wrong
system call.

Layouts: include/uapi/linux/bpf.h (union bpf_attr), stable kernel ABI.
"""

import ctypes
import ctypes.util
import errno
import mmap
import os
import platform
import struct
import threading
from dataclasses import dataclass

from netagent.errors import ProbeUnavailable


@dataclass(frozen=True)
class Arch:
    name: str
    sys_bpf: int
    sys_perf_event_open: int
    # Where a kprobe at function entry finds the caller's return address:
    # "stack" = the word at the stack pointer (x86-64 CALL pushes it);
    # "lr" = the link register (arm64 x30, riscv ra). See drops.bpf.c.
    kprobe_return: str


# From each architecture's unistd table (arch/*/include/uapi/asm/unistd*.h,
# include/uapi/asm-generic/unistd.h for the generic-syscall ones).
ARCHES = {
    "x86_64": Arch("x86_64", 321, 298, "stack"),
    "aarch64": Arch("aarch64", 280, 241, "lr"),
    "riscv64": Arch("riscv64", 280, 241, "lr"),
    "loongarch64": Arch("loongarch64", 280, 241, ""),
    "s390x": Arch("s390x", 351, 331, ""),
    "ppc64le": Arch("ppc64le", 361, 319, ""),
}

# enum bpf_cmd
MAP_CREATE = 0
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = 1, 2, 3, 4, 5
PROG_GET_NEXT_ID, PROG_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD = 11, 13, 15
RAW_TRACEPOINT_OPEN = 17
BTF_GET_FD_BY_ID, BTF_GET_NEXT_ID = 19, 23
MAP_LOOKUP_BATCH, MAP_LOOKUP_AND_DELETE_BATCH = 24, 25
# enum bpf_prog_type / bpf_attach_type values used here
PROG_TYPE_KPROBE = 2
PROG_TYPE_RAW_TRACEPOINT = 17
PROG_TYPE_TRACING = 26
TRACE_RAW_TP, TRACE_FENTRY, TRACE_FEXIT = 23, 24, 25
# map update flags
BPF_ANY, BPF_NOEXIST = 0, 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


def current_arch() -> Arch:
    """This machine's entry in ARCHES, or ProbeUnavailable naming the ones known."""
    machine = platform.machine()
    arch = ARCHES.get(machine)
    if arch is None:
        raise ProbeUnavailable(f"bpf(2) system call number unknown for architecture {machine!r} "
                               f"(netagent knows {', '.join(sorted(ARCHES))})")
    return arch


def bpf(cmd: int, attr: ctypes.Structure) -> int:
    """bpf(cmd, &attr, sizeof attr); OSError(errno) on failure."""
    rc = _libc.syscall(current_arch().sys_bpf, ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(rc)


class _PerfEventAttr(ctypes.Structure):
    # the first PERF_ATTR_SIZE_VER0 (64) bytes of struct perf_event_attr; the rest is zero
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("rest", ctypes.c_uint8 * 48)]


PERF_TYPE_SOFTWARE, PERF_COUNT_SW_DUMMY = 1, 9


def perf_event_open_errno() -> int:
    """0 if this process may open a system-wide perf event (what every kprobe attach does,
    by the kprobe PMU or a tracefs kprobe event), else the errno the kernel refused it with.
    The event is a software dummy: it counts nothing and is closed at once."""
    attr = _PerfEventAttr(type=PERF_TYPE_SOFTWARE, size=64, config=PERF_COUNT_SW_DUMMY)
    # pid -1, cpu 0: every task on a CPU, as a kprobe is; no group fd; PERF_FLAG_FD_CLOEXEC (8)
    rc = _libc.syscall(current_arch().sys_perf_event_open, ctypes.byref(attr), ctypes.c_int(-1), ctypes.c_int(0),
                       ctypes.c_int(-1), ctypes.c_ulong(8))
    if rc < 0:
        return ctypes.get_errno()
    os.close(int(rc))
    return 0


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32), ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64), ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_uint64), ("line_info_cnt", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32), ("attach_prog_fd", ctypes.c_uint32),
    ]


def prog_load(prog_type: int, insns: bytes, *, name: str, license: str = "GPL", expected_attach_type: int = 0,
              attach_btf_id: int = 0, attach_btf_obj_fd: int = 0) -> int:
    """Load BPF bytecode; returns the program fd.

    attach_btf_id names the traced type (tp_btf, fentry, fexit); for a function
    of a module, attach_btf_obj_fd is that module's BTF object (btf_object_fd).

    On refusal the load is repeated with a verifier log, and the error names
    the verifier's last lines, which say why.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log_level: int, log) -> int:
        attr = _ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=ctypes.addressof(code),
                             license=ctypes.addressof(lic), prog_name=name.encode()[:15],
                             expected_attach_type=expected_attach_type, attach_btf_id=attach_btf_id,
                             attach_prog_fd=attach_btf_obj_fd)  # one union: attach_prog_fd / attach_btf_obj_fd
        if log is not None:
            attr.log_level, attr.log_size, attr.log_buf = log_level, len(log), ctypes.addressof(log)
        return bpf(PROG_LOAD, attr)

    try:
        return attempt(0, None)
    except OSError as first:
        if first.errno == errno.EPERM:
            raise
        log = ctypes.create_string_buffer(1 << 20)
        try:
            return attempt(1, log)
        except OSError as exc:
            lines = [ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()]
            tail = "; ".join(lines[-3:]) if lines else exc.strerror
            raise OSError(exc.errno, f"{exc.strerror}: verifier: {tail}") from None


class _RawTpAttr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("cookie", ctypes.c_uint64)]


def raw_tracepoint_open(prog_fd: int, name: str | None = None) -> int:
    """Attach a raw-tracepoint (name given) or BTF-typed tracing program (name None,
    target from its attach_btf_id); returns the link fd. Closing it detaches."""
    buf = ctypes.create_string_buffer(name.encode()) if name else None
    attr = _RawTpAttr(name=ctypes.addressof(buf) if buf is not None else 0, prog_fd=prog_fd)
    return bpf(RAW_TRACEPOINT_OPEN, attr)


class _KprobeAttr(ctypes.Structure):
    # struct perf_event_attr up to config2 (PERF_ATTR_SIZE_VER1, 72 bytes); `flags` is the
    # bitfield word (disabled, inherit, ...), left 0; the kprobe PMU reads the function's
    # name from config1 (kprobe_func) and the offset into it from config2 (probe_offset)
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32), ("kprobe_func", ctypes.c_uint64), ("probe_offset", ctypes.c_uint64)]


KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
# include/uapi/linux/perf_event.h: _IOW('$', 8, __u32) and _IO('$', 0)
PERF_EVENT_IOC_SET_BPF, PERF_EVENT_IOC_ENABLE = 0x40042408, 0x2400
PERF_FLAG_FD_CLOEXEC = 8


def _kprobe_pmu(retprobe: bool) -> tuple[int, int]:
    """(perf type, config) of the kernel's kprobe PMU (Linux 4.17+); OSError where there is none."""
    with open(os.path.join(KPROBE_PMU, "type")) as f:
        pmu_type = int(f.read())
    config = 0
    if retprobe:
        with open(os.path.join(KPROBE_PMU, "format", "retprobe")) as f:
            config = 1 << int(f.read().strip().split(":", 1)[1])  # "config:0": the bit that asks for a return probe
    return pmu_type, config


def kprobe_open(prog_fd: int, function: str, retprobe: bool = False) -> int:
    """Attach a BPF_PROG_TYPE_KPROBE program to `function`'s entry (or return) through
    the kprobe PMU, as BCC and libbpf do on current kernels: nothing is written to
    tracefs. Returns the perf event fd; closing it detaches the program and removes
    the kprobe. The kernel's default maxactive applies to a return probe."""
    import fcntl

    try:
        pmu_type, config = _kprobe_pmu(retprobe)
    except (OSError, ValueError, IndexError):
        raise OSError(errno.ENOENT, f"{function}: no kprobe PMU here ({KPROBE_PMU}; Linux 4.17+)") from None
    name = ctypes.create_string_buffer(function.encode())
    attr = _KprobeAttr(type=pmu_type, size=ctypes.sizeof(_KprobeAttr), config=config, sample_period=1,
                       wakeup_events=1, kprobe_func=ctypes.addressof(name))
    # pid -1, cpu 0: a kprobe's program runs for every task on every CPU whatever the event's CPU
    fd = _libc.syscall(current_arch().sys_perf_event_open, ctypes.byref(attr), ctypes.c_int(-1), ctypes.c_int(0),
                       ctypes.c_int(-1), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{function}: {os.strerror(err)}")
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return int(fd)


# -- maps ----------------------------------------------------------------------------

class _MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * 16)]


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
               inner_map_fd: int = 0, name: str = "") -> int:
    attr = _MapCreateAttr(map_type, key_size, value_size, max_entries, flags, inner_map_fd, 0, name.encode()[:15])
    return bpf(MAP_CREATE, attr)


class _ElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64), ("keys", ctypes.c_uint64),
                ("values", ctypes.c_uint64), ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def possible_cpus() -> int:
    """Number of possible CPUs: the per-CPU value count of a per-CPU map."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += (int(hi) if hi else int(lo)) - int(lo) + 1
    return count


class RawMap:
    """A BPF map by fd: element access and draining with bpf(2) only.

    For per-CPU maps a value is `value_size` rounded to 8 bytes, once per
    possible CPU, as the kernel copies them out.
    """

    def __init__(self, fd: int, key_size: int, value_size: int, max_entries: int, per_cpu: bool = False,
                 name: str = ""):
        self.fd, self.key_size, self.max_entries, self.name = fd, key_size, max_entries, name
        self.value_size = value_size
        self.cpus = possible_cpus() if per_cpu else 1
        self.stride = ((value_size + 7) // 8) * 8 if per_cpu else value_size
        self.value_bytes = self.stride * self.cpus
        self._batch_ok = True
        self._room: _BatchRoom | None = None  # see _batches
        self._room_lock = threading.Lock()

    def lookup(self, key: bytes) -> bytes | None:
        k = ctypes.create_string_buffer(key, self.key_size)
        v = ctypes.create_string_buffer(self.value_bytes)
        try:
            bpf(MAP_LOOKUP_ELEM, _ElemAttr(self.fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return v.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        k = ctypes.create_string_buffer(key, self.key_size)
        v = ctypes.create_string_buffer(value, len(value))
        bpf(MAP_UPDATE_ELEM, _ElemAttr(self.fd, 0, ctypes.addressof(k), ctypes.addressof(v), flags))

    def delete(self, key: bytes) -> None:
        k = ctypes.create_string_buffer(key, self.key_size)
        try:
            bpf(MAP_DELETE_ELEM, _ElemAttr(self.fd, 0, ctypes.addressof(k), 0, 0))
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def keys(self) -> list[bytes]:
        out, prev = [], None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            cur = ctypes.create_string_buffer(prev, self.key_size) if prev is not None else None
            attr = _ElemAttr(self.fd, 0, ctypes.addressof(cur) if cur is not None else 0, ctypes.addressof(nxt), 0)
            try:
                bpf(MAP_GET_NEXT_KEY, attr)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return out
                raise
            prev = nxt.raw
            out.append(prev)

    def drain(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of a map no program writes to any more, removing them.

        One BPF_MAP_LOOKUP_AND_DELETE_BATCH call per max_entries elements; an
        element-by-element walk on kernels without batch operations.
        """
        if self._batch_ok:
            try:
                return self._drain_batch()
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOTSUP, 524):  # 524: ENOTSUPP (kernel-internal)
                    raise
                self._batch_ok = False
        items = []
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                items.append((key, value))
            self.delete(key)
        return items

    def read_all(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value), left in place: one BPF_MAP_LOOKUP_BATCH call (an
        array map's whole content); element by element where batches are refused."""
        try:
            return self._drain_batch(MAP_LOOKUP_BATCH)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, 524):
                raise
        return [(k, v) for k in self.keys() if (v := self.lookup(k)) is not None]

    def _drain_batch(self, cmd: int = MAP_LOOKUP_AND_DELETE_BATCH) -> list[tuple[bytes, bytes]]:
        items: list[tuple[bytes, bytes]] = []
        ks, vs = self.key_size, self.value_bytes
        for kraw, vraw, got in self._batches(cmd):
            items.extend((kraw[i * ks:(i + 1) * ks], vraw[i * vs:(i + 1) * vs]) for i in range(got))
        return items

    def drain_blocks(self) -> list[tuple[bytes, bytes, int]]:
        """drain() as (keys, values, count) blocks, the elements back to back as the
        kernel wrote them: a caller that unpacks them itself (struct.iter_unpack)
        makes no bytes object per element. Falls back like drain()."""
        if self._batch_ok:
            try:
                return list(self._batches(MAP_LOOKUP_AND_DELETE_BATCH))
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOTSUP, 524):
                    raise
                self._batch_ok = False
        items = self.drain()
        return [(b"".join(k for k, _ in items), b"".join(v for _, v in items), len(items))]

    def _batches(self, cmd: int):
        """(keys, values, count) of each batch call until the map is exhausted."""
        n = max(self.max_entries, 1)
        with self._room_lock:  # taken, not shared: a second caller at the same time makes its own
            room, self._room = self._room, None
        if room is None:
            room = _BatchRoom(n * self.key_size, n * self.value_bytes)
        keys, values = room.keys, room.values
        token = ctypes.create_string_buffer(8)  # hash maps: an opaque u32 bucket cursor
        first, written = True, False
        try:
            while True:
                attr = _BatchAttr(in_batch=0 if first else ctypes.addressof(token),
                                  out_batch=ctypes.addressof(token), keys=keys, values=values, count=n,
                                  map_fd=self.fd)
                done = False
                try:
                    bpf(cmd, attr)
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
                    done = True
                got = attr.count
                if got:
                    written = True
                    yield (ctypes.string_at(keys, got * self.key_size),
                           ctypes.string_at(values, got * self.value_bytes), got)
                if done:
                    return
                first = False
        finally:
            if written:
                room.release()
            self._room = room

    def per_cpu_values(self, value: bytes) -> list[bytes]:
        return [value[i * self.stride:i * self.stride + self.value_size] for i in range(self.cpus)]


class _BatchRoom:
    """Where batch calls write a whole map's keys and values, kept from one drain to the next.

    Anonymous memory: the kernel supplies zeroed pages only where a call writes, and
    release() hands the written pages back, so an empty map costs one system call and
    no memory. A fresh zeroed buffer per call (create_string_buffer) touched all of it on
    every poll, 1.3 MB for the drop sensor's flow buffer: most of an idle poll's CPU time."""

    def __init__(self, key_bytes: int, value_bytes: int):
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        self._mems = (mmap.mmap(-1, max(key_bytes, 1), flags=flags), mmap.mmap(-1, max(value_bytes, 1), flags=flags))
        self.keys, self.values = (ctypes.addressof(ctypes.c_char.from_buffer(m)) for m in self._mems)

    def release(self) -> None:
        for mem in self._mems:
            mem.madvise(mmap.MADV_DONTNEED)


# -- program facts --------------------------------------------------------------------

class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


def obj_info(fd: int, size: int) -> bytes:
    """The first `size` bytes of bpf_{prog,map,link}_info of an fd."""
    buf = ctypes.create_string_buffer(size)
    bpf(OBJ_GET_INFO_BY_FD, _InfoAttr(fd, size, ctypes.addressof(buf)))
    return buf.raw


class _IdAttr(ctypes.Structure):
    _fields_ = [("start_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32), ("open_flags", ctypes.c_uint32)]


def _object_ids(get_next_id: int):
    """The ids of every object of one kind (BPF_*_GET_NEXT_ID), in order."""
    current = 0
    while True:
        attr = _IdAttr(current, 0, 0)
        try:
            bpf(get_next_id, attr)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return
            raise
        current = attr.next_id
        yield current


def prog_ids() -> list[int]:
    """IDs of every BPF program loaded on this node (BPF_PROG_GET_NEXT_ID)."""
    return list(_object_ids(PROG_GET_NEXT_ID))


def prog_fd_by_id(prog_id: int) -> int:
    return bpf(PROG_GET_FD_BY_ID, _IdAttr(prog_id, 0, 0))


# `r0 = 0; exit`: a program that does nothing, for asking the kernel whether it would
# load and attach one of a kind somewhere (trampoline_refused) and as a benchmark's floor
RETURN_ZERO = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def trampoline_open(insns: bytes, *, name: str, btf_id: int, owner: str = "vmlinux",
                    fexit: bool = False) -> tuple[int, int]:
    """Load `insns` as a fentry (or fexit) program on the function with BTF id `btf_id` of
    BTF object `owner` ("vmlinux" or a module) and attach it: (program fd, link fd).
    OSError naming the step the kernel refused ("loading refused: ...")."""
    step, owner_fd, prog = f"finding BTF object {owner}", 0, -1
    try:
        owner_fd = btf_object_fd(owner) if owner != "vmlinux" else 0
        step = "loading"
        prog = prog_load(PROG_TYPE_TRACING, insns, name=name, expected_attach_type=TRACE_FEXIT if fexit else TRACE_FENTRY,
                         attach_btf_id=btf_id, attach_btf_obj_fd=owner_fd)
        step = "attaching"
        return prog, raw_tracepoint_open(prog)
    except OSError as exc:
        if prog >= 0:
            os.close(prog)
        why = exc.strerror or os.strerror(exc.errno)
        if exc.errno == errno.EPERM and step.startswith("finding"):
            # the kernel hands out a module's BTF object (BPF_BTF_GET_FD_BY_ID) to CAP_SYS_ADMIN only
            why += " (reading a module's BTF object needs CAP_SYS_ADMIN)"
        raise OSError(exc.errno, f"{step} refused: {why}") from None
    finally:
        if owner_fd:
            os.close(owner_fd)  # a loaded program holds its own reference to the module


def trampoline_refused(btf_id: int, owner: str = "vmlinux") -> str | None:
    """None if this kernel loads and attaches a fentry program on the function with BTF
    id `btf_id` of BTF object `owner` for this process, else the kernel's refusal, in
    words. Nothing stays attached (the program is closed at once)."""
    try:
        fds = trampoline_open(RETURN_ZERO, name="netagent_probe", btf_id=btf_id, owner=owner)
    except OSError as exc:
        return exc.strerror
    for fd in reversed(fds):
        os.close(fd)
    return None


class _BtfInfo(ctypes.Structure):
    # struct bpf_btf_info; name and kernel_btf since 5.11, as fentry on module functions
    _fields_ = [("btf", ctypes.c_uint64), ("btf_size", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("name", ctypes.c_uint64), ("name_len", ctypes.c_uint32), ("kernel_btf", ctypes.c_uint32)]


def btf_object_fd(name: str) -> int:
    """An fd of the kernel's BTF object `name` ("vmlinux" or a module's), which a
    fentry/fexit program on one of its functions is loaded against. FileNotFoundError
    when no such object is loaded (the module is not)."""
    for btf_id in _object_ids(BTF_GET_NEXT_ID):
        try:
            fd = bpf(BTF_GET_FD_BY_ID, _IdAttr(btf_id, 0, 0))
        except OSError:
            continue  # freed since it was listed
        buf = ctypes.create_string_buffer(64)
        info = _BtfInfo(name=ctypes.addressof(buf), name_len=len(buf))
        try:
            bpf(OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
        except OSError:
            os.close(fd)
            continue
        if info.kernel_btf and buf.value.decode(errors="replace") == name:
            return fd
        os.close(fd)
    raise FileNotFoundError(errno.ENOENT, f"no kernel BTF object named {name!r} (module not loaded?)")
