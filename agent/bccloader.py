"""Loading our BPF C sources with BCC: guarded import, macros, clear errors."""

import importlib.resources
import os

from netagent.errors import BccMissing, ProbeUnavailable
from netagent.kheaders import bcc_kernel_source, headers_status


def import_bcc():
    """The bcc module, or BccMissing with install instructions."""
    try:
        import bcc  # noqa: PLC0415 - optional system package
    except ImportError as exc:
        raise BccMissing(str(exc)) from None
    return bcc


def bcc_version() -> str | None:
    try:
        bcc = import_bcc()
    except BccMissing:
        return None
    return getattr(bcc, "__version__", None) or "unknown"


def program_source(stem: str, suffix: str = ".bpf.c") -> str:
    """The text of probes/<stem>.bpf.c (or another suffix), shipped as package data."""
    return importlib.resources.files("netagent.probes").joinpath(f"{stem}{suffix}").read_text()


class CompileError(ProbeUnavailable):
    """clang refused the source; its diagnostics went to this process's stderr."""


def compile_program(stem: str, macros: dict[str, int | str], prelude: str = ""):
    """Compile probes/<stem>.bpf.c with -D macros; returns a bcc.BPF object.

    `prelude` is C prepended to the source (generated structs such as a
    tracepoint record layout). Sensors compile in a child process
    (bpfchild.py), whose stderr is a pipe: clang's diagnostics land there
    and the parent turns the first error line into the message. This
    function never redirects the process's fd 2: other threads' diagnostics
    must not vanish while a compile runs.
    """
    bcc = import_bcc()
    headers = headers_status()
    if headers.status == "none":
        raise ProbeUnavailable(f"kernel headers for BCC: {headers.describe()}")
    try:
        tree = bcc_kernel_source(headers)
    except OSError as exc:
        raise ProbeUnavailable(f"kernel headers for BCC: joining {headers.outside_modules} failed: {exc}") from None
    if tree:
        # /lib/modules is hidden (systemd's ProtectKernelModules=yes): the headers from /usr/src.
        # This process compiles and exits (the loader's child), so the variable goes with it.
        os.environ["BCC_KERNEL_SOURCE"] = tree
    cflags = [f"-D{name}={value}" for name, value in macros.items()]
    cflags.append("-Wno-macro-redefined")
    text = program_source("common", suffix=".bpf.h") + "\n" + prelude + "\n" + program_source(stem)
    try:
        # bytes: BCC takes str too, but warns with the whole program's source (pages of test output)
        return bcc.BPF(text=text.encode(), cflags=cflags)
    except Exception:
        raise CompileError(f"compiling {stem}.bpf.c failed") from None
