"""Loading our BPF C sources with BCC: guarded import, macros, clear errors."""

import importlib.resources
import os
import sys

from netagent.errors import BccMissing, ProbeUnavailable
from netagent.kheaders import headers_status


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


def compile_program(stem: str, macros: dict[str, int | str], prelude: str = ""):
    """Compile probes/<stem>.bpf.c with -D macros; returns a bcc.BPF object.

    `prelude` is C prepended to the source (generated structs such as a
    tracepoint record layout). Compile errors become ProbeUnavailable with
    clang's first error line, instead of BCC's bare "Failed to compile".
    """
    bcc = import_bcc()
    headers = headers_status()
    if headers.status == "none":
        raise ProbeUnavailable(f"kernel headers for BCC: {headers.describe()}")
    cflags = [f"-D{name}={value}" for name, value in macros.items()]
    cflags.append("-Wno-macro-redefined")
    text = program_source("common", suffix=".bpf.h") + "\n" + prelude + "\n" + program_source(stem)
    with captured_stderr() as captured:
        try:
            return bcc.BPF(text=text, cflags=cflags)
        except Exception as exc:
            first = next((ln for ln in captured.read().splitlines() if "error" in ln), str(exc))
            raise ProbeUnavailable(f"compiling {stem}.bpf.c failed: {first.strip()}") from None


class captured_stderr:
    """Capture fd 2 (clang writes there from C++) while BCC compiles."""

    def __enter__(self):
        import tempfile

        self._file = tempfile.TemporaryFile(mode="w+")
        sys.stderr.flush()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def read(self) -> str:
        self._file.seek(0)
        return self._file.read()

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if exc[0] is not None and os.environ.get("NETAGENT_DEBUG"):
            sys.stderr.write(self.read())
        return False
