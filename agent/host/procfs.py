"""Parsers for the /proc files the host sensor reads. Pure functions on text.

Each parser copes with the layouts different kernels produce (tested on
fixtures in tests/fixtures/host/): /proc/stat rows grew from 4 to 10
columns over the years, /proc/net/softnet_stat from 9 to 15, and the
snmp/netstat tables gain counters in most releases, so tables are read
by header name and never by position.

Reading files: inside a network namespace entered with setns() on a
helper thread, /proc/net is the *process's* namespace (it is a link to
/proc/self/net, and self is the thread group); /proc/thread-self/net is
the calling thread's. `net_path()` returns the right one.
"""

from __future__ import annotations

from dataclasses import dataclass

from netagent.errors import MalformedData


class ProcFormatError(MalformedData, ValueError):
    """A /proc file whose layout we cannot read (a ValueError too, as callers expect)."""

# /proc/stat cpu columns in kernel order. Older kernels stop early:
# steal appeared in 2.6.11, guest in 2.6.24, guest_nice in 2.6.33.
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")


def net_path(name: str) -> str:
    """/proc/<net file> as seen by the calling thread's network namespace."""
    return f"/proc/thread-self/net/{name}"


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies (USER_HZ ticks) a CPU spent in each state since boot."""

    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0
    guest: int = 0
    guest_nice: int = 0

    @property
    def total(self) -> int:
        # guest time is already counted in user (and guest_nice in nice),
        # so it is left out of the total to avoid counting it twice.
        return self.user + self.nice + self.system + self.idle + self.iowait + self.irq + self.softirq + self.steal


def parse_proc_stat(text: str) -> dict[str, CpuTimes]:
    """'cpu' (all CPUs) and 'cpu0', 'cpu1', ... -> CpuTimes. Missing columns are 0."""
    out: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        parts = line.split()
        name, values = parts[0], parts[1:]
        try:
            numbers = [int(v) for v in values[: len(CPU_FIELDS)]]
        except ValueError:
            continue
        out[name] = CpuTimes(**dict(zip(CPU_FIELDS, numbers)))
    return out


def cpu_percentages(before: CpuTimes, after: CpuTimes) -> dict[str, float]:
    """Share of the interval (0-100) spent in steal, softirq, irq, idle, busy."""
    total = after.total - before.total
    if total <= 0:
        # no ticks elapsed (or a CPU went offline and came back): nothing to say
        return {"steal_pct": 0.0, "softirq_pct": 0.0, "irq_pct": 0.0, "idle_pct": 0.0, "busy_pct": 0.0}

    def pct(field: str) -> float:
        return round(100.0 * max(getattr(after, field) - getattr(before, field), 0) / total, 2)

    idle = pct("idle") + pct("iowait")
    return {
        "steal_pct": pct("steal"),
        "softirq_pct": pct("softirq"),
        "irq_pct": pct("irq"),
        "idle_pct": round(idle, 2),
        "busy_pct": round(max(100.0 - idle - pct("steal"), 0.0), 2),
    }


@dataclass(frozen=True)
class SoftnetRow:
    """One CPU's row of /proc/net/softnet_stat."""

    cpu: int
    processed: int
    dropped: int  # backlog (netdev_max_backlog) full
    time_squeeze: int  # net_rx_action ran out of budget/time with work left
    received_rps: int | None = None
    flow_limit_count: int | None = None
    backlog_len: int | None = None  # a gauge, not a counter
    columns: int = 0


def parse_softnet_stat(text: str) -> list[SoftnetRow]:
    """Rows of /proc/net/softnet_stat, whatever the kernel's column count.

    Columns (hex): 0 processed, 1 dropped, 2 time_squeeze, 3-7 zero (were
    fastroute), 8 cpu_collision (zero since 4.x), 9 received_rps (2.6.35+),
    10 flow_limit_count (3.11+), 11 backlog length and 12 the CPU number
    (5.10+), 13 input_qlen and 14 process_qlen (6.x). Before 5.10 the row
    number is the CPU number only while no CPU is offline: rows of offline
    CPUs are skipped by the kernel, so we can only number them in order.
    """
    rows: list[SoftnetRow] = []
    for lineno, line in enumerate(text.splitlines()):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 3:
            raise ProcFormatError(f"softnet_stat line {lineno + 1}: {len(parts)} columns, expected at least 3")
        try:
            values = [int(p, 16) for p in parts]
        except ValueError:
            raise ProcFormatError(f"softnet_stat line {lineno + 1} is not hexadecimal: {line[:80]!r}") from None
        n = len(values)
        rows.append(
            SoftnetRow(
                cpu=values[12] if n >= 13 else len(rows),
                processed=values[0],
                dropped=values[1],
                time_squeeze=values[2],
                received_rps=values[9] if n >= 10 else None,
                flow_limit_count=values[10] if n >= 11 else None,
                backlog_len=values[11] if n >= 12 else None,
                columns=n,
            )
        )
    return rows


def parse_snmp_table(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/snmp and /proc/net/netstat: 'Proto: names' then 'Proto: values' pairs.

    Returns {"Ip": {"FragCreates": 0, ...}, "TcpExt": {...}}. Values may be
    negative (Tcp MaxConn is -1). A header without its value line is ignored.
    """
    out: dict[str, dict[str, int]] = {}
    lines = [line for line in text.splitlines() if line.strip()]
    i = 0
    while i + 1 < len(lines):
        head, vals = lines[i], lines[i + 1]
        proto, _, names = head.partition(":")
        proto2, _, values = vals.partition(":")
        if proto != proto2:
            i += 1  # out of step (truncated read): resynchronise on the next line
            continue
        table = out.setdefault(proto.strip(), {})
        for name, value in zip(names.split(), values.split()):
            try:
                table[name] = int(value)
            except ValueError:
                continue
        i += 2
    return out


def parse_snmp6(text: str) -> dict[str, int]:
    """/proc/net/snmp6: one 'Name value' per line."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_nf_conntrack_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack summed over CPUs, by header name.

    The columns changed over time (searched/found/new... in old kernels,
    clashres and chaintoolong in new ones), so only the header says what
    each column is. Values are hex. 'entries' is a per-namespace gauge
    repeated on every row, so it is taken once, not summed.
    """
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        return {}
    header = lines[0]
    totals: dict[str, int] = {name: 0 for name in header}
    for row in lines[1:]:
        for name, value in zip(header, row):
            try:
                number = int(value, 16)
            except ValueError:
                continue
            if name == "entries":
                totals[name] = number
            else:
                totals[name] += number
    return totals
