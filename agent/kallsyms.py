"""Kernel addresses to 'function+0xoff' using /proc/kallsyms."""

import bisect

KALLSYMS = "/proc/kallsyms"


class Symbolizer:
    def __init__(self, text: str | None = None, path: str = KALLSYMS):
        self._path = path
        self._addrs: list[int] = []
        self._names: list[str] = []
        self._loaded = False
        if text is not None:
            self._parse(text)

    def _parse(self, text: str) -> None:
        pairs = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in ("t", "T", "w", "W"):
                continue
            addr = int(parts[0], 16)
            if addr == 0:
                continue  # hidden by kptr_restrict
            name = parts[2] + (f" {parts[3]}" if len(parts) > 3 else "")
            pairs.append((addr, name))
        pairs.sort()
        self._addrs = [a for a, _ in pairs]
        self._names = [n for _, n in pairs]
        self._loaded = True

    def _ensure(self) -> None:
        if not self._loaded:
            try:
                with open(self._path) as f:
                    self._parse(f.read())
            except OSError:
                self._loaded = True

    @property
    def available(self) -> bool:
        self._ensure()
        return bool(self._addrs)

    def symbolize(self, addr: int) -> str:
        """'kfree_skb_reason+0x1a' or the bare hex address when unknown."""
        self._ensure()
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or not addr:
            return f"{addr:#x}"
        return f"{self._names[i]}+{addr - self._addrs[i]:#x}"

    def has(self, name: str) -> bool:
        self._ensure()
        return name in self._names_set()

    def _names_set(self):
        if not hasattr(self, "_set"):
            self._set = {n.split(" ")[0] for n in self._names}
        return self._set
