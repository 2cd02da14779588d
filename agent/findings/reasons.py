"""Families of kernel drop reasons, recognised by the words in their names.

Drop events carry the running kernel's own reason names (probes/drops.py
reads them from the tracefs format or the BTF enum skb_drop_reason), and
the numbers behind them differ between kernels. The rules therefore never
hold numbers, nor a closed list of names: a family is the words a reason's
name contains, so a reason a newer kernel adds (QDISC_CONGESTED,
FQ_FLOW_LIMIT) joins its family without a change here, and
`family.among(names)` says which of a kernel's reasons a rule will count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class ReasonFamily:
    name: str
    words: tuple[str, ...]  # a reason belongs if its name contains one of them
    why: str  # what these reasons have in common, for docs and evidence

    def __contains__(self, reason: object) -> bool:
        return isinstance(reason, str) and any(word in reason for word in self.words)

    def among(self, names: Iterable[str]) -> list[str]:
        """The members of this family among a kernel's reason names."""
        return sorted({n for n in names if n in self})


# Too big for the path: evidence for the overlay MTU rule.
MTU = ReasonFamily("mtu", ("PKT_TOO_BIG", "FRAG"), "packet too big, or its fragments could not be reassembled")

# A socket's receive queue was full: evidence for the UDP receive-buffer rule.
RCVBUF = ReasonFamily("rcvbuf", ("SOCKET_RCVBUFF", "SOCKET_BACKLOG", "PROTO_MEM"),
                      "a socket's receive buffer or backlog was full")

# Queues that overflow when the CPU that should drain them does not run:
# the per-CPU input backlog (CPU_BACKLOG), device rings (FULL_RING), qdiscs
# (QDISC_*, FQ flow/band limits, CAKE_FLOOD), socket receive queues and
# backlogs, listen queues and the TCP out-of-order queue. Not NO_SOCKET,
# NETFILTER_DROP, checksum or routing reasons: those happen at any CPU speed.
CPU_STARVATION = ReasonFamily(
    "cpu-starvation",
    ("BACKLOG", "FULL_RING", "QDISC", "FLOW_LIMIT", "BAND_LIMIT", "CAKE_FLOOD", "RCVBUFF", "PROTO_MEM",
     "LISTEN_OVERFLOW", "OFO_QUEUE_PRUNE"),
    "a queue overflowed because the CPU that drains it did not run in time",
)
