"""Compile, load and attach a BPF program in a short-lived child process.

`import bcc` maps LLVM and clang into a process (about 80 MB of text) and
a compile leaves tens of MB of heap behind. The agent needs none of that
once a program is loaded: the kernel holds the program, its maps and its
attachment, and file descriptors are all a process needs to use them. So
a child process (`python -m netagent.bpfchild`) compiles with BCC, loads,
attaches, and passes the descriptors back over a unix socket
(SCM_RIGHTS); then it exits, taking LLVM with it. The child's stderr is a
pipe of its own, so clang's diagnostics never touch the agent's fd 2.

Attach kinds:
  tp_btf          BTF-typed raw tracepoint (BPF_PROG_TYPE_TRACING,
                  BPF_TRACE_RAW_TP): plain loads from typed arguments
  raw_tracepoint  untyped raw tracepoint
  tracepoint      classic tracepoint (a perf event)
  kprobe          kprobe on a kernel function's entry (a perf event of the
  kretprobe       kprobe PMU) or return, attached with bpfsys.kprobe_open
  fentry          BPF trampoline on a kernel function's entry or return
  fexit           (BPF_PROG_TYPE_TRACING against the function's BTF id, in
                  vmlinux or a module): no perf event, so no
                  perf_event_open and none of its privilege checks
Closing the returned link descriptor detaches the program. One spec may
carry more programs of the same object (`more`: kprobes and kretprobes, or
fentry and fexit programs, sharing its maps, as the conntrack sensor's are).
"""

import array
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from netagent import bpfsys
from netagent.cachedir import cache_path
from netagent.errors import ProbeUnavailable

CHILD_TIMEOUT_S = 120  # a compile takes ~1 s; generous for a loaded node
# An emulated CPU (qemu TCG, as in the VM lab) compiles 5-10x slower than
# hardware; there the bound comes from this variable (seconds), set by
# packaging/vm/run. docs/kernels.md.
COMPILE_TIMEOUT_ENV = "NETAGENT_COMPILE_TIMEOUT"
_MAX_FDS = 64

# enum bpf_map_type values whose lookups return one value per possible CPU
_PER_CPU_MAP_TYPES = {5, 6, 10}


