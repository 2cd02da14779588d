"""Kernel addresses to 'function+0xoff' ('function+0xoff [module]' in a module) using /proc/kallsyms.

A daemon holds this for its lifetime, so the table is kept compact: the
text symbols' addresses in one array of u64 and their names in one bytes
blob (about 6 MB for 150k symbols, where a list of Python strings and a set
of them took 35 MB).
"""

import bisect
import os
from array import array

KALLSYMS = "/proc/kallsyms"
# Where to read it instead: the unit sets ProtectKernelTunables=yes, which makes
# /proc/kallsyms itself inaccessible, and binds the same file read-only to another
# path (systemd/netagent.service). Still the kernel's own file, read live.
KALLSYMS_ENV = "NETAGENT_KALLSYMS"
_TEXT_TYPES = (b"t", b"T", b"w", b"W")


def kallsyms_path() -> str:
    return os.environ.get(KALLSYMS_ENV) or KALLSYMS


class Symbolizer:
    def __init__(self, text: str | None = None, path: str | None = None):
        self._path = path or kallsyms_path()
        self._addrs = array("Q")
        self._starts = array("I")  # offset of each name in _blob
        self._blob = b"\n"  # "\n" + name + "\n" + name + "\n" ...; a name may carry " [module]"
        self._loaded = False
        self._memo: dict[int, str] = {}
        if text is not None:
            self._parse(text.encode())

    def _parse(self, data: bytes) -> None:
        pairs = []
        for line in data.splitlines():
            parts = line.split(None, 3)
            if len(parts) < 3 or parts[1] not in _TEXT_TYPES:
                continue
            addr = int(parts[0], 16)
            if addr == 0:
                continue  # hidden by kptr_restrict
            pairs.append((addr, parts[2] + (b" " + parts[3].strip() if len(parts) > 3 else b"")))
        pairs.sort()
        blob = bytearray(b"\n")
        starts = array("I")
        for _, name in pairs:
            starts.append(len(blob))
            blob += name + b"\n"
        self._addrs = array("Q", (a for a, _ in pairs))
        self._starts = starts
        self._blob = bytes(blob)
        self._loaded = True

    def _ensure(self) -> None:
        if not self._loaded:
            try:
                with open(self._path, "rb") as f:
                    self._parse(f.read())
            except OSError:
                self._loaded = True

    @property
    def available(self) -> bool:
        self._ensure()
        return bool(self._addrs)

    def _name(self, i: int) -> str:
        start = self._starts[i]
        return self._blob[start:self._blob.index(b"\n", start)].decode(errors="replace")

    def symbolize(self, addr: int) -> str:
        """'kfree_skb_reason+0x1a', 'nft_do_chain+0x4a [nf_tables]' (the kernel's own %pS
        order, as in its stack traces), or the bare hex address when unknown."""
        # Drops come from a few hundred places at most; a storm asks for them thousands of times a second.
        text = self._memo.get(addr)
        if text is None:
            if len(self._memo) >= 8192:
                self._memo.clear()
            text = self._memo[addr] = self._symbolize(addr)
        return text

    def _symbolize(self, addr: int) -> str:
        self._ensure()
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or not addr:
            return f"{addr:#x}"
        name, bracket, module = self._name(i).partition(" [")
        return f"{name}+{addr - self._addrs[i]:#x}" + (f" [{module}" if bracket else "")

    def has(self, name: str) -> bool:
        """Whether a text symbol of that name exists (in the kernel or a module)."""
        self._ensure()
        needle = b"\n" + name.encode()
        return needle + b"\n" in self._blob or needle + b" [" in self._blob


_shared: Symbolizer | None = None


def shared_symbolizer() -> Symbolizer:
    """One table per process: every drop sensor (the daemon runs two) symbolizes with it."""
    global _shared
    if _shared is None:
        _shared = Symbolizer()
    return _shared
