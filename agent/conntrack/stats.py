"""/proc/net/stat/nf_conntrack: parsed by header name, diffed per CPU.

The file has a header line naming the columns, then one line per possible
CPU with each value as 8 hex digits (a u32 per-CPU counter). Its columns
changed over the years, so nothing here relies on positions:

  <= 5.8   entries searched found new invalid ignore delete delete_list insert
           insert_failed drop early_drop icmp_error expect_new expect_create
           expect_delete [search_restart]
  5.9-5.14 `searched` became `clashres` (clash_resolve)
  >= 5.15  `delete_list` became `chainlength` (chaintoolong)

Columns whose counter the kernel dropped still print as 0 (new, ignore,
delete on current kernels). `entries` is not a per-CPU counter: every row
repeats the namespace's current entry count, so it is taken once, not summed.
"""

from dataclasses import dataclass

from netagent.errors import MalformedData

# Header names -> the names `conntrack -S` and the kernel's struct
# ip_conntrack_stat use, which is what users search for.
COLUMN_NAMES = {
    "clashres": "clash_resolve",
    "chainlength": "chaintoolong",
}

# The counters every event reports (null when this kernel lacks the column).
WATCHED = ("insert_failed", "drop", "early_drop", "clash_resolve", "chaintoolong", "invalid", "search_restart")

U32 = 1 << 32


@dataclass(frozen=True)
class StatTable:
    """One reading of the file: per-CPU counters by canonical column name."""

    columns: tuple[str, ...]  # canonical names, `entries` excluded
    per_cpu: tuple[tuple[int, ...], ...]  # one row per possible CPU, in column order
    entries: int | None  # the namespace's entry count at the time of reading
    header: tuple[str, ...]  # the raw header names, as this kernel prints them

    def has(self, name: str) -> bool:
        return name in self.columns

    def total(self, name: str) -> int:
        """Sum over CPUs (of a u32 that may have wrapped; use delta() for rates)."""
        i = self.columns.index(name)
        return sum(row[i] for row in self.per_cpu)

    def totals(self) -> dict[str, int]:
        return {name: self.total(name) for name in self.columns}

    @property
    def cpus(self) -> int:
        return len(self.per_cpu)


class StatFormatError(MalformedData, ValueError):
    """/proc/net/stat/nf_conntrack in a layout we cannot read (a ValueError too, as before)."""


def parse(text: str) -> StatTable:
    """Parse the file's text; StatFormatError says what is wrong with it."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise StatFormatError("empty nf_conntrack stat file")
    header = tuple(lines[0].split())
    if not header or all(_is_hex(name) for name in header):
        raise StatFormatError(f"no header line (first line: {lines[0][:80]!r})")
    if len(set(header)) != len(header):
        raise StatFormatError(f"duplicate column names in header {' '.join(header)!r}")
    names = [COLUMN_NAMES.get(name, name) for name in header]
    entries_at = names.index("entries") if "entries" in names else None
    counter_idx = [i for i, name in enumerate(names) if i != entries_at]
    rows = []
    entries = None
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) != len(header):
            raise StatFormatError(f"line {number} has {len(fields)} values, the header names {len(header)}")
        try:
            values = [int(f, 16) for f in fields]
        except ValueError:
            raise StatFormatError(f"line {number} is not hexadecimal: {line[:80]!r}") from None
        if entries_at is not None and entries is None:
            entries = values[entries_at]
        rows.append(tuple(values[i] for i in counter_idx))
    if not rows:
        raise StatFormatError("header but no per-CPU lines")
    return StatTable(tuple(names[i] for i in counter_idx), tuple(rows), entries, header)


def delta(before: StatTable, after: StatTable) -> dict[str, int]:
    """How much each counter rose between two readings of one namespace.

    Differences are taken per CPU modulo 2**32, so a per-CPU counter that
    wrapped between the readings still gives the right rise.
    """
    if before.columns != after.columns or before.cpus != after.cpus:
        raise StatFormatError("the two readings have different columns or CPU counts")
    out = {}
    for i, name in enumerate(after.columns):
        out[name] = sum((a[i] - b[i]) % U32 for a, b in zip(after.per_cpu, before.per_cpu))
    return out


def watched_deltas(rises: dict[str, int]) -> dict[str, int | None]:
    """The watched counters first (None when the kernel lacks one), then the rest."""
    out: dict[str, int | None] = {name: rises.get(name) for name in WATCHED}
    for name, value in rises.items():
        out.setdefault(name, value)
    return out


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