def compile_timeout() -> float:
    """Seconds the loader child may take: NETAGENT_COMPILE_TIMEOUT, else CHILD_TIMEOUT_S."""
    raw = os.environ.get(COMPILE_TIMEOUT_ENV)
    if raw is None or raw == "":
        return float(CHILD_TIMEOUT_S)
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ProbeUnavailable(f"{COMPILE_TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


@dataclass
class ProgramSpec:
    """What the child compiles, loads and attaches (plain data: it goes as JSON)."""

    stem: str  # probes/<stem>.bpf.c
    program: str  # function name in it
    attach: str  # tp_btf | raw_tracepoint | tracepoint | kprobe | kretprobe | fentry | fexit
    target: str  # tracepoint event ("kfree_skb"; "skb:kfree_skb" for tracepoint) or function
    macros: dict = field(default_factory=dict)
    prelude: str = ""
    maps: list[str] = field(default_factory=list)  # handed back, by name
    attach_btf_id: int = 0  # tp_btf: BTF id of btf_trace_<target> (the parent has BTF parsed)
    # Map of maps -> the inner map it was declared with (BPF_ARRAY_OF_MAPS(outer, "inner", n)), for the
    # bytecode cache, which creates maps itself; outer maps with a "map_fd" setup write need no entry.
    inner_maps: dict = field(default_factory=dict)
    # tp_btf: placeholder helper number (a string: JSON keys) -> BTF id of the kfunc the
    # program means by it (link_kfuncs; see rdonly_cast in drops.bpf.c)
    kfuncs: dict = field(default_factory=dict)
    # Map writes done before attaching, so the program never runs half set up:
    # {"map": name, "key": u32, "value": hex} or {"map": name, "key": u32, "map_fd": other map}
    setup: list[dict] = field(default_factory=list)
    # Further programs of the same object, each [kind, function, program] with kind kprobe,
    # kretprobe, fentry or fexit, attached after the first; their descriptors are LoadedProgram.more_fds
    more: list[list[str]] = field(default_factory=list)
    # fentry/fexit: kernel function -> [its BTF type id, the BTF object defining it: "vmlinux"
    # or the module's name] (the parent has BTF parsed; the child only loads)
    btf_functions: dict = field(default_factory=dict)


@dataclass
class LoadedProgram:
    """Descriptors of a loaded, attached program; close() detaches and frees it."""

    attach: str
    prog_fd: int
    link_fd: int
    maps: dict[str, bpfsys.RawMap]
    child_seconds: float = 0.0
    # spec.more's (program fd, link fd) pairs, in order, back to back
    more_fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        # links first: a program is detached before anything it uses goes
        for fd in [self.link_fd, *self.more_fds[1::2], self.prog_fd, *self.more_fds[0::2]] + [
                m.fd for m in self.maps.values()]:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.link_fd = self.prog_fd = -1
        self.more_fds = []
        self.maps = {}


def load(spec: ProgramSpec) -> LoadedProgram:
    """Load and attach `spec`: from the bytecode cache when this exact program
    was compiled before on this kernel, else in the child process (which
    fills the cache). ProbeUnavailable with a one-line reason on failure."""
    import time

    started = time.monotonic()
    cached = bytecode_cache.get(spec)
    if cached is not None:
        try:
            loaded = _load_cached(spec, cached)
            loaded.child_seconds = time.monotonic() - started
            return loaded
        except (OSError, KeyError, ValueError):
            pass  # a stale or damaged entry: compile afresh, which rewrites it
    loaded, record = _load_in_child(spec)
    if record is not None:
        bytecode_cache.put(spec, record)
    loaded.child_seconds = time.monotonic() - started
    return loaded


def _load_in_child(spec: ProgramSpec) -> tuple[LoadedProgram, dict | None]:
    import importlib.util

    from netagent.errors import BccMissing

    if importlib.util.find_spec("bcc") is None:  # looked up, not imported: no LLVM here
        raise BccMissing("no module named 'bcc'")
    timeout = compile_timeout()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "netagent.bpfchild", str(child.fileno())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=[child.fileno()], close_fds=True)
    except OSError as exc:
        parent.close()
        child.close()
        raise ProbeUnavailable(f"starting the BPF loader process failed: {exc.strerror}") from None
    child.close()
    try:
        _, stderr = proc.communicate(json.dumps(spec.__dict__).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        parent.close()
        raise ProbeUnavailable(f"compiling {spec.stem}.bpf.c took over {timeout:g} s; gave up") from None
    try:
        message, fds = _receive(parent)
    finally:
        parent.close()
    if message is None or not message.get("ok"):
        for fd in fds:
            os.close(fd)
        raise ProbeUnavailable(_failure(message, stderr.decode(errors="replace"), proc.returncode))
    maps = {}
    for name, info in message["maps"].items():
        maps[name] = bpfsys.RawMap(fds[info["fd_index"]], info["key_size"], info["value_size"],
                                   info["max_entries"], per_cpu=info["type"] in _PER_CPU_MAP_TYPES, name=name)
    return LoadedProgram(spec.attach, fds[0], fds[1], maps, more_fds=fds[2 + len(maps):]), message.get("record")


def _receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    fds = array.array("i")
    try:
        data, ancdata, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(_MAX_FDS * fds.itemsize))
    except OSError:
        return None, []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        return None, list(fds)
    return json.loads(data), list(fds)


def _failure(message: dict | None, stderr: str, status: int) -> str:
    """One line saying why the child failed: clang's first error for a compile."""
    if message and message.get("compile_error"):
        detail = _first_error(stderr)
        return f"{message['compile_error']}: {detail}" if detail else message["compile_error"]
    if message and message.get("error"):
        return message["error"]
    return _first_error(stderr) or f"loader process exited with status {status}"


def _first_error(text: str) -> str | None:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else None)


# --- the child side ------------------------------------------------------------------

