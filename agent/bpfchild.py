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
  kprobe          kprobe on a kernel function (a perf event)
Closing the returned link descriptor detaches the program.
"""

import array
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from netagent import bpfsys
from netagent.errors import ProbeUnavailable

CHILD_TIMEOUT_S = 120  # a compile takes ~1 s; generous for a loaded node
_MAX_FDS = 64

# enum bpf_map_type values whose lookups return one value per possible CPU
_PER_CPU_MAP_TYPES = {5, 6, 10}


@dataclass
class ProgramSpec:
    """What the child compiles, loads and attaches (plain data: it goes as JSON)."""

    stem: str  # probes/<stem>.bpf.c
    program: str  # function name in it
    attach: str  # tp_btf | raw_tracepoint | tracepoint | kprobe
    target: str  # tracepoint event ("kfree_skb"; "skb:kfree_skb" for tracepoint) or function
    macros: dict = field(default_factory=dict)
    prelude: str = ""
    maps: list[str] = field(default_factory=list)  # handed back, by name
    attach_btf_id: int = 0  # tp_btf: BTF id of btf_trace_<target> (the parent has BTF parsed)
    # Map writes done before attaching, so the program never runs half set up:
    # {"map": name, "key": u32, "value": hex} or {"map": name, "key": u32, "map_fd": other map}
    setup: list[dict] = field(default_factory=list)


@dataclass
class LoadedProgram:
    """Descriptors of a loaded, attached program; close() detaches and frees it."""

    attach: str
    prog_fd: int
    link_fd: int
    maps: dict[str, bpfsys.RawMap]
    child_seconds: float = 0.0

    def close(self) -> None:
        for fd in [self.link_fd, self.prog_fd] + [m.fd for m in self.maps.values()]:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.link_fd = self.prog_fd = -1
        self.maps = {}


def load(spec: ProgramSpec) -> LoadedProgram:
    """Run the child for `spec`; ProbeUnavailable with the child's one-line reason on failure."""
    import time

    started = time.monotonic()
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
        _, stderr = proc.communicate(json.dumps(spec.__dict__).encode(), timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        parent.close()
        raise ProbeUnavailable(f"compiling {spec.stem}.bpf.c took over {CHILD_TIMEOUT_S} s; gave up") from None
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
    return LoadedProgram(spec.attach, fds[0], fds[1], maps, time.monotonic() - started)


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


def _attach(bpf, spec: ProgramSpec) -> tuple[int, int]:
    """(program fd, link fd) with the program attached as spec.attach says."""
    name = spec.program.encode()
    if spec.attach == "tp_btf":
        try:
            prog = bpfsys.prog_load(bpfsys.PROG_TYPE_TRACING, bpf.dump_func(name), name=spec.program[:15],
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
    if spec.attach == "kprobe":
        bpf.attach_kprobe(event=spec.target.encode(), fn_name=name)
        fds = next(v for k, v in bpf.kprobe_fds.items() if spec.target.encode() in k)
        return bpf.funcs[name].fd, fds[name]
    raise ProbeUnavailable(f"unknown attach kind {spec.attach!r}")


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
        fds = [prog_fd, link_fd] + [maps[n] for n in spec.maps]
        meta = {n: dict(map_info(maps[n]), fd_index=2 + i) for i, n in enumerate(spec.maps)}
        sock.sendmsg([json.dumps({"ok": True, "maps": meta}).encode()],
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


if __name__ == "__main__":
    sys.exit(_child(int(sys.argv[1])))