def map_info(fd: int) -> dict:
    """type, key_size, value_size, max_entries of a map (struct bpf_map_info, uapi)."""
    raw = bpfsys.obj_info(fd, 40)
    u32 = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 24, 4)]
    return {"type": u32[0], "key_size": u32[2], "value_size": u32[3], "max_entries": u32[4]}


_CALL = 0x85  # BPF_JMP | BPF_CALL
_PSEUDO_KFUNC_CALL = 2


def link_kfuncs(insns: bytes, kfuncs: dict) -> bytes:
    """Each call of a placeholder helper number in `kfuncs` made a call of that kfunc.

    BCC compiles a call through a constant function pointer as a helper call
    (src_reg 0, imm = the number); a kfunc call is src_reg
    BPF_PSEUDO_KFUNC_CALL, imm = the kfunc's BTF id (off 0: in vmlinux)."""
    if not kfuncs:
        return insns
    by_number = {int(number): btf_id for number, btf_id in kfuncs.items()}
    out = bytearray(insns)
    for i in range(0, len(out), 8):
        if out[i] != _CALL or out[i + 1] >> 4 != 0:
            continue
        btf_id = by_number.get(int.from_bytes(out[i + 4:i + 8], "little", signed=True))
        if btf_id is not None:
            out[i + 1] = (out[i + 1] & 0x0F) | (_PSEUDO_KFUNC_CALL << 4)
            out[i + 4:i + 8] = btf_id.to_bytes(4, "little")
    return bytes(out)


def _attach(bpf, spec: ProgramSpec) -> tuple[int, int]:
    """(program fd, link fd) with the program attached as spec.attach says."""
    name = spec.program.encode()
    if spec.attach == "tp_btf":
        try:
            prog = bpfsys.prog_load(bpfsys.PROG_TYPE_TRACING, link_kfuncs(bpf.dump_func(name), spec.kfuncs),
                                    name=spec.program[:15],
                                    expected_attach_type=bpfsys.TRACE_RAW_TP, attach_btf_id=spec.attach_btf_id)
            return prog, bpfsys.raw_tracepoint_open(prog)
        except OSError as exc:
            raise ProbeUnavailable(f"attach path tp_btf {spec.target} refused by the kernel: {exc.strerror}") from None
    if spec.attach == "raw_tracepoint":
        bpf.attach_raw_tracepoint(tp=spec.target.encode(), fn_name=name)
        return bpf.funcs[name].fd, bpf.raw_tracepoint_fds[spec.target.encode()]
    if spec.attach == "tracepoint":
        bpf.attach_tracepoint(tp=spec.target.encode(), fn_name=name)
        return bpf.funcs[name].fd, bpf.tracepoint_fds[spec.target.encode()]
    return _load_more(bpf, spec, spec.attach, spec.target, spec.program)


def _load_more(bpf, spec: ProgramSpec, kind: str, function: str, program: str) -> tuple[int, int]:
    """(program fd, link fd) of one function probe compiled just now."""
    if kind in _KPROBE_KINDS:
        return _attach_kprobe(bpf.load_func(program.encode(), bpf.KPROBE).fd, kind, function)
    if kind in _TRAMPOLINE_KINDS:
        return _load_trampoline(bpf.dump_func(program.encode()), spec, kind, function, program)
    raise ProbeUnavailable(f"unknown attach kind {kind!r}")


_KPROBE_KINDS = ("kprobe", "kretprobe")
_TRAMPOLINE_KINDS = ("fentry", "fexit")
_FUNCTION_KINDS = _KPROBE_KINDS + _TRAMPOLINE_KINDS


def _load_trampoline(insns: bytes, spec: ProgramSpec, kind: str, function: str, program: str) -> tuple[int, int]:
    """(program fd, link fd) of a fentry/fexit program on `function`, loaded against the
    BTF object that describes it; the same whether compiled now or from the cache."""
    try:
        btf_id, owner = spec.btf_functions[function]
    except (KeyError, ValueError):
        raise ProbeUnavailable(f"{kind} {function}: no BTF id given for it") from None
    try:
        return bpfsys.trampoline_open(insns, name=program[:15], btf_id=btf_id, owner=owner, fexit=kind == "fexit")
    except OSError as exc:
        raise ProbeUnavailable(f"{kind} {function}: {exc.strerror}") from None


def _attach_kprobe(prog_fd: int, kind: str, function: str) -> tuple[int, int]:
    """(program fd, perf event fd): the same attach whether the program was compiled
    just now or comes from the bytecode cache (BCC's own attach would, for a return
    probe with a maxactive, define a tracefs event that outlives this child)."""
    if kind not in _KPROBE_KINDS:
        raise ProbeUnavailable(f"unknown attach kind {kind!r} for {function}")
    try:
        return prog_fd, bpfsys.kprobe_open(prog_fd, function, retprobe=kind == "kretprobe")
    except OSError as exc:
        raise ProbeUnavailable(f"attaching {'a return probe to' if kind == 'kretprobe' else 'a kprobe to'} "
                               f"{exc.strerror}") from None


def _child(sock_fd: int) -> int:
    from netagent.bccloader import CompileError, compile_program

    sock = socket.socket(fileno=sock_fd)
    try:
        spec = ProgramSpec(**json.loads(sys.stdin.buffer.read()))
        bpf = compile_program(spec.stem, spec.macros, spec.prelude)
        names = set(spec.maps) | {w["map"] for w in spec.setup} | {w["map_fd"] for w in spec.setup if "map_fd" in w}
        maps = {name: bpf[name.encode()].get_fd() for name in names}
        raw = {name: bpfsys.RawMap(fd, **{k: v for k, v in map_info(fd).items() if k != "type"})
               for name, fd in maps.items()}
        for write in spec.setup:
            target = raw[write["map"]]
            key = int(write["key"]).to_bytes(target.key_size, "little")
            if "map_fd" in write:
                value = raw[write["map_fd"]].fd.to_bytes(4, "little")
            else:
                value = bytes.fromhex(write["value"])
            target.update(key, value)
        prog_fd, link_fd = _attach(bpf, spec)
        more_fds = []
        for kind, function, program in spec.more:
            more_fds += _load_more(bpf, spec, kind, function, program)
        fds = [prog_fd, link_fd] + [maps[n] for n in spec.maps] + more_fds
        meta = {n: dict(map_info(maps[n]), fd_index=2 + i) for i, n in enumerate(spec.maps)}
        record = _record([bpf.dump_func(p.encode()) for p in [spec.program] + [m[2] for m in spec.more]],
                         spec, maps) if cacheable(spec) else None
        sock.sendmsg([json.dumps({"ok": True, "maps": meta, "record": record}).encode()],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    except CompileError as exc:  # clang's diagnostics are on our stderr, a pipe to the parent
        sock.sendmsg([json.dumps({"ok": False, "compile_error": str(exc)}).encode()])
        sys.stderr.flush()
        os._exit(1)
    except Exception as exc:  # noqa: BLE001 - every failure goes back as one line
        sock.sendmsg([json.dumps({"ok": False, "error": _one_line(exc)}).encode()])
        sys.stderr.flush()
        os._exit(1)
    # os._exit: skip BCC's atexit cleanup, which would detach what the parent now holds.
    os._exit(0)


# --- the bytecode cache -------------------------------------------------------------
# BCC's bytecode of a program, its maps' definitions, and where the map fds go
# in it, stored per (source, macros, kernel, BCC): a restart on the same node
# loads in a few milliseconds, without a compiler, without the child process.
# Only for the attach kinds loadable with bpf(2) alone.

_CACHEABLE = ("tp_btf", "raw_tracepoint") + _FUNCTION_KINDS
_LD_IMM64 = 0x18
_PSEUDO_MAP_FD = 1
_MAP_OF_MAPS_TYPES = {12, 13}  # BPF_MAP_TYPE_ARRAY_OF_MAPS, HASH_OF_MAPS


def _fd_name_flags(fd: int) -> tuple[str, int]:
    raw = bpfsys.obj_info(fd, 40)
    return raw[24:40].split(b"\0", 1)[0].decode(), int.from_bytes(raw[20:24], "little")


def cacheable(spec: ProgramSpec) -> bool:
    """Whether `spec` can be loaded from the cache: attached with bpf(2) and perf events alone."""
    return spec.attach in _CACHEABLE and all(kind in _FUNCTION_KINDS for kind, _, _ in spec.more)


def _record(programs: list[bytes], spec: ProgramSpec, named: dict[str, int]) -> dict | None:
    """What _load_cached needs to rebuild these programs (spec.program, then spec.more's)
    and the maps they share without BCC; None if it cannot.
    `named`: fds of the maps user space wants (some the program never references)."""
    maps: dict[int, dict] = {}
    relocs_of = []
    for insns in programs:
        relocs = []
        for i in range(0, len(insns), 8):
            if insns[i] != _LD_IMM64:
                continue
            src = insns[i + 1] >> 4
            if src == 0:
                continue
            if src != _PSEUDO_MAP_FD:
                return None
            fd = int.from_bytes(insns[i + 4:i + 8], "little", signed=True)
            if fd not in maps:
                name, flags = _fd_name_flags(fd)
                maps[fd] = dict(map_info(fd), name=name, flags=flags)
            relocs.append([i // 8, maps[fd]["name"]])
        relocs_of.append(relocs)
    for fd in named.values():
        if fd not in maps:
            name, flags = _fd_name_flags(fd)
            maps[fd] = dict(map_info(fd), name=name, flags=flags)
    names = [m["name"] for m in maps.values()]
    templates = dict(spec.inner_maps, **{w["map"]: w["map_fd"] for w in spec.setup if "map_fd" in w})
    if len(set(names)) != len(names) or not set(spec.maps) | set(templates.values()) <= set(names):
        return None
    for m in maps.values():
        if m["type"] in _MAP_OF_MAPS_TYPES:
            if m["name"] not in templates:
                return None
            m["inner"] = templates[m["name"]]
    # templates first: a map of maps is created from its inner map's fd
    ordered = sorted(maps.values(), key=lambda m: m["type"] in _MAP_OF_MAPS_TYPES)
    (insns, *more), (relocs, *more_relocs) = programs, relocs_of
    return {"insns": insns.hex(), "maps": ordered, "relocs": relocs,
            "more": [{"insns": i.hex(), "relocs": r} for i, r in zip(more, more_relocs)]}


def _relocated(hex_insns: str, relocs: list, fds: dict[str, int]) -> bytes:
    """A cached program's bytecode with this load's map fds written in."""
    insns = bytearray.fromhex(hex_insns)
    for index, name in relocs:
        insns[index * 8 + 4:index * 8 + 8] = fds[name].to_bytes(4, "little", signed=True)
    return bytes(insns)


def _load_cached(spec: ProgramSpec, record: dict) -> LoadedProgram:
    fds: dict[str, int] = {}
    programs: list[int] = []  # (program fd, link fd) pairs, the first program's first
    try:
        for m in record["maps"]:
            fds[m["name"]] = bpfsys.map_create(m["type"], m["key_size"], m["value_size"], m["max_entries"],
                                               m["flags"], fds[m["inner"]] if "inner" in m else 0, m["name"])
        insns = _relocated(record["insns"], record["relocs"], fds)
        more = record.get("more", [])
        if len(more) != len(spec.more):
            raise ValueError("cache entry for another set of programs")
        raw = {n: bpfsys.RawMap(fd, **{k: v for k, v in map_info(fd).items() if k != "type"}) for n, fd in fds.items()}
        for write in spec.setup:
            key = int(write["key"]).to_bytes(raw[write["map"]].key_size, "little")
            value = fds[write["map_fd"]].to_bytes(4, "little") if "map_fd" in write else bytes.fromhex(write["value"])
            raw[write["map"]].update(key, value)
        if spec.attach == "tp_btf":
            prog = bpfsys.prog_load(bpfsys.PROG_TYPE_TRACING, link_kfuncs(insns, spec.kfuncs),
                                    name=spec.program[:15],
                                    expected_attach_type=bpfsys.TRACE_RAW_TP, attach_btf_id=spec.attach_btf_id)
            programs += [prog, _closing_on_error(prog, lambda: bpfsys.raw_tracepoint_open(prog))]
        elif spec.attach in _KPROBE_KINDS:
            prog = bpfsys.prog_load(bpfsys.PROG_TYPE_KPROBE, insns, name=spec.program[:15])
            programs += _closing_on_error(prog, lambda: _attach_kprobe(prog, spec.attach, spec.target))
        elif spec.attach in _TRAMPOLINE_KINDS:
            programs += _load_trampoline(insns, spec, spec.attach, spec.target, spec.program)
            prog = programs[0]
        else:
            prog = bpfsys.prog_load(bpfsys.PROG_TYPE_RAW_TRACEPOINT, insns, name=spec.program[:15])
            programs += [prog, _closing_on_error(prog, lambda: bpfsys.raw_tracepoint_open(prog, spec.target))]
        by_name = {spec.program: prog}  # a program on two functions is loaded once, as BCC does
        for (kind, function, program), entry in zip(spec.more, more):
            if kind in _TRAMPOLINE_KINDS:  # loaded against its one function: never shared
                programs += _load_trampoline(_relocated(entry["insns"], entry["relocs"], fds), spec, kind,
                                             function, program)
                continue
            if program in by_name:
                fd = os.dup(by_name[program])  # each (program, link) pair owns its descriptors
            else:
                fd = by_name[program] = bpfsys.prog_load(
                    bpfsys.PROG_TYPE_KPROBE, _relocated(entry["insns"], entry["relocs"], fds), name=program[:15])
            programs += _closing_on_error(fd, lambda: _attach_kprobe(fd, kind, function))
    except BaseException:
        for fd in list(fds.values()) + programs[1::2] + programs[0::2]:
            os.close(fd)
        raise
    keep = {}
    for name, fd in fds.items():
        if name in spec.maps:
            info = map_info(fd)
            keep[name] = bpfsys.RawMap(fd, info["key_size"], info["value_size"], info["max_entries"],
                                       per_cpu=info["type"] in _PER_CPU_MAP_TYPES, name=name)
        else:
            os.close(fd)  # the program holds its own reference
    return LoadedProgram(spec.attach, programs[0], programs[1], keep, more_fds=programs[2:])


def _closing_on_error(fd: int, fn):
    try:
        return fn()
    except BaseException:
        os.close(fd)
        raise


class BytecodeCache:
    """Files under NETAGENT_CACHE_DIR (default /var/cache/netagent/bpf); no cache where that is not writable."""

    def __init__(self, directory: str | None = None):
        self._directory = directory
        self.hits = self.misses = 0

    @property
    def directory(self) -> str:
        return self._directory or cache_path("bpf")

    def key(self, spec: ProgramSpec) -> str:
        import hashlib
        import platform

        from netagent.bccloader import program_source

        h = hashlib.sha256()
        for part in (platform.release(), platform.version(), _bcc_identity(), program_source("common", ".bpf.h"),
                     program_source(spec.stem), json.dumps(spec.__dict__, sort_keys=True)):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def _path(self, spec: ProgramSpec) -> str:
        return os.path.join(self.directory, f"{spec.stem}-{self.key(spec)[:32]}.json")

    def get(self, spec: ProgramSpec) -> dict | None:
        if not cacheable(spec):
            return None
        try:
            with open(self._path(spec)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return record

    def put(self, spec: ProgramSpec, record: dict) -> None:
        path = self._path(spec)
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.replace(path + ".tmp", path)
        except OSError:
            pass  # read-only or full: the next start compiles again


def _bcc_identity() -> str:
    """BCC's version without importing it (an import maps LLVM into this process)."""
    import importlib.util

    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.origin:
        return "no bcc"
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            return f.read()
    except OSError:
        st = os.stat(spec.origin)
        return f"{st.st_size}:{st.st_mtime_ns}"


bytecode_cache = BytecodeCache()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(_child(int(sys.argv[1])))
